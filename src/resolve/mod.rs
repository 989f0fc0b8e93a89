//! Names outside the cluster zones: hosts file, critical names, cache, forwarding to upstreams.
//!
//! What CoreDNS's `hosts`, `cache`, `forward` and `loop` plugins do, at the packet level:
//!
//! ```text
//! query ─> hosts file ─> critical names ─> cache (fresh) ─────────────────────> reply
//!              │ (fallthrough)                 │ miss
//!              v                               v
//!          NXDOMAIN                 concurrency bound ──(full)──> REFUSED
//!                                              │
//!                                   coalescing (one upstream query per key)
//!                                              │
//!                           stub domain pool, else default pool (policy, health)
//!                                   UDP (TC -> TCP) / TCP, timeout per try
//!                                              │
//!                          reply passed through ─> cache ─> client ID + question
//!                          all failed ─> stale entry (RFC 8767) or SERVFAIL
//! ```
//!
//! The upstream's reply reaches the client as the upstream wrote it (rcode, flags, sections,
//! EDNS), with the client's ID and question bytes; it is truncated (TC set) to `max_size`.
//!
//! Transport: clients on TCP (`max_size` 65535) are forwarded over TCP, clients on UDP over UDP
//! with a truncated answer retried over TCP. `force_tcp` always uses TCP; `prefer_udp` uses UDP
//! (with the TCP retry) for TCP clients too.

pub mod cache;
pub mod critical;
pub mod hosts;
pub mod looping;
pub mod upstream;
pub mod wire;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::config::{Config, parse_upstream};
use crate::error::{ConfigError, Error};
use crate::ops::metrics::{self, AnswerSource};
use crate::wire::{HEADER_LEN, rcode, rtype};

use cache::{Cache, Found};
use critical::Critical;
use hosts::Hosts;
use upstream::{Pool, Upstream};

/// Largest `max_size` of a UDP client; anything above means the client came over TCP.
const TCP_MAX_SIZE: usize = 65535;
/// Prefetch requests waiting for the background worker; more are dropped (retried on a later hit).
const PREFETCH_QUEUE: usize = 256;
/// How often the critical-names state file is rewritten even when no address changed (so a
/// restart knows how fresh it is).
const STATE_MAX_AGE: Duration = Duration::from_secs(300);

/// Keys being fetched, with the clients waiting for the same answer.
type Waiting = Mutex<HashMap<Box<[u8]>, Vec<oneshot::Sender<Fetched>>>>;

/// The result of a forwarded query, shared by coalesced clients.
#[derive(Clone)]
enum Fetched {
    /// An upstream's reply (possibly SERVFAIL when every upstream said so).
    Reply(Arc<Vec<u8>>),
    /// No upstream answered.
    Failed,
}

/// A stub domain: its lowercase wire name and upstreams.
struct Stub {
    domain: String,
    wire: Vec<u8>,
    pool: Pool,
}

/// The loop-detection probe.
struct Probe {
    wire: Vec<u8>,
    dotted: String,
}

/// The forwarding settings of [`crate::config::ForwardConfig`] the query path needs.
#[derive(Debug, Clone)]
struct Settings {
    timeout: Duration,
    force_tcp: bool,
    prefer_udp: bool,
    max_fails: u32,
    health_check: Duration,
    max_concurrent: usize,
    hosts_reload: Duration,
}

/// Everything for names outside the cluster zones.
pub struct Resolver {
    s: Settings,
    /// None when forwarding is off.
    default_pool: Option<Pool>,
    /// Longest domain first.
    stubs: Vec<Stub>,
    cache: Option<Cache>,
    hosts: Option<Hosts>,
    critical: Option<Critical>,
    in_flight: AtomicUsize,
    waiting: Waiting,
    prefetch_tx: mpsc::Sender<Arc<cache::Entry>>,
    prefetch_rx: Mutex<Option<mpsc::Receiver<Arc<cache::Entry>>>>,
    probe_active: AtomicBool,
    probe: Mutex<Option<Probe>>,
    started: AtomicBool,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("upstreams", &self.upstreams())
            .field(
                "stub_domains",
                &self.stubs.iter().map(|s| &s.domain).collect::<Vec<_>>(),
            )
            .field("cache", &self.cache.as_ref().map(|c| c.len()))
            .finish()
    }
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> Error {
    Error::Config(ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    })
}

