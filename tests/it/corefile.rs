//! `clusterdns convert-corefile` as a library: the stock Corefiles (kubeadm, AKS with its
//! templates and the coredns-custom `*.server` / `*.override` imports, EKS, k3s with NodeHosts,
//! RKE2, kube-dns's ConfigMap, NodeLocal DNSCache's; tests/fixtures/corefiles/SOURCES.md) convert to configs
//! that parse and validate, and Corefiles with plugins clusterdns cannot carry over fail with the
//! directive, its server block, its line and the reason.

use std::path::Path;
use std::time::Duration;

use clusterdns::config::{Config, ForwardPolicy, PodsMode};
use clusterdns::corefile::{self, Conversion, CorefileError, Options};

use crate::support::{self, convert_fixture, corefile_fixtures as fixtures, fixture_text as read};

/// The YAML the converter wrote parses back to the same config, and validates. The notes are
/// not in it: the CLI prints them on stderr (`cli_prints_the_config_and_every_note`).
fn assert_round_trip(c: &Conversion) {
    let parsed = Config::from_yaml(&c.config_yaml, Path::new("converted.yaml"))
        .unwrap_or_else(|e| panic!("{e}\n{}", c.config_yaml));
    parsed
        .validate()
        .unwrap_or_else(|e| panic!("{e}\n{}", c.config_yaml));
    assert_eq!(parsed, c.config);
    for n in &c.notes {
        assert!(
            !c.config_yaml.contains(n.as_str()),
            "a note in the YAML: {n}\n{}",
            c.config_yaml
        );
    }
}

fn has_note(c: &Conversion, needles: &[&str]) -> bool {
    c.notes
        .iter()
        .any(|n| needles.iter().all(|s| n.contains(s)))
}

#[test]
fn kubeadm_default_corefile_converts() {
    let c = convert_fixture("kubeadm/Corefile").unwrap();
    assert_round_trip(&c);
    let cfg = &c.config;
    // `.:53` is every address of both families: `:53`.
    assert_eq!(
        cfg.listen,
        vec!["0.0.0.0:53".parse().unwrap(), "[::]:53".parse().unwrap()]
    );
    assert!(cfg.cluster.enabled);
    assert_eq!(cfg.cluster.zone, "cluster.local");
    assert_eq!(cfg.cluster.reverse_zones, ["in-addr.arpa", "ip6.arpa"]);
    assert_eq!(cfg.cluster.fallthrough, ["in-addr.arpa", "ip6.arpa"]);
    assert_eq!(cfg.cluster.ttl, 30);
    assert_eq!(cfg.cluster.pods, PodsMode::Insecure);
    assert!(cfg.cluster.loadbalance);
    assert!(!cfg.cluster.endpoint_pod_names);
    let k = cfg.source.kubernetes.as_ref().expect("in-cluster source");
    assert_eq!(k.kubeconfig, None);
    assert_eq!(k.startup_timeout, Duration::from_secs(5));
    assert!(cfg.forward.enabled);
    assert!(cfg.forward.upstreams.is_empty());
    assert_eq!(cfg.forward.resolv_conf, Path::new("/etc/resolv.conf"));
    assert!(cfg.forward.stub_domains.is_empty());
    assert_eq!(cfg.forward.max_concurrent, 1000);
    assert_eq!(cfg.forward.policy, ForwardPolicy::Random);
    assert!(!cfg.forward.force_tcp);
    assert!(cfg.cache.enabled);
    assert_eq!((cfg.cache.max_ttl, cfg.cache.max_negative_ttl), (30, 30));
    assert_eq!((cfg.cache.min_ttl, cfg.cache.min_negative_ttl), (5, 5));
    assert_eq!(cfg.cache.max_entries, 2 * 9984);
    assert_eq!(
        cfg.cache.prefetch, 0,
        "CoreDNS does not prefetch unless told"
    );
    assert_eq!(
        cfg.cache.serve_stale,
        Duration::ZERO,
        "CoreDNS does not serve stale unless told"
    );
    assert_eq!(cfg.metrics.listen.as_deref(), Some(":9153"));
    assert_eq!(cfg.health.listen.as_deref(), Some(":8080"));
    assert_eq!(cfg.health.lameduck, Duration::from_secs(5));
    assert_eq!(cfg.ready.listen.as_deref(), Some(":8181"));
    assert!(!cfg.querylog.enabled);
    assert!(cfg.hosts.is_none());
    assert!(c.files.is_empty());
    // `disable success|denial cluster.local` is what clusterdns does anyway: no note.
    assert!(!has_note(&c, &["cache disable"]), "{:#?}", c.notes);
    assert!(has_note(&c, &["Corefile:21", "reload"]), "{:#?}", c.notes);
}

