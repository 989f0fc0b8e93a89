//! The answer cache in front of forwarding.
//!
//! Entries are the upstream's reply as wire bytes plus the offset of every TTL field, so a hit
//! is a copy, an ID patch, a copy of the client's question bytes (same length, maybe other case)
//! and a TTL countdown — no parse. Positive and negative (RFC 2308) entries share one bounded
//! store, split into shards, each evicting with the CLOCK algorithm (an approximation of LRU:
//! entries hit since the hand last passed get a second chance; entries past their serve-stale
//! window go first), each kind within its own capacity when one is set (CoreDNS's `success` and
//! `denial` CAPACITY).
//!
//! As CoreDNS's cache: SERVFAIL answers are kept `servfail_ttl` (5 s) as denial entries, and
//! never replace an entry that could still be served stale; stale answers (RFC 8767) carry
//! `serve_stale_ttl` in every record; `keepttl` serves the TTLs as stored.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::CacheConfig;
use crate::ops::metrics::{CacheKind, Metrics};

use crate::wire::{self, F_TC, HEADER_LEN, Query, Section, rcode, rtype};

/// One cached reply.
#[derive(Debug)]
pub struct Entry {
    /// The upstream's reply, TTLs already capped and floored.
    wire: Box<[u8]>,
    /// Offsets of every TTL field (not the OPT record's).
    ttl_offs: Box<[u16]>,
    /// End of the question in `wire`.
    question_end: u16,
    inserted: Instant,
    /// Lifetime in seconds (the smallest TTL after caps and floors).
    ttl: u32,
    pub kind: CacheKind,
    /// Hits since insertion (for prefetch).
    hits: AtomicU32,
    /// A prefetch of this entry is under way.
    prefetching: AtomicBool,
    /// The query that fetched it (sent again by prefetch).
    pub query: Box<[u8]>,
}

impl Entry {
    /// The reply as stored: TTLs capped and floored, counted from insertion.
    pub fn wire(&self) -> &[u8] {
        &self.wire
    }

    pub fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.inserted)
    }

    pub fn is_fresh(&self, now: Instant) -> bool {
        self.age(now) < Duration::from_secs(u64::from(self.ttl))
    }

    pub fn ttl(&self) -> u32 {
        self.ttl
    }

    /// A cached SERVFAIL (never served stale, never replacing a stale-servable entry).
    pub fn is_servfail(&self) -> bool {
        wire::rcode_of(&self.wire) == rcode::SERVFAIL
    }

    /// Write the reply for a client: the stored bytes with the client's ID and question, TTLs
    /// as `ttls` says. Does not truncate.
    pub fn write_reply(&self, q: &Query<'_>, ttls: Ttls, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&self.wire);
        out[0..2].copy_from_slice(&q.id.to_be_bytes());
        let qe = self.question_end as usize;
        if qe == q.question_end() {
            out[HEADER_LEN..qe].copy_from_slice(q.question());
        }
        for &off in self.ttl_offs.iter() {
            let off = off as usize;
            let t = wire::u32_at(out, off);
            let nt = match ttls {
                Ttls::CountDown(now) => {
                    let age = self.age(now).as_secs().min(u64::from(u32::MAX)) as u32;
                    t.saturating_sub(age)
                }
                Ttls::Stored => t,
                Ttls::All(v) => v,
            };
            wire::put_u32(out, off, nt);
        }
    }

    /// Mark a refresh of this entry as under way; false if one already is (RFC 8767 and
    /// CoreDNS: at most one background refresh per entry).
    pub fn begin_refresh(&self) -> bool {
        !self.prefetching.swap(true, Ordering::AcqRel)
    }

    /// Count a hit; true when the entry should be prefetched now (popular and about to expire)
    /// and no prefetch of it is under way yet.
    pub fn hit_wants_prefetch(&self, now: Instant, threshold: u32) -> bool {
        let hits = self.hits.fetch_add(1, Ordering::Relaxed) + 1;
        if threshold == 0 || hits < threshold {
            return false;
        }
        let life = Duration::from_secs(u64::from(self.ttl));
        let remaining = life.saturating_sub(self.age(now));
        let window = (life / 10).max(Duration::from_secs(1));
        remaining <= window && !self.prefetching.swap(true, Ordering::AcqRel)
    }

    /// A prefetch failed: let a later hit try again.
    pub fn prefetch_done(&self) {
        self.prefetching.store(false, Ordering::Release);
    }
}

/// The TTLs a reply from the cache carries.
#[derive(Debug, Clone, Copy)]
pub enum Ttls {
    /// Counted down by the entry's age at this time.
    CountDown(Instant),
    /// As stored (`keepttl`).
    Stored,
    /// Every record the same (a stale answer's TTL).
    All(u32),
}

