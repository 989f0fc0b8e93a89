//! A transfer as a sequence of messages (RFC 5936 §2.2, RFC 1995 §4): the records of one
//! snapshot, or the journal's steps, written into messages of up to 64 KiB through the wire
//! layer's [`Writer`], each signed when the request was.
//!
//! AXFR: the SOA, every record, the SOA again. IXFR: the current SOA, then per step the old
//! SOA, the records removed, the new SOA, the records added, and the current SOA again; a
//! secondary that is current gets the SOA alone. Every message repeats the question (RFC 5936
//! §2.2.1 allows it; it lets owner names point into it). Owner names are compressed against
//! the zone in the question and the previous owner (records come grouped by service, so
//! `_http._tcp.<svc>...` points into `<svc>...` just written), only where the offset fits in
//! 14 bits.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;

use crate::wire::{OPT_LEN, Query, Writer, rcode};
use crate::zone::snapshot::{ServiceRecords, Snapshot};
use crate::zone::xfr::records::{self, Rr, TransferZone, ZoneKind};
use crate::zone::xfr::{Plan, Step};

use super::tsig;

/// The largest message (RFC 1035 §4.2.2's two-byte length).
const MAX_MESSAGE: usize = 65535;
/// Largest offset a compression pointer can hold.
const MAX_POINTER: usize = 0x3FFF;

/// Where the records still to send come from.
enum Source {
    /// The whole zone: the snapshot's services (or addresses, or pods), taken a batch at a time.
    Zone {
        services: std::vec::IntoIter<Arc<ServiceRecords>>,
        pods: std::vec::IntoIter<(Box<[u8]>, IpAddr)>,
        addresses: std::vec::IntoIter<IpAddr>,
    },
    /// The journal's steps, in order.
    Steps(VecDeque<Arc<Step>>),
    /// Nothing more (the closing SOA is queued).
    Done,
}

/// One transfer in progress: call [`Messages::next`] until it returns false.
pub struct Messages {
    query: Query<'static>,
    snapshot: Arc<Snapshot>,
    zone: TransferZone,
    zone_index: usize,
    source: Source,
    /// Records ready to be written (the first may not have fitted into the last message).
    queue: VecDeque<Rr>,
    /// The answer is the SOA alone (an IXFR from the current serial or a later one).
    single: bool,
    /// The closing SOA is queued.
    closed: bool,
    finished: bool,
    signer: Option<tsig::Signer>,
    /// Largest message, less the room for OPT and TSIG.
    limit: usize,
    max_udp: u16,
    /// Whether this is an incremental answer (for metrics).
    pub incremental: bool,
}

impl Messages {
    /// The messages answering `query` for `zone` (index `zone_index` in the journal) from
    /// `plan`; `max_size`: the largest message (64 KiB over TCP, the client's size over UDP).
    pub fn new(
        query: Query<'static>,
        plan: Plan,
        zone: TransferZone,
        zone_index: usize,
        signer: Option<tsig::Signer>,
        max_size: usize,
        max_udp: u16,
    ) -> Messages {
        let snap = plan.snapshot;
        let mut queue = VecDeque::new();
        queue.push_back(records::soa(&snap, &zone, snap.serial));
        let incremental = plan.steps.is_some();
        let single = plan.steps.as_ref().is_some_and(|s| s.is_empty());
        let source = match plan.steps {
            // Current (or ahead): the SOA alone.
            Some(steps) if steps.is_empty() => Source::Done,
            Some(steps) => Source::Steps(steps.into()),
            None => {
                let mut batch = Vec::new();
                records::apex(&snap, &zone, &mut batch);
                queue.extend(batch);
                let (services, pods, addresses) = match zone.kind {
                    ZoneKind::Cluster => {
                        let mut pods = Vec::new();
                        snap.pods
                            .for_each(&mut |ns, ip| pods.push((Box::from(ns), ip)));
                        (snap.services.values().cloned().collect(), pods, Vec::new())
                    }
                    ZoneKind::Reverse => {
                        (Vec::new(), Vec::new(), snap.reverse.addresses().collect())
                    }
                };
                Source::Zone {
                    services: Vec::into_iter(services),
                    pods: pods.into_iter(),
                    addresses: addresses.into_iter(),
                }
            }
        };
        let tsig_room = signer.as_ref().map_or(0, |s| tsig::record_len(s.key()));
        let opt_room = if query.edns.is_some() { OPT_LEN } else { 0 };
        Messages {
            query,
            snapshot: snap,
            zone,
            zone_index,
            source,
            queue,
            single,
            closed: false,
            finished: false,
            signer,
            limit: max_size.min(MAX_MESSAGE) - tsig_room - opt_room,
            max_udp,
            incremental,
        }
    }

    /// Whether the answer is the SOA alone (the secondary is current).
    pub fn is_current(&self) -> bool {
        self.single
    }

