//! A query, parsed once into one borrowed view: the header's facts, the one question, and
//! EDNS. The zone, the resolver and the cache all read this view; nothing parses the bytes
//! again.

use std::borrow::Cow;

use super::decoder::{Decoder, WireError};
use super::edns::{self, Edns, option};
use super::name::{MAX_NAME, display_name, encode_name, read_name, skip_name};
use super::{CLASS_IN, HEADER_LEN, OPT_LEN, rcode, rtype};

/// A parsed query.
///
/// It borrows the message as received. Only when the question name used a compression
/// pointer (legal, if odd: RFC 1035 §4.1.4 allows it anywhere) is the message rebuilt once, with
/// the name written in full and the OPT record after it, so that everything downstream — the
/// question echoed in replies, the message forwarded upstream, the cache key — sees an ordinary
/// uncompressed question whichever path answers it.
#[derive(Clone)]
pub struct Query<'a> {
    msg: Cow<'a, [u8]>,
    pub id: u16,
    pub opcode: u8,
    pub rd: bool,
    pub cd: bool,
    /// AD in a query: the client understands the AD bit (RFC 6840 §5.7).
    pub ad: bool,
    pub qtype: u16,
    pub qclass: u16,
    /// Length of the question name at offset 12 of `msg` (uncompressed there).
    qname_len: u8,
    /// The question name lowercased, for lookups and keys.
    qname_lower: [u8; MAX_NAME],
    pub edns: Option<Edns>,
    /// Bytes of the message as received (for metrics).
    pub size: usize,
}

impl std::fmt::Debug for Query<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Query")
            .field("id", &self.id)
            .field("qname", &display_name(self.qname()))
            .field("qtype", &self.qtype)
            .field("qclass", &self.qclass)
            .field("edns", &self.edns)
            .finish()
    }
}

/// Why a message could not be answered normally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Not a query at all (shorter than a header, or QR set): drop it, never answer
    /// (answering responses invites reflection loops).
    Drop,
    /// Answer with an error code (FORMERR, NOTIMP) from this header. `question` is the
    /// question (its name written in full, type, class) when it could be read, to be echoed.
    Reply {
        id: u16,
        flags: u16,
        rcode: u16,
        question: Option<Box<[u8]>>,
    },
}

impl<'a> Query<'a> {
    /// Parse a query message: the header, exactly one question (its name may be compressed),
    /// and at most one OPT record, which must be in the additional section with the root as
    /// owner (RFC 6891 §6.1.1). Other records are stepped over. A non-zero opcode is NOTIMP
    /// (RFC 1035 §4.1.1: "The name server does not support the requested kind of query").
    pub fn parse(msg: &'a [u8]) -> Result<Query<'a>, ParseError> {
        let mut q = Query::empty(Cow::Borrowed(msg));
        if let Some(rebuilt) = parse_into(msg, &mut q)? {
            q.msg = Cow::Owned(rebuilt);
        }
        Ok(q)
    }

    /// [`Query::parse`] of a message the query then owns.
    pub fn from_vec(msg: Vec<u8>) -> Result<Query<'static>, ParseError> {
        let mut q = Query::empty(Cow::Owned(Vec::new()));
        let rebuilt = parse_into(&msg, &mut q)?;
        q.size = msg.len();
        q.msg = Cow::Owned(rebuilt.unwrap_or(msg));
        Ok(q)
    }

    /// A query of `msg` with every field still to be filled in by [`parse_into`].
    #[inline]
    fn empty(msg: Cow<'a, [u8]>) -> Query<'a> {
        Query {
            size: msg.len(),
            msg,
            id: 0,
            opcode: 0,
            rd: false,
            cd: false,
            ad: false,
            qtype: 0,
            qclass: 0,
            qname_len: 0,
            qname_lower: [0; MAX_NAME],
            edns: None,
        }
    }

    /// A query (RD set, no EDNS) for a dotted name: for tests and internal probes.
    pub fn new(name: &str, qtype: u16) -> Option<Query<'static>> {
        let mut wire = Vec::new();
        encode_name(name, &mut wire).ok()?;
        Query::from_vec(build(0, &wire, qtype, true, None)).ok()
    }

