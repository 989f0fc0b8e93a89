//! Zone transfers out: clusterdns as the primary of its cluster zone (and of narrow reverse
//! zones) for secondaries outside the cluster — BIND, Knot, NSD, PowerDNS, a provider's
//! secondary zones.
//!
//! - The [`crate::server::Engine`] routes AXFR and IXFR for a zone offered here, and SOA
//!   queries carrying a TSIG record, to [`Transfers`] (as [`crate::server::Local::Transfer`]);
//!   everything else stays on the query path. Transfers are off (REFUSED, as before) unless
//!   `transfer.allow` names someone.
//! - Access ([`Transfers::admit`]): the client's address must be in `transfer.allow` (else
//!   REFUSED); with `transfer.tsig` the request must be signed with that key (unsigned:
//!   REFUSED; an unknown key, a bad MAC, a clock too far off: NOTAUTH with the TSIG error,
//!   RFC 8945 §5.2), and then every message of the answer is signed ([`tsig`]).
//! - The answer ([`stream::Messages`]): AXFR (RFC 5936) over TCP from the journal's current
//!   snapshot, loaded once, so a transfer is one consistent version however long it takes;
//!   IXFR (RFC 1995) from the journal's differences ([`crate::zone::xfr::Journal`]), the whole
//!   zone when they no longer reach back to the secondary's serial, the SOA alone when the
//!   secondary is current or ahead. Over UDP: IXFR answered in one message if it fits, else
//!   the SOA alone (the secondary then asks over TCP); AXFR over UDP is FORMERR, as BIND does.
//! - At most `transfer.max_transfers` stream at once (SERVFAIL past it: the secondary retries);
//!   a streaming transfer writes each message with `transfer.write_timeout`, not the resolvers'
//!   TCP timeouts (see [`crate::server::tcp`]).
//! - [`notify`]: NOTIFY (RFC 1996) to `transfer.notify` on each new serial.

pub mod acl;
pub mod notify;
pub mod request;
pub mod stream;
pub mod tsig;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Config;
use crate::ops::metrics::{Metrics, TransferKind, TransferResult};
use crate::wire::{self, Query, Writer, rcode, rtype};
use crate::zone::answer::{self, Outcome};
use crate::zone::xfr::records::TransferZone;
use crate::zone::xfr::{Journal, JournalLimits, Plan};

use acl::Acl;
use stream::Messages;

/// Largest TCP message.
const TCP_MAX: usize = 65535;

/// The transfer service: who may transfer, the key, the journal, the limits.
pub struct Transfers {
    journal: Arc<Journal>,
    allow: Acl,
    key: Option<Arc<tsig::Key>>,
    slots: Arc<Semaphore>,
    write_timeout: Duration,
    max_udp: u16,
    /// Where transfers are counted.
    metrics: Arc<Metrics>,
}

/// A request the engine routed here: the parsed query, and the message as received (a TSIG
/// MAC covers those exact bytes).
pub struct Request {
    pub query: Query<'static>,
    pub raw: Vec<u8>,
}

impl Request {
    pub fn new(query: &Query<'_>, raw: &[u8]) -> Request {
        Request {
            query: query.clone().into_owned(),
            raw: raw.to_vec(),
        }
    }
}

/// What answering over TCP came to.
pub enum TcpAnswer {
    /// One message, in the buffer given; its rcode.
    Reply(u16),
    /// A transfer to stream: write [`Transfer::next`] messages until it returns false.
    Stream(Box<Transfer>),
}

/// The client passed the access checks: with the request's MAC when it was signed.
enum Admitted {
    Unsigned,
    Signed(Vec<u8>),
}

