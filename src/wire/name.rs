//! Domain names in wire form: reading them out of messages (following compression pointers
//! with checks, or only stepping over them), writing them from text, and the small conversions
//! the server and the resolver need (lowercase, presentation form, reverse names).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::decoder::{Decoder, WireError};

/// RFC 1035 §3.1: "the total length of a domain name (i.e., label octets and label length
/// octets) is restricted to 255 octets or less."
pub const MAX_NAME: usize = 255;

/// Read the (possibly compressed) name at the decoder's position into `out`, uncompressed and
/// with its case kept; returns its length and whether it used a compression pointer. The
/// decoder ends after the name's bytes at its original place.
///
/// RFC 1035 §4.1.4: a pointer refers to "a prior occurrence of the same name". Each pointer
/// must point before the start of the run of labels it ends, so every jump goes strictly
/// backwards and a chain of pointers always ends (no hop counting needed); and the run it points
/// to must end (in the root or another pointer) before that start, so that no byte is read both
/// as part of the prior name and of the name that points to it (hickory-proto refuses such a
/// name too, `LabelOverlapsWithOther`; a question read here must be the one every other parser
/// reads). Labels of the reserved types 0x40 and 0x80 (RFC 6891 §5 retired the extended ones)
/// are refused.
///
/// A pointer into the header is followed: a client's question can only be compressed that way
/// (it is the first name of the message; the header's zero bytes spell the root), and it is
/// read once and rebuilt in full. Messages whose header is rewritten afterwards use
/// [`read_name_past_header`].
pub fn read_name(
    d: &mut Decoder<'_>,
    out: &mut [u8; MAX_NAME],
) -> Result<(usize, bool), WireError> {
    read_name_above(d, out, 0)
}

/// [`read_name`], refusing pointers into the header: for an upstream's reply, whose ID (and
/// flags) the resolver rewrites before a client reads it, so a name spelled by header bytes
/// would change under it (found by fuzzing the resolver with a hostile upstream).
pub fn read_name_past_header(
    d: &mut Decoder<'_>,
    out: &mut [u8; MAX_NAME],
) -> Result<(usize, bool), WireError> {
    read_name_above(d, out, super::HEADER_LEN)
}

/// [`read_name`] with pointers to offsets below `floor` refused.
fn read_name_above(
    d: &mut Decoder<'_>,
    out: &mut [u8; MAX_NAME],
    floor: usize,
) -> Result<(usize, bool), WireError> {
    let msg = d.message();
    let start = d.pos();
    let mut p = start;
    let mut run_start = start;
    // Where the current run must end: the start of the run that pointed to it.
    let mut limit = usize::MAX;
    let mut n = 0usize;
    let mut end: Option<usize> = None;
    loop {
        let len = *msg.get(p).ok_or(WireError::Short)? as usize;
        match len & 0xC0 {
            0x00 => {
                if len == 0 {
                    if p >= limit {
                        return Err(WireError::Pointer);
                    }
                    if n + 1 > MAX_NAME {
                        return Err(WireError::BadName);
                    }
                    out[n] = 0;
                    n += 1;
                    let after = end.unwrap_or(p + 1);
                    d.skip(after - start)?;
                    return Ok((n, end.is_some()));
                }
                // Room for this label and at least the root after it.
                if n + 1 + len + 1 > MAX_NAME {
                    return Err(WireError::BadName);
                }
                if p + 1 + len >= limit {
                    return Err(WireError::Pointer);
                }
                let label = msg.get(p + 1..p + 1 + len).ok_or(WireError::Short)?;
                out[n] = len as u8;
                out[n + 1..n + 1 + len].copy_from_slice(label);
                n += 1 + len;
                p += 1 + len;
            }
            0xC0 => {
                let lo = *msg.get(p + 1).ok_or(WireError::Short)? as usize;
                let target = ((len & 0x3F) << 8) | lo;
                if end.is_none() {
                    end = Some(p + 2);
                }
                if target >= run_start || target < floor || p + 2 > limit {
                    return Err(WireError::Pointer);
                }
                limit = run_start;
                run_start = target;
                p = target;
            }
            _ => return Err(WireError::BadName),
        }
    }
}