/// What the cache decides about an upstream reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Store(CacheKind, u32),
    Skip,
    /// Cacheable by its rcode, but its question is missing or not the query's: CoreDNS's
    /// `coredns_cache_drops_total` ("responses excluded from the cache due to request/response
    /// question name mismatch").
    Drop,
}

/// TTL settings (from [`CacheConfig`]).
#[derive(Debug, Clone)]
pub struct Policy {
    pub min_ttl: u32,
    pub max_ttl: u32,
    pub min_negative_ttl: u32,
    pub max_negative_ttl: u32,
    /// Seconds a SERVFAIL is kept (0: not cached).
    pub servfail_ttl: u32,
}

impl Policy {
    pub fn from_config(c: &CacheConfig) -> Self {
        Policy {
            min_ttl: c.min_ttl.min(c.max_ttl),
            max_ttl: c.max_ttl,
            min_negative_ttl: c.min_negative_ttl.min(c.max_negative_ttl),
            max_negative_ttl: c.max_negative_ttl,
            // Whole seconds, as a TTL; a fraction of one rounds up (5ms still caches).
            servfail_ttl: c.servfail_ttl.as_millis().div_ceil(1000).min(300) as u32,
        }
    }
}

/// Prepare an upstream reply for storage: decide whether and how long to cache it, and rewrite
/// its TTL fields to the capped/floored values. Returns the TTL offsets and verdict.
///
/// - TC set, or an rcode other than NOERROR/NXDOMAIN/SERVFAIL (REFUSED, ...): not cached.
/// - SERVFAIL: negative, for `servfail_ttl` (RFC 2308 section 7.1: "a server MAY cache a
///   server failure response... no longer than five (5) minutes"); not at all when it is 0.
/// - A question that is not `question` (the query's, bytes 12 to its end; case aside), or none,
///   or records that cannot be walked: dropped ([`Verdict::Drop`]).
/// - NXDOMAIN, or NOERROR without answers: negative, TTL = min(SOA TTL, SOA MINIMUM) of the
///   authority SOA (RFC 2308 section 5), within the negative caps; without SOA, the negative
///   floor. Every TTL in the entry is capped at that value.
/// - Otherwise positive: each TTL within [min_ttl, max_ttl]; the entry lives as long as the
///   smallest.
pub fn prepare(msg: &mut [u8], question: &[u8], p: &Policy) -> (Verdict, Vec<u16>, usize) {
    if msg.len() < HEADER_LEN || msg[2] & F_TC != 0 {
        return (Verdict::Skip, vec![], 0);
    }
    let rc = wire::rcode_of(msg);
    let servfail = rc == rcode::SERVFAIL;
    if !(rc == rcode::NOERROR || rc == rcode::NXDOMAIN || servfail && p.servfail_ttl > 0) {
        return (Verdict::Skip, vec![], 0);
    }
    let Ok(lay) = wire::layout(msg) else {
        return (Verdict::Drop, vec![], 0);
    };
    if lay.qdcount != 1
        || lay.question_end != HEADER_LEN + question.len()
        || !wire::eq_ignore_case(&msg[HEADER_LEN..lay.question_end], question)
        || msg.len() > usize::from(u16::MAX)
    {
        return (Verdict::Drop, vec![], 0);
    }
    let answers = lay
        .records
        .iter()
        .filter(|r| r.section == Section::Answer)
        .count();
    let negative = rc == rcode::NXDOMAIN || answers == 0;
    let ttl_offs: Vec<u16> = lay
        .records
        .iter()
        .filter(|r| r.rtype != rtype::OPT)
        .map(|r| r.ttl_off as u16)
        .collect();
    if servfail {
        let ttl = p.servfail_ttl;
        for &off in &ttl_offs {
            let t = wire::u32_at(msg, off as usize).min(ttl);
            wire::put_u32(msg, off as usize, t);
        }
        return (
            Verdict::Store(CacheKind::Denial, ttl),
            ttl_offs,
            lay.question_end,
        );
    }
    if negative {
        let soa = lay.records.iter().find(|r| {
            r.section == Section::Authority && r.rtype == rtype::SOA && r.end >= r.rdata + 20
        });
        let ttl = match soa {
            Some(r) => {
                let minimum = wire::u32_at(msg, r.end - 4);
                wire::u32_at(msg, r.ttl_off).min(minimum)
            }
            None => p.min_negative_ttl,
        }
        .clamp(p.min_negative_ttl, p.max_negative_ttl);
        for &off in &ttl_offs {
            let off = off as usize;
            let t = wire::u32_at(msg, off).min(ttl);
            // The SOA carries the negative TTL itself (RFC 2308 section 3).
            let t = if soa.is_some_and(|r| r.ttl_off == off) {
                ttl
            } else {
                t
            };
            wire::put_u32(msg, off, t);
        }
        if ttl == 0 {
            return (Verdict::Skip, vec![], 0);
        }
        (
            Verdict::Store(CacheKind::Denial, ttl),
            ttl_offs,
            lay.question_end,
        )
    } else {
        let mut min = u32::MAX;
        for &off in &ttl_offs {
            let off = off as usize;
            let t = wire::u32_at(msg, off).clamp(p.min_ttl, p.max_ttl);
            wire::put_u32(msg, off, t);
            min = min.min(t);
        }
        if min == 0 || min == u32::MAX {
            return (Verdict::Skip, vec![], 0);
        }
        (
            Verdict::Store(CacheKind::Success, min),
            ttl_offs,
            lay.question_end,
        )
    }
}