impl Transfers {
    /// From the config, counting into `metrics`; None when transfers are off (`transfer.allow`
    /// empty).
    pub fn from_config(
        cfg: &Config,
        metrics: &Arc<Metrics>,
    ) -> Result<Option<Arc<Transfers>>, String> {
        let t = &cfg.transfer;
        if t.allow.is_empty() {
            return Ok(None);
        }
        let allow = Acl::new(&t.allow)?;
        let key = match &t.tsig {
            None => None,
            Some(k) => {
                let secret = match (&k.secret, &k.secret_file) {
                    (Some(s), _) => s.clone(),
                    (None, Some(f)) => std::fs::read_to_string(f)
                        .map_err(|e| format!("transfer.tsig.secret_file {}: {e}", f.display()))?,
                    (None, None) => return Err("transfer.tsig: no secret".into()),
                };
                Some(Arc::new(tsig::Key::new(
                    &k.name,
                    &k.algorithm,
                    &secret,
                    k.fudge,
                )?))
            }
        };
        if allow.is_open() && key.is_none() {
            tracing::warn!(
                "transfer.allow admits every address and no TSIG key is set: anyone can list every service of the cluster"
            );
        }
        let journal = Arc::new(Journal::new(
            &cfg.transfer_zones(),
            JournalLimits {
                entries: t.journal_entries,
                bytes: t.journal_bytes,
            },
            metrics.clone(),
        ));
        Ok(Some(Arc::new(Transfers {
            journal,
            allow,
            key,
            slots: Arc::new(Semaphore::new(t.max_transfers)),
            write_timeout: t.write_timeout,
            max_udp: cfg.server.max_udp_size,
            metrics: metrics.clone(),
        })))
    }

    /// The journal the zone builder feeds.
    pub fn journal(&self) -> &Arc<Journal> {
        &self.journal
    }

    /// The TSIG key, if transfers need one (NOTIFY is signed with it too).
    pub fn key(&self) -> Option<&Arc<tsig::Key>> {
        self.key.as_ref()
    }

    /// Whether a query is for this service: AXFR or IXFR of a zone offered, or a signed SOA
    /// query for one (a secondary configured with a key signs its refresh queries, and needs a
    /// signed answer). Called on the query path: costs a comparison unless the type is one of
    /// those.
    pub fn takes(&self, q: &Query<'_>, raw: &[u8]) -> bool {
        match q.qtype {
            rtype::AXFR | rtype::IXFR => self.journal.zone_index(q.qname_lower()).is_some(),
            rtype::SOA => {
                raw.get(10..12).is_some_and(|ar| ar != [0, 0])
                    && self.journal.zone_index(q.qname_lower()).is_some()
                    && matches!(tsig::find(raw), Ok(Some(_)))
            }
            _ => false,
        }
    }

    fn kind(q: &Query<'_>) -> TransferKind {
        if q.qtype == rtype::AXFR {
            TransferKind::Axfr
        } else {
            TransferKind::Ixfr
        }
    }

    /// [`Self::admit`] for either transport: an SOA query is not held to the address list
    /// (secondaries poll it), and a refused transfer (not an SOA query) is counted.
    fn admit_counted(
        &self,
        req: &Request,
        peer: IpAddr,
        out: &mut Vec<u8>,
    ) -> Result<Admitted, u16> {
        let q = &req.query;
        let soa_query = q.qtype == rtype::SOA;
        self.admit(req, peer, out, !soa_query).inspect_err(|&code| {
            if !soa_query {
                self.metrics
                    .transfer()
                    .result(Self::kind(q), rejected(code));
            }
        })
    }

    /// Access: the address, then TSIG. Err: the reply is written in `out`, with its rcode.
    fn admit(
        &self,
        req: &Request,
        peer: IpAddr,
        out: &mut Vec<u8>,
        address_checked: bool,
    ) -> Result<Admitted, u16> {
        let q = &req.query;
        if address_checked && !self.allow.allows(peer) {
            return Err(self.error(out, q, rcode::REFUSED));
        }
        match tsig::find(&req.raw) {
            Err(tsig::Malformed) => Err(self.error(out, q, rcode::FORMERR)),
            Ok(None) if self.key.is_some() => Err(self.error(out, q, rcode::REFUSED)),
            Ok(None) => Ok(Admitted::Unsigned),
            Ok(Some(rec)) => {
                let now = tsig::now();
                match tsig::verify_request(self.key.as_deref(), &req.raw, &rec, now) {
                    Ok(()) => Ok(Admitted::Signed(rec.mac.to_vec())),
                    Err(tsig::Rejected::FormErr) => Err(self.error(out, q, rcode::FORMERR)),
                    Err(tsig::Rejected::NotAuth(e)) => {
                        self.error(out, q, tsig::NOTAUTH);
                        tsig::append_error(self.key.as_deref(), out, &rec, e, now);
                        tracing::debug!(%peer, tsig_error = e, "transfer request failed TSIG");
                        Err(tsig::NOTAUTH)
                    }
                }
            }
        }
    }

