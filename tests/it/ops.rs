//! The operator endpoints for real: `/health`, `/ready`, `/metrics` over TCP, the shutdown
//! sequence and the config reload driven by real signals in a child process, and a real
//! Prometheus (Debian package `prometheus`) scraping `/metrics` and evaluating the CoreDNS
//! mixin's alert expressions.

use std::io::{BufRead as _, Read as _};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use clusterdns::config::Config;
use clusterdns::observe::{AnswerSource, Proto, QueryObservation};
use clusterdns::ops::http;
use clusterdns::ops::lifecycle::{Lifecycle, Readiness, ShutdownSignal};
use clusterdns::ops::metrics::{Metrics, UpstreamMetrics};

use crate::support::{Prometheus, get, metric_value, status_body, wait_for};

const MS: Duration = Duration::from_millis(1);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Every endpoint on 127.0.0.1 with a port of the kernel's choosing.
fn loopback_config() -> Config {
    let mut cfg = Config::default();
    cfg.metrics.listen = Some("127.0.0.1:0".into());
    cfg.health.listen = Some("127.0.0.1:0".into());
    cfg.ready.listen = Some("127.0.0.1:0".into());
    cfg
}

/// Shutdown started at `t0`: `/ready` (at `r`) turns 503 "shutting down" within 750 ms, then
/// until `lameduck_end` after `t0`, every 100 ms, `/health` (at `h`) still answers 200 and
/// `during` holds.
fn assert_lameduck(
    h: SocketAddr,
    r: SocketAddr,
    t0: Instant,
    lameduck_end: Duration,
    during: impl Fn(),
) {
    let not_ready = || status_body(r, "/ready").is_some_and(|s| s.0 == 503);
    assert!(
        wait_for(750 * MS, not_ready),
        "/ready still {:?} {:?} after shutdown started",
        status_body(r, "/ready"),
        t0.elapsed()
    );
    assert_eq!(
        status_body(r, "/ready"),
        Some((503, "shutting down".into()))
    );
    while t0.elapsed() < lameduck_end {
        let at = t0.elapsed();
        assert_eq!(
            status_body(h, "/health"),
            Some((200, "OK".into())),
            "at {at:?}"
        );
        during();
        std::thread::sleep(100 * MS);
    }
}

fn q(rcode: u16, source: AnswerSource, secs: f64) -> QueryObservation {
    QueryObservation {
        proto: Proto::Udp,
        ipv6: false,
        qtype: 1,
        rcode,
        source,
        request_size: 40,
        response_size: 100,
        duration: Duration::from_secs_f64(secs),
        do_bit: false,
    }
}

#[test]
fn health_ready_and_lameduck() {
    let rt = runtime();
    let m = Arc::new(Metrics::new("dns://:53", true, &[]));
    let readiness = Readiness::new(["kubernetes"]);
    let lc = Lifecycle::with_timings(readiness.clone(), 1500 * MS, Duration::from_secs(3));
    let ep = rt
        .block_on(http::start(
            &loopback_config(),
            m.clone(),
            readiness.clone(),
            lc.signal(),
        ))
        .unwrap();
    let (h, r, mt) = (ep.health.unwrap(), ep.ready.unwrap(), ep.metrics.unwrap());
    assert!(h.port() != 0 && r.port() != 0 && mt.port() != 0);

    assert_eq!(status_body(h, "/health"), Some((200, "OK".into())));
    assert_eq!(status_body(r, "/ready"), Some((503, "kubernetes".into())));
    for (addr, path) in [(h, "/other"), (r, "/health"), (mt, "/ready")] {
        assert_eq!(status_body(addr, path).map(|s| s.0), Some(404), "{path}");
    }
    readiness.set_ready("kubernetes");
    assert_eq!(status_body(r, "/ready"), Some((200, "OK".into())));

    // A stand-in DNS server: stops accepting at Draining, finishes its in-flight work in 200 ms.
    let guard = lc.drain_guard();
    let mut sig = lc.signal();
    let (drained_tx, drained_rx) = mpsc::channel();
    rt.spawn(async move {
        sig.draining().await;
        tokio::time::sleep(200 * MS).await;
        drained_tx.send(Instant::now()).unwrap();
        drop(guard);
    });

    let t0 = Instant::now();
    let lc2 = lc.clone();
    let done = rt.spawn(async move {
        lc2.shutdown_now().await;
        Instant::now()
    });
    // Readiness fails at once, while liveness, metrics and (here, the stand-in) DNS keep
    // serving through the lameduck.
    assert_lameduck(h, r, t0, 1300 * MS, || {
        assert_eq!(status_body(r, "/ready").map(|s| s.0), Some(503));
        assert_eq!(status_body(mt, "/metrics").map(|s| s.0), Some(200));
        assert!(
            drained_rx.try_recv().is_err(),
            "drain started during lameduck"
        );
    });
    let stopped = rt.block_on(done).unwrap();
    let drained = drained_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(
        stopped >= drained,
        "stopped before the in-flight work finished"
    );
    assert!(stopped - t0 >= 1700 * MS, "{:?}", stopped - t0);
    assert!(stopped - t0 < 4000 * MS, "{:?}", stopped - t0);
    rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), ep.join()).await })
        .expect("endpoints close");
    assert!(
        get(h, "/health", &[]).is_err(),
        "health listener still open after stop"
    );
    assert!(
        get(r, "/ready", &[]).is_err(),
        "ready listener still open after stop"
    );
}