/// The nameservers of a resolv.conf file (port 53).
pub fn resolv_conf_nameservers(text: &str) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let mut f = line.split_whitespace();
        if f.next() != Some("nameserver") {
            continue;
        }
        let Some(addr) = f.next() else { continue };
        // A zone index (fe80::1%eth0) cannot be expressed in a SocketAddr without a scope id
        // lookup; such servers are skipped.
        match addr.parse::<std::net::IpAddr>() {
            Ok(ip) => out.push(SocketAddr::new(ip, 53)),
            Err(_) => tracing::warn!(nameserver = addr, "resolv.conf: nameserver skipped"),
        }
    }
    out
}

/// Does the wire name `name` equal `suffix` or end with it at a label boundary?
fn in_domain(name: &[u8], suffix: &[u8]) -> bool {
    let mut pos = 0;
    while pos < name.len() {
        if name.len() - pos < suffix.len() {
            return false;
        }
        if &name[pos..] == suffix {
            return true;
        }
        pos += 1 + name[pos] as usize;
    }
    false
}

struct SlotGuard<'a>(&'a AtomicUsize);

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Removes a coalescing entry when the leading query ends (or is dropped mid-way: the waiters
/// then see their channel closed and go on their own).
struct LeaderGuard<'a> {
    waiting: &'a Waiting,
    key: &'a [u8],
    done: bool,
}

impl LeaderGuard<'_> {
    fn finish(mut self) -> Vec<oneshot::Sender<Fetched>> {
        self.done = true;
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(self.key)
            .unwrap_or_default()
    }
}

impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.waiting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(self.key);
        }
    }
}