#[test]
fn aks_corefile_with_custom_server_import_converts() {
    let c = convert_fixture("aks/Corefile").unwrap();
    assert_round_trip(&c);
    let cfg = &c.config;
    assert_eq!(cfg.cluster.zone, "cluster.local");
    assert_eq!(cfg.cluster.pods, PodsMode::Insecure);
    assert_eq!(cfg.cluster.ttl, 30);
    assert_eq!(cfg.cluster.fallthrough, ["in-addr.arpa", "ip6.arpa"]);
    // The coredns-custom `corp.server` block became a stub domain.
    assert_eq!(cfg.forward.stub_domains.len(), 1);
    assert_eq!(cfg.forward.stub_domains["corp.example"], ["10.0.0.5"]);
    assert!(cfg.forward.upstreams.is_empty());
    // This Corefile has no cache and no loadbalance: neither does the config.
    assert!(!cfg.cache.enabled);
    assert!(!cfg.cluster.loadbalance);
    assert!(has_note(&c, &["cache.enabled: false"]), "{:#?}", c.notes);
    assert!(has_note(&c, &["max_concurrent", "1000"]), "{:#?}", c.notes);
    assert_eq!(cfg.health.lameduck, Duration::from_secs(5));
    assert_eq!(cfg.metrics.listen.as_deref(), Some(":9153"));
}

#[test]
fn aks_custom_dir_from_elsewhere() {
    // `kubectl get cm coredns-custom` saved in some folder: --custom-dir points there.
    let empty = tempfile::tempdir().unwrap();
    let opts = Options {
        base_dir: empty.path().to_path_buf(),
        custom_dir: Some(fixtures().join("aks/custom")),
        file_name: "aks/Corefile".into(),
        ..Options::default()
    };
    let c = corefile::convert_with(&read("aks/Corefile"), &opts).unwrap();
    assert_eq!(c.config.forward.stub_domains["corp.example"], ["10.0.0.5"]);

    // Without the custom folder the glob matches nothing: a note, as CoreDNS only warns.
    let c = corefile::convert(&read("aks/Corefile"), empty.path()).unwrap();
    assert!(c.config.forward.stub_domains.is_empty());
    assert!(
        has_note(&c, &["Corefile:15", "custom/*.server", "matched no file"]),
        "{:#?}",
        c.notes
    );
}

#[test]
fn aks_coredns_custom_overrides_and_servers_convert() {
    let c = convert_fixture("aks-custom/Corefile").unwrap();
    assert_round_trip(&c);
    let cfg = &c.config;
    // puglife.server: a private zone forwarded to Azure DNS.
    assert_eq!(
        cfg.forward.stub_domains["db.private.contoso.com"],
        ["168.63.129.16"]
    );
    // custom.server: openai.com to /etc/resolv.conf like everything else, but over TCP: a
    // domain of its own with no upstreams (the resolv.conf's) and force_tcp for it alone.
    assert!(!cfg.forward.stub_domains.contains_key("openai.com"));
    let openai = &cfg.forward.domains["openai.com"];
    assert!(openai.upstreams.is_empty());
    assert_eq!(openai.force_tcp, Some(true));
    assert!(!cfg.forward.force_tcp);
    // test.override: inline hosts entries became a hosts file for the ConfigMap.
    let hosts = cfg.hosts.as_ref().expect("hosts");
    assert_eq!(
        hosts.file.as_deref(),
        Some(Path::new("/etc/clusterdns/hosts"))
    );
    assert!(hosts.fallthrough);
    let file = &c.files["hosts"];
    for l in [
        "10.0.0.1 example1.org",
        "10.0.0.2 example2.org",
        "10.0.0.3 example3.org",
    ] {
        assert!(file.contains(l), "{file}");
    }
    // log.override: the query log.
    assert!(cfg.querylog.enabled);
    assert_eq!(cfg.querylog.sample, 1.0);
    // The zone block's own `cache 30` matches the main block's: one cache serves both.
    assert!(cfg.cache.enabled);
    assert_eq!(cfg.cache.max_ttl, 30);
    assert!(
        has_note(&c, &["custom/puglife.server:3", "shared cache"]),
        "{:#?}",
        c.notes
    );
}

