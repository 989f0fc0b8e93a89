//! The oracle: what a reply must be, read with hickory-proto and the RFCs, never with the code
//! under test. A broken invariant panics with the bytes involved (libFuzzer records a crash; the
//! replay test fails naming the corpus file).

use hickory_proto::op::{Message, MessageType, Query};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

/// DNS header length (RFC 1035 §4.1.1).
const HEADER: usize = 12;
/// TYPE of the OPT pseudo-record (RFC 6891 §6.1.1).
const OPT: u16 = 41;
/// The rcodes the checks treat specially.
const FORMERR: u8 = 1;
const NOTIMP: u8 = 4;

/// A query as the oracle reads it: the header, the first question when hickory can read it,
/// and the EDNS payload size found by a lenient walk of the sections.
#[derive(Debug)]
pub(super) struct Sent {
    pub(super) id: u16,
    /// Header bytes 2 and 3.
    pub(super) flags: [u8; 2],
    pub(super) qdcount: u16,
    /// The first question, when there is one and hickory can read it (compression followed).
    pub(super) question: Option<Query>,
    /// The requestor's UDP payload size from the first OPT record of the additional section.
    pub(super) edns_payload: Option<u16>,
}

impl Sent {
    /// Read a message; None when it is shorter than a header (nothing to answer).
    pub(super) fn read(msg: &[u8]) -> Option<Sent> {
        if msg.len() < HEADER {
            return None;
        }
        let qdcount = u16::from_be_bytes([msg[4], msg[5]]);
        let question = (qdcount > 0)
            .then(|| {
                let mut d = BinDecoder::new(msg);
                d.read_slice(HEADER).ok()?;
                Query::read(&mut d).ok()
            })
            .flatten();
        Some(Sent {
            id: u16::from_be_bytes([msg[0], msg[1]]),
            flags: [msg[2], msg[3]],
            qdcount,
            question,
            edns_payload: edns_payload(msg),
        })
    }

    pub(super) fn is_response(&self) -> bool {
        self.flags[0] & 0x80 != 0
    }

    pub(super) fn opcode(&self) -> u8 {
        (self.flags[0] >> 3) & 0x0F
    }

    pub(super) fn rd(&self) -> bool {
        self.flags[0] & 0x01 != 0
    }

    /// The largest UDP reply the client takes: 512 bytes without EDNS (RFC 1035 §4.2.1), else
    /// its payload size ("values lower than 512 MUST be treated as equal to 512", RFC 6891
    /// §6.2.5) capped by the server's own limit.
    pub(super) fn udp_limit(&self, max_udp: u16) -> usize {
        match self.edns_payload {
            None => 512,
            Some(p) => usize::from(p.max(512).min(max_udp.max(512))),
        }
    }
}

/// Step over a name without following pointers: a pointer ends it. Returns the offset past
/// it and whether it ended in a pointer; None if it runs off the end.
fn walk_name(m: &[u8], mut p: usize) -> Option<(usize, bool)> {
    for _ in 0..128 {
        let len = *m.get(p)? as usize;
        match len & 0xC0 {
            0 if len == 0 => return Some((p + 1, false)),
            0 => p += 1 + len,
            0xC0 => return (p + 2 <= m.len()).then_some((p + 2, true)),
            _ => return None,
        }
    }
    None
}

fn skip_name(m: &[u8], p: usize) -> Option<usize> {
    walk_name(m, p).map(|(end, _)| end)
}

/// The payload size of the first OPT record in the additional section, found by walking record
/// boundaries only (names are stepped over, not followed), so that a query the server accepts
/// is always walked here too.
fn edns_payload(m: &[u8]) -> Option<u16> {
    let count = |i: usize| usize::from(u16::from_be_bytes([m[i], m[i + 1]]));
    let (qd, an, ns, ar) = (count(4), count(6), count(8), count(10));
    let mut p = HEADER;
    for _ in 0..qd {
        p = skip_name(m, p)? + 4;
    }
    for i in 0..an + ns + ar {
        p = skip_name(m, p)?;
        let fixed = m.get(p..p + 10)?;
        let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        if i >= an + ns && rtype == OPT {
            return Some(u16::from_be_bytes([fixed[2], fixed[3]]));
        }
        p += 10 + usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        if p > m.len() {
            return None;
        }
    }
    None
}