    /// More records into the queue; false when everything (with the closing SOA) is queued.
    fn refill(&mut self) -> bool {
        let snap = &self.snapshot;
        match &mut self.source {
            Source::Zone {
                services,
                pods,
                addresses,
            } => {
                let mut batch = Vec::new();
                while batch.is_empty() {
                    if let Some(s) = services.next() {
                        records::service(snap, &s, &mut batch);
                    } else if let Some((ns, ip)) = pods.next() {
                        records::pod(snap, &ns, ip, &mut batch);
                    } else if let Some(ip) = addresses.next() {
                        records::ptr(snap, &self.zone, ip, &mut batch);
                    } else {
                        break;
                    }
                }
                if batch.is_empty() {
                    self.source = Source::Done;
                    return self.refill();
                }
                self.queue.extend(batch);
                true
            }
            Source::Steps(steps) => match steps.pop_front() {
                Some(step) => {
                    let d = &step.zones[self.zone_index];
                    self.queue
                        .push_back(records::soa(snap, &self.zone, step.from));
                    self.queue.extend(d.removed.iter().cloned());
                    self.queue
                        .push_back(records::soa(snap, &self.zone, step.to));
                    self.queue.extend(d.added.iter().cloned());
                    true
                }
                None => {
                    self.source = Source::Done;
                    self.refill()
                }
            },
            Source::Done => {
                if self.closed {
                    return false;
                }
                self.closed = true;
                // The SOA alone (current) is not repeated.
                if !self.single {
                    self.queue
                        .push_back(records::soa(snap, &self.zone, snap.serial));
                }
                true
            }
        }
    }

    /// Write the next message into `out`; false when the transfer is complete (`out` is then
    /// untouched).
    pub fn next(&mut self, out: &mut Vec<u8>, now: u64) -> bool {
        if self.finished {
            return false;
        }
        let mut w = Writer::new(out, &self.query, usize::MAX);
        w.set_zone_suffix(self.zone.apex.len());
        let mut owners = Owners::default();
        let mut owner = Vec::with_capacity(64);
        let mut written = 0usize;
        loop {
            if self.queue.is_empty() && !self.refill() {
                self.finished = true;
                break;
            }
            let Some(rr) = self.queue.front() else {
                continue;
            };
            let at = w.pos();
            owners.encode(&rr.owner, at, &mut owner);
            if at + owner.len() + 10 + rr.rdata.len() > self.limit && written > 0 {
                break;
            }
            w.record(|w| {
                w.bytes(&owner);
                let rd = w.rr_head(rr.rtype, rr.ttl);
                w.bytes(&rr.rdata);
                w.end_rdata(rd);
            });
            owners.commit(&rr.owner, at);
            self.queue.pop_front();
            written += 1;
        }
        w.finish(&self.query, rcode::NOERROR, true, false, self.max_udp);
        if let Some(s) = self.signer.as_mut() {
            s.sign(out, now);
        }
        written > 0
    }

    /// Whether everything has been written.
    pub fn is_finished(&self) -> bool {
        self.finished
    }
}

/// Owner-name compression within one message: the previous owner's labels and where each was
/// written.
#[derive(Default)]
struct Owners {
    prev: Vec<u8>,
    /// Message offset of each label of `prev` (a label written literally, or reached by a
    /// pointer from it).
    offsets: Vec<usize>,
    /// The offsets for the owner being encoded, kept until [`Owners::commit`].
    next: Vec<usize>,
}

/// The start of each label of `name` (wire labels, no root).
fn label_starts(name: &[u8]) -> impl Iterator<Item = usize> + '_ {
    let mut p = 0;
    std::iter::from_fn(move || {
        (p < name.len()).then(|| {
            let at = p;
            p += 1 + name[p] as usize;
            at
        })
    })
}

impl Owners {
    /// The owner `rel` (labels below the zone) as it will be written at `at`, into `out`: its
    /// own leading labels, then a pointer to the longest suffix shared with the previous owner
    /// (or to the zone in the question).
    fn encode(&mut self, rel: &[u8], at: usize, out: &mut Vec<u8>) {
        out.clear();
        self.next.clear();
        let mine: Vec<usize> = label_starts(rel).collect();
        let theirs: Vec<usize> = label_starts(&self.prev).collect();
        // Labels shared at the end, and usable (their offset fits a pointer).
        let mut shared = 0;
        while shared < mine.len() && shared < theirs.len() {
            let a = mine[mine.len() - 1 - shared];
            let b = theirs[theirs.len() - 1 - shared];
            let a_end = if shared == 0 {
                rel.len()
            } else {
                mine[mine.len() - shared]
            };
            let b_end = if shared == 0 {
                self.prev.len()
            } else {
                theirs[theirs.len() - shared]
            };
            if rel[a..a_end] != self.prev[b..b_end] {
                break;
            }
            shared += 1;
        }
        while shared > 0 && self.offsets[theirs.len() - shared] > MAX_POINTER {
            shared -= 1;
        }
        let own = mine.len() - shared;
        let own_end = if own == mine.len() {
            rel.len()
        } else {
            mine[own]
        };
        out.extend_from_slice(&rel[..own_end]);
        self.next.extend(mine[..own].iter().map(|s| at + s));
        if shared > 0 {
            let target = self.offsets[theirs.len() - shared];
            out.extend_from_slice(&(0xC000 | target as u16).to_be_bytes());
            self.next
                .extend_from_slice(&self.offsets[theirs.len() - shared..]);
        } else {
            // The zone: the question's name (at 12; a transfer asks for the zone itself).
            out.extend_from_slice(&[0xC0, 12]);
        }
    }

    fn commit(&mut self, rel: &[u8], _at: usize) {
        self.prev.clear();
        self.prev.extend_from_slice(rel);
        std::mem::swap(&mut self.offsets, &mut self.next);
    }
}
