//! Zone transfers, against the real (release) binary watching the project's test API server:
//!
//! 1. The cost of transferring the cluster zone of 10,000 services and 100,000 endpoints:
//!    time from the AXFR request to its last message, bytes and messages (TSIG-signed, as a
//!    secondary asks), and the latency of ordinary queries (one at a time, UDP) without and
//!    during back-to-back transfers.
//! 2. From a change at the API server to each secondary answering the new data: Knot DNS and
//!    BIND 9 as secondaries on loopback (NOTIFY, then IXFR), p50/p90/p99/max over `--changes`
//!    ClusterIP changes; clusterdns's own answer as the reference.
//!
//! `cargo bench --bench xfr` (add `-- --services N --changes N` to resize). Needs `knotd` and
//! `named` (`scripts/install-test-deps.sh`).

#[path = "../tests/it/apiserver/mod.rs"]
mod apiserver;
#[path = "common/cluster.rs"]
mod cluster;
#[allow(dead_code)] // each bench uses some of the shared helpers
mod common;
#[path = "../tests/it/support/secondary.rs"]
#[allow(dead_code)]
mod secondary;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use apiserver::*;
use clusterdns::xfr::tsig;
use common::{ask, num, percentiles_ms, percentiles_us, question};
use secondary::{Flavor, Follow, Secondary};

const KEY_NAME: &str = "xfr-key";
const KEY: &str = "x8Qm0qE6u1pT8v0zq1bq3aQJ1g4xVdJ9cYz7rX2kLmA=";

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

/// One AXFR of `zone`, TSIG-signed with `key`: (time to the last message, bytes, messages);
/// None when it is refused (SERVFAIL before the first complete sync).
fn axfr(server: SocketAddr, zone: &str, key: &tsig::Key) -> Option<(Duration, usize, usize)> {
    let mut q = question(fastrand::u16(..), 0, zone, 252);
    tsig::sign_request(key, &mut q, tsig::now());
    let t = Instant::now();
    let mut s = TcpStream::connect(server).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    s.write_all(&framed).unwrap();
    let (mut bytes, mut messages, mut soas) = (0, 0, 0);
    let mut buf = vec![0u8; 65535];
    // The SOA comes first and last.
    while soas < 2 {
        let mut len = [0u8; 2];
        s.read_exact(&mut len).unwrap();
        let n = u16::from_be_bytes(len) as usize;
        s.read_exact(&mut buf[..n]).unwrap();
        if buf[3] & 0x0F != 0 {
            return None;
        }
        bytes += n;
        messages += 1;
        soas += soa_records(&buf[..n]);
    }
    Some((t.elapsed(), bytes, messages))
}

/// The SOA records (type 6) in a message's answer section.
fn soa_records(m: &[u8]) -> usize {
    let mut p = 12;
    for _ in 0..u16::from_be_bytes([m[4], m[5]]) {
        p = skip_name(m, p) + 4;
    }
    let mut soas = 0;
    for _ in 0..u16::from_be_bytes([m[6], m[7]]) {
        p = skip_name(m, p);
        soas += usize::from(u16::from_be_bytes([m[p], m[p + 1]]) == 6);
        p += 10 + u16::from_be_bytes([m[p + 8], m[p + 9]]) as usize;
    }
    soas
}

fn skip_name(m: &[u8], mut p: usize) -> usize {
    loop {
        let l = m[p] as usize;
        if l == 0 {
            return p + 1;
        }
        if l & 0xC0 == 0xC0 {
            return p + 2;
        }
        p += 1 + l;
    }
}

/// Queries one at a time for `secs`: their latencies.
fn query_latencies(
    dns: SocketAddr,
    services: usize,
    namespaces: usize,
    secs: f64,
) -> Vec<Duration> {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let mut lat = Vec::new();
    let mut id = 0u16;
    while Instant::now() < end {
        let i = fastrand::usize(..services);
        let name = format!("svc-{i}.ns-{}.svc.cluster.local", i % namespaces);
        id = id.wrapping_add(1);
        let t = Instant::now();
        if ask(&sock, dns, &name, id).is_some() {
            lat.push(t.elapsed());
        }
    }
    lat
}

fn tool(name: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/sbin", "/usr/local/sbin"]
        .iter()
        .map(|d| PathBuf::from(d).join(name))
        .find(|p| p.exists())
}

