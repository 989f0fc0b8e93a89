//! Replies clusterdns did not write: an upstream's reply passed on to a client (the client's ID
//! and question put in, cut to the client's size) and the cache's stored replies. They are read
//! through the bounds-checked [`Decoder`]; records are found but not decoded.

use super::decoder::{Decoder, WireError};
use super::name::{MAX_NAME, read_name_past_header, skip_name, uncompressed_len};
use super::query::Query;
use super::writer::rcode_reply;
use super::{F_TC, HEADER_LEN, OPT_LEN, put_u16, rcode_of, rtype, u16_at};

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

/// The layout of a whole message.
#[derive(Debug, Clone)]
pub struct Layout {
    pub question_end: usize,
    pub qdcount: u16,
    pub records: Vec<Rec>,
    /// Index into `records` of the (first) OPT record of the additional section.
    pub opt: Option<usize>,
}

/// Walk every section of a message. Names are stepped over, not followed.
pub fn layout(m: &[u8]) -> Result<Layout, WireError> {
    let mut d = Decoder::new(m);
    d.skip(4)?;
    let qd = d.u16()?;
    let an = d.u16()? as usize;
    let ns = d.u16()? as usize;
    let ar = d.u16()? as usize;
    for _ in 0..qd {
        skip_name(&mut d)?;
        d.skip(4)?;
    }
    let question_end = d.pos();
    // A record takes at least 11 bytes: the counts of a hostile message cannot make this
    // allocate more than the message could hold.
    let mut records = Vec::with_capacity((an + ns + ar).min(d.remaining() / 11));
    let mut opt = None;
    for i in 0..an + ns + ar {
        let section = if i < an {
            Section::Answer
        } else if i < an + ns {
            Section::Authority
        } else {
            Section::Additional
        };
        let start = d.pos();
        skip_name(&mut d)?;
        let typ = d.u16()?;
        d.skip(2)?;
        let ttl_off = d.pos();
        d.skip(4)?;
        let rdlen = d.u16()? as usize;
        let rdata = d.pos();
        d.skip(rdlen)?;
        if typ == rtype::OPT && section == Section::Additional && opt.is_none() {
            opt = Some(records.len());
        }
        records.push(Rec {
            start,
            end: d.pos(),
            rtype: typ,
            ttl_off,
            rdata,
            section,
        });
    }
    Ok(Layout {
        question_end,
        qdcount: qd,
        records,
        opt,
    })
}

/// Check that an upstream's reply is a well-formed DNS message before anything of it is
/// passed on or cached: every name (owners, and the names inside the RDATA of the types RFC
/// 3597 §4 lets be compressed, and SRV's) reads with the pointer rules of
/// [`read_name_past_header`] and ends where the RDATA does, addresses have their length, and
/// there is at most one OPT record, owned by the root, in the additional section (RFC 6891
/// §6.1.1). RDATA of other types is passed on as it came. Bytes after the last record are
/// ignored (a receive buffer may be padded).
///
/// Why: the reply goes to the client and into the cache with our header on it; a cut record, a
/// pointer loop or counts larger than the message would reach every client of the cache. A
/// reply that fails is the upstream's failure (as CoreDNS's `forward`, whose unpack fails).
pub fn check(m: &[u8]) -> Result<(), WireError> {
    let mut name = [0u8; MAX_NAME];
    let mut d = Decoder::new(m);
    d.skip(4)?;
    let qd = d.u16()?;
    let an = usize::from(d.u16()?);
    let ns = usize::from(d.u16()?);
    let ar = usize::from(d.u16()?);
    for _ in 0..qd {
        read_name_past_header(&mut d, &mut name)?;
        d.skip(4)?;
    }
    let mut opts = 0;
    for i in 0..an + ns + ar {
        let (owner_len, _) = read_name_past_header(&mut d, &mut name)?;
        let typ = d.u16()?;
        d.skip(6)?;
        let rdlen = usize::from(d.u16()?);
        let rdata = d.pos();
        let end = rdata + rdlen;
        if end > m.len() {
            return Err(WireError::Short);
        }
        // The names an RDATA holds, after how many fixed bytes, and what may follow.
        let names: &[(usize, usize)] = match typ {
            rtype::OPT => {
                opts += 1;
                if i < an + ns {
                    return Err(WireError::BadRdata);
                }
                if opts > 1 || owner_len != 1 {
                    return Err(WireError::BadOpt);
                }
                &[]
            }
            rtype::A if rdlen != 4 => return Err(WireError::BadRdata),
            rtype::AAAA if rdlen != 16 => return Err(WireError::BadRdata),
            // NS, MD, MF, CNAME, MB, MG, MR, PTR: one name.
            2..=5 | 7..=9 | rtype::PTR => &[(0, 0)],
            // SOA: two names, then five 32-bit numbers.
            rtype::SOA => &[(0, 0), (0, 20)],
            // MINFO: two names.
            14 => &[(0, 0), (0, 0)],
            // MX: preference, name.
            15 => &[(2, 0)],
            // SRV: priority, weight, port, target (RFC 2782).
            rtype::SRV => &[(6, 0)],
            _ => &[],
        };
        if !names.is_empty() {
            let mut rd = Decoder::at(m, rdata);
            for &(fixed, after) in names {
                rd.skip(fixed)?;
                read_name_past_header(&mut rd, &mut name)?;
                rd.skip(after)?;
            }
            if rd.pos() != end {
                return Err(WireError::BadRdata);
            }
        }
        d.skip(rdlen)?;
    }
    Ok(())
}