struct Slot {
    key: Box<[u8]>,
    entry: Arc<Entry>,
    referenced: bool,
}

struct Shard {
    map: HashMap<Box<[u8]>, usize>,
    slots: Vec<Slot>,
    hand: usize,
    cap: usize,
    /// Most entries of each kind ([success, denial]), and how many there are.
    kind_cap: [usize; 2],
    kind_len: [usize; 2],
}

fn kind_index(k: CacheKind) -> usize {
    match k {
        CacheKind::Success => 0,
        CacheKind::Denial => 1,
    }
}

/// What a lookup found.
pub enum Found {
    Fresh(Arc<Entry>),
    /// Expired, but within the serve-stale window.
    Stale(Arc<Entry>),
    Miss,
}

/// The bounded, sharded cache.
pub struct Cache {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    /// The config it was made from (a reload keeps a cache whose config did not change).
    pub config: CacheConfig,
    pub policy: Policy,
    /// How long after expiry an entry may still be served when upstreams fail.
    pub serve_stale: Duration,
    /// Hits within an entry's TTL that make it worth a prefetch (0: off).
    pub prefetch: u32,
    success: AtomicUsize,
    denial: AtomicUsize,
    metrics: Arc<Metrics>,
}

impl Cache {
    /// An empty cache for `c`, counting into `metrics`. Time is the caller's: every call that
    /// depends on it takes `now`.
    pub fn new(c: &CacheConfig, metrics: Arc<Metrics>) -> Self {
        let max = c.max_entries.max(1);
        let n = if max >= 1024 { 16 } else { 1 };
        let cap = max.div_ceil(n);
        let per_shard = |k: Option<usize>| k.map_or(cap, |k| k.max(1).div_ceil(n).min(cap));
        let kind_cap = [per_shard(c.success_capacity), per_shard(c.denial_capacity)];
        let shards = (0..n)
            .map(|_| {
                Mutex::new(Shard {
                    map: HashMap::with_capacity(cap.min(4096)),
                    slots: Vec::with_capacity(cap.min(4096)),
                    hand: 0,
                    cap,
                    kind_cap,
                    kind_len: [0, 0],
                })
            })
            .collect();
        Cache {
            shards,
            hasher: RandomState::new(),
            config: c.clone(),
            policy: Policy::from_config(c),
            serve_stale: c.serve_stale,
            prefetch: c.prefetch,
            success: AtomicUsize::new(0),
            denial: AtomicUsize::new(0),
            metrics,
        }
    }

    fn shard(&self, key: &[u8]) -> &Mutex<Shard> {
        let h = self.hasher.hash_one(key);
        &self.shards[(h as usize) % self.shards.len()]
    }

