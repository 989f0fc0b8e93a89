//! TSIG (RFC 8945): HMAC signatures on transfer requests, on every message of the answer, and
//! on NOTIFY. HMAC from `ring` (already in the dependency tree through rustls).
//!
//! What is signed (RFC 8945 §4.3): a request, and a single reply or the first message of a
//! multi-message reply, are signed over (the request's MAC, for a reply) the message without
//! its TSIG record (ARCOUNT one lower, the original ID) followed by the TSIG variables: key
//! name, class ANY, TTL 0, algorithm name, time signed, fudge, error, other data. "Subsequent
//! messages" of a reply (§5.3.1) are signed over the prior message's MAC, the message, and the
//! timers (time signed and fudge) alone. clusterdns signs every message of a transfer (the RFC
//! allows up to 99 unsigned ones between two signed ones).

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use ring::hmac;

use crate::wire::name::{MAX_NAME, read_name, skip_name};
use crate::wire::{CLASS_ANY, Decoder, HEADER_LEN, dotted_to_wire};

/// The TSIG RR type.
pub const TSIG: u16 = 250;
/// RCODE of a TSIG failure (RFC 8945 §5.2: "RCODE 9 (NOTAUTH)").
pub const NOTAUTH: u16 = 9;

/// The TSIG record's Error field (RFC 8945 §3).
pub mod error {
    pub const BADSIG: u16 = 16;
    pub const BADKEY: u16 = 17;
    pub const BADTIME: u16 = 18;
    pub const BADTRUNC: u16 = 22;
}

/// The HMAC algorithms clusterdns signs with (RFC 8945 §6: hmac-sha256 is mandatory; SHA-1 and
/// MD5 are not offered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    HmacSha256,
    HmacSha384,
    HmacSha512,
}

impl Algorithm {
    fn from_name(s: &str) -> Option<Algorithm> {
        match s.trim_end_matches('.').to_ascii_lowercase().as_str() {
            "hmac-sha256" => Some(Algorithm::HmacSha256),
            "hmac-sha384" => Some(Algorithm::HmacSha384),
            "hmac-sha512" => Some(Algorithm::HmacSha512),
            _ => None,
        }
    }

    /// The algorithm's name in wire form.
    fn wire(self) -> &'static [u8] {
        match self {
            Algorithm::HmacSha256 => b"\x0bhmac-sha256\x00",
            Algorithm::HmacSha384 => b"\x0bhmac-sha384\x00",
            Algorithm::HmacSha512 => b"\x0bhmac-sha512\x00",
        }
    }

    fn ring(self) -> hmac::Algorithm {
        match self {
            Algorithm::HmacSha256 => hmac::HMAC_SHA256,
            Algorithm::HmacSha384 => hmac::HMAC_SHA384,
            Algorithm::HmacSha512 => hmac::HMAC_SHA512,
        }
    }

    /// The full MAC's length.
    fn mac_len(self) -> usize {
        match self {
            Algorithm::HmacSha256 => 32,
            Algorithm::HmacSha384 => 48,
            Algorithm::HmacSha512 => 64,
        }
    }
}

