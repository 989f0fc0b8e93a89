//! Converted stock Corefiles, served: each config `convert-corefile` makes passes `clusterdns
//! check`, and the server it starts answers what the Corefile did — the cluster zone, stub
//! domains, hosts files (k3s's NodeHosts, AKS's inline hosts), templates — with `dig`. Every
//! upstream is replaced by a loopback test upstream (never this machine's resolv.conf), one per
//! forwarding route, each answering with an address of its own so the route shows.

use std::net::{Ipv4Addr, SocketAddr};

use clusterdns::config::Config;
use clusterdns::corefile::{self, Conversion, Options};

use crate::support::upstream::{Action, Fake, Transport, a_reply, qname};
use crate::support::{self, Server, corefile_fixtures as fixtures, fixture_text as read};

/// A test upstream answering every A query with `ip`.
async fn upstream(ip: Ipv4Addr) -> Fake {
    Fake::start(move |q, _| Action::Reply(a_reply(q, &[ip], 30))).await
}

/// The converted config made runnable here: loopback listeners, the sample cluster from a file,
/// the root upstreams and each stub domain's replaced by `routes` (domain, or `.`, to address),
/// the generated files written beside it. Then `clusterdns check` and `serve`.
fn serve(c: &Conversion, routes: &[(&str, SocketAddr)]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg: Config = c.config.clone();
    cfg.listen = vec!["127.0.0.1:0".parse().unwrap()];
    cfg.metrics.listen = Some("127.0.0.1:0".into());
    cfg.health.listen = Some("127.0.0.1:0".into());
    cfg.health.lameduck = std::time::Duration::from_millis(100);
    if cfg.ready.listen.is_some() {
        cfg.ready.listen = Some("127.0.0.1:0".into());
    }
    if cfg.cluster.enabled {
        cfg.source.kubernetes = None;
        cfg.source.file = Some(support::repo().join("config/cluster.yaml"));
    }
    let route = |d: &str| {
        routes
            .iter()
            .find(|(z, _)| *z == d)
            .map(|(_, a)| vec![a.to_string()])
            .unwrap_or_else(|| panic!("no test upstream for {d}"))
    };
    cfg.forward.upstreams = route(".");
    cfg.forward.resolv_conf = dir.path().join("no-resolv.conf");
    for (d, ups) in cfg.forward.stub_domains.iter_mut() {
        *ups = route(d);
    }
    // A domain with options but no upstreams of its own (the resolv.conf's, as `.`) gets its
    // own test upstream too, so its options (e.g. force_tcp) show.
    for (d, dom) in cfg.forward.domains.iter_mut() {
        dom.upstreams = route(d);
    }
    for (key, content) in &c.files {
        std::fs::write(dir.path().join(key), content).unwrap();
    }
    if let Some(h) = cfg.hosts.as_mut() {
        let key = h.file.as_ref().unwrap().file_name().unwrap().to_owned();
        h.file = Some(dir.path().join(key));
    }
    let yaml = serde_saphyr::to_string(&cfg).unwrap();
    let path = dir.path().join("clusterdns.yaml");
    std::fs::write(&path, &yaml).unwrap();
    support::assert_check_accepts(&path, "the converted Corefile");
    let cluster = cfg.cluster.enabled;
    let s = Server::start_in(dir, &yaml, &[]);
    if cluster {
        // The objects file may load after the listeners are up on a busy machine: wait
        // (bounded) until the zone answers, as a kubelet waits for /ready.
        s.wait_for(
            &["kubernetes.default.svc.cluster.local", "A"],
            |out| out.contains("status: NOERROR"),
            std::time::Duration::from_secs(20),
        );
    }
    s
}

/// `dig` for `name` `qtype`: (status, A addresses).
fn ask(s: &Server, name: &str, qtype: &str) -> (String, Vec<String>) {
    let out = s.dig(&[name, qtype, "+noall", "+comments", "+answer"]);
    let status = support::dig_status(&out)
        .unwrap_or_else(|| panic!("no status for {name}: {out}"))
        .to_string();
    let addrs = out
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_string))
        .collect();
    (status, addrs)
}

