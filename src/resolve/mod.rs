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

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::clock::Clock;
use crate::config::{ClientSubnet, Config, parse_upstream};
use crate::error::{ConfigError, Error};
use crate::observe::AnswerSource;
use crate::ops::metrics::Metrics;
use crate::server::Resolved;
use crate::wire::{self, EDNS_SIZE, F_TC, HEADER_LEN, Query, rcode, rtype};

use cache::{Cache, Found};
use critical::Critical;
use hosts::Hosts;
use upstream::{ExchangeError, Pool, Purpose, Transport, Upstream};

/// Largest `max_size` of a UDP client; anything above means the client came over TCP.
const TCP_MAX_SIZE: usize = 65535;
/// Prefetch requests waiting for the background worker; more are dropped (retried on a later hit).
const PREFETCH_QUEUE: usize = 256;
/// How often the critical-names state file is rewritten even when no address changed (so a
/// restart knows how fresh it is).
const STATE_MAX_AGE: Duration = Duration::from_secs(300);
/// A try still unanswered after this long (when the timeout is longer), while another query
/// for the same name waits for it, makes a loop through its upstream suspect: a relay that
/// sends our queries back with IDs of its own is found well before the try times out (its
/// copy of our query is the one waiting).
const SLOW_TRY: Duration = Duration::from_millis(500);
/// An upstream is sent a loop probe at most this often (suspicions, and the re-probes of a
/// looping upstream that find the loop gone).
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// Keys being fetched, with the clients waiting for the same answer.
type Waiting = Mutex<HashMap<Box<[u8]>, Flight>>;

/// One key being fetched upstream.
#[derive(Default)]
struct Flight {
    /// Clients asking for the same key meanwhile.
    waiters: Vec<oneshot::Sender<Fetched>>,
    /// The message ID and upstream of the try under way: a query for the same key arriving
    /// with that ID is most likely our own, sent back to us (a loop).
    try_id: Option<u16>,
    upstream: Option<Arc<Upstream>>,
}

/// The result of a forwarded query, shared by coalesced clients.
#[derive(Clone)]
enum Fetched {
    /// An upstream's reply (possibly SERVFAIL when every upstream said so), and which one.
    Reply {
        reply: Arc<Vec<u8>>,
        from: SocketAddr,
    },
    /// No upstream answered.
    Failed,
}

/// A stub domain: its lowercase wire name and upstreams.
struct Stub {
    domain: String,
    wire: Vec<u8>,
    pool: Pool,
}

/// Where a name is forwarded: a pool, and the domain its loop probes are asked under.
#[derive(Clone, Copy)]
struct Route<'a> {
    pool: &'a Pool,
    domain: &'a [u8],
}