/// A shared key.
pub struct Key {
    /// The key's name, wire form, lowercase.
    name: Box<[u8]>,
    alg: Algorithm,
    key: hmac::Key,
    /// Seconds of clock difference accepted, and written into our signatures.
    fudge: u16,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("name", &crate::wire::display_name(&self.name))
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl Key {
    /// A key from its name, algorithm name and base64 secret.
    pub fn new(name: &str, algorithm: &str, secret: &str, fudge: Duration) -> Result<Key, String> {
        let alg = Algorithm::from_name(algorithm)
            .ok_or_else(|| format!("unknown TSIG algorithm {algorithm:?}"))?;
        let secret = base64::engine::general_purpose::STANDARD
            .decode(secret.trim())
            .map_err(|e| format!("the TSIG secret is not base64: {e}"))?;
        if secret.is_empty() {
            return Err("the TSIG secret is empty".into());
        }
        let name = dotted_to_wire(name).map_err(|_| format!("{name:?} is not a key name"))?;
        Ok(Key {
            name: name.into_boxed_slice(),
            alg,
            key: hmac::Key::new(alg.ring(), &secret),
            fudge: fudge.as_secs().min(u16::MAX as u64) as u16,
        })
    }

    /// Whether a record names this key and its algorithm.
    pub fn is(&self, rec: &Record<'_>) -> bool {
        *rec.name == *self.name && *rec.algorithm == *self.alg.wire()
    }
}

/// Seconds since the epoch, as TSIG counts time.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A message that cannot be read far enough to find its TSIG record, or whose TSIG record is
/// not the last one (RFC 8945 §5.1: "it MUST be the last record"): FORMERR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// A TSIG record read from a message.
#[derive(Debug)]
pub struct Record<'a> {
    /// Where the record starts in the message.
    pub start: usize,
    /// The key name (the record's owner), wire form, lowercase.
    pub name: Box<[u8]>,
    /// The algorithm name, wire form, lowercase.
    pub algorithm: Box<[u8]>,
    pub time: u64,
    pub fudge: u16,
    pub mac: &'a [u8],
    pub original_id: u16,
    pub error: u16,
    pub other: &'a [u8],
}

/// The TSIG record of `msg`, if it has one (the last record of the additional section).
pub fn find(msg: &[u8]) -> Result<Option<Record<'_>>, Malformed> {
    let mut d = Decoder::new(msg);
    let counts = (|| {
        Some((
            d.skip(4).ok(),
            d.u16().ok()?,
            d.u16().ok()?,
            d.u16().ok()?,
            d.u16().ok()?,
        ))
    })();
    let Some((_, qd, an, ns, ar)) = counts else {
        return Err(Malformed);
    };
    let mut d = Decoder::at(msg, HEADER_LEN);
    for _ in 0..qd {
        skip_name(&mut d).map_err(|_| Malformed)?;
        d.skip(4).map_err(|_| Malformed)?;
    }
    let total = an as usize + ns as usize + ar as usize;
    for i in 0..total {
        let start = d.pos();
        skip_name(&mut d).map_err(|_| Malformed)?;
        let typ = d.u16().map_err(|_| Malformed)?;
        d.skip(6).map_err(|_| Malformed)?;
        let rdlen = d.u16().map_err(|_| Malformed)? as usize;
        let rdata_at = d.pos();
        d.skip(rdlen).map_err(|_| Malformed)?;
        if typ != TSIG {
            continue;
        }
        if i + 1 != total || ar == 0 {
            return Err(Malformed);
        }
        return read_record(msg, start, rdata_at, rdlen).map(Some);
    }
    Ok(None)
}

fn read_record(
    msg: &[u8],
    start: usize,
    rdata_at: usize,
    rdlen: usize,
) -> Result<Record<'_>, Malformed> {
    let mut buf = [0u8; MAX_NAME];
    let mut d = Decoder::at(msg, start);
    let (n, _) = read_name(&mut d, &mut buf).map_err(|_| Malformed)?;
    let mut name: Box<[u8]> = buf[..n].into();
    name.make_ascii_lowercase();
    let rdata = &msg[..rdata_at + rdlen];
    let mut d = Decoder::at(rdata, rdata_at);
    let r = (|| -> Result<Record<'_>, crate::wire::WireError> {
        let (n, _) = read_name(&mut d, &mut buf)?;
        let mut algorithm: Box<[u8]> = buf[..n].into();
        algorithm.make_ascii_lowercase();
        let hi = d.u16()? as u64;
        let lo = d.u32()? as u64;
        let fudge = d.u16()?;
        let mac_len = d.u16()? as usize;
        let mac = d.bytes(mac_len)?;
        let original_id = d.u16()?;
        let error = d.u16()?;
        let other_len = d.u16()? as usize;
        let other = d.bytes(other_len)?;
        Ok(Record {
            start,
            name,
            algorithm,
            time: hi << 32 | lo,
            fudge,
            mac,
            original_id,
            error,
            other,
        })
    })()
    .map_err(|_| Malformed)?;
    if d.pos() != rdata_at + rdlen {
        return Err(Malformed);
    }
    Ok(r)
}