fn main() {
    if !common::bench_requested("xfr", "cargo bench --bench xfr") {
        return;
    }
    let services = num("--services", 10_000);
    let per = num("--endpoints-per-service", 10);
    let changes = num("--changes", 100);
    let namespaces = 100;
    let (api, _) = ApiServer::start_blocking();
    cluster::fill(&api, services, per, namespaces);
    let knot_bin = tool("knotd");
    let bind_bin = tool("named");
    let lo = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    let free = || {
        UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (knot_port, bind_port) = (free(), free());
    let mut notify = Vec::new();
    if knot_bin.is_some() {
        notify.push(format!("\"{}\"", lo(knot_port)));
    }
    if bind_bin.is_some() {
        notify.push(format!("\"{}\"", lo(bind_port)));
    }

    let dir = std::env::temp_dir().join(format!("clusterdns-xfr-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = cluster::write_config(
        &api,
        &dir,
        &format!(
            "cluster: {{loadbalance: false}}\ntransfer:\n  allow: [127.0.0.0/8]\n  notify: [{}]\n  tsig: {{name: {KEY_NAME}, secret: \"{KEY}\"}}\n",
            notify.join(", ")
        ),
    );
    let (mut child, dns, lines) = cluster::serve(&cfg, "warn,clusterdns::xfr::notify=debug");
    // NOTIFY's own reports (not answered, refused) are shown: they explain slow changes.
    std::thread::spawn(move || {
        for l in lines.map_while(Result::ok) {
            if l.contains("NOTIFY") && !l.contains("acknowledged") {
                eprintln!("clusterdns: {l}");
            }
        }
    });
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let last = cluster::last_service(services, namespaces);
    let start = Instant::now();
    let mut id = 1u16;
    while ask(&sock, dns, &last, id).is_none_or(|v| v.is_empty()) {
        id = id.wrapping_add(1);
        assert!(start.elapsed() < Duration::from_secs(300), "no first sync");
        std::thread::sleep(Duration::from_millis(5));
    }
    let serial = || secondary::soa_serial(dns, "cluster.local");
    let want = (api.resource_version() * 4) as u32;
    while serial() != Some(want) {
        std::thread::sleep(Duration::from_millis(5));
    }
    println!("cluster: {services} services, {} endpoints", services * per);

    // 1. The cost of a transfer, and queries during transfers.
    let key = tsig::Key::new(KEY_NAME, "hmac-sha256", KEY, Duration::from_secs(300)).unwrap();
    // The SOA may show the serial before the first complete sync (services listed, slices
    // not yet): transfers wait for the sync.
    while axfr(dns, "cluster.local", &key).is_none() {
        assert!(start.elapsed() < Duration::from_secs(300), "no transfer");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut times = Vec::new();
    let mut size = (0, 0);
    for _ in 0..5 {
        let (t, bytes, messages) = axfr(dns, "cluster.local", &key).expect("a transfer");
        times.push(t);
        size = (bytes, messages);
    }
    times.sort();
    println!(
        "AXFR of cluster.local (TSIG-signed): {} bytes in {} messages; time to the last message: median {} ms, min {} ms, max {} ms",
        size.0,
        size.1,
        ms(times[2]),
        ms(times[0]),
        ms(times[4])
    );
    let mut quiet = query_latencies(dns, services, namespaces, 3.0);
    let busy_flag = Arc::new(AtomicBool::new(true));
    let flag = busy_flag.clone();
    let key2 = tsig::Key::new(KEY_NAME, "hmac-sha256", KEY, Duration::from_secs(300)).unwrap();
    let transfers = std::thread::spawn(move || {
        let mut n = 0;
        while flag.load(Ordering::Relaxed) {
            axfr(dns, "cluster.local", &key2).expect("a transfer");
            n += 1;
        }
        n
    });
    let mut busy = query_latencies(dns, services, namespaces, 3.0);
    busy_flag.store(false, Ordering::Relaxed);
    let n = transfers.join().unwrap();
    println!(
        "queries one at a time, no transfer: {} queries in 3 s, {}",
        quiet.len(),
        percentiles_us(&mut quiet)
    );
    println!(
        "queries one at a time, during {n} back-to-back AXFRs: {} queries in 3 s, {}",
        busy.len(),
        percentiles_us(&mut busy)
    );

    // 2. From the API to the secondaries.
    let follow = Follow {
        primary: dns,
        zones: &["cluster.local"],
        key: Some((KEY_NAME, KEY)),
    };
    let mut secs: Vec<Secondary> = Vec::new();
    for (flavor, bin, port) in [
        (Flavor::Knot, &knot_bin, knot_port),
        (Flavor::Bind, &bind_bin, bind_port),
    ] {
        let Some(bin) = bin else {
            println!("{}: not installed, left out", flavor.name());
            continue;
        };
        let t = Instant::now();
        let s = Secondary::start(flavor, bin, port, &follow);
        while s.serial("cluster.local") != Some(want) {
            assert!(
                t.elapsed() < Duration::from_secs(120),
                "{} did not load the zone:\n{}",
                flavor.name(),
                s.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        println!(
            "{}: started and loaded the zone by AXFR in {} ms",
            flavor.name(),
            ms(t.elapsed())
        );
        secs.push(s);
    }
    let mut lat: Vec<Vec<Duration>> = vec![Vec::new(); secs.len() + 1];
    for c in 0..changes {
        let t = Instant::now();
        let (qname, new_ip) = cluster::change_cluster_ip(&api, c, services, namespaces);
        let servers: Vec<SocketAddr> = std::iter::once(dns)
            .chain(secs.iter().map(|s| s.addr))
            .collect();
        let mut done = vec![None; servers.len()];
        while done.iter().any(Option::is_none) {
            for (k, to) in servers.iter().enumerate() {
                if done[k].is_some() {
                    continue;
                }
                id = id.wrapping_add(1);
                if ask(&sock, *to, &qname, id).is_some_and(|v| v == vec![new_ip]) {
                    done[k] = Some(t.elapsed());
                }
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "change {c} never arrived everywhere: {done:?}"
            );
        }
        for (k, d) in done.into_iter().enumerate() {
            let d = d.unwrap();
            if d > Duration::from_millis(100) {
                let who = if k == 0 {
                    "clusterdns"
                } else {
                    secs[k - 1].flavor.name()
                };
                eprintln!("change {c}: {who} answered after {} ms", ms(d));
            }
            lat[k].push(d);
        }
    }
    println!(
        "API change -> clusterdns answers: {}",
        percentiles_ms(&mut lat[0])
    );
    for (k, s) in secs.iter().enumerate() {
        println!(
            "API change -> {} (secondary, NOTIFY + IXFR) answers: {}",
            s.flavor.name(),
            percentiles_ms(&mut lat[k + 1])
        );
    }
    drop(secs);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
