//! Writing replies straight into a reusable buffer: the header, the question as the client
//! wrote it, and records section by section under a size limit.
//!
//! Why not hickory's `Message` here: a full reply built and encoded by it costs tens of
//! allocations; an answer is a header, the question echoed, and a handful of fixed-shape
//! records, which cost a few hundred bytes of copying written directly.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::decoder::Decoder;
use super::edns::{OPT_LEN, push_opt};
use super::name::{MAX_NAME, read_name};
use super::query::{ParseError, Query};
use super::{CLASS_IN, HEADER_LEN, rtype};

/// Sections, in order.
pub const ANSWER: usize = 0;
pub const AUTHORITY: usize = 1;
pub const ADDITIONAL: usize = 2;

/// RFC 1035 §4.1.4: a pointer holds a 14-bit offset; names written later than this cannot be
/// pointed at and are written in full.
const MAX_POINTER: usize = 0x3FFF;

/// The writer of one reply. A record that does not fit is rolled back; in the answer section
/// that sets TC and ends the reply, in the others the record is just left out: RFC 2181 §9,
/// "the TC bit should not be set merely because some extra information could have been
/// included in a reply but there was insufficient room", and records are only ever sent whole.
pub struct Writer<'a> {
    buf: &'a mut Vec<u8>,
    /// Largest reply allowed, less the room kept for the OPT record.
    limit: usize,
    counts: [u16; 3],
    section: usize,
    full: bool,
    truncated: bool,
    /// Length of the question name (it starts at offset 12).
    qname_len: usize,
    /// Offset in the message where the zone suffix of the question name starts, when the
    /// question is inside a served zone: records point there so the zone keeps the query's case.
    zone_off: Option<usize>,
    /// Offset of the owner name of the records being written: the question (12), or the
    /// target of a CNAME being chased.
    owner_at: usize,
}