/// The TSIG variables (RFC 8945 §4.3.3) a MAC covers, as the record carries them (or will):
///
/// ```text
/// | Source     | Field Name     | Notes                              |
/// | TSIG RR    | NAME           | Key name, in canonical wire format |
/// | TSIG RR    | CLASS          | MUST be ANY                        |
/// | TSIG RR    | TTL            | MUST be 0                          |
/// | TSIG RDATA | Algorithm Name | in canonical wire format           |
/// | TSIG RDATA | Time Signed    | in network byte order              |
/// | TSIG RDATA | Fudge          | in network byte order              |
/// | TSIG RDATA | Error          | in network byte order              |
/// | TSIG RDATA | Other Len      | in network byte order              |
/// | TSIG RDATA | Other Data     | exactly as transmitted             |
/// ```
///
/// Signing takes them from our key; verifying from the record received (its own fudge, not
/// ours, is what its signer digested).
struct Variables<'a> {
    name: &'a [u8],
    algorithm: &'a [u8],
    time: u64,
    fudge: u16,
    error: u16,
    other: &'a [u8],
}

impl<'a> Variables<'a> {
    /// The variables of a record we sign with `key`.
    fn ours(key: &'a Key, time: u64, error: u16, other: &'a [u8]) -> Self {
        Variables {
            name: &key.name,
            algorithm: key.alg.wire(),
            time,
            fudge: key.fudge,
            error,
            other,
        }
    }

    /// The variables of a record received.
    fn of(rec: &'a Record<'a>) -> Self {
        Variables {
            name: &rec.name,
            algorithm: &rec.algorithm,
            time: rec.time,
            fudge: rec.fudge,
            error: rec.error,
            other: rec.other,
        }
    }
}

/// The message a MAC covers (RFC 8945 §4.3.1: "before the TSIG RR has been added to the
/// additional data section and before the DNS Message Header's ARCOUNT field has been
/// incremented"), as we build it or as it arrived with its TSIG record.
enum Unsigned<'a> {
    /// A message as built, before its TSIG record is added.
    Built(&'a [u8]),
    /// A message received, with the TSIG record read from it: see [`unsigned_part`].
    Received(&'a [u8], &'a Record<'a>),
}

/// The MAC of a request, a single reply or a reply's first message, the one digest both
/// signing and verifying compute (RFC 8945 §4.3): the request's MAC (§4.3.2, for a reply: its
/// MAC Size and MAC Data), the message (§4.3.1), then the TSIG variables (§4.3.3). The RR's
/// RDLEN and the MAC Length are not digested (§4.3.3: "not guaranteed to be knowable before
/// the MAC is generated").
fn mac(
    key: &Key,
    request_mac: Option<&[u8]>,
    message: Unsigned<'_>,
    vars: &Variables<'_>,
) -> hmac::Tag {
    let mut ctx = hmac::Context::with_key(&key.key);
    if let Some(m) = request_mac {
        ctx.update(&(m.len() as u16).to_be_bytes());
        ctx.update(m);
    }
    match message {
        Unsigned::Built(msg) => ctx.update(msg),
        Unsigned::Received(msg, rec) => unsigned_part(&mut ctx, msg, rec),
    }
    ctx.update(vars.name);
    ctx.update(&CLASS_ANY.to_be_bytes());
    ctx.update(&0u32.to_be_bytes());
    ctx.update(vars.algorithm);
    ctx.update(&time48(vars.time));
    ctx.update(&vars.fudge.to_be_bytes());
    ctx.update(&vars.error.to_be_bytes());
    ctx.update(&(vars.other.len() as u16).to_be_bytes());
    ctx.update(vars.other);
    ctx.sign()
}

fn time48(t: u64) -> [u8; 6] {
    let b = t.to_be_bytes();
    [b[2], b[3], b[4], b[5], b[6], b[7]]
}

/// The part of a signed message its MAC covers: the message before its TSIG record, with the
/// original ID and ARCOUNT one lower.
fn unsigned_part(ctx: &mut hmac::Context, msg: &[u8], rec: &Record<'_>) {
    let ar = u16::from_be_bytes([msg[10], msg[11]]).saturating_sub(1);
    ctx.update(&rec.original_id.to_be_bytes());
    ctx.update(&msg[2..10]);
    ctx.update(&ar.to_be_bytes());
    ctx.update(&msg[HEADER_LEN..rec.start]);
}

/// Append a TSIG record with `mac` (empty: an unsigned error) to `msg`, and count it.
fn append(
    msg: &mut Vec<u8>,
    key_name: &[u8],
    alg: &[u8],
    fudge: u16,
    time: u64,
    mac: &[u8],
    error: u16,
    other: &[u8],
) {
    let id = [msg[0], msg[1]];
    msg.extend_from_slice(key_name);
    msg.extend_from_slice(&TSIG.to_be_bytes());
    msg.extend_from_slice(&CLASS_ANY.to_be_bytes());
    msg.extend_from_slice(&0u32.to_be_bytes());
    let rdlen = alg.len() + 6 + 2 + 2 + mac.len() + 2 + 2 + 2 + other.len();
    msg.extend_from_slice(&(rdlen as u16).to_be_bytes());
    msg.extend_from_slice(alg);
    msg.extend_from_slice(&time48(time));
    msg.extend_from_slice(&fudge.to_be_bytes());
    msg.extend_from_slice(&(mac.len() as u16).to_be_bytes());
    msg.extend_from_slice(mac);
    msg.extend_from_slice(&id);
    msg.extend_from_slice(&error.to_be_bytes());
    msg.extend_from_slice(&(other.len() as u16).to_be_bytes());
    msg.extend_from_slice(other);
    let ar = u16::from_be_bytes([msg[10], msg[11]]).wrapping_add(1);
    msg[10..12].copy_from_slice(&ar.to_be_bytes());
}

/// How many bytes the TSIG record of `key` adds to a message (for room in 64 KiB messages).
pub fn record_len(key: &Key) -> usize {
    key.name.len() + 10 + key.alg.wire().len() + 16 + key.alg.mac_len() + 6
}

/// Constant-time comparison (the MAC must not leak how much of it matched).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why a signed request is not accepted: the TSIG Error to answer with (NOTAUTH), or FORMERR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// RFC 8945 §5.2.2.1: a MAC shorter than the larger of 10 bytes and half the hash, or
    /// longer than the hash: FORMERR.
    FormErr,
    /// NOTAUTH with this TSIG error.
    NotAuth(u16),
}