    /// The same query, owning its bytes (to outlive the receive buffer).
    pub fn into_owned(self) -> Query<'static> {
        Query {
            msg: Cow::Owned(self.msg.into_owned()),
            ..self
        }
    }

    /// The message: as received, or rebuilt with an uncompressed question.
    #[inline]
    pub fn message(&self) -> &[u8] {
        &self.msg
    }

    /// The question name in wire form as the client wrote it (case kept), uncompressed.
    #[inline]
    pub fn qname(&self) -> &[u8] {
        &self.msg[HEADER_LEN..HEADER_LEN + self.qname_len as usize]
    }

    /// The question name lowercased.
    #[inline]
    pub fn qname_lower(&self) -> &[u8] {
        &self.qname_lower[..self.qname_len as usize]
    }

    /// The question's bytes (name, type, class) as the client wrote them.
    #[inline]
    pub fn question(&self) -> &[u8] {
        &self.msg[HEADER_LEN..self.question_end()]
    }

    /// Offset just past the question.
    #[inline]
    pub fn question_end(&self) -> usize {
        HEADER_LEN + self.qname_len as usize + 4
    }

    #[inline]
    pub fn do_bit(&self) -> bool {
        self.edns.is_some_and(|e| e.dnssec_ok)
    }

    /// The EDNS options of the query, (code, data) in order.
    pub fn options(&self) -> impl Iterator<Item = (u16, &[u8])> {
        let rdata = self.edns.map_or(&[][..], |e| e.options_in(&self.msg));
        // The framing was checked when the query was parsed.
        edns::options(rdata).filter_map(Result::ok)
    }

    /// The EDNS Client Subnet option's data (RFC 7871 §6), if the query has one.
    pub fn client_subnet(&self) -> Option<&[u8]> {
        self.options()
            .find(|(c, _)| *c == option::CLIENT_SUBNET)
            .map(|(_, d)| d)
    }

    /// The message clusterdns sends upstream for this query, into `out`: the client's
    /// question with RD, CD and AD, and — when the query had EDNS — an OPT record with the DO
    /// bit, the payload size capped at `max_payload`, and the client's options except its DNS
    /// cookie (between it and us; RFC 7873 §6: a server cookie from upstream would be cached
    /// and handed to other clients) and, unless `pass_client_subnet`, its client subnet
    /// (RFC 7871 §7.5: a forwarder may strip it; sent on, answers tailored to one client's
    /// subnet would be cached for all).
    pub fn upstream_message(
        &self,
        id: u16,
        max_payload: u16,
        pass_client_subnet: bool,
        out: &mut Vec<u8>,
    ) {
        out.clear();
        out.extend_from_slice(&id.to_be_bytes());
        out.push(self.rd as u8);
        out.push(((self.ad as u8) << 5) | ((self.cd as u8) << 4));
        out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, self.edns.is_some() as u8]);
        out.extend_from_slice(self.question());
        if let Some(e) = self.edns {
            let at = out.len();
            edns::push_opt(
                out,
                e.payload.clamp(512, max_payload.max(512)),
                0,
                e.dnssec_ok,
            );
            let mut n = 0usize;
            for (code, data) in self.options() {
                if code == option::COOKIE || (code == option::CLIENT_SUBNET && !pass_client_subnet)
                {
                    continue;
                }
                out.extend_from_slice(&code.to_be_bytes());
                out.extend_from_slice(&(data.len() as u16).to_be_bytes());
                out.extend_from_slice(data);
                n += 4 + data.len();
            }
            out[at + OPT_LEN - 2..at + OPT_LEN].copy_from_slice(&(n as u16).to_be_bytes());
        }
    }
}

/// Build a query message: header with `id` and RD, one question (`qname` in wire form, class
/// IN), and an OPT record advertising `edns_payload` when given.
pub fn build(id: u16, qname: &[u8], qtype: u16, rd: bool, edns_payload: Option<u16>) -> Vec<u8> {
    let mut m = Vec::with_capacity(HEADER_LEN + qname.len() + 4 + OPT_LEN);
    m.extend_from_slice(&id.to_be_bytes());
    m.push(rd as u8);
    m.push(0);
    m.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, edns_payload.is_some() as u8]);
    m.extend_from_slice(qname);
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&CLASS_IN.to_be_bytes());
    if let Some(p) = edns_payload {
        edns::push_opt(&mut m, p, rcode::NOERROR, false);
    }
    m
}

