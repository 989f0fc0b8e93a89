//! DNS wire format, the few parts clusterdns handles itself on the query path: parsing the
//! header, the one question and the OPT record of a query, and writing a reply straight into a
//! reusable buffer. hickory-proto stays the reference: the tests decode every reply with it.
//!
//! Why not hickory's `Message` here: a full parse builds owned names and record vectors, and a
//! reply re-encodes with compression maps — tens of allocations per query. A cluster answer is a
//! header, the question echoed, and a handful of fixed-shape records; writing those directly
//! costs a few hundred bytes of copying.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Record types clusterdns answers or names.
pub mod rtype {
    pub const A: u16 = 1;
    pub const NS: u16 = 2;
    pub const CNAME: u16 = 5;
    pub const SOA: u16 = 6;
    pub const PTR: u16 = 12;
    pub const HINFO: u16 = 13;
    pub const TXT: u16 = 16;
    pub const AAAA: u16 = 28;
    pub const SRV: u16 = 33;
    pub const OPT: u16 = 41;
    pub const IXFR: u16 = 251;
    pub const AXFR: u16 = 252;
    pub const ANY: u16 = 255;
}

/// Response codes (the low 4 bits in the header; BADVERS needs the OPT's extended bits).
pub mod rcode {
    pub const NOERROR: u16 = 0;
    pub const FORMERR: u16 = 1;
    pub const SERVFAIL: u16 = 2;
    pub const NXDOMAIN: u16 = 3;
    pub const NOTIMP: u16 = 4;
    pub const REFUSED: u16 = 5;
    /// RFC 6891 §6.1.3: extended RCODE 16, "Implementation does not support the version".
    pub const BADVERS: u16 = 16;
}

pub const CLASS_IN: u16 = 1;
pub const CLASS_ANY: u16 = 255;
pub const HEADER_LEN: usize = 12;
/// The size of an OPT record with no options: root name, type, class, TTL, RDLENGTH.
pub const OPT_LEN: usize = 11;

/// EDNS(0) facts from a query's OPT record (RFC 6891).
///
/// The resolver has its own `resolve::wire::Edns`: it also records where the OPT record sits in
/// the message (to rewrite the payload size and strip options before forwarding), which the
/// server, writing its replies from scratch, never needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edns {
    /// The requestor's UDP payload size. "Values lower than 512 MUST be treated as equal to 512."
    pub payload: u16,
    pub version: u8,
    /// DNSSEC OK (RFC 3225): copied into the response's OPT.
    pub dnssec_ok: bool,
}

/// A parsed query: header facts, the one question, and EDNS.
///
/// Owned on purpose: the question name is copied out (raw and lowercased) so the query outlives
/// the receive buffer and lookups need no lowercasing. Compressed question names are followed,
/// a second OPT is a FORMERR and a non-zero opcode NOTIMP, as an authoritative server must.
/// The resolver's `resolve::wire::Query<'a>` is deliberately different: it borrows the message
/// and records offsets (question end, OPT position) that the cache key, forwarding and reply
/// rewriting work with, and it rejects compressed question names.
#[derive(Clone)]
pub struct Query {
    pub id: u16,
    pub opcode: u8,
    pub rd: bool,
    pub cd: bool,
    /// The question name in wire form as the client wrote it (case kept), uncompressed.
    qname_raw: [u8; 255],
    /// The same name lowercased, for lookups.
    qname_lower: [u8; 255],
    qname_len: u8,
    pub qtype: u16,
    pub qclass: u16,
    pub edns: Option<Edns>,
    /// Bytes of the query message (for metrics).
    pub size: usize,
}

impl std::fmt::Debug for Query {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Query")
            .field("id", &self.id)
            .field("qname", &display_name(self.qname_raw()))
            .field("qtype", &self.qtype)
            .field("qclass", &self.qclass)
            .field("edns", &self.edns)
            .finish()
    }
}

