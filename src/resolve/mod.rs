//! Names outside the cluster zones: hosts file, critical names, cache, forwarding to upstreams.
//!
//! What CoreDNS's `hosts`, `cache`, `forward` and `loop` plugins do, at the packet level:
//!
//! ```text
//! query ─> hosts file ─> critical names ─> route (longest domain) ─> its cache ──> reply
//!              │ (fallthrough)                 │ `except` ─> SERVFAIL    │ fresh, or stale with
//!              v                               │                        │ `immediate` (refresh
//!          NXDOMAIN                            v miss                   v  behind it)
//!                                   the route's concurrency bound ──(full)──> REFUSED
//!                                              │
//!                                   coalescing (one upstream query per key)
//!                                              │
//!                           the route's pool (policy, health checks, max_fails)
//!                     UDP (TC -> TCP) / TCP / TLS, timeout per try, 3 s for all tries,
//!                           one short try when every upstream is down
//!                                              │
//!                          reply passed through ─> cache ─> client ID + question
//!                          all failed ─> stale entry (RFC 8767) or SERVFAIL (cached 5 s)
//! ```
//!
//! A route is the default upstreams, a stub domain, or a `forward.domains` entry, each with its
//! own options and cache (or the shared one), as CoreDNS's server blocks each have their own
//! `forward` and `cache`.
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
mod pipe;
pub mod upstream;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::clock::Clock;
use crate::config::{ClientSubnet, Config, ForwardRoute, StaleRefresh, parse_upstream_target};
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
/// The time all tries of one forwarded query may take together (at least one `timeout`):
/// below glibc's 5-second timeout, so that a client gets our SERVFAIL rather than giving up.
const FORWARD_BUDGET: Duration = Duration::from_secs(3);
/// The timeout of the one try made when every upstream of a route is down.
const ALL_DOWN_TRY: Duration = Duration::from_millis(1000);

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

/// Where names under a domain are forwarded (the default upstreams: the root), with the
/// options of its `forward` (and `cache`): what a CoreDNS server block's `forward` is.
struct Route {
    /// Dotted, `.` for the root.
    domain: String,
    /// Lowercase wire form; loop probes are asked under it.
    wire: Vec<u8>,
    pool: Pool,
    /// Names under these (lowercase wire) are not forwarded (CoreDNS's `except`).
    except: Vec<Vec<u8>>,
    s: RouteSettings,
    /// Forwarded queries under way (bounded by `max_concurrent`).
    in_flight: AtomicUsize,
    /// Its cache: its own, or the shared one.
    cache: Option<Arc<Cache>>,
    /// Whether `cache` is the route's own (a cache config of its own).
    own_cache: bool,
}

/// A route's forwarding options.
#[derive(Debug, Clone)]
struct RouteSettings {
    timeout: Duration,
    force_tcp: bool,
    prefer_udp: bool,
    max_fails: u32,
    health_check: Duration,
    max_concurrent: usize,
}

impl Route {
    /// Is `name` (lowercase wire) under one of the route's `except` domains?
    fn excepts(&self, name: &[u8]) -> bool {
        self.except.iter().any(|d| wire::in_domain(name, d))
    }

    fn try_slot(&self) -> Option<SlotGuard<'_>> {
        let n = self.in_flight.fetch_add(1, Ordering::AcqRel);
        if n >= self.s.max_concurrent {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(SlotGuard(&self.in_flight))
    }

    /// How our own probes (health checks, loop probes) travel: over TCP only with `force_tcp`
    /// (a `tls://` upstream always over TLS).
    fn probe_transport(&self) -> Transport {
        if self.s.force_tcp {
            Transport::Tcp
        } else {
            Transport::Udp
        }
    }
}

/// A cache of the previous resolver that a new one may take over: for a route's own cache
/// config (None: the shared one's) and the route's domain.
type KeptCache<'a> = dyn Fn(Option<&crate::config::CacheConfig>, &str) -> Option<Arc<Cache>> + 'a;

/// The root, the domain of the default upstreams' loop probes.
const ROOT: &[u8] = &[0];