    /// A reply with only an rcode; returns it.
    fn error(&self, out: &mut Vec<u8>, q: &Query<'_>, code: u16) -> u16 {
        wire::rcode_reply(out, q, code, false, self.max_udp);
        code
    }

    fn signer(&self, admitted: &Admitted) -> Option<tsig::Signer> {
        match (admitted, &self.key) {
            (Admitted::Signed(mac), Some(k)) => Some(tsig::Signer::new(k.clone(), mac)),
            _ => None,
        }
    }

    /// A signed SOA query: the zone's answer, signed.
    fn signed_soa(&self, req: &Request, admitted: &Admitted, max: usize, out: &mut Vec<u8>) -> u16 {
        let q = &req.query;
        let Some(snap) = self.journal.current() else {
            return self.error(out, q, rcode::SERVFAIL);
        };
        let room = self.key.as_deref().map_or(0, tsig::record_len);
        let mut w = Writer::new(out, q, max.saturating_sub(room));
        let code = match answer::answer(&snap, q, &mut w, false) {
            Outcome::Answered { rcode } => rcode,
            _ => rcode::SERVFAIL,
        };
        w.finish(q, code, true, false, self.max_udp);
        if let Some(mut s) = self.signer(admitted) {
            s.sign(out, tsig::now());
        }
        code
    }

    /// What a transfer answers from: the plan, the zone and its index in the journal.
    /// Err(rcode) with the reply written when there is nothing to serve or the request is
    /// malformed.
    fn prepare(
        &self,
        req: &Request,
        out: &mut Vec<u8>,
    ) -> Result<(Plan, TransferZone, usize), u16> {
        let q = &req.query;
        let from = match Self::kind(q) {
            TransferKind::Axfr => None,
            TransferKind::Ixfr => match request::ixfr_serial(&req.raw) {
                Some(s) => Some(s),
                // RFC 1995 §3: the authority section holds the client's SOA.
                None => return Err(self.error(out, q, rcode::FORMERR)),
            },
        };
        let (Some(index), Some(plan)) = (
            self.journal.zone_index(q.qname_lower()),
            self.journal.plan(from),
        ) else {
            // Not synced yet: nothing to transfer.
            return Err(self.error(out, q, rcode::SERVFAIL));
        };
        let Some(zone) = TransferZone::of(&plan.snapshot, q.qname_lower()) else {
            // A zone no longer served (a reload changed the cluster zones).
            return Err(self.error(out, q, rcode::REFUSED));
        };
        Ok((plan, zone, index))
    }

    /// Answer over UDP, into `out`; returns the rcode.
    pub fn answer_udp(&self, req: &Request, peer: IpAddr, out: &mut Vec<u8>) -> u16 {
        let q = &req.query;
        let m = self.metrics.transfer();
        let max = wire::udp_limit(q, self.max_udp);
        let soa_query = q.qtype == rtype::SOA;
        let kind = Self::kind(q);
        let admitted = match self.admit_counted(req, peer, out) {
            Ok(a) => a,
            Err(code) => return code,
        };
        if soa_query {
            return self.signed_soa(req, &admitted, max, out);
        }
        if kind == TransferKind::Axfr {
            // RFC 5936 §4.2: AXFR over UDP is not defined (BIND answers FORMERR too).
            m.result(kind, TransferResult::FormErr);
            return self.error(out, q, rcode::FORMERR);
        }
        let (plan, zone, index) = match self.prepare(req, out) {
            Ok(p) => p,
            Err(code) => {
                m.result(kind, rejected(code));
                return code;
            }
        };
        let now = tsig::now();
        let snapshot = plan.snapshot.clone();
        let mut msgs = Messages::new(
            q.clone(),
            plan,
            zone.clone(),
            index,
            self.signer(&admitted),
            max,
            self.max_udp,
        );
        msgs.next(out, now);
        let result = if !msgs.is_finished() {
            // RFC 1995 §2: "If the UDP reply does not fit, the query is responded to with a
            // single SOA record of the server's current version to inform the client that a
            // TCP query should be initiated."
            let soa_only = Plan {
                snapshot,
                steps: Some(Vec::new()),
            };
            let mut one = Messages::new(
                q.clone(),
                soa_only,
                zone,
                index,
                self.signer(&admitted),
                max,
                self.max_udp,
            );
            one.next(out, now);
            TransferResult::Current
        } else if msgs.is_current() {
            TransferResult::Current
        } else if msgs.incremental {
            TransferResult::Incremental
        } else {
            TransferResult::Full
        };
        m.result(kind, result);
        rcode::NOERROR
    }