impl Resolver {
    /// Build from config: `cfg.forward` (upstreams, or the nameservers of `resolv_conf`; stub
    /// domains; policy), `cfg.cache`, `cfg.hosts`. Errors name the offending key; an upstream
    /// that is one of our own listen addresses is an [`Error::Loop`].
    pub fn new(cfg: &Config) -> Result<Arc<Resolver>, Error> {
        let f = &cfg.forward;
        if f.max_concurrent == 0 {
            return Err(invalid("forward.max_concurrent", "must be at least 1"));
        }
        if f.timeout.is_zero() {
            return Err(invalid("forward.timeout", "must be above zero"));
        }
        // Every upstream with the key it came from, for errors and the loop check.
        let mut keyed: Vec<(String, SocketAddr)> = Vec::new();
        let mut default_pool = None;
        if f.enabled {
            let mut addrs = Vec::new();
            if f.upstreams.is_empty() {
                let path = &f.resolv_conf;
                let text = std::fs::read_to_string(path).map_err(|e| {
                    invalid(
                        "forward.resolv_conf",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                addrs = resolv_conf_nameservers(&text);
                if addrs.is_empty() {
                    return Err(invalid(
                        "forward.resolv_conf",
                        format!(
                            "{} names no usable nameserver (or give forward.upstreams)",
                            path.display()
                        ),
                    ));
                }
                for a in &addrs {
                    keyed.push((
                        format!("forward.resolv_conf ({}) nameserver", path.display()),
                        *a,
                    ));
                }
            } else {
                for (i, u) in f.upstreams.iter().enumerate() {
                    let key = format!("forward.upstreams[{i}]");
                    let a = parse_upstream(u).map_err(|e| invalid(&key, e))?;
                    keyed.push((key, a));
                    addrs.push(a);
                }
            }
            default_pool = Some(Pool::new(&addrs, f.policy));
        }
        let mut stubs = Vec::new();
        for (domain, ups) in &f.stub_domains {
            let key = format!("forward.stub_domains.{domain}");
            let d = crate::zone::names::parse_domain(domain).map_err(|e| invalid(&key, e))?;
            if ups.is_empty() {
                return Err(invalid(&key, "no upstreams"));
            }
            let mut addrs = Vec::new();
            for (i, u) in ups.iter().enumerate() {
                let k = format!("{key}[{i}]");
                let a = parse_upstream(u).map_err(|e| invalid(&k, e))?;
                keyed.push((k, a));
                addrs.push(a);
            }
            let wire = wire::dotted_to_wire(&d).map_err(|e| invalid(&key, e.to_string()))?;
            stubs.push(Stub {
                domain: d,
                wire,
                pool: Pool::new(&addrs, f.policy),
            });
        }
        stubs.sort_by_key(|s| std::cmp::Reverse(s.wire.len()));
        looping::check(&cfg.listen, &keyed).map_err(Error::Loop)?;

        let (hosts, critical) = match &cfg.hosts {
            None => (None, None),
            Some(h) => {
                for (i, n) in h.critical_names.iter().enumerate() {
                    crate::zone::names::parse_domain(n)
                        .map_err(|e| invalid(format!("hosts.critical_names[{i}]"), e))?;
                }
                let hosts = h
                    .file
                    .as_ref()
                    .map(|p| Hosts::new(Some(p.clone()), h.fallthrough, h.ttl));
                let critical = (!h.critical_names.is_empty()).then(|| {
                    Critical::new(
                        &h.critical_names,
                        h.state_file.clone(),
                        cfg.cache.min_ttl,
                        cfg.cache.max_ttl,
                    )
                });
                (hosts, critical)
            }
        };
        let cache = cfg.cache.enabled.then(|| Cache::new(&cfg.cache));
        let (prefetch_tx, prefetch_rx) = mpsc::channel(PREFETCH_QUEUE);
        Ok(Arc::new(Resolver {
            s: Settings {
                timeout: f.timeout,
                force_tcp: f.force_tcp,
                prefer_udp: f.prefer_udp,
                max_fails: f.max_fails,
                health_check: f.health_check,
                max_concurrent: f.max_concurrent,
                hosts_reload: cfg.hosts.as_ref().map_or(Duration::ZERO, |h| h.reload),
            },
            default_pool,
            stubs,
            cache,
            hosts,
            critical,
            in_flight: AtomicUsize::new(0),
            waiting: Mutex::new(HashMap::new()),
            prefetch_tx,
            prefetch_rx: Mutex::new(Some(prefetch_rx)),
            probe_active: AtomicBool::new(false),
            probe: Mutex::new(None),
            started: AtomicBool::new(false),
        }))
    }

    /// Spawn the background work on the current tokio runtime: upstream health checks, hosts
    /// file reload, critical-name refresh, cache prefetch. The tasks hold only a weak reference
    /// and end once the resolver is dropped (or with the runtime). Calling it again does nothing.
    pub fn start(self: &Arc<Self>) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(self);
        if !self.s.health_check.is_zero() && self.pools().next().is_some() {
            tokio::spawn(health_loop(weak.clone(), self.s.health_check));
        }
        if self.hosts.as_ref().is_some_and(|h| h.file.is_some()) && !self.s.hosts_reload.is_zero() {
            tokio::spawn(hosts_loop(weak.clone(), self.s.hosts_reload));
        }
        if self.critical.is_some() && self.pools().next().is_some() {
            tokio::spawn(critical_loop(weak.clone()));
        }
        if let Some(rx) = self
            .prefetch_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            tokio::spawn(prefetch_loop(weak, rx));
        }
    }

    /// Synchronous fast path: answer from the hosts file, critical names or a fresh cache
    /// entry, writing the complete reply into `out` (cleared first). None: the query has to go
    /// upstream (or is not one this path handles).
    pub fn answer_local(
        &self,
        query: &[u8],
        max_size: usize,
        out: &mut Vec<u8>,
    ) -> Option<AnswerSource> {
        out.clear();
        let q = wire::parse_query(query).ok()?;
        if q.opcode != 0 {
            return None;
        }
        let mut kbuf = [0u8; 264];
        let klen = cache::key_into(&q, &mut kbuf);
        let r = self.local(&q, &kbuf[..klen], Instant::now(), max_size, out);
        if r.is_none() {
            out.clear();
        }
        r
    }

    fn local(
        &self,
        q: &wire::Query<'_>,
        key: &[u8],
        now: Instant,
        max_size: usize,
        out: &mut Vec<u8>,
    ) -> Option<AnswerSource> {
        if self.hosts.is_some() || self.critical.is_some() {
            let mut nb = [0u8; 256];
            if let Some(name) = wire::wire_to_dotted(q.qname(), &mut nb) {
                if let Some(h) = &self.hosts
                    && h.answer(q, name, out, false) == hosts::Outcome::Answered
                {
                    wire::fit(out, max_size);
                    return Some(AnswerSource::Hosts);
                }
                if let Some(c) = &self.critical
                    && c.answer(q, name, out)
                {
                    wire::fit(out, max_size);
                    return Some(AnswerSource::Hosts);
                }
                if let Some(h) = &self.hosts
                    && !h.fallthrough
                    && h.answer(q, name, out, true) == hosts::Outcome::Answered
                {
                    wire::fit(out, max_size);
                    return Some(AnswerSource::Hosts);
                }
            }
        }
        let c = self.cache.as_ref()?;
        let Found::Fresh(e) = c.get(key, now, false) else {
            return None;
        };
        e.write_reply(q, now, false, out);
        wire::fit(out, max_size);
        metrics::global().cache_hit(e.kind);
        if e.hit_wants_prefetch(now, c.prefetch) && self.prefetch_tx.try_send(e.clone()).is_err() {
            e.prefetch_done();
        }
        Some(AnswerSource::Cache)
    }

    /// Full path: hosts, critical names, cache, then upstreams (stub domain first, else the
    /// default ones). Always produces a reply.
    pub async fn resolve(&self, query: &[u8], max_size: usize) -> (Vec<u8>, AnswerSource) {
        let mut out = Vec::with_capacity(512);
        let q = match wire::parse_query(query) {
            Ok(q) => q,
            Err(_) => {
                wire::formerr_reply(query, &mut out);
                return (out, AnswerSource::Server);
            }
        };
        if q.opcode != 0 {
            wire::error_reply(&q, rcode::NOTIMP, &mut out);
            wire::fit(&mut out, max_size);
            return (out, AnswerSource::Server);
        }
        let mut kbuf = [0u8; 264];
        let klen = cache::key_into(&q, &mut kbuf);
        let key = &kbuf[..klen];
        if let Some(src) = self.local(&q, key, Instant::now(), max_size, &mut out) {
            return (out, src);
        }
        let refuse = |out: &mut Vec<u8>| {
            wire::error_reply(&q, rcode::REFUSED, out);
            wire::fit(out, max_size);
        };
        // Zone transfers are not proxied (multi-message answers).
        if q.qtype == rtype::AXFR || q.qtype == rtype::IXFR {
            refuse(&mut out);
            return (out, AnswerSource::Server);
        }
        let Some(pool) = self.pool_for(q.qname_end - HEADER_LEN, key) else {
            refuse(&mut out);
            return (out, AnswerSource::Server);
        };
        if self.is_loop_probe(&key[..q.qname_end - HEADER_LEN]) {
            tracing::error!(
                "forwarding loop: our own loop probe came back; not forwarding it again"
            );
            wire::error_reply(&q, rcode::SERVFAIL, &mut out);
            return (out, AnswerSource::Server);
        }
        if self.cache.is_some() {
            metrics::global().cache_miss();
        }
        let Some(_slot) = self.try_slot() else {
            metrics::global().forward_max_concurrent_reject();
            refuse(&mut out);
            return (out, AnswerSource::Server);
        };
        let client_tcp = max_size >= TCP_MAX_SIZE;
        let fetched = self
            .fetch(pool, key, query, q.question_end, client_tcp)
            .await;
        if let Fetched::Reply(r) = &fetched
            && wire::rcode_of(r) != rcode::SERVFAIL
        {
            write_forwarded(&q, r, max_size, &mut out);
            return (out, AnswerSource::Forward);
        }
        // Every upstream failed (or said SERVFAIL): RFC 8767 stale data if allowed.
        if let Some(c) = &self.cache
            && !c.serve_stale.is_zero()
        {
            let now = Instant::now();
            match c.get(key, now, true) {
                Found::Stale(e) => {
                    e.write_reply(&q, now, true, &mut out);
                    wire::fit(&mut out, max_size);
                    metrics::global().cache_served_stale();
                    return (out, AnswerSource::Cache);
                }
                Found::Fresh(e) => {
                    e.write_reply(&q, now, false, &mut out);
                    wire::fit(&mut out, max_size);
                    return (out, AnswerSource::Cache);
                }
                Found::Miss => {}
            }
        }
        match fetched {
            Fetched::Reply(r) => write_forwarded(&q, &r, max_size, &mut out),
            Fetched::Failed => wire::error_reply(&q, rcode::SERVFAIL, &mut out),
        }
        wire::fit(&mut out, max_size);
        (out, AnswerSource::Forward)
    }

    /// Loop detection at run time: is `qname_lower` (wire format, or dotted text with or
    /// without the trailing dot) our own probe coming back?
    pub fn is_loop_probe(&self, qname_lower: &[u8]) -> bool {
        if !self.probe_active.load(Ordering::Relaxed) {
            return false;
        }
        let p = self.probe.lock().unwrap_or_else(|e| e.into_inner());
        let Some(p) = p.as_ref() else { return false };
        let d = p.dotted.as_bytes();
        wire::eq_ignore_case(qname_lower, &p.wire)
            || wire::eq_ignore_case(qname_lower, d)
            || wire::eq_ignore_case(qname_lower, &d[..d.len() - 1])
    }

    /// Send the loop probe (a random `<n>.<n>.` HINFO query) through the default upstreams.
    /// If it ever reaches us again, [`Resolver::is_loop_probe`] says so.
    pub async fn send_loop_probe(&self) {
        let Some(pool) = &self.default_pool else {
            return;
        };
        let dotted = format!("{}.{}.", fastrand::u64(..), fastrand::u64(..));
        let Ok(w) = wire::dotted_to_wire(&dotted) else {
            return;
        };
        let msg = wire::build_query(fastrand::u16(..), &w, rtype::HINFO, true, false);
        *self.probe.lock().unwrap_or_else(|e| e.into_inner()) = Some(Probe {
            wire: w.clone(),
            dotted: dotted.clone(),
        });
        self.probe_active.store(true, Ordering::Release);
        tracing::debug!(probe = %dotted, "sending loop probe");
        let qe = HEADER_LEN + w.len() + 4;
        match self.forward(pool, &msg, qe, false).await {
            Fetched::Reply(r) => tracing::debug!(rcode = wire::rcode_of(&r), "loop probe answered"),
            Fetched::Failed => tracing::warn!("loop probe: no upstream answered"),
        }
    }

    /// Forwarded queries under way now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Every upstream (default, then stub domains) and whether it is considered healthy.
    pub fn upstreams(&self) -> Vec<(SocketAddr, bool)> {
        self.pools()
            .flat_map(|p| p.upstreams.iter().map(|u| (u.addr, !u.is_down())))
            .collect()
    }

    /// Cache entries held (positive, negative).
    pub fn cache_entries(&self) -> (usize, usize) {
        self.cache.as_ref().map_or((0, 0), |c| c.len())
    }

    fn pools(&self) -> impl Iterator<Item = &Pool> {
        self.default_pool
            .iter()
            .chain(self.stubs.iter().map(|s| &s.pool))
    }

    /// The pool for a name (`key` starts with the lowercase wire name of length `name_len`):
    /// the longest matching stub domain, else the default upstreams.
    fn pool_for(&self, name_len: usize, key: &[u8]) -> Option<&Pool> {
        let name = &key[..name_len];
        for s in &self.stubs {
            if in_domain(name, &s.wire) {
                return Some(&s.pool);
            }
        }
        self.default_pool.as_ref()
    }

    fn try_slot(&self) -> Option<SlotGuard<'_>> {
        let n = self.in_flight.fetch_add(1, Ordering::AcqRel);
        if n >= self.s.max_concurrent {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(SlotGuard(&self.in_flight))
    }

    /// Forward with coalescing: the first client asking for a key queries upstream; clients
    /// asking for the same key meanwhile wait for its answer.
    async fn fetch(
        &self,
        pool: &Pool,
        key: &[u8],
        query: &[u8],
        question_end: usize,
        client_tcp: bool,
    ) -> Fetched {
        loop {
            let rx = {
                let mut w = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
                match w.get_mut(key) {
                    Some(v) => {
                        let (tx, rx) = oneshot::channel();
                        v.push(tx);
                        Some(rx)
                    }
                    None => {
                        w.insert(key.into(), Vec::new());
                        None
                    }
                }
            };
            if let Some(rx) = rx {
                match rx.await {
                    Ok(f) => return f,
                    // The leading query was dropped: go again (lead or join another).
                    Err(_) => continue,
                }
            }
            let guard = LeaderGuard {
                waiting: &self.waiting,
                key,
                done: false,
            };
            let f = self.forward(pool, query, question_end, client_tcp).await;
            if let (Fetched::Reply(r), Some(c)) = (&f, &self.cache) {
                c.insert(key, r, query, Instant::now());
            }
            for tx in guard.finish() {
                let _ = tx.send(f.clone());
            }
            return f;
        }
    }

    /// Send `query` to the pool's upstreams in policy order, healthy ones first, each once (a
    /// lone upstream twice), with a timeout per try. A truncated UDP answer is retried over TCP. A SERVFAIL moves on
    /// to the next upstream, and is returned only if no upstream did better.
    async fn forward(
        &self,
        pool: &Pool,
        query: &[u8],
        question_end: usize,
        client_tcp: bool,
    ) -> Fetched {
        let (order, all_down) = pool.order();
        if order.is_empty() {
            return Fetched::Failed;
        }
        if all_down {
            metrics::global().forward_broken();
        }
        let mut msg = query.to_vec();
        if let Ok(pq) = wire::parse_query(query)
            && let Some(e) = pq.edns
        {
            // Advertise at most EDNS_SIZE upstream: larger answers come over TCP, unfragmented.
            if e.udp_size > wire::EDNS_SIZE {
                wire::put_u16(&mut msg, e.size_off, wire::EDNS_SIZE);
            }
            // The client's DNS cookie is between it and us: sent upstream, the server cookie in
            // the reply would be cached and handed to other clients.
            wire::strip_edns_option(&mut msg, &e, wire::OPT_COOKIE);
        }
        let tcp_first = self.s.force_tcp || (client_tcp && !self.s.prefer_udp);
        let mut servfail = None;
        // Each upstream once; a lone upstream gets a second try (a lost datagram is not an
        // outage), but not after a SERVFAIL.
        let tries = order.len().max(2);
        for i in 0..tries {
            let up = order[i % order.len()];
            if i >= order.len() && servfail.is_some() {
                break;
            }
            msg[0..2].copy_from_slice(&fastrand::u16(..).to_be_bytes());
            let start = Instant::now();
            let res = self.try_upstream(up, &msg, question_end, tcp_first).await;
            match res {
                Ok(r) => {
                    up.succeeded();
                    let rc = wire::rcode_of(&r);
                    up.metrics.request(rc, start.elapsed());
                    if rc == rcode::SERVFAIL {
                        servfail = Some(r);
                        continue;
                    }
                    return Fetched::Reply(Arc::new(r));
                }
                Err(e) => {
                    tracing::debug!(upstream = %up.addr, error = %e, "upstream try failed");
                    up.failed(self.s.max_fails);
                }
            }
        }
        match servfail {
            Some(r) => Fetched::Reply(Arc::new(r)),
            None => Fetched::Failed,
        }
    }

    async fn try_upstream(
        &self,
        up: &Upstream,
        msg: &[u8],
        question_end: usize,
        tcp: bool,
    ) -> Result<Vec<u8>, upstream::ExchangeError> {
        if tcp {
            return up
                .tcp(msg, question_end, Instant::now() + self.s.timeout)
                .await;
        }
        let r = up
            .udp(msg, question_end, Instant::now() + self.s.timeout)
            .await?;
        if r[2] & wire::F_TC == 0 {
            return Ok(r);
        }
        // Truncated: the whole answer over TCP (a new try with its own timeout); if that
        // fails, the truncated answer is still an answer (the client may retry over TCP).
        match up
            .tcp(msg, question_end, Instant::now() + self.s.timeout)
            .await
        {
            Ok(full) => Ok(full),
            Err(e) => {
                tracing::debug!(upstream = %up.addr, error = %e, "TCP retry after TC failed");
                Ok(r)
            }
        }
    }

    /// One health probe (`. IN NS`) to an upstream.
    async fn probe_upstream(&self, up: &Upstream) {
        let msg = wire::build_query(fastrand::u16(..), &[0], rtype::NS, true, false);
        let qe = HEADER_LEN + 1 + 4;
        let deadline = Instant::now() + self.s.timeout;
        let r = if self.s.force_tcp {
            up.tcp(&msg, qe, deadline).await
        } else {
            up.udp(&msg, qe, deadline).await
        };
        match r {
            Ok(_) => up.succeeded(),
            Err(e) => {
                tracing::debug!(upstream = %up.addr, error = %e, "health check failed");
                up.failed(self.s.max_fails);
            }
        }
    }

    async fn prefetch(&self, e: Arc<cache::Entry>) {
        let Ok(q) = wire::parse_query(&e.query) else {
            return;
        };
        let mut kbuf = [0u8; 264];
        let klen = cache::key_into(&q, &mut kbuf);
        let key = &kbuf[..klen];
        let Some(pool) = self.pool_for(q.qname_end - HEADER_LEN, key) else {
            return;
        };
        if let Some(_slot) = self.try_slot() {
            metrics::global().cache_prefetch();
            self.fetch(pool, key, &e.query, q.question_end, false).await;
        }
        e.prefetch_done();
    }

    /// Refresh the critical names that are due; returns when the next one is due.
    async fn refresh_critical(&self) -> Option<Instant> {
        let c = self.critical.as_ref()?;
        let (due, next) = c.due(Instant::now());
        let jobs = due.into_iter().map(|(i, qtype)| async move {
            let w = &c.names[i].wire;
            let msg = wire::build_query(fastrand::u16(..), w, qtype, true, true);
            let qe = HEADER_LEN + w.len() + 4;
            let mut key = w.clone();
            key.extend_from_slice(&[0; 5]);
            let fetch = match self.pool_for(w.len(), &key) {
                None => critical::Fetch::Failed("forwarding is off".into()),
                Some(pool) => match self.forward(pool, &msg, qe, false).await {
                    Fetched::Reply(r) => critical::extract(&r, qtype),
                    Fetched::Failed => critical::Fetch::Failed("no upstream answered".into()),
                },
            };
            c.update(i, qtype, fetch, Instant::now());
        });
        let n = jobs.len();
        futures::future::join_all(jobs).await;
        let (_, after) = c.due(Instant::now());
        if n > 0 {
            c.save(STATE_MAX_AGE);
        }
        after.or(next)
    }
}

/// The server's view of the resolver (`crate::server::Upstream`).
impl crate::server::Upstream for Resolver {
    fn answer_local(
        &self,
        query: &[u8],
        max_size: usize,
        out: &mut Vec<u8>,
    ) -> Option<AnswerSource> {
        Resolver::answer_local(self, query, max_size, out)
    }