#[test]
fn aks_full_stock_corefile_with_templates_converts() {
    let c = convert_fixture("aks-full/Corefile").unwrap();
    assert_round_trip(&c);
    let t = &c.config.shape.templates;
    assert_eq!(t.len(), 2, "{t:#?}");
    // internal.cloudapp.net: four or more labels before the zone are NXDOMAIN, the rest goes on.
    assert_eq!((t[0].class.as_str(), t[0].qtype.as_str()), ("ANY", "ANY"));
    assert_eq!(t[0].zones, ["internal.cloudapp.net"]);
    assert_eq!(
        t[0].matches,
        [r"^(?:[^.]+\.){4,}internal\.cloudapp\.net\.$"]
    );
    assert_eq!(t[0].rcode, "NXDOMAIN");
    assert_eq!(t[0].fallthrough, ["."]);
    // reddog.microsoft.com: the whole zone NXDOMAIN, no fallthrough.
    assert_eq!(t[1].zones, ["reddog.microsoft.com"]);
    assert!(t[1].matches.is_empty() && t[1].fallthrough.is_empty());
    assert_eq!(t[1].rcode, "NXDOMAIN");
    assert!(c.config.cluster.loadbalance);
    assert!(c.config.cache.enabled);
}

#[test]
fn nodelocal_dnscache_corefile_converts() {
    let c = convert_fixture("nodelocal/Corefile").unwrap();
    assert_round_trip(&c);
    let cfg = &c.config;
    assert!(!cfg.cluster.enabled);
    assert!(cfg.source.kubernetes.is_none() && cfg.source.file.is_none());
    assert_eq!(cfg.listen, vec!["169.254.20.10:53".parse().unwrap()]);
    for zone in ["cluster.local", "in-addr.arpa", "ip6.arpa"] {
        let d = &cfg.forward.domains[zone];
        assert_eq!(d.upstreams, ["10.96.0.10"], "{zone}");
        assert_eq!(
            d.force_tcp,
            Some(true),
            "{zone}: force_tcp for this zone only"
        );
    }
    // The cluster zone's block caches with its own settings; the reverse zones' as `.`'s.
    let own = cfg.forward.domains["cluster.local"].cache.as_ref().unwrap();
    assert_eq!((own.max_ttl, own.max_negative_ttl), (30, 5));
    assert!(cfg.forward.domains["in-addr.arpa"].cache.is_none());
    assert!(cfg.forward.upstreams.is_empty());
    assert_eq!(cfg.forward.resolv_conf, Path::new("/etc/resolv.conf"));
    assert!(
        !cfg.forward.force_tcp,
        "the default upstreams over UDP, as NodeLocal DNSCache"
    );
    assert!(cfg.cache.enabled);
    assert_eq!(cfg.cache.max_ttl, 30);
    assert_eq!(cfg.metrics.listen.as_deref(), Some(":9253"));
    assert_eq!(cfg.health.listen.as_deref(), Some("169.254.20.10:8080"));
    assert_eq!(cfg.ready.listen, None);
    assert!(has_note(&c, &["cluster.enabled: false"]), "{:#?}", c.notes);
    assert!(has_note(&c, &["ready", "off"]), "{:#?}", c.notes);
}

/// Corefiles with plugins clusterdns cannot carry over: (fixture, directive, option, line, a
/// phrase of the reason).
const UNSUPPORTED: &[(&str, &str, Option<&str>, usize, &str)] = &[
    ("unsupported/file.Corefile", "file", None, 6, "zone file"),
    (
        "unsupported/dnssec.Corefile",
        "dnssec",
        None,
        3,
        "does not sign",
    ),
    (
        "unsupported/forward-tls-client-cert.Corefile",
        "forward",
        Some("tls"),
        4,
        "client certificate",
    ),
    (
        "unsupported/forward-https.Corefile",
        "forward",
        None,
        3,
        "DNS over TLS (tls://) only",
    ),
];

/// `forward` over TLS and with `except`: carried over one to one.
#[test]
fn forward_tls_and_except_convert() {
    let c = convert_fixture("forward/tls.Corefile").unwrap();
    assert_round_trip(&c);
    assert_eq!(c.config.forward.upstreams, ["tls://9.9.9.9"]);
    assert_eq!(
        c.config.forward.tls_servername.as_deref(),
        Some("dns.quad9.net")
    );
    let c = convert_fixture("forward/except.Corefile").unwrap();
    assert_round_trip(&c);
    assert_eq!(c.config.forward.except, ["internal.example"]);
}