/// Why a message could not be answered normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Not a query at all (shorter than a header, or QR set): drop it, never answer
    /// (answering responses invites reflection loops).
    Drop,
    /// A header we can answer with an error code (FORMERR, NOTIMP); the question is echoed
    /// when it could be read.
    Reply { id: u16, flags: u16, rcode: u16 },
}

impl Query {
    pub fn qname_raw(&self) -> &[u8] {
        &self.qname_raw[..self.qname_len as usize]
    }
    pub fn qname_lower(&self) -> &[u8] {
        &self.qname_lower[..self.qname_len as usize]
    }
    /// A query for a name, for tests and internal probes.
    pub fn new(name: &str, qtype: u16) -> Option<Self> {
        let mut wire = Vec::new();
        encode_name(name, &mut wire).ok()?;
        let mut q = Query {
            id: 0,
            opcode: 0,
            rd: true,
            cd: false,
            qname_raw: [0; 255],
            qname_lower: [0; 255],
            qname_len: wire.len() as u8,
            qtype,
            qclass: CLASS_IN,
            edns: None,
            size: 0,
        };
        q.qname_raw[..wire.len()].copy_from_slice(&wire);
        lower_into(&wire, &mut q.qname_lower);
        Some(q)
    }

    /// The question of a message (query or reply), ignoring the QR bit and everything after
    /// the question: for the query log, which reads names off replies.
    pub fn parse_question_only(msg: &[u8]) -> Result<Query, ParseError> {
        if msg.len() < HEADER_LEN {
            return Err(ParseError::Drop);
        }
        let mut m = msg[..].to_vec();
        m[2] &= 0x7F;
        m[4] = 0;
        m[5] = 1;
        m[6..12].fill(0);
        Query::parse(&m)
    }

    /// Parse a query message. Handles compression pointers in the question (legal, if odd),
    /// and a single OPT in the additional section; anything else after the question is
    /// skipped over without interpretation.
    pub fn parse(msg: &[u8]) -> Result<Query, ParseError> {
        if msg.len() < HEADER_LEN {
            return Err(ParseError::Drop);
        }
        let id = u16::from_be_bytes([msg[0], msg[1]]);
        let flags = u16::from_be_bytes([msg[2], msg[3]]);
        if flags & 0x8000 != 0 {
            return Err(ParseError::Drop);
        }
        let opcode = ((flags >> 11) & 0xF) as u8;
        let qdcount = u16::from_be_bytes([msg[4], msg[5]]);
        let ancount = u16::from_be_bytes([msg[6], msg[7]]);
        let nscount = u16::from_be_bytes([msg[8], msg[9]]);
        let arcount = u16::from_be_bytes([msg[10], msg[11]]);
        let formerr = ParseError::Reply {
            id,
            flags,
            rcode: rcode::FORMERR,
        };
        if opcode != 0 {
            // RFC 1035 §4.1.1: 4 = "Not Implemented - The name server does not support the
            // requested kind of query." NOTIFY, UPDATE, IQUERY, STATUS all land here.
            return Err(ParseError::Reply {
                id,
                flags,
                rcode: rcode::NOTIMP,
            });
        }
        if qdcount != 1 {
            return Err(formerr);
        }
        let mut q = Query {
            id,
            opcode,
            rd: flags & 0x0100 != 0,
            cd: flags & 0x0010 != 0,
            qname_raw: [0; 255],
            qname_lower: [0; 255],
            qname_len: 0,
            qtype: 0,
            qclass: 0,
            edns: None,
            size: msg.len(),
        };
        let mut pos = HEADER_LEN;
        let len = read_name(msg, &mut pos, &mut q.qname_raw).ok_or(formerr)?;
        q.qname_len = len as u8;
        lower_into(&q.qname_raw[..len], &mut q.qname_lower);
        if pos + 4 > msg.len() {
            return Err(formerr);
        }
        q.qtype = u16::from_be_bytes([msg[pos], msg[pos + 1]]);
        q.qclass = u16::from_be_bytes([msg[pos + 2], msg[pos + 3]]);
        pos += 4;
        // Skip answer and authority records (a query should have none), then look for OPT.
        for _ in 0..(ancount as usize + nscount as usize) {
            pos = skip_record(msg, pos).ok_or(formerr)?;
        }
        for _ in 0..arcount {
            let start = pos;
            let mut scratch = [0u8; 255];
            let nlen = read_name(msg, &mut pos, &mut scratch).ok_or(formerr)?;
            if pos + 10 > msg.len() {
                return Err(formerr);
            }
            let typ = u16::from_be_bytes([msg[pos], msg[pos + 1]]);
            if typ == rtype::OPT {
                // RFC 6891 §6.1.1: "If a query message with more than one OPT RR is received,
                // a FORMERR (RCODE=1) MUST be returned." The owner MUST be the root.
                if q.edns.is_some() || nlen != 1 {
                    return Err(formerr);
                }
                let class = u16::from_be_bytes([msg[pos + 2], msg[pos + 3]]);
                let ttl = [msg[pos + 4], msg[pos + 5], msg[pos + 6], msg[pos + 7]];
                q.edns = Some(Edns {
                    payload: class.max(512),
                    version: ttl[1],
                    dnssec_ok: ttl[2] & 0x80 != 0,
                });
            }
            pos = skip_record(msg, start).ok_or(formerr)?;
        }
        Ok(q)
    }
}