#[test]
fn metrics_endpoint_plain_gzip_and_health_self_check() {
    let rt = runtime();
    let m = Arc::new(Metrics::new("dns://:53", true, &["errors", "kubernetes"]));
    m.observe_query(&q(0, AnswerSource::Zone, 0.001));
    let ep = rt
        .block_on(http::start(
            &loopback_config(),
            m.clone(),
            Readiness::new(["kubernetes"]),
            ShutdownSignal::never(),
        ))
        .unwrap();
    let mt = ep.metrics.unwrap();
    let line = r#"coredns_dns_requests_total{family="1",proto="udp",server="dns://:53",type="A",view="",zone="."} 1"#;

    let plain = get(mt, "/metrics", &[]).unwrap();
    assert_eq!(plain.status, 200);
    assert_eq!(
        plain.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert_eq!(plain.header("content-encoding"), None);
    assert!(plain.text().lines().any(|l| l == line), "{}", plain.text());

    let z = get(mt, "/metrics", &[("Accept-Encoding", "gzip")]).unwrap();
    assert_eq!(z.status, 200);
    assert_eq!(z.header("content-encoding"), Some("gzip"));
    let mut text = String::new();
    flate2::read::GzDecoder::new(&z.body[..])
        .read_to_string(&mut text)
        .unwrap();
    assert!(text.lines().any(|l| l == line), "{text}");
    assert!(z.body.len() * 2 < text.len());

    // The health endpoint requests itself once a second (CoreDNS's coredns_health_request_*).
    let mut t = String::new();
    let checked = wait_for(Duration::from_secs(5), || {
        t = get(mt, "/metrics", &[]).unwrap().text();
        metric_value(&t, "coredns_health_request_duration_seconds_count").unwrap_or(0.0) >= 1.0
    });
    assert!(checked, "no health self-check recorded:\n{t}");
    assert_eq!(
        metric_value(&t, "coredns_health_request_failures_total"),
        Some(0.0),
        "{t}"
    );
}

/// Run by `signals_reload_then_graceful_exit` in a child process (real signals, real exit
/// status); a no-op in a normal test run. SIGHUP goes to the config reload (the one handler
/// of it), SIGTERM to the lifecycle.
#[test]
fn lifecycle_child() {
    if std::env::var_os("CLUSTERDNS_OPS_CHILD").is_none() {
        return;
    }
    let rt = runtime();
    rt.block_on(async {
        let m = Arc::new(Metrics::new("dns://:53", true, &[]));
        let readiness = Readiness::new(["kubernetes"]);
        let lc = Lifecycle::with_timings(readiness.clone(), 1500 * MS, Duration::from_secs(3));
        let ep = http::start(
            &loopback_config(),
            m.clone(),
            readiness.clone(),
            lc.signal(),
        )
        .await
        .unwrap();
        let guard = lc.drain_guard();
        let mut sig = lc.signal();
        tokio::spawn(async move {
            sig.draining().await;
            println!("CHILD draining");
            tokio::time::sleep(200 * MS).await;
            println!("CHILD drained");
            drop(guard);
        });
        // First SIGHUP: the config cannot be loaded (and, for the test to see it, readiness
        // comes); second: a changed config is applied.
        let mut cfg = loopback_config();
        cfg.forward.enabled = false;
        cfg.source.file = Some("/nonexistent/cluster.yaml".into());
        let calls = std::sync::atomic::AtomicU32::new(0);
        let (r, next) = (readiness.clone(), cfg.clone());
        let loader: clusterdns::reload::Loader = Box::new(move || {
            if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                r.set_ready("kubernetes");
                return Err(clusterdns::Error::Other("bad config".into()));
            }
            println!("CHILD reload ok");
            let mut c = next.clone();
            c.cluster.ttl = 7;
            Ok(c)
        });
        let zone = Arc::new(arc_swap::ArcSwap::from_pointee(
            clusterdns::zone::snapshot::Snapshot::empty(&cfg.cluster),
        ));
        let engine = clusterdns::server::Engine::new(&cfg, zone, None, None, m.clone());
        let (settings, _settings_rx) = tokio::sync::watch::channel(cfg.cluster.clone());
        let reloader = clusterdns::reload::Reloader {
            current: cfg,
            loader,
            path: None,
            shared: Arc::new(arc_swap::ArcSwap::from_pointee(engine)),
            settings,
            resolver: None,
            metrics: m.clone(),
            lifecycle: Some(lc.clone()),
        };
        let life = lc.run().unwrap();
        let hangups = clusterdns::reload::hangups().unwrap();
        let stop = lc
            .signal()
            .as_bool(clusterdns::ops::lifecycle::Phase::Draining);
        tokio::spawn(reloader.run(hangups, stop));
        println!(
            "CHILD addrs {} {} {}",
            ep.health.unwrap(),
            ep.ready.unwrap(),
            ep.metrics.unwrap()
        );
        life.await;
        ep.join().await;
        println!("CHILD exit");
    });
}

