//! What a transfer request says beyond its question: the secondary's serial of an IXFR.

use crate::wire::name::skip_name;
use crate::wire::{Decoder, HEADER_LEN, rtype};

/// RFC 1995 §3: "The authority section of an IXFR query message contains the SOA record of the
/// version of the zone the client has": its serial. None when there is none (or the message
/// cannot be read that far).
pub fn ixfr_serial(msg: &[u8]) -> Option<u32> {
    let mut d = Decoder::new(msg);
    d.skip(4).ok()?;
    let qd = d.u16().ok()?;
    let an = d.u16().ok()?;
    let ns = d.u16().ok()?;
    let mut d = Decoder::at(msg, HEADER_LEN);
    for _ in 0..qd {
        skip_name(&mut d).ok()?;
        d.skip(4).ok()?;
    }
    for i in 0..an as usize + ns as usize {
        skip_name(&mut d).ok()?;
        let typ = d.u16().ok()?;
        d.skip(6).ok()?;
        let rdlen = d.u16().ok()? as usize;
        let end = d.pos() + rdlen;
        if end > msg.len() {
            return None;
        }
        if i >= an as usize && typ == rtype::SOA {
            // MNAME, RNAME, then SERIAL.
            skip_name(&mut d).ok()?;
            skip_name(&mut d).ok()?;
            let serial = d.u32().ok()?;
            return (d.pos() + 16 <= end).then_some(serial);
        }
        d.skip(rdlen).ok()?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_serial_of_the_authority_soa() {
        let mut m =
            crate::wire::query::build(1, b"\x07cluster\x05local\x00", rtype::IXFR, false, None);
        assert_eq!(ixfr_serial(&m), None);
        m[9] = 1; // NSCOUNT
        // Owner: a pointer to the question; names in the RDATA compressed too.
        m.extend_from_slice(&[0xC0, 12, 0, 6, 0, 1, 0, 0, 0, 30, 0, 27]);
        m.extend_from_slice(&[2, b'n', b's', 0xC0, 12, 0xC0, 12]);
        m.extend_from_slice(&[
            0, 0, 0x30, 0x39, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4,
        ]);
        assert_eq!(ixfr_serial(&m), Some(12345));
        // Cut short.
        assert_eq!(ixfr_serial(&m[..m.len() - 3]), None);
    }
}