#[test]
fn unsupported_plugins_name_directive_block_line_and_reason() {
    for (rel, directive, option, line, why) in UNSUPPORTED {
        let e = convert_fixture(rel).expect_err(rel);
        assert!(
            matches!(e, CorefileError::Unsupported { .. }),
            "{rel}: {e:?}"
        );
        assert_eq!(e.directive(), Some(*directive), "{rel}: {e}");
        assert_eq!(e.option(), *option, "{rel}: {e}");
        assert_eq!(e.pos().unwrap().line, *line, "{rel}: {e}");
        let msg = e.to_string();
        assert!(msg.contains(&format!("Corefile:{line}:")), "{rel}: {msg}");
        assert!(msg.contains("cannot be carried over"), "{rel}: {msg}");
        assert!(msg.contains(why), "{rel}: {msg}");
        let block = e.block().unwrap();
        assert!(
            msg.contains(&format!("server block `{block}`")),
            "{rel}: {msg}"
        );
    }
}

#[test]
fn error_in_an_imported_file_points_into_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("custom")).unwrap();
    std::fs::write(dir.path().join("custom/bad.server"), "corp.example:53 {\n    errors\n    dns64 {\n        prefix 64:ff9b::/96\n    }\n    forward . 10.0.0.5\n}\n").unwrap();
    let e = corefile::convert(&read("aks/Corefile"), dir.path()).unwrap_err();
    assert_eq!(e.directive(), Some("dns64"));
    assert_eq!(e.block(), Some("corp.example:53"));
    let at = e.pos().unwrap();
    assert_eq!((at.file.as_str(), at.line), ("custom/bad.server", 3));
}

#[test]
fn missing_plain_import_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let e = corefile::convert(
        ".:53 {\n    import extra.conf\n    forward . 10.0.0.1\n}\n",
        dir.path(),
    )
    .unwrap_err();
    assert!(
        matches!(e, CorefileError::Import { ref pattern, .. } if pattern == "extra.conf"),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .starts_with("Corefile:2: import \"extra.conf\""),
        "{e}"
    );
}

#[test]
fn kubernetes_options_carry_over() {
    let text = r#"
cluster.example:53 {
    kubernetes cluster.example 10.0.0.0/8 {
        pods verified
        endpoint_pod_names
        ttl 10
        namespaces default kube-system
        labels environment in (production, staging),tier!=test
        namespace_labels team=dns
        noendpoints
        ignore empty_service
        fallthrough
        startup_timeout 10s
        kubeconfig /etc/kube/config
    }
}
.:53 {
    forward . 8.8.8.8 1.1.1.1:5353 {
        policy sequential
        max_fails 3
        health_check 1s
        prefer_udp
        max_concurrent 500
        expire 10s
    }
    cache {
        success 1000 600 10
        denial 500 60 1
        prefetch 5 1m 20%
        serve_stale 30m
    }
    hosts /etc/coredns/hosts.db {
        ttl 60
        reload 30s
        fallthrough
    }
    bind 10.96.0.10 127.0.0.1
    prometheus 0.0.0.0:9153
    health localhost:8080
    ready :8181
    log
    bufsize 1232
    loop
}
"#;
    let c = corefile::convert(text, Path::new("/nonexistent")).unwrap();
    assert_round_trip(&c);
    let cfg = &c.config;
    assert_eq!(cfg.cluster.zone, "cluster.example");
    assert_eq!(cfg.cluster.reverse_zones, ["10.in-addr.arpa"]);
    assert_eq!(
        cfg.cluster.fallthrough,
        ["cluster.example", "10.in-addr.arpa"]
    );
    assert_eq!(cfg.cluster.pods, PodsMode::Verified);
    assert!(
        cfg.cluster.endpoint_pod_names
            && cfg.cluster.noendpoints
            && cfg.cluster.ignore_empty_service
    );
    assert_eq!(cfg.cluster.ttl, 10);
    assert_eq!(cfg.cluster.namespaces, ["default", "kube-system"]);
    assert_eq!(
        cfg.cluster.labels.as_deref(),
        Some("environment in (production, staging),tier!=test")
    );
    assert_eq!(cfg.cluster.namespace_labels.as_deref(), Some("team=dns"));
    assert!(!cfg.cluster.loadbalance);
    let k = cfg.source.kubernetes.as_ref().unwrap();
    assert_eq!(k.startup_timeout, Duration::from_secs(10));
    assert_eq!(k.kubeconfig.as_deref(), Some(Path::new("/etc/kube/config")));
    assert_eq!(cfg.forward.upstreams, ["8.8.8.8", "1.1.1.1:5353"]);
    assert_eq!(cfg.forward.policy, ForwardPolicy::Sequential);
    assert_eq!(cfg.forward.max_fails, 3);
    assert_eq!(cfg.forward.health_check, Duration::from_secs(1));
    assert!(cfg.forward.prefer_udp && !cfg.forward.force_tcp);
    assert_eq!(cfg.forward.max_concurrent, 500);
    assert_eq!(cfg.forward.expire, Duration::from_secs(10));
    assert_eq!(
        (cfg.cache.max_entries, cfg.cache.max_ttl, cfg.cache.min_ttl),
        (1500, 600, 10)
    );
    assert_eq!(
        (cfg.cache.max_negative_ttl, cfg.cache.min_negative_ttl),
        (60, 1)
    );
    assert_eq!(cfg.cache.prefetch, 5);
    assert_eq!(cfg.cache.serve_stale, Duration::from_secs(1800));
    assert_eq!(
        cfg.cache.serve_stale_refresh,
        clusterdns::config::StaleRefresh::Immediate,
        "CoreDNS's default mode"
    );
    let h = cfg.hosts.as_ref().unwrap();
    assert_eq!(h.file.as_deref(), Some(Path::new("/etc/coredns/hosts.db")));
    assert_eq!(
        (h.ttl, h.reload, h.fallthrough),
        (60, Duration::from_secs(30), true)
    );
    assert_eq!(
        cfg.listen,
        vec![
            "10.96.0.10:53".parse().unwrap(),
            "127.0.0.1:53".parse().unwrap()
        ]
    );
    assert_eq!(cfg.metrics.listen.as_deref(), Some("0.0.0.0:9153"));
    assert_eq!(cfg.health.listen.as_deref(), Some("localhost:8080"));
    assert_eq!(cfg.server.max_udp_size, 1232);
    assert!(cfg.querylog.enabled);
    assert!(has_note(&c, &["pods verified", "pods"]), "{:#?}", c.notes);
}

