//! Config reload: a changed file (or SIGHUP) takes effect without a restart and without a
//! failed query; an invalid config is rejected and the old one keeps running.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
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

/// Queries `names` (each with the rcode it must get) in a loop until stopped; counts the
/// queries sent and those that got another answer or none.
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    failed: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(dns: std::net::SocketAddr, names: &[(&str, u8)]) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let names: Vec<(String, u8)> = names.iter().map(|(n, rc)| (n.to_string(), *rc)).collect();
        let thread = {
            let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
            std::thread::spawn(move || {
                let mut id = 0u16;
                while !stop.load(Ordering::Relaxed) {
                    for (name, want) in &names {
                        id = id.wrapping_add(1);
                        sent.fetch_add(1, Ordering::Relaxed);
                        let got = udp_exchange(dns, &query(name, 1, id, None)).map(|r| r[3] & 0x0F);
                        if got != Some(*want) {
                            failed.lock().unwrap().push(format!("{name}: {got:?}"));
                        }
                    }
                }
            })
        };
        Load {
            stop,
            sent,
            failed,
            thread: Some(thread),
        }
    }

    /// Stop; (sent, failures).
    fn finish(mut self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        (
            self.sent.load(Ordering::Relaxed),
            self.failed.lock().unwrap().clone(),
        )
    }
}

/// `pods: verified` turned on by a reload starts the pod watch: pod names are verified at
/// once, and no NXDOMAIN turns into SERVFAIL meanwhile. `noendpoints` turned off starts the
/// EndpointSlice watch; `labels` dropped lists the services the selector left out. All under
/// load, with no failed query.
#[test]
fn reload_starts_the_watches_the_cluster_settings_need() {
    use crate::apiserver::*;
    let (api, _) = ApiServer::start_blocking();
    api.create(namespace("demo"));
    api.create(
        svc("demo", "web")
            .cluster_ip("10.0.0.1")
            .port("http", 80, "TCP")
            .label("tier", "front"),
    );
    api.create(
        svc("demo", "other")
            .cluster_ip("10.0.0.3")
            .port("http", 80, "TCP"),
    );
    let db = svc("demo", "db").headless().port("pg", 5432, "TCP");
    api.create(&db);
    api.create(db.endpoint_slice("db-abc").endpoint(ep(&["10.1.0.9"])));
    api.create(pod("demo", "p1").ip("10.1.0.7"));
    let s = Server::start_kube(
        &api,
        "cluster:\n  noendpoints: true\n  labels: tier=front\n",
    );
    let cfg_path = s.path("clusterdns.yaml");
    let cfg_text = std::fs::read_to_string(&cfg_path).unwrap();
    assert!(wait_for(Duration::from_secs(10), || {
        s.dig(&["+short", "web.demo.svc.cluster.local"]).trim() == "10.0.0.1"
    }));
    assert_eq!(
        s.dig(&["+short", "db.demo.svc.cluster.local"]).trim(),
        "",
        "noendpoints: no endpoint records"
    );
    assert_eq!(
        s.dig(&["+short", "10-1-0-8.demo.pod.cluster.local"]).trim(),
        "10.1.0.8",
        "pods: insecure answers any pod name"
    );
    let load = Load::start(
        s.dns,
        &[
            ("web.demo.svc.cluster.local", 0),
            ("nope.demo.svc.cluster.local", 3),
        ],
    );
    assert_eq!(
        s.status(&["other.demo.svc.cluster.local"]),
        "NXDOMAIN",
        "left out by the label selector (the API never sent it)"
    );
    let with = |cluster: &str| {
        cfg_text.replace(
            "cluster:\n  noendpoints: true\n  labels: tier=front\n",
            cluster,
        )
    };
    std::fs::write(&cfg_path, with("cluster:\n  pods: verified\n")).unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || {
            s.status(&["10-1-0-8.demo.pod.cluster.local"]) == "NXDOMAIN"
        }),
        "pods: verified applied"
    );
    assert!(
        wait_for(Duration::from_secs(10), || {
            s.dig(&["+short", "10-1-0-7.demo.pod.cluster.local"]).trim() == "10.1.0.7"
        }),
        "the pod watch started: the pod that exists is verified"
    );
    assert!(
        wait_for(Duration::from_secs(10), || {
            s.dig(&["+short", "db.demo.svc.cluster.local"]).trim() == "10.1.0.9"
        }),
        "noendpoints off: the EndpointSlice watch started"
    );
    std::fs::write(&cfg_path, with("cluster:\n  pods: disabled\n")).unwrap();
    assert!(wait_for(Duration::from_secs(10), || {
        s.status(&["10-1-0-7.demo.pod.cluster.local"]) == "NXDOMAIN"
            && s.status(&["nope.demo.svc.cluster.local"]) == "NXDOMAIN"
    }));
    // `labels` dropped: the Service watch started again without the selector, and the
    // service it used to leave out is listed.
    assert_eq!(
        s.dig(&["+short", "other.demo.svc.cluster.local"]).trim(),
        "10.0.0.3"
    );
    let (sent, failed) = load.finish();
    eprintln!("{sent} queries during the reloads, {} failed", failed.len());
    assert!(sent > 50, "{sent}");
    assert!(failed.is_empty(), "{failed:?}");
    let logs = s.log_until(Duration::from_secs(1), |l| {
        l.contains("watches started again")
    });
    assert!(
        logs.iter().any(|l| l.contains("watches started again")),
        "{logs:?}"
    );
}