/// The root, the domain of the default upstreams' loop probes.
const ROOT: &[u8] = &[0];

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
    /// The payload size advertised in the OPT records of our own replies.
    max_udp: u16,
    pass_client_subnet: bool,
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
    probes: looping::Probes,
    /// Itself, for the loop probes it starts from the query path.
    me: Weak<Resolver>,
    started: AtomicBool,
    metrics: Arc<Metrics>,
    /// When entries expire and background work is due. How long a peer takes (a try's
    /// timeout, a slow try, the loop-probe pace, idle connections) stays on tokio's timer: a
    /// test that moves this clock does not move the network (see [`crate::clock`]).
    clock: Clock,
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
            .map(|f| f.waiters)
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
    /// Build from a config that passed [`Config::validate`]: `cfg.forward` (upstreams, or the
    /// nameservers of `resolv_conf`; stub domains; policy), `cfg.cache`, `cfg.hosts`. What
    /// `validate` checks (addresses, domain names, bounds) is trusted here, not checked again;
    /// only what shows when building is an error: a `resolv_conf` that cannot be read or names
    /// no nameserver, and an upstream that is one of our own listen addresses ([`Error::Loop`]).
    /// Everything counts into `metrics`; TTLs, stale windows and the health-check and refresh
    /// schedules follow `clock`.
    pub fn new(cfg: &Config, metrics: Arc<Metrics>, clock: Clock) -> Result<Arc<Resolver>, Error> {
        let f = &cfg.forward;
        // Every upstream with the key it came from, for errors and the loop check. Entries
        // `validate` would reject do not parse here either and are left out.
        let keyed_list = |key: &str, list: &[String]| -> Vec<(String, SocketAddr)> {
            list.iter()
                .enumerate()
                .filter_map(|(i, u)| Some((format!("{key}[{i}]"), parse_upstream(u).ok()?)))
                .collect()
        };
        let mut keyed: Vec<(String, SocketAddr)> = Vec::new();
        let mut default_pool = None;
        if f.enabled {
            let addrs = if f.upstreams.is_empty() {
                let path = &f.resolv_conf;
                let text = std::fs::read_to_string(path).map_err(|e| {
                    invalid(
                        "forward.resolv_conf",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                let addrs = resolv_conf_nameservers(&text);
                if addrs.is_empty() {
                    return Err(invalid(
                        "forward.resolv_conf",
                        format!(
                            "{} names no usable nameserver (or give forward.upstreams)",
                            path.display()
                        ),
                    ));
                }
                let key = format!("forward.resolv_conf ({}) nameserver", path.display());
                keyed.extend(addrs.iter().map(|a| (key.clone(), *a)));
                addrs
            } else {
                let list = keyed_list("forward.upstreams", &f.upstreams);
                keyed.extend(list.iter().cloned());
                list.into_iter().map(|(_, a)| a).collect()
            };
            default_pool = Some(Pool::new(&addrs, f.policy, &metrics));
        }
        let mut stubs = Vec::new();
        for (domain, ups) in &f.stub_domains {
            let (Ok(d), list) = (
                crate::names::parse_domain(domain),
                keyed_list(&format!("forward.stub_domains.{domain}"), ups),
            ) else {
                continue;
            };
            let Ok(wire) = wire::dotted_to_wire(&d) else {
                continue;
            };
            keyed.extend(list.iter().cloned());
            let addrs: Vec<SocketAddr> = list.into_iter().map(|(_, a)| a).collect();
            stubs.push(Stub {
                domain: d,
                wire,
                pool: Pool::new(&addrs, f.policy, &metrics),
            });
        }
        stubs.sort_by_key(|s| std::cmp::Reverse(s.wire.len()));
        looping::check(&cfg.listen, &keyed).map_err(Error::Loop)?;

        let (hosts, critical) = match &cfg.hosts {
            None => (None, None),
            Some(h) => {
                let hosts = h
                    .file
                    .as_ref()
                    .map(|p| Hosts::new(Some(p.clone()), h.fallthrough, h.ttl, metrics.clone()));
                let critical = (!h.critical_names.is_empty()).then(|| {
                    Critical::new(
                        &h.critical_names,
                        h.state_file.clone(),
                        cfg.cache.min_ttl,
                        cfg.cache.max_ttl,
                        clock.clone(),
                    )
                });
                (hosts, critical)
            }
        };
        let cache = cfg
            .cache
            .enabled
            .then(|| Cache::new(&cfg.cache, metrics.clone()));
        let (prefetch_tx, prefetch_rx) = mpsc::channel(PREFETCH_QUEUE);
        let s = Settings {
            timeout: f.timeout,
            force_tcp: f.force_tcp,
            prefer_udp: f.prefer_udp,
            max_fails: f.max_fails,
            health_check: f.health_check,
            max_concurrent: f.max_concurrent,
            hosts_reload: cfg.hosts.as_ref().map_or(Duration::ZERO, |h| h.reload),
            max_udp: cfg.server.max_udp_size,
            pass_client_subnet: f.client_subnet == ClientSubnet::Forward,
        };
        Ok(Arc::new_cyclic(|me| Resolver {
            s,
            default_pool,
            stubs,
            cache,
            hosts,
            critical,
            in_flight: AtomicUsize::new(0),
            waiting: Mutex::new(HashMap::new()),
            prefetch_tx,
            prefetch_rx: Mutex::new(Some(prefetch_rx)),
            probes: looping::Probes::default(),
            me: me.clone(),
            started: AtomicBool::new(false),
            metrics,
            clock,
        }))
    }

    /// Spawn the background work on the current tokio runtime: upstream health checks, hosts
    /// file reload, critical-name refresh, cache prefetch, re-probes of looping upstreams. The
    /// tasks hold only a weak reference and end once the resolver is dropped (or with the
    /// runtime). Calling it again does nothing.
    pub fn start(self: &Arc<Self>) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(self);
        if !self.s.health_check.is_zero() && self.routes().next().is_some() {
            tokio::spawn(health_loop(
                weak.clone(),
                self.clock.clone(),
                self.s.health_check,
            ));
        }
        if self.routes().next().is_some() {
            tokio::spawn(loop_watch(weak.clone()));
        }
        if self.hosts.as_ref().is_some_and(|h| h.file.is_some()) && !self.s.hosts_reload.is_zero() {
            tokio::spawn(hosts_loop(
                weak.clone(),
                self.clock.clone(),
                self.s.hosts_reload,
            ));
        }
        if self.critical.is_some() && self.routes().next().is_some() {
            tokio::spawn(critical_loop(weak.clone(), self.clock.clone()));
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

    /// [`Resolver::answer_query_local`] of a query message (for tests and tools; the server
    /// hands over the query it parsed). None also for a message that is not a query.
    pub fn answer_local(
        &self,
        query: &[u8],
        max_size: usize,
        out: &mut Vec<u8>,
    ) -> Option<AnswerSource> {
        out.clear();
        let q = Query::parse(query).ok()?;
        if q.opcode != 0 {
            return None;
        }
        self.answer_query_local(&q, max_size, out)
    }

    /// Synchronous fast path: answer from the hosts file, critical names or a fresh cache
    /// entry, writing the complete reply into `out` (cleared first). Our own loop probe coming
    /// back is answered here too (SERVFAIL; it is never forwarded again). None: the query has
    /// to go upstream.
    pub fn answer_query_local(
        &self,
        q: &Query<'_>,
        max_size: usize,
        out: &mut Vec<u8>,
    ) -> Option<AnswerSource> {
        out.clear();
        if let Some(up) = self.probes.arrived(q.qname_lower()) {
            self.loop_found(&up);
            wire::rcode_reply(out, q, rcode::SERVFAIL, true, self.s.max_udp);
            return Some(AnswerSource::Server);
        }
        if let Some(rc) = self.refuse_subnet(q) {
            wire::rcode_reply(out, q, rc, true, self.s.max_udp);
            return Some(AnswerSource::Server);
        }
        let mut kbuf = [0u8; cache::KEY_MAX];
        let klen = cache::key_into(q, self.s.pass_client_subnet, &mut kbuf);
        let r = self.local(q, &kbuf[..klen], self.clock.now(), max_size, out);
        if r.is_none() {
            out.clear();
        }
        r
    }

    /// RFC 7871 §7.1.1: a malformed client subnet option gets FORMERR — when we would pass it
    /// on (stripped, it is none of our business).
    fn refuse_subnet(&self, q: &Query<'_>) -> Option<u16> {
        let ecs = q.client_subnet().filter(|_| self.s.pass_client_subnet)?;
        (!cache::valid_client_subnet(ecs)).then_some(rcode::FORMERR)
    }

    fn local(
        &self,
        q: &Query<'_>,
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
        self.metrics.cache_hit(e.kind);
        if e.hit_wants_prefetch(now, c.prefetch) && self.prefetch_tx.try_send(e.clone()).is_err() {
            e.prefetch_done();
        }
        Some(AnswerSource::Cache)
    }

    /// [`Resolver::resolve_query`] of a query message (for tests and tools); a message that is
    /// not a usable query gets the error reply the server would send (nothing for a response).
    pub async fn resolve(&self, query: &[u8], max_size: usize) -> (Vec<u8>, AnswerSource) {
        match Query::parse(query) {
            Ok(q) => {
                let r = self.resolve_query(&q, max_size).await;
                (r.reply, r.source)
            }
            Err(e) => {
                let mut out = Vec::new();
                wire::error_reply(&mut out, &e);
                (out, AnswerSource::Server)
            }
        }
    }

    /// Full path: hosts, critical names, cache, then upstreams (stub domain first, else the
    /// default ones). Always produces a reply, at most `max_size` bytes.
    pub async fn resolve_query(&self, q: &Query<'_>, max_size: usize) -> Resolved {
        let mut out = Vec::with_capacity(512);
        let ours = |out: Vec<u8>, source| Resolved {
            reply: out,
            source,
            upstream: None,
        };
        if q.opcode != 0 {
            wire::rcode_reply(&mut out, q, rcode::NOTIMP, true, self.s.max_udp);
            return ours(out, AnswerSource::Server);
        }
        if let Some(src) = self.answer_query_local(q, max_size, &mut out) {
            return ours(out, src);
        }
        let mut kbuf = [0u8; cache::KEY_MAX];
        let klen = cache::key_into(q, self.s.pass_client_subnet, &mut kbuf);
        let key = &kbuf[..klen];
        let refuse = |mut out: Vec<u8>| {
            wire::rcode_reply(&mut out, q, rcode::REFUSED, true, self.s.max_udp);
            ours(out, AnswerSource::Server)
        };
        // Zone transfers are not proxied (multi-message answers).
        if q.qtype == rtype::AXFR || q.qtype == rtype::IXFR {
            return refuse(out);
        }
        let Some(route) = self.route(q.qname_lower()) else {
            return refuse(out);
        };
        if self.cache.is_some() {
            self.metrics.cache_miss();
        }
        let Some(_slot) = self.try_slot() else {
            self.metrics.forward_max_concurrent_reject();
            return refuse(out);
        };
        let client_tcp = max_size >= TCP_MAX_SIZE;
        let mut msg = Vec::with_capacity(q.message().len());
        q.upstream_message(0, EDNS_SIZE, self.s.pass_client_subnet, &mut msg);
        let fetched = self
            .fetch(route, key, &msg, q.question_end(), client_tcp, Some(q.id))
            .await;
        if let Fetched::Reply { reply, from } = &fetched
            && wire::rcode_of(reply) != rcode::SERVFAIL
        {
            wire::reply::forwarded(q, reply, max_size, self.s.max_udp, &mut out);
            return Resolved {
                reply: out,
                source: AnswerSource::Forward,
                upstream: Some(*from),
            };
        }
        // Every upstream failed (or said SERVFAIL): RFC 8767 stale data if allowed.
        if let Some(c) = &self.cache
            && !c.serve_stale.is_zero()
        {
            let now = self.clock.now();
            match c.get(key, now, true) {
                Found::Stale(e) => {
                    e.write_reply(q, now, true, &mut out);
                    wire::fit(&mut out, max_size);
                    self.metrics.cache_served_stale();
                    return ours(out, AnswerSource::Cache);
                }
                Found::Fresh(e) => {
                    e.write_reply(q, now, false, &mut out);
                    wire::fit(&mut out, max_size);
                    return ours(out, AnswerSource::Cache);
                }
                Found::Miss => {}
            }
        }
        match fetched {
            Fetched::Reply { reply, from } => {
                wire::reply::forwarded(q, &reply, max_size, self.s.max_udp, &mut out);
                Resolved {
                    reply: out,
                    source: AnswerSource::Forward,
                    upstream: Some(from),
                }
            }
            Fetched::Failed => {
                wire::rcode_reply(&mut out, q, rcode::SERVFAIL, true, self.s.max_udp);
                ours(out, AnswerSource::Forward)
            }
        }
    }

    /// Is `name` one of our loop probes (lowercase wire form, or dotted text with or without
    /// the trailing dot)?
    pub fn is_loop_probe(&self, name: &[u8]) -> bool {
        if self.probes.is_probe(&name.to_ascii_lowercase()) {
            return true;
        }
        std::str::from_utf8(name)
            .ok()
            .and_then(|s| wire::dotted_to_wire(s).ok())
            .is_some_and(|w| self.probes.is_probe(&w))
    }

    /// Probe every upstream for a forwarding loop (see [`looping`]), and wait for the probes.
    /// Run once the DNS sockets are open: a probe that comes back must find us listening.
    pub async fn send_loop_probe(&self) {
        let jobs = self.routes().flat_map(|r| {
            r.pool
                .upstreams
                .iter()
                .map(move |u| self.probe(u, r.domain))
        });
        futures::future::join_all(jobs).await;
    }

    /// Send `up` a probe name under `domain`. Answered without the name coming back to us:
    /// no loop through `up` (any loop found before is gone). The name coming back marks the
    /// loop as it arrives ([`Resolver::answer_query_local`]).
    async fn probe(&self, up: &Arc<Upstream>, domain: &[u8]) {
        *up.last_probe.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        up.probing.store(true, Ordering::Release);
        let name = self.probes.register(up, domain);
        let msg = wire::query::build(fastrand::u16(..), &name, rtype::HINFO, true, None);
        let r = up
            .exchange(
                self.probe_transport(),
                &msg,
                msg.len(),
                self.s.timeout,
                Purpose::Probe,
            )
            .await;
        up.probing.store(false, Ordering::Release);
        match r {
            Ok(_) if !self.probes.came_back(&name) => self.loop_gone(up),
            Ok(_) => {}
            Err(e) => tracing::debug!(upstream = %up.addr, error = %e, "loop probe not answered"),
        }
    }

    /// A loop through `up` may have formed: probe it in the background. A `strong` suspicion
    /// (our own query came back, by its ID) is probed unless a probe is under way; others at
    /// most once a second: then the time from which one may be sent is returned.
    fn suspect(&self, up: &Arc<Upstream>, domain: &[u8], strong: bool) -> Option<Instant> {
        {
            let mut last = up.last_probe.lock().unwrap_or_else(|e| e.into_inner());
            if up.probing.load(Ordering::Acquire) {
                return None;
            }
            if let Some(t) = *last
                && !strong
                && t.elapsed() < PROBE_EVERY
            {
                return Some(t + PROBE_EVERY);
            }
            *last = Some(Instant::now());
        }
        let me = self.me.upgrade()?;
        let (up, domain) = (up.clone(), domain.to_vec());
        tokio::spawn(async move { me.probe(&up, &domain).await });
        None
    }

    fn loop_found(&self, up: &Upstream) {
        if up.set_looping(true) {
            tracing::error!(
                upstream = %up.addr,
                "forwarding loop: queries sent to this upstream come back to clusterdns; names forwarded only to it get SERVFAIL until the loop is gone (check forward.upstreams / resolv.conf and the upstream's own forwarding)"
            );
            up.metrics.loop_detected();
        }
    }

    fn loop_gone(&self, up: &Upstream) {
        if up.set_looping(false) {
            tracing::info!(upstream = %up.addr, "forwarding loop gone: forwarding to this upstream again");
        }
    }

    /// Forwarded queries under way now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Every upstream (default, then stub domains) and whether it is considered healthy.
    pub fn upstreams(&self) -> Vec<(SocketAddr, bool)> {
        self.routes()
            .flat_map(|r| r.pool.upstreams.iter().map(|u| (u.addr, !u.is_down())))
            .collect()
    }

    /// Cache entries held (positive, negative).
    pub fn cache_entries(&self) -> (usize, usize) {
        self.cache.as_ref().map_or((0, 0), |c| c.len())
    }

    /// Every pool with its probe domain: the default upstreams, then the stub domains'.
    fn routes(&self) -> impl Iterator<Item = Route<'_>> {
        self.default_pool
            .iter()
            .map(|pool| Route { pool, domain: ROOT })
            .chain(self.stubs.iter().map(|s| Route {
                pool: &s.pool,
                domain: &s.wire,
            }))
    }

    /// Where a name (lowercase wire form) goes: the longest matching stub domain, else the
    /// default upstreams.
    fn route(&self, name: &[u8]) -> Option<Route<'_>> {
        for s in &self.stubs {
            if wire::in_domain(name, &s.wire) {
                return Some(Route {
                    pool: &s.pool,
                    domain: &s.wire,
                });
            }
        }
        self.default_pool
            .as_ref()
            .map(|pool| Route { pool, domain: ROOT })
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
    /// asking for the same key meanwhile wait for its answer. `client_id`: the ID of the
    /// client's query (None for our own refreshes).
    async fn fetch(
        &self,
        route: Route<'_>,
        key: &[u8],
        msg: &[u8],
        question_end: usize,
        client_tcp: bool,
        client_id: Option<u16>,
    ) -> Fetched {
        loop {
            let (rx, suspect) = {
                let mut w = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
                match w.get_mut(key) {
                    Some(f) => {
                        let (tx, rx) = oneshot::channel();
                        f.waiters.push(tx);
                        let ours = client_id.is_some() && f.try_id == client_id;
                        (Some(rx), f.upstream.clone().filter(|_| ours))
                    }
                    None => {
                        w.insert(key.into(), Flight::default());
                        (None, None)
                    }
                }
            };
            if let Some(up) = suspect {
                let _ = self.suspect(&up, route.domain, true);
            }
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
            let f = self
                .forward(route, msg, question_end, client_tcp, Some(key))
                .await;
            if let (Fetched::Reply { reply, .. }, Some(c)) = (&f, &self.cache) {
                c.insert(key, reply, msg, self.clock.now());
            }
            for tx in guard.finish() {
                let _ = tx.send(f.clone());
            }
            return f;
        }
    }

    /// Send `query` to the route's upstreams in policy order, healthy ones first, looping
    /// ones never, each once (a lone upstream twice), with a timeout per try. A truncated UDP
    /// answer is retried over TCP. A SERVFAIL moves on to the next upstream, and is returned
    /// only if no upstream did better. `flight`: the coalescing key whose tries these are.
    async fn forward(
        &self,
        route: Route<'_>,
        query: &[u8],
        question_end: usize,
        client_tcp: bool,
        flight: Option<&[u8]>,
    ) -> Fetched {
        let (order, all_down) = route.pool.order();
        if order.is_empty() {
            return Fetched::Failed;
        }
        if all_down {
            self.metrics.forward_broken();
        }
        let mut msg = query.to_vec();
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
            let id = fastrand::u16(..);
            msg[0..2].copy_from_slice(&id.to_be_bytes());
            if let Some(k) = flight
                && let Some(f) = self
                    .waiting
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_mut(k)
            {
                f.try_id = Some(id);
                f.upstream = Some(up.clone());
            }
            let start = Instant::now();
            let exchange = up.guarded(self.try_upstream(up, &msg, question_end, tcp_first));
            tokio::pin!(exchange);
            let res = if self.s.timeout > SLOW_TRY {
                // Slow: suspect a loop (as soon as a probe may go), and go on waiting.
                let mut wake = Instant::now() + SLOW_TRY;
                loop {
                    tokio::select! {
                        r = &mut exchange => break r,
                        _ = tokio::time::sleep_until(wake.into()) => {
                            if !flight.is_some_and(|k| self.has_waiters(k)) {
                                wake = Instant::now() + SLOW_TRY;
                                continue;
                            }
                            match self.suspect(up, route.domain, false) {
                                Some(next) => wake = next,
                                None => break exchange.await,
                            }
                        }
                    }
                }
            } else {
                exchange.await
            };
            match res {
                Ok(r) => {
                    up.succeeded();
                    let rc = wire::rcode_of(&r);
                    up.metrics.request(rc, start.elapsed());
                    if rc == rcode::SERVFAIL {
                        servfail = Some(r);
                        continue;
                    }
                    return Fetched::Reply {
                        reply: Arc::new(r),
                        from: up.addr,
                    };
                }
                // Not the upstream's failure: it is out of use until the loop is gone.
                Err(ExchangeError::Loop) => {}
                Err(e) => {
                    tracing::debug!(upstream = %up.addr, error = %e, "upstream try failed");
                    up.failed(self.s.max_fails);
                    if matches!(e, ExchangeError::Timeout) {
                        // Queries circling through a loop never come back as answers.
                        let _ = self.suspect(up, route.domain, false);
                    }
                }
            }
        }
        match servfail {
            Some(r) => Fetched::Reply {
                reply: Arc::new(r),
                from: order[0].addr,
            },
            None => Fetched::Failed,
        }
    }

    /// Whether another query waits for the fetch of `key`.
    fn has_waiters(&self, key: &[u8]) -> bool {
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .is_some_and(|f| !f.waiters.is_empty())
    }

    async fn try_upstream(
        &self,
        up: &Upstream,
        msg: &[u8],
        question_end: usize,
        tcp: bool,
    ) -> Result<Vec<u8>, ExchangeError> {
        let ask = |via| up.exchange(via, msg, question_end, self.s.timeout, Purpose::Query);
        if tcp {
            return ask(Transport::Tcp).await;
        }
        let r = ask(Transport::Udp).await?;
        if r[2] & F_TC == 0 {
            return Ok(r);
        }
        // Truncated: the whole answer over TCP (a new try with its own timeout); if that
        // fails, the truncated answer is still an answer (the client may retry over TCP).
        match ask(Transport::Tcp).await {
            Ok(full) => Ok(full),
            Err(e) => {
                tracing::debug!(upstream = %up.addr, error = %e, "TCP retry after TC failed");
                Ok(r)
            }
        }
    }

    /// How our own probes (health checks, loop probes) travel: over TCP only with `force_tcp`.
    fn probe_transport(&self) -> Transport {
        if self.s.force_tcp {
            Transport::Tcp
        } else {
            Transport::Udp
        }
    }

    /// One health probe (`. IN NS`) to an upstream.
    async fn probe_upstream(&self, up: &Upstream) {
        let msg = wire::query::build(fastrand::u16(..), ROOT, rtype::NS, true, None);
        let qe = HEADER_LEN + 1 + 4;
        let r = up
            .exchange(
                self.probe_transport(),
                &msg,
                qe,
                self.s.timeout,
                Purpose::Probe,
            )
            .await;
        match r {
            Ok(_) => up.succeeded(),
            Err(e) => {
                tracing::debug!(upstream = %up.addr, error = %e, "health check failed");
                up.failed(self.s.max_fails);
            }
        }
    }

    async fn prefetch(&self, e: Arc<cache::Entry>) {
        let Ok(q) = Query::parse(&e.query) else {
            return;
        };
        let mut kbuf = [0u8; cache::KEY_MAX];
        let klen = cache::key_into(&q, self.s.pass_client_subnet, &mut kbuf);
        let key = &kbuf[..klen];
        let Some(route) = self.route(q.qname_lower()) else {
            return;
        };
        if let Some(_slot) = self.try_slot() {
            self.metrics.cache_prefetch();
            self.fetch(route, key, &e.query, q.question_end(), false, None)
                .await;
        }
        e.prefetch_done();
    }

    /// Refresh the critical names that are due; returns when the next one is due.
    async fn refresh_critical(&self) -> Option<Instant> {
        let c = self.critical.as_ref()?;
        let (due, next) = c.due();
        let jobs = due.into_iter().map(|(i, qtype)| async move {
            let w = &c.names[i].wire;
            let msg = wire::query::build(fastrand::u16(..), w, qtype, true, Some(EDNS_SIZE));
            let qe = HEADER_LEN + w.len() + 4;
            let fetch = match self.route(w) {
                None => critical::Fetch::Failed("forwarding is off".into()),
                Some(route) => match self.forward(route, &msg, qe, false, None).await {
                    Fetched::Reply { reply, .. } => critical::extract(&reply, qtype),
                    Fetched::Failed => critical::Fetch::Failed("no upstream answered".into()),
                },
            };
            c.update(i, qtype, fetch);
        });
        let n = jobs.len();
        futures::future::join_all(jobs).await;
        let (_, after) = c.due();
        if n > 0 {
            c.save(STATE_MAX_AGE);
        }
        after.or(next)
    }
}

/// The server's view of the resolver (`crate::server::Upstream`): the query the server
/// parsed, handed over as it is.
impl crate::server::Upstream for Resolver {
    fn answer_local(
        &self,
        q: &Query<'_>,
        max_size: usize,
        out: &mut Vec<u8>,
    ) -> Option<AnswerSource> {
        self.answer_query_local(q, max_size, out)
    }

    fn resolve<'a>(
        &'a self,
        q: &'a Query<'_>,
        max_size: usize,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Resolved> + Send + 'a>> {
        Box::pin(self.resolve_query(q, max_size))
    }
}