/// Step over the name at the decoder's position without following a pointer: enough to find
/// record boundaries. Label types and the length of the uncompressed part are checked.
pub fn skip_name(d: &mut Decoder<'_>) -> Result<(), WireError> {
    let mut n = 0usize;
    loop {
        let len = d.u8()? as usize;
        match len & 0xC0 {
            0x00 if len == 0 => return Ok(()),
            0x00 => {
                n += 1 + len;
                if n + 1 > MAX_NAME {
                    return Err(WireError::BadName);
                }
                d.skip(len)?;
            }
            0xC0 => return d.skip(1),
            _ => return Err(WireError::BadName),
        }
    }
}

/// Length of the uncompressed name at the start of `b` (ours: names in replies we wrote, or
/// questions already checked); None when it is cut short or holds a pointer.
pub fn uncompressed_len(b: &[u8]) -> Option<usize> {
    let mut p = 0;
    loop {
        let len = *b.get(p)? as usize;
        if len == 0 {
            return Some(p + 1);
        }
        if len & 0xC0 != 0 {
            return None;
        }
        p += 1 + len;
    }
}

/// Encode a dotted name (`a.b.c` or `a.b.c.`) in wire form, appending to `out`; case is kept.
pub fn encode_name(name: &str, out: &mut Vec<u8>) -> Result<(), String> {
    let t = name.trim_end_matches('.');
    let start = out.len();
    if !t.is_empty() {
        for label in t.split('.') {
            if label.is_empty() || label.len() > 63 {
                return Err(format!("bad label in {name:?}"));
            }
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
    }
    out.push(0);
    if out.len() - start > MAX_NAME {
        return Err(format!("{name:?} is longer than 255 bytes"));
    }
    Ok(())
}

/// A dotted name (with or without the trailing dot) in wire form, lowercased.
pub fn dotted_to_wire(name: &str) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::with_capacity(name.len() + 2);
    encode_name(name, &mut out).map_err(|_| WireError::BadName)?;
    out.make_ascii_lowercase();
    Ok(out)
}

/// Wire-form labels without the terminating root byte: `svc1.testns.svc` → `\x04svc1\x06testns\x03svc`.
pub fn encode_labels(labels: &[&str]) -> Box<[u8]> {
    let mut out = Vec::with_capacity(labels.iter().map(|l| l.len() + 1).sum());
    for l in labels {
        out.push(l.len() as u8);
        out.extend_from_slice(l.as_bytes());
    }
    out.into_boxed_slice()
}

/// Lowercase `src` (a wire-format name) into `dst`. Length bytes (at most 63) are below `b'A'`,
/// so the whole name can be lowercased byte by byte.
#[inline]
pub fn lower_into(src: &[u8], dst: &mut [u8]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = s.to_ascii_lowercase();
    }
}

/// Case-insensitive comparison of two byte strings (wire names compare correctly: length
/// bytes are below 64 and unaffected by ASCII lowercasing).
#[inline]
pub fn eq_ignore_case(a: &[u8], b: &[u8]) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Does the wire name `name` equal `suffix` or end with it at a label boundary? Both must be
/// in the same case.
pub fn in_domain(name: &[u8], suffix: &[u8]) -> bool {
    let mut pos = 0;
    while pos < name.len() {
        if name.len() - pos < suffix.len() {
            return false;
        }
        if &name[pos..] == suffix {
            return true;
        }
        pos += 1 + name[pos] as usize;
    }
    false
}

