//! What forwarding sends and records, through the real binary and `dig`: the EDNS Client
//! Subnet option is stripped before forwarding by default, forwarded (and then part of the cache
//! key) with `forward.client_subnet: forward`; the query log names the upstream that answered;
//! `coredns_proxy_conn_cache_{hits,misses}_total` count reused and new upstream connections and
//! `coredns_cache_drops_total` replies whose question does not match, as CoreDNS counts them.

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, OpCode, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};

use crate::forward::fake_upstream::{Action, Fake, Transport, a_reply};
use crate::support::*;
use hickory_proto::rr::RecordType;

/// An upstream answering A 192.0.2.9; for `noq*` names an NXDOMAIN without a question.
fn upstream(rt: &tokio::runtime::Runtime) -> Fake {
    rt.block_on(Fake::start(|q, _| {
        let name = q.queries[0].name().to_ascii();
        if name.starts_with("noq") {
            let mut m = Message::response(q.metadata.id, OpCode::Query);
            m.metadata.response_code = ResponseCode::NXDomain;
            return Action::Reply(m);
        }
        Action::Reply(a_reply(q, &[Ipv4Addr::new(192, 0, 2, 9)], 300))
    }))
}

/// The client subnet the upstream saw in its `i`-th query (None: no option).
fn seen_subnet(up: &Fake, name: &str) -> Vec<Option<String>> {
    up.seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, m)| m.queries[0].name().to_ascii().trim_end_matches('.') == name)
        .map(|(_, m)| {
            m.edns
                .as_ref()
                .and_then(|e| match e.option(EdnsCode::Subnet) {
                    Some(EdnsOption::Subnet(s)) => {
                        Some(format!("{}/{}", s.addr(), s.source_prefix()))
                    }
                    _ => None,
                })
        })
        .collect()
}

fn seen_count(up: &Fake, name: &str) -> usize {
    seen_subnet(up, name).len()
}

#[test]
fn client_subnet_is_stripped_by_default() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let up = upstream(&rt);
    let dir = tempfile::tempdir().unwrap();
    let extra = format!("forward:\n  upstreams: [\"{}\"]\n", up.addr);
    let s = Server::start(
        &base_config(&write_objects(dir.path(), ONE_SERVICE), &extra),
        &[],
    );
    assert_eq!(
        s.dig(&["+short", "+subnet=198.51.100.0/24", "e.example"])
            .trim(),
        "192.0.2.9"
    );
    assert_eq!(seen_subnet(&up, "e.example"), [None], "not sent upstream");
    // Another subnet: the same answer, from the cache.
    assert_eq!(
        s.dig(&["+short", "+subnet=203.0.113.0/24", "e.example"])
            .trim(),
        "192.0.2.9"
    );
    assert_eq!(seen_count(&up, "e.example"), 1);
}

#[test]
fn client_subnet_forwarded_on_request_and_cached_per_subnet() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let up = upstream(&rt);
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "forward:\n  upstreams: [\"{}\"]\n  client_subnet: forward\n",
        up.addr
    );
    let s = Server::start(
        &base_config(&write_objects(dir.path(), ONE_SERVICE), &extra),
        &[],
    );
    let ask = |subnet: &str| s.dig(&["+short", &format!("+subnet={subnet}"), "f.example"]);
    assert_eq!(ask("198.51.100.0/24").trim(), "192.0.2.9");
    assert_eq!(
        seen_subnet(&up, "f.example"),
        [Some("198.51.100.0/24".into())]
    );
    ask("203.0.113.0/24");
    assert_eq!(
        seen_subnet(&up, "f.example"),
        [
            Some("198.51.100.0/24".into()),
            Some("203.0.113.0/24".into())
        ],
        "another subnet is another cache entry"
    );
    ask("198.51.100.0/24");
    assert_eq!(
        seen_count(&up, "f.example"),
        2,
        "the same subnet again: a cache hit"
    );
    s.dig(&["+short", "f.example"]);
    assert_eq!(seen_count(&up, "f.example"), 3, "no subnet: its own entry");
    // RFC 7871 §7.1.1: a malformed option is FORMERR (family 1, /24, but two address bytes).
    let mut q = query("g.example", 1, 0x4444, Some(1232));
    let n = q.len();
    q[n - 2..].copy_from_slice(&10u16.to_be_bytes());
    q.extend_from_slice(&[0, 8, 0, 6, 0, 1, 24, 0, 198, 51]);
    let r = udp_exchange(s.dns, &q).expect("answered");
    assert_eq!(
        Message::from_vec(&r).unwrap().metadata.response_code,
        ResponseCode::FormErr
    );
    assert_eq!(seen_count(&up, "g.example"), 0);
}