/// Panic with the message and both packets in hex.
#[track_caller]
pub(super) fn fail(what: &str, query: &[u8], reply: &[u8]) -> ! {
    panic!(
        "{what}\n  query ({} bytes): {}\n  reply ({} bytes): {}",
        query.len(),
        hex(query),
        reply.len(),
        hex(reply)
    );
}

pub(super) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Decode a reply with hickory-proto, or fail.
#[track_caller]
pub(super) fn decode(query: &[u8], reply: &[u8]) -> Message {
    match Message::from_vec(reply) {
        Ok(m) => m,
        Err(e) => fail(&format!("reply does not decode: {e}"), query, reply),
    }
}

/// Same name, same case (the echo keeps the client's 0x20 casing).
fn same_question(a: &Query, b: &Query) -> bool {
    a.name.eq_case(&b.name) && a.query_type == b.query_type && a.query_class == b.query_class
}

/// Check one reply of the query path against the query it answers.
///
/// - no larger than `limit`; decodes; ID, QR, opcode and RD as RFC 1035 §4.1.1 says;
/// - the question echoed, case kept, wherever an answer is given (RFC 1035 §4.1.2, §7.3);
///   a FORMERR for a question that cannot be read carries none, and a FORMERR or NOTIMP
///   (whose question section may not be a question at all) carries none or the echo;
/// - an OPT record whenever the query had one and was understood (RFC 6891 §7);
/// - every answer record owned by the question name or a CNAME target before it (RFC 1034
///   §4.3.2, step 3).
#[track_caller]
pub(super) fn query_reply(query: &[u8], sent: &Sent, reply: &[u8], limit: usize) -> Message {
    if reply.len() > limit {
        fail(&format!("reply larger than {limit} bytes"), query, reply);
    }
    let m = decode(query, reply);
    let md = &m.metadata;
    if md.id != sent.id || md.message_type != MessageType::Response {
        fail("reply ID or QR wrong", query, reply);
    }
    if u8::from(md.op_code) != sent.opcode() || md.recursion_desired != sent.rd() {
        fail("reply opcode or RD not copied from the query", query, reply);
    }
    let rcode = reply[3] & 0x0F;
    let may_omit = rcode == FORMERR || rcode == NOTIMP;
    match (m.queries.as_slice(), &sent.question) {
        ([], None) => {}
        ([], Some(_)) if may_omit => {}
        ([], Some(_)) => fail("answer without the question echoed", query, reply),
        ([q], Some(sq)) if sent.qdcount == 1 || may_omit => {
            if !same_question(q, sq) {
                fail("echoed question differs from the query's", query, reply);
            }
        }
        _ => fail("reply question section is not the query's", query, reply),
    }
    if sent.edns_payload.is_some() && !may_omit && m.edns.is_none() {
        fail("query had EDNS, reply has no OPT record", query, reply);
    }
    if let [q] = m.queries.as_slice() {
        owners_follow_question(query, reply, &q.name, &m.answers);
    }
    m
}

/// Answer records are owned by the question name, or by a name a CNAME before them points to.
#[track_caller]
pub(super) fn owners_follow_question(query: &[u8], reply: &[u8], qname: &Name, answers: &[Record]) {
    let mut owners = vec![qname.clone()];
    for r in answers {
        if !owners.iter().any(|o| o == &r.name) {
            fail(
                &format!(
                    "answer owner {} is not the question or a CNAME target",
                    r.name
                ),
                query,
                reply,
            );
        }
        if let RData::CNAME(c) = &r.data {
            owners.push(c.0.clone());
        }
    }
}

/// The framing of a message, read with hickory-proto's name reader: the header, every
/// question, every record's owner name (compression pointers followed with hickory's checks),
/// fixed fields and RDATA length within the message, and at most one OPT record, owned by the
/// root, in the additional section. RDATA is not decoded: this is what a reply must be even
/// when an upstream's RDATA is garbage that clusterdns passes on untouched (RFC 3597 §4: RDATA
/// of types a server does not interpret travels as it came).
pub(super) fn framing(m: &[u8]) -> Result<(), String> {
    let mut d = BinDecoder::new(m);
    let e = |e: hickory_proto::serialize::binary::DecodeError| e.to_string();
    d.read_slice(4).map_err(e)?;
    let mut count = || d.read_u16().map(|v| usize::from(v.unverified()));
    let (qd, an, ns, ar) = (
        count().map_err(e)?,
        count().map_err(e)?,
        count().map_err(e)?,
        count().map_err(e)?,
    );
    for _ in 0..qd {
        Query::read(&mut d).map_err(|e| e.to_string())?;
    }
    let mut opts = 0;
    for i in 0..an + ns + ar {
        let owner = Name::read(&mut d).map_err(|e| e.to_string())?;
        let rtype = d.read_u16().map_err(e)?.unverified();
        d.read_slice(6).map_err(e)?;
        let rdlen = d.read_u16().map_err(e)?.unverified();
        d.read_slice(usize::from(rdlen)).map_err(e)?;
        if rtype == OPT {
            opts += 1;
            if i < an + ns || opts > 1 || !owner.is_root() {
                return Err(format!("OPT record {i} misplaced or repeated"));
            }
        }
    }
    Ok(())
}