/// Human-readable form of a wire name, for logs: `svc1.testns.svc.cluster.local.`
///
/// Case kept, odd bytes escaped, trailing dot. Not [`wire_to_dotted`], which lowercases,
/// refuses names with such bytes (hosts-file lookups) and drops the trailing dot.
pub fn display_name(wire: &[u8]) -> String {
    let mut s = String::new();
    let mut p = 0;
    while p < wire.len() {
        let len = wire[p] as usize;
        if len == 0 || p + 1 + len > wire.len() {
            break;
        }
        for &b in &wire[p + 1..p + 1 + len] {
            if b == b'.' || b == b'\\' {
                s.push('\\');
                s.push(b as char);
            } else if b.is_ascii_graphic() {
                s.push(b as char);
            } else {
                s.push_str(&format!("\\{b:03}"));
            }
        }
        s.push('.');
        p += 1 + len;
    }
    if s.is_empty() {
        s.push('.');
    }
    s
}

/// A wire name as lowercase dotted text without the trailing dot ("" for the root), written
/// into `buf`. None for names with bytes that cannot appear in a hosts file name.
pub fn wire_to_dotted<'b>(name: &[u8], buf: &'b mut [u8; 256]) -> Option<&'b str> {
    let mut pos = 0;
    let mut n = 0;
    loop {
        let len = *name.get(pos)? as usize;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        if n > 0 {
            buf[n] = b'.';
            n += 1;
        }
        for &c in name.get(pos + 1..pos + 1 + len)? {
            if c == b'.' || !c.is_ascii_graphic() || n >= 255 {
                return None;
            }
            buf[n] = c.to_ascii_lowercase();
            n += 1;
        }
        pos += 1 + len;
    }
    std::str::from_utf8(&buf[..n]).ok()
}

/// The address a reverse name stands for: `4.3.2.1.in-addr.arpa.` → 1.2.3.4, the 32-nibble
/// `ip6.arpa.` form → an IPv6 address (RFC 1035 §3.5, RFC 3596 §2.5). `qname` is a wire name;
/// the `in-addr`/`ip6`/`arpa` labels and hex digits match in any case. IPv4 octets are decimal
/// without leading zeros, at most 255. None for anything else, including partial names
/// (`2.1.in-addr.arpa.`).
pub fn reverse_ip(qname: &[u8]) -> Option<IpAddr> {
    const V4: &[u8] = b"\x07in-addr\x04arpa\x00";
    const V6: &[u8] = b"\x03ip6\x04arpa\x00";
    let n = qname.len();
    if n > V4.len() && qname[n - V4.len()..].eq_ignore_ascii_case(V4) {
        let addr = &qname[..n - V4.len()];
        let mut o = [0u8; 4];
        let mut p = 0;
        // Labels come least significant octet first.
        for i in (0..4).rev() {
            let len = *addr.get(p)? as usize;
            let digits = addr.get(p + 1..p + 1 + len)?;
            if len == 0 || len > 3 || (len > 1 && digits[0] == b'0') {
                return None;
            }
            let mut v = 0u16;
            for &d in digits {
                if !d.is_ascii_digit() {
                    return None;
                }
                v = v * 10 + u16::from(d - b'0');
            }
            o[i] = u8::try_from(v).ok()?;
            p += 1 + len;
        }
        return (p == addr.len()).then_some(IpAddr::V4(Ipv4Addr::from(o)));
    }
    if n == 64 + V6.len() && qname[64..].eq_ignore_ascii_case(V6) {
        let mut o = [0u8; 16];
        for i in 0..32 {
            // Nibbles come least significant first: label i is nibble 31 - i.
            if qname[2 * i] != 1 {
                return None;
            }
            let v = (qname[2 * i + 1] as char).to_digit(16)? as u8;
            let nib = 31 - i;
            o[nib / 2] |= if nib % 2 == 0 { v << 4 } else { v };
        }
        return Some(IpAddr::V6(Ipv6Addr::from(o)));
    }
    None
}