#[test]
fn signals_reload_then_graceful_exit() {
    /// Kills the child if the test fails half-way (it would wait for a signal forever).
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "ops::lifecycle_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("CLUSTERDNS_OPS_CHILD", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let pid = child.0.id() as libc::pid_t;
    let kill = |sig: libc::c_int| {
        // SAFETY: signalling our own child by pid.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
    };
    let (tx, rx) = mpsc::channel::<String>();
    let out = child.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let mut lines = Vec::new();
    let addrs: Vec<SocketAddr> = loop {
        let l = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("child did not start");
        lines.push(l.clone());
        // libtest may have written `test ops::lifecycle_child ... ` before it on the same line.
        if let Some(i) = l.find("CHILD addrs ") {
            break l[i + 12..].split(' ').map(|a| a.parse().unwrap()).collect();
        }
    };
    let (h, r, mt) = (addrs[0], addrs[1], addrs[2]);
    let failed_reloads = || {
        let text = get(mt, "/metrics", &[]).unwrap().text();
        metric_value(&text, "coredns_reload_failed_total").expect("coredns_reload_failed_total")
    };

    assert_eq!(status_body(r, "/ready"), Some((503, "kubernetes".into())));
    assert_eq!(failed_reloads(), 0.0);
    kill(libc::SIGHUP);
    let ready = || status_body(r, "/ready").is_some_and(|s| s.0 == 200);
    assert!(
        wait_for(Duration::from_secs(5), ready),
        "SIGHUP did not run the reload hook"
    );
    assert_eq!(status_body(r, "/ready"), Some((200, "OK".into())));
    assert_eq!(failed_reloads(), 1.0);
    kill(libc::SIGHUP);
    await_line(&rx, &mut lines, "CHILD reload ok");
    assert_eq!(
        failed_reloads(),
        1.0,
        "a successful reload is not a failure"
    );
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "SIGHUP must not stop the process"
    );

    let t0 = Instant::now();
    kill(libc::SIGTERM);
    assert_lameduck(h, r, t0, 1200 * MS, || {});
    let mut status = None;
    let exited = wait_for(Duration::from_secs(10), || {
        status = child.0.try_wait().unwrap();
        status.is_some()
    });
    assert!(exited, "child did not exit after SIGTERM");
    let status = status.unwrap();
    let took = t0.elapsed();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        took >= 1700 * MS,
        "exited after {took:?}: before lameduck + drain"
    );
    await_line(&rx, &mut lines, "CHILD exit");
    let pos = |s: &str| {
        lines
            .iter()
            .position(|l| l.contains(s))
            .unwrap_or_else(|| panic!("no {s:?} in {lines:#?}"))
    };
    assert!(pos("CHILD draining") < pos("CHILD drained"));
    assert!(pos("CHILD drained") < pos("CHILD exit"));
}

