//! Wire-level DNS helpers for the resolver: just enough parsing to key, validate, cache and
//! truncate messages without building an owned `Message` on the hot path.
//!
//! Everything here works on raw bytes. Names in questions must be uncompressed (they always are
//! in real queries); names in records may use compression pointers, which are skipped but never
//! followed, except where a name has to be read (PTR targets are written, never read).
//!
//! The primitives shared with the server (record types, rcodes, class, header and OPT sizes,
//! name encoding, reverse names, the OPT record) live in [`crate::wire`]; what stays here is
//! what the resolver alone needs, or needs differently (see [`Query`]).

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::wire::{CLASS_IN, HEADER_LEN, OPT_LEN, rcode, rtype};

// Header flag bits, byte 2.
pub const F_QR: u8 = 0x80;
pub const F_AA: u8 = 0x04;
pub const F_TC: u8 = 0x02;
pub const F_RD: u8 = 0x01;
// Header flag bits, byte 3.
pub const F_RA: u8 = 0x80;
pub const F_AD: u8 = 0x20;
pub const F_CD: u8 = 0x10;

/// The UDP payload size clusterdns advertises in the OPT records it writes itself, and the cap on
/// the size it passes on to upstreams (DNS flag day 2020).
pub const EDNS_SIZE: u16 = 1232;

/// Why a message could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    Short,
    BadName,
    NotOneQuestion,
    NotQuery,
    Pointer,
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WireError::Short => "message too short",
            WireError::BadName => "bad domain name",
            WireError::NotOneQuestion => "not exactly one question",
            WireError::NotQuery => "not a query",
            WireError::Pointer => "compressed question name",
        })
    }
}

#[inline]
pub fn u16_at(m: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([m[i], m[i + 1]])
}

#[inline]
pub fn u32_at(m: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([m[i], m[i + 1], m[i + 2], m[i + 3]])
}

#[inline]
pub fn put_u16(m: &mut [u8], i: usize, v: u16) {
    m[i..i + 2].copy_from_slice(&v.to_be_bytes());
}

#[inline]
pub fn put_u32(m: &mut [u8], i: usize, v: u32) {
    m[i..i + 4].copy_from_slice(&v.to_be_bytes());
}

/// The EDNS part of a message (its OPT record), with where it sits: the offsets let the
/// resolver rewrite the payload size and strip options in place, which is why this is not
/// [`crate::wire::Edns`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edns {
    /// Offset of the OPT record's owner name.
    pub offset: usize,
    /// Offset just past the OPT record.
    pub end: usize,
    /// Offset of the UDP payload size field (the OPT record's class).
    pub size_off: usize,
    pub udp_size: u16,
    pub ext_rcode: u8,
    pub version: u8,
    pub do_bit: bool,
}

/// A parsed query: header fields, the one question, and EDNS.
///
/// Kept apart from the server's [`crate::wire::Query`] on purpose. This one borrows the message
/// (no copy of the name) and records offsets the resolver works with: `qname_end` and
/// `question_end` for the cache key, the upstream reply check and the question echoed into
/// forwarded replies, and the OPT record's position ([`Edns`]) for rewriting before forwarding.
/// It also parses differently: the question name must be uncompressed, the first OPT wins, and
/// the opcode is left to the caller. The server's copies the name out (raw and lowercased),
/// follows compression, and answers FORMERR/NOTIMP itself.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    pub msg: &'a [u8],
    pub id: u16,
    pub opcode: u8,
    pub rd: bool,
    pub cd: bool,
    pub ad: bool,
    /// End of the question name (12 + its wire length).
    pub qname_end: usize,
    /// End of the question (qname, type, class).
    pub question_end: usize,
    pub qtype: u16,
    pub qclass: u16,
    pub edns: Option<Edns>,
}