#[test]
fn bad_arguments_are_invalid_not_unsupported() {
    for (text, directive, option) in [
        (
            ".:53 {\n kubernetes cluster.local {\n  pods maybe\n }\n}\n",
            "kubernetes",
            Some("pods"),
        ),
        (
            ".:53 {\n kubernetes cluster.local {\n  ttl 9999\n }\n}\n",
            "kubernetes",
            Some("ttl"),
        ),
        (
            ".:53 {\n kubernetes cluster.local {\n  labels a in (b\n }\n}\n",
            "kubernetes",
            Some("labels"),
        ),
        (".:53 {\n forward . dns.google\n}\n", "forward", None),
        (
            ".:53 {\n health :8080 {\n  lameduck 5\n }\n}\n",
            "health",
            Some("lameduck"),
        ),
        (
            ".:53 {\n prometheus metrics.example:9153\n}\n",
            "prometheus",
            None,
        ),
        // Used to panic in the duration parser: now a precise error.
        (
            ".:53 {\n health :8080 {\n  lameduck 99999999999999999999h\n }\n}\n",
            "health",
            Some("lameduck"),
        ),
        (
            ".:53 {\n cache {\n  serve_stale -5s\n }\n}\n",
            "cache",
            Some("serve_stale"),
        ),
    ] {
        let e = corefile::convert(text, Path::new("/nonexistent")).expect_err(text);
        assert!(matches!(e, CorefileError::Invalid { .. }), "{text}: {e:?}");
        assert_eq!(
            (e.directive(), e.option()),
            (Some(directive), option),
            "{text}: {e}"
        );
    }
}