/// Is `reply` an acceptable reply to `query` (RFC 5452 §9.1: same ID, a response, the same
/// question; RFC 1035 §4.1.1: the same opcode), and well-formed ([`framing`]; the names in
/// the RDATA clusterdns reads, of CNAME, SOA, MX, SRV and the like, decoded by hickory)? Some servers drop the question from error replies: a reply without one passes
/// when its rcode is an error.
pub(super) fn matches_query(query: &[u8], reply: &[u8]) -> bool {
    let (Some(q), Some(r)) = (Sent::read(query), Sent::read(reply)) else {
        return false;
    };
    if r.id != q.id || !r.is_response() || r.opcode() != q.opcode() {
        return false;
    }
    match (r.qdcount, &r.question, &q.question) {
        (0, _, _) => r.flags[1] & 0x0F != 0,
        (1, Some(rq), Some(qq)) => {
            rq.name == qq.name && rq.query_type == qq.query_type && rq.query_class == qq.query_class
        }
        _ => false,
    }
}

/// The question bytes of a query built by these harnesses (uncompressed name, type, class).
pub(super) fn question_bytes(query: &[u8]) -> &[u8] {
    let end = skip_name(query, HEADER).expect("harness query has a name") + 4;
    &query[HEADER..end]
}

/// A query message: header with `id`, RD, optional CD, one question, optional OPT record with
/// `payload`, the DO bit and raw `options`.
pub(super) fn build_query(
    id: u16,
    name: &Name,
    qtype: RecordType,
    cd: bool,
    edns: Option<(u16, bool, &[u8])>,
) -> Vec<u8> {
    let mut m = Vec::with_capacity(64);
    m.extend_from_slice(&id.to_be_bytes());
    m.push(0x01);
    m.push(if cd { 0x10 } else { 0 });
    m.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, u8::from(edns.is_some())]);
    for label in name.iter() {
        m.push(label.len() as u8);
        m.extend_from_slice(label);
    }
    m.push(0);
    m.extend_from_slice(&u16::from(qtype).to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes());
    if let Some((payload, dnssec_ok, options)) = edns {
        m.push(0);
        m.extend_from_slice(&OPT.to_be_bytes());
        m.extend_from_slice(&payload.to_be_bytes());
        m.extend_from_slice(&[0, 0, if dnssec_ok { 0x80 } else { 0 }, 0]);
        m.extend_from_slice(&(options.len() as u16).to_be_bytes());
        m.extend_from_slice(options);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edns_payload_found_past_other_records() {
        let name = Name::from_ascii("a.example.").unwrap();
        let q = build_query(1, &name, RecordType::A, false, Some((4096, true, &[])));
        let s = Sent::read(&q).unwrap();
        assert_eq!(s.edns_payload, Some(4096));
        assert_eq!(s.udp_limit(1232), 1232);
        assert!(s.question.as_ref().unwrap().name.eq_case(&name));
        let q = build_query(1, &name, RecordType::A, false, Some((100, false, &[])));
        assert_eq!(Sent::read(&q).unwrap().udp_limit(1232), 512);
        let q = build_query(1, &name, RecordType::A, false, None);
        assert_eq!(Sent::read(&q).unwrap().udp_limit(4096), 512);
    }

    #[test]
    fn matching_is_case_insensitive_and_id_strict() {
        let q = build_query(
            7,
            &Name::from_ascii("A.b.").unwrap(),
            RecordType::A,
            false,
            None,
        );
        let mut r = build_query(
            7,
            &Name::from_ascii("a.B.").unwrap(),
            RecordType::A,
            false,
            None,
        );
        r[2] |= 0x80;
        assert!(matches_query(&q, &r));
        r[1] ^= 1;
        assert!(!matches_query(&q, &r));
    }
}