/// Rotate the A/AAAA records of the answer section by `by` places: CoreDNS's `loadbalance`
/// (`round_robin`) for replies clusterdns did not write (forwarded, cached, hosts). Only a
/// NOERROR reply, and only the run of address records that follows the CNAMEs (the common
/// shape: every upstream writes them together), is touched. Records are moved whole, and only
/// when every owner in the run is a pointer to a name before it and no later owner points into
/// the run, so every compression pointer stays valid. Returns whether records moved.
pub fn rotate_addresses(msg: &mut [u8], by: usize) -> bool {
    if msg.len() < HEADER_LEN || rcode_of(msg) != 0 {
        return false;
    }
    let Ok(lay) = layout(msg) else {
        return false;
    };
    let is_addr =
        |r: &Rec| r.section == Section::Answer && (r.rtype == rtype::A || r.rtype == rtype::AAAA);
    let Some(first) = lay.records.iter().position(is_addr) else {
        return false;
    };
    let n = lay.records[first..]
        .iter()
        .take_while(|r| is_addr(r))
        .count();
    if n < 2 || by.is_multiple_of(n) {
        return false;
    }
    let run = &lay.records[first..first + n];
    let (start, end) = (run[0].start, run[n - 1].end);
    let pointer = |at: usize| -> Option<usize> {
        (msg[at] & 0xC0 == 0xC0)
            .then(|| (usize::from(msg[at] & 0x3F) << 8) | usize::from(msg[at + 1]))
    };
    if run
        .iter()
        .any(|r| pointer(r.start).is_none_or(|t| t >= start))
    {
        return false;
    }
    if lay.records[first + n..]
        .iter()
        .any(|r| pointer(r.start).is_some_and(|t| (start..end).contains(&t)))
    {
        return false;
    }
    let k = by % n;
    let mut moved = Vec::with_capacity(end - start);
    for r in run[k..].iter().chain(&run[..k]) {
        moved.extend_from_slice(&msg[r.start..r.end]);
    }
    msg[start..end].copy_from_slice(&moved);
    true
}

/// Rewrite `msg` (which must not fit) into `out` so that it fits in `max` bytes: the header,
/// the question, as many whole records as fit (in message order, so compression pointers stay
/// valid), and the OPT record. TC is set only when an answer or authority record is left out:
/// RFC 2181 §9, dropping additional records is not truncation.
pub fn truncate_into(msg: &[u8], max: usize, out: &mut Vec<u8>) -> Result<(), WireError> {
    let lay = layout(msg)?;
    let opt = lay.opt.map(|i| lay.records[i]);
    let opt_len = opt.map_or(0, |r| r.end - r.start);
    let mut counts = [0u16; 3];
    let mut cut = lay.question_end;
    let mut opt_in_prefix = false;
    let mut kept = 0;
    for (i, r) in lay.records.iter().enumerate() {
        if Some(i) == lay.opt {
            // The OPT record sits here: keep it in place if it fits (space was reserved).
            if r.end > max {
                break;
            }
            opt_in_prefix = true;
            cut = r.end;
            kept = i + 1;
            continue;
        }
        // Space for the OPT record is reserved until it is part of the prefix.
        let reserve = if opt_in_prefix { 0 } else { opt_len };
        if r.end + reserve > max {
            break;
        }
        cut = r.end;
        counts[r.section as usize] += 1;
        kept = i + 1;
    }
    let lost_answers = lay.records[kept..]
        .iter()
        .any(|r| r.section != Section::Additional);
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
            let mut d = Decoder::at(msg, r.start);
            skip_name(&mut d)?;
            out.push(0);
            out.extend_from_slice(d.bytes(8)?);
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
    if lost_answers || out.len() == HEADER_LEN {
        out[2] |= F_TC;
    }
    put_u16(out, 6, counts[0]);
    put_u16(out, 8, counts[1]);
    put_u16(out, 10, ar);
    Ok(())
}

/// Make `out` fit in `max`: truncate it in place if it is longer.
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

