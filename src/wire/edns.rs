//! EDNS(0) (RFC 6891): what a query's OPT record says, its options, and the OPT records
//! clusterdns writes.

use super::decoder::{Decoder, WireError};
use super::rtype;

/// The size of an OPT record with no options: root name, type, class, TTL, RDLENGTH.
pub const OPT_LEN: usize = 11;

/// EDNS option codes clusterdns looks at.
pub mod option {
    /// RFC 7871: EDNS Client Subnet.
    pub const CLIENT_SUBNET: u16 = 8;
    /// RFC 7873: DNS cookies.
    pub const COOKIE: u16 = 10;
}

/// EDNS facts from a query's OPT record, and where its options sit in the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edns {
    /// The requestor's UDP payload size as sent (RFC 6891 §6.2.3: "Values lower than 512 MUST
    /// be treated as equal to 512"; [`super::udp_limit`] does).
    pub payload: u16,
    /// The upper 8 bits of the extended RCODE (zero in queries).
    pub ext_rcode: u8,
    pub version: u8,
    /// DNSSEC OK (RFC 3225): copied into the response's OPT.
    pub dnssec_ok: bool,
    /// Offset and length of the OPT's RDATA (the options) in the query message.
    pub(super) options_at: u16,
    pub(super) options_len: u16,
}

impl Edns {
    /// Read the OPT record whose TYPE the decoder has just read (it stands at CLASS), up to
    /// the end of its RDATA. Options must fill the RDATA exactly (RFC 6891 §6.1.2).
    pub(super) fn read(d: &mut Decoder<'_>) -> Result<Edns, WireError> {
        let payload = d.u16()?;
        let ext_rcode = d.u8()?;
        let version = d.u8()?;
        let flags = d.u16()?;
        let rdlen = d.u16()? as usize;
        let options_at = d.pos();
        let rdata = d.bytes(rdlen)?;
        if options(rdata).any(|o| o.is_err()) {
            return Err(WireError::BadOpt);
        }
        Ok(Edns {
            payload,
            ext_rcode,
            version,
            dnssec_ok: flags & 0x8000 != 0,
            options_at: u16::try_from(options_at).map_err(|_| WireError::BadOpt)?,
            options_len: rdlen as u16,
        })
    }

    /// The options' bytes within `msg` (the message this was read from).
    pub(super) fn options_in<'m>(&self, msg: &'m [u8]) -> &'m [u8] {
        let at = self.options_at as usize;
        &msg[at..at + self.options_len as usize]
    }
}

/// The options of an OPT RDATA: (code, data) pairs; an error where one overruns the RDATA.
pub fn options(rdata: &[u8]) -> impl Iterator<Item = Result<(u16, &[u8]), WireError>> {
    let mut d = Decoder::new(rdata);
    std::iter::from_fn(move || {
        if d.is_empty() {
            return None;
        }
        let opt = (|| {
            let code = d.u16()?;
            let len = d.u16()? as usize;
            Ok((code, d.bytes(len)?))
        })();
        if opt.is_err() {
            // Stop after the first error.
            d = Decoder::new(&[]);
        }
        Some(opt)
    })
}

/// Append an OPT record ([`OPT_LEN`] bytes plus `options`): root owner, TYPE 41, CLASS = the
/// UDP payload size, then the TTL: RFC 6891 §6.1.3, the upper 8 bits of the extended 12-bit
/// `rcode`, version 0, DO (RFC 3225 §3); RDLENGTH and the options.
#[inline]
pub fn push_opt_with(buf: &mut Vec<u8>, payload: u16, rcode: u16, dnssec_ok: bool, options: &[u8]) {
    buf.push(0);
    buf.extend_from_slice(&rtype::OPT.to_be_bytes());
    buf.extend_from_slice(&payload.to_be_bytes());
    buf.push((rcode >> 4) as u8);
    buf.push(0);
    buf.push(if dnssec_ok { 0x80 } else { 0 });
    buf.push(0);
    buf.extend_from_slice(&(options.len() as u16).to_be_bytes());
    buf.extend_from_slice(options);
}

/// [`push_opt_with`] without options.
#[inline]
pub fn push_opt(buf: &mut Vec<u8>, payload: u16, rcode: u16, dnssec_ok: bool) {
    push_opt_with(buf, payload, rcode, dnssec_ok, &[]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::rcode;

    #[test]
    fn opt_record() {
        let mut b = Vec::new();
        push_opt(&mut b, 1232, rcode::BADVERS, true);
        assert_eq!(b, [0, 0, 41, 0x04, 0xD0, 1, 0, 0x80, 0, 0, 0]);
        assert_eq!(b.len(), OPT_LEN);
    }

    #[test]
    fn option_framing() {
        let good = [0, 10, 0, 2, 1, 2, 0, 8, 0, 0];
        let v: Vec<_> = options(&good).collect::<Result<_, _>>().unwrap();
        assert_eq!(v, vec![(10, &[1u8, 2][..]), (8, &[][..])]);
        assert!(options(&[0, 10, 0, 3, 1, 2]).any(|o| o.is_err()));
        assert!(options(&[0, 10, 0]).any(|o| o.is_err()));
        assert_eq!(options(&[]).count(), 0);
    }
}