impl<'a> Query<'a> {
    /// The question name, wire format, as sent.
    pub fn qname(&self) -> &'a [u8] {
        &self.msg[HEADER_LEN..self.qname_end]
    }
    /// The question bytes (name, type, class), as sent.
    pub fn question(&self) -> &'a [u8] {
        &self.msg[HEADER_LEN..self.question_end]
    }
    pub fn do_bit(&self) -> bool {
        self.edns.is_some_and(|e| e.do_bit)
    }
}

/// Parse an uncompressed name starting at `pos`; returns the offset just past it.
pub fn uncompressed_name_end(m: &[u8], mut pos: usize) -> Result<usize, WireError> {
    let start = pos;
    loop {
        let len = *m.get(pos).ok_or(WireError::Short)? as usize;
        if len == 0 {
            pos += 1;
            break;
        }
        if len & 0xC0 == 0xC0 {
            return Err(WireError::Pointer);
        }
        if len > 63 {
            return Err(WireError::BadName);
        }
        pos += 1 + len;
        if pos > m.len() {
            return Err(WireError::Short);
        }
    }
    if pos - start > 255 {
        return Err(WireError::BadName);
    }
    Ok(pos)
}

/// Skip a possibly compressed name at `pos`; returns the offset just past it. A pointer ends the
/// name and is not followed (the server's `crate::wire` reader follows and checks them).
pub fn skip_name(m: &[u8], mut pos: usize) -> Result<usize, WireError> {
    let mut n = 0;
    loop {
        let len = *m.get(pos).ok_or(WireError::Short)? as usize;
        if len == 0 {
            return Ok(pos + 1);
        }
        match len & 0xC0 {
            0xC0 => {
                if pos + 2 > m.len() {
                    return Err(WireError::Short);
                }
                return Ok(pos + 2);
            }
            0 => {
                pos += 1 + len;
                n += 1 + len;
                if pos > m.len() {
                    return Err(WireError::Short);
                }
                if n > 255 {
                    return Err(WireError::BadName);
                }
            }
            _ => return Err(WireError::BadName),
        }
    }
}

/// Read a possibly compressed name at `pos` as lowercase dotted text with a trailing dot.
pub fn read_name_lower(m: &[u8], mut pos: usize) -> Result<String, WireError> {
    let mut out = String::new();
    let mut jumps = 0;
    loop {
        let len = *m.get(pos).ok_or(WireError::Short)? as usize;
        if len == 0 {
            break;
        }
        if len & 0xC0 == 0xC0 {
            let b = *m.get(pos + 1).ok_or(WireError::Short)? as usize;
            pos = ((len & 0x3F) << 8) | b;
            jumps += 1;
            if jumps > 64 {
                return Err(WireError::BadName);
            }
            continue;
        }
        if len > 63 {
            return Err(WireError::BadName);
        }
        let label = m.get(pos + 1..pos + 1 + len).ok_or(WireError::Short)?;
        for &c in label {
            out.push(c.to_ascii_lowercase() as char);
        }
        out.push('.');
        if out.len() > 255 {
            return Err(WireError::BadName);
        }
        pos += 1 + len;
    }
    if out.is_empty() {
        out.push('.');
    }
    Ok(out)
}

/// Skip one resource record at `pos`; returns (type, ttl offset, rdata offset, end).
#[inline]
pub fn skip_record(m: &[u8], pos: usize) -> Result<(u16, usize, usize, usize), WireError> {
    let p = skip_name(m, pos)?;
    if p + 10 > m.len() {
        return Err(WireError::Short);
    }
    let rtype = u16_at(m, p);
    let rdlen = u16_at(m, p + 8) as usize;
    let end = p + 10 + rdlen;
    if end > m.len() {
        return Err(WireError::Short);
    }
    Ok((rtype, p + 4, p + 10, end))
}

fn parse_opt(m: &[u8], start: usize, p_after_name: usize, end: usize) -> Edns {
    let p = p_after_name;
    Edns {
        offset: start,
        end,
        size_off: p + 2,
        udp_size: u16_at(m, p + 2),
        ext_rcode: m[p + 4],
        version: m[p + 5],
        do_bit: m[p + 6] & 0x80 != 0,
    }
}