// ---------------------------------------------------------------------------------------------
// A real Prometheus evaluates the CoreDNS mixin's alert expressions.

const UPSTREAM_A: &str = "10.0.0.10:53";
const UPSTREAM_B: &str = "10.0.0.11:53";

/// One batch, identical every time, so every series grows in fixed proportion and the ratios
/// and quantiles Prometheus computes from `rate()` are exact whatever its extrapolation:
/// 95 NOERROR answers in 0.7 ms and 5 SERVFAIL in 5 s; upstream A: 18 NOERROR + 2 SERVFAIL
/// exchanges of 3 ms and one failed health check; upstream B: nothing.
fn inject(m: &Metrics, a: &UpstreamMetrics) {
    for _ in 0..95 {
        m.observe_query(&q(0, AnswerSource::Zone, 0.0007));
    }
    for _ in 0..5 {
        m.observe_query(&q(2, AnswerSource::Forward, 5.0));
    }
    for i in 0..20 {
        a.request(if i < 2 { 2 } else { 0 }, 3 * MS);
    }
    a.healthcheck_failure();
}

fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= 1e-9 * want.abs().max(1e-3)
}

#[test]
fn prometheus_scrapes_and_mixin_alerts_evaluate() {
    let deadline = Instant::now() + Duration::from_secs(55);
    let rt = runtime();
    let m = Arc::new(Metrics::new(
        "dns://:53",
        true,
        &["errors", "prometheus", "cache", "kubernetes", "forward"],
    ));
    let mut cfg = Config::default();
    cfg.metrics.listen = Some("127.0.0.1:0".into());
    cfg.health.listen = None;
    cfg.ready.listen = None;
    let ep = rt
        .block_on(http::start(
            &cfg,
            m.clone(),
            Readiness::new(Vec::<String>::new()),
            ShutdownSignal::never(),
        ))
        .unwrap();
    let a = m.upstream(UPSTREAM_A.parse().unwrap());
    let _b = m.upstream(UPSTREAM_B.parse().unwrap());
    let prom = Prometheus::start(&[ep.metrics.unwrap()]);

    // Inject right after a scrape was rendered: the next one is a second away, so no scrape
    // ever sees half a batch.
    let mut seen = m.renders();
    let mut next_scrape = || {
        let left = deadline.saturating_duration_since(Instant::now());
        let scraped = wait_for(left, || m.renders() != seen);
        assert!(scraped, "no scrape; prometheus log:\n{}", prom.log());
        seen = m.renders();
    };
    for _ in 0..5 {
        next_scrape();
        inject(&m, &a);
    }
    next_scrape();
    // Prometheus holds the scrape that saw the last batch (5 batches of 100 responses).
    let all_in = || {
        prom.query(r#"sum(coredns_dns_responses_total{job="kube-dns"})"#)
            .first()
            .is_some_and(|(_, v)| *v == 500.0)
    };
    assert!(wait_for(Duration::from_secs(10), all_in), "{}", prom.log());

    let one = |expr: &str| -> (serde_json::Map<String, serde_json::Value>, f64) {
        let mut v = prom.query(expr);
        assert_eq!(v.len(), 1, "{expr} gave {v:?}");
        v.remove(0)
    };

    // CoreDNSDown: the target is up.
    assert!(prom.query(r#"absent(up{job="kube-dns"} == 1)"#).is_empty());
    assert_eq!(one(r#"count(coredns_build_info{job="kube-dns"})"#).1, 1.0);

    // CoreDNSLatencyHigh: p99 = 4.096 + 4.096 * (99 - 95) / 5 = 7.3728 s.
    let latency = r#"histogram_quantile(0.99, sum(rate(coredns_dns_request_duration_seconds_bucket{job="kube-dns"}[5m])) without (instance,pod))"#;
    let (labels, v) = one(latency);
    assert!(close(v, 7.3728), "p99 {v}");
    assert_eq!(labels["zone"], ".");
    assert_eq!(labels["server"], "dns://:53");
    assert!(
        labels.get("view").is_none(),
        "Prometheus drops the empty view label: {labels:?}"
    );
    one(&format!("{latency} > 4"));

    // CoreDNSErrorsHigh: 5 SERVFAIL of 100 responses.
    let errors = r#"sum without (pod, instance, server, zone, view, rcode, plugin) (rate(coredns_dns_responses_total{job="kube-dns",rcode="SERVFAIL"}[5m])) / sum without (pod, instance, server, zone, view, rcode, plugin) (rate(coredns_dns_responses_total{job="kube-dns"}[5m]))"#;
    let (labels, v) = one(errors);
    assert!(close(v, 0.05), "SERVFAIL ratio {v}");
    assert_eq!(labels["job"], "kube-dns");
    one(&format!("{errors} > 0.03"));
    one(&format!("{errors} > 0.01"));

    // CoreDNSForwardLatencyHigh (legacy name): 3 ms exchanges, p99 = 0.002 + 0.002 * 0.99.
    let fwd_latency = r#"histogram_quantile(0.99, sum(rate(coredns_forward_request_duration_seconds_bucket{job="kube-dns"}[5m])) without (pod, cluster, instance, rcode))"#;
    let (labels, v) = one(fwd_latency);
    assert!(close(v, 0.00398), "forward p99 {v}");
    assert_eq!(labels["to"], UPSTREAM_A);
    assert!(prom.query(&format!("{fwd_latency} > 4")).is_empty());
    // The same through the 1.11+ name.
    let (labels, v) = one(
        r#"histogram_quantile(0.99, sum(rate(coredns_proxy_request_duration_seconds_bucket{job="kube-dns"}[5m])) without (pod, cluster, instance, rcode))"#,
    );
    assert!(close(v, 0.00398), "proxy p99 {v}");
    assert_eq!(labels["proxy_name"], "forward");

    // CoreDNSForwardErrorsHigh (legacy name): 2 SERVFAIL of 20 to upstream A.
    let fwd_errors = r#"sum without (pod, cluster, instance, rcode) (rate(coredns_forward_responses_total{job="kube-dns",rcode="SERVFAIL"}[5m])) / sum without (pod, cluster, instance, rcode) (rate(coredns_forward_responses_total{job="kube-dns"}[5m]))"#;
    let (labels, v) = one(fwd_errors);
    assert!(close(v, 0.1), "forward SERVFAIL share {v}");
    assert_eq!(labels["to"], UPSTREAM_A);
    one(&format!("{fwd_errors} > 0.03"));

    // CoreDNSForwardHealthcheckFailureCount fires for A only (B's counter exists, at 0).
    let hc = prom.query(
        r#"sum without (pod, cluster, instance) (rate(coredns_forward_healthcheck_failures_total{job="kube-dns"}[5m])) > 0"#,
    );
    assert_eq!(hc.len(), 1, "{hc:?}");
    assert_eq!(hc[0].0["to"], UPSTREAM_A);
    assert!(hc[0].1 > 0.0);
    assert_eq!(
        prom.query(r#"coredns_forward_healthcheck_failures_total{job="kube-dns"}"#)
            .len(),
        2
    );

    // CoreDNSForwardHealthcheckBrokenCount does not fire; the counter is there at 0.
    assert!(
        prom.query(r#"sum without (pod, cluster, instance) (rate(coredns_forward_healthcheck_broken_total{job="kube-dns"}[5m])) > 0"#)
            .is_empty()
    );
    assert_eq!(
        one(r#"coredns_forward_healthcheck_broken_total{job="kube-dns"}"#).1,
        0.0
    );
    drop(prom);
}

/// Reads the child's output into `lines` until a line holds `what` (bounded: 10 s).
fn await_line(rx: &mpsc::Receiver<String>, lines: &mut Vec<String>, what: &str) {
    let end = Instant::now() + Duration::from_secs(10);
    while !lines.iter().any(|l| l.contains(what)) {
        let left = end.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => lines.push(l),
            Err(_) => panic!("no {what:?} from the child; got {lines:#?}"),
        }
    }
}