/// The settings of the whole resolver (each route has its own forwarding options).
#[derive(Debug, Clone)]
struct Settings {
    hosts_reload: Duration,
    /// The payload size advertised in the OPT records of our own replies.
    max_udp: u16,
    pass_client_subnet: bool,
    /// Rotate the address records of every reply (CoreDNS's `loadbalance` covers forwarded and
    /// cached answers, not only the cluster zone's).
    loadbalance: bool,
}

/// Everything for names outside the cluster zones.
pub struct Resolver {
    s: Settings,
    /// Longest domain first, so the first that holds a name is its route; the default
    /// upstreams (the root) last. Empty when forwarding is off.
    routes: Vec<Route>,
    /// The shared cache (`cache`), also kept across a reload that leaves `cache` as it was.
    cache: Option<Arc<Cache>>,
    hosts: Option<Hosts>,
    critical: Option<Critical>,
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
                "routes",
                &self.routes.iter().map(|r| &r.domain).collect::<Vec<_>>(),
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
        Self::build(cfg, metrics, clock, None)
    }

    /// [`Resolver::new`], keeping the caches of `previous` (a reload) whose config is the same:
    /// a change to another part of the config does not empty them.
    pub fn build(
        cfg: &Config,
        metrics: Arc<Metrics>,
        clock: Clock,
        previous: Option<&Resolver>,
    ) -> Result<Arc<Resolver>, Error> {
        let f = &cfg.forward;
        // Every upstream with the key it came from, for the loop check.
        let mut keyed: Vec<(String, SocketAddr)> = Vec::new();
        let kept = |own: Option<&crate::config::CacheConfig>, domain: &str| {
            let old = previous?;
            match own {
                None => old.cache.clone().filter(|c| c.config == cfg.cache),
                Some(want) => old
                    .routes
                    .iter()
                    .find(|r| r.own_cache && r.domain == domain)
                    .and_then(|r| r.cache.clone())
                    .filter(|c| &c.config == want),
            }
        };
        let cache = cfg.cache.enabled.then(|| {
            kept(None, ".").unwrap_or_else(|| Arc::new(Cache::new(&cfg.cache, metrics.clone())))
        });
        let mut routes = Vec::new();
        for r in f.routes() {
            routes.push(Self::route_of(
                &r, cfg, &metrics, &cache, &kept, &mut keyed,
            )?);
        }
        routes.sort_by_key(|r| std::cmp::Reverse(r.wire.len()));
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
        let (prefetch_tx, prefetch_rx) = mpsc::channel(PREFETCH_QUEUE);
        let s = Settings {
            hosts_reload: cfg.hosts.as_ref().map_or(Duration::ZERO, |h| h.reload),
            max_udp: cfg.server.max_udp_size,
            pass_client_subnet: f.client_subnet == ClientSubnet::Forward,
            loadbalance: cfg.cluster.loadbalance,
        };
        Ok(Arc::new_cyclic(|me| Resolver {
            s,
            routes,
            cache,
            hosts,
            critical,
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

    /// Build one route: its upstreams (the default route without any: the nameservers of
    /// `forward.resolv_conf`), TLS settings, `except` names and cache.
    fn route_of(
        r: &ForwardRoute,
        cfg: &Config,
        metrics: &Arc<Metrics>,
        shared_cache: &Option<Arc<Cache>>,
        kept: &KeptCache<'_>,
        keyed: &mut Vec<(String, SocketAddr)>,
    ) -> Result<Route, Error> {
        let mut targets = Vec::new();
        if r.upstreams.is_empty() {
            let path = &cfg.forward.resolv_conf;
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
            for a in addrs {
                keyed.push((key.clone(), a));
                targets.push(crate::config::UpstreamTarget {
                    addr: a,
                    tls: false,
                });
            }
        } else {
            // `validate` checked them; one that does not parse is left out.
            for (i, u) in r.upstreams.iter().enumerate() {
                if let Ok(t) = parse_upstream_target(u) {
                    keyed.push((format!("{}[{i}]", r.key), t.addr));
                    targets.push(t);
                }
            }
        }
        let connector = if targets.iter().any(|t| t.tls) {
            Some(
                upstream::tls_connector(r.tls_ca.as_deref())
                    .map_err(|e| invalid(format!("{} (tls_ca)", r.key), e))?,
            )
        } else {
            None
        };
        let upstreams = targets
            .iter()
            .map(|t| {
                let tls = match (&connector, t.tls) {
                    (Some(c), true) => {
                        let name = match &r.tls_servername {
                            Some(n) => {
                                rustls::pki_types::ServerName::try_from(n.clone()).map_err(|e| {
                                    invalid(format!("{} (tls_servername)", r.key), e.to_string())
                                })?
                            }
                            None => rustls::pki_types::ServerName::IpAddress(t.addr.ip().into()),
                        };
                        Some(upstream::TlsTarget {
                            connector: c.clone(),
                            name,
                        })
                    }
                    _ => None,
                };
                Ok(Arc::new(Upstream::with_options(
                    t.addr, metrics, r.expire, tls,
                )))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let wire_of = |d: &str| {
            crate::names::parse_domain(d)
                .ok()
                .and_then(|d| wire::dotted_to_wire(&d).ok())
        };
        let wire = if r.domain == "." {
            ROOT.to_vec()
        } else {
            wire_of(&r.domain).ok_or_else(|| invalid(r.key.clone(), "not a domain name"))?
        };
        let (cache, own_cache) = match &r.cache {
            Some(c) if c.enabled => (
                Some(
                    kept(Some(c), &r.domain)
                        .unwrap_or_else(|| Arc::new(Cache::new(c, metrics.clone()))),
                ),
                true,
            ),
            Some(_) => (None, true),
            None => (shared_cache.clone(), false),
        };
        Ok(Route {
            domain: r.domain.clone(),
            wire,
            pool: Pool::of(upstreams, r.policy),
            except: r.except.iter().filter_map(|d| wire_of(d)).collect(),
            s: RouteSettings {
                timeout: r.timeout,
                force_tcp: r.force_tcp,
                prefer_udp: r.prefer_udp,
                max_fails: r.max_fails,
                health_check: r.health_check,
                max_concurrent: r.max_concurrent,
            },
            in_flight: AtomicUsize::new(0),
            cache,
            own_cache,
        })
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
        for (i, r) in self.routes.iter().enumerate() {
            if !r.s.health_check.is_zero() && r.s.max_fails > 0 {
                tokio::spawn(health_loop(
                    weak.clone(),
                    self.clock.clone(),
                    i,
                    r.s.health_check,
                ));
            }
        }
        if !self.routes.is_empty() {
            tokio::spawn(loop_watch(weak.clone()));
        }
        if self.hosts.as_ref().is_some_and(|h| h.file.is_some()) && !self.s.hosts_reload.is_zero() {
            tokio::spawn(hosts_loop(
                weak.clone(),
                self.clock.clone(),
                self.s.hosts_reload,
            ));
        }
        if self.critical.is_some() && !self.routes.is_empty() {
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
        } else {
            self.rotate(out);
        }
        r
    }

    /// `loadbalance`: a random rotation of the reply's address records, as CoreDNS shuffles them.
    #[inline]
    fn rotate(&self, reply: &mut [u8]) {
        if self.s.loadbalance {
            wire::reply::rotate_addresses(reply, fastrand::usize(..));
        }
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
        let route = self.route(q.qname_lower())?;
        let c = route.cache.as_ref()?;
        let immediate = c.config.serve_stale_refresh == StaleRefresh::Immediate;
        match c.get(key, now, immediate) {
            Found::Fresh(e) => {
                c.write_reply(&e, q, now, false, out);
                wire::fit(out, max_size);
                self.metrics.cache_hit(e.kind);
                if e.hit_wants_prefetch(now, c.prefetch) {
                    self.refresh_in_background(e);
                }
            }
            // RFC 8767 section 5 ("stale-while-refresh"): the stale answer at once, the
            // refresh behind it, at most one per entry.
            Found::Stale(e) => {
                c.write_reply(&e, q, now, true, out);
                wire::fit(out, max_size);
                self.metrics.cache_served_stale();
                if e.begin_refresh() {
                    self.refresh_in_background(e);
                }
            }
            Found::Miss => return None,
        }
        Some(AnswerSource::Cache)
    }

    /// Hand an entry (marked as being refreshed) to the prefetch worker; if its queue is full,
    /// a later hit tries again.
    fn refresh_in_background(&self, e: Arc<cache::Entry>) {
        if let Err(mpsc::error::TrySendError::Full(e) | mpsc::error::TrySendError::Closed(e)) =
            self.prefetch_tx.try_send(e)
        {
            e.prefetch_done();
        }
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
        let mut r = self.resolve_query_unrotated(q, max_size).await;
        if r.source != AnswerSource::Server {
            self.rotate(&mut r.reply);
        }
        r
    }

    async fn resolve_query_unrotated(&self, q: &Query<'_>, max_size: usize) -> Resolved {
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
        // CoreDNS's `forward` passes a name in `except` to the next plugin, and with none
        // left the answer is SERVFAIL.
        if route.excepts(q.qname_lower()) {
            wire::rcode_reply(&mut out, q, rcode::SERVFAIL, true, self.s.max_udp);
            return ours(out, AnswerSource::Server);
        }
        if route.cache.is_some() {
            self.metrics.cache_miss();
        }
        let Some(_slot) = route.try_slot() else {
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
        if let Some(c) = &route.cache
            && !c.serve_stale.is_zero()
        {
            let now = self.clock.now();
            match c.get(key, now, true) {
                Found::Stale(e) => {
                    c.write_reply(&e, q, now, true, &mut out);
                    wire::fit(&mut out, max_size);
                    self.metrics.cache_served_stale();
                    return ours(out, AnswerSource::Cache);
                }
                // Fresh now: another query's refresh landed meanwhile (a cached SERVFAIL is
                // no better than ours).
                Found::Fresh(e) if !e.is_servfail() => {
                    c.write_reply(&e, q, now, false, &mut out);
                    wire::fit(&mut out, max_size);
                    return ours(out, AnswerSource::Cache);
                }
                Found::Fresh(_) | Found::Miss => {}
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
        let jobs = self
            .routes
            .iter()
            .flat_map(|r| r.pool.upstreams.iter().map(move |u| self.probe(u, &r.wire)));
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
        let Some(route) = self.routes.iter().find(|r| r.wire == domain) else {
            return;
        };
        let r = up
            .exchange(
                route.probe_transport(),
                &msg,
                msg.len(),
                route.s.timeout,
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
        self.routes
            .iter()
            .map(|r| r.in_flight.load(Ordering::Relaxed))
            .sum()
    }

    /// Every upstream (longest domain first, the default ones last) and whether it is
    /// considered healthy.
    pub fn upstreams(&self) -> Vec<(SocketAddr, bool)> {
        self.routes
            .iter()
            .flat_map(|r| r.pool.upstreams.iter().map(|u| (u.addr, !u.is_down())))
            .collect()
    }

    /// Cache entries held (positive, negative), in every cache.
    pub fn cache_entries(&self) -> (usize, usize) {
        let own = self.routes.iter().filter(|r| r.own_cache);
        own.filter_map(|r| r.cache.as_ref())
            .chain(self.cache.as_ref())
            .map(|c| c.len())
            .fold((0, 0), |(a, b), (c, d)| (a + c, b + d))
    }

    /// Where a name (lowercase wire form) goes: the longest matching domain, the default
    /// upstreams last.
    fn route(&self, name: &[u8]) -> Option<&Route> {
        self.routes.iter().find(|r| wire::in_domain(name, &r.wire))
    }

    /// Forward with coalescing: the first client asking for a key queries upstream; clients
    /// asking for the same key meanwhile wait for its answer. `client_id`: the ID of the
    /// client's query (None for our own refreshes).
    async fn fetch(
        &self,
        route: &Route,
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
                let _ = self.suspect(&up, &route.wire, true);
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
            let mut f = f;
            if let Some(c) = &route.cache {
                let now = self.clock.now();
                match &f {
                    // The client gets the TTLs the cache will give (capped, floored).
                    Fetched::Reply { reply, from } => {
                        if let Some(e) = c.store(key, reply, msg, now) {
                            f = Fetched::Reply {
                                reply: Arc::new(e.wire().to_vec()),
                                from: *from,
                            };
                        }
                    }
                    // RFC 9520 section 3.2: "resolvers MUST cache resolution failures", so
                    // that a dead upstream is not asked again for every query meanwhile.
                    Fetched::Failed => {
                        if let Ok(q) = Query::parse(msg) {
                            let mut sf = Vec::with_capacity(msg.len() + 16);
                            wire::rcode_reply(&mut sf, &q, rcode::SERVFAIL, true, self.s.max_udp);
                            c.insert(key, &sf, msg, now);
                        }
                    }
                }
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
        route: &Route,
        query: &[u8],
        question_end: usize,
        client_tcp: bool,
        flight: Option<&[u8]>,
    ) -> Fetched {
        let (mut order, all_down) = route.pool.order();
        if order.is_empty() {
            return Fetched::Failed;
        }
        let rs = &route.s;
        // Each upstream once; a lone upstream gets a second try (a lost datagram is not an
        // outage), but not after a SERVFAIL.
        let mut tries = order.len().max(2);
        let mut timeout = rs.timeout;
        if all_down {
            // Every upstream failed its health checks: one try, short, so that a client sees
            // SERVFAIL well before its own timeout (glibc: 5 s) instead of after every
            // upstream's full timeout. CoreDNS likewise tries one random upstream then. The
            // health checks bring an upstream back as soon as it answers.
            self.metrics.forward_broken();
            order.truncate(1);
            tries = 1;
            timeout = timeout.min(ALL_DOWN_TRY);
        }
        let deadline = Instant::now() + rs.timeout.max(FORWARD_BUDGET);
        let mut msg = query.to_vec();
        let tcp_first = rs.force_tcp || (client_tcp && !rs.prefer_udp);
        let mut servfail = None;
        for i in 0..tries {
            let up = order[i % order.len()];
            if i >= order.len() && servfail.is_some() {
                break;
            }
            // The tries of one query share a budget: the last one gets what is left.
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let timeout = timeout.min(left);
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
            let exchange =
                up.guarded(self.try_upstream(up, &msg, question_end, tcp_first, timeout));
            tokio::pin!(exchange);
            let res = if timeout > SLOW_TRY {
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
                            match self.suspect(up, &route.wire, false) {
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
                    up.failed(rs.max_fails);
                    if matches!(e, ExchangeError::Timeout) {
                        // Queries circling through a loop never come back as answers.
                        let _ = self.suspect(up, &route.wire, false);
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
        timeout: Duration,
    ) -> Result<Vec<u8>, ExchangeError> {
        let ask = |via| up.exchange(via, msg, question_end, timeout, Purpose::Query);
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

    /// One health probe (`. IN NS`) to an upstream of `route`.
    async fn probe_upstream(&self, route: &Route, up: &Upstream) {
        let msg = wire::query::build(fastrand::u16(..), ROOT, rtype::NS, true, None);
        let qe = HEADER_LEN + 1 + 4;
        let r = up
            .exchange(
                route.probe_transport(),
                &msg,
                qe,
                route.s.timeout,
                Purpose::Probe,
            )
            .await;
        match r {
            Ok(_) => up.succeeded(),
            Err(e) => {
                tracing::debug!(upstream = %up.addr, error = %e, "health check failed");
                up.failed(route.s.max_fails);
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
        if let Some(_slot) = route.try_slot() {
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
    ) -> std::pin::Pin<Box<dyn Future<Output = Resolved> + Send + 'a>> {
        Box::pin(self.resolve_query(q, max_size))
    }
}

/// Health checks of one route's upstreams (`route`: its index), every `every`.
async fn health_loop(weak: Weak<Resolver>, clock: Clock, route: usize, every: Duration) {
    loop {
        clock.sleep(every).await;
        let Some(r) = weak.upgrade() else { return };
        let Some(route) = r.routes.get(route) else {
            return;
        };
        let suspects = route.pool.upstreams.iter().filter(|u| u.fails() > 0);
        futures::future::join_all(suspects.map(|u| r.probe_upstream(route, u))).await;
    }
}

/// Re-probe looping upstreams (at most once a second each) until their loop is gone.
async fn loop_watch(weak: Weak<Resolver>) {
    loop {
        tokio::time::sleep(PROBE_EVERY / 4).await;
        let Some(r) = weak.upgrade() else { return };
        for route in &r.routes {
            for up in route.pool.upstreams.iter().filter(|u| u.is_looping()) {
                let _ = r.suspect(up, &route.wire, false);
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
        let up = r.routes[0].pool.upstreams[0].clone();
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
        let up = r.routes[0].pool.upstreams[0].clone();
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
