//! Who may transfer: the `transfer.allow` prefixes.

use std::net::IpAddr;

use crate::config::parse_prefix;

/// A list of address prefixes.
#[derive(Debug, Clone, Default)]
pub struct Acl(Vec<(IpAddr, u8)>);

impl Acl {
    /// From the config's prefixes (already validated; a bad one is an error here too).
    pub fn new(list: &[String]) -> Result<Acl, String> {
        list.iter()
            .map(|s| parse_prefix(s))
            .collect::<Result<Vec<_>, _>>()
            .map(Acl)
    }

    /// Whether `ip` is inside one of the prefixes (an IPv4-mapped IPv6 address counts as the
    /// IPv4 address).
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|&(net, len)| match (net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        })
    }

    /// Whether every address is allowed (a prefix of length 0): an open transfer.
    pub fn is_open(&self) -> bool {
        self.0.iter().any(|&(_, len)| len == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_their_addresses_only() {
        let acl = Acl::new(&["10.0.0.0/8".into(), "192.0.2.7".into(), "fd00::/8".into()]).unwrap();
        for yes in ["10.1.2.3", "192.0.2.7", "fd12::1", "::ffff:10.9.9.9"] {
            assert!(acl.allows(yes.parse().unwrap()), "{yes}");
        }
        for no in ["11.0.0.1", "192.0.2.8", "fe80::1", "127.0.0.1"] {
            assert!(!acl.allows(no.parse().unwrap()), "{no}");
        }
        assert!(!acl.is_open());
        let all = Acl::new(&["0.0.0.0/0".into()]).unwrap();
        assert!(all.allows("203.0.113.9".parse().unwrap()));
        assert!(!all.allows("::1".parse().unwrap()));
        assert!(all.is_open());
        assert!(Acl::new(&["10.0.0.0/33".into()]).is_err());
        assert!(!Acl::default().allows("127.0.0.1".parse().unwrap()));
    }
}
