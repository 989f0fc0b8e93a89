//! Forwarding loops: a configuration that forwards to clusterdns itself is refused at start
//! (static check), and a random probe name sent through forwarding that comes back is a loop at
//! run time (CoreDNS's `loop` plugin).

use std::net::{IpAddr, SocketAddr};

/// Addresses of this machine's interfaces (getifaddrs), plus loopback.
pub fn local_addrs() -> Vec<IpAddr> {
    let mut out = vec![
        IpAddr::from([127, 0, 0, 1]),
        IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
    ];
    // SAFETY: getifaddrs fills a linked list we only read and then free with freeifaddrs.
    unsafe {
        let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut ifap) != 0 {
            return out;
        }
        let mut p = ifap;
        while !p.is_null() {
            let sa = (*p).ifa_addr;
            if !sa.is_null() {
                match i32::from((*sa).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(sa as *const libc::sockaddr_in);
                        out.push(IpAddr::from(
                            u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                        ));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(sa as *const libc::sockaddr_in6);
                        out.push(IpAddr::from(sin6.sin6_addr.s6_addr));
                    }
                    _ => {}
                }
            }
            p = (*p).ifa_next;
        }
        libc::freeifaddrs(ifap);
    }
    out
}

fn is_local(ip: IpAddr, locals: &[IpAddr]) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    ip.is_loopback() || locals.contains(&ip)
}

/// Does a query to `upstream` reach a socket listening on `listen`?
pub fn reaches(upstream: SocketAddr, listen: SocketAddr, locals: &[IpAddr]) -> bool {
    if upstream.port() != listen.port() {
        return false;
    }
    let up = match upstream.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(upstream.ip()),
        v4 => v4,
    };
    match listen.ip() {
        // 0.0.0.0 takes every local IPv4 address; [::] every local address (dual stack).
        IpAddr::V4(l) if l.is_unspecified() => up.is_ipv4() && is_local(up, locals),
        IpAddr::V6(l) if l.is_unspecified() => is_local(up, locals),
        l => {
            let l = match l {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(l),
                v4 => v4,
            };
            l == up
        }
    }
}

/// The static check: an error message naming the key and address of the first upstream that
/// is one of our own listen addresses.
pub fn check(listen: &[SocketAddr], upstreams: &[(String, SocketAddr)]) -> Result<(), String> {
    let mut locals = None;
    for (key, up) in upstreams {
        for l in listen {
            let locals = locals.get_or_insert_with(local_addrs);
            if reaches(*up, *l, locals) {
                return Err(format!(
                    "{key} = {up} is this server's own listen address {l}: queries would be forwarded back to \
                     clusterdns itself (point it at a real resolver, or change `listen`)"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn loops_detected() {
        let locals = local_addrs();
        assert!(reaches(sa("127.0.0.1:53"), sa("127.0.0.1:53"), &locals));
        assert!(!reaches(sa("127.0.0.1:53"), sa("127.0.0.1:5353"), &locals));
        assert!(reaches(sa("127.0.0.53:53"), sa("0.0.0.0:53"), &locals));
        assert!(reaches(sa("[::1]:53"), sa("[::]:53"), &locals));
        assert!(reaches(sa("127.0.0.1:53"), sa("[::]:53"), &locals));
        assert!(!reaches(sa("[::1]:53"), sa("0.0.0.0:53"), &locals));
        assert!(!reaches(sa("192.0.2.1:53"), sa("0.0.0.0:53"), &locals));
        assert!(!reaches(sa("127.0.0.2:53"), sa("127.0.0.1:53"), &locals));
    }

    #[test]
    fn message_names_key_and_address() {
        let e = check(
            &[sa("0.0.0.0:1053")],
            &[("forward.upstreams[1]".into(), sa("127.0.0.1:1053"))],
        )
        .unwrap_err();
        assert!(
            e.contains("forward.upstreams[1]")
                && e.contains("127.0.0.1:1053")
                && e.contains("0.0.0.0:1053"),
            "{e}"
        );
        assert!(check(&[sa("127.0.0.1:1053")], &[("k".into(), sa("127.0.0.1:53"))]).is_ok());
    }
}