    fn resolve<'a>(
        &'a self,
        query: &'a [u8],
        max_size: usize,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = (Vec<u8>, AnswerSource)> + Send + 'a>>
    {
        Box::pin(Resolver::resolve(self, query, max_size))
    }

    fn is_loop_probe(&self, qname_lower: &[u8]) -> bool {
        Resolver::is_loop_probe(self, qname_lower)
    }
}

/// The client's reply from an upstream's: the upstream's bytes with the client's ID and
/// question bytes (same length; only the case may differ), fitted to `max_size`.
fn write_forwarded(q: &wire::Query<'_>, r: &[u8], max_size: usize, out: &mut Vec<u8>) {
    out.clear();
    if wire::u16_at(r, 4) == 1 && r.len() >= q.question_end {
        out.extend_from_slice(r);
        out[0..2].copy_from_slice(&q.id.to_be_bytes());
        out[HEADER_LEN..q.question_end].copy_from_slice(q.question());
    } else {
        // No question in the upstream's reply (some servers do that for errors): our own reply
        // with its rcode.
        wire::error_reply(q, wire::rcode_of(r), out);
    }
    wire::fit(out, max_size);
}

async fn health_loop(weak: Weak<Resolver>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(r) = weak.upgrade() else { return };
        let suspects: Vec<&Upstream> = r
            .pools()
            .flat_map(|p| p.upstreams.iter().map(|u| &**u))
            .filter(|u| u.fails() > 0)
            .collect();
        futures::future::join_all(suspects.into_iter().map(|u| r.probe_upstream(u))).await;
    }
}

