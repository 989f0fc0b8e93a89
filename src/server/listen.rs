//! Binding the DNS listen addresses: per address, `workers` UDP sockets (`SO_REUSEPORT`, one per
//! worker thread) and one TCP listener on the same port.
//!
//! One socket per address family. IPv6 sockets are `IPV6_V6ONLY`, so `0.0.0.0:53` and `[::]:53`
//! (what `:53` stands for) serve the two families side by side, and client addresses are never
//! IPv4-mapped (`::ffff:10.1.2.3`): metrics, logs and later rate limits see the real address. A
//! node without IPv6 (the module not loaded, or no IPv6 address) serves IPv4 and says so in one
//! log line, instead of failing to start.

use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::AsRawFd;

use socket2::{Domain, Socket, Type};

use crate::config::UdpBalance;

/// TCP connections waiting to be accepted.
const TCP_BACKLOG: i32 = 1024;

/// The sockets of one listen address.
#[derive(Debug)]
pub struct Listener {
    /// The address bound (port 0 in the config is a real port here).
    pub addr: SocketAddr,
    pub udp: Vec<UdpSocket>,
    pub tcp: TcpListener,
}

/// A UDP socket bound to `addr` with `SO_REUSEPORT`, so several can share the port.
pub fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
    s.set_reuse_port(true)?;
    s.set_reuse_address(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    // A deeper receive queue absorbs bursts (the kernel caps it at rmem_max).
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// `workers` UDP sockets on `addr` (port 0 picks one port for all of them), queries spread
/// over them as `balance` says.
pub fn bind_udp_workers(
    addr: SocketAddr,
    workers: usize,
    balance: UdpBalance,
) -> io::Result<Vec<UdpSocket>> {
    let first = bind_udp(addr)?;
    let actual = first.local_addr()?;
    let mut v = vec![first];
    for _ in 1..workers.max(1) {
        v.push(bind_udp(actual)?);
    }
    if balance == UdpBalance::Client
        && v.len() > 1
        && let Err(e) = steer_by_client(&v[0], v.len(), addr.is_ipv6())
    {
        // The flow hash still spreads queries; only a flood's confinement is lost.
        tracing::warn!(%addr, error = %e, "cannot spread UDP queries by client address");
    }
    Ok(v)
}

/// `SO_ATTACH_REUSEPORT_CBPF` (asm-generic/socket.h; not in the libc crate for glibc targets).
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;

/// One classic BPF instruction without jumps.
fn bpf(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

/// Attach to the `SO_REUSEPORT` group of `sock` (its `workers` sockets, bound in order) a
/// program that picks each datagram's socket from its source address: one client, whatever its
/// source ports, always reaches the same worker. The kernel runs it per datagram (socket(7):
/// "the return value... is the index of the socket in the reuseport group"); an index past the
/// group falls back to the flow hash.
///
/// The address (IPv4, or the last 32 bits of an IPv6 one; read at `SKF_NET_OFF`, relative to
/// the IP header) is hashed by Fibonacci hashing (× 2654435761, a 32-bit multiply) and its top
/// 16 bits scaled to `[0, workers)` (`(h × workers) >> 16`), so neighbouring pod addresses land
/// on different workers.
fn steer_by_client(sock: &UdpSocket, workers: usize, v6: bool) -> io::Result<()> {
    let src = if v6 { 8 + 12 } else { 12 };
    let prog = [
        bpf(
            libc::BPF_LD | libc::BPF_W | libc::BPF_ABS,
            (libc::SKF_NET_OFF + src) as u32,
        ),
        bpf(libc::BPF_ALU | libc::BPF_MUL | libc::BPF_K, 0x9E37_79B1),
        bpf(libc::BPF_ALU | libc::BPF_RSH | libc::BPF_K, 16),
        bpf(libc::BPF_ALU | libc::BPF_MUL | libc::BPF_K, workers as u32),
        bpf(libc::BPF_ALU | libc::BPF_RSH | libc::BPF_K, 16),
        bpf(libc::BPF_RET | libc::BPF_A, 0),
    ];
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr().cast_mut(),
    };
    // SAFETY: `fprog` and the `prog` it points at live across the call, and `optlen` is the
    // size of the `sock_fprog` passed; the kernel copies the program and keeps no pointer.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_REUSEPORT_CBPF,
            (&raw const fprog).cast(),
            size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A non-blocking TCP listener on `addr` (`IPV6_V6ONLY` for IPv6). With `share` (a fixed port
/// in the config), `SO_REUSEPORT` lets a second clusterdns (the new pod of a node-local rolling
/// update, same user) listen beside this one. A port the kernel picked (port 0) is this
/// process's alone: no sharing there, so a clash with another process is an error and the
/// caller picks again.
pub fn bind_tcp(addr: SocketAddr, share: bool) -> io::Result<TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    if share {
        s.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.bind(&addr.into())?;
    s.listen(TCP_BACKLOG)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// Does this error say the node has no IPv6 (not "the port is taken")?
pub fn ipv6_unavailable(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAFNOSUPPORT | libc::EPROTONOSUPPORT | libc::EADDRNOTAVAIL)
    )
}

/// Bind every listen address. Addresses with port 0 share the port the first of them got
/// where they can (so `127.0.0.1:0` and `[::1]:0` serve on one port). IPv6 addresses the node
/// cannot bind for want of IPv6 are left out with one log line, as long as something else is
/// bound; any other failure is the error of that address.
pub fn bind_all(
    listen: &[SocketAddr],
    workers: usize,
    balance: UdpBalance,
) -> Result<Vec<Listener>, (SocketAddr, io::Error)> {
    let mut out = Vec::new();
    let mut skipped: Vec<(SocketAddr, io::Error)> = Vec::new();
    let mut picked: Option<u16> = None;
    for &addr in listen {
        match bind_one(addr, workers, balance, picked) {
            Ok(l) => {
                if addr.port() == 0 {
                    picked.get_or_insert(l.addr.port());
                }
                out.push(l);
            }
            Err(e) if addr.is_ipv6() && ipv6_unavailable(&e) => skipped.push((addr, e)),
            Err(e) => return Err((addr, e)),
        }
    }
    if out.is_empty() && !skipped.is_empty() {
        return Err(skipped.swap_remove(0));
    }
    if let Some((_, e)) = skipped.first() {
        let addrs: Vec<String> = skipped.iter().map(|(a, _)| a.to_string()).collect();
        tracing::warn!(
            skipped = %addrs.join(", "),
            error = %e,
            "IPv6 is not available on this node: serving DNS over IPv4 only"
        );
    }
    Ok(out)
}

fn bind_one(
    addr: SocketAddr,
    workers: usize,
    balance: UdpBalance,
    picked: Option<u16>,
) -> io::Result<Listener> {
    if addr.port() == 0
        && let Some(port) = picked
        && let Ok(l) = bind_pair(SocketAddr::new(addr.ip(), port), workers, balance)
    {
        return Ok(l);
    }
    // With port 0, UDP picks the port and TCP must get the same number: retry a few times if
    // TCP finds it taken.
    let mut tries = 0;
    loop {
        tries += 1;
        match bind_pair(addr, workers, balance) {
            Err(e) if addr.port() == 0 && tries < 10 && e.kind() == io::ErrorKind::AddrInUse => {
                tracing::debug!(error = %e, "tcp port taken, retrying");
            }
            r => return r,
        }
    }
}

fn bind_pair(addr: SocketAddr, workers: usize, balance: UdpBalance) -> io::Result<Listener> {
    let udp = bind_udp_workers(addr, workers, balance)?;
    let actual = udp[0].local_addr()?;
    let tcp = bind_tcp(actual, addr.port() != 0)?;
    Ok(Listener {
        addr: actual,
        udp,
        tcp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv6_here() -> bool {
        UdpSocket::bind("[::1]:0").is_ok()
    }

    #[test]
    fn both_families_on_one_port() {
        let v4: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let v6: SocketAddr = "[::1]:0".parse().unwrap();
        let ls = bind_all(&[v4, v6], 2, UdpBalance::Flow).unwrap();
        if !ipv6_here() {
            assert_eq!(ls.len(), 1, "IPv6 left out on a node without it");
            return;
        }
        assert_eq!(ls.len(), 2);
        assert_eq!(ls[0].addr.port(), ls[1].addr.port());
        assert_eq!(ls[0].udp.len(), 2);
    }

    #[test]
    fn wildcards_of_both_families_coexist() {
        // Before IPV6_V6ONLY on TCP, `[::]` after `0.0.0.0` on the same port failed with
        // "Address already in use".
        let any4: SocketAddr = "0.0.0.0:0".parse().unwrap();
        let ls = bind_all(&[any4], 1, UdpBalance::Flow).unwrap();
        let port = ls[0].addr.port();
        let any6 = SocketAddr::new(std::net::Ipv6Addr::UNSPECIFIED.into(), port);
        match bind_all(&[any6], 1, UdpBalance::Flow) {
            Ok(v6) => assert_eq!(v6[0].addr.port(), port),
            Err((_, e)) => assert!(ipv6_unavailable(&e), "{e}"),
        }
    }

    /// Which worker socket (index) each datagram from `clients` reached: 16 source ports per
    /// client, 4 datagrams each.
    fn arrivals(balance: UdpBalance, server: &str, clients: &[&str]) -> Vec<(String, usize)> {
        let ls = bind_all(&[server.parse().unwrap()], 2, balance).unwrap();
        let to = ls[0].addr;
        for c in clients {
            for _ in 0..16 {
                let s = UdpSocket::bind(SocketAddr::new(c.parse().unwrap(), 0)).unwrap();
                for _ in 0..4 {
                    s.send_to(b"hello", to).unwrap();
                }
            }
        }
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        for (i, u) in ls[0].udp.iter().enumerate() {
            u.set_read_timeout(Some(std::time::Duration::from_millis(200)))
                .unwrap();
            while let Ok((_, from)) = u.recv_from(&mut buf) {
                got.push((from.ip().to_string(), i));
            }
        }
        got
    }

    #[test]
    fn by_client_one_clients_queries_reach_one_worker() {
        let got = arrivals(
            UdpBalance::Client,
            "127.0.0.1:0",
            &["127.0.0.2", "127.0.0.3"],
        );
        assert_eq!(got.len(), 2 * 16 * 4, "every datagram arrives");
        let workers_of = |c: &str| {
            let mut w: Vec<usize> = got.iter().filter(|g| g.0 == c).map(|g| g.1).collect();
            w.sort();
            w.dedup();
            w
        };
        // One client's 16 source ports all reach one worker; the neighbouring address
        // another (Fibonacci hashing's top bit: 127.0.0.2 -> 0, 127.0.0.3 -> 1).
        assert_eq!(workers_of("127.0.0.2"), vec![0]);
        assert_eq!(workers_of("127.0.0.3"), vec![1]);
        if ipv6_here() {
            // IPv6: the address's last 32 bits.
            let got = arrivals(UdpBalance::Client, "[::1]:0", &["::1"]);
            assert_eq!(got.len(), 16 * 4);
            assert!(got.iter().all(|g| g.1 == got[0].1), "{got:?}");
        }
    }

    #[test]
    fn by_flow_one_clients_ports_spread_over_the_workers() {
        let got = arrivals(UdpBalance::Flow, "127.0.0.1:0", &["127.0.0.2"]);
        assert_eq!(got.len(), 16 * 4);
        // 16 flows on one worker would be a 1 in 32,768 chance.
        assert!(got.iter().any(|g| g.1 == 0) && got.iter().any(|g| g.1 == 1));
    }

    #[test]
    fn a_taken_port_is_an_error() {
        let ls = bind_all(&["127.0.0.1:0".parse().unwrap()], 1, UdpBalance::Flow).unwrap();
        let taken = ls[0].addr;
        // Another process's socket (no SO_REUSEPORT on a plain std socket).
        drop(ls);
        let other = UdpSocket::bind(taken).unwrap();
        let (a, e) = bind_all(&[taken], 1, UdpBalance::Flow).unwrap_err();
        assert_eq!(a, taken);
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        drop(other);
    }
}