    fn lock<'a>(m: &'a Mutex<Shard>) -> std::sync::MutexGuard<'a, Shard> {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Look a key up; stale entries are only returned when `allow_stale`.
    pub fn get(&self, key: &[u8], now: Instant, allow_stale: bool) -> Found {
        let mut s = Self::lock(self.shard(key));
        let Some(&i) = s.map.get(key) else {
            return Found::Miss;
        };
        let slot = &mut s.slots[i];
        let e = &slot.entry;
        if e.is_fresh(now) {
            slot.referenced = true;
            return Found::Fresh(e.clone());
        }
        if allow_stale && !e.is_servfail() && self.within_stale(e, now) {
            return Found::Stale(e.clone());
        }
        Found::Miss
    }

    /// Write `e`'s reply for `q` as this cache serves it: `stale` with `serve_stale_ttl` in
    /// every record (as CoreDNS), else counted down, or as stored with `keepttl`.
    pub fn write_reply(
        &self,
        e: &Entry,
        q: &Query<'_>,
        now: Instant,
        stale: bool,
        out: &mut Vec<u8>,
    ) {
        let ttls = if stale {
            Ttls::All(self.config.serve_stale_ttl)
        } else if self.config.keepttl {
            Ttls::Stored
        } else {
            Ttls::CountDown(now)
        };
        e.write_reply(q, ttls, out);
    }

    fn within_stale(&self, e: &Entry, now: Instant) -> bool {
        e.age(now) < Duration::from_secs(u64::from(e.ttl)) + self.serve_stale
    }

    fn counter(&self, kind: CacheKind) -> &AtomicUsize {
        match kind {
            CacheKind::Success => &self.success,
            CacheKind::Denial => &self.denial,
        }
    }

    fn count(&self, kind: CacheKind, add: bool) {
        let c = self.counter(kind);
        if add {
            c.fetch_add(1, Ordering::Relaxed);
        } else {
            c.fetch_sub(1, Ordering::Relaxed);
        }
        self.metrics
            .add_cache_entries(kind, if add { 1 } else { -1 });
    }

    /// Store an upstream reply under `key` if it is cacheable. `reply` is the reply as
    /// received; `query` the message that was sent for it (sent again for a prefetch).
    pub fn insert(
        &self,
        key: &[u8],
        reply: &[u8],
        query: &[u8],
        now: Instant,
    ) -> Option<CacheKind> {
        self.store(key, reply, query, now).map(|e| e.kind)
    }

    /// [`Cache::insert`], returning the entry stored: its [`Entry::wire`] is the reply with
    /// TTLs capped and floored as every cached answer will have them. CoreDNS's cache gives the
    /// first (missed) reply those TTLs too ("Apply capped TTL to this reply to avoid jarring
    /// TTL experience 1799 -> 8").
    pub fn store(
        &self,
        key: &[u8],
        reply: &[u8],
        query: &[u8],
        now: Instant,
    ) -> Option<Arc<Entry>> {
        let mut msg = reply.to_vec();
        // The question of the message we sent (ours: written in full).
        let question = query
            .get(HEADER_LEN..)
            .and_then(|b| b.get(..wire::name::uncompressed_len(b)? + 4))
            .unwrap_or(&[]);
        let (verdict, ttl_offs, question_end) = prepare(&mut msg, question, &self.policy);
        let (kind, ttl) = match verdict {
            Verdict::Store(kind, ttl) => (kind, ttl),
            Verdict::Drop => {
                self.metrics.cache_drop();
                return None;
            }
            Verdict::Skip => return None,
        };
        let entry = Arc::new(Entry {
            wire: msg.into_boxed_slice(),
            ttl_offs: ttl_offs.into_boxed_slice(),
            question_end: question_end as u16,
            inserted: now,
            ttl,
            kind,
            hits: AtomicU32::new(0),
            prefetching: AtomicBool::new(false),
            query: query.into(),
        });
        let stored = entry.clone();
        let servfail = entry.is_servfail();
        let mut guard = Self::lock(self.shard(key));
        let s = &mut *guard;
        if let Some(&i) = s.map.get(key) {
            let held = &s.slots[i].entry;
            // A SERVFAIL never replaces an answer that can still be served stale.
            if servfail
                && !held.is_servfail()
                && !self.serve_stale.is_zero()
                && self.within_stale(held, now)
            {
                return None;
            }
            let old = std::mem::replace(&mut s.slots[i].entry, entry);
            s.slots[i].referenced = true;
            if old.kind != kind {
                s.kind_len[kind_index(old.kind)] -= 1;
                s.kind_len[kind_index(kind)] += 1;
            }
            drop(guard);
            if old.kind != kind {
                self.count(old.kind, false);
                self.count(kind, true);
            }
            return Some(stored);
        }
        let mut evicted = None;
        let k = kind_index(kind);
        if s.slots.len() < s.cap && s.kind_len[k] < s.kind_cap[k] {
            s.kind_len[k] += 1;
            let i = s.slots.len();
            s.slots.push(Slot {
                key: key.into(),
                entry,
                referenced: false,
            });
            s.map.insert(key.into(), i);
        } else {
            // CLOCK: entries beyond their stale window go at once; others get a second chance
            // if referenced since the hand last passed. When the kind is at its own capacity,
            // only an entry of that kind makes room.
            let same_kind_only = s.kind_len[k] >= s.kind_cap[k];
            let n = s.slots.len();
            let mut victim = None;
            for _ in 0..2 * n {
                let i = s.hand;
                s.hand = (s.hand + 1) % n;
                let slot = &mut s.slots[i];
                if same_kind_only && slot.entry.kind != kind {
                    continue;
                }
                if !self.within_stale(&slot.entry, now) || !slot.referenced {
                    victim = Some(i);
                    break;
                }
                slot.referenced = false;
            }
            let i = victim.unwrap_or_else(|| {
                // Every candidate was referenced twice over: the first of the right kind.
                (0..n)
                    .map(|j| (s.hand + j) % n)
                    .find(|&j| !same_kind_only || s.slots[j].entry.kind == kind)
                    .unwrap_or(s.hand)
            });
            s.kind_len[kind_index(s.slots[i].entry.kind)] -= 1;
            s.kind_len[k] += 1;
            let old = std::mem::replace(
                &mut s.slots[i],
                Slot {
                    key: key.into(),
                    entry,
                    referenced: false,
                },
            );
            s.map.remove(&old.key);
            s.map.insert(key.into(), i);
            evicted = Some(old.entry.kind);
        }
        drop(guard);
        if let Some(k) = evicted {
            self.metrics.cache_eviction(k);
            self.count(k, false);
        }
        self.count(kind, true);
        Some(stored)
    }

    /// Entries held now (positive, negative).
    pub fn len(&self) -> (usize, usize) {
        (
            self.success.load(Ordering::Relaxed),
            self.denial.load(Ordering::Relaxed),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.len() == (0, 0)
    }
}