/// Parse `msg` into `q` (made by [`Query::empty`]). Returns the rebuilt message when the
/// question name was compressed (see [`Query`]).
#[inline]
fn parse_into(msg: &[u8], q: &mut Query<'_>) -> Result<Option<Vec<u8>>, ParseError> {
    if msg.len() < HEADER_LEN {
        return Err(ParseError::Drop);
    }
    let mut d = Decoder::new(msg);
    let head = (|| -> Result<_, WireError> {
        Ok((d.u16()?, d.u16()?, d.u16()?, d.u16()?, d.u16()?, d.u16()?))
    })();
    let Ok((id, flags, qdcount, ancount, nscount, arcount)) = head else {
        return Err(ParseError::Drop);
    };
    if flags & 0x8000 != 0 {
        return Err(ParseError::Drop);
    }
    let opcode = (flags >> 11) & 0xF;
    let err = |rcode: u16, question: Option<Box<[u8]>>| ParseError::Reply {
        id,
        flags,
        rcode,
        question,
    };
    let first_error = if opcode != 0 {
        rcode::NOTIMP
    } else {
        rcode::FORMERR
    };
    if qdcount != 1 {
        return Err(err(first_error, None));
    }
    // The name as sent goes into the lowercase buffer first; it is lowercased at the end.
    let Ok((qname_len, compressed)) = read_name(&mut d, &mut q.qname_lower) else {
        return Err(err(first_error, None));
    };
    let (Ok(qtype), Ok(qclass)) = (d.u16(), d.u16()) else {
        return Err(err(first_error, None));
    };
    // From here on an error reply echoes the question.
    let name = &q.qname_lower;
    let echo = || {
        let mut b = Vec::with_capacity(qname_len + 4);
        b.extend_from_slice(&name[..qname_len]);
        b.extend_from_slice(&qtype.to_be_bytes());
        b.extend_from_slice(&qclass.to_be_bytes());
        Some(b.into_boxed_slice())
    };
    if opcode != 0 {
        return Err(err(rcode::NOTIMP, echo()));
    }
    if qtype == rtype::OPT {
        // RFC 6891 §6.1.1: OPT is a pseudo-RR, never a question.
        return Err(err(rcode::FORMERR, echo()));
    }
    let mut edns = None;
    let mut opt = None;
    if ancount != 0 || nscount != 0 || arcount != 0 {
        let records = (|| -> Result<(), WireError> {
            let total = ancount as usize + nscount as usize + arcount as usize;
            for i in 0..total {
                let start = d.pos();
                skip_name(&mut d)?;
                let typ = d.u16()?;
                if typ != rtype::OPT {
                    d.skip(6)?;
                    let rdlen = d.u16()? as usize;
                    d.skip(rdlen)?;
                    continue;
                }
                // RFC 6891 §6.1.1: one OPT at most, in the additional section, owned by the
                // root; "If a query message with more than one OPT RR is received, a FORMERR
                // (RCODE=1) MUST be returned."
                let additional = i >= ancount as usize + nscount as usize;
                if !additional || edns.is_some() || msg[start] != 0 {
                    return Err(WireError::BadOpt);
                }
                edns = Some(Edns::read(&mut d)?);
                opt = Some((start, d.pos()));
            }
            Ok(())
        })();
        if records.is_err() {
            return Err(err(rcode::FORMERR, echo()));
        }
    }
    let rebuilt = compressed.then(|| {
        let has_opt = opt.is_some();
        let opt = opt.map_or(&[][..], |(s, e)| &msg[s..e]);
        let mut m = Vec::with_capacity(HEADER_LEN + qname_len + 4 + opt.len());
        m.extend_from_slice(&msg[..4]);
        m.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, has_opt as u8]);
        m.extend_from_slice(&name[..qname_len]);
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&qclass.to_be_bytes());
        // The query's other records are left out (a query has none that matter).
        m.extend_from_slice(opt);
        m
    });
    if let (Some(bytes), Some(e)) = (&rebuilt, edns.as_mut()) {
        // In the rebuilt message the OPT record follows the question.
        e.options_at = (bytes.len() - e.options_len as usize) as u16;
    }
    q.qname_lower[..qname_len].make_ascii_lowercase();
    q.id = id;
    q.opcode = opcode as u8;
    q.rd = flags & 0x0100 != 0;
    q.cd = flags & 0x0010 != 0;
    q.ad = flags & 0x0020 != 0;
    q.qtype = qtype;
    q.qclass = qclass;
    q.qname_len = qname_len as u8;
    q.edns = edns;
    Ok(rebuilt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query_bytes(name: &str, qtype: u16, edns: Option<u16>) -> Vec<u8> {
        let mut w = Vec::new();
        encode_name(name, &mut w).unwrap();
        let mut m = build(0x1234, &w, qtype, true, edns);
        if edns.is_some() {
            let n = m.len();
            m[n - 4] = 0x80; // DO
        }
        m
    }

    /// The length of the question a FORMERR echoes, if any.
    fn formerr(e: Result<Query<'_>, ParseError>) -> Option<usize> {
        match e {
            Err(ParseError::Reply {
                rcode: rcode::FORMERR,
                question,
                ..
            }) => question.map(|q| 12 + q.len()),
            other => panic!("not a FORMERR: {other:?}"),
        }
    }

    #[test]
    fn parses_question_and_edns() {
        let m = query_bytes("SvC1.TeStNs.svc.cluster.local.", rtype::A, Some(4096));
        let q = Query::parse(&m).unwrap();
        assert_eq!(q.id, 0x1234);
        assert!(q.rd && !q.cd && !q.ad);
        assert_eq!(display_name(q.qname()), "SvC1.TeStNs.svc.cluster.local.");
        assert_eq!(
            display_name(q.qname_lower()),
            "svc1.testns.svc.cluster.local."
        );
        assert_eq!(q.question_end(), 12 + q.qname().len() + 4);
        let e = q.edns.unwrap();
        assert_eq!((e.payload, e.version, e.dnssec_ok), (4096, 0, true));
        assert_eq!(q.message().as_ptr(), m.as_ptr(), "borrowed, not copied");
    }

    #[test]
    fn compressed_question_is_rebuilt() {
        // "x" + a pointer to offset 4 (QDCOUNT's high byte, 0: the root) spells "x.".
        let mut m = vec![0xAB, 0xCD, 1, 0, 0, 1, 0, 0, 0, 0, 0, 1];
        m.extend_from_slice(&[1, b'X', 0xC0, 4, 0, 1, 0, 1]);
        m.extend_from_slice(&[0, 0, 41, 4, 0, 0, 0, 0, 0, 0, 6, 0, 10, 0, 2, 7, 7]);
        let q = Query::parse(&m).unwrap();
        assert_eq!(q.qname(), b"\x01X\x00");
        assert_eq!(q.qname_lower(), b"\x01x\x00");
        assert_eq!(q.question(), b"\x01X\x00\x00\x01\x00\x01");
        assert_eq!(q.edns.unwrap().payload, 1024);
        assert_eq!(q.options().collect::<Vec<_>>(), vec![(10, &[7u8, 7][..])]);
        assert_eq!(q.size, m.len());
        // The rebuilt message parses as the same query.
        let again = Query::parse(q.message()).unwrap();
        assert_eq!(again.qname(), q.qname());
        assert_eq!(again.edns, q.edns);
        // An error reply echoes the question written in full.
        let mut bad = m.clone();
        bad[2] |= 4 << 3; // NOTIFY
        match Query::parse(&bad) {
            Err(ParseError::Reply {
                question: Some(q),
                rcode: rcode::NOTIMP,
                ..
            }) => {
                assert_eq!(&*q, b"\x01X\x00\x00\x01\x00\x01")
            }
            other => panic!("{other:?}"),
        }
        // A pointer to itself is a loop.
        let mut m = vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&[1, b'x', 0xC0, 12, 0, 1, 0, 1]);
        assert_eq!(formerr(Query::parse(&m)), None);
    }

    #[test]
    fn rejects_bad_messages() {
        assert_eq!(Query::parse(&[0; 5]).unwrap_err(), ParseError::Drop);
        let mut m = query_bytes("a.", 1, None);
        m[2] |= 0x80; // QR
        assert_eq!(Query::parse(&m).unwrap_err(), ParseError::Drop);
        let mut m = query_bytes("a.", 1, None);
        m[5] = 2; // QDCOUNT 2
        assert_eq!(formerr(Query::parse(&m)), None);
        let mut m = query_bytes("a.", 1, None);
        m[5] = 0;
        assert_eq!(formerr(Query::parse(&m)), None);
        let mut m = query_bytes("a.", 1, None);
        m[2] |= 5 << 3; // UPDATE
        assert_eq!(
            Query::parse(&m).unwrap_err(),
            ParseError::Reply {
                id: 0x1234,
                flags: 0x2900,
                rcode: rcode::NOTIMP,
                question: Some(m[12..].into())
            }
        );
        // A record cut short after a good question: FORMERR, question echoed.
        let mut m = query_bytes("a.", 1, Some(1232));
        m.truncate(m.len() - 1);
        assert_eq!(formerr(Query::parse(&m)), Some(12 + 3 + 4));
        // Two OPT records.
        let mut m = query_bytes("a.", 1, Some(1232));
        let opt = m[m.len() - 11..].to_vec();
        m.extend_from_slice(&opt);
        m[11] = 2;
        assert_eq!(formerr(Query::parse(&m)), Some(19));
        // OPT owned by another name; OPT in the answer section; options overrunning.
        let mut m = query_bytes("a.", 1, None);
        m[11] = 1;
        m.extend_from_slice(&[1, b'a', 0, 0, 41, 4, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(formerr(Query::parse(&m)), Some(19));
        let mut m = query_bytes("a.", 1, Some(1232));
        m[7] = 1;
        m[11] = 0;
        assert_eq!(formerr(Query::parse(&m)), Some(19));
        let mut m = query_bytes("a.", 1, Some(1232));
        let n = m.len();
        m[n - 1] = 5;
        m.extend_from_slice(&[0, 10, 0, 9, 1]);
        assert_eq!(formerr(Query::parse(&m)), Some(19));
        // A question for OPT itself.
        assert_eq!(
            formerr(Query::parse(&query_bytes("a.", 41, None))),
            Some(19)
        );
    }

    #[test]
    fn upstream_message_strips_cookie_and_subnet() {
        let mut m = query_bytes("Www.Example.", rtype::AAAA, Some(4096));
        // options: COOKIE, ECS (IPv4 /24), NSID
        let opts: &[u8] = &[
            0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0, 8, 0, 7, 0, 1, 24, 0, 192, 0, 2, 0, 3, 0, 0,
        ];
        let n = m.len();
        m[n - 2..].copy_from_slice(&(opts.len() as u16).to_be_bytes());
        m.extend_from_slice(opts);
        m[3] |= 0x30; // AD, CD
        let q = Query::parse(&m).unwrap();
        assert_eq!(q.client_subnet(), Some(&[0, 1, 24, 0, 192, 0, 2][..]));
        let mut out = Vec::new();
        q.upstream_message(0x4242, 1232, false, &mut out);
        let u = Query::parse(&out).unwrap();
        assert_eq!((u.id, u.rd, u.cd, u.ad), (0x4242, true, true, true));
        assert_eq!(u.question(), q.question());
        let e = u.edns.unwrap();
        assert_eq!((e.payload, e.dnssec_ok), (1232, true));
        assert_eq!(u.options().collect::<Vec<_>>(), vec![(3, &[][..])]);
        q.upstream_message(1, 1232, true, &mut out);
        let u = Query::parse(&out).unwrap();
        assert_eq!(u.options().map(|o| o.0).collect::<Vec<_>>(), vec![8, 3]);
        // Without EDNS, none is added; a tiny payload is raised to 512.
        let q = Query::new("a.example", rtype::A).unwrap();
        q.upstream_message(1, 1232, false, &mut out);
        assert!(Query::parse(&out).unwrap().edns.is_none());
        let m = query_bytes("a.", 1, Some(100));
        Query::parse(&m)
            .unwrap()
            .upstream_message(1, 1232, false, &mut out);
        assert_eq!(Query::parse(&out).unwrap().edns.unwrap().payload, 512);
    }
}
