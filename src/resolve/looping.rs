//! Forwarding loops.
//!
//! - At start, a configuration whose upstream is one of clusterdns's own listen addresses is
//!   refused ([`check`]; `Error::Loop`, exit code 3).
//! - At run time a loop can form through other servers (clusterdns → a node resolver → back to
//!   clusterdns). It is found with probes, as CoreDNS's `loop` plugin does: a query for a
//!   random name (`<20 digits>.<20 digits>.<domain>`, HINFO) sent to one upstream; if that
//!   name ever reaches clusterdns as a query, queries sent to that upstream come back. Unlike
//!   CoreDNS's plugin (which exits the process, taking the whole cluster's DNS down with it), a
//!   loop only takes that upstream out of use: names routed only to looping upstreams get
//!   SERVFAIL at once, everything else keeps being served, and a looping upstream is probed
//!   again until its probe is answered without coming back.
//! - Upstreams are probed when the sockets open, again whenever a loop is suspected (a
//!   forwarded query times out, or one arrives that carries the ID of our own query under way
//!   for the same name), and, while looping, every second.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use super::upstream::Upstream;

/// Addresses of this machine's interfaces (getifaddrs, through `if-addrs`), plus loopback.
pub fn local_addrs() -> Vec<IpAddr> {
    let mut out = vec![
        IpAddr::from([127, 0, 0, 1]),
        IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
    ];
    // Without the list, only loopback counts as local: the start-up check still refuses the
    // common mistake (an upstream on loopback) and the run-time probes find the rest.
    if let Ok(ifaces) = if_addrs::get_if_addrs() {
        out.extend(ifaces.into_iter().map(|i| i.ip()));
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
        // 0.0.0.0 takes every local IPv4 address; [::] every local IPv6 address (its socket
        // is IPV6_V6ONLY: IPv4 goes to the 0.0.0.0 socket).
        IpAddr::V4(l) if l.is_unspecified() => up.is_ipv4() && is_local(up, locals),
        IpAddr::V6(l) if l.is_unspecified() => up.is_ipv6() && is_local(up, locals),
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

/// The probes out: each upstream's latest probe name. A probe name stays known after its
/// exchange ends, so one that comes back late still counts.
#[derive(Default)]
pub struct Probes {
    by_name: Mutex<HashMap<Box<[u8]>, Probe>>,
}

struct Probe {
    upstream: Arc<Upstream>,
    came_back: bool,
}

/// Probe names start with a label of 20 digits: a cheap test before any lock.
const PROBE_LABEL: usize = 20;

impl Probes {
    /// A new probe name (lowercase wire form) for `up`, under `domain` (wire form; the root
    /// for the default upstreams, a stub domain for its upstreams, so that a relay that
    /// forwards only that domain back is found too). Replaces `up`'s previous probe.
    pub fn register(&self, up: &Arc<Upstream>, domain: &[u8]) -> Vec<u8> {
        let mut name = Vec::with_capacity(2 * (PROBE_LABEL + 1) + domain.len());
        for _ in 0..2 {
            name.push(PROBE_LABEL as u8);
            name.extend_from_slice(format!("{:020}", fastrand::u64(..)).as_bytes());
        }
        name.extend_from_slice(domain);
        let mut m = self.by_name.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|_, p| !Arc::ptr_eq(&p.upstream, up));
        m.insert(
            name.clone().into_boxed_slice(),
            Probe {
                upstream: up.clone(),
                came_back: false,
            },
        );
        name
    }

    /// Is `qname_lower` (wire form) one of our probes? Then it has come back to us: recorded,
    /// and the upstream it was sent to is returned.
    pub fn arrived(&self, qname_lower: &[u8]) -> Option<Arc<Upstream>> {
        if qname_lower.first() != Some(&(PROBE_LABEL as u8))
            || !qname_lower.get(1).is_some_and(u8::is_ascii_digit)
        {
            return None;
        }
        let mut m = self.by_name.lock().unwrap_or_else(|e| e.into_inner());
        let p = m.get_mut(qname_lower)?;
        p.came_back = true;
        Some(p.upstream.clone())
    }

    /// Whether the probe `name` came back.
    pub fn came_back(&self, name: &[u8]) -> bool {
        let m = self.by_name.lock().unwrap_or_else(|e| e.into_inner());
        m.get(name).is_some_and(|p| p.came_back)
    }

    /// Whether `name` (lowercase wire form) is a probe of ours.
    pub fn is_probe(&self, name: &[u8]) -> bool {
        let m = self.by_name.lock().unwrap_or_else(|e| e.into_inner());
        m.contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::metrics::Metrics;

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
        assert!(
            !reaches(sa("127.0.0.1:53"), sa("[::]:53"), &locals),
            "V6ONLY"
        );
        assert!(!reaches(
            sa("[::ffff:127.0.0.1]:53"),
            sa("[::]:53"),
            &locals
        ));
        assert!(reaches(
            sa("[::ffff:127.0.0.1]:53"),
            sa("0.0.0.0:53"),
            &locals
        ));
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

    #[test]
    fn probes_are_recognised_once_registered() {
        let p = Probes::default();
        let a = Arc::new(Upstream::new(sa("127.0.0.1:40200"), &Metrics::default()));
        let b = Arc::new(Upstream::new(sa("127.0.0.1:40201"), &Metrics::default()));
        let n1 = p.register(&a, b"\x04corp\x00");
        assert_eq!(n1.len(), 2 * 21 + 6);
        assert!(n1.ends_with(b"\x04corp\x00"));
        let n2 = p.register(&b, b"\x00");
        assert!(p.is_probe(&n1) && p.is_probe(&n2));
        assert!(!p.came_back(&n1));
        assert!(p.arrived(b"\x07example\x00").is_none());
        assert!(Arc::ptr_eq(&p.arrived(&n1).unwrap(), &a));
        assert!(p.came_back(&n1) && !p.came_back(&n2));
        // A new probe for `a` replaces its old one.
        let n3 = p.register(&a, b"\x00");
        assert!(!p.is_probe(&n1) && p.is_probe(&n3) && p.is_probe(&n2));
    }
}
