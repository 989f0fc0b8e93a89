//! Config reload: a changed file (or SIGHUP) takes effect without a restart and without a
//! failed query; an invalid config is rejected and the old one keeps running.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::*;

fn ttl_of(s: &Server, name: &str) -> Option<u32> {
    let out = s.dig(&["+noall", "+answer", name]);
    out.split_whitespace().nth(1).and_then(|t| t.parse().ok())
}

#[test]
fn config_changes_apply_live_and_bad_ones_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let objects = dir.path().join("cluster.yaml");
    std::fs::copy(repo().join("config/cluster.yaml"), &objects).unwrap();
    let cfg_text = base_config(&objects, "");
    let s = Server::start(&cfg_text, &[]);
    let cfg_path = s.path("clusterdns.yaml");
    assert_eq!(ttl_of(&s, "kubernetes.default.svc.cluster.local"), Some(30));

    // queries keep flowing during every reload; none may fail
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (stop, sent, failed, dns) = (stop.clone(), sent.clone(), failed.clone(), s.dns);
        std::thread::spawn(move || {
            let mut id = 0u16;
            while !stop.load(Ordering::Relaxed) {
                id = id.wrapping_add(1);
                let q = query("kubernetes.default.svc.cluster.local", 1, id, None);
                sent.fetch_add(1, Ordering::Relaxed);
                match udp_exchange(dns, &q) {
                    Some(r) if r[3] & 0x0F == 0 && u16::from_be_bytes([r[6], r[7]]) == 1 => {}
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };

    // a valid change: the TTL
    std::fs::write(&cfg_path, format!("{cfg_text}cluster:\n  ttl: 7\n")).unwrap();
    let t0 = Instant::now();
    while ttl_of(&s, "kubernetes.default.svc.cluster.local") != Some(7)
        && t0.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(ttl_of(&s, "kubernetes.default.svc.cluster.local"), Some(7));

    // an invalid one: rejected, named, the old config stays
    std::fs::write(
        &cfg_path,
        format!("{cfg_text}cluster:\n  ttl: 7\n  zoen: x\n"),
    )
    .unwrap();
    let t0 = Instant::now();
    let mut logs = Vec::new();
    while !logs.iter().any(|l: &String| l.contains("reload rejected"))
        && t0.elapsed() < Duration::from_secs(10)
    {
        logs.extend(s.lines.try_iter());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        logs.iter()
            .any(|l| l.contains("reload rejected") && l.contains("zoen")),
        "{logs:?}"
    );
    assert_eq!(ttl_of(&s, "kubernetes.default.svc.cluster.local"), Some(7));

    // SIGHUP after fixing it: applied
    std::fs::write(&cfg_path, format!("{cfg_text}cluster:\n  ttl: 9\n")).unwrap();
    unsafe { libc::kill(s.child.id() as i32, libc::SIGHUP) };
    let t0 = Instant::now();
    while ttl_of(&s, "kubernetes.default.svc.cluster.local") != Some(9)
        && t0.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(ttl_of(&s, "kubernetes.default.svc.cluster.local"), Some(9));

    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("{sent} queries during reloads, {failed} failed");
    assert!(sent > 100, "{sent}");
    assert_eq!(failed, 0, "no query fails during a reload");
}