    /// Answer over TCP: one reply in `out`, or a transfer to stream.
    pub fn answer_tcp(&self, req: &Request, peer: IpAddr, out: &mut Vec<u8>) -> TcpAnswer {
        let q = &req.query;
        let m = self.metrics.transfer();
        let soa_query = q.qtype == rtype::SOA;
        let kind = Self::kind(q);
        let admitted = match self.admit_counted(req, peer, out) {
            Ok(a) => a,
            Err(code) => return TcpAnswer::Reply(code),
        };
        if soa_query {
            return TcpAnswer::Reply(self.signed_soa(req, &admitted, TCP_MAX, out));
        }
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            tracing::info!(%peer, "too many zone transfers at once: SERVFAIL");
            m.result(kind, TransferResult::ServFail);
            return TcpAnswer::Reply(self.error(out, q, rcode::SERVFAIL));
        };
        match self.prepare(req, out) {
            Ok((plan, zone, index)) => {
                m.started();
                let msgs = Messages::new(
                    req.query.clone(),
                    plan,
                    zone,
                    index,
                    self.signer(&admitted),
                    TCP_MAX,
                    self.max_udp,
                );
                TcpAnswer::Stream(Box::new(Transfer {
                    msgs,
                    kind,
                    write_timeout: self.write_timeout,
                    started: Instant::now(),
                    sent: 0,
                    _permit: permit,
                    peer,
                    metrics: self.metrics.clone(),
                    done: false,
                }))
            }
            Err(code) => {
                m.result(kind, rejected(code));
                TcpAnswer::Reply(code)
            }
        }
    }
}

/// The metrics result of a request answered with an error rcode.
fn rejected(code: u16) -> TransferResult {
    match code {
        rcode::REFUSED => TransferResult::Refused,
        rcode::FORMERR => TransferResult::FormErr,
        tsig::NOTAUTH => TransferResult::NotAuth,
        _ => TransferResult::ServFail,
    }
}

/// A transfer streaming over TCP. It holds one of the `max_transfers` places until dropped.
pub struct Transfer {
    msgs: Messages,
    kind: TransferKind,
    write_timeout: Duration,
    started: Instant,
    sent: usize,
    _permit: OwnedSemaphorePermit,
    peer: IpAddr,
    done: bool,
    metrics: Arc<Metrics>,
}

impl Transfer {
    /// The next message into `out`; false when all have been written.
    pub fn next(&mut self, out: &mut Vec<u8>) -> bool {
        let more = self.msgs.next(out, tsig::now());
        if more {
            self.sent += 1;
            self.metrics.transfer().message(out.len());
        }
        more
    }

    /// How long writing one message may take: the transfer's own timeout, not the resolvers'.
    pub fn write_timeout(&self) -> Duration {
        self.write_timeout
    }

    /// The transfer ended: `complete` when every message was written.
    pub fn finish(mut self, complete: bool) {
        self.done = true;
        let m = self.metrics.transfer();
        m.finished(self.kind, self.started.elapsed());
        let result = if !complete {
            TransferResult::Broken
        } else if self.msgs.is_current() {
            TransferResult::Current
        } else if self.msgs.incremental {
            TransferResult::Incremental
        } else {
            TransferResult::Full
        };
        m.result(self.kind, result);
        tracing::debug!(
            peer = %self.peer,
            kind = ?self.kind,
            ?result,
            messages = self.sent,
            elapsed = ?self.started.elapsed(),
            "zone transfer"
        );
    }
}

impl Drop for Transfer {
    fn drop(&mut self) {
        if !self.done {
            // Dropped mid-way (the connection task ended): count it as broken.
            let m = self.metrics.transfer();
            m.finished(self.kind, self.started.elapsed());
            m.result(self.kind, TransferResult::Broken);
        }
    }
}

#[cfg(test)]
mod tests;
