//! Propagation latency: from a change at the API server to the new DNS answer, in a cluster
//! of 10,000 services and 100,000 endpoints, measured against the real (release) binary
//! watching the project's test API server. Also: the time to the first complete snapshot and
//! the server's resident memory holding that cluster.
//!
//! `cargo bench --bench propagation` (add `-- --services N --changes N` to resize).

#[path = "../tests/it/apiserver/mod.rs"]
#[allow(dead_code)]
mod apiserver;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use apiserver::*;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn query(name: &str, id: u16) -> Vec<u8> {
    let mut m = vec![(id >> 8) as u8, id as u8, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for l in name.split('.') {
        m.push(l.len() as u8);
        m.extend_from_slice(l.as_bytes());
    }
    m.extend_from_slice(&[0, 0, 1, 0, 1]);
    m
}

/// The A records of a reply (no parsing beyond the fixed layout of our answers).
fn answer_ips(reply: &[u8], qlen: usize) -> Vec<[u8; 4]> {
    let an = u16::from_be_bytes([reply[6], reply[7]]) as usize;
    let mut p = qlen;
    let mut v = Vec::new();
    for _ in 0..an {
        if p + 16 > reply.len() {
            break;
        }
        // pointer owner (2) type class ttl rdlen (10) rdata
        let rdlen = u16::from_be_bytes([reply[p + 10], reply[p + 11]]) as usize;
        if rdlen == 4 {
            v.push([reply[p + 12], reply[p + 13], reply[p + 14], reply[p + 15]]);
        }
        p += 12 + rdlen;
    }
    v
}

fn ask(sock: &UdpSocket, dns: SocketAddr, name: &str, id: u16) -> Option<Vec<[u8; 4]>> {
    let q = query(name, id);
    sock.send_to(&q, dns).ok()?;
    let mut buf = [0u8; 1500];
    let (n, _) = sock.recv_from(&mut buf).ok()?;
    Some(answer_ips(&buf[..n], q.len()))
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn pct(v: &[Duration], p: f64) -> Duration {
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` does not: there this long
    // measurement is only built, not run.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("propagation: run it with `cargo bench --bench propagation`");
        return;
    }
    let services = arg("--services", 10_000);
    let per = arg("--endpoints-per-service", 10);
    let changes = arg("--changes", 300);
    let (api, _) = ApiServer::start_blocking();
    let t0 = Instant::now();
    let namespaces = 100;
    for n in 0..namespaces {
        api.create(namespace(&format!("ns-{n}")));
    }
    for i in 0..services {
        let ns = format!("ns-{}", i % namespaces);
        let name = format!("svc-{i}");
        let ip = format!("10.96.{}.{}", i / 250, i % 250 + 1);
        api.create(svc(&ns, &name).cluster_ip(&ip).port("http", 80, "TCP"));
        let mut sl = slice(&ns, &format!("{name}-x"), &name).port("http", 8080, "TCP");
        for e in 0..per {
            let k = i * per + e;
            sl = sl.endpoint(ep(&[&format!(
                "10.{}.{}.{}",
                128 + k / 65536,
                (k / 256) % 256,
                k % 256
            )]));
        }
        api.create(sl);
    }
    eprintln!(
        "API server holds {services} services, {} endpoints (filled in {:?})",
        services * per,
        t0.elapsed()
    );

    let dir = std::env::temp_dir().join(format!("clusterdns-prop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = api.write_kubeconfig(&dir);
    let cfg = dir.join("c.yaml");
    std::fs::write(
        &cfg,
        format!(
            "listen: [\"127.0.0.1:0\"]\nsource: {{kubernetes: {{kubeconfig: {}, startup_timeout: 60s}}}}\nforward: {{enabled: false}}\nmetrics: {{listen: null}}\nhealth: {{listen: null}}\nready: {{listen: null}}\nserver: {{udp_workers: 1}}\n",
            kubeconfig.display()
        ),
    )
    .unwrap();
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_clusterdns"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .env("CLUSTERDNS_LOG", "warn")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start clusterdns");
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let dns: SocketAddr = loop {
        let l = lines.next().expect("server output").unwrap();
        if let Some(a) = l.strip_prefix("clusterdns: listening dns=") {
            break a.trim().parse().unwrap();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let last = format!(
        "svc-{}.ns-{}.svc.cluster.local",
        services - 1,
        (services - 1) % namespaces
    );
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
    let rss = rss_kib(child.id());

    // Changes: a service's ClusterIP, then an endpoint added to a slice (the common churn).
    let mut lat = Vec::with_capacity(changes);
    for c in 0..changes {
        let i = (c * 7919) % services;
        let ns = format!("ns-{}", i % namespaces);
        let name = format!("svc-{i}");
        let qname = format!("{name}.{ns}.svc.cluster.local");
        let new_ip = [10, 97, (c / 250) as u8, (c % 250 + 1) as u8];
        let t = Instant::now();
        api.update(
            svc(&ns, &name)
                .cluster_ip(&format!("10.97.{}.{}", c / 250, c % 250 + 1))
                .port("http", 80, "TCP"),
        );
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
    lat.sort();
    let rss_after = rss_kib(child.id());
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
        "propagation over {changes} changes (API update returned -> new answer): p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        pct(&lat, 0.5).as_secs_f64() * 1e3,
        pct(&lat, 0.9).as_secs_f64() * 1e3,
        pct(&lat, 0.99).as_secs_f64() * 1e3,
        lat.last().unwrap().as_secs_f64() * 1e3
    );
}
