use super::*;

const KUBEADM_PLUGINS: [&str; 7] = [
    "errors",
    "prometheus",
    "loadbalance",
    "cache",
    "kubernetes",
    "loop",
    "forward",
];

fn q(
    proto: Proto,
    ipv6: bool,
    qtype: u16,
    rcode: u16,
    source: AnswerSource,
    secs: f64,
) -> QueryObservation {
    QueryObservation {
        proto,
        ipv6,
        qtype,
        rcode,
        source,
        request_size: 40,
        response_size: 120,
        duration: Duration::from_secs_f64(secs),
        do_bit: false,
    }
}

/// A registry with at least one observation in every family.
fn populated() -> Metrics {
    let m = Metrics::new("dns://:53", true, &KUBEADM_PLUGINS);
    let mut o = q(Proto::Udp, false, 1, 0, AnswerSource::Zone, 0.0002);
    o.do_bit = true;
    m.observe_query(&o);
    m.observe_query(&q(Proto::Tcp, true, 28, 3, AnswerSource::Cache, 0.003));
    m.observe_query(&q(Proto::Udp, false, 65, 0, AnswerSource::Forward, 0.02));
    m.observe_query(&q(Proto::Udp, false, 99, 4, AnswerSource::Server, 0.0001));
    m.observe_query(&q(Proto::Udp, false, 33, 2, AnswerSource::Forward, 9.0));
    m.observe_query(&q(Proto::Udp, false, 12, 30, AnswerSource::Hosts, 0.001));
    let up = m.upstream("10.0.0.10:53".parse().unwrap());
    up.request(2, Duration::from_millis(10));
    up.request(0, Duration::from_millis(3));
    up.request(12, Duration::from_millis(3));
    up.healthcheck_failure();
    up.set_healthy(false);
    up.conn_cache_hit(ConnProto::Udp);
    up.conn_cache_miss(ConnProto::TcpTls);
    let up6 = m.upstream("[2001:db8::1]:53".parse().unwrap());
    up6.request(3, Duration::from_millis(1));
    m.forward_broken();
    m.forward_max_concurrent_reject();
    m.cache_hit(CacheKind::Success);
    m.cache_hit(CacheKind::Denial);
    m.cache_miss();
    m.cache_prefetch();
    m.cache_drop();
    m.cache_served_stale();
    m.cache_eviction(CacheKind::Success);
    m.set_cache_entries(CacheKind::Success, 7);
    m.set_cache_entries(CacheKind::Denial, 2);
    m.set_hosts_entries("/etc/hosts", 3);
    m.dns_programming(
        ServiceKind::HeadlessWithSelector,
        Duration::from_millis(1500),
    );
    m.watch_restart("services");
    m.relist("pods");
    m.snapshot_published(10, 12, 30, 250);
    m.reload_failed();
    m.dropped(DropReason::Malformed);
    m.health_check(Duration::from_micros(300), true);
    m
}

fn assert_has(text: &str, line: &str) {
    assert!(
        text.lines().any(|l| l == line),
        "missing line:\n  {line}\nin exposition:\n{text}"
    );
}

fn le_strings(text: &str, prefix: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| {
            l.split("le=\"")
                .nth(1)
                .map(|r| r[..r.find('"').unwrap()].to_string())
        })
        .collect()
}