/// The client's reply made from `reply` (an upstream's, or a stored one): its bytes with the
/// client's ID and question bytes (same length; only the case may differ), fitted to
/// `max_size`. A reply without the question (some servers send errors that way) becomes our
/// own with its rcode.
pub fn forwarded(q: &Query<'_>, reply: &[u8], max_size: usize, max_udp: u16, out: &mut Vec<u8>) {
    out.clear();
    let qe = q.question_end();
    let same_question = reply.len() >= qe
        && u16_at(reply, 4) == 1
        && uncompressed_len(&reply[HEADER_LEN..]) == Some(q.qname().len());
    if same_question {
        out.extend_from_slice(reply);
        out[0..2].copy_from_slice(&q.id.to_be_bytes());
        out[HEADER_LEN..qe].copy_from_slice(q.question());
    } else {
        rcode_reply(out, q, rcode_of(reply), true, max_udp);
    }
    fit(out, max_size);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{ADDITIONAL, Writer, rcode, u32_at};
    use std::net::Ipv4Addr;

    fn reply_with(n_answers: usize, n_additional: usize, edns: bool) -> Vec<u8> {
        let mut name = Vec::new();
        crate::wire::encode_name("many.example", &mut name).unwrap();
        let m = crate::wire::query::build(0x1234, &name, rtype::A, true, edns.then_some(1232));
        let q = Query::parse(&m).unwrap();
        let mut out = Vec::new();
        let mut w = Writer::new(&mut out, &q, 65535);
        for i in 0..n_answers {
            w.record(|w| {
                w.owner_qname();
                w.a(60, Ipv4Addr::new(10, 0, 0, i as u8));
            });
        }
        w.section(ADDITIONAL);
        for i in 0..n_additional {
            w.record(|w| {
                w.owner_qname();
                w.a(60, Ipv4Addr::new(10, 0, 1, i as u8));
            });
        }
        w.finish(&q, rcode::NOERROR, false, true, 1232);
        out
    }

    #[test]
    fn truncation_keeps_header_question_opt() {
        let full = reply_with(40, 0, true);
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
        let mut v = reply_with(40, 0, false);
        fit(&mut v, 512);
        assert!(v.len() <= 512 && v[2] & F_TC != 0);
        assert!(layout(&v).unwrap().opt.is_none());
        // A message that fits is left alone.
        let small = reply_with(2, 0, true);
        let mut v = small.clone();
        fit(&mut v, 512);
        assert_eq!(v, small);
    }

    #[test]
    fn dropping_additional_records_is_not_truncation() {
        let full = reply_with(5, 40, true);
        let mut out = Vec::new();
        truncate_into(&full, 512, &mut out).unwrap();
        assert_eq!(out[2] & F_TC, 0, "RFC 2181 §9");
        assert_eq!(u16_at(&out, 6), 5);
        let m = hickory_proto::op::Message::from_vec(&out).unwrap();
        assert!(m.additionals.len() < 40 && m.edns.is_some());
    }

    /// A reply of `records` (each: owner pointer to the question, type, RDATA) to
    /// `a.example. A`, with `ar` of them counted in the additional section.
    fn reply_of(records: &[(u16, &[u8])], ar: usize) -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(b"\x01a\x07example\x00\x00\x01\x00\x01");
        put_u16(&mut m, 6, (records.len() - ar) as u16);
        put_u16(&mut m, 10, ar as u16);
        for (typ, rdata) in records {
            if *typ == rtype::OPT {
                m.push(0);
            } else {
                m.extend_from_slice(&[0xC0, 12]);
            }
            m.extend_from_slice(&typ.to_be_bytes());
            m.extend_from_slice(&[0, 1, 0, 0, 0, 60]);
            m.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            m.extend_from_slice(rdata);
        }
        m
    }

    #[test]
    fn upstream_replies_are_checked_whole() {
        // Well formed: addresses, names in RDATA (compressed or not), SOA, MX, SRV, unknown
        // types passed as they are, an OPT at the end, bytes after the last record.
        let soa: &[u8] = b"\x02ns\xC0\x0E\x0Ahostmaster\xC0\x0E\0\0\0\x01\0\0\0\x02\0\0\0\x03\0\0\0\x04\0\0\0\x05";
        let good = reply_of(
            &[
                (rtype::A, &[10, 0, 0, 1]),
                (rtype::AAAA, &[0; 16]),
                (rtype::CNAME, b"\x01b\xC0\x0E"),
                (rtype::SOA, soa),
                (15, b"\0\x0A\x02mx\xC0\x0E"),
                (rtype::SRV, b"\0\0\0\x01\0\x50\x01t\x07example\0"),
                (rtype::TXT, b"\x05hello"),
                (65280, b"anything"),
                (rtype::OPT, b""),
            ],
            1,
        );
        assert_eq!(check(&good), Ok(()));
        let mut padded = good.clone();
        padded.resize(4096, 0);
        assert_eq!(check(&padded), Ok(()));
        // Each found by fuzzing the resolver with a hostile upstream.
        for (what, bad, err) in [
            (
                "A of 3 bytes",
                reply_of(&[(rtype::A, &[1, 2, 3])], 0),
                WireError::BadRdata,
            ),
            (
                "AAAA of 4",
                reply_of(&[(rtype::AAAA, &[1, 2, 3, 4])], 0),
                WireError::BadRdata,
            ),
            (
                "CNAME with bytes after its name",
                reply_of(&[(rtype::CNAME, b"\x01b\0x")], 0),
                WireError::BadRdata,
            ),
            (
                "CNAME running past its RDATA",
                reply_of(&[(rtype::CNAME, b"\x05b")], 0),
                WireError::Short,
            ),
            (
                "SOA without its numbers",
                reply_of(&[(rtype::SOA, b"\0\0")], 0),
                WireError::Short,
            ),
            (
                "pointer loop in RDATA",
                reply_of(&[(rtype::PTR, b"\xC0\x27")], 0),
                WireError::Pointer,
            ),
            (
                "OPT in the answer",
                reply_of(&[(rtype::OPT, b"")], 0),
                WireError::BadRdata,
            ),
            (
                "two OPTs",
                reply_of(&[(rtype::OPT, b""), (rtype::OPT, b"")], 2),
                WireError::BadOpt,
            ),
        ] {
            assert_eq!(check(&bad), Err(err), "{what}");
        }
        let mut cut = good.clone();
        cut.truncate(good.len() - 3);
        assert_eq!(check(&cut), Err(WireError::Short), "cut record");
        let mut counts = good.clone();
        counts[6..12].copy_from_slice(&[0xFF; 6]);
        assert!(check(&counts).is_err(), "huge counts");
        let mut owner = good.clone();
        owner[27] = 0xC0;
        owner[28] = 0xFF;
        assert_eq!(
            check(&owner),
            Err(WireError::Pointer),
            "owner pointing forwards"
        );
    }

    #[test]
    fn layout_finds_ttls_and_opt() {
        let full = reply_with(3, 0, true);
        let lay = layout(&full).unwrap();
        assert_eq!(lay.records.len(), 4);
        assert_eq!(lay.opt, Some(3));
        for r in &lay.records[..3] {
            assert_eq!(u32_at(&full, r.ttl_off), 60);
            assert_eq!(r.section, Section::Answer);
        }
        // Hostile counts: an error, not a large allocation.
        let mut bad = full.clone();
        bad[6..12].copy_from_slice(&[0xFF; 6]);
        assert_eq!(layout(&bad).unwrap_err(), WireError::Short);
    }

    #[test]
    fn address_records_rotate_whole_and_only_safely() {
        use hickory_proto::op::{Message, MessageType, OpCode, Query as HQuery};
        use hickory_proto::rr::{Name, RData, Record, RecordType, rdata};
        let name = Name::from_ascii("www.example.").unwrap();
        let target = Name::from_ascii("edge.example.").unwrap();
        let mut m = Message::new(7, MessageType::Response, OpCode::Query);
        m.add_query(HQuery::query(name.clone(), RecordType::A));
        m.answers.push(Record::from_rdata(
            name.clone(),
            60,
            RData::CNAME(rdata::CNAME(target.clone())),
        ));
        for i in 1..=3u8 {
            m.answers.push(Record::from_rdata(
                target.clone(),
                60,
                RData::A(rdata::A::new(10, 0, 0, i)),
            ));
        }
        let mut b = m.to_vec().unwrap();
        assert!(rotate_addresses(&mut b, 1));
        let got = Message::from_vec(&b).unwrap();
        let ips: Vec<String> = got.answers[1..]
            .iter()
            .map(|r| r.data.to_string())
            .collect();
        assert_eq!(ips, ["10.0.0.2", "10.0.0.3", "10.0.0.1"]);
        assert_eq!(
            got.answers[0].record_type(),
            RecordType::CNAME,
            "CNAME stays first"
        );
        // A rotation by a multiple of the count, a NXDOMAIN, a single address: nothing moves.
        let before = b.clone();
        assert!(!rotate_addresses(&mut b, 3));
        assert_eq!(b, before);
        let mut nx = before.clone();
        nx[3] = (nx[3] & 0xF0) | 3;
        assert!(!rotate_addresses(&mut nx, 1));
        // Owners written in full (not pointers): left alone rather than risk a pointer into them.
        let mut full = before.clone();
        let lay = layout(&full).unwrap();
        let first_a = lay.records[1].start;
        let mut w = vec![];
        crate::wire::encode_name("edge.example.", &mut w).unwrap();
        full.splice(first_a..first_a + 2, w);
        assert!(!rotate_addresses(&mut full, 1));
    }
}