/// Check a signed request (RFC 8945 §5.2, in its order: key, MAC, time). `now`: the server's
/// time. The accepted clock difference is the smaller of the request's fudge and ours.
pub fn verify_request(
    key: Option<&Key>,
    msg: &[u8],
    rec: &Record<'_>,
    now: u64,
) -> Result<(), Rejected> {
    let Some(key) = key.filter(|k| k.is(rec)) else {
        return Err(Rejected::NotAuth(error::BADKEY));
    };
    let full = key.alg.mac_len();
    if rec.mac.len() > full || rec.mac.len() < (full / 2).max(10) {
        return Err(Rejected::FormErr);
    }
    let tag = mac(key, None, Unsigned::Received(msg, rec), &Variables::of(rec));
    if !same(&tag.as_ref()[..rec.mac.len()], rec.mac) {
        return Err(Rejected::NotAuth(error::BADSIG));
    }
    // Only the full MAC is taken (no truncation policy): a valid shorter one is BADTRUNC.
    if rec.mac.len() < full {
        return Err(Rejected::NotAuth(error::BADTRUNC));
    }
    let fudge = u64::from(rec.fudge.min(key.fudge));
    if now.abs_diff(rec.time) > fudge {
        return Err(Rejected::NotAuth(error::BADTIME));
    }
    Ok(())
}

/// Sign `msg` (a request, e.g. a NOTIFY) with `key`; returns its MAC, which the reply's MAC
/// covers.
pub fn sign_request(key: &Key, msg: &mut Vec<u8>, now: u64) -> Vec<u8> {
    let tag = mac(
        key,
        None,
        Unsigned::Built(msg),
        &Variables::ours(key, now, 0, &[]),
    );
    append(
        msg,
        &key.name,
        key.alg.wire(),
        key.fudge,
        now,
        tag.as_ref(),
        0,
        &[],
    );
    tag.as_ref().to_vec()
}