async fn hosts_loop(weak: Weak<Resolver>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(r) = weak.upgrade() else { return };
        let _ =
            tokio::task::spawn_blocking(move || r.hosts.as_ref().map(|h| h.reload_if_changed()))
                .await;
    }
}

async fn critical_loop(weak: Weak<Resolver>) {
    loop {
        let next = {
            let Some(r) = weak.upgrade() else { return };
            r.refresh_critical().await
        };
        let now = Instant::now();
        let wake = next.unwrap_or(now + Duration::from_secs(30)).clamp(
            now + Duration::from_millis(50),
            now + Duration::from_secs(30),
        );
        tokio::time::sleep_until(wake.into()).await;
    }
}

async fn prefetch_loop(weak: Weak<Resolver>, mut rx: mpsc::Receiver<Arc<cache::Entry>>) {
    while let Some(e) = rx.recv().await {
        let Some(r) = weak.upgrade() else { return };
        tokio::spawn(async move { r.prefetch(e).await });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_parsing() {
        let text = "# x\nsearch svc.cluster.local\nnameserver 10.0.0.10\nnameserver ::1 # v6\nnameserver fe80::1%eth0\noptions ndots:5\n";
        let ns = resolv_conf_nameservers(text);
        assert_eq!(
            ns,
            vec!["10.0.0.10:53".parse().unwrap(), "[::1]:53".parse().unwrap()]
        );
    }

    #[test]
    fn domain_suffix() {
        let w = |s: &str| wire::dotted_to_wire(s).unwrap();
        assert!(in_domain(&w("a.corp.example"), &w("corp.example")));
        assert!(in_domain(&w("corp.example"), &w("corp.example")));
        assert!(!in_domain(&w("xcorp.example"), &w("corp.example")));
        assert!(!in_domain(&w("example"), &w("corp.example")));
    }

    fn cfg_with(upstreams: Vec<String>) -> Config {
        let mut c = Config {
            listen: vec!["127.0.0.1:1053".parse().unwrap()],
            ..Config::default()
        };
        c.forward.upstreams = upstreams;
        c
    }

    #[test]
    fn config_errors_name_the_key() {
        let e = Resolver::new(&cfg_with(vec!["127.0.0.1:9".into(), "nope".into()]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("forward.upstreams[1]"), "{e}");
        let mut c = cfg_with(vec!["127.0.0.1:9".into()]);
        c.forward
            .stub_domains
            .insert("bad..name".into(), vec!["127.0.0.1:9".into()]);
        let e = Resolver::new(&c).unwrap_err().to_string();
        assert!(e.contains("forward.stub_domains.bad..name"), "{e}");
        let mut c = cfg_with(vec!["127.0.0.1:9".into()]);
        c.forward
            .stub_domains
            .insert("corp.example".into(), vec!["x.y".into()]);
        let e = Resolver::new(&c).unwrap_err().to_string();
        assert!(e.contains("forward.stub_domains.corp.example[0]"), "{e}");
        let mut c = cfg_with(vec![]);
        let dir = tempfile::tempdir().unwrap();
        c.forward.resolv_conf = dir.path().join("resolv.conf");
        std::fs::write(&c.forward.resolv_conf, "search x\n").unwrap();
        let e = Resolver::new(&c).unwrap_err().to_string();
        assert!(e.contains("forward.resolv_conf"), "{e}");
        let mut c = cfg_with(vec!["127.0.0.1:9".into()]);
        c.hosts = Some(crate::config::HostsConfig {
            critical_names: vec!["a..b".into()],
            ..Default::default()
        });
        let e = Resolver::new(&c).unwrap_err().to_string();
        assert!(e.contains("hosts.critical_names[0]"), "{e}");
    }

    #[test]
    fn loop_is_refused() {
        let e = Resolver::new(&cfg_with(vec!["127.0.0.1:1053".into()])).unwrap_err();
        assert!(matches!(e, Error::Loop(_)), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("forward.upstreams[0]") && msg.contains("127.0.0.1:1053"),
            "{msg}"
        );
        let mut c = cfg_with(vec!["127.0.0.1:9".into()]);
        c.forward
            .stub_domains
            .insert("corp.example".into(), vec!["127.0.0.1:1053".into()]);
        let msg = Resolver::new(&c).unwrap_err().to_string();
        assert!(
            msg.contains("forward.stub_domains.corp.example[0]"),
            "{msg}"
        );
    }

    #[test]
    fn resolv_conf_upstreams_used() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg_with(vec![]);
        c.forward.resolv_conf = dir.path().join("resolv.conf");
        std::fs::write(
            &c.forward.resolv_conf,
            "nameserver 127.0.0.9\nnameserver 127.0.0.10\n",
        )
        .unwrap();
        let r = Resolver::new(&c).unwrap();
        assert_eq!(
            r.upstreams(),
            vec![
                ("127.0.0.9:53".parse().unwrap(), true),
                ("127.0.0.10:53".parse().unwrap(), true)
            ]
        );
        // A resolv.conf naming our own address (listening on every address, port 53) loops.
        c.listen = vec!["0.0.0.0:53".parse().unwrap()];
        let msg = Resolver::new(&c).unwrap_err().to_string();
        assert!(
            msg.contains("forward.resolv_conf") && msg.contains("127.0.0.9:53"),
            "{msg}"
        );
    }

    #[test]
    fn probe_matching_forms() {
        let r = Resolver::new(&cfg_with(vec!["127.0.0.1:9".into()])).unwrap();
        assert!(!r.is_loop_probe(b"1.2."));
        *r.probe.lock().unwrap() = Some(Probe {
            wire: wire::dotted_to_wire("12.34.").unwrap(),
            dotted: "12.34.".into(),
        });
        r.probe_active.store(true, Ordering::Release);
        assert!(r.is_loop_probe(b"12.34."));
        assert!(r.is_loop_probe(b"12.34"));
        assert!(r.is_loop_probe(b"\x0212\x0234\x00"));
        assert!(!r.is_loop_probe(b"12.35."));
    }
}