#[test]
fn request_and_response_series_use_coredns_labels() {
    let t = populated().render();
    let srv = r#"server="dns://:53""#;
    for line in [
        format!(
            r#"coredns_dns_requests_total{{family="1",proto="udp",{srv},type="A",view="",zone="."}} 1"#
        ),
        format!(
            r#"coredns_dns_requests_total{{family="2",proto="tcp",{srv},type="AAAA",view="",zone="."}} 1"#
        ),
        format!(
            r#"coredns_dns_requests_total{{family="1",proto="udp",{srv},type="HTTPS",view="",zone="."}} 1"#
        ),
        format!(
            r#"coredns_dns_requests_total{{family="1",proto="udp",{srv},type="other",view="",zone="dropped"}} 1"#
        ),
        format!(
            r#"coredns_dns_requests_total{{family="1",proto="udp",{srv},type="SRV",view="",zone="."}} 1"#
        ),
        format!(
            r#"coredns_dns_requests_total{{family="1",proto="udp",{srv},type="PTR",view="",zone="."}} 1"#
        ),
        format!(
            r#"coredns_dns_responses_total{{plugin="kubernetes",rcode="NOERROR",{srv},view="",zone="."}} 1"#
        ),
        format!(
            r#"coredns_dns_responses_total{{plugin="cache",rcode="NXDOMAIN",{srv},view="",zone="."}} 1"#
        ),
        format!(
            r#"coredns_dns_responses_total{{plugin="forward",rcode="NOERROR",{srv},view="",zone="."}} 1"#
        ),
        format!(
            r#"coredns_dns_responses_total{{plugin="forward",rcode="SERVFAIL",{srv},view="",zone="."}} 1"#
        ),
        format!(
            r#"coredns_dns_responses_total{{plugin="",rcode="NOTIMP",{srv},view="",zone="dropped"}} 1"#
        ),
        format!(
            r#"coredns_dns_responses_total{{plugin="hosts",rcode="RCODE30",{srv},view="",zone="."}} 1"#
        ),
        format!(r#"coredns_dns_do_requests_total{{{srv},view="",zone="."}} 1"#),
        format!(r#"coredns_dns_request_duration_seconds_count{{{srv},view="",zone="."}} 5"#),
        format!(
            r#"coredns_dns_request_duration_seconds_bucket{{{srv},view="",zone=".",le="0.00025"}} 1"#
        ),
        format!(
            r#"coredns_dns_request_duration_seconds_bucket{{{srv},view="",zone=".",le="8.192"}} 4"#
        ),
        format!(
            r#"coredns_dns_request_duration_seconds_bucket{{{srv},view="",zone=".",le="+Inf"}} 5"#
        ),
        format!(
            r#"coredns_dns_request_size_bytes_bucket{{proto="udp",{srv},view="",zone=".",le="0"}} 0"#
        ),
        format!(
            r#"coredns_dns_request_size_bytes_bucket{{proto="udp",{srv},view="",zone=".",le="100"}} 4"#
        ),
        format!(
            r#"coredns_dns_response_size_bytes_bucket{{proto="tcp",{srv},view="",zone=".",le="16000"}} 1"#
        ),
        format!(r#"coredns_dns_response_size_bytes_sum{{proto="tcp",{srv},view="",zone="."}} 120"#),
    ] {
        assert_has(&t, &line);
    }
    assert_has(&t, "# TYPE coredns_dns_requests_total counter");
    assert_has(&t, "# TYPE coredns_dns_request_duration_seconds histogram");
    assert_has(
        &t,
        "# HELP coredns_dns_responses_total Counter of response status codes.",
    );
    // No `type` label on the duration histogram (since CoreDNS 1.9).
    assert!(
        !t.lines()
            .any(|l| l.starts_with("coredns_dns_request_duration_seconds") && l.contains("type="))
    );
}

#[test]
fn bucket_le_strings_match_coredns() {
    let t = populated().render();
    let time: Vec<&str> = vec![
        "0.00025", "0.0005", "0.001", "0.002", "0.004", "0.008", "0.016", "0.032", "0.064",
        "0.128", "0.256", "0.512", "1.024", "2.048", "4.096", "8.192", "+Inf",
    ];
    let size: Vec<&str> = vec![
        "0", "100", "200", "300", "400", "511", "1023", "2047", "4095", "8291", "16000", "32000",
        "48000", "64000", "+Inf",
    ];
    let prog: Vec<String> = (0..20)
        .map(|i| {
            // 0.001 * 2^i, spelled as decimal: 0.001 0.002 0.004 ... 524.288
            let thousandths = 1u64 << i;
            if thousandths >= 1000 {
                let s = format!("{}.{:03}", thousandths / 1000, thousandths % 1000);
                s.trim_end_matches('0').trim_end_matches('.').to_string()
            } else {
                format!("0.{thousandths:03}")
                    .trim_end_matches('0')
                    .to_string()
            }
        })
        .chain(["+Inf".to_string()])
        .collect();
    assert_eq!(prog[19], "524.288");
    let one = |prefix: &str| -> Vec<String> {
        let all = le_strings(&t, prefix);
        let first_series: Vec<String> = {
            let mut v = Vec::new();
            for le in all {
                v.push(le.clone());
                if le == "+Inf" {
                    break;
                }
            }
            v
        };
        first_series
    };
    assert_eq!(one("coredns_dns_request_duration_seconds_bucket"), time);
    assert_eq!(one("coredns_proxy_request_duration_seconds_bucket"), time);
    assert_eq!(one("coredns_forward_request_duration_seconds_bucket"), time);
    assert_eq!(one("coredns_dns_request_size_bytes_bucket"), size);
    assert_eq!(one("coredns_dns_response_size_bytes_bucket"), size);
    assert_eq!(
        one("coredns_kubernetes_dns_programming_duration_seconds_bucket"),
        prog
    );
    // CoreDNS's SlimTimeBuckets = ExponentialBuckets(0.00025, 10, 5), computed by repeated
    // multiplication in Go as here; both print the shortest round-trip decimal.
    let slim: Vec<String> = prometheus::exponential_buckets(0.00025, 10.0, 5)
        .unwrap()
        .iter()
        .map(|b| b.to_string())
        .chain(["+Inf".to_string()])
        .collect();
    assert_eq!(one("coredns_health_request_duration_seconds_bucket"), slim);
}

#[test]
fn forward_cache_and_other_series() {
    let t = populated().render();
    let srv = r#"server="dns://:53""#;
    for line in [
        r#"coredns_proxy_request_duration_seconds_count{proxy_name="forward",rcode="SERVFAIL",to="10.0.0.10:53"} 1"#.to_string(),
        r#"coredns_proxy_request_duration_seconds_count{proxy_name="forward",rcode="12",to="10.0.0.10:53"} 1"#.into(),
        r#"coredns_proxy_request_duration_seconds_count{proxy_name="forward",rcode="NXDOMAIN",to="[2001:db8::1]:53"} 1"#.into(),
        r#"coredns_proxy_healthcheck_failures_total{proxy_name="forward",to="10.0.0.10:53"} 1"#.into(),
        r#"coredns_proxy_conn_cache_hits_total{proto="udp",proxy_name="forward",to="10.0.0.10:53"} 1"#.into(),
        r#"coredns_proxy_conn_cache_misses_total{proto="tcp-tls",proxy_name="forward",to="10.0.0.10:53"} 1"#.into(),
        r#"coredns_forward_requests_total{to="10.0.0.10:53"} 3"#.into(),
        r#"coredns_forward_responses_total{rcode="SERVFAIL",to="10.0.0.10:53"} 1"#.into(),
        r#"coredns_forward_responses_total{rcode="NOERROR",to="10.0.0.10:53"} 1"#.into(),
        r#"coredns_forward_responses_total{rcode="12",to="10.0.0.10:53"} 1"#.into(),
        r#"coredns_forward_request_duration_seconds_count{rcode="NOERROR",to="10.0.0.10:53"} 1"#.into(),
        r#"coredns_forward_healthcheck_failures_total{to="10.0.0.10:53"} 1"#.into(),
        r#"coredns_forward_healthcheck_failures_total{to="[2001:db8::1]:53"} 0"#.into(),
        "coredns_forward_healthcheck_broken_total 1".into(),
        "coredns_forward_max_concurrent_rejects_total 1".into(),
        format!(r#"coredns_cache_entries{{{srv},type="success",view="",zones="."}} 7"#),
        format!(r#"coredns_cache_entries{{{srv},type="denial",view="",zones="."}} 2"#),
        format!(r#"coredns_cache_requests_total{{{srv},view="",zones="."}} 3"#),
        format!(r#"coredns_cache_hits_total{{{srv},type="success",view="",zones="."}} 1"#),
        format!(r#"coredns_cache_hits_total{{{srv},type="denial",view="",zones="."}} 1"#),
        format!(r#"coredns_cache_misses_total{{{srv},view="",zones="."}} 1"#),
        format!(r#"coredns_cache_prefetch_total{{{srv},view="",zones="."}} 1"#),
        format!(r#"coredns_cache_drops_total{{{srv},view="",zones="."}} 1"#),
        format!(r#"coredns_cache_served_stale_total{{{srv},view="",zones="."}} 1"#),
        format!(r#"coredns_cache_evictions_total{{{srv},type="success",view="",zones="."}} 1"#),
        format!(r#"coredns_plugin_enabled{{name="kubernetes",{srv},view="",zone="."}} 1"#),
        format!(r#"coredns_plugin_enabled{{name="forward",{srv},view="",zone="."}} 1"#),
        r#"coredns_kubernetes_dns_programming_duration_seconds_count{service_kind="headless_with_selector"} 1"#.into(),
        r#"coredns_kubernetes_dns_programming_duration_seconds_bucket{service_kind="headless_with_selector",le="2.048"} 1"#.into(),
        r#"coredns_hosts_entries{hostsfile="/etc/hosts"} 3"#.into(),
        "coredns_panics_total 0".into(),
        "coredns_reload_failed_total 1".into(),
        "coredns_health_request_failures_total 0".into(),
        "coredns_health_request_duration_seconds_count 1".into(),
        r#"clusterdns_snapshot_objects{kind="services"} 10"#.into(),
        r#"clusterdns_snapshot_objects{kind="endpoints"} 12"#.into(),
        r#"clusterdns_snapshot_objects{kind="pods"} 30"#.into(),
        "clusterdns_snapshot_records 250".into(),
        "clusterdns_snapshots_published_total 1".into(),
        r#"clusterdns_watch_restarts_total{kind="services"} 1"#.into(),
        r#"clusterdns_relists_total{kind="pods"} 1"#.into(),
        r#"clusterdns_upstream_healthy{to="10.0.0.10:53"} 0"#.into(),
        r#"clusterdns_upstream_healthy{to="[2001:db8::1]:53"} 1"#.into(),
        r#"clusterdns_dropped_total{reason="malformed"} 1"#.into(),
        r#"clusterdns_dropped_total{reason="max_concurrent"} 0"#.into(),
        "# TYPE coredns_build_info gauge".into(),
        "# TYPE process_cpu_seconds_total counter".into(),
        "# TYPE go_goroutines gauge".into(),
    ] {
        assert_has(&t, &line);
    }
    let build = t
        .lines()
        .find(|l| l.starts_with("coredns_build_info{"))
        .expect("build_info");
    assert!(
        build.contains(&format!(r#"version="{}""#, env!("CARGO_PKG_VERSION"))),
        "{build}"
    );
    assert!(
        build.contains("goversion=") && build.contains("revision=") && build.ends_with(" 1"),
        "{build}"
    );

    let value = |name: &str| -> f64 {
        t.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("{name} missing"))
            .parse()
            .unwrap()
    };
    assert!(value("process_resident_memory_bytes") > 1e6);
    assert!(value("process_open_fds") >= 3.0);
    assert!(value("process_max_fds") >= value("process_open_fds"));
    assert!(value("go_goroutines") >= 1.0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let start = value("process_start_time_seconds");
    assert!(
        start > now - 86_400.0 && start <= now + 1.0,
        "start {start} now {now}"
    );
    let age = value("clusterdns_snapshot_age_seconds");
    assert!((0.0..5.0).contains(&age), "age {age}");
}

/// This process's user + system CPU time from getrusage(2): a source independent of the
/// /proc/self/stat the exposition reads, in microseconds rather than clock ticks.
fn rusage_cpu_seconds() -> f64 {
    // SAFETY: an all-zero rusage is valid (plain integers).
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes only the struct it is given.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) }, 0);
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(ru.ru_utime) + secs(ru.ru_stime)
}

#[test]
fn process_cpu_seconds_is_the_process_cpu_time() {
    // Spend some CPU first, so that a value stuck at zero cannot pass.
    let deadline = Instant::now() + Duration::from_secs(10);
    while rusage_cpu_seconds() < 0.05 && Instant::now() < deadline {
        std::hint::black_box((0..10_000u64).sum::<u64>());
    }
    let m = Metrics::new("dns://:53", true, &[]);
    let before = rusage_cpu_seconds();
    let t = m.render();
    let after = rusage_cpu_seconds();
    let got: f64 = t
        .lines()
        .find_map(|l| l.strip_prefix("process_cpu_seconds_total "))
        .expect("process_cpu_seconds_total")
        .parse()
        .unwrap();
    // /proc counts whole clock ticks (1/100 s) for user and system time each: up to two ticks
    // below what getrusage says.
    assert!(
        got > 0.0 && got >= before - 0.02 && got <= after,
        "process_cpu_seconds_total {got}, getrusage {before}..{after}"
    );
}

#[test]
fn legacy_forward_names_follow_the_switch() {
    let m = Metrics::new("dns://:5353", false, &[]);
    let up = m.upstream("127.0.0.1:53".parse().unwrap());
    up.request(0, Duration::from_millis(1));
    up.healthcheck_failure();
    let t = m.render();
    assert!(!t.contains("coredns_forward_requests_total"), "{t}");
    assert!(!t.contains("coredns_forward_responses_total"));
    assert!(!t.contains("coredns_forward_request_duration_seconds"));
    assert!(!t.contains("coredns_forward_healthcheck_failures_total"));
    assert!(t.contains("coredns_forward_healthcheck_broken_total 0"));
    assert_has(
        &t,
        r#"coredns_proxy_healthcheck_failures_total{proxy_name="forward",to="127.0.0.1:53"} 1"#,
    );
    // Before any snapshot, no age is reported.
    assert!(!t.contains("clusterdns_snapshot_age_seconds"));
}

#[test]
fn server_label_and_plugins() {
    assert_eq!(server_label(53), "dns://:53");
    assert_eq!(server_label(1053), "dns://:1053");
    let m = Metrics::new(&server_label(1053), true, &["errors"]);
    m.observe_query(&q(Proto::Udp, false, 1, 0, AnswerSource::Zone, 0.001));
    let t = m.render();
    assert_has(
        &t,
        r#"coredns_dns_requests_total{family="1",proto="udp",server="dns://:1053",type="A",view="",zone="."} 1"#,
    );
    assert_has(
        &t,
        r#"coredns_plugin_enabled{name="errors",server="dns://:1053",view="",zone="."} 1"#,
    );
    // More plugin names later keep the label.
    m.enable_plugins(&["cache"]);
    assert_eq!(m.server(), "dns://:1053");
    assert_has(
        &m.render(),
        r#"coredns_plugin_enabled{name="cache",server="dns://:1053",view="",zone="."} 1"#,
    );

    let mut cfg = crate::config::Config::default();
    assert_eq!(
        plugins_for(&cfg),
        [
            "errors",
            "prometheus",
            "loadbalance",
            "cache",
            "kubernetes",
            "forward"
        ]
    );
    cfg.hosts = Some(Default::default());
    cfg.querylog.enabled = true;
    cfg.cache.enabled = false;
    assert_eq!(
        plugins_for(&cfg),
        [
            "errors",
            "log",
            "prometheus",
            "loadbalance",
            "kubernetes",
            "hosts",
            "forward"
        ]
    );
}

#[test]
fn label_spellings() {
    let expect = [
        (0, "NOERROR"),
        (1, "FORMERR"),
        (2, "SERVFAIL"),
        (3, "NXDOMAIN"),
        (4, "NOTIMP"),
        (5, "REFUSED"),
        (6, "YXDOMAIN"),
        (7, "YXRRSET"),
        (8, "NXRRSET"),
        (9, "NOTAUTH"),
        (10, "NOTZONE"),
        (12, "RCODE12"),
        (16, "BADSIG"),
        (23, "BADCOOKIE"),
        (24, "RCODE24"),
        (4095, "RCODE4095"),
    ];
    for (n, s) in expect {
        assert_eq!(rcode_label(n), s);
    }
    let types = [
        (1, "A"),
        (28, "AAAA"),
        (5, "CNAME"),
        (48, "DNSKEY"),
        (43, "DS"),
        (15, "MX"),
        (50, "NSEC3"),
        (47, "NSEC"),
        (2, "NS"),
        (12, "PTR"),
        (46, "RRSIG"),
        (6, "SOA"),
        (33, "SRV"),
        (16, "TXT"),
        (65, "HTTPS"),
        (251, "IXFR"),
        (252, "AXFR"),
        (255, "ANY"),
        (64, "other"),
        (257, "other"),
        (0, "other"),
    ];
    for (n, s) in types {
        assert_eq!(QTYPE_LABELS[qtype_index(n)], s, "qtype {n}");
    }
    assert_eq!(AnswerSource::Server.plugin_label(), "");
    assert_eq!(AnswerSource::Zone.plugin_label(), "kubernetes");
}

#[test]
fn gzip_roundtrip() {
    use std::io::Read as _;
    let m = populated();
    let z = m.render_gzip();
    let mut s = String::new();
    flate2::read::GzDecoder::new(&z[..])
        .read_to_string(&mut s)
        .unwrap();
    assert!(s.contains("coredns_dns_requests_total{"));
    assert!(z.len() < s.len() / 2, "{} vs {}", z.len(), s.len());
}

/// `promtool check metrics` (Debian package `prometheus`) accepts the exposition.
#[test]
fn promtool_check_metrics_passes() {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let text = populated().render();
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => panic!("promtool not runnable ({e}): install the Debian package `prometheus`"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "promtool failed:\n{stdout}\n{stderr}\n--- exposition ---\n{text}"
    );
    assert!(
        stdout.trim().is_empty() && stderr.trim().is_empty(),
        "promtool lint:\n{stdout}\n{stderr}"
    );
}

/// Threads counting at once lose nothing: every observation of every thread is in the sums.
/// (What one `observe_query` costs is measured by `cargo bench --bench paths`.)
#[test]
fn observe_query_counts_every_thread() {
    let m = Arc::new(Metrics::new("dns://:53", true, &[]));
    let obs: Vec<QueryObservation> = (0..64u16)
        .map(|i| {
            let mut o = q(
                if i % 5 == 0 { Proto::Tcp } else { Proto::Udp },
                i % 7 == 0,
                [1, 28, 33, 12, 65][(i % 5) as usize],
                [0, 3, 0, 2][(i % 4) as usize],
                [
                    AnswerSource::Zone,
                    AnswerSource::Cache,
                    AnswerSource::Forward,
                ][(i % 3) as usize],
                0.0001 * f64::from(i),
            );
            o.do_bit = i % 9 == 0;
            o
        })
        .collect();
    for o in &obs {
        m.observe_query(o); // resolve the slots
    }
    let n = 100_000usize;
    let run = |m: &Metrics| {
        for k in 0..n {
            m.observe_query(&obs[k & 63]);
        }
    };
    run(&m);
    std::thread::scope(|s| {
        s.spawn(|| run(&m));
        s.spawn(|| run(&m));
    });
    let t = m.render();
    let total: u64 = t
        .lines()
        .filter(|l| l.starts_with("coredns_dns_requests_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(total, 64 + 3 * n as u64);
}