/// The reverse name of an address (the inverse of [`reverse_ip`]), wire form, lowercase:
/// 1.2.3.4 → `4.3.2.1.in-addr.arpa.`, an IPv6 address → its 32 nibbles under `ip6.arpa.`.
pub fn reverse_name(ip: IpAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(74);
    match ip {
        IpAddr::V4(a) => {
            for o in a.octets().iter().rev() {
                let t = o.to_string();
                out.push(t.len() as u8);
                out.extend_from_slice(t.as_bytes());
            }
            out.extend_from_slice(b"\x07in-addr\x04arpa\x00");
        }
        IpAddr::V6(a) => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            for o in a.octets().iter().rev() {
                out.extend_from_slice(&[1, HEX[(o & 0xF) as usize], 1, HEX[(o >> 4) as usize]]);
            }
            out.extend_from_slice(b"\x03ip6\x04arpa\x00");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_names_round_trip() {
        for s in [
            "10.96.0.10",
            "0.0.0.0",
            "255.1.20.3",
            "fd00::1",
            "2001:db8::abcd:1",
        ] {
            let ip: IpAddr = s.parse().unwrap();
            let n = reverse_name(ip);
            assert_eq!(reverse_ip(&n), Some(ip), "{s}");
        }
        assert_eq!(
            display_name(&reverse_name("10.96.0.1".parse().unwrap())),
            "1.0.96.10.in-addr.arpa."
        );
    }

    fn read(msg: &[u8], at: usize) -> Result<(String, usize, bool), WireError> {
        let mut d = Decoder::at(msg, at);
        let mut out = [0u8; MAX_NAME];
        let (n, c) = read_name(&mut d, &mut out)?;
        Ok((display_name(&out[..n]), d.pos(), c))
    }

    /// A message of `body` after a 12-byte header (names start at offset 12).
    fn msg(body: &[u8]) -> Vec<u8> {
        let mut m = vec![0u8; 12];
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn names_with_pointers() {
        // "example." at 12, "www" + pointer to 12 at 21.
        let m = msg(b"\x07example\x00\x03WwW\xC0\x0C");
        assert_eq!(read(&m, 12), Ok(("example.".into(), 21, false)));
        assert_eq!(read(&m, 21), Ok(("WwW.example.".into(), 27, true)));
        // A pointer to itself, forwards, or into the run it ends.
        assert_eq!(read(&msg(b"\xC0\x0C"), 12), Err(WireError::Pointer));
        assert_eq!(read(&msg(b"\x01a\xC0\x0C"), 12), Err(WireError::Pointer));
        assert_eq!(
            read(&msg(b"\x00\xC0\x0F\x01a\x00"), 13),
            Err(WireError::Pointer)
        );
        // Two pointers that would take turns: the second must point before the first target.
        let m = msg(b"\x01a\xC0\x11\x01b\xC0\x0C");
        assert_eq!(read(&m, 16), Err(WireError::Pointer));
        // A prior run that runs into the name pointing to it (found by fuzzing: a question
        // pointing into the header, whose bytes then ran on into the question itself).
        assert_eq!(read(&msg(b"\x03ab\xC0\x0C"), 15), Err(WireError::Pointer));
        assert_eq!(
            read(&msg(b"\x01a\x01b\xC0\x0C"), 16),
            Err(WireError::Pointer)
        );
        let m = msg(b"\x01a\x00\x01b\xC0\x0C\xC0\x0F");
        assert_eq!(read(&m, 19), Ok(("b.a.".into(), 21, true)));
        // Into the header: followed in a query, refused in an upstream's reply (found by
        // fuzzing: an owner name read from the upstream's ID, which the resolver rewrites).
        let mut m = b"\x01a\x00".to_vec();
        m.resize(12, 0);
        m.extend_from_slice(b"\xC0\x00");
        assert_eq!(read(&m, 12), Ok(("a.".into(), 14, true)));
        let mut out = [0u8; MAX_NAME];
        assert_eq!(
            read_name_past_header(&mut Decoder::at(&m, 12), &mut out),
            Err(WireError::Pointer)
        );
        // Reserved label types, cut-off names.
        assert_eq!(read(b"\x41a\x00", 0), Err(WireError::BadName));
        assert_eq!(read(b"\x05ab", 0), Err(WireError::Short));
        assert_eq!(read(b"\x01a\xC0", 0), Err(WireError::Short));
        // 255 octets at most, also when assembled from pointers.
        let mut long = Vec::new();
        for _ in 0..4 {
            long.push(62);
            long.extend_from_slice(&[b'x'; 62]);
        }
        long.push(0);
        assert_eq!(long.len(), 253);
        let mut m = msg(&long);
        assert!(read(&m, 12).is_ok());
        m.extend_from_slice(b"\x02ab\xC0\x0C");
        assert_eq!(read(&m, 265), Err(WireError::BadName));
    }

    #[test]
    fn skipping() {
        let mut d = Decoder::new(b"\x03www\xC0\x20rest");
        skip_name(&mut d).unwrap();
        assert_eq!(d.pos(), 6);
        assert_eq!(
            skip_name(&mut Decoder::new(b"\x80")),
            Err(WireError::BadName)
        );
        assert_eq!(
            skip_name(&mut Decoder::new(b"\x03ww")),
            Err(WireError::Short)
        );
        assert_eq!(uncompressed_len(b"\x01a\x00xyz"), Some(3));
        assert_eq!(uncompressed_len(b"\x01a\xC0\x00"), None);
    }

    fn rev(name: &str) -> Option<IpAddr> {
        let mut w = Vec::new();
        encode_name(name, &mut w).unwrap();
        reverse_ip(&w)
    }

    #[test]
    fn reverse_names() {
        assert_eq!(
            rev("4.3.2.1.in-addr.arpa."),
            Some("1.2.3.4".parse().unwrap())
        );
        assert_eq!(
            rev("1.0.0.10.IN-ADDR.Arpa"),
            Some("10.0.0.1".parse().unwrap())
        );
        assert_eq!(
            rev("255.0.0.0.in-addr.arpa"),
            Some("0.0.0.255".parse().unwrap())
        );
        for bad in [
            "4.3.2.in-addr.arpa",
            "5.4.3.2.1.in-addr.arpa",
            "in-addr.arpa",
            "arpa",
            ".",
            "4.3.2.01.in-addr.arpa",
            "4.3.2.256.in-addr.arpa",
            "4.3.2.1000.in-addr.arpa",
            "4.3.x.1.in-addr.arpa",
            "4.3.2.1.in-addr.arpa.example",
            "4.3.2.1.ip6.arpa",
        ] {
            assert_eq!(rev(bad), None, "{bad}");
        }
        let v6 = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa";
        assert_eq!(rev(v6), Some("2001:db8::1".parse().unwrap()));
        assert_eq!(
            rev(&v6.to_uppercase()),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(rev(&v6[2..]), None, "31 nibbles");
        assert_eq!(rev(&format!("0.{v6}")), None, "33 nibbles");
        assert_eq!(rev(&v6.replace("8.b.d", "8.bd")), None);
        assert_eq!(rev(&v6.replace("8.b.d", "8.g.d")), None);
        assert_eq!(rev(&v6.replace("ip6", "in-addr")), None);
    }

    #[test]
    fn dotted_forms() {
        let w = dotted_to_wire("Foo.Bar.").unwrap();
        assert_eq!(w, b"\x03foo\x03bar\x00");
        let mut buf = [0u8; 256];
        assert_eq!(wire_to_dotted(&w, &mut buf), Some("foo.bar"));
        assert_eq!(wire_to_dotted(b"\x03a b\x00", &mut buf), None);
        assert_eq!(display_name(b"\x03a.b\x01\x07\x00"), "a\\.b.\\007.");
        assert!(in_domain(
            &dotted_to_wire("a.corp.example").unwrap(),
            &dotted_to_wire("corp.example").unwrap()
        ));
        assert!(!in_domain(
            &dotted_to_wire("xcorp.example").unwrap(),
            &dotted_to_wire("corp.example").unwrap()
        ));
    }
}