/// How many exchanges `/metrics` counts for upstream `to`.
fn proxy_requests(s: &Server, to: std::net::SocketAddr) -> f64 {
    s.metric_sum(
        "coredns_proxy_request_duration_seconds_count",
        &[&format!("to=\"{to}\"")],
    )
}

/// Forwarding, metrics and shutdown keys reload under load with no failed query: new
/// upstreams are used at once while the cache (its own settings unchanged) keeps its entries;
/// `forward.legacy_metrics` hides the pre-1.11 names; `health.lameduck` is the one the next
/// shutdown uses; a restart-only key is named in a log line.
#[test]
fn forward_cache_metrics_and_lameduck_reload_under_load() {
    let (k1, k2) = (start_knot(), start_knot());
    let s = Server::sample(&format!("forward:\n  upstreams: [\"{}\"]\n", k1.addr));
    let cfg_path = s.path("clusterdns.yaml");
    let cfg_text = std::fs::read_to_string(&cfg_path).unwrap();
    assert!(cfg_text.contains("lameduck: 1s"), "{cfg_text}");
    assert_eq!(s.dig(&["+short", "www.example.test"]).trim(), "192.0.2.10");
    let metrics = || s.metrics();
    assert!(metrics().contains("coredns_forward_requests_total"));
    let load = Load::start(
        s.dns,
        &[
            ("kubernetes.default.svc.cluster.local", 0),
            ("www.example.test", 0),
        ],
    );
    let new = cfg_text
        .replace(
            &format!("upstreams: [\"{}\"]\n", k1.addr),
            &format!("upstreams: [\"{}\"]\n  legacy_metrics: false\n", k2.addr),
        )
        .replace("lameduck: 1s", "lameduck: 1500ms")
        + "server:\n  tcp_idle_timeout: 3s\nquerylog:\n  enabled: true\n  sample: 0.0\n";
    std::fs::write(&cfg_path, &new).unwrap();
    let logs = s.log_until(Duration::from_secs(10), |l| l.contains("config reloaded"));
    assert!(
        logs.iter()
            .any(|l| l.contains("only on a restart") && l.contains("server")),
        "the restart-only key is named: {logs:?}"
    );
    assert!(wait_for(Duration::from_secs(5), || {
        !metrics().contains("coredns_forward_requests_total")
    }));
    assert!(
        metrics().contains("coredns_plugin_enabled{name=\"log\""),
        "the query log turned on shows as a plugin"
    );
    // The cached answer is kept: asking again does not reach the new upstream ...
    let before = proxy_requests(&s, k2.addr);
    assert_eq!(
        before, 0.0,
        "the load's www.example.test never reached the new upstream"
    );
    assert_eq!(s.dig(&["+short", "www.example.test"]).trim(), "192.0.2.10");
    assert_eq!(
        proxy_requests(&s, k2.addr),
        before,
        "served from the kept cache"
    );
    // ... and a name not cached goes to the new one.
    assert_eq!(
        s.dig(&["+short", "alias.example.test"]).lines().last(),
        Some("192.0.2.10")
    );
    assert!(
        proxy_requests(&s, k2.addr) > before,
        "the new upstream is used"
    );
    let (sent, failed) = load.finish();
    eprintln!("{sent} queries during the reload, {} failed", failed.len());
    assert!(sent > 50, "{sent}");
    assert!(failed.is_empty(), "{failed:?}");
    // The next shutdown uses the reloaded lameduck.
    // SAFETY: signalling our own child by its pid.
    unsafe { libc::kill(s.child.id() as i32, libc::SIGTERM) };
    let logs = s.log_until(Duration::from_secs(10), |l| l.contains("lameduck period"));
    assert!(
        logs.iter()
            .any(|l| l.contains("lameduck period") && l.contains("1.5s")),
        "{logs:?}"
    );
}