/// Check a reply to a request we signed with MAC `request_mac` (a single reply).
pub fn verify_reply(key: &Key, msg: &[u8], rec: &Record<'_>, request_mac: &[u8], now: u64) -> bool {
    if !key.is(rec) || rec.mac.len() != key.alg.mac_len() {
        return false;
    }
    let tag = mac(
        key,
        Some(request_mac),
        Unsigned::Received(msg, rec),
        &Variables::of(rec),
    );
    same(tag.as_ref(), rec.mac) && now.abs_diff(rec.time) <= u64::from(rec.fudge.min(key.fudge))
}

/// Append the TSIG record of a NOTAUTH reply to a request that failed with `rejected`
/// (RFC 8945 §5.3.2): unsigned (no MAC) for a bad key or signature; signed for a bad time
/// (with our time in Other Data) or a truncated MAC.
pub fn append_error(
    key: Option<&Key>,
    reply: &mut Vec<u8>,
    rec: &Record<'_>,
    tsig_error: u16,
    now: u64,
) {
    match key.filter(|k| k.is(rec) && matches!(tsig_error, error::BADTIME | error::BADTRUNC)) {
        Some(k) => {
            let other = if tsig_error == error::BADTIME {
                time48(now).to_vec()
            } else {
                Vec::new()
            };
            let tag = mac(
                k,
                Some(rec.mac),
                Unsigned::Built(reply),
                &Variables::ours(k, rec.time, tsig_error, &other),
            );
            append(
                reply,
                &k.name,
                k.alg.wire(),
                k.fudge,
                rec.time,
                tag.as_ref(),
                tsig_error,
                &other,
            );
        }
        None => append(
            reply,
            &rec.name,
            &rec.algorithm,
            rec.fudge,
            rec.time,
            &[],
            tsig_error,
            &[],
        ),
    }
}

/// Signs the messages of a reply to a verified request, one after another: the first over the
/// request's MAC and the full variables, each later one over the MAC before it and the timers.
pub struct Signer {
    key: std::sync::Arc<Key>,
    prior: Vec<u8>,
    first: bool,
}

impl Signer {
    pub fn new(key: std::sync::Arc<Key>, request_mac: &[u8]) -> Self {
        Signer {
            key,
            prior: request_mac.to_vec(),
            first: true,
        }
    }

    /// The key signing.
    pub fn key(&self) -> &Key {
        &self.key
    }

    /// Sign `msg` (complete but for its TSIG record) and append the record.
    pub fn sign(&mut self, msg: &mut Vec<u8>, now: u64) {
        let tag = if self.first {
            mac(
                &self.key,
                Some(&self.prior),
                Unsigned::Built(msg),
                &Variables::ours(&self.key, now, 0, &[]),
            )
        } else {
            let mut ctx = hmac::Context::with_key(&self.key.key);
            ctx.update(&(self.prior.len() as u16).to_be_bytes());
            ctx.update(&self.prior);
            ctx.update(msg);
            ctx.update(&time48(now));
            ctx.update(&self.key.fudge.to_be_bytes());
            ctx.sign()
        };
        append(
            msg,
            &self.key.name,
            self.key.alg.wire(),
            self.key.fudge,
            now,
            tag.as_ref(),
            0,
            &[],
        );
        self.prior = tag.as_ref().to_vec();
        self.first = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        // 32 bytes of 0x0b, base64.
        Key::new(
            "transfer-key",
            "hmac-sha256",
            "CwsLCwsLCwsLCwsLCwsLCwsLCwsLCwsLCwsLCwsLCws=",
            Duration::from_secs(300),
        )
        .unwrap()
    }

    fn query() -> Vec<u8> {
        crate::wire::query::build(0x1234, b"\x07cluster\x05local\x00", 252, false, None)
    }

