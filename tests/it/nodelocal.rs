//! Node-local mode in network namespaces (as root): a "node" with a kube-dns pod stand-in and a
//! kube-proxy stand-in (DNAT of the kube-dns Service IP), a "pod" joined to it by a veth pair,
//! and node-local `clusterdns` processes on the node. Everything lives in the test's own
//! namespaces, which are deleted (with their links and rules) when the test ends or fails.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::netns::*;
use crate::support::wait_for;

const KUBE_DNS_METRICS: &str = "127.0.0.1:9153";
const NODE_LOCAL_METRICS: &str = "127.0.0.1:9253";
/// What the load asks: cluster names, forwarded once to kube-dns, then cached.
const NAMES: &[&str] = &[
    "web.default.svc.cluster.local",
    "db.default.svc.cluster.local",
];

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The node's node-local rules as the backend's own listing shows them.
fn rules_text(c: &Cluster, proxy: KubeProxy) -> String {
    match proxy {
        KubeProxy::IptablesNft => c.node.run(&["iptables-nft-save"]),
        KubeProxy::IptablesLegacy => c.node.run(&["iptables-legacy-save"]),
        KubeProxy::Nftables => {
            let out = c
                .node
                .try_run(&["nft", "list", "table", "inet", "clusterdns-nodelocal"]);
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    }
}

fn our_rules(c: &Cluster, proxy: KubeProxy) -> usize {
    rules_text(c, proxy).matches("NodeLocal DNS Cache").count()
}

/// The addresses on the node-local link (`nodelocaldns`, or `lo`); None if the link is gone.
fn link_addresses(c: &Cluster, link: &str) -> Option<String> {
    let dev = if link == "lo" { "lo" } else { "nodelocaldns" };
    let out = c.node.try_run(&["ip", "-o", "addr", "show", "dev", dev]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn holds_both(addrs: &Option<String>) -> bool {
    addrs.as_deref().is_some_and(|a| {
        a.contains(&format!("{LINK_LOCAL}/32")) && a.contains(&format!("{SERVICE_IP}/32"))
    })
}

/// `dig +tcp +short` from the pod.
fn dig_tcp(c: &Cluster, server: &str, name: &str) -> String {
    crate::support::require("dig");
    c.pod
        .run(&[
            "dig",
            "+tcp",
            "+short",
            "+time=2",
            "+tries=1",
            &format!("@{server}"),
            name,
        ])
        .trim()
        .to_string()
}

/// Waits (at most 15 s) until `cond` holds; fails the test naming `what` if it does not.
fn wait_until(what: &str, cond: impl FnMut() -> bool) {
    assert!(
        wait_for(Duration::from_secs(15), cond),
        "timed out waiting: {what}"
    );
}

/// Interception, the periodic re-creation, and the fall-back after a clean stop, with the
/// rules written by the tool `rules: auto` picks for this kube-proxy.
fn intercept_and_fall_back(proxy: KubeProxy, link: &str) {
    let c = Cluster::new(proxy);
    let _kube_dns = c.start_kube_dns();
    let web = vec![ip(WEB_IP)];
    let db = vec![ip("10.96.8.8")];

    // Before node-local mode: kube-proxy's DNAT takes the pod's query to kube-dns.
    let kd = c.requests(KUBE_DNS_METRICS);
    assert_eq!(c.ask(SERVICE_IP, WEB), Some(web.clone()));
    assert_eq!(c.requests(KUBE_DNS_METRICS), kd + 1);
    assert_eq!(our_rules(&c, proxy), 0);

    let mut nl = c.start_node_local("node-local", link, "  sync_interval: 1s\n");
    nl.wait_ready();
    assert_eq!(our_rules(&c, proxy), 20, "{}", rules_text(&c, proxy));
    if proxy != KubeProxy::IptablesNft {
        // `auto` picked the kube-proxy's tool, not the other one.
        assert!(
            !c.node
                .run(&["iptables-nft-save"])
                .contains("NodeLocal DNS Cache")
        );
    }
    assert!(holds_both(&link_addresses(&c, link)));

    // The pod's queries to the Service IP and to the link-local address are answered by the
    // node-local instance; the cluster names come from kube-dns (forwarded once each), over
    // TCP as NodeLocal DNSCache's `force_tcp` for the cluster zone has it: the kube-dns
    // instance counts them with proto="tcp", none more over UDP.
    let (nl0, kd0) = (c.requests(NODE_LOCAL_METRICS), c.requests(KUBE_DNS_METRICS));
    let (kd_tcp0, kd_udp0) = (
        c.requests_over(KUBE_DNS_METRICS, "tcp"),
        c.requests_over(KUBE_DNS_METRICS, "udp"),
    );
    assert_eq!(c.ask(SERVICE_IP, WEB), Some(web.clone()));
    assert_eq!(c.ask(LINK_LOCAL, "db.default.svc.cluster.local"), Some(db));
    assert_eq!(c.requests(NODE_LOCAL_METRICS), nl0 + 2);
    assert_eq!(c.requests(KUBE_DNS_METRICS), kd0 + 2, "forwarded upstream");
    assert_eq!(
        c.requests_over(KUBE_DNS_METRICS, "tcp"),
        kd_tcp0 + 2,
        "cluster names from kube-dns over TCP"
    );
    assert_eq!(c.requests_over(KUBE_DNS_METRICS, "udp"), kd_udp0);
    // Asked again: from node-local's cache; nothing reaches kube-dns, so no DNAT happened.
    assert_eq!(c.ask(SERVICE_IP, WEB), Some(web.clone()));
    assert_eq!(c.requests(NODE_LOCAL_METRICS), nl0 + 3);
    assert_eq!(c.requests(KUBE_DNS_METRICS), kd0 + 2);
    // Over TCP too (the NOTRACK and ACCEPT rules cover both): answered by node-local.
    assert_eq!(dig_tcp(&c, SERVICE_IP, WEB), WEB_IP);
    assert_eq!(c.requests(NODE_LOCAL_METRICS), nl0 + 4);

    // Something removes rules and an address: the periodic check puts them back.
    match proxy {
        KubeProxy::IptablesNft => c
            .node
            .run(&["iptables-nft", "-t", "raw", "-F", "PREROUTING"]),
        KubeProxy::IptablesLegacy => c.node.run(&[
            "iptables-legacy",
            "-w",
            "5",
            "-t",
            "raw",
            "-F",
            "PREROUTING",
        ]),
        KubeProxy::Nftables => c.node.run(&[
            "nft",
            "flush",
            "chain",
            "inet",
            "clusterdns-nodelocal",
            "prerouting_raw",
        ]),
    };
    let dev = if link == "lo" { "lo" } else { "nodelocaldns" };
    c.node
        .run(&["ip", "addr", "del", &format!("{SERVICE_IP}/32"), "dev", dev]);
    assert!(our_rules(&c, proxy) < 20);
    wait_until("rules and address re-created", || {
        our_rules(&c, proxy) == 20 && holds_both(&link_addresses(&c, link))
    });
    assert!(
        nl.log()
            .contains("re-created the node-local interface or its addresses"),
        "{}",
        nl.log()
    );
    assert_eq!(c.ask(SERVICE_IP, WEB), Some(web.clone()));

    // A clean stop removes rules and interface: the pod's queries reach kube-dns through the
    // DNAT again.
    assert!(nl.stop().success(), "{}", nl.log());
    assert!(
        nl.log()
            .contains("last node-local instance: removing rules and interface")
    );
    assert_eq!(our_rules(&c, proxy), 0, "{}", rules_text(&c, proxy));
    match link_addresses(&c, link) {
        None => assert_ne!(link, "lo"),
        Some(a) => {
            assert_eq!(link, "lo", "the link is gone: {a}");
            assert!(!a.contains(SERVICE_IP) && !a.contains(LINK_LOCAL), "{a}");
        }
    }
    let kd1 = c.requests(KUBE_DNS_METRICS);
    assert_eq!(c.ask(SERVICE_IP, WEB), Some(web));
    assert_eq!(c.requests(KUBE_DNS_METRICS), kd1 + 1);
}

#[test]
fn node_local_intercepts_with_iptables_nft_on_an_ifb_link() {
    intercept_and_fall_back(KubeProxy::IptablesNft, "ifb");
}

#[test]
fn node_local_intercepts_with_iptables_legacy_on_lo() {
    intercept_and_fall_back(KubeProxy::IptablesLegacy, "lo");
}

#[test]
fn node_local_intercepts_with_nftables_on_an_ifb_link() {
    intercept_and_fall_back(KubeProxy::Nftables, "ifb");
}

/// A DaemonSet rolling update with `maxSurge: 1, maxUnavailable: 0`, under 1,000 queries a
/// second to the kube-dns Service IP: the new instance starts beside the old one, becomes
/// ready, the old one gets SIGTERM, drains and exits, leaving interface and rules to the new
/// one. `NODELOCAL_UPGRADES` handovers (3 here; `scripts/bench-nodelocal.sh` runs 20).
#[test]
fn node_local_rolling_update_loses_no_query() {
    let rounds: usize = std::env::var("NODELOCAL_UPGRADES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let c = Cluster::new(KubeProxy::IptablesNft);
    let _kube_dns = c.start_kube_dns();
    let mut old = c.start_node_local("nl-0", "ifb", "");
    old.wait_ready();
    let stop = Arc::new(AtomicBool::new(false));
    let load = load(&c.pod, SERVICE_IP, NAMES, 1000, stop.clone());
    for i in 1..=rounds {
        std::thread::sleep(Duration::from_millis(300));
        let mut new = c.start_node_local(&format!("nl-{i}"), "ifb", "");
        new.wait_ready();
        // Both pods answer their own exec probes (per-pod unix sockets, no collision), and
        // both listen on TCP 53 of the same addresses.
        assert!(old.probe_ready(), "{}", old.log());
        assert_eq!(dig_tcp(&c, SERVICE_IP, WEB), WEB_IP);
        assert!(old.stop().success(), "{}", old.log());
        assert!(
            old.log()
                .contains("another node-local instance holds the node"),
            "{}",
            old.log()
        );
        // The metrics port passes to the new instance once the old one let go of it.
        new.wait_line("listening metrics=127.0.0.1:9253");
        assert_eq!(our_rules(&c, KubeProxy::IptablesNft), 20);
        assert!(holds_both(&link_addresses(&c, "ifb")));
        old = new;
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Release);
    let r = load.join().unwrap();
    eprintln!(
        "node-local rolling update: {rounds} handovers, {} queries at 1000 qps: {} lost ({:.2} per handover), {} answered later than 100 ms, {} later than 1 s, {} not NOERROR",
        r.sent,
        r.lost(),
        r.lost() as f64 / rounds as f64,
        r.late_100ms,
        r.late_1s,
        r.bad
    );
    assert!(r.sent > 500 * rounds, "the load ran: {r:?}");
    assert_eq!(r.bad, 0);
    assert_eq!(
        r.lost(),
        0,
        "longest run of unanswered queries: {}",
        r.longest_unanswered_run
    );
    // The last instance serves, and tears down when it is stopped alone.
    assert!(c.requests(NODE_LOCAL_METRICS) > 0);
    assert!(old.stop().success());
    assert_eq!(our_rules(&c, KubeProxy::IptablesNft), 0);
    assert!(link_addresses(&c, "ifb").is_none());
}

/// kill -9 under load, the test acting as the kubelet that restarts the container after a
/// delay. Interface and rules stay (nothing cleaned up); with `fail_open` the pods' queries
/// for the Service IP are tracked again while no socket listens, so kube-proxy's DNAT sends
/// them to kube-dns; without it they are black-holed until the restart serves.
fn kill_9_and_restart(fail_open: bool) -> (LoadReport, u64, Duration) {
    let c = Cluster::new(KubeProxy::IptablesNft);
    let _kube_dns = c.start_kube_dns();
    let extra = format!("  fail_open: {fail_open}\n");
    let mut a = c.start_node_local("nl-a", "ifb", &extra);
    a.wait_ready();
    let stop = Arc::new(AtomicBool::new(false));
    let load = load(&c.pod, SERVICE_IP, NAMES, 1000, stop.clone());
    std::thread::sleep(Duration::from_millis(300));
    let kd_before = c.requests(KUBE_DNS_METRICS);
    a.signal(libc::SIGKILL);
    a.wait_exit();
    let killed = Instant::now();
    // The kubelet's restart delay.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        our_rules(&c, KubeProxy::IptablesNft),
        20,
        "no cleanup after kill -9"
    );
    assert!(holds_both(&link_addresses(&c, "ifb")));
    let to_kube_dns = c.requests(KUBE_DNS_METRICS) - kd_before;
    let mut b = c.start_node_local("nl-b", "ifb", &extra);
    b.wait_ready();
    let restart = killed.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Release);
    let r = load.join().unwrap();
    // The restarted instance serves (the metrics port was free at once: a is dead).
    b.wait_line("listening metrics=127.0.0.1:9253");
    let nl = c.requests(NODE_LOCAL_METRICS);
    assert!(nl > 0);
    eprintln!(
        "node-local kill -9 (fail_open: {fail_open}): restart ready after {restart:?}; {} of {} queries lost, longest unanswered run {} ms; kube-dns answered {to_kube_dns} queries while nothing listened",
        r.lost(),
        r.sent,
        r.longest_unanswered_run
    );
    assert_eq!(r.bad, 0);
    (r, to_kube_dns, restart)
}

#[test]
fn node_local_kill_9_fails_open_to_kube_dns() {
    let (r, to_kube_dns, _) = kill_9_and_restart(true);
    // While nothing listened (500 ms at 1,000 qps), kube-dns answered through the DNAT.
    assert!(to_kube_dns > 100, "{to_kube_dns}");
    // Lost: at most what the killed process had queued in its sockets.
    assert!(r.lost() < 50, "{} lost", r.lost());
}

#[test]
fn node_local_kill_9_without_fail_open_black_holes_until_the_restart() {
    let (r, to_kube_dns, _) = kill_9_and_restart(false);
    // The contrast that shows what fail_open does: with node-cache's plain rules the queries
    // of the restart delay go nowhere.
    assert_eq!(to_kube_dns, 0);
    assert!(r.lost() > 100, "{} lost", r.lost());
}

/// A rule tool that cannot run: counted as node-cache counts it, and the instance stays
/// unready (a rolling update does not stop the old pod for it).
#[test]
fn node_local_setup_errors_are_counted_and_keep_readiness_off() {
    let c = Cluster::new(KubeProxy::IptablesNft);
    let dir = c.dir.path().join("broken");
    let cfg = node_local_config(
        &dir,
        &c.dir.path().join("lock"),
        "lo",
        "  rules: iptables\n",
    );
    let mut cmd_env = Proc::start_env(&c.node, &dir, &cfg, &[("PATH", "/nonexistent")]);
    cmd_env.wait_line("listening dns=");
    wait_until("an iptables setup error counted", || {
        let text = c.scrape(NODE_LOCAL_METRICS);
        text.lines().any(|l| {
            l.starts_with("coredns_nodecache_setup_errors_total{errortype=\"iptables\"}")
                && !l.ends_with(" 0")
        })
    });
    let text = c.scrape(NODE_LOCAL_METRICS);
    for t in [
        "iptables_lock",
        "interface_add",
        "interface_check",
        "configmap",
    ] {
        assert!(
            text.contains(&format!(
                "coredns_nodecache_setup_errors_total{{errortype=\"{t}\"}} 0"
            )),
            "{t}: {text}"
        );
    }
    assert!(!cmd_env.probe_ready());
    assert!(cmd_env.stop().success());
}

/// Memory: node-local mode with a full cache of 10,000 entries. Reports the RSS (the target is
/// under 20 MB; NodeLocal DNSCache requests 5Mi and sets no limit); `scripts/bench-nodelocal.sh`
/// runs it on the release build, where it is checked against the target.
#[test]
fn node_local_memory_with_a_full_cache() {
    let c = Cluster::new(KubeProxy::IptablesNft);
    let _kube_dns = c.start_kube_dns();
    // One pod fills the cache as fast as it can: past any per-client limit, so limits off.
    let mut nl = c.start_node_local(
        "nl-mem",
        "ifb",
        "  sync_interval: 1s\nlimits:\n  rate:\n    enabled: false\n",
    );
    nl.wait_ready();
    let rss_start = rss_kib(nl.pid());
    let anon_start = status_kib(nl.pid(), "RssAnon");
    let answered = c
        .pod
        .within(|| fill_cache(format!("{SERVICE_IP}:53").parse().unwrap(), 12_000));
    // One periodic check later (it gives transient buffers back, as in a long-running node).
    std::thread::sleep(Duration::from_millis(1500));
    let text = c.scrape(NODE_LOCAL_METRICS);
    let entries: u64 = text
        .lines()
        .find(|l| l.starts_with("coredns_cache_entries{") && l.contains("type=\"success\""))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0) as u64;
    let rss = rss_kib(nl.pid());
    let mib = |k: u64| k as f64 / 1024.0;
    eprintln!(
        "node-local memory: {answered} names answered, {entries} cache entries, RSS {:.1} MiB = {:.1} MiB anonymous + {:.1} MiB file-backed (binary pages, shared) (at start {:.1} MiB, {:.1} MiB anonymous); binary {}",
        mib(rss),
        mib(status_kib(nl.pid(), "RssAnon")),
        mib(status_kib(nl.pid(), "RssFile")),
        mib(rss_start),
        mib(anon_start),
        bin().display()
    );
    assert_eq!(answered, 12_000);
    // Full: every shard at its share of `cache.max_entries` (10,000).
    assert!((9_900..=10_000).contains(&entries), "{entries} entries");
    if std::env::var_os("NODELOCAL_RSS_LIMIT_MIB").is_some() {
        let limit: u64 = std::env::var("NODELOCAL_RSS_LIMIT_MIB")
            .unwrap()
            .parse()
            .unwrap();
        assert!(rss < limit * 1024, "RSS {rss} KiB above {limit} MiB");
    }
}

fn rss_kib(pid: i32) -> u64 {
    status_kib(pid, "VmRSS")
}

/// A `kB` field of /proc/PID/status.
fn status_kib(pid: i32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// `n` distinct pod names (`10-1-x-y.default.pod.cluster.local`, answered by kube-dns from
/// the name itself), each asked until answered (at most three tries); how many were answered.
fn fill_cache(server: std::net::SocketAddr, n: usize) -> usize {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut answered = vec![false; n];
    let mut buf = [0u8; 1500];
    for _ in 0..3 {
        let todo: Vec<usize> = (0..n).filter(|i| !answered[*i]).collect();
        for chunk in todo.chunks(200) {
            for &i in chunk {
                let name = format!("10-1-{}-{}.default.pod.cluster.local", i / 256, i % 256);
                let _ = s.send_to(&crate::support::query(&name, 1, i as u16, None), server);
            }
            let mut got = 0;
            while got < chunk.len() {
                let Ok((len, _)) = s.recv_from(&mut buf) else {
                    break;
                };
                if len >= 12 && buf[3] & 0x0f == 0 {
                    let id = u16::from_be_bytes([buf[0], buf[1]]) as usize;
                    if id < n && !answered[id] {
                        answered[id] = true;
                        got += 1;
                    }
                }
            }
        }
    }
    answered.iter().filter(|a| **a).count()
}

/// The flags switch node-local mode on as the config key does; `probe` fails when nothing
/// answers (an exec probe's exit code).
#[test]
fn node_local_flags_and_probe_exit_codes() {
    let out = std::process::Command::new(bin())
        .args([
            "check",
            "--node-local",
            "--node-local-ip",
            LINK_LOCAL,
            "--node-local-ip",
            SERVICE_IP,
        ])
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("listen: {LINK_LOCAL}:53, {SERVICE_IP}:53")),
        "{text}"
    );
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(bin())
        .arg("probe")
        .arg(format!("unix:{}", dir.path().join("none.sock").display()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("probe failed"));
}
