//! DNS over TLS upstreams (RFC 7858) and failing upstreams, against the real binary with
//! `dig`: a real Unbound serving DNS over TLS on loopback with a certificate made by the test
//! (`openssl`: a CA and a server certificate for `dns.test`), and upstreams that never answer.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::start_knot;
use crate::support::upstream::Dead;
use crate::support::*;

/// Unbound answering `www.dot.test` over TLS only; killed on drop.
struct UnboundTls {
    child: Child,
    addr: SocketAddr,
}

impl Drop for UnboundTls {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new(require("openssl"))
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test CA (`ca.pem`) and a certificate for `dns.test` it signed (`server.pem`,
/// `server.key`).
fn make_certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=clusterdns test CA",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=dns.test",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:dns.test\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
}

fn start_unbound_tls(dir: &Path) -> UnboundTls {
    let bin = require("unbound");
    let port = free_port();
    let d = dir.display();
    let conf = format!(
        "server:\n  interface: 127.0.0.1@{port}\n  tls-port: {port}\n\
         \x20 tls-service-key: {d}/server.key\n  tls-service-pem: {d}/server.pem\n\
         \x20 do-daemonize: no\n  chroot: \"\"\n  username: \"\"\n  directory: {d}\n\
         \x20 pidfile: \"\"\n  use-syslog: no\n  logfile: \"\"\n  verbosity: 0\n\
         \x20 do-ip6: no\n  access-control: 127.0.0.0/8 allow\n  module-config: \"iterator\"\n\
         \x20 local-zone: \"dot.test.\" static\n\
         \x20 local-data: \"www.dot.test. 60 IN A 192.0.2.53\"\n\
         remote-control:\n  control-enable: no\n"
    );
    std::fs::write(dir.join("unbound.conf"), conf).unwrap();
    let child = Command::new(bin)
        .arg("-d")
        .arg("-c")
        .arg(dir.join("unbound.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start unbound");
    let u = UnboundTls {
        child,
        addr: ([127, 0, 0, 1], port).into(),
    };
    let up = wait_for(Duration::from_secs(10), || {
        std::net::TcpStream::connect(u.addr).is_ok()
    });
    assert!(up, "unbound listens on {}", u.addr);
    u
}

#[test]
fn dns_over_tls_upstream_is_real_unbound_with_a_checked_certificate() {
    let certs = tempfile::tempdir().unwrap();
    make_certificates(certs.path());
    let unbound = start_unbound_tls(certs.path());
    // kdig over TLS first: the upstream itself works.
    let k = Command::new(require("kdig"))
        .args([
            &format!("@{}", unbound.addr.ip()),
            "-p",
            &unbound.addr.port().to_string(),
            "+tls",
            "+short",
            "www.dot.test",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&k.stdout).trim(), "192.0.2.53");
    let ca = certs.path().join("ca.pem");
    let cfg = |servername: &str| {
        format!(
            "forward:\n  upstreams: [\"127.0.0.1:9\"]\n  domains:\n    dot.test:\n      upstreams: [\"tls://{}\"]\n      tls_servername: {servername}\n      tls_ca: {}\n      max_fails: 0\n",
            unbound.addr,
            ca.display()
        )
    };
    let s = Server::sample(&cfg("dns.test"));
    assert_eq!(s.dig(&["+short", "www.dot.test"]).trim(), "192.0.2.53");
    // Over TCP from the client as well; the TLS connection is reused (CoreDNS's `expire`).
    assert_eq!(
        s.dig(&["+tcp", "+short", "www.dot.test", "A"]).trim(),
        "192.0.2.53"
    );
    assert_eq!(s.status(&["nope.dot.test"]), "NXDOMAIN");
    let m = s.metrics();
    assert!(
        m.lines()
            .any(|l| l.starts_with("coredns_proxy_conn_cache_hits_total")
                && l.contains("tcp-tls")
                && !l.ends_with(" 0")),
        "a reused TLS connection counted"
    );
    drop(s);
    // A certificate for another name is refused: SERVFAIL, never the answer.
    let s = Server::sample(&cfg("other.test"));
    assert_eq!(
        s.status(&["+tries=1", "+time=8", "www.dot.test"]),
        "SERVFAIL"
    );
}

/// With every upstream down, a name not in the cache gets SERVFAIL within one try of dig's
/// (5 s, glibc's timeout) once the health checks marked them down, and the SERVFAIL is cached
/// 5 s as CoreDNS's `servfail` default.
#[test]
fn every_upstream_down_answers_servfail_within_the_clients_timeout() {
    let (a, b) = (Dead::new(), Dead::new());
    let s = Server::sample(&format!(
        "forward:\n  upstreams: [\"{}\", \"{}\"]\n  timeout: 2s\n",
        a.addr, b.addr
    ));
    // The first misses take the tries' budget (3 s); dig waits up to 5 s once.
    for i in 0..3 {
        assert_eq!(
            s.status(&["+tries=1", "+time=5", &format!("first{i}.example")]),
            "SERVFAIL"
        );
    }
    // Marked down by now (max_fails 2, health checks every 500ms): misses are one short try.
    assert!(wait_for(Duration::from_secs(10), || {
        s.metrics().lines().any(|l| {
            l.starts_with("coredns_forward_healthcheck_broken_total") && !l.ends_with(" 0")
        }) || {
            let _ = s.status(&["+tries=1", "+time=5", "probe.example"]);
            false
        }
    }));
    for i in 0..5 {
        assert_eq!(
            s.status(&["+tries=1", "+time=3", &format!("miss{i}.example")]),
            "SERVFAIL",
            "answered within dig's 3 s"
        );
    }
}

/// `except` (CoreDNS: names the forward leaves to the next plugin; none follows, so
/// SERVFAIL), and a domain's own options, against real Knot with `dig`.
#[test]
fn except_and_a_domains_own_options_with_dig() {
    let knot = start_knot();
    let s = Server::sample(&format!(
        "forward:\n  upstreams: [\"{k}\"]\n  except: [\"www.example.test\"]\n  domains:\n    big.example.test:\n      upstreams: [\"{k}\"]\n      force_tcp: true\n      except: []\n",
        k = knot.addr
    ));
    assert_eq!(s.status(&["www.example.test"]), "SERVFAIL");
    assert_eq!(
        s.dig(&["+short", "alias.example.test"]).lines().last(),
        Some("192.0.2.10")
    );
    // The domain has its own (empty) except and reaches Knot over TCP only.
    let conns = |proto: &str| -> f64 {
        let (m, proto) = (s.metrics(), format!("proto=\"{proto}\""));
        metric_sum(&m, "coredns_proxy_conn_cache_misses_total", &[&proto])
            + metric_sum(&m, "coredns_proxy_conn_cache_hits_total", &[&proto])
    };
    let (udp, tcp) = (conns("udp"), conns("tcp"));
    assert!(udp >= 1.0, "the default route asked over UDP");
    assert_eq!(s.status(&["nx.big.example.test"]), "NXDOMAIN");
    assert_eq!(
        s.dig(&["+short", "www.big.example.test"]).trim(),
        "",
        "NODATA or NXDOMAIN, forwarded"
    );
    assert_eq!(conns("udp"), udp, "no UDP for the force_tcp domain");
    assert_eq!(conns("tcp"), tcp + 2.0, "two queries over TCP");
}