    #[test]
    fn a_signed_request_verifies_and_any_change_breaks_it() {
        let k = key();
        let mut m = query();
        let mac = sign_request(&k, &mut m, 1_700_000_000);
        assert_eq!(mac.len(), 32);
        let rec = find(&m).unwrap().unwrap();
        assert_eq!(rec.mac, &mac[..]);
        assert_eq!(rec.time, 1_700_000_000);
        assert_eq!(verify_request(Some(&k), &m, &rec, 1_700_000_100), Ok(()));
        // Too far in time.
        assert_eq!(
            verify_request(Some(&k), &m, &rec, 1_700_000_301),
            Err(Rejected::NotAuth(error::BADTIME))
        );
        // A bit flipped in the question.
        let mut bad = m.clone();
        bad[14] ^= 0x20;
        let rec = find(&bad).unwrap().unwrap();
        assert_eq!(
            verify_request(Some(&k), &bad, &rec, 1_700_000_000),
            Err(Rejected::NotAuth(error::BADSIG))
        );
        // Another secret under the same name.
        let other = Key::new(
            "transfer-key",
            "hmac-sha256",
            "AAAA",
            Duration::from_secs(300),
        )
        .unwrap();
        let rec = find(&m).unwrap().unwrap();
        assert_eq!(
            verify_request(Some(&other), &m, &rec, 1_700_000_000),
            Err(Rejected::NotAuth(error::BADSIG))
        );
        // Another name: an unknown key.
        let stranger =
            Key::new("other-key", "hmac-sha256", "AAAA", Duration::from_secs(300)).unwrap();
        assert_eq!(
            verify_request(Some(&stranger), &m, &rec, 1_700_000_000),
            Err(Rejected::NotAuth(error::BADKEY))
        );
        assert_eq!(
            verify_request(None, &m, &rec, 1_700_000_000),
            Err(Rejected::NotAuth(error::BADKEY))
        );
    }

    #[test]
    fn tsig_must_be_the_last_record() {
        let k = key();
        let mut m = query();
        sign_request(&k, &mut m, 1);
        assert!(find(&m).unwrap().is_some());
        // Another record after it.
        m.extend_from_slice(&[0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0]);
        m[11] += 1;
        assert_eq!(find(&m).unwrap_err(), Malformed);
        assert!(find(&query()).unwrap().is_none());
        assert_eq!(find(&[0; 5]).unwrap_err(), Malformed);
    }

    /// The MACs checked against hickory-proto's TSIG signer would need its dnssec features;
    /// instead the known answer: HMAC-SHA256 over the exact digest bytes RFC 8945 §4.3.3 lists.
    #[test]
    fn the_request_digest_is_the_rfc_layout() {
        let k = key();
        let mut m = query();
        let mac = sign_request(&k, &mut m, 0x0102_0304_0506);
        let mut digest = query();
        digest.extend_from_slice(b"\x0ctransfer-key\x00");
        digest.extend_from_slice(&[0, 255, 0, 0, 0, 0]);
        digest.extend_from_slice(b"\x0bhmac-sha256\x00");
        digest.extend_from_slice(&[1, 2, 3, 4, 5, 6, 1, 44, 0, 0, 0, 0]);
        let want = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &[0x0b; 32]), &digest);
        assert_eq!(mac, want.as_ref());
    }

    #[test]
    fn reply_messages_chain_their_macs() {
        let k = std::sync::Arc::new(key());
        let mut req = query();
        let req_mac = sign_request(&k, &mut req, 100);
        let mut signer = Signer::new(k.clone(), &req_mac);
        let mut first = query();
        first[2] |= 0x80;
        signer.sign(&mut first, 100);
        let rec = find(&first).unwrap().unwrap();
        assert!(verify_reply(&k, &first, &rec, &req_mac, 100));
        assert!(!verify_reply(&k, &first, &rec, &[0; 32], 100));
        // The second message's MAC covers the first's MAC, the message and the timers.
        let mut second = query();
        second[2] |= 0x80;
        signer.sign(&mut second, 101);
        let rec2 = find(&second).unwrap().unwrap();
        let mut ctx = hmac::Context::with_key(&k.key);
        ctx.update(&[0, 32]);
        ctx.update(rec.mac);
        let mut unsigned = second[..rec2.start].to_vec();
        unsigned[11] -= 1;
        ctx.update(&unsigned);
        ctx.update(&time48(101));
        ctx.update(&300u16.to_be_bytes());
        assert_eq!(ctx.sign().as_ref(), rec2.mac);
    }
}