/// Parse a query: header, exactly one uncompressed question, and the OPT record if any.
pub fn parse_query(m: &[u8]) -> Result<Query<'_>, WireError> {
    if m.len() < HEADER_LEN {
        return Err(WireError::Short);
    }
    if m[2] & F_QR != 0 {
        return Err(WireError::NotQuery);
    }
    if u16_at(m, 4) != 1 {
        return Err(WireError::NotOneQuestion);
    }
    let qname_end = uncompressed_name_end(m, HEADER_LEN)?;
    if qname_end + 4 > m.len() {
        return Err(WireError::Short);
    }
    let qtype = u16_at(m, qname_end);
    let qclass = u16_at(m, qname_end + 2);
    let question_end = qname_end + 4;
    let an = u16_at(m, 6) as usize;
    let ns = u16_at(m, 8) as usize;
    let ar = u16_at(m, 10) as usize;
    let mut edns = None;
    let mut pos = question_end;
    for i in 0..an + ns + ar {
        let start = pos;
        let (typ, _ttl, _rd, end) = skip_record(m, pos)?;
        if i >= an + ns && typ == rtype::OPT && edns.is_none() {
            let after_name = skip_name(m, start)?;
            edns = Some(parse_opt(m, start, after_name, end));
        }
        pos = end;
    }
    Ok(Query {
        msg: m,
        id: u16_at(m, 0),
        opcode: (m[2] >> 3) & 0x0F,
        rd: m[2] & F_RD != 0,
        cd: m[3] & F_CD != 0,
        ad: m[3] & F_AD != 0,
        qname_end,
        question_end,
        qtype,
        qclass,
        edns,
    })
}

/// Which section a record is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Answer,
    Authority,
    Additional,
}

/// Where one record sits in a message.
#[derive(Debug, Clone, Copy)]
pub struct Rec {
    pub start: usize,
    pub end: usize,
    pub rtype: u16,
    pub ttl_off: usize,
    pub rdata: usize,
    pub section: Section,
}

/// The layout of a whole message (response or query).
#[derive(Debug, Clone)]
pub struct Layout {
    pub question_end: usize,
    pub qdcount: u16,
    pub records: Vec<Rec>,
    /// Index into `records` of the OPT record.
    pub opt: Option<usize>,
}

impl Layout {
    pub fn edns(&self, m: &[u8]) -> Option<Edns> {
        let r = self.records[self.opt?];
        let after = skip_name(m, r.start).ok()?;
        Some(parse_opt(m, r.start, after, r.end))
    }
}

/// Walk every section of a message. Question names may be compressed here (it is only used to
/// find the record boundaries).
pub fn layout(m: &[u8]) -> Result<Layout, WireError> {
    if m.len() < HEADER_LEN {
        return Err(WireError::Short);
    }
    let qd = u16_at(m, 4);
    let an = u16_at(m, 6) as usize;
    let ns = u16_at(m, 8) as usize;
    let ar = u16_at(m, 10) as usize;
    let mut pos = HEADER_LEN;
    for _ in 0..qd {
        pos = skip_name(m, pos)? + 4;
        if pos > m.len() {
            return Err(WireError::Short);
        }
    }
    let question_end = pos;
    let mut records = Vec::with_capacity(an + ns + ar);
    let mut opt = None;
    for i in 0..an + ns + ar {
        let section = if i < an {
            Section::Answer
        } else if i < an + ns {
            Section::Authority
        } else {
            Section::Additional
        };
        let (typ, ttl_off, rdata, end) = skip_record(m, pos)?;
        if typ == rtype::OPT && section == Section::Additional && opt.is_none() {
            opt = Some(records.len());
        }
        records.push(Rec {
            start: pos,
            end,
            rtype: typ,
            ttl_off,
            rdata,
            section,
        });
        pos = end;
    }
    Ok(Layout {
        question_end,
        qdcount: qd,
        records,
        opt,
    })
}

