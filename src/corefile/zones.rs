//! Zones as a Corefile names them: server block keys (`.:53`, `dns://corp.example:53`,
//! `10.0.0.0/8`) and zone arguments of plugins (`kubernetes cluster.local in-addr.arpa`,
//! `forward corp.example ...`, `fallthrough`). Names are checked by the one validator,
//! [`crate::names::parse_domain`].

use std::fmt;

use super::CorefileError;
use super::parser::ServerBlock;
use crate::names::parse_domain;

/// A zone argument: the root `.`, or a domain (lowercase, no trailing dot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Zone {
    Root,
    Name(String),
}

/// Why a zone argument is not a zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum BadZone {
    /// A network that does not map onto one reverse zone: clusterdns could not carry it over.
    Network,
    /// Not a domain name at all (the reason).
    Name(String),
}

impl fmt::Display for BadZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadZone::Network => f.write_str(
                "only octet-aligned IPv4 networks (/8, /16, /24, /32) convert to a reverse zone; write the in-addr.arpa or ip6.arpa zone instead",
            ),
            BadZone::Name(e) => f.write_str(e),
        }
    }
}

/// A zone as CoreDNS normalises one: `.` (or nothing) is the root, a network such as
/// `10.0.0.0/8` is its reverse zone, anything else a domain name.
pub(super) fn parse_zone(s: &str) -> Result<Zone, BadZone> {
    let name = if s.contains('/') {
        cidr_to_reverse_zone(s).ok_or(BadZone::Network)?
    } else {
        s.to_string()
    };
    if name.trim_end_matches('.').is_empty() {
        return Ok(Zone::Root);
    }
    parse_domain(&name).map(Zone::Name).map_err(BadZone::Name)
}

/// `10.0.0.0/8` → `10.in-addr.arpa`, for networks on octet boundaries.
fn cidr_to_reverse_zone(s: &str) -> Option<String> {
    let (ip, bits) = s.split_once('/')?;
    let ip: std::net::Ipv4Addr = ip.parse().ok()?;
    let bits: u8 = bits.parse().ok()?;
    if !bits.is_multiple_of(8) || bits == 0 || bits > 32 {
        return None;
    }
    let octets = ip.octets();
    let n = (bits / 8) as usize;
    let mut labels: Vec<String> = octets[..n].iter().rev().map(|o| o.to_string()).collect();
    labels.push("in-addr.arpa".into());
    Some(labels.join("."))
}

/// A server block's zone (`.` for the root) and port.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Key {
    pub(super) zone: String,
    pub(super) port: u16,
}

impl Key {
    pub(super) fn is_root(&self) -> bool {
        self.zone == "."
    }
}

/// One key of a server block, e.g. `.:53`, `corp.example`, `dns://10.0.0.0/8:53`.
pub(super) fn parse_key(raw: &str, block: &ServerBlock) -> Result<Key, CorefileError> {
    let unsupported = |reason: String| CorefileError::Unsupported {
        at: block.at.clone(),
        block: block.label(),
        directive: "server block".into(),
        option: None,
        reason,
    };
    let syntax = |message: String| CorefileError::Syntax {
        at: block.at.clone(),
        message: format!("`{raw}`: {message}"),
    };
    let mut s = raw.to_ascii_lowercase();
    if let Some((scheme, rest)) = s.split_once("://") {
        if scheme != "dns" {
            return Err(unsupported(format!(
                "`{raw}` serves DNS over {scheme}:// (TLS, HTTPS, gRPC or QUIC); clusterdns serves plain DNS over UDP and TCP only"
            )));
        }
        s = rest.to_string();
    }
    let (zone, port) = match s.rsplit_once(':') {
        Some((z, p)) => {
            let port: u16 = p
                .parse()
                .map_err(|_| syntax(format!("{p:?} is not a port")))?;
            (z, port)
        }
        None => (s.as_str(), 53),
    };
    let zone = match parse_zone(zone) {
        Ok(Zone::Root) => ".".to_string(),
        Ok(Zone::Name(z)) => z,
        Err(BadZone::Network) => return Err(unsupported(format!("`{raw}`: {}", BadZone::Network))),
        Err(BadZone::Name(e)) => return Err(syntax(e)),
    };
    Ok(Key { zone, port })
}

#[cfg(test)]
mod tests {
    use super::super::Pos;
    use super::*;

    /// A server block at `line`, for the position in key errors.
    fn block_at_line(line: usize) -> ServerBlock {
        ServerBlock {
            keys: vec![],
            directives: vec![],
            at: Pos {
                file: "Corefile".into(),
                line,
            },
        }
    }

    #[test]
    fn keys_and_reverse_cidrs() {
        assert_eq!(
            cidr_to_reverse_zone("10.0.0.0/8").unwrap(),
            "10.in-addr.arpa"
        );
        assert_eq!(
            cidr_to_reverse_zone("172.16.0.0/16").unwrap(),
            "16.172.in-addr.arpa"
        );
        assert!(cidr_to_reverse_zone("10.0.0.0/12").is_none());
    }

    #[test]
    fn zone_arguments() {
        assert_eq!(parse_zone("."), Ok(Zone::Root));
        assert_eq!(parse_zone(""), Ok(Zone::Root));
        assert_eq!(
            parse_zone("Corp.Example."),
            Ok(Zone::Name("corp.example".into()))
        );
        assert_eq!(
            parse_zone("10.1.0.0/16"),
            Ok(Zone::Name("1.10.in-addr.arpa".into()))
        );
        assert_eq!(parse_zone("10.0.0.0/12"), Err(BadZone::Network));
        assert!(matches!(parse_zone("corp..example"), Err(BadZone::Name(_))));
    }

    #[test]
    fn server_block_keys() {
        let b = block_at_line(3);
        assert_eq!(
            parse_key(".:53", &b).unwrap(),
            Key {
                zone: ".".into(),
                port: 53
            }
        );
        assert_eq!(
            parse_key("dns://Corp.Example.:5353", &b).unwrap(),
            Key {
                zone: "corp.example".into(),
                port: 5353
            }
        );
        assert_eq!(parse_key("10.0.0.0/8", &b).unwrap().zone, "10.in-addr.arpa");
        let e = parse_key("tls://.:853", &b).unwrap_err();
        assert!(matches!(e, CorefileError::Unsupported { .. }), "{e}");
        let e = parse_key("10.0.0.0/12:53", &b).unwrap_err();
        assert!(matches!(e, CorefileError::Unsupported { .. }), "{e}");
        let e = parse_key("corp.example:dns", &b).unwrap_err();
        assert!(e.to_string().starts_with("Corefile:3: "), "{e}");
        let e = parse_key("corp..example:53", &b).unwrap_err();
        assert!(matches!(e, CorefileError::Syntax { .. }), "{e}");
    }
}