impl Drop for Cache {
    /// A cache replaced on a reload takes its entries out of `coredns_cache_entries`.
    fn drop(&mut self) {
        let (success, denial) = self.len();
        self.metrics
            .add_cache_entries(CacheKind::Success, -(success as i64));
        self.metrics
            .add_cache_entries(CacheKind::Denial, -(denial as i64));
    }
}

/// Room for the longest key: name, type, class, flags, and a client subnet option (RFC 7871:
/// family, two prefix lengths, at most 16 address bytes).
pub const KEY_MAX: usize = wire::MAX_NAME + 5 + 20;

/// Build the cache key of a query into `buf`: the lowercase question name, type, class, a
/// flags byte (RD, CD, AD, EDNS present, DO) — answers differ by each of these — and, when
/// the client subnet is forwarded (`with_subnet`), the query's client subnet option, since
/// upstreams tailor answers to it. Returns its length.
pub fn key_into(q: &Query<'_>, with_subnet: bool, buf: &mut [u8; KEY_MAX]) -> usize {
    let name = q.qname_lower();
    let n = name.len();
    buf[..n].copy_from_slice(name);
    buf[n..n + 2].copy_from_slice(&q.qtype.to_be_bytes());
    buf[n + 2..n + 4].copy_from_slice(&q.qclass.to_be_bytes());
    let mut f = 0u8;
    if q.rd {
        f |= 1;
    }
    if q.cd {
        f |= 2;
    }
    if q.ad {
        f |= 4;
    }
    if let Some(e) = q.edns {
        f |= 8;
        if e.dnssec_ok {
            f |= 16;
        }
    }
    buf[n + 4] = f;
    let mut len = n + 5;
    if with_subnet && let Some(ecs) = q.client_subnet() {
        // Longer options are refused before a key is made (`valid_client_subnet`).
        let ecs = &ecs[..ecs.len().min(20)];
        buf[len..len + ecs.len()].copy_from_slice(ecs);
        len += ecs.len();
    }
    len
}

