//! Propagation latency: from a change at the API server to the new DNS answer, in a cluster
//! of 10,000 services and 100,000 endpoints, measured against the real (release) binary
//! watching the project's test API server. Also: the time to the first complete snapshot and
//! the server's resident memory holding that cluster.
//!
//! `cargo bench --bench propagation` (add `-- --services N --changes N` to resize).

#[path = "../tests/it/apiserver/mod.rs"]
mod apiserver;

#[path = "common/cluster.rs"]
mod cluster;
#[allow(dead_code)] // each bench uses some of the shared helpers
mod common;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use apiserver::*;
use common::{ask, num, percentiles_ms, status_kib};

fn main() {
    if !common::bench_requested("propagation", "cargo bench --bench propagation") {
        return;
    }
    let services = num("--services", 10_000);
    let per = num("--endpoints-per-service", 10);
    let changes = num("--changes", 300);
    let (api, _) = ApiServer::start_blocking();
    let t0 = Instant::now();
    let namespaces = 100;
    cluster::fill(&api, services, per, namespaces);
    eprintln!(
        "API server holds {services} services, {} endpoints (filled in {:?})",
        services * per,
        t0.elapsed()
    );

    let dir = std::env::temp_dir().join(format!("clusterdns-prop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = cluster::write_config(&api, &dir, "");
    let start = Instant::now();
    let (mut child, dns, lines) = cluster::serve(&cfg, "warn");
    std::thread::spawn(move || for _ in lines {});
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let last = cluster::last_service(services, namespaces);
    let mut id = 1u16;
    loop {
        id = id.wrapping_add(1);
        if ask(&sock, dns, &last, id).is_some_and(|v| !v.is_empty()) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(300), "no first sync");
        std::thread::sleep(Duration::from_millis(5));
    }
    let first = start.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let rss = status_kib(child.id(), "VmRSS:");

    // Changes: a service's ClusterIP, then an endpoint added to a slice (the common churn).
    let mut lat = Vec::with_capacity(changes);
    for c in 0..changes {
        let t = Instant::now();
        let (qname, new_ip) = cluster::change_cluster_ip(&api, c, services, namespaces);
        loop {
            id = id.wrapping_add(1);
            if ask(&sock, dns, &qname, id).is_some_and(|v| v == vec![new_ip]) {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "change {c} never arrived"
            );
        }
        lat.push(t.elapsed());
    }
    let rss_after = status_kib(child.id(), "VmRSS:");
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let coredns_mb = 0.86 * (services as f64) / 1000.0 + 49.0;
    println!(
        "first snapshot: {:.2} s from start to the last service answering ({services} services, {} endpoints)",
        first.as_secs_f64(),
        services * per
    );
    println!(
        "resident memory: {:.1} MB after sync, {:.1} MB after {changes} changes (CoreDNS's published figure for this size: {:.0} MB; ratio {:.2})",
        rss as f64 / 1024.0,
        rss_after as f64 / 1024.0,
        coredns_mb,
        (rss as f64 / 1024.0) / coredns_mb
    );
    println!(
        "propagation over {changes} changes (API update returned -> new answer): {}",
        percentiles_ms(&mut lat)
    );
}