/// Read a (possibly compressed) name at `*pos` into `out` in uncompressed wire form; returns
/// its length. `*pos` ends after the name's bytes at its original place.
///
/// Pointers are followed and must point backwards. The resolver's `skip_name` only steps over
/// a pointer without following it: it just needs record boundaries in upstream replies.
fn read_name(msg: &[u8], pos: &mut usize, out: &mut [u8; 255]) -> Option<usize> {
    let mut p = *pos;
    let mut n = 0usize;
    let mut jumped = false;
    let mut hops = 0;
    loop {
        let len = *msg.get(p)? as usize;
        match len & 0xC0 {
            0x00 => {
                if len == 0 {
                    out[n] = 0;
                    n += 1;
                    if !jumped {
                        *pos = p + 1;
                    }
                    return Some(n);
                }
                // RFC 1035 §3.1: names are at most 255 octets including length bytes.
                if n + 1 + len + 1 > 255 {
                    return None;
                }
                let label = msg.get(p + 1..p + 1 + len)?;
                out[n] = len as u8;
                out[n + 1..n + 1 + len].copy_from_slice(label);
                n += 1 + len;
                p += 1 + len;
            }
            0xC0 => {
                let target = (((len & 0x3F) << 8) | *msg.get(p + 1)? as usize) as usize;
                if !jumped {
                    *pos = p + 2;
                }
                jumped = true;
                hops += 1;
                // A pointer must point backwards; a hop limit stops loops of them.
                if target >= p || hops > 32 {
                    return None;
                }
                p = target;
            }
            _ => return None, // 0x40 / 0x80: extended label types are not in use
        }
    }
}

/// Skip one resource record starting at `pos`; returns the position after it.
fn skip_record(msg: &[u8], mut pos: usize) -> Option<usize> {
    let mut scratch = [0u8; 255];
    read_name(msg, &mut pos, &mut scratch)?;
    let rdlen = u16::from_be_bytes([*msg.get(pos + 8)?, *msg.get(pos + 9)?]) as usize;
    let end = pos + 10 + rdlen;
    if end > msg.len() {
        return None;
    }
    Some(end)
}

/// Encode a dotted name (`a.b.c` or `a.b.c.`) in wire form, appending to `out`; case is kept
/// (the resolver's `dotted_to_wire` is this, lowercased).
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
    if out.len() - start > 255 {
        return Err(format!("{name:?} is longer than 255 bytes"));
    }
    Ok(())
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

