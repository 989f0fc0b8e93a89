//! Domain names as configs and Corefiles write them (`cluster.local`, `corp.example.`): the one
//! validator every layer uses, below the config so that the config, the zone and the Corefile
//! converter can all call it without importing each other.

/// Validate and normalise a domain name from config (`cluster.local`, `corp.example.`):
/// lowercase, no trailing dot, labels of 1 to 63 bytes, at most 253 bytes.
///
/// RFC 1035 §2.3.4: "labels 63 octets or less", "names 255 octets or less" (in wire form, so 253
/// in dotted text). Labels keep to letters, digits, `-` and `_` (RFC 952/1123 host names, plus
/// the `_` of SRV-style labels such as `_tcp`), which is what Kubernetes names can hold.
pub fn parse_domain(s: &str) -> Result<String, String> {
    let t = s.trim().trim_end_matches('.');
    if t.is_empty() {
        return Err(format!(
            "{s:?} is not a domain name (the root is not allowed here)"
        ));
    }
    if t.len() > 253 {
        return Err(format!("{s:?} is longer than 253 bytes"));
    }
    for label in t.split('.') {
        if label.is_empty() {
            return Err(format!("{s:?} has an empty label"));
        }
        if label.len() > 63 {
            return Err(format!("{s:?} has a label longer than 63 bytes"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "{s:?} has a label with characters other than letters, digits, '-' and '_'"
            ));
        }
    }
    Ok(t.to_ascii_lowercase())
}

/// The longest zone served with an SOA record: 242 bytes of text, so that the SOA's
/// `hostmaster.<zone>` (11 bytes more, plus the first length byte and the root) stays within
/// the 255 bytes of a wire name (RFC 1035 §3.1). Names the zone builds from cluster objects
/// that pass 255 bytes are left out one by one instead (see `zone::build`): a limit on the
/// zone for those would forbid zones that serve every real cluster.
pub(crate) const MAX_SERVED_ZONE_LEN: usize = 242;

/// [`parse_domain`] for a zone clusterdns serves (the cluster zone, reverse zones): at most
/// [`MAX_SERVED_ZONE_LEN`] bytes, so that its own SOA can be written.
pub(crate) fn parse_served_zone(s: &str) -> Result<String, String> {
    let t = parse_domain(s)?;
    if t.len() > MAX_SERVED_ZONE_LEN {
        return Err(format!(
            "{s:?} is longer than {MAX_SERVED_ZONE_LEN} bytes: its SOA's hostmaster.<zone> would \
             pass DNS's limit of 255"
        ));
    }
    Ok(t)
}

/// Whether `name` is `zone` or a name below it; both normalised ([`parse_domain`]'s form).
pub(crate) fn in_zone(name: &str, zone: &str) -> bool {
    name.strip_suffix(zone)
        .is_some_and(|head| head.is_empty() || head.ends_with('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_normalised() {
        assert_eq!(parse_domain("Cluster.Local.").unwrap(), "cluster.local");
        assert_eq!(
            parse_domain(" _tcp.corp-1.example ").unwrap(),
            "_tcp.corp-1.example"
        );
    }

    #[test]
    fn bad_domains_are_refused() {
        for (bad, why) in [
            ("", "root"),
            (".", "root"),
            ("corp..example", "empty label"),
            (&format!("{}.example", "a".repeat(64)), "63"),
            (&format!("{}a", "a.".repeat(127)), "253"),
            ("bad name.example", "characters"),
            ("ünï.example", "characters"),
        ] {
            let e = parse_domain(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        // The longest legal name: 253 bytes.
        let longest = format!("{}a", "a.".repeat(126));
        assert_eq!(longest.len(), 253);
        assert!(parse_domain(&longest).is_ok());
    }

    #[test]
    fn served_zones_leave_room_for_the_soa() {
        let label = "a".repeat(60);
        let at_max = format!("{label}.{label}.{label}.{}", "b".repeat(59));
        assert_eq!(at_max.len(), MAX_SERVED_ZONE_LEN);
        assert_eq!(parse_served_zone(&at_max).unwrap(), at_max);
        // hostmaster.<zone> in wire form: 11 + the zone's text + 2.
        assert_eq!(11 + MAX_SERVED_ZONE_LEN + 2, 255);
        let e = parse_served_zone(&format!("x{at_max}")).unwrap_err();
        assert!(e.contains("hostmaster"), "{e}");
        // Still a domain: a stub domain or fallthrough zone of that length is fine.
        assert!(parse_domain(&format!("x{at_max}")).is_ok());
    }

    #[test]
    fn zone_membership_is_by_whole_labels() {
        assert!(in_zone("cluster.local", "cluster.local"));
        assert!(in_zone("svc.cluster.local", "cluster.local"));
        assert!(!in_zone("mycluster.local", "cluster.local"));
        assert!(!in_zone("local", "cluster.local"));
    }
}
