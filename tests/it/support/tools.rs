//! The outside tools the tests run (`dig`, `kdig`, `knotd`, `prometheus`, `kubectl`, ...): found
//! or the test fails with the Debian package to install. `scripts/install-test-deps.sh` installs
//! them all, and CI runs it, so a missing tool is a broken machine, never a reason to skip.

use std::path::{Path, PathBuf};

/// The Debian package that holds `tool`.
fn package_of(tool: &str) -> &'static str {
    match tool {
        "dig" | "nslookup" => "dnsutils",
        "kdig" => "knot-dnsutils",
        "knotd" => "knot",
        "named" => "bind9",
        "unbound" => "unbound",
        "openssl" => "openssl",
        "prometheus" | "promtool" => "prometheus",
        "kubectl" => "kubernetes-client",
        "python3" => "python3",
        _ => "?",
    }
}

/// The path of `tool` (on `PATH`, or in an sbin folder where Debian puts daemons such as
/// `knotd`); a missing tool fails the test with what to install.
pub(crate) fn require(tool: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let sbin = ["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from);
    std::env::split_paths(&path)
        .chain(sbin)
        .map(|dir| dir.join(tool))
        .find(|p| is_executable(p))
        .unwrap_or_else(|| {
            panic!(
                "`{tool}` is not installed: run scripts/install-test-deps.sh \
                 (Debian package `{}`)",
                package_of(tool)
            )
        })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A loopback port free for both UDP and TCP a moment ago (bound, then released): for servers
/// that take their port from a config file.
pub(crate) fn free_port() -> u16 {
    let (udp, _tcp) = bind_pair();
    udp.local_addr().unwrap().port()
}

/// A UDP socket and a TCP listener bound to the same free loopback port.
pub(crate) fn bind_pair() -> (std::net::UdpSocket, std::net::TcpListener) {
    for _ in 0..50 {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        if let Ok(tcp) = std::net::TcpListener::bind(udp.local_addr().unwrap()) {
            return (udp, tcp);
        }
    }
    panic!("no port free for both UDP and TCP on 127.0.0.1");
}
