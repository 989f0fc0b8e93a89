//! A record in zone-file text (RFC 1035 §5.1), as CoreDNS's templates write them:
//! `OWNER [TTL] [CLASS] TYPE RDATA`. Names without a trailing dot are taken as absolute, as
//! miekg/dns's `NewRR` does with its default origin (the root); a missing TTL is 3600, its
//! default too. The RDATA is read by hickory-proto's zone-file reader.

use std::str::FromStr;

use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

/// miekg/dns's TTL for a record text without one.
const DEFAULT_TTL: u32 = 3600;

/// Parse one record text.
pub(crate) fn parse(text: &str) -> Result<Record, String> {
    let mut rest = text.trim_start();
    let owner = next_word(&mut rest).ok_or_else(|| format!("empty record {text:?}"))?;
    let mut ttl = None;
    let mut class = None;
    let rtype = loop {
        let w = next_word(&mut rest).ok_or_else(|| {
            format!("{text:?} is not a record: no type after the owner name (OWNER [TTL] [CLASS] TYPE DATA)")
        })?;
        if ttl.is_none() && w.bytes().all(|b| b.is_ascii_digit()) {
            ttl = Some(
                w.parse::<u32>()
                    .map_err(|_| format!("{text:?}: TTL {w} is too large"))?,
            );
            continue;
        }
        if class.is_none()
            && let Some(c) = class_of(w)
        {
            class = Some(c);
            continue;
        }
        break RecordType::from_str(&w.to_ascii_uppercase())
            .map_err(|_| format!("{text:?}: {w:?} is not a record type"))?;
    };
    let mut name =
        Name::from_ascii(owner).map_err(|e| format!("{text:?}: owner {owner:?}: {e}"))?;
    name.set_fqdn(true);
    let mut rdata = RData::try_from_str(rtype, rest.trim())
        .map_err(|e| format!("{text:?}: {rtype} data: {e}"))?;
    absolute(&mut rdata);
    let mut r = Record::from_rdata(name, ttl.unwrap_or(DEFAULT_TTL), rdata);
    r.dns_class = class.unwrap_or(DNSClass::IN);
    Ok(r)
}

fn next_word<'a>(rest: &mut &'a str) -> Option<&'a str> {
    let s = rest.trim_start();
    if s.is_empty() {
        return None;
    }
    let end = s.find(char::is_whitespace).unwrap_or(s.len());
    *rest = &s[end..];
    Some(&s[..end])
}

fn class_of(w: &str) -> Option<DNSClass> {
    Some(match w.to_ascii_uppercase().as_str() {
        "IN" => DNSClass::IN,
        "CH" => DNSClass::CH,
        "HS" => DNSClass::HS,
        "NONE" => DNSClass::NONE,
        "ANY" => DNSClass::ANY,
        _ => return None,
    })
}

/// Names in RDATA without a trailing dot are absolute (the root is the origin).
fn absolute(r: &mut RData) {
    fn fq(n: &mut Name) {
        n.set_fqdn(true);
    }
    match r {
        RData::CNAME(c) => fq(&mut c.0),
        RData::NS(n) => fq(&mut n.0),
        RData::PTR(p) => fq(&mut p.0),
        RData::MX(m) => fq(&mut m.exchange),
        RData::SRV(s) => fq(&mut s.target),
        RData::SOA(s) => {
            fq(&mut s.mname);
            fq(&mut s.rname);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_as_coredns_templates_write_them() {
        let r = parse("ip-10-95-12-8.example. 60 IN A 10.95.12.8").unwrap();
        assert_eq!(r.to_string(), "ip-10-95-12-8.example. 60 IN A 10.95.12.8");
        let r = parse("invalid. 60 IN SOA a.invalid. b.invalid. (1 60 60 60 60)").unwrap();
        assert_eq!(r.record_type(), RecordType::SOA);
        let r = parse("example.net 60 IN CNAME target.example.com").unwrap();
        assert_eq!(
            r.to_string(),
            "example.net. 60 IN CNAME target.example.com."
        );
        // No TTL (miekg's default 3600), class after TTL or before it, CH class.
        let r = parse("ns0.example. IN A 203.0.113.8").unwrap();
        assert_eq!(r.ttl, 3600);
        let r = parse("x.coredns.invalid. 60 CH TXT \"test\"").unwrap();
        assert_eq!(r.dns_class, DNSClass::CH);
        let r = parse("ip.example. 60 MX 10 ip.example.").unwrap();
        assert_eq!(r.record_type(), RecordType::MX);
        // Not records: CoreDNS's NonRRTemplate case, a bad type, bad data.
        assert!(parse("test.example.").is_err());
        assert!(parse("test.example. 60 IN FOO 1").is_err());
        assert!(parse("test.example. 60 IN A 10.0.0.300").is_err());
    }
}