/// `clusterdns convert-corefile` as an operator runs it: the config on stdout (what the library
/// converts, byte for byte), every note on stderr, the generated files written with
/// `--files-dir` (or printed on stderr without it), and a refusal with its position.
#[test]
fn cli_prints_the_config_and_every_note() {
    let corefile = fixtures().join("aks-custom/Corefile");
    let c = convert_fixture("aks-custom/Corefile").unwrap();
    assert!(!c.notes.is_empty() && !c.files.is_empty());
    let run = |extra: &[&std::ffi::OsStr]| {
        let out = std::process::Command::new(support::bin())
            .arg("convert-corefile")
            .arg(&corefile)
            .args(extra)
            .output()
            .unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        (out.status, stdout, stderr)
    };

    let files = tempfile::tempdir().unwrap();
    let (status, stdout, stderr) = run(&["--files-dir".as_ref(), files.path().as_os_str()]);
    assert!(status.success(), "{stderr}");
    assert_eq!(stdout, c.config_yaml);
    let printed = Config::from_yaml(&stdout, Path::new("stdout")).unwrap();
    assert_eq!(printed, c.config);
    for n in &c.notes {
        assert!(
            stderr.lines().any(|l| l == format!("note: {n}")),
            "note not on stderr: {n}\n{stderr}"
        );
    }
    for (key, content) in &c.files {
        let written = std::fs::read_to_string(files.path().join(key)).unwrap();
        assert_eq!(&written, content, "{key}");
    }

    // Without --files-dir the file's content is on stderr, for the operator to copy.
    let (status, stdout, stderr) = run(&[]);
    assert!(status.success(), "{stderr}");
    assert_eq!(stdout, c.config_yaml);
    for content in c.files.values() {
        assert!(stderr.contains(content.as_str()), "{stderr}");
    }

    // A Corefile that cannot be carried over: nothing on stdout, the reason with its place on
    // stderr, exit code 2.
    let out = std::process::Command::new(support::bin())
        .arg("convert-corefile")
        .arg(fixtures().join("unsupported/dnssec.Corefile"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("dnssec.Corefile:3: `dnssec` in server block"),
        "{stderr}"
    );
}

/// Every converted fixture is the smallest config that says it: no key holds clusterdns's
/// default except the ones always shown (what is on, and where it listens).
#[test]
fn converted_configs_write_only_what_differs_from_the_defaults() {
    for rel in [
        "kubeadm/Corefile",
        "aks/Corefile",
        "aks-custom/Corefile",
        "aks-full/Corefile",
        "eks/Corefile",
        "rke2/Corefile",
        "kube-dns/kube-dns-configmap.yaml",
        "nodelocal/Corefile",
        "aks-full/Corefile",
        "shape/template.Corefile",
        "shape/rewrite.Corefile",
        "shape/autopath.Corefile",
        "shape/k8s_external.Corefile",
    ] {
        let c = convert_fixture(rel).unwrap();
        // A key holding its default is dropped: the config reads back the same without it.
        for line in c.config_yaml.lines() {
            let Some((key, value)) = line.trim_start().split_once(": ") else {
                continue;
            };
            let shown = ["enabled", "listen", "zone"];
            if shown.contains(&key) || line.starts_with('#') {
                continue;
            }
            let without: String = c
                .config_yaml
                .lines()
                .filter(|l| *l != line)
                .map(|l| format!("{l}\n"))
                .collect();
            if let Ok(cfg) = Config::from_yaml(&without, Path::new("without")) {
                assert_ne!(
                    cfg, c.config,
                    "{rel}: `{key}: {value}` is the default, yet written:\n{}",
                    c.config_yaml
                );
            }
        }
        assert!(
            !c.config_yaml.contains("udp_fast_path") && !c.config_yaml.contains("legacy_metrics"),
            "{rel}: {}",
            c.config_yaml
        );
    }
}

/// The stock Corefiles of every platform (tests/fixtures/corefiles/SOURCES.md): each converts
/// with no directive left over, to a config that reads back the same and validates.
#[test]
fn eks_stock_corefile_converts() {
    let c = convert_fixture("eks/Corefile").unwrap();
    assert_round_trip(&c);
    let cfg = &c.config;
    assert_eq!(cfg.cluster.zone, "cluster.local");
    assert_eq!(cfg.cluster.fallthrough, ["in-addr.arpa", "ip6.arpa"]);
    assert_eq!(cfg.cluster.ttl, 5, "CoreDNS's default TTL without `ttl`");
    assert!(cfg.cluster.loadbalance && cfg.cache.enabled);
    assert_eq!(cfg.cache.max_ttl, 30);
    assert_eq!(cfg.health.lameduck, Duration::from_secs(5));
    assert!(cfg.forward.upstreams.is_empty() && cfg.forward.stub_domains.is_empty());
}

#[test]
fn rke2_stock_corefile_with_the_cluster_domain_twice_converts() {
    let c = convert_fixture("rke2/Corefile").unwrap();
    assert_round_trip(&c);
    let cfg = &c.config;
    assert_eq!(cfg.cluster.zone, "cluster.local");
    assert_eq!(cfg.cluster.reverse_zones, ["in-addr.arpa", "ip6.arpa"]);
    assert_eq!(cfg.cluster.ttl, 30);
    assert_eq!(cfg.metrics.listen.as_deref(), Some("0.0.0.0:9153"));
    assert_eq!(cfg.health.lameduck, Duration::from_secs(10));
    assert!(
        has_note(&c, &["Corefile:7", "cluster.local is named twice"]),
        "{:#?}",
        c.notes
    );
}

/// k3s: `hosts /etc/coredns/NodeHosts` (a key of the same ConfigMap) and the coredns-custom
/// imports at their absolute path, as a Corefile with NodeHosts beside it and as the ConfigMap.
#[test]
fn k3s_stock_corefile_with_nodehosts_and_custom_imports_converts() {
    let opts = Options {
        base_dir: fixtures().join("k3s"),
        custom_dir: Some(fixtures().join("k3s/custom")),
        file_name: "Corefile".into(),
        ..Options::default()
    };
    let from_corefile = corefile::convert_with(&read("k3s/Corefile"), &opts).unwrap();
    let from_configmap = corefile::convert_with(
        &read("k3s/coredns-configmap.yaml"),
        &Options {
            base_dir: tempfile::tempdir().unwrap().path().to_path_buf(),
            ..opts.clone()
        },
    )
    .unwrap();
    for c in [&from_corefile, &from_configmap] {
        assert_round_trip(c);
        let cfg = &c.config;
        let h = cfg.hosts.as_ref().unwrap();
        assert_eq!(
            h.file.as_deref(),
            Some(Path::new("/etc/clusterdns/NodeHosts"))
        );
        assert_eq!(
            (h.ttl, h.reload, h.fallthrough),
            (60, Duration::from_secs(15), true)
        );
        assert_eq!(c.files["NodeHosts"], read("k3s/NodeHosts"));
        // custom/lab.server: a stub domain with an AAAA template; log.override: the query log.
        assert_eq!(cfg.forward.stub_domains["lab.example"], ["10.10.0.53"]);
        assert_eq!(cfg.shape.templates.len(), 1);
        let t = &cfg.shape.templates[0];
        assert_eq!(
            (t.zones.as_slice(), t.qtype.as_str(), t.rcode.as_str()),
            (&["lab.example".to_string()][..], "AAAA", "NOERROR")
        );
        assert!(cfg.querylog.enabled);
        assert!(
            has_note(c, &["NodeHosts", "/etc/clusterdns/NodeHosts"]),
            "{:#?}",
            c.notes
        );
    }
    assert_eq!(from_corefile.config, from_configmap.config);
}

/// AKS's stock Corefile, templates included, with the coredns-custom ConfigMap as a folder and
/// as its YAML.
#[test]
fn aks_stock_corefile_with_templates_converts() {
    let folder = convert_fixture("aks-full/Corefile").unwrap();
    let data = corefile::configmap_data(&read("aks-full/coredns-custom.yaml")).unwrap();
    let yaml = corefile::convert_with(
        &read("aks-full/Corefile"),
        &Options {
            base_dir: tempfile::tempdir().unwrap().path().to_path_buf(),
            custom_files: Some(data),
            ..Options::default()
        },
    )
    .unwrap();
    for c in [&folder, &yaml] {
        assert_round_trip(c);
        let cfg = &c.config;
        // The templates themselves: aks_full_stock_corefile_with_templates_converts.
        assert_eq!(cfg.shape.templates.len(), 2);
        assert_eq!(
            cfg.forward.stub_domains["db.private.contoso.com"],
            ["168.63.129.16"]
        );
        assert_eq!(cfg.forward.domains["openai.com"].force_tcp, Some(true));
        assert!(c.files["hosts"].contains("10.0.0.2 example2.org"));
        assert!(cfg.querylog.enabled);
    }
    assert_eq!(folder.config, yaml.config);
}

/// kube-dns's ConfigMap (GKE's kube-dns): converted as CoreDNS's migration converts it.
#[test]
fn kube_dns_stub_domains_configmap_converts() {
    let c = convert_fixture("kube-dns/kube-dns-configmap.yaml").unwrap();
    assert_round_trip(&c);
    let cfg = &c.config;
    assert!(cfg.cluster.enabled);
    assert_eq!(cfg.cluster.zone, "cluster.local");
    assert_eq!(cfg.forward.stub_domains["acme.local"], ["1.2.3.4"]);
    assert_eq!(cfg.forward.upstreams, ["8.8.8.8", "8.8.4.4"]);
    assert!(cfg.cache.enabled);
    assert!(has_note(&c, &["kube-dns's ConfigMap"]), "{:#?}", c.notes);

    let c = convert_fixture("kube-dns/gke-stub-domains.yaml").unwrap();
    assert_round_trip(&c);
    assert_eq!(
        c.config.forward.stub_domains["example.com"],
        ["8.8.8.8", "8.8.4.4", "1.1.1.1", "1.0.0.1"]
    );
    assert!(
        c.config.forward.upstreams.is_empty(),
        "the node's resolv.conf"
    );

    // A stub domain inside the cluster zone (the Kubernetes documentation's example): its
    // names are forwarded, as kube-dns's dnsmasq did.
    let c = convert_fixture("kube-dns/inside-cluster-zone.yaml").unwrap();
    assert_round_trip(&c);
    assert_eq!(
        c.config.forward.stub_domains["my.cluster.local"],
        ["2.3.4.5"]
    );
    assert_eq!(c.config.forward.stub_domains["abc.com"], ["1.2.3.4"]);
    assert!(
        has_note(&c, &["my.cluster.local", "inside the cluster zone"]),
        "{:#?}",
        c.notes
    );
    // Another cluster domain (kube-dns's --domain): the zone and the stub domain inside it
    // follow it.
    let text =
        read("kube-dns/inside-cluster-zone.yaml").replace("my.cluster.local", "my.corp.internal");
    let opts = Options {
        base_dir: "/nonexistent".into(),
        cluster_domain: Some("Corp.Internal.".into()),
        ..Options::default()
    };
    let c = corefile::convert_with(&text, &opts).unwrap();
    assert_round_trip(&c);
    assert_eq!(c.config.cluster.zone, "corp.internal");
    assert!(
        has_note(&c, &["my.corp.internal", "inside the cluster zone"]),
        "{:#?}",
        c.notes
    );
    let opts = Options {
        cluster_domain: Some("bad domain".into()),
        ..opts
    };
    let e = corefile::convert_with(&text, &opts).unwrap_err();
    assert!(e.to_string().contains("cluster domain"), "{e}");
    // Bad JSON: the key named.
    let bad = "kind: ConfigMap\ndata:\n  stubDomains: '{\"a.example\": \"1.2.3.4\"}'\n";
    let e = corefile::convert(bad, Path::new("/nonexistent")).unwrap_err();
    assert!(e.to_string().contains("data.stubDomains"), "{e}");
}

/// NodeLocal DNSCache's Corefile as shipped, placeholders filled from `pillars` (the CLI's
/// `--pillar`): the cluster and reverse zones to kube-dns-upstream over TCP, the cluster zone
/// with its own cache, the rest over UDP to the node's resolv.conf.
#[test]
fn nodelocal_pillar_corefile_converts_with_per_zone_options() {
    let pillars: std::collections::BTreeMap<String, String> = [
        ("DNS__DOMAIN", "cluster.local"),
        ("__PILLAR__LOCAL__DNS__", "169.254.20.10"),
        ("DNS__SERVER", "10.96.0.10"),
        ("CLUSTER__DNS", "10.96.0.11"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let opts = Options {
        base_dir: "/nonexistent".into(),
        pillars: pillars.clone(),
        ..Options::default()
    };
    let c = corefile::convert_with(&read("nodelocal/Corefile.pillar"), &opts).unwrap();
    assert_round_trip(&c);
    let cfg = &c.config;
    assert_eq!(
        cfg.listen,
        vec![
            "10.96.0.10:53".parse().unwrap(),
            "169.254.20.10:53".parse().unwrap()
        ]
    );
    for zone in ["cluster.local", "in-addr.arpa", "ip6.arpa"] {
        let d = &cfg.forward.domains[zone];
        assert_eq!(d.upstreams, ["10.96.0.11"], "{zone}");
        assert_eq!(d.force_tcp, Some(true), "{zone}");
    }
    let own = cfg.forward.domains["cluster.local"].cache.as_ref().unwrap();
    assert_eq!((own.max_ttl, own.max_negative_ttl), (30, 5));
    assert_eq!(
        (own.success_capacity, own.denial_capacity),
        (Some(9984), Some(9984))
    );
    assert!(!cfg.forward.force_tcp && cfg.forward.upstreams.is_empty());
    assert_eq!(cfg.forward.resolv_conf, Path::new("/etc/resolv.conf"));
    assert!(
        has_note(&c, &["__PILLAR__UPSTREAM__SERVERS__", "/etc/resolv.conf"]),
        "{:#?}",
        c.notes
    );

    // A placeholder left without a value: its line and the flag to pass.
    let mut some = pillars;
    some.remove("CLUSTER__DNS");
    let e = corefile::convert_with(
        &read("nodelocal/Corefile.pillar"),
        &Options {
            pillars: some,
            ..opts
        },
    )
    .unwrap_err();
    assert_eq!(e.pos().unwrap().line, 10, "{e}");
    assert!(e.to_string().contains("--pillar CLUSTER__DNS="), "{e}");

    // The CLI takes them as --pillar flags.
    let out = std::process::Command::new(support::bin())
        .arg("convert-corefile")
        .arg(fixtures().join("nodelocal/Corefile.pillar"))
        .args([
            "--pillar",
            "DNS__DOMAIN=cluster.local",
            "--pillar",
            "LOCAL__DNS=169.254.20.10",
        ])
        .args([
            "--pillar",
            "DNS__SERVER=10.96.0.10",
            "--pillar",
            "CLUSTER__DNS=10.96.0.11",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed =
        Config::from_yaml(&String::from_utf8(out.stdout).unwrap(), Path::new("stdout")).unwrap();
    assert_eq!(printed, c.config);
}
