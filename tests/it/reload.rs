//! Config reload: a changed file (or SIGHUP) takes effect without a restart and without a
//! failed query; an invalid config is rejected and the old one keeps running.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::*;

fn ttl_of(s: &Server, name: &str) -> Option<u32> {
    let out = s.dig(&["+noall", "+answer", name]);
    out.split_whitespace().nth(1).and_then(|t| t.parse().ok())
}

#[test]
fn config_changes_apply_live_and_bad_ones_are_rejected() {
    let s = Server::sample("");
    let cfg_path = s.path("clusterdns.yaml");
    let cfg_text = std::fs::read_to_string(&cfg_path).unwrap();
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
    let ttl_is = |want| ttl_of(&s, "kubernetes.default.svc.cluster.local") == Some(want);
    assert!(wait_for(Duration::from_secs(10), || ttl_is(7)));

    // an invalid one: rejected, named, the old config stays
    std::fs::write(
        &cfg_path,
        format!("{cfg_text}cluster:\n  ttl: 7\n  zoen: x\n"),
    )
    .unwrap();
    let logs = s.log_until(Duration::from_secs(10), |l| l.contains("reload rejected"));
    assert!(
        logs.iter()
            .any(|l| l.contains("reload rejected") && l.contains("zoen")),
        "{logs:?}"
    );
    assert!(ttl_is(7));

    // SIGHUP after fixing it: applied
    std::fs::write(&cfg_path, format!("{cfg_text}cluster:\n  ttl: 9\n")).unwrap();
    // SAFETY: signalling our own child by its pid.
    unsafe { libc::kill(s.child.id() as i32, libc::SIGHUP) };
    assert!(wait_for(Duration::from_secs(10), || ttl_is(9)));

    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("{sent} queries during reloads, {failed} failed");
    assert!(sent > 100, "{sent}");
    assert_eq!(failed, 0, "no query fails during a reload");
}
