//! Operating the real binary: the metrics endpoint as a stock kube-dns shows it; readiness and
//! DNS through SIGTERM while a client keeps querying. (Health and readiness before and after
//! the first sync: `kube_dns::kube_before_the_first_sync_servfail_and_not_ready`.)

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::*;

#[test]
fn metrics_as_a_stock_kube_dns_shows_them() {
    let s = Server::sample("");
    for _ in 0..5 {
        s.dig(&["+short", "kubernetes.default.svc.cluster.local"]);
        s.dig(&["+short", "nope.default.svc.cluster.local", "AAAA"]);
        s.dig(&["+tcp", "+short", "kubernetes.default.svc.cluster.local"]);
    }
    let m = get(s.listen("metrics").unwrap(), "/metrics", &[]).unwrap();
    assert_eq!(m.status, 200);
    assert!(
        m.header("content-type")
            .unwrap_or("")
            .starts_with("text/plain; version=0.0.4"),
        "{:?}",
        m.header("content-type")
    );
    let text = m.text();
    let server = format!("dns://:{}", s.dns.port());
    let has = |needle: &str| text.lines().any(|l| l.starts_with(needle));
    assert!(
        has(&format!(
            "coredns_dns_requests_total{{family=\"1\",proto=\"udp\",server=\"{server}\",type=\"A\",view=\"\",zone=\".\"}} 5"
        )),
        "{text}"
    );
    assert!(
        has(&format!(
            "coredns_dns_requests_total{{family=\"1\",proto=\"tcp\",server=\"{server}\",type=\"A\",view=\"\",zone=\".\"}} 5"
        )),
        "{text}"
    );
    assert!(
        has(&format!(
            "coredns_dns_responses_total{{plugin=\"kubernetes\",rcode=\"NXDOMAIN\",server=\"{server}\",view=\"\",zone=\".\"}} 5"
        )),
        "{text}"
    );
    assert!(
        has(&format!(
            "coredns_dns_request_duration_seconds_bucket{{server=\"{server}\",view=\"\",zone=\".\",le=\"0.00025\"}}"
        )),
        "{text}"
    );
    assert!(has("coredns_build_info{"), "{text}");
    assert!(has("process_resident_memory_bytes "), "{text}");
    assert!(has("clusterdns_snapshot_objects{"), "{text}");
    // promtool agrees it is valid exposition
    let mut p = std::process::Command::new(require("promtool"))
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    p.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = p.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Got {
    Answer,
    Refused,
    Timeout,
}

#[test]
fn sigterm_drains_without_losing_a_query() {
    let mut s = Server::sample("");
    let (dns, ready) = (s.dns, s.listen("ready").unwrap());
    // Ready once the objects file is loaded, which on a busy machine can take longer than the
    // start-up: wait for it (bounded).
    let ready_now = || status_body(ready, "/ready").map(|r| r.0) == Some(200);
    assert!(wait_for(Duration::from_secs(10), ready_now), "never ready");

    // a client querying back to back on a connected socket: after the socket closes, the
    // kernel's port-unreachable turns into an immediate "refused"
    let results = Arc::new(Mutex::new(Vec::<(Instant, Got)>::new()));
    let done = Arc::new(AtomicBool::new(false));
    let client = {
        let (results, done) = (results.clone(), done.clone());
        std::thread::spawn(move || {
            let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
            sock.connect(dns).unwrap();
            sock.set_read_timeout(Some(Duration::from_millis(2000)))
                .unwrap();
            let mut id = 0u16;
            let mut buf = [0u8; 1500];
            while !done.load(Ordering::Relaxed) {
                id = id.wrapping_add(1);
                let q = query("kubernetes.default.svc.cluster.local", 1, id, None);
                let at = Instant::now();
                let got = match sock.send(&q) {
                    Err(_) => Got::Refused,
                    Ok(_) => match sock.recv(&mut buf) {
                        Ok(n) if n > 12 && buf[0..2] == id.to_be_bytes() => Got::Answer,
                        Ok(_) => continue,
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Got::Refused,
                        Err(_) => Got::Timeout,
                    },
                };
                results.lock().unwrap().push((at, got));
                if got == Got::Refused {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        })
    };
    let answered = |n| results.lock().unwrap().len() >= n;
    assert!(
        wait_for(Duration::from_secs(10), || answered(50)),
        "the client runs"
    );
    let term_at = Instant::now();
    // SAFETY: signalling our own child by its pid.
    unsafe { libc::kill(s.child.id() as i32, libc::SIGTERM) };
    // readiness is 503 from the moment the handler has run, through the whole lameduck period
    // (1 s here)
    let not_ready = || status_body(ready, "/ready").is_none_or(|r| r.0 != 200);
    assert!(wait_for(Duration::from_millis(500), not_ready));
    let mut ready_seen = Vec::new();
    while term_at.elapsed() < Duration::from_millis(900) {
        ready_seen.push(status_body(ready, "/ready").map(|r| r.0));
        std::thread::sleep(Duration::from_millis(25));
    }
    let status = s.child.wait().unwrap();
    let exited_after = term_at.elapsed();
    // the client sees the socket gone
    let refused = || {
        results
            .lock()
            .unwrap()
            .last()
            .is_some_and(|r| r.1 == Got::Refused)
    };
    assert!(
        wait_for(Duration::from_secs(5), refused),
        "no refusal after exit"
    );
    done.store(true, Ordering::Relaxed);
    client.join().unwrap();
    assert!(status.success(), "exit 0 after draining: {status:?}");
    assert!(
        exited_after >= Duration::from_millis(900),
        "served through the lameduck period: {exited_after:?}"
    );
    let not_ready = ready_seen.iter().filter(|r| **r == Some(503)).count();
    assert!(
        ready_seen.len() > 10 && ready_seen.iter().all(|r| *r == Some(503) || r.is_none()),
        "{ready_seen:?}"
    );
    assert!(not_ready > 10, "{ready_seen:?}");
    let results = results.lock().unwrap();
    let answered_after_term = results
        .iter()
        .filter(|(t, g)| *t > term_at && *g == Got::Answer)
        .count();
    assert!(
        answered_after_term > 50,
        "DNS kept answering during lameduck: {answered_after_term}"
    );
    // every query sent before the DNS socket closed was answered: no timeouts at all, and
    // once refusals start, no answer follows
    let timeouts = results.iter().filter(|(_, g)| *g == Got::Timeout).count();
    assert_eq!(timeouts, 0, "lost queries");
    if let Some(first_refused) = results.iter().position(|(_, g)| *g == Got::Refused) {
        assert!(
            results[first_refused..]
                .iter()
                .all(|(_, g)| *g != Got::Answer)
        );
    }
    eprintln!(
        "{} queries, {answered_after_term} answered after SIGTERM, ready polls {}/{} were 503, exit after {exited_after:?}",
        results.len(),
        not_ready,
        ready_seen.len()
    );
}
