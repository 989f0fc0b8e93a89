//! Links and addresses through rtnetlink (`NETLINK_ROUTE`), spoken directly: the image ships no
//! `ip` tool, and the few messages node-local mode needs (a link by name, create one, set it up,
//! list, add and delete addresses, delete the link) are small fixed layouts (rtnetlink(7)).
//!
//! Everything acts on the network namespace of the calling process: on a node, the host's
//! (the pod runs with `hostNetwork: true`).

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

// rtnetlink(7) / linux/rtnetlink.h, linux/netlink.h, linux/if_link.h, linux/if_addr.h.
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_GETADDR: u16 = 22;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const NLA_F_NESTED: u16 = 1 << 15;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
/// No duplicate address detection: an IPv6 address is usable (bindable) at once.
const IFA_F_NODAD: u8 = 0x02;
const IFF_UP: u32 = 0x1;
const NLMSG_HDRLEN: usize = 16;
const IFINFOMSG_LEN: usize = 16;
const IFADDRMSG_LEN: usize = 8;

/// What is known about a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Link {
    pub index: u32,
    pub up: bool,
}

/// One rtnetlink socket; requests are answered in order.
pub(crate) struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// A request message under construction.
struct Msg {
    buf: Vec<u8>,
}

impl Msg {
    fn new(kind: u16, flags: u16) -> Msg {
        let mut buf = vec![0u8; NLMSG_HDRLEN];
        buf[4..6].copy_from_slice(&kind.to_ne_bytes());
        buf[6..8].copy_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        Msg { buf }
    }

    fn ifinfomsg(mut self, index: u32, flags: u32, change: u32) -> Msg {
        let mut b = [0u8; IFINFOMSG_LEN];
        // family AF_UNSPEC (0), pad, type 0.
        b[4..8].copy_from_slice(&index.to_ne_bytes());
        b[8..12].copy_from_slice(&flags.to_ne_bytes());
        b[12..16].copy_from_slice(&change.to_ne_bytes());
        self.buf.extend_from_slice(&b);
        self
    }

    fn ifaddrmsg(mut self, family: u8, prefix: u8, flags: u8, index: u32) -> Msg {
        let mut b = [0u8; IFADDRMSG_LEN];
        b[0] = family;
        b[1] = prefix;
        b[2] = flags;
        // scope 0: RT_SCOPE_UNIVERSE, as node-cache's netlink.AddrAdd leaves it.
        b[4..8].copy_from_slice(&index.to_ne_bytes());
        self.buf.extend_from_slice(&b);
        self
    }

    fn attr(mut self, kind: u16, data: &[u8]) -> Msg {
        let len = 4 + data.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.buf.resize(align4(self.buf.len()), 0);
        self
    }

    fn finish(mut self, seq: u32) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

/// Attributes of a message body: (type without flags, payload).
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let kind = u16::from_ne_bytes([b[2], b[3]]) & !NLA_F_NESTED;
        if len < 4 || len > b.len() {
            return None;
        }
        let data = &b[4..len];
        b = &b[align4(len).min(b.len())..];
        Some((kind, data))
    })
}

fn ip_bytes(ip: IpAddr) -> (u8, u8, Vec<u8>) {
    match ip {
        IpAddr::V4(v4) => (libc::AF_INET as u8, 32, v4.octets().to_vec()),
        IpAddr::V6(v6) => (libc::AF_INET6 as u8, 128, v6.octets().to_vec()),
    }
}