/// Human-readable form of a wire name, for logs: `svc1.testns.svc.cluster.local.`
///
/// Case kept, odd bytes escaped, trailing dot. Not the resolver's `wire_to_dotted`, which
/// lowercases, refuses names with such bytes (hosts-file lookups) and drops the trailing dot.
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

/// Iterate over the labels of a wire name (without the root).
pub fn labels(wire: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> + Clone {
    let mut v: [(u8, u8); 128] = [(0, 0); 128];
    let mut n = 0;
    let mut p = 0;
    while p < wire.len() && n < 128 {
        let len = wire[p] as usize;
        if len == 0 || p + 1 + len > wire.len() {
            break;
        }
        v[n] = ((p + 1) as u8, len as u8);
        n += 1;
        p += 1 + len;
    }
    (0..n).map(move |i| &wire[v[i].0 as usize..v[i].0 as usize + v[i].1 as usize])
}

/// The address a reverse name stands for: `4.3.2.1.in-addr.arpa.` → 1.2.3.4, the 32-nibble
/// `ip6.arpa.` form → an IPv6 address. `qname` is a wire name; the `in-addr`/`ip6`/`arpa` labels
/// and hex digits match in any case. IPv4 octets are decimal without leading zeros, at most 255.
/// None for anything else, including partial names (`2.1.in-addr.arpa.`).
pub fn reverse_ip(qname: &[u8]) -> Option<IpAddr> {
    // Labels from the root down: `arpa`, `in-addr`/`ip6`, then the address from its first byte.
    let mut rev = labels(qname).rev();
    if !rev.next()?.eq_ignore_ascii_case(b"arpa") {
        return None;
    }
    let kind = rev.next()?;
    let ip = if kind.eq_ignore_ascii_case(b"in-addr") {
        let mut o = [0u8; 4];
        for octet in &mut o {
            let s = std::str::from_utf8(rev.next()?).ok()?;
            if s.is_empty() || s.len() > 3 || (s.len() > 1 && s.starts_with('0')) {
                return None;
            }
            *octet = s.parse().ok()?;
        }
        IpAddr::V4(Ipv4Addr::from(o))
    } else if kind.eq_ignore_ascii_case(b"ip6") {
        let mut o = [0u8; 16];
        for i in 0..32 {
            let l = rev.next()?;
            if l.len() != 1 {
                return None;
            }
            let v = (l[0] as char).to_digit(16)? as u8;
            o[i / 2] |= if i % 2 == 0 { v << 4 } else { v };
        }
        IpAddr::V6(Ipv6Addr::from(o))
    } else {
        return None;
    };
    // Nothing may come before the address labels.
    rev.next().is_none().then_some(ip)
}

/// The writer of one reply: header, question, then records section by section, with a size
/// limit. A record that does not fit is rolled back; in the answer section that sets TC
/// (RFC 2181 §9), in the others the record is just left out.
pub struct Writer<'a> {
    buf: &'a mut Vec<u8>,
    /// Largest reply allowed, less the room kept for the OPT record.
    limit: usize,
    counts: [u16; 3],
    section: usize,
    full: bool,
    truncated: bool,
    /// Offset of the question name (always 12).
    qname_len: usize,
    /// Offset in the message where the zone suffix of the question name starts, when the
    /// question is inside a served zone: records point there so the zone keeps the query's case.
    zone_off: Option<u16>,
    /// Offset of the owner name of the records being written: the question (12), or the
    /// target of a CNAME being chased.
    owner_at: u16,
}

/// Sections, in order.
pub const ANSWER: usize = 0;
pub const AUTHORITY: usize = 1;
pub const ADDITIONAL: usize = 2;