async fn health_loop(weak: Weak<Resolver>, clock: Clock, every: Duration) {
    loop {
        clock.sleep(every).await;
        let Some(r) = weak.upgrade() else { return };
        let suspects: Vec<&Upstream> = r
            .routes()
            .flat_map(|route| route.pool.upstreams.iter().map(|u| &**u))
            .filter(|u| u.fails() > 0)
            .collect();
        futures::future::join_all(suspects.into_iter().map(|u| r.probe_upstream(u))).await;
    }
}

/// Re-probe looping upstreams (at most once a second each) until their loop is gone.
async fn loop_watch(weak: Weak<Resolver>) {
    loop {
        tokio::time::sleep(PROBE_EVERY / 4).await;
        let Some(r) = weak.upgrade() else { return };
        for route in r.routes() {
            for up in route.pool.upstreams.iter().filter(|u| u.is_looping()) {
                let _ = r.suspect(up, route.domain, false);
            }
        }
    }
}

async fn hosts_loop(weak: Weak<Resolver>, clock: Clock, every: Duration) {
    loop {
        clock.sleep(every).await;
        let Some(r) = weak.upgrade() else { return };
        let _ =
            tokio::task::spawn_blocking(move || r.hosts.as_ref().map(|h| h.reload_if_changed()))
                .await;
    }
}