/// The names every converted kubeadm-style Corefile answers: a Service from the cluster zone,
/// other names from the root upstream.
fn assert_cluster_and_root(s: &Server) {
    assert_eq!(
        ask(s, "kubernetes.default.svc.cluster.local", "A"),
        ("NOERROR".into(), vec!["10.96.0.1".into()])
    );
    assert_eq!(
        ask(s, "example.org", "A"),
        ("NOERROR".into(), vec!["10.53.0.1".into()])
    );
}

const ROOT: Ipv4Addr = Ipv4Addr::new(10, 53, 0, 1);
const STUB: Ipv4Addr = Ipv4Addr::new(10, 53, 0, 2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubeadm_eks_rke2_and_kube_dns_configs_serve() {
    let (root, stub) = (upstream(ROOT).await, upstream(STUB).await);
    for rel in ["kubeadm/Corefile", "eks/Corefile", "rke2/Corefile"] {
        let c = support::convert_fixture(rel).unwrap();
        let s = serve(&c, &[(".", root.addr)]);
        assert_cluster_and_root(&s);
    }
    // kube-dns's stubDomains: acme.local to its own server.
    let c = support::convert_fixture("kube-dns/kube-dns-configmap.yaml").unwrap();
    let s = serve(&c, &[(".", root.addr), ("acme.local", stub.addr)]);
    assert_cluster_and_root(&s);
    assert_eq!(
        ask(&s, "db.acme.local", "A"),
        ("NOERROR".into(), vec![STUB.to_string()])
    );
    assert!(stub.queries() >= 1);

    // The Kubernetes documentation's example with a stub domain inside the cluster zone: its
    // names go to its server, the rest of the zone is answered from the cluster.
    let c = support::convert_fixture("kube-dns/inside-cluster-zone.yaml").unwrap();
    let inner = upstream(Ipv4Addr::new(10, 53, 0, 4)).await;
    let s = serve(
        &c,
        &[
            (".", root.addr),
            ("abc.com", stub.addr),
            ("my.cluster.local", inner.addr),
        ],
    );
    assert_cluster_and_root(&s);
    assert_eq!(
        ask(&s, "db.my.cluster.local", "A"),
        ("NOERROR".into(), vec!["10.53.0.4".into()])
    );
    assert_eq!(
        ask(&s, "www.abc.com", "A"),
        ("NOERROR".into(), vec![STUB.to_string()])
    );
    assert_eq!(
        ask(&s, "nosuch.default.svc.cluster.local", "A").0,
        "NXDOMAIN"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k3s_config_serves_nodehosts_stub_domain_and_template() {
    let (root, stub) = (upstream(ROOT).await, upstream(STUB).await);
    let c = corefile::convert_with(
        &read("k3s/coredns-configmap.yaml"),
        &Options {
            base_dir: "/nonexistent".into(),
            custom_dir: Some(fixtures().join("k3s/custom")),
            ..Options::default()
        },
    )
    .unwrap();
    let s = serve(&c, &[(".", root.addr), ("lab.example", stub.addr)]);
    assert_cluster_and_root(&s);
    // NodeHosts: the node names.
    assert_eq!(
        ask(&s, "vm2", "A"),
        ("NOERROR".into(), vec!["10.65.94.199".into()])
    );
    // custom/lab.server: the stub domain, with its AAAA template (NOERROR, no records, not
    // forwarded).
    assert_eq!(
        ask(&s, "git.lab.example", "A"),
        ("NOERROR".into(), vec![STUB.to_string()])
    );
    let before = stub.queries();
    assert_eq!(
        ask(&s, "git.lab.example", "AAAA"),
        ("NOERROR".into(), vec![])
    );
    assert_eq!(
        stub.queries(),
        before,
        "the template answered, not the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aks_config_serves_templates_hosts_and_custom_servers() {
    let (root, stub, tcp) = (
        upstream(ROOT).await,
        upstream(STUB).await,
        upstream(Ipv4Addr::new(10, 53, 0, 3)).await,
    );
    let c = support::convert_fixture("aks-full/Corefile").unwrap();
    let s = serve(
        &c,
        &[
            (".", root.addr),
            ("db.private.contoso.com", stub.addr),
            ("openai.com", tcp.addr),
        ],
    );
    assert_cluster_and_root(&s);
    // The templates: search-path names under internal.cloudapp.net and every name under
    // reddog.microsoft.com are NXDOMAIN at once, never forwarded; a VM's own name is forwarded.
    let before = root.queries();
    for name in [
        "api.default.svc.cluster.internal.cloudapp.net",
        "x.reddog.microsoft.com",
    ] {
        assert_eq!(ask(&s, name, "A"), ("NXDOMAIN".into(), vec![]), "{name}");
    }
    assert_eq!(
        root.queries(),
        before,
        "templates answered without forwarding"
    );
    assert_eq!(
        ask(&s, "vm1.internal.cloudapp.net", "A"),
        ("NOERROR".into(), vec![ROOT.to_string()])
    );
    // test.override's inline hosts; puglife.server's stub domain.
    assert_eq!(
        ask(&s, "example2.org", "A"),
        ("NOERROR".into(), vec!["10.0.0.2".into()])
    );
    assert_eq!(
        ask(&s, "sql.db.private.contoso.com", "A"),
        ("NOERROR".into(), vec![STUB.to_string()])
    );
    // custom.server: openai.com forwarded over TCP only.
    let (udp_before, tcp_before) = (
        tcp.udp.load(std::sync::atomic::Ordering::SeqCst),
        tcp.tcp.load(std::sync::atomic::Ordering::SeqCst),
    );
    assert_eq!(
        ask(&s, "api.openai.com", "A"),
        ("NOERROR".into(), vec!["10.53.0.3".into()])
    );
    assert_eq!(
        tcp.udp.load(std::sync::atomic::Ordering::SeqCst),
        udp_before
    );
    assert!(tcp.tcp.load(std::sync::atomic::Ordering::SeqCst) > tcp_before);
}

/// NodeLocal DNSCache's Corefile as shipped, its placeholders given: the cluster and reverse
/// zones go to kube-dns-upstream over TCP only, everything else over UDP, and the cluster
/// zone's answers are cached by its own cache (capped at 30 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodelocal_config_forwards_cluster_zone_over_tcp_and_the_rest_over_udp() {
    use std::sync::atomic::Ordering::SeqCst;
    let kube_dns =
        Fake::start(|q, _| Action::Reply(a_reply(q, &[Ipv4Addr::new(10, 96, 7, 7)], 3600))).await;
    let root = upstream(ROOT).await;
    let pillars = [
        ("DNS__DOMAIN", "cluster.local"),
        ("LOCAL__DNS", "169.254.20.10"),
        ("DNS__SERVER", "10.96.0.10"),
        ("CLUSTER__DNS", "10.96.0.11"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let c = corefile::convert_with(
        &read("nodelocal/Corefile.pillar"),
        &Options {
            base_dir: "/nonexistent".into(),
            pillars,
            ..Options::default()
        },
    )
    .unwrap();
    let s = serve(
        &c,
        &[
            (".", root.addr),
            ("cluster.local", kube_dns.addr),
            ("in-addr.arpa", kube_dns.addr),
            ("ip6.arpa", kube_dns.addr),
        ],
    );
    let out = s.dig(&["web.default.svc.cluster.local", "A", "+short"]);
    assert_eq!(out.trim(), "10.96.7.7");
    assert_eq!(asked(&kube_dns, "web.default"), [Transport::Tcp]);
    assert!(
        kube_dns.udp.load(SeqCst) == 0,
        "nothing over UDP to kube-dns (loop probes included)"
    );
    assert_eq!(
        ask(&s, "example.org", "A"),
        ("NOERROR".into(), vec![ROOT.to_string()])
    );
    assert_eq!(asked(&root, "example.org"), [Transport::Udp]);
    // Asked again: the cluster zone's cache answers, its TTL capped at 30 s (the upstream
    // gave 3600).
    let again = s.dig(&["web.default.svc.cluster.local", "A", "+noall", "+answer"]);
    assert!(again.contains("10.96.7.7"), "{again}");
    let ttl: u32 = again.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(
        ttl <= 30,
        "the cluster zone's cache caps TTLs at 30 s: {again}"
    );
    assert_eq!(asked(&kube_dns, "web.default"), [Transport::Tcp]);
}

/// How `up` was asked for names starting with `prefix`, in order.
fn asked(up: &Fake, prefix: &str) -> Vec<Transport> {
    up.seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, m)| qname(m).to_ascii().starts_with(prefix))
        .map(|(t, _)| *t)
        .collect()
}