/// Start the binary with the query log on, its JSON lines (stdout) kept.
fn start_with_querylog(cfg: &str) -> (Server, mpsc::Receiver<serde_json::Value>) {
    let dir = tempfile::tempdir().unwrap();
    let cmd = Server::command(&dir, cfg, &[]);
    let mut s = Server::spawn_with(cmd, dir, Stdio::piped());
    let stdout = s.child.stdout.take().unwrap();
    let (qtx, qrx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&l)
                && qtx.send(v).is_err()
            {
                break;
            }
        }
    });
    (s, qrx)
}

/// The next query-log entry for `qname` (bounded wait).
fn logged(rx: &mpsc::Receiver<serde_json::Value>, qname: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(v) = rx.recv_timeout(Duration::from_millis(100))
            && v["qname"] == qname
        {
            return v;
        }
    }
    panic!("{qname} not in the query log");
}

#[test]
fn query_log_names_the_upstream_and_metrics_count_what_they_name() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let up = upstream(&rt);
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "forward:\n  upstreams: [\"{}\"]\nquerylog:\n  enabled: true\n  sample: 1.0\n",
        up.addr
    );
    let (s, log) = start_with_querylog(&base_config(
        &write_objects(dir.path(), ONE_SERVICE),
        &extra,
    ));
    let to = up.addr.to_string();

    assert_eq!(s.dig(&["+short", "log.example"]).trim(), "192.0.2.9");
    let e = logged(&log, "log.example.");
    assert_eq!(
        (e["source"].as_str(), e["upstream"].as_str()),
        (Some("forward"), Some(to.as_str()))
    );
    s.dig(&["+short", "log.example"]);
    let e = logged(&log, "log.example.");
    assert_eq!(e["source"], "cache");
    assert!(
        e.get("upstream").is_none(),
        "a cache hit names no upstream: {e}"
    );
    s.dig(&["+short", "a.x.svc.cluster.local"]);
    let e = logged(&log, "a.x.svc.cluster.local.");
    assert_eq!(e["source"], "zone");
    assert!(e.get("upstream").is_none(), "{e}");

    // Every UDP exchange opens a new socket: a connection cache miss. TCP connections are
    // kept: the first is a miss, the next exchange reuses it.
    let series = |which: &str, proto: &str| {
        format!(
            "coredns_proxy_conn_cache_{which}_total{{proto=\"{proto}\",proxy_name=\"forward\",to=\"{to}\"}}"
        )
    };
    let udp_misses = s.metric_sum(&series("misses", "udp"), &[]);
    assert!(udp_misses >= 1.0, "{udp_misses}");
    assert_eq!(s.metric_sum(&series("hits", "udp"), &[]), 0.0);
    // One miss per forwarded UDP exchange; our own loop probes (HINFO) are not counted.
    let forwarded_udp = up
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(t, m)| *t == Transport::Udp && m.queries[0].query_type() != RecordType::HINFO)
        .count() as f64;
    assert_eq!(udp_misses, forwarded_udp, "one miss per UDP exchange");
    s.dig(&["+tcp", "+short", "tcp1.example"]);
    s.dig(&["+tcp", "+short", "tcp2.example"]);
    assert_eq!(s.metric_sum(&series("misses", "tcp"), &[]), 1.0);
    assert_eq!(s.metric_sum(&series("hits", "tcp"), &[]), 1.0);

    // A cacheable reply without the question is not cached: a drop.
    assert_eq!(s.metric_sum("coredns_cache_drops_total", &[]), 0.0);
    let out = s.dig(&["noq.example"]);
    assert!(out.contains("status: NXDOMAIN"), "{out}");
    assert_eq!(s.metric_sum("coredns_cache_drops_total", &[]), 1.0);
    s.dig(&["noq.example"]);
    assert_eq!(seen_count(&up, "noq.example"), 2, "not cached");
    assert_eq!(s.metric_sum("coredns_cache_drops_total", &[]), 2.0);
}