/// Case-insensitive comparison of two byte strings (wire names compare correctly: length
/// bytes are below 64 and unaffected by ASCII lowercasing).
#[inline]
pub fn eq_ignore_case(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.eq_ignore_ascii_case(y))
}

/// A wire name as lowercase dotted text without the trailing dot ("" for the root), written
/// into `buf`. None for names with bytes that cannot appear in a hosts file name. (Not
/// [`crate::wire::display_name`], which is for logs: it keeps case and escapes such bytes.)
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
            if c == b'.' || !c.is_ascii_graphic() {
                return None;
            }
            if n >= 255 {
                return None;
            }
            buf[n] = c.to_ascii_lowercase();
            n += 1;
        }
        pos += 1 + len;
    }
    std::str::from_utf8(&buf[..n]).ok()
}

/// A dotted name (with or without the trailing dot) in wire format, lowercased:
/// [`crate::wire::encode_name`] with the resolver's error type.
pub fn dotted_to_wire(name: &str) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::with_capacity(name.len() + 2);
    crate::wire::encode_name(name, &mut out).map_err(|_| WireError::BadName)?;
    out.make_ascii_lowercase();
    Ok(out)
}

/// EDNS option code of DNS cookies (RFC 7873).
pub const OPT_COOKIE: u16 = 10;

/// Remove every EDNS option `code` from the OPT record, when that record is the message's last
/// (as it is in all but signed messages). Returns true if something was removed.
pub fn strip_edns_option(msg: &mut Vec<u8>, edns: &Edns, code: u16) -> bool {
    if edns.end != msg.len() {
        return false;
    }
    let rdlen_off = edns.size_off + 6;
    let rdata = rdlen_off + 2;
    if rdata > msg.len() || u16_at(msg, rdlen_off) == 0 {
        return false;
    }
    let mut kept = Vec::new();
    let mut removed = false;
    let mut pos = rdata;
    while pos + 4 <= msg.len() {
        let c = u16_at(msg, pos);
        let end = pos + 4 + u16_at(msg, pos + 2) as usize;
        if end > msg.len() {
            return false;
        }
        if c == code {
            removed = true;
        } else {
            kept.extend_from_slice(&msg[pos..end]);
        }
        pos = end;
    }
    if !removed {
        return false;
    }
    msg.truncate(rdata);
    msg.extend_from_slice(&kept);
    put_u16(msg, rdlen_off, kept.len() as u16);
    true
}

/// Build a query message: header with `id` and RD, one question, and an OPT record.
pub fn build_query(id: u16, qname_wire: &[u8], qtype: u16, rd: bool, edns: bool) -> Vec<u8> {
    let mut m = Vec::with_capacity(HEADER_LEN + qname_wire.len() + 4 + OPT_LEN);
    m.extend_from_slice(&id.to_be_bytes());
    m.push(if rd { F_RD } else { 0 });
    m.push(0);
    m.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, if edns { 1 } else { 0 }]);
    m.extend_from_slice(qname_wire);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&CLASS_IN.to_be_bytes());
    if edns {
        crate::wire::push_opt(&mut m, EDNS_SIZE, rcode::NOERROR, false);
    }
    m
}

/// Writes a reply to a query record by record: header, the client's question, answers with the
/// owner compressed to the question name, and an OPT record if the query had one.
pub struct ReplyWriter<'o> {
    out: &'o mut Vec<u8>,
    answers: u16,
    edns: Option<bool>,
}

impl<'o> ReplyWriter<'o> {
    /// Start a reply; `out` is cleared first. AA and RA as given, RD and CD copied.
    pub fn new(out: &'o mut Vec<u8>, q: &Query<'_>, rcode: u16, aa: bool, ra: bool) -> Self {
        out.clear();
        out.extend_from_slice(&q.id.to_be_bytes());
        let mut b2 = F_QR | (q.opcode << 3);
        if aa {
            b2 |= F_AA;
        }
        if q.rd {
            b2 |= F_RD;
        }
        let mut b3 = (rcode & 0x0F) as u8;
        if ra {
            b3 |= F_RA;
        }
        if q.cd {
            b3 |= F_CD;
        }
        out.push(b2);
        out.push(b3);
        out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(q.question());
        ReplyWriter {
            out,
            answers: 0,
            edns: q.edns.map(|e| e.do_bit),
        }
    }

