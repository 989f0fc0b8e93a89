//! Both address families: `:PORT` (config and `--listen`) and `[::1]` beside `127.0.0.1` serve
//! IPv4 and IPv6 over UDP and TCP, one socket per family (`IPV6_V6ONLY`), so IPv4 clients are
//! never seen as IPv4-mapped IPv6 ones (the metrics' `family` label tells). A node with IPv6
//! disabled (a network namespace with `disable_ipv6`) serves IPv4 and says so in one line.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use crate::support::*;

/// `coredns_dns_requests_total` of one client family ("1" IPv4, "2" IPv6).
fn requests(s: &Server, family: &str) -> f64 {
    s.metric_sum(
        "coredns_dns_requests_total{",
        &[&format!("family=\"{family}\"")],
    )
}

/// Ask `a.x.svc.cluster.local` at `addr` over UDP and TCP with dig.
fn ask_both_transports(addr: SocketAddr) {
    for tcp in [false, true] {
        let mut args = vec!["+short", "a.x.svc.cluster.local"];
        if tcp {
            args.insert(0, "+tcp");
        }
        assert_eq!(dig_at(addr, &args).trim(), "10.9.0.1", "{addr} tcp={tcp}");
    }
}

fn dns_listens(s: &Server) -> Vec<SocketAddr> {
    s.listens
        .iter()
        .filter(|(k, _)| k == "dns")
        .map(|(_, a)| *a)
        .collect()
}

#[test]
fn loopback_of_both_families_on_one_port() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = base_config(&write_objects(dir.path(), ONE_SERVICE), "").replace(
        "listen: [\"127.0.0.1:0\"]",
        "listen: [\"127.0.0.1:0\", \"[::1]:0\"]",
    );
    let s = Server::start(&cfg, &[]);
    let dns = dns_listens(&s);
    assert_eq!(dns.len(), 2, "{dns:?}");
    assert_eq!(dns[0].port(), dns[1].port(), "one port for both: {dns:?}");
    let port = dns[0].port();
    ask_both_transports(SocketAddr::from(([127, 0, 0, 1], port)));
    ask_both_transports(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)));
    assert_eq!(requests(&s, "1"), 2.0, "IPv4 clients counted as IPv4");
    assert_eq!(requests(&s, "2"), 2.0, "IPv6 clients counted as IPv6");
}

#[test]
fn port_alone_serves_both_families_from_config_and_flag() {
    for via_flag in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let base = base_config(&write_objects(dir.path(), ONE_SERVICE), "");
        let (cfg, args): (String, Vec<&str>) = if via_flag {
            (base, vec!["--listen", ":0"])
        } else {
            (
                base.replace("listen: [\"127.0.0.1:0\"]", "listen: [\":0\"]"),
                vec![],
            )
        };
        let s = Server::start(&cfg, &args);
        let dns = dns_listens(&s);
        assert_eq!(
            dns.iter().map(|a| a.ip().to_string()).collect::<Vec<_>>(),
            ["0.0.0.0", "::"],
            "flag={via_flag}: {dns:?}"
        );
        assert_eq!(dns[0].port(), dns[1].port());
        let port = dns[0].port();
        ask_both_transports(SocketAddr::from(([127, 0, 0, 1], port)));
        ask_both_transports(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)));
        // With one socket per family, IPv4 clients reach the IPv4 socket as themselves.
        assert_eq!(requests(&s, "1"), 2.0, "flag={via_flag}");
        assert_eq!(requests(&s, "2"), 2.0, "flag={via_flag}");
    }
}

/// A network namespace, removed on drop (also when the test fails).
struct Netns(String);

impl Netns {
    fn new() -> Netns {
        let name = format!("cdns-v6off-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ip netns add (the tests run as root)");
        let ns = Netns(name);
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns.exec(&[
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
            "net.ipv6.conf.lo.disable_ipv6=1",
        ]);
        ns
    }

    fn command(&self, argv: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0]).args(argv);
        c
    }

    fn exec(&self, argv: &[&str]) -> String {
        let out = self.command(argv).output().unwrap();
        assert!(
            out.status.success(),
            "{argv:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn a_node_without_ipv6_serves_ipv4_and_says_so_once() {
    let ns = Netns::new();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.yaml");
    std::fs::write(
        &cfg,
        base_config(&write_objects(dir.path(), ONE_SERVICE), "").replace(
            "listen: [\"127.0.0.1:0\"]",
            "listen: [\"127.0.0.1:0\", \"[::1]:0\"]",
        ),
    )
    .unwrap();
    let bin = bin();
    let mut cmd = ns.command(&[
        bin.to_str().unwrap(),
        "serve",
        "--config",
        cfg.to_str().unwrap(),
    ]);
    cmd.env("CLUSTERDNS_LOG", "info");
    let s = Server::spawn(cmd, dir);
    let dns = s.dns;
    assert!(dns.is_ipv4(), "{dns}");
    // Give the other start-up lines a moment, then count the warning.
    std::thread::sleep(Duration::from_millis(300));
    let lines = s.log.lock().unwrap().clone();
    let warnings = lines
        .iter()
        .filter(|l| l.contains("IPv6 is not available"))
        .count();
    assert_eq!(warnings, 1, "{lines:#?}");
    assert!(
        !lines.iter().any(|l| l.contains("listening dns=[")),
        "no IPv6 listener: {lines:#?}"
    );
    for tcp in [false, true] {
        let mut argv = vec!["dig", "@127.0.0.1", "-p"];
        let port = dns.port().to_string();
        argv.push(&port);
        argv.extend(["+time=2", "+tries=1", "+short", "a.x.svc.cluster.local"]);
        if tcp {
            argv.push("+tcp");
        }
        assert_eq!(ns.exec(&argv).trim(), "10.9.0.1", "tcp={tcp}");
    }
}