impl<'a> Writer<'a> {
    /// Start a reply to `q`: header (counts filled in by [`Writer::finish`]) and the question
    /// as the client wrote it. `max_size` is the largest message the client takes.
    pub fn new(buf: &'a mut Vec<u8>, q: &Query, max_size: usize) -> Self {
        buf.clear();
        buf.extend_from_slice(&q.id.to_be_bytes());
        buf.extend_from_slice(&[0x80 | (q.rd as u8), 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        buf.extend_from_slice(q.qname_raw());
        buf.extend_from_slice(&q.qtype.to_be_bytes());
        buf.extend_from_slice(&q.qclass.to_be_bytes());
        let reserve = if q.edns.is_some() { OPT_LEN } else { 0 };
        Writer {
            buf,
            limit: max_size.saturating_sub(reserve),
            counts: [0; 3],
            section: ANSWER,
            full: false,
            truncated: false,
            qname_len: q.qname_len as usize,
            zone_off: None,
            owner_at: HEADER_LEN as u16,
        }
    }

    /// Declare that the question lies in a zone whose wire name is `zone_len` bytes long
    /// (including the root byte): the zone suffix of the question is then at a known offset.
    pub fn set_zone_suffix(&mut self, zone_len: usize) {
        if zone_len <= self.qname_len {
            self.zone_off = Some((HEADER_LEN + self.qname_len - zone_len) as u16);
        }
    }

    pub fn section(&mut self, s: usize) {
        self.section = s;
        self.full = false;
    }

    pub fn truncated(&self) -> bool {
        self.truncated
    }

    pub fn count(&self, section: usize) -> u16 {
        self.counts[section]
    }

    /// Current length of the message: where the next byte goes.
    pub fn pos(&self) -> usize {
        self.buf.len()
    }

    /// Write one record with `f`; rolled back if it does not fit. Returns whether it was kept.
    #[inline]
    pub fn record(&mut self, f: impl FnOnce(&mut Self)) -> bool {
        if self.full || self.truncated {
            return false;
        }
        let mark = self.buf.len();
        f(self);
        if self.buf.len() > self.limit {
            self.buf.truncate(mark);
            self.full = true;
            if self.section == ANSWER {
                self.truncated = true;
            }
            return false;
        }
        self.counts[self.section] += 1;
        true
    }

    /// Owner = the question name (compression pointer to offset 12), or the name set by
    /// [`Writer::set_owner`].
    #[inline]
    pub fn owner_qname(&mut self) {
        self.buf
            .extend_from_slice(&(0xC000 | self.owner_at).to_be_bytes());
    }

    /// Make records owned by the name at `at` (a CNAME target written earlier).
    pub fn set_owner(&mut self, at: usize) {
        self.owner_at = at as u16;
    }

    /// The bytes written so far.
    pub fn written(&self) -> &[u8] {
        self.buf
    }

    /// A name made of `labels` (wire, no root) followed by the zone (pointer to the question's
    /// zone suffix, so it keeps the query's case, as CoreDNS does).
    #[inline]
    pub fn name_in_zone(&mut self, labels: &[u8]) {
        self.buf.extend_from_slice(labels);
        self.zone_ptr();
    }

    /// A name made of `labels` followed by the zone, written out in full: for RDATA that must
    /// not be compressed (SRV targets, RFC 2782: "name compression is not to be used for this
    /// field"; Go's resolver rejects such answers). The zone is copied from the question, so it
    /// keeps the query's case as the pointer form would.
    #[inline]
    pub fn name_in_zone_uncompressed(&mut self, labels: &[u8]) {
        self.buf.extend_from_slice(labels);
        match self.zone_off {
            Some(off) => {
                let start = off as usize;
                let end = HEADER_LEN + self.qname_len;
                self.buf.extend_from_within(start..end);
            }
            None => self.buf.push(0),
        }
    }

    /// The zone name itself (pointer to the question's zone suffix).
    #[inline]
    pub fn zone_ptr(&mut self) {
        match self.zone_off {
            Some(off) => self.buf.extend_from_slice(&(0xC000 | off).to_be_bytes()),
            None => self.buf.push(0),
        }
    }

    /// A compression pointer to an earlier offset of this message.
    #[inline]
    pub fn ptr(&mut self, off: usize) {
        self.buf
            .extend_from_slice(&(0xC000 | off as u16).to_be_bytes());
    }

    /// Raw bytes (an absolute wire name, rdata parts).
    #[inline]
    pub fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }

    /// TYPE, CLASS IN, TTL; returns the offset of RDLENGTH to patch with [`Writer::end_rdata`].
    #[inline]
    pub fn rr_head(&mut self, typ: u16, ttl: u32) -> usize {
        self.buf.extend_from_slice(&typ.to_be_bytes());
        self.buf.extend_from_slice(&CLASS_IN.to_be_bytes());
        self.buf.extend_from_slice(&ttl.to_be_bytes());
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        at
    }

    #[inline]
    pub fn end_rdata(&mut self, rdlen_at: usize) {
        let len = (self.buf.len() - rdlen_at - 2) as u16;
        self.buf[rdlen_at..rdlen_at + 2].copy_from_slice(&len.to_be_bytes());
    }

    #[inline]
    pub fn a(&mut self, ttl: u32, ip: Ipv4Addr) {
        self.buf.extend_from_slice(&rtype::A.to_be_bytes());
        self.buf.extend_from_slice(&CLASS_IN.to_be_bytes());
        self.buf.extend_from_slice(&ttl.to_be_bytes());
        self.buf.extend_from_slice(&[0, 4]);
        self.buf.extend_from_slice(&ip.octets());
    }

    #[inline]
    pub fn aaaa(&mut self, ttl: u32, ip: Ipv6Addr) {
        self.buf.extend_from_slice(&rtype::AAAA.to_be_bytes());
        self.buf.extend_from_slice(&CLASS_IN.to_be_bytes());
        self.buf.extend_from_slice(&ttl.to_be_bytes());
        self.buf.extend_from_slice(&[0, 16]);
        self.buf.extend_from_slice(&ip.octets());
    }

    /// Finish the reply: flags, rcode, counts, and the OPT record when the query had one.
    /// `aa`: authoritative answer. `ra`: recursion available.
    pub fn finish(self, q: &Query, rcode: u16, aa: bool, ra: bool, max_udp: u16) {
        let buf = self.buf;
        let mut f2 = 0x80u8 | (q.rd as u8);
        if aa {
            f2 |= 0x04;
        }
        if self.truncated {
            f2 |= 0x02;
        }
        let mut f3 = (rcode & 0x0F) as u8;
        if ra {
            f3 |= 0x80;
        }
        if q.cd {
            f3 |= 0x10;
        }
        buf[2] = f2;
        buf[3] = f3;
        let mut ar = self.counts[ADDITIONAL];
        if let Some(e) = q.edns {
            push_opt(buf, max_udp, rcode, e.dnssec_ok);
            ar += 1;
        }
        buf[6..8].copy_from_slice(&self.counts[ANSWER].to_be_bytes());
        buf[8..10].copy_from_slice(&self.counts[AUTHORITY].to_be_bytes());
        buf[10..12].copy_from_slice(&ar.to_be_bytes());
    }
}

/// Append an OPT record without options ([`OPT_LEN`] bytes): root owner, TYPE 41, CLASS = the
/// UDP payload size, then the TTL: RFC 6891 §6.1.3, the upper 8 bits of the extended 12-bit
/// `rcode`, version 0, DO (RFC 3225 §3); RDLENGTH 0.
#[inline]
pub fn push_opt(buf: &mut Vec<u8>, payload: u16, rcode: u16, dnssec_ok: bool) {
    buf.push(0);
    buf.extend_from_slice(&rtype::OPT.to_be_bytes());
    buf.extend_from_slice(&payload.to_be_bytes());
    buf.push((rcode >> 4) as u8);
    buf.push(0);
    buf.push(if dnssec_ok { 0x80 } else { 0 });
    buf.extend_from_slice(&[0, 0, 0]);
}

/// A bare error reply when the question could not be parsed: header only, QDCOUNT 0. ID, opcode
/// and RD are the query's. (The resolver's `error_reply` is another thing: a reply to a parsed
/// query, question echoed.)
pub fn error_reply(buf: &mut Vec<u8>, id: u16, query_flags: u16, rcode: u16) {
    buf.clear();
    buf.extend_from_slice(&id.to_be_bytes());
    // keep opcode and RD of the query, set QR
    let f2 = 0x80 | ((query_flags >> 8) as u8 & 0x79);
    buf.push(f2);
    buf.push((rcode & 0x0F) as u8);
    buf.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
}

/// Largest reply for a client: 512 bytes without EDNS (RFC 1035 §4.2.1), else the client's
/// advertised size capped by the server's `max_udp` (1232 by default, DNS flag day 2020).
pub fn udp_limit(q: &Query, max_udp: u16) -> usize {
    match q.edns {
        Some(e) => e.payload.min(max_udp).max(512) as usize,
        None => 512,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query_bytes(name: &str, qtype: u16, edns: Option<u16>) -> Vec<u8> {
        let mut m = vec![
            0x12,
            0x34,
            0x01,
            0x00,
            0,
            1,
            0,
            0,
            0,
            0,
            0,
            edns.is_some() as u8,
        ];
        encode_name(name, &mut m).unwrap();
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&1u16.to_be_bytes());
        if let Some(sz) = edns {
            m.extend_from_slice(&[0, 0, 41]);
            m.extend_from_slice(&sz.to_be_bytes());
            m.extend_from_slice(&[0, 0, 0x80, 0, 0, 0]);
        }
        m
    }

    #[test]
    fn parses_question_and_edns() {
        let m = query_bytes("SvC1.TeStNs.svc.cluster.local.", rtype::A, Some(4096));
        let q = Query::parse(&m).unwrap();
        assert_eq!(q.id, 0x1234);
        assert!(q.rd);
        assert_eq!(
            display_name(q.qname_raw()),
            "SvC1.TeStNs.svc.cluster.local."
        );
        assert_eq!(
            display_name(q.qname_lower()),
            "svc1.testns.svc.cluster.local."
        );
        assert_eq!(
            q.edns,
            Some(Edns {
                payload: 4096,
                version: 0,
                dnssec_ok: true
            })
        );
        assert_eq!(udp_limit(&q, 1232), 1232);
    }

    #[test]
    fn follows_pointer_in_question() {
        // header, then at 12 a pointer-bearing name: "a" + pointer to "example." placed later is
        // illegal (forward), so build "example." first in an additional-looking place: use a
        // query whose name is "x" + pointer back to offset 12 -> loop guard.
        let mut m = vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&[1, b'x', 0xC0, 12]);
        m.extend_from_slice(&[0, 1, 0, 1]);
        assert!(matches!(
            Query::parse(&m),
            Err(ParseError::Reply {
                rcode: rcode::FORMERR,
                ..
            })
        ));
    }

    #[test]
    fn rejects_bad_messages() {
        assert_eq!(Query::parse(&[0; 5]).unwrap_err(), ParseError::Drop);
        let mut m = query_bytes("a.", 1, None);
        m[2] |= 0x80; // QR
        assert_eq!(Query::parse(&m).unwrap_err(), ParseError::Drop);
        let mut m = query_bytes("a.", 1, None);
        m[5] = 2; // QDCOUNT 2
        assert!(matches!(
            Query::parse(&m),
            Err(ParseError::Reply {
                rcode: rcode::FORMERR,
                ..
            })
        ));
        let mut m = query_bytes("a.", 1, None);
        m[2] |= 5 << 3; // UPDATE
        assert!(matches!(
            Query::parse(&m),
            Err(ParseError::Reply {
                rcode: rcode::NOTIMP,
                ..
            })
        ));
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
    fn opt_record() {
        let mut b = Vec::new();
        push_opt(&mut b, 1232, rcode::BADVERS, true);
        assert_eq!(b, [0, 0, 41, 0x04, 0xD0, 1, 0, 0x80, 0, 0, 0]);
        assert_eq!(b.len(), OPT_LEN);
    }
}