impl<'a> Writer<'a> {
    /// Start a reply to `q`: header (counts filled in by [`Writer::finish`]) and the question
    /// as the client wrote it. `max_size` is the largest message the client takes.
    pub fn new(buf: &'a mut Vec<u8>, q: &Query<'_>, max_size: usize) -> Self {
        buf.clear();
        buf.extend_from_slice(&q.id.to_be_bytes());
        buf.extend_from_slice(&[0x80 | (q.rd as u8), 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        buf.extend_from_slice(q.question());
        let reserve = if q.edns.is_some() { OPT_LEN } else { 0 };
        Writer {
            buf,
            limit: max_size.saturating_sub(reserve),
            counts: [0; 3],
            section: ANSWER,
            full: false,
            truncated: false,
            qname_len: q.qname().len(),
            zone_off: None,
            owner_at: HEADER_LEN,
        }
    }

    /// Declare that the question lies in a zone whose wire name is `zone_len` bytes long
    /// (including the root byte): the zone suffix of the question is then at a known offset.
    pub fn set_zone_suffix(&mut self, zone_len: usize) {
        if zone_len <= self.qname_len {
            self.zone_off = Some(HEADER_LEN + self.qname_len - zone_len);
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

    /// A whole record owned by the question name (or the owner set by [`Writer::set_owner`]),
    /// with `rdata` as given; rolled back if it does not fit.
    pub fn rr(&mut self, typ: u16, ttl: u32, rdata: &[u8]) -> bool {
        self.record(|w| {
            w.owner_qname();
            let at = w.rr_head(typ, ttl);
            w.bytes(rdata);
            w.end_rdata(at);
        })
    }

    /// Owner = the question name (a pointer to offset 12), or the name set by
    /// [`Writer::set_owner`].
    #[inline]
    pub fn owner_qname(&mut self) {
        self.name_at(self.owner_at);
    }

    /// Make records owned by the name at `at` (a CNAME target written earlier).
    pub fn set_owner(&mut self, at: usize) {
        self.owner_at = at;
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
                let end = HEADER_LEN + self.qname_len;
                self.buf.extend_from_within(off..end);
            }
            None => self.buf.push(0),
        }
    }

    /// The zone name itself (pointer to the question's zone suffix, always within the first
    /// 267 bytes).
    #[inline]
    pub fn zone_ptr(&mut self) {
        match self.zone_off {
            Some(off) => self
                .buf
                .extend_from_slice(&(0xC000 | off as u16).to_be_bytes()),
            None => self.buf.push(0),
        }
    }

    /// The name written earlier at `off`: a compression pointer where the offset fits in 14
    /// bits, else the name copied out in full (answers over TCP can be 64 KiB long).
    #[inline]
    pub fn name_at(&mut self, off: usize) {
        if off <= MAX_POINTER {
            self.buf
                .extend_from_slice(&(0xC000 | off as u16).to_be_bytes());
        } else {
            self.name_in_full(off);
        }
    }

    #[cold]
    #[inline(never)]
    fn name_in_full(&mut self, off: usize) {
        let mut name = [0u8; MAX_NAME];
        let mut d = Decoder::at(self.buf, off);
        match read_name(&mut d, &mut name) {
            Ok((n, _)) => self.buf.extend_from_slice(&name[..n]),
            Err(e) => {
                // Only names this writer wrote are referred to: this cannot happen.
                debug_assert!(false, "no name at {off}: {e}");
                self.buf.push(0);
            }
        }
    }

    /// Raw bytes (an absolute wire name, rdata parts).
    #[inline]
    pub fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }

    /// TYPE, CLASS IN, TTL; returns the offset of RDLENGTH to patch with [`Writer::end_rdata`].
    #[inline]
    pub fn rr_head(&mut self, typ: u16, ttl: u32) -> usize {
        let at = self.buf.len() + 8;
        self.head(typ, ttl, 0);
        at
    }

    /// TYPE, CLASS IN, TTL, RDLENGTH.
    #[inline]
    fn head(&mut self, typ: u16, ttl: u32, rdlen: u16) {
        self.buf.extend_from_slice(&typ.to_be_bytes());
        self.buf.extend_from_slice(&CLASS_IN.to_be_bytes());
        self.buf.extend_from_slice(&ttl.to_be_bytes());
        self.buf.extend_from_slice(&rdlen.to_be_bytes());
    }

    #[inline]
    pub fn end_rdata(&mut self, rdlen_at: usize) {
        let len = (self.buf.len() - rdlen_at - 2) as u16;
        self.buf[rdlen_at..rdlen_at + 2].copy_from_slice(&len.to_be_bytes());
    }

    #[inline]
    pub fn a(&mut self, ttl: u32, ip: Ipv4Addr) {
        self.fixed_rdata(rtype::A, ttl, &ip.octets());
    }

    #[inline]
    pub fn aaaa(&mut self, ttl: u32, ip: Ipv6Addr) {
        self.fixed_rdata(rtype::AAAA, ttl, &ip.octets());
    }

    /// The rest of a record whose RDATA has a length known up front (an address): nothing to
    /// patch afterwards.
    #[inline]
    fn fixed_rdata<const N: usize>(&mut self, typ: u16, ttl: u32, rdata: &[u8; N]) {
        self.head(typ, ttl, N as u16);
        self.buf.extend_from_slice(rdata);
    }

    /// Finish the reply: flags, rcode, counts, and the OPT record when the query had one
    /// (advertising `max_udp`). `aa`: authoritative answer. `ra`: recursion available.
    pub fn finish(self, q: &Query<'_>, rcode: u16, aa: bool, ra: bool, max_udp: u16) {
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

/// A reply to a parsed query with only an rcode (SERVFAIL, REFUSED, BADVERS, ...): header,
/// the question echoed, and an OPT record if the query had one.
pub fn rcode_reply(out: &mut Vec<u8>, q: &Query<'_>, rcode: u16, ra: bool, max_udp: u16) {
    Writer::new(out, q, usize::MAX).finish(q, rcode, false, ra, max_udp);
}

/// The reply to a message [`Query::parse`] refused with [`ParseError::Reply`]: ID, opcode, RD
/// and CD of the message, the rcode, and the question echoed when it could be read; no OPT (the
/// message's EDNS was not understood). Nothing (empty `out`) for [`ParseError::Drop`].
pub fn error_reply(out: &mut Vec<u8>, e: &ParseError) {
    out.clear();
    let ParseError::Reply {
        id,
        flags,
        rcode,
        question,
    } = e
    else {
        return;
    };
    let (id, flags, rcode) = (*id, *flags, *rcode);
    out.extend_from_slice(&id.to_be_bytes());
    // Keep opcode and RD of the query (0x79), set QR; keep CD (RFC 4035 §3.1.6).
    out.push(0x80 | ((flags >> 8) as u8 & 0x79));
    out.push((rcode & 0x0F) as u8 | (flags as u8 & 0x10));
    out.extend_from_slice(&[0, question.is_some() as u8, 0, 0, 0, 0, 0, 0]);
    if let Some(q) = question {
        out.extend_from_slice(q);
    }
}

/// Largest reply for a UDP client: 512 bytes without EDNS (RFC 1035 §4.2.1), else the client's
/// advertised size (at least 512, RFC 6891 §6.2.5) capped by the server's `max_udp` (1232 by
/// default, DNS flag day 2020).
pub fn udp_limit(q: &Query<'_>, max_udp: u16) -> usize {
    match q.edns {
        Some(e) => e.payload.min(max_udp).max(512) as usize,
        None => 512,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::rcode;

    #[test]
    fn names_past_16k_are_written_in_full() {
        let q = Query::new("Big.Example.", rtype::SRV).unwrap();
        let mut buf = Vec::new();
        let mut w = Writer::new(&mut buf, &q, 65535);
        w.set_zone_suffix(13);
        // Pad past 16 KiB with TXT records, then write a name there and refer to it twice.
        while w.pos() < 0x4100 {
            w.record(|w| {
                w.owner_qname();
                let at = w.rr_head(rtype::TXT, 5);
                w.bytes(&[255]);
                w.bytes(&[b'x'; 255]);
                w.end_rdata(at);
            });
        }
        let mut target = 0;
        w.record(|w| {
            w.owner_qname();
            let at = w.rr_head(rtype::SRV, 5);
            w.bytes(&[0, 0, 0, 1, 0, 80]);
            target = w.pos();
            w.bytes(b"\x03web");
            w.zone_ptr();
            w.end_rdata(at);
        });
        assert!(target > MAX_POINTER);
        w.section(ADDITIONAL);
        w.record(|w| {
            w.name_at(target);
            w.a(5, Ipv4Addr::new(10, 0, 0, 1));
        });
        w.finish(&q, rcode::NOERROR, true, false, 1232);
        let m = hickory_proto::op::Message::from_vec(&buf).expect("decodes");
        assert_eq!(
            m.additionals[0].to_string(),
            "web.Big.Example. 5 IN A 10.0.0.1",
            "the zone keeps the question's case"
        );
    }

    #[test]
    fn error_replies() {
        let mut out = Vec::new();
        // Opcode 5 and RD kept, AA and TC dropped, QR set; FORMERR with CD kept, RA/AD dropped.
        let e = ParseError::Reply {
            id: 0xABCD,
            flags: 0x2FFF,
            rcode: rcode::FORMERR,
            question: None,
        };
        error_reply(&mut out, &e);
        assert_eq!(out, [0xAB, 0xCD, 0xA9, 0x11, 0, 0, 0, 0, 0, 0, 0, 0]);
        let e = ParseError::Reply {
            id: 7,
            flags: 0x2100,
            rcode: rcode::NOTIMP,
            question: Some(vec![0, 0, 1, 0, 1].into()),
        };
        error_reply(&mut out, &e);
        assert_eq!(out, [0, 7, 0xA1, 4, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1]);
        error_reply(&mut out, &ParseError::Drop);
        assert!(out.is_empty());
    }
}
