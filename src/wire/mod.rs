//! The DNS wire format, the one layer that reads and writes it for the zone, the resolver and
//! the cache. hickory-proto stays the reference: the tests decode every reply with it.
//!
//! - [`decoder`]: a bounds-checked cursor over untrusted bytes.
//! - [`name`]: names — read (following compression pointers, with checks), skipped, written.
//! - [`query`]: a query parsed once into one borrowed view ([`Query`]) that travels from the
//!   socket through the engine to the resolver; the message sent upstream is made from it.
//! - [`edns`]: the OPT record and its options.
//! - [`writer`]: replies written straight into a reused buffer ([`Writer`]), compression
//!   pointers only where the offset fits in 14 bits.
//! - [`reply`]: replies we did not write (an upstream's, the cache's): their layout, the
//!   client's ID and question put in, truncation to the client's size.

pub mod decoder;
pub mod edns;
pub mod name;
pub mod query;
pub mod reply;
pub mod writer;

pub use decoder::{Decoder, WireError};
pub use edns::{Edns, OPT_LEN, push_opt};
pub use name::{
    MAX_NAME, display_name, dotted_to_wire, encode_labels, encode_name, eq_ignore_case, in_domain,
    lower_into, reverse_ip, reverse_name, wire_to_dotted,
};
pub use query::{ParseError, Query};
pub use reply::{Layout, Rec, Section, fit, layout};
pub use writer::{ADDITIONAL, ANSWER, AUTHORITY, Writer, error_reply, rcode_reply, udp_limit};

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

// Header flag bits, byte 2.
pub const F_QR: u8 = 0x80;
pub const F_AA: u8 = 0x04;
pub const F_TC: u8 = 0x02;
pub const F_RD: u8 = 0x01;
// Header flag bits, byte 3.
pub const F_RA: u8 = 0x80;
pub const F_AD: u8 = 0x20;
pub const F_CD: u8 = 0x10;

/// The UDP payload size clusterdns advertises in the queries it sends upstream and caps the
/// clients' at (DNS flag day 2020): larger answers come over TCP, unfragmented.
pub const EDNS_SIZE: u16 = 1232;

/// The big-endian u16 at `i` of a message already checked to be that long (a header field of
/// a message of at least [`HEADER_LEN`] bytes, a field a [`Layout`] found).
#[inline]
pub fn u16_at(m: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([m[i], m[i + 1]])
}

/// The big-endian u32 at `i` (see [`u16_at`]).
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

/// The rcode in a message's header (low 4 bits), comparable with [`rcode`]; SERVFAIL for a
/// message too short to have one.
#[inline]
pub fn rcode_of(m: &[u8]) -> u16 {
    m.get(3).map_or(rcode::SERVFAIL, |b| u16::from(b & 0x0F))
}