async fn critical_loop(weak: Weak<Resolver>, clock: Clock) {
    loop {
        let next = {
            let Some(r) = weak.upgrade() else { return };
            r.refresh_critical().await
        };
        let now = clock.now();
        let wake = next.unwrap_or(now + Duration::from_secs(30)).clamp(
            now + Duration::from_millis(50),
            now + Duration::from_secs(30),
        );
        clock.sleep_until(wake).await;
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
        assert!(wire::in_domain(&w("a.corp.example"), &w("corp.example")));
        assert!(wire::in_domain(&w("corp.example"), &w("corp.example")));
        assert!(!wire::in_domain(&w("xcorp.example"), &w("corp.example")));
        assert!(!wire::in_domain(&w("example"), &w("corp.example")));
    }

    fn cfg_with(upstreams: Vec<String>) -> Config {
        let mut c = Config {
            listen: vec!["127.0.0.1:1053".parse().unwrap()],
            ..Config::default()
        };
        c.forward.upstreams = upstreams;
        c
    }

    /// A resolver with a registry of its own, on the system clock.
    fn resolver(c: &Config) -> Result<Arc<Resolver>, Error> {
        Resolver::new(c, Arc::new(Metrics::default()), Clock::system())
    }

    /// What only shows when building: the resolv.conf. (The values `Config::validate` checks
    /// are not checked again; its tests name their keys.)
    #[test]
    fn resolv_conf_errors_name_the_key() {
        let mut c = cfg_with(vec![]);
        let dir = tempfile::tempdir().unwrap();
        c.forward.resolv_conf = dir.path().join("resolv.conf");
        let e = resolver(&c).unwrap_err().to_string();
        assert!(
            e.contains("forward.resolv_conf") && e.contains("cannot read"),
            "{e}"
        );
        std::fs::write(&c.forward.resolv_conf, "search x\n").unwrap();
        let e = resolver(&c).unwrap_err().to_string();
        assert!(e.contains("forward.resolv_conf"), "{e}");
    }

    #[test]
    fn loop_is_refused() {
        let e = resolver(&cfg_with(vec!["127.0.0.1:1053".into()])).unwrap_err();
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
        let msg = resolver(&c).unwrap_err().to_string();
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
        let r = resolver(&c).unwrap();
        assert_eq!(
            r.upstreams(),
            vec![
                ("127.0.0.9:53".parse().unwrap(), true),
                ("127.0.0.10:53".parse().unwrap(), true)
            ]
        );
        // A resolv.conf naming our own address (listening on every address, port 53) loops.
        c.listen = vec!["0.0.0.0:53".parse().unwrap()];
        let msg = resolver(&c).unwrap_err().to_string();
        assert!(
            msg.contains("forward.resolv_conf") && msg.contains("127.0.0.9:53"),
            "{msg}"
        );
    }

    #[test]
    fn probe_matching_forms() {
        let r = resolver(&cfg_with(vec!["127.0.0.1:9".into()])).unwrap();
        assert!(!r.is_loop_probe(b"1.2."));
        let up = r.default_pool.as_ref().unwrap().upstreams[0].clone();
        let name = r.probes.register(&up, ROOT);
        let dotted = wire::display_name(&name);
        assert!(r.is_loop_probe(&name));
        assert!(r.is_loop_probe(dotted.as_bytes()));
        assert!(r.is_loop_probe(dotted.trim_end_matches('.').as_bytes()));
        assert!(!r.is_loop_probe(b"\x0212\x0235\x00"));
    }

    #[tokio::test]
    async fn our_probe_coming_back_marks_the_upstream_and_is_not_forwarded() {
        let r = resolver(&cfg_with(vec!["127.0.0.1:9".into()])).unwrap();
        let up = r.default_pool.as_ref().unwrap().upstreams[0].clone();
        let name = r.probes.register(&up, ROOT);
        let m = wire::query::build(7, &name, rtype::HINFO, true, None);
        let (reply, src) = r.resolve(&m, 512).await;
        assert_eq!(
            (wire::rcode_of(&reply), src),
            (rcode::SERVFAIL, AnswerSource::Server)
        );
        assert!(up.is_looping());
        // Every name of that pool now fails at once, without a try.
        let m = wire::query::build(
            8,
            &wire::dotted_to_wire("x.example").unwrap(),
            rtype::A,
            true,
            None,
        );
        let (reply, _) = r.resolve(&m, 512).await;
        assert_eq!(wire::rcode_of(&reply), rcode::SERVFAIL);
        assert_eq!(up.fails(), 0, "no try was made");
        r.loop_gone(&up);
        assert!(!up.is_looping());
    }
}