/// Is this client subnet option well formed (RFC 7871 §6: family 1 or 2, a source prefix
/// within the family's length, exactly as many address bytes as the prefix needs, scope 0 in
/// queries)? §7.1.1: otherwise "the server MUST return a FORMERR response".
pub fn valid_client_subnet(data: &[u8]) -> bool {
    let [f0, f1, source, scope, addr @ ..] = data else {
        return false;
    };
    let bits = match u16::from_be_bytes([*f0, *f1]) {
        1 => 32,
        2 => 128,
        _ => return false,
    };
    *source <= bits && *scope == 0 && addr.len() == usize::from(*source).div_ceil(8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use wire::{EDNS_SIZE, Writer, dotted_to_wire, query::build};

    fn parse_query(m: &[u8]) -> Query<'_> {
        Query::parse(m).unwrap()
    }

    /// A cache with a registry of its own.
    fn new_cache(c: &CacheConfig) -> Cache {
        Cache::new(c, Arc::new(Metrics::default()))
    }

    fn cfg(max: usize) -> CacheConfig {
        CacheConfig {
            max_entries: max,
            ..CacheConfig::default()
        }
    }

    fn query(name: &str) -> Vec<u8> {
        build(7, &dotted_to_wire(name).unwrap(), rtype::A, true, None)
    }

    fn positive(qm: &[u8], ttls: &[u32]) -> Vec<u8> {
        let q = parse_query(qm);
        let mut out = Vec::new();
        let mut w = Writer::new(&mut out, &q, usize::MAX);
        for (i, &t) in ttls.iter().enumerate() {
            w.rr(rtype::A, t, &Ipv4Addr::new(192, 0, 2, i as u8).octets());
        }
        w.finish(&q, 0, false, true, EDNS_SIZE);
        out
    }

    fn key(qm: &[u8]) -> Vec<u8> {
        let q = parse_query(qm);
        let mut b = [0u8; KEY_MAX];
        let n = key_into(&q, false, &mut b);
        b[..n].to_vec()
    }

    /// NXDOMAIN with an SOA of the given TTL and MINIMUM.
    fn negative(qm: &[u8], soa_ttl: u32, minimum: u32) -> Vec<u8> {
        let mut out = positive(qm, &[]);
        out[3] = (out[3] & 0xF0) | rcode::NXDOMAIN as u8;
        wire::put_u16(&mut out, 8, 1);
        out.extend_from_slice(&[0xC0, 0x0C]);
        out.extend_from_slice(&rtype::SOA.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&soa_ttl.to_be_bytes());
        let mut rd = vec![0u8, 0u8]; // mname ".", rname "."
        for v in [1u32, 3600, 600, 86400, minimum] {
            rd.extend_from_slice(&v.to_be_bytes());
        }
        out.extend_from_slice(&(rd.len() as u16).to_be_bytes());
        out.extend_from_slice(&rd);
        out
    }

    #[test]
    fn key_is_case_insensitive_and_flag_sensitive() {
        let a = query("Example.COM");
        let b = query("example.com");
        assert_eq!(key(&a), key(&b));
        let mut c = b.clone();
        c[2] &= !wire::F_RD;
        assert_ne!(key(&b), key(&c));
    }

    #[test]
    fn client_subnet_in_the_key_only_when_forwarded() {
        let ecs = |net: u8| {
            let mut m = build(
                7,
                &dotted_to_wire("e.example").unwrap(),
                rtype::A,
                true,
                Some(1232),
            );
            let n = m.len();
            m[n - 2..].copy_from_slice(&11u16.to_be_bytes());
            m.extend_from_slice(&[0, 8, 0, 7, 0, 1, 24, 0, 10, 0, net]);
            m
        };
        let (a, b) = (ecs(1), ecs(2));
        let k = |m: &[u8], with| {
            let mut buf = [0u8; KEY_MAX];
            let n = key_into(&parse_query(m), with, &mut buf);
            buf[..n].to_vec()
        };
        assert_eq!(k(&a, false), k(&b, false));
        assert_ne!(k(&a, true), k(&b, true));
        assert!(valid_client_subnet(&[0, 1, 24, 0, 10, 0, 1]));
        assert!(valid_client_subnet(&[0, 2, 0, 0]));
        assert!(
            !valid_client_subnet(&[0, 1, 24, 0, 10, 0]),
            "too few address bytes"
        );
        assert!(
            !valid_client_subnet(&[0, 1, 33, 0, 1, 2, 3, 4, 5]),
            "prefix too long"
        );
        assert!(!valid_client_subnet(&[0, 3, 0, 0]), "family");
        assert!(!valid_client_subnet(&[0, 1, 8, 8, 10]), "scope in a query");
    }

    #[test]
    fn replies_to_another_question_are_dropped() {
        let c = new_cache(&cfg(10));
        let qm = query("asked.example");
        let other = query("other.example");
        assert_eq!(
            c.insert(&key(&qm), &positive(&other, &[60]), &qm, Instant::now()),
            None
        );
        let mut no_question = positive(&qm, &[]);
        no_question[3] |= rcode::NXDOMAIN as u8;
        no_question.truncate(12);
        no_question[5] = 0;
        assert_eq!(c.insert(&key(&qm), &no_question, &qm, Instant::now()), None);
        assert!(c.is_empty());
    }

    #[test]
    fn positive_ttls_clamped_and_counted_down() {
        let c = new_cache(&CacheConfig {
            min_ttl: 10,
            max_ttl: 100,
            ..cfg(10)
        });
        let qm = query("a.example");
        let r = positive(&qm, &[5, 50, 500]);
        let t0 = Instant::now();
        assert_eq!(c.insert(&key(&qm), &r, &qm, t0), Some(CacheKind::Success));
        let Found::Fresh(e) = c.get(&key(&qm), t0, false) else {
            panic!("miss")
        };
        assert_eq!(e.ttl(), 10);
        let q2 = query("A.EXAMPLE");
        let mut q2 = q2.clone();
        q2[0] = 0xAB;
        q2[1] = 0xCD;
        let pq = parse_query(&q2);
        let mut out = Vec::new();
        e.write_reply(
            &pq,
            Ttls::CountDown(t0 + Duration::from_millis(3500)),
            &mut out,
        );
        assert_eq!(&out[0..2], &[0xAB, 0xCD]);
        assert_eq!(&out[12..pq.question_end()], pq.question());
        let lay = wire::layout(&out).unwrap();
        let ttls: Vec<u32> = lay
            .records
            .iter()
            .map(|r| wire::u32_at(&out, r.ttl_off))
            .collect();
        assert_eq!(ttls, vec![7, 47, 97]);
        assert!(matches!(
            c.get(&key(&qm), t0 + Duration::from_secs(10), false),
            Found::Miss
        ));
        // Stale within the window.
        assert!(matches!(
            c.get(&key(&qm), t0 + Duration::from_secs(10), true),
            Found::Stale(_)
        ));
        assert!(matches!(
            c.get(&key(&qm), t0 + Duration::from_secs(10 + 3600), true),
            Found::Miss
        ));
    }

    #[test]
    fn negative_uses_soa_minimum() {
        let c = new_cache(&CacheConfig {
            min_negative_ttl: 1,
            max_negative_ttl: 600,
            ..cfg(10)
        });
        let qm = query("nx.example");
        let r = negative(&qm, 300, 7);
        let t0 = Instant::now();
        assert_eq!(c.insert(&key(&qm), &r, &qm, t0), Some(CacheKind::Denial));
        let Found::Fresh(e) = c.get(&key(&qm), t0, false) else {
            panic!()
        };
        assert_eq!(e.ttl(), 7);
        let mut out = Vec::new();
        e.write_reply(
            &parse_query(&qm),
            Ttls::CountDown(t0 + Duration::from_secs(2)),
            &mut out,
        );
        let lay = wire::layout(&out).unwrap();
        assert_eq!(wire::u32_at(&out, lay.records[0].ttl_off), 5);
        // Cap.
        let c = new_cache(&CacheConfig {
            min_negative_ttl: 1,
            max_negative_ttl: 60,
            ..cfg(10)
        });
        c.insert(&key(&qm), &negative(&qm, 3000, 900), &qm, t0);
        let Found::Fresh(e) = c.get(&key(&qm), t0, false) else {
            panic!()
        };
        assert_eq!(e.ttl(), 60);
    }

    #[test]
    fn servfail_cached_briefly_truncated_never() {
        let t0 = Instant::now();
        let qm = query("sf.example");
        let mut sf = positive(&qm, &[60]);
        sf[3] = (sf[3] & 0xF0) | rcode::SERVFAIL as u8;
        // CoreDNS's default: 5 s, in the denial cache.
        let c = new_cache(&cfg(10));
        assert_eq!(c.insert(&key(&qm), &sf, &qm, t0), Some(CacheKind::Denial));
        let Found::Fresh(e) = c.get(&key(&qm), t0 + Duration::from_secs(4), true) else {
            panic!("a SERVFAIL is kept 5 s")
        };
        assert!(e.is_servfail());
        assert_eq!(e.ttl(), 5);
        // Past it, gone, and never served stale.
        assert!(matches!(
            c.get(&key(&qm), t0 + Duration::from_secs(5), true),
            Found::Miss
        ));
        // `servfail: 0s`: not cached.
        let c = new_cache(&CacheConfig {
            servfail_ttl: Duration::ZERO,
            ..cfg(10)
        });
        assert_eq!(c.insert(&key(&qm), &sf, &qm, t0), None);
        let mut r = positive(&qm, &[60]);
        r[2] |= F_TC;
        assert_eq!(c.insert(&key(&qm), &r, &qm, t0), None);
        assert!(c.is_empty());
    }

    #[test]
    fn servfail_never_replaces_an_answer_that_can_be_served_stale() {
        let c = new_cache(&cfg(10));
        let t0 = Instant::now();
        let qm = query("keep.example");
        c.insert(&key(&qm), &positive(&qm, &[10]), &qm, t0);
        let mut sf = positive(&qm, &[]);
        sf[3] = (sf[3] & 0xF0) | rcode::SERVFAIL as u8;
        let later = t0 + Duration::from_secs(20);
        assert_eq!(c.insert(&key(&qm), &sf, &qm, later), None);
        let Found::Stale(e) = c.get(&key(&qm), later, true) else {
            panic!("the stale answer is kept")
        };
        assert!(!e.is_servfail());
        // Without serve-stale the SERVFAIL takes the expired entry's place.
        let c = new_cache(&CacheConfig {
            serve_stale: Duration::ZERO,
            ..cfg(10)
        });
        c.insert(&key(&qm), &positive(&qm, &[10]), &qm, t0);
        assert_eq!(
            c.insert(&key(&qm), &sf, &qm, later),
            Some(CacheKind::Denial)
        );
        assert_eq!(c.len(), (0, 1));
    }

    #[test]
    fn stale_ttl_and_keepttl() {
        let t0 = Instant::now();
        let qm = query("t.example");
        let ttls_of = |c: &Cache, at: Instant, stale: bool| {
            let (Found::Fresh(e) | Found::Stale(e)) = c.get(&key(&qm), at, true) else {
                panic!("miss")
            };
            let mut out = Vec::new();
            c.write_reply(&e, &parse_query(&qm), at, stale, &mut out);
            let lay = wire::layout(&out).unwrap();
            lay.records
                .iter()
                .map(|r| wire::u32_at(&out, r.ttl_off))
                .collect::<Vec<_>>()
        };
        let c = new_cache(&cfg(10));
        c.insert(&key(&qm), &positive(&qm, &[20, 40]), &qm, t0);
        assert_eq!(ttls_of(&c, t0 + Duration::from_secs(5), false), [15, 35]);
        // Stale: CoreDNS's RESPONSE_TTL (default 0) in every record.
        assert_eq!(ttls_of(&c, t0 + Duration::from_secs(25), true), [0, 0]);
        let c = new_cache(&CacheConfig {
            serve_stale_ttl: 30,
            keepttl: true,
            ..cfg(10)
        });
        c.insert(&key(&qm), &positive(&qm, &[20, 40]), &qm, t0);
        assert_eq!(ttls_of(&c, t0 + Duration::from_secs(5), false), [20, 40]);
        assert_eq!(ttls_of(&c, t0 + Duration::from_secs(25), true), [30, 30]);
    }

    #[test]
    fn entries_gauge_sums_every_cache_and_forgets_a_dropped_one() {
        let m = Arc::new(Metrics::default());
        let (a, b) = (
            Cache::new(&cfg(10), m.clone()),
            Cache::new(&cfg(10), m.clone()),
        );
        let t0 = Instant::now();
        for (c, name) in [(&a, "a.example"), (&b, "b.example"), (&b, "c.example")] {
            let qm = query(name);
            c.insert(&key(&qm), &positive(&qm, &[60]), &qm, t0);
        }
        let gauge = |m: &Metrics| {
            m.render()
                .lines()
                .find(|l| l.starts_with("coredns_cache_entries{") && l.contains("success"))
                .map(|l| l.rsplit(' ').next().unwrap().to_string())
        };
        assert_eq!(gauge(&m).as_deref(), Some("3"));
        drop(b);
        assert_eq!(gauge(&m).as_deref(), Some("1"));
    }

    #[test]
    fn each_kind_within_its_capacity() {
        let c = new_cache(&CacheConfig {
            denial_capacity: Some(2),
            ..cfg(10)
        });
        let t0 = Instant::now();
        for i in 0..5 {
            let qm = query(&format!("p{i}.example"));
            c.insert(&key(&qm), &positive(&qm, &[60]), &qm, t0);
        }
        for i in 0..6 {
            let qm = query(&format!("n{i}.example"));
            c.insert(&key(&qm), &negative(&qm, 60, 60), &qm, t0);
        }
        // Negative answers evicted each other, never the positive ones.
        assert_eq!(c.len(), (5, 2));
        for i in 0..5 {
            let qm = query(&format!("p{i}.example"));
            assert!(matches!(c.get(&key(&qm), t0, false), Found::Fresh(_)));
        }
    }

    #[test]
    fn bounded_with_clock_eviction() {
        let c = new_cache(&cfg(4));
        let t0 = Instant::now();
        let names: Vec<Vec<u8>> = (0..4).map(|i| query(&format!("n{i}.example"))).collect();
        for qm in &names {
            c.insert(&key(qm), &positive(qm, &[60]), qm, t0);
        }
        // Reference n0 and n2: they survive the next two inserts.
        assert!(matches!(c.get(&key(&names[0]), t0, false), Found::Fresh(_)));
        assert!(matches!(c.get(&key(&names[2]), t0, false), Found::Fresh(_)));
        for i in 4..6 {
            let qm = query(&format!("n{i}.example"));
            c.insert(&key(&qm), &positive(&qm, &[60]), &qm, t0);
        }
        assert_eq!(c.len(), (4, 0));
        assert!(matches!(c.get(&key(&names[0]), t0, false), Found::Fresh(_)));
        assert!(matches!(c.get(&key(&names[2]), t0, false), Found::Fresh(_)));
        assert!(matches!(c.get(&key(&names[1]), t0, false), Found::Miss));
        assert!(matches!(c.get(&key(&names[3]), t0, false), Found::Miss));
        // Many more inserts never grow past the bound.
        for i in 0..1000 {
            let qm = query(&format!("m{i}.example"));
            c.insert(&key(&qm), &positive(&qm, &[60]), &qm, t0);
        }
        assert_eq!(c.len(), (4, 0));
    }

    #[test]
    fn prefetch_trigger() {
        let c = new_cache(&CacheConfig {
            min_ttl: 1,
            ..cfg(10)
        });
        let qm = query("p.example");
        let t0 = Instant::now();
        c.insert(&key(&qm), &positive(&qm, &[20]), &qm, t0);
        let Found::Fresh(e) = c.get(&key(&qm), t0, false) else {
            panic!()
        };
        // Popular but not near expiry.
        for _ in 0..5 {
            assert!(!e.hit_wants_prefetch(t0, 3));
        }
        // Near expiry: once, then not again while under way.
        let late = t0 + Duration::from_millis(18_500);
        assert!(e.hit_wants_prefetch(late, 3));
        assert!(!e.hit_wants_prefetch(late, 3));
        e.prefetch_done();
        assert!(e.hit_wants_prefetch(late, 3));
    }
}
