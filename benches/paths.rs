//! In-process costs outside the cluster zone: the resolver's synchronous answers (cache hit,
//! hosts-file hit, the miss that goes on to an upstream), one forwarded query to a loopback
//! upstream, and counting one query in the metrics.
//!
//! `cargo bench --bench paths`. The upstream is a small responder on 127.0.0.1 in this process.

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use clusterdns::clock::Clock;
use clusterdns::config::{Config, HostsConfig};
use clusterdns::observe::{AnswerSource, Proto, QueryObservation};
use clusterdns::ops::metrics::Metrics;
use clusterdns::resolve::Resolver;
use criterion::{Criterion, criterion_group, criterion_main};
use hickory_proto::op::{Message, OpCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};

/// An upstream on a loopback port answering every A question with 192.0.2.1 (TTL 3600).
fn upstream() -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut r = Message::response(q.metadata.id, OpCode::Query);
            r.metadata.recursion_desired = q.metadata.recursion_desired;
            r.metadata.recursion_available = true;
            r.add_queries(q.queries.clone());
            if let Some(question) = q.queries.first() {
                let a = RData::A(A(Ipv4Addr::new(192, 0, 2, 1)));
                r.add_answer(Record::from_rdata(question.name().clone(), 3600, a));
            }
            let _ = sock.send_to(&r.to_vec().unwrap(), from);
        }
    });
    addr
}

fn query(name: &str, id: u16) -> Vec<u8> {
    clusterdns::testkit::query(name, RecordType::A, id, true, Some(1232))
}

fn benches(cr: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, "192.0.2.10 web.example.test\n").unwrap();
    let mut cfg = Config {
        listen: vec!["127.0.0.1:1".parse().unwrap()],
        ..Config::default()
    };
    cfg.forward.upstreams = vec![upstream().to_string()];
    cfg.forward.timeout = Duration::from_secs(1);
    cfg.hosts = Some(HostsConfig {
        file: Some(hosts),
        ..Default::default()
    });
    let r = Resolver::new(&cfg, Default::default(), Clock::system()).unwrap();
    rt.block_on(r.resolve(&query("www.example.test.", 1), 1232));

    let mut out = Vec::with_capacity(1232);
    for (what, q, answered) in [
        ("resolver_cache_hit", query("WWW.example.test.", 2), true),
        ("resolver_hosts_hit", query("web.example.test.", 3), true),
        ("resolver_local_miss", query("miss.example.test.", 4), false),
    ] {
        cr.bench_function(what, |b| {
            b.iter(|| {
                let got = r.answer_local(black_box(&q), 1232, &mut out);
                assert_eq!(got.is_some(), answered);
                black_box(out.len())
            })
        });
    }
    let mut n = 0u64;
    cr.bench_function("resolver_forwarded_miss_loopback", |b| {
        b.iter(|| {
            n += 1;
            let q = query(&format!("m{n}.example.test."), 5);
            let (reply, src) = rt.block_on(r.resolve(&q, 1232));
            assert_eq!(src, AnswerSource::Forward);
            black_box(reply.len())
        })
    });

    let m = Metrics::new("dns://:53", true, &[]);
    let obs = QueryObservation {
        proto: Proto::Udp,
        ipv6: false,
        qtype: 1,
        rcode: 0,
        source: AnswerSource::Zone,
        request_size: 40,
        response_size: 100,
        duration: Duration::from_micros(30),
        do_bit: false,
    };
    m.observe_query(&obs);
    cr.bench_function("metrics_observe_query", |b| {
        b.iter(|| m.observe_query(black_box(&obs)))
    });
}

criterion_group!(name = g; config = Criterion::default().sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2)); targets = benches);
criterion_main!(g);