    /// Add an answer record owned by the question name.
    pub fn answer(&mut self, rtype: u16, ttl: u32, rdata: &[u8]) {
        self.out.extend_from_slice(&[0xC0, 0x0C]);
        self.out.extend_from_slice(&rtype.to_be_bytes());
        self.out.extend_from_slice(&CLASS_IN.to_be_bytes());
        self.out.extend_from_slice(&ttl.to_be_bytes());
        self.out
            .extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        self.out.extend_from_slice(rdata);
        self.answers += 1;
    }

    pub fn a(&mut self, ttl: u32, ip: Ipv4Addr) {
        self.answer(rtype::A, ttl, &ip.octets());
    }

    pub fn aaaa(&mut self, ttl: u32, ip: Ipv6Addr) {
        self.answer(rtype::AAAA, ttl, &ip.octets());
    }

    /// Finish: counts and OPT. Returns the message length.
    pub fn finish(self) -> usize {
        put_u16(self.out, 6, self.answers);
        if let Some(do_bit) = self.edns {
            crate::wire::push_opt(self.out, EDNS_SIZE, rcode::NOERROR, do_bit);
            put_u16(self.out, 10, 1);
        }
        self.out.len()
    }
}

/// A header-and-question reply with `rcode` (SERVFAIL, REFUSED, NOTIMP, ...), with an OPT
/// record if the query had one. Unlike the header-only [`crate::wire::error_reply`] (for
/// queries that could not be parsed: that is [`formerr_reply`] here), the question is echoed.
pub fn error_reply(q: &Query<'_>, rcode: u16, out: &mut Vec<u8>) {
    ReplyWriter::new(out, q, rcode, false, true).finish();
}

/// A FORMERR reply to a message that is not a usable query: the server's header-only
/// [`crate::wire::error_reply`] (same ID, opcode and RD), plus CD copied from the query. Nothing
/// (empty `out`) for a message too short to hold the flags.
pub fn formerr_reply(msg: &[u8], out: &mut Vec<u8>) {
    out.clear();
    if msg.len() < 4 {
        return;
    }
    crate::wire::error_reply(out, u16_at(msg, 0), u16_at(msg, 2), rcode::FORMERR);
    out[3] |= msg[3] & F_CD;
}

/// Rewrite `msg` (which must not fit) into `out` so that it fits in `max` bytes: the header,
/// the question, as many whole records as fit (in message order), and the OPT record; TC set.
/// Records are kept as a prefix, so compression pointers stay valid.
pub fn truncate_into(msg: &[u8], max: usize, out: &mut Vec<u8>) -> Result<(), WireError> {
    let lay = layout(msg)?;
    let opt = lay.opt.map(|i| lay.records[i]);
    let opt_len = opt.map_or(0, |r| r.end - r.start);
    let mut counts = [0u16; 3];
    let mut cut = lay.question_end;
    let mut opt_in_prefix = false;
    for (i, r) in lay.records.iter().enumerate() {
        if Some(i) == lay.opt {
            // The OPT record sits here: keep it in place if it fits (space was reserved).
            if r.end > max {
                break;
            }
            opt_in_prefix = true;
            cut = r.end;
            continue;
        }
        // Space for the OPT record is reserved until it is part of the prefix.
        let reserve = if opt_in_prefix { 0 } else { opt_len };
        if r.end + reserve > max {
            break;
        }
        cut = r.end;
        counts[r.section as usize] += 1;
    }
    out.clear();
    out.extend_from_slice(&msg[..cut]);
    let mut ar = counts[2];
    if let Some(r) = opt {
        if opt_in_prefix {
            ar += 1;
        } else if out.len() + opt_len <= max {
            out.extend_from_slice(&msg[r.start..r.end]);
            ar += 1;
        } else if out.len() + OPT_LEN <= max {
            // The OPT record with its options does not fit: keep it without options.
            let after = skip_name(msg, r.start)?;
            out.push(0);
            out.extend_from_slice(&msg[after..after + 8]);
            out.extend_from_slice(&[0, 0]);
            ar += 1;
        }
    }
    if out.len() > max {
        // Header and question alone are too big: nothing sensible to send but the header.
        out.truncate(HEADER_LEN);
        put_u16(out, 4, 0);
        counts = [0; 3];
        ar = 0;
    }
    out[2] |= F_TC;
    put_u16(out, 6, counts[0]);
    put_u16(out, 8, counts[1]);
    put_u16(out, 10, ar);
    Ok(())
}