impl Netlink {
    pub(crate) fn open() -> io::Result<Netlink> {
        // SAFETY: plain socket(2) call; the result is checked before use.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, owned descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: an all-zero sockaddr_nl is "kernel assigns the port id".
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: sa is a valid sockaddr_nl of the stated size.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_nl).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let timeout = libc::timeval {
            tv_sec: 5,
            tv_usec: 0,
        };
        // SAFETY: setsockopt with a timeval of the stated size.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                size_of::<libc::timeval>() as libc::socklen_t,
            );
        }
        Ok(Netlink { fd, seq: 1 })
    }

    /// Send one request and collect the answers: every message body of type `want` until
    /// `NLMSG_DONE` (a dump) or the ack (every other request asks for one); an error ack is an
    /// `Err` with the kernel's errno.
    fn request(&mut self, msg: Msg, want: Option<u16>) -> io::Result<Vec<Vec<u8>>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let bytes = msg.finish(seq);
        // SAFETY: sending an owned buffer of the stated length to the kernel (nl_pid 0).
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: `bytes` and `sa` outlive the call and the lengths given are theirs.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                0,
                (&sa as *const libc::sockaddr_nl).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: receiving into an owned buffer of the stated length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let mut rest = &buf[..n as usize];
            while rest.len() >= NLMSG_HDRLEN {
                let len = u32::from_ne_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
                let kind = u16::from_ne_bytes([rest[4], rest[5]]);
                let mseq = u32::from_ne_bytes(rest[8..12].try_into().expect("4 bytes"));
                if len < NLMSG_HDRLEN || len > rest.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "truncated netlink message",
                    ));
                }
                let body = &rest[NLMSG_HDRLEN..len];
                rest = &rest[align4(len).min(rest.len())..];
                if mseq != seq {
                    continue;
                }
                match kind {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        let errno = i32::from_ne_bytes(
                            body.get(0..4)
                                .ok_or_else(|| {
                                    io::Error::new(io::ErrorKind::InvalidData, "short ack")
                                })?
                                .try_into()
                                .expect("4 bytes"),
                        );
                        if errno == 0 {
                            return Ok(out);
                        }
                        return Err(io::Error::from_raw_os_error(-errno));
                    }
                    k if Some(k) == want => out.push(body.to_vec()),
                    _ => {}
                }
            }
        }
    }

    /// The link named `name`, if there is one.
    pub(crate) fn link(&mut self, name: &str) -> io::Result<Option<Link>> {
        let mut cname = name.as_bytes().to_vec();
        cname.push(0);
        let msg = Msg::new(RTM_GETLINK, NLM_F_ACK)
            .ifinfomsg(0, 0, 0)
            .attr(IFLA_IFNAME, &cname);
        match self.request(msg, Some(RTM_NEWLINK)) {
            Ok(bodies) => Ok(bodies.first().and_then(|b| {
                (b.len() >= IFINFOMSG_LEN).then(|| Link {
                    index: u32::from_ne_bytes(b[4..8].try_into().expect("4 bytes")),
                    up: u32::from_ne_bytes(b[8..12].try_into().expect("4 bytes")) & IFF_UP != 0,
                })
            })),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Create a link of `kind` (`dummy`, `ifb`) named `name`.
    pub(crate) fn create_link(&mut self, name: &str, kind: &str) -> io::Result<()> {
        let mut cname = name.as_bytes().to_vec();
        cname.push(0);
        let info = Msg { buf: Vec::new() }
            .attr(IFLA_INFO_KIND, kind.as_bytes())
            .buf;
        let msg = Msg::new(RTM_NEWLINK, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)
            .ifinfomsg(0, 0, 0)
            .attr(IFLA_IFNAME, &cname)
            .attr(IFLA_LINKINFO | NLA_F_NESTED, &info);
        self.request(msg, None).map(drop)
    }

    /// Bring a link up: local addresses on a link that is down are not in the local table.
    pub(crate) fn set_up(&mut self, index: u32) -> io::Result<()> {
        let msg = Msg::new(RTM_NEWLINK, NLM_F_ACK).ifinfomsg(index, IFF_UP, IFF_UP);
        self.request(msg, None).map(drop)
    }

    pub(crate) fn delete_link(&mut self, index: u32) -> io::Result<()> {
        let msg = Msg::new(RTM_DELLINK, NLM_F_ACK).ifinfomsg(index, 0, 0);
        self.request(msg, None).map(drop)
    }

    /// The addresses on link `index`.
    pub(crate) fn addresses(&mut self, index: u32) -> io::Result<Vec<IpAddr>> {
        let msg = Msg::new(RTM_GETADDR, NLM_F_DUMP).ifaddrmsg(0, 0, 0, 0);
        let mut out = Vec::new();
        for b in self.request(msg, Some(RTM_NEWADDR))? {
            if b.len() < IFADDRMSG_LEN
                || u32::from_ne_bytes(b[4..8].try_into().expect("4 bytes")) != index
            {
                continue;
            }
            // IFA_LOCAL is the address itself on IPv4 (IFA_ADDRESS is the peer on
            // point-to-point links); IPv6 has only IFA_ADDRESS.
            let mut local = None;
            let mut address = None;
            for (kind, data) in attrs(&b[IFADDRMSG_LEN..]) {
                let ip = match data.len() {
                    4 => IpAddr::from(<[u8; 4]>::try_from(data).expect("4 bytes")),
                    16 => IpAddr::from(<[u8; 16]>::try_from(data).expect("16 bytes")),
                    _ => continue,
                };
                match kind {
                    IFA_LOCAL => local = Some(ip),
                    IFA_ADDRESS => address = Some(ip),
                    _ => {}
                }
            }
            if let Some(ip) = local.or(address) {
                out.push(ip);
            }
        }
        Ok(out)
    }

    /// Add `ip` as a /32 (/128) to link `index`; an address already there is fine.
    pub(crate) fn add_address(&mut self, index: u32, ip: IpAddr) -> io::Result<()> {
        let (family, prefix, bytes) = ip_bytes(ip);
        let flags = if ip.is_ipv6() { IFA_F_NODAD } else { 0 };
        let msg = Msg::new(RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)
            .ifaddrmsg(family, prefix, flags, index)
            .attr(IFA_LOCAL, &bytes)
            .attr(IFA_ADDRESS, &bytes);
        match self.request(msg, None) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            r => r.map(drop),
        }
    }

    /// Remove `ip` from link `index`; an address already gone is fine.
    pub(crate) fn delete_address(&mut self, index: u32, ip: IpAddr) -> io::Result<()> {
        let (family, prefix, bytes) = ip_bytes(ip);
        let msg = Msg::new(RTM_DELADDR, NLM_F_ACK)
            .ifaddrmsg(family, prefix, 0, index)
            .attr(IFA_LOCAL, &bytes)
            .attr(IFA_ADDRESS, &bytes);
        match self.request(msg, None) {
            Err(e) if matches!(e.raw_os_error(), Some(libc::EADDRNOTAVAIL | libc::ENODEV)) => {
                Ok(())
            }
            r => r.map(drop),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_laid_out_as_rtnetlink_wants() {
        let m = Msg::new(RTM_NEWADDR, NLM_F_ACK)
            .ifaddrmsg(libc::AF_INET as u8, 32, 0, 7)
            .attr(IFA_LOCAL, &[169, 254, 20, 10])
            .finish(9);
        assert_eq!(m.len(), NLMSG_HDRLEN + IFADDRMSG_LEN + 8);
        assert_eq!(
            u32::from_ne_bytes(m[0..4].try_into().unwrap()) as usize,
            m.len()
        );
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), RTM_NEWADDR);
        assert_eq!(u16::from_ne_bytes([m[6], m[7]]), NLM_F_ACK | NLM_F_REQUEST);
        assert_eq!(u32::from_ne_bytes(m[8..12].try_into().unwrap()), 9);
        let body = &m[NLMSG_HDRLEN..];
        assert_eq!(u32::from_ne_bytes(body[4..8].try_into().unwrap()), 7);
        let a: Vec<_> = attrs(&body[IFADDRMSG_LEN..]).collect();
        assert_eq!(a, vec![(IFA_LOCAL, &[169u8, 254, 20, 10][..])]);
        // Attributes are padded to 4 bytes; a name of 12 bytes plus NUL takes 20.
        let m = Msg { buf: Vec::new() }.attr(IFLA_IFNAME, b"nodelocaldns\0");
        assert_eq!(m.buf.len(), 20);
        assert_eq!(attrs(&m.buf).next().unwrap().1, b"nodelocaldns\0");
    }

    #[test]
    fn truncated_attributes_end_the_walk() {
        assert_eq!(attrs(&[8, 0, 1, 0, 1, 2]).count(), 0);
        assert_eq!(attrs(&[2, 0, 1, 0]).count(), 0);
    }
}