/// Make `out` fit in `max`: truncate in place if it is longer.
pub fn fit(out: &mut Vec<u8>, max: usize) {
    if out.len() <= max {
        return;
    }
    let full = std::mem::take(out);
    if truncate_into(&full, max, out).is_err() {
        // Not parseable: header only with TC.
        out.clear();
        out.extend_from_slice(&full[..HEADER_LEN.min(full.len())]);
        if out.len() == HEADER_LEN {
            out[2] |= F_TC;
            out[4..HEADER_LEN].fill(0);
        }
    }
}

/// The rcode in a message's header (low 4 bits), comparable with [`crate::wire::rcode`].
#[inline]
pub fn rcode_of(m: &[u8]) -> u16 {
    u16::from(m[3] & 0x0F)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(name: &str, qtype: u16, edns: bool) -> Vec<u8> {
        build_query(0x1234, &dotted_to_wire(name).unwrap(), qtype, true, edns)
    }

    #[test]
    fn parse_query_fields() {
        let m = q("Www.Example.COM", rtype::AAAA, true);
        let p = parse_query(&m).unwrap();
        assert_eq!(p.id, 0x1234);
        assert!(p.rd);
        assert_eq!(p.qtype, rtype::AAAA);
        assert_eq!(p.qclass, CLASS_IN);
        assert_eq!(p.qname(), &dotted_to_wire("www.example.com").unwrap()[..]);
        let e = p.edns.unwrap();
        assert_eq!(e.udp_size, EDNS_SIZE);
        assert!(!e.do_bit);
        let m = q("a.b", rtype::A, false);
        assert!(parse_query(&m).unwrap().edns.is_none());
    }

    #[test]
    fn parse_query_rejects() {
        assert_eq!(parse_query(&[0; 5]).unwrap_err(), WireError::Short);
        let mut m = q("a.b", rtype::A, false);
        m[2] |= F_QR;
        assert_eq!(parse_query(&m).unwrap_err(), WireError::NotQuery);
        let mut m = q("a.b", rtype::A, false);
        m[5] = 2;
        assert_eq!(parse_query(&m).unwrap_err(), WireError::NotOneQuestion);
        let mut m = q("a.b", rtype::A, false);
        m.truncate(m.len() - 1);
        assert_eq!(parse_query(&m).unwrap_err(), WireError::Short);
        let mut m = q("a.b", rtype::A, false);
        m[12] = 0xC0;
        assert!(parse_query(&m).is_err());
    }

    #[test]
    fn formerr_reply_is_header_only() {
        let mut out = Vec::new();
        // Opcode 5 and RD kept, AA and TC dropped, QR set; FORMERR with CD kept, RA/AD dropped.
        formerr_reply(&[0xAB, 0xCD, 0x2F, 0xFF, 0, 1], &mut out);
        assert_eq!(out, [0xAB, 0xCD, 0xA9, 0x11, 0, 0, 0, 0, 0, 0, 0, 0]);
        formerr_reply(&[0xAB, 0xCD, 0x01, 0x00], &mut out);
        assert_eq!(out, [0xAB, 0xCD, 0x81, 0x01, 0, 0, 0, 0, 0, 0, 0, 0]);
        formerr_reply(&[0xAB, 0xCD, 0x01], &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn dotted_and_reverse() {
        let w = dotted_to_wire("Foo.Bar.").unwrap();
        let mut buf = [0u8; 256];
        assert_eq!(wire_to_dotted(&w, &mut buf), Some("foo.bar"));
        // Reverse names are parsed by the shared `crate::wire::reverse_ip`, from the wire name.
        let parse_reverse = |name: &str| crate::wire::reverse_ip(&dotted_to_wire(name).unwrap());
        assert_eq!(
            parse_reverse("4.3.2.1.in-addr.arpa"),
            Some("1.2.3.4".parse().unwrap())
        );
        assert_eq!(parse_reverse("4.3.2.in-addr.arpa"), None);
        let v6 = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa";
        assert_eq!(parse_reverse(v6), Some("2001:db8::1".parse().unwrap()));
    }

    fn reply_with_n_a(n: usize, edns: bool) -> Vec<u8> {
        let m = q("many.example", rtype::A, edns);
        let p = parse_query(&m).unwrap();
        let mut out = Vec::new();
        let mut w = ReplyWriter::new(&mut out, &p, 0, false, true);
        for i in 0..n {
            w.a(60, Ipv4Addr::new(10, 0, 0, i as u8));
        }
        w.finish();
        out
    }

    #[test]
    fn truncate_keeps_header_question_opt() {
        let full = reply_with_n_a(40, true);
        assert!(full.len() > 512);
        let mut out = Vec::new();
        truncate_into(&full, 512, &mut out).unwrap();
        assert!(out.len() <= 512);
        assert!(out[2] & F_TC != 0);
        let lay = layout(&out).unwrap();
        assert!(lay.opt.is_some(), "OPT kept");
        let an = u16_at(&out, 6) as usize;
        assert_eq!(an + 1, lay.records.len());
        assert!(an > 20 && an < 40, "{an}");
        // Without EDNS.
        let full = reply_with_n_a(40, false);
        let mut v = full.clone();
        fit(&mut v, 512);
        assert!(v.len() <= 512 && v[2] & F_TC != 0);
        assert!(layout(&v).unwrap().opt.is_none());
        // A message that fits is left alone.
        let small = reply_with_n_a(2, true);
        let mut v = small.clone();
        fit(&mut v, 512);
        assert_eq!(v, small);
    }

    #[test]
    fn strips_cookie_option() {
        let mut m = q("c.example", rtype::A, true);
        // OPT rdata: COOKIE (8-byte client cookie) and NSID (empty).
        let opt = parse_query(&m).unwrap().edns.unwrap();
        let rdlen_off = opt.size_off + 6;
        let mut rd = vec![0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0, 3, 0, 0];
        put_u16(&mut m, rdlen_off, rd.len() as u16);
        m.append(&mut rd);
        let e = parse_query(&m).unwrap().edns.unwrap();
        assert!(strip_edns_option(&mut m, &e, OPT_COOKIE));
        let e = parse_query(&m).unwrap().edns.unwrap();
        assert_eq!(&m[e.size_off + 6..], &[0, 4, 0, 3, 0, 0]);
        assert!(!strip_edns_option(&mut m, &e, OPT_COOKIE));
    }

    #[test]
    fn layout_finds_ttls_and_opt() {
        let full = reply_with_n_a(3, true);
        let lay = layout(&full).unwrap();
        assert_eq!(lay.records.len(), 4);
        assert_eq!(lay.opt, Some(3));
        for r in &lay.records[..3] {
            assert_eq!(u32_at(&full, r.ttl_off), 60);
            assert_eq!(r.section, Section::Answer);
        }
        assert_eq!(
            read_name_lower(&full, lay.records[0].start).unwrap(),
            "many.example."
        );
    }
}
