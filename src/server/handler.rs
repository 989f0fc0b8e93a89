//! Routing one request: parse (once), then the cluster zone, the resolver (hosts, cache,
//! upstreams), or an error code. Knows no Kubernetes type and no socket: the UDP loop and the
//! TCP connections both call [`Engine`].

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::observe::{AnswerSource, Proto, QueryLogger, QueryObservation};
use crate::ops::metrics::{DropReason, Metrics};
use crate::server::shape;
use crate::wire::{self, HEADER_LEN, ParseError, Query, Writer, rcode, rtype};
use crate::zone::answer::{self, Outcome};
use crate::zone::snapshot::Snapshot;

use super::rrl::{RateLimiter, Verdict};
use super::tcp::TcpLimits;

/// Largest TCP message (RFC 1035 §4.2.2: two-byte length prefix).
pub const TCP_MAX: usize = 65535;

/// What metrics and the query log need to know of a query, taken from the one parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    pub source: AnswerSource,
    pub qtype: u16,
    pub do_bit: bool,
    /// The reply's rcode including extended bits (BADVERS is 16).
    pub rcode: u16,
    /// The upstream whose reply this is (forwarded answers).
    pub upstream: Option<SocketAddr>,
}

/// What the synchronous part of answering produced.
pub enum Local {
    /// A complete reply is in the buffer.
    Reply(Facts),
    /// Nothing to send (not a query).
    Drop,
    /// The query must wait for an upstream: call [`Engine::forward`].
    Forward(Box<Pending>),
    /// A zone transfer (AXFR, IXFR) or a signed SOA query for a zone offered for transfer:
    /// answered by [`crate::xfr::Transfers`] (in [`Engine::xfr`]), which checks who asks. Over
    /// TCP it may stream many messages: the connection is a transfer connection from then on.
    Transfer(Box<crate::xfr::Request>),
}

/// The reply to a query that went to the resolver, and where it came from.
#[derive(Debug)]
pub struct Resolved {
    pub reply: Vec<u8>,
    pub source: AnswerSource,
    pub upstream: Option<SocketAddr>,
}

/// Names outside the zone: the resolver (hosts, cache, upstreams) as the server sees it. It
/// is handed the query the server parsed. A trait keeps `server/` independent of how
/// `resolve/` is built.
pub trait Upstream: Send + Sync + 'static {
    /// Answer from hosts/cache without waiting, or None.
    fn answer_local(
        &self,
        q: &Query<'_>,
        max_size: usize,
        out: &mut Vec<u8>,
    ) -> Option<AnswerSource>;
    /// Ask upstream; always produces a reply of at most `max_size` bytes.
    fn resolve<'a>(
        &'a self,
        q: &'a Query<'_>,
        max_size: usize,
    ) -> std::pin::Pin<Box<dyn Future<Output = Resolved> + Send + 'a>>;
}

/// A query that waits for an upstream: the parsed query, owning its bytes now.
pub struct Pending {
    pub query: Query<'static>,
    /// An ExternalName's CNAME out of the cluster: our reply so far and the target (absolute
    /// wire name) whose records the resolver adds, as CoreDNS's `kubernetes` plugin does.
    pub chase: Option<(Vec<u8>, Vec<u8>)>,
    /// What answer shaping still does to the reply (a rewritten question given back).
    pub after: Option<Box<shape::After>>,
}

/// The request router, shared by every socket. Built by [`Engine::new`] only (at start and on
/// each config reload).
pub struct Engine {
    zone: Arc<ArcSwap<Snapshot>>,
    /// Serve the cluster zone at all.
    cluster_enabled: bool,
    resolver: Option<Arc<dyn Upstream>>,
    max_udp: u16,
    querylog: Option<Arc<dyn QueryLogger>>,
    metrics: Arc<Metrics>,
    /// Count queries in the metrics (off when no metrics endpoint is configured: nobody could
    /// read them).
    count: bool,
    /// Zone transfers out; None: off (AXFR and IXFR get REFUSED). Set by
    /// [`Engine::with_transfers`]: the service and its journal outlive each engine.
    xfr: Option<Arc<crate::xfr::Transfers>>,
    /// Answer shaping (rewrite, autopath, template, AAAA filter); None: the query goes straight
    /// on.
    shape: Option<Arc<shape::Shaper>>,
    /// Forwarding domains inside the cluster zone (`forward.stub_domains`/`domains`, e.g.
    /// kube-dns's `my.cluster.local`): their names skip the zone and are forwarded, as the
    /// more specific server block wins in CoreDNS.
    delegated: Vec<String>,
    /// Per-client response rate limiting (`limits.rate`), None when off.
    rate: Option<RateLimiter>,
    /// What TCP admission and connections enforce (`limits.tcp`, `limits.exempt`).
    tcp_limits: TcpLimits,
    /// Queries waiting for an upstream now, across transports (shared with the engine this one
    /// replaced, so a reload does not reopen the bound), and the bound (every route's
    /// `max_concurrent` together).
    forwards: Arc<AtomicUsize>,
    max_forwards: usize,
}

/// Whether a query is served, decided before any work is done for it ([`Engine::admit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Serve it.
    Serve,
    /// Over its client's rate: no reply.
    Drop,
    /// Over its client's rate: the buffer holds the short reply to send instead (TC over UDP,
    /// REFUSED over TCP).
    Reply,
}

/// A place among the queries waiting for an upstream; dropping it gives the place back.
#[derive(Debug)]
pub struct ForwardSlot(Arc<AtomicUsize>);

impl Drop for ForwardSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The largest reply a client of `proto` takes.
fn limit(q: &Query<'_>, proto: Proto, max_udp: u16) -> usize {
    match proto {
        Proto::Udp => wire::udp_limit(q, max_udp),
        Proto::Tcp => TCP_MAX,
    }
}

impl Engine {
    /// The engine `cfg` asks for: the cluster zone served from `zone` (when `cluster.enabled`),
    /// names outside it to `resolver`, replies to UDP clients within `server.max_udp_size`, the
    /// sampled query log when `querylog.enabled`, and queries counted in `metrics` when a
    /// metrics endpoint is configured (`metrics.listen`); `shape`, the answer shaping compiled
    /// from the same config ([`shape::Shaper::new`]), sits in front of all of it.
    pub fn new(
        cfg: &Config,
        zone: Arc<ArcSwap<Snapshot>>,
        resolver: Option<Arc<dyn Upstream>>,
        shape: Option<Arc<shape::Shaper>>,
        metrics: Arc<Metrics>,
    ) -> Engine {
        let querylog = cfg.querylog.enabled.then(|| {
            Arc::new(crate::ops::querylog::QueryLog::new(&cfg.querylog)) as Arc<dyn QueryLogger>
        });
        Engine {
            zone,
            cluster_enabled: cfg.cluster.enabled,
            resolver,
            max_udp: cfg.server.max_udp_size,
            querylog,
            metrics,
            count: cfg.metrics.listen.is_some(),
            xfr: None,
            shape,
            delegated: delegated_domains(cfg),
            rate: cfg
                .limits
                .rate
                .enabled
                .then(|| RateLimiter::new(&cfg.limits.rate, &cfg.limits.exempt, None)),
            tcp_limits: TcpLimits::new(&cfg.limits),
            forwards: Arc::new(AtomicUsize::new(0)),
            max_forwards: cfg.forward.max_in_flight(),
        }
    }

    /// This engine, carrying over the state of `old`, the engine it replaces on a reload: the
    /// clients' rate-limit buckets (when the table keeps its shape) and the count of queries
    /// waiting for an upstream.
    pub fn inherit(mut self, old: &Engine) -> Engine {
        if let (Some(new), Some(prev)) = (&mut self.rate, &old.rate) {
            *new = RateLimiter::new_like(new, prev);
        }
        self.forwards = old.forwards.clone();
        self
    }

    /// The TCP limits in force.
    pub fn tcp_limits(&self) -> &TcpLimits {
        &self.tcp_limits
    }

    /// Rate limiting, per query, before it is parsed or answered: within the client's rate it
    /// is served; over it, UDP gets every `slip`-th reply as an empty TC reply and nothing
    /// otherwise, TCP (a real client, no reflection possible) gets REFUSED. `overloaded`: the
    /// transport cannot keep up (a UDP worker whose queue stays full): then a slip is dropped
    /// too, since sending it costs what the clients within their rate need. Counted in
    /// `clusterdns_dropped_total{reason}`. Allocates nothing; `now` is the caller's clock read.
    #[inline]
    pub fn admit(
        &self,
        src: IpAddr,
        msg: &[u8],
        proto: Proto,
        now: Instant,
        overloaded: bool,
        out: &mut Vec<u8>,
    ) -> Admission {
        let Some(rate) = &self.rate else {
            return Admission::Serve;
        };
        let verdict = match rate.check(src, now) {
            Verdict::Slip if overloaded => Verdict::Drop,
            v => v,
        };
        let reply = |rc: u16, tc: bool, out: &mut Vec<u8>| match Query::parse(msg) {
            Ok(q) => {
                wire::rcode_reply(out, &q, rc, false, self.max_udp);
                if tc && out.len() > 2 {
                    out[2] |= wire::F_TC;
                }
                Admission::Reply
            }
            Err(_) => Admission::Drop,
        };
        match (verdict, proto) {
            (Verdict::Answer, _) => Admission::Serve,
            (_, Proto::Tcp) => {
                self.metrics.dropped(DropReason::RateLimitedTcp);
                reply(rcode::REFUSED, false, out)
            }
            (Verdict::Slip, Proto::Udp) => {
                self.metrics.dropped(DropReason::RateLimitedSlip);
                reply(rcode::NOERROR, true, out)
            }
            (Verdict::Drop, Proto::Udp) => {
                self.metrics.dropped(DropReason::RateLimited);
                Admission::Drop
            }
        }
    }

    /// A place for a query that must wait for an upstream, or None when as many queries wait as
    /// forwarding's routes take together (their `max_concurrent`): the caller then sheds it
    /// with [`Engine::shed`] instead of queueing work without bound.
    pub fn forward_slot(&self) -> Option<ForwardSlot> {
        let n = self.forwards.fetch_add(1, Ordering::AcqRel);
        if n >= self.max_forwards {
            self.forwards.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(ForwardSlot(self.forwards.clone()))
    }

    /// Shed a query that found no [`ForwardSlot`]: REFUSED at once (as forwarding's own bound
    /// does), counted in `clusterdns_dropped_total{reason="max_concurrent"}` and CoreDNS's
    /// `coredns_forward_max_concurrent_rejects_total`.
    pub fn shed(&self, p: &Pending, out: &mut Vec<u8>) -> Facts {
        self.metrics.dropped(DropReason::MaxConcurrent);
        self.metrics.forward_max_concurrent_reject();
        wire::rcode_reply(out, &p.query, rcode::REFUSED, true, self.max_udp);
        Facts {
            source: AnswerSource::Server,
            qtype: p.query.qtype,
            do_bit: p.query.do_bit(),
            rcode: rcode::REFUSED,
            upstream: None,
        }
    }

    /// This engine, routing zone transfers to `xfr` (made once at start from `transfer`, and
    /// handed to every engine a reload builds: it holds the journal secondaries follow).
    pub fn with_transfers(mut self, xfr: Option<Arc<crate::xfr::Transfers>>) -> Engine {
        self.xfr = xfr;
        self
    }

    /// The zone transfer service, when transfers are on.
    pub fn xfr(&self) -> Option<&Arc<crate::xfr::Transfers>> {
        self.xfr.as_ref()
    }

    /// The snapshot handle this engine answers from (kept across reloads).
    pub fn zone(&self) -> &Arc<ArcSwap<Snapshot>> {
        &self.zone
    }

    /// The registry this engine counts into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The answer shaping in front of the zone and the resolver, if any is configured.
    pub(crate) fn shape(&self) -> Option<&Arc<shape::Shaper>> {
        self.shape.as_ref()
    }

    /// Whether the cluster zone is served at all (`cluster.enabled`).
    pub(crate) fn cluster_enabled(&self) -> bool {
        self.cluster_enabled
    }

    /// Answer what can be answered without waiting: the zone, errors, hosts and cache hits.
    /// `out` receives the reply, at most as large as `proto` allows the client (RFC 1035
    /// §4.2.1, RFC 6891 §6.2.5 over UDP; 65,535 bytes over TCP).
    ///
    /// Hostile or broken messages: shorter than a header, or a response (QR set), get no reply
    /// at all (answering responses invites reflection loops); a non-zero opcode NOTIMP; a
    /// question that cannot be read, QDCOUNT other than 1, or a bad OPT record FORMERR; an
    /// EDNS version above 0 BADVERS (RFC 6891 §6.1.3); a class other than IN or ANY REFUSED.
    pub fn answer_local(&self, msg: &[u8], proto: Proto, out: &mut Vec<u8>) -> Local {
        self.answer_from(msg, proto, None, out)
    }

    /// [`Engine::answer_local`] of a query from `client` (answer shaping may depend on it).
    pub fn answer_from(
        &self,
        msg: &[u8],
        proto: Proto,
        client: Option<IpAddr>,
        out: &mut Vec<u8>,
    ) -> Local {
        let q = match Query::parse(msg) {
            Ok(q) => q,
            Err(ParseError::Drop) => {
                self.metrics.dropped(DropReason::Malformed);
                return Local::Drop;
            }
            Err(e @ ParseError::Reply { rcode, .. }) => {
                wire::error_reply(out, &e);
                return Local::Reply(Facts {
                    source: AnswerSource::Server,
                    qtype: 0,
                    do_bit: false,
                    rcode,
                    upstream: None,
                });
            }
        };
        // RFC 6891 §6.1.3: a version we do not implement gets BADVERS, with our OPT.
        if q.edns.is_some_and(|e| e.version > 0) {
            wire::rcode_reply(out, &q, rcode::BADVERS, false, self.max_udp);
            return Local::Reply(Facts {
                source: AnswerSource::Server,
                qtype: q.qtype,
                do_bit: q.do_bit(),
                rcode: rcode::BADVERS,
                upstream: None,
            });
        }
        // Zone transfers (and signed SOA queries of a zone offered for transfer) go to the
        // transfer service as they came: no answer shaping applies to them.
        if (q.qclass == wire::CLASS_IN || q.qclass == wire::CLASS_ANY)
            && let Some(x) = &self.xfr
            && x.takes(&q, msg)
        {
            return Local::Transfer(Box::new(crate::xfr::Request::new(&q, msg)));
        }
        // The one hook of answer shaping: it routes through `route` itself.
        if let Some(s) = &self.shape {
            return s.answer(self, q, proto, client, out);
        }
        self.route(q, proto, out)
    }

    /// The largest reply the client of `q` takes over `proto`.
    #[inline]
    pub(crate) fn limit(&self, q: &Query<'_>, proto: Proto) -> usize {
        limit(q, proto, self.max_udp)
    }

    /// Route a parsed query: class check, the cluster zone, then the resolver.
    #[inline]
    pub(crate) fn route(&self, q: Query<'_>, proto: Proto, out: &mut Vec<u8>) -> Local {
        let facts = |source: AnswerSource, rcode: u16| Facts {
            source,
            qtype: q.qtype,
            do_bit: q.do_bit(),
            rcode,
            upstream: None,
        };
        let max = limit(&q, proto, self.max_udp);
        if q.qclass != wire::CLASS_IN && q.qclass != wire::CLASS_ANY {
            wire::rcode_reply(out, &q, rcode::REFUSED, false, self.max_udp);
            return Local::Reply(facts(AnswerSource::Server, rcode::REFUSED));
        }
        if self.cluster_enabled && !self.is_delegated(&q) {
            let snap = self.zone.load();
            let mut w = Writer::new(out, &q, max);
            match answer::answer(&snap, &q, &mut w, self.resolver.is_some()) {
                Outcome::Answered { rcode } => {
                    // Zone transfers of this zone are not offered (`transfer`): RFC 5936
                    // §2.2.1 REFUSED is the answer an operator expects.
                    if q.qtype == rtype::AXFR || q.qtype == rtype::IXFR {
                        wire::rcode_reply(out, &q, rcode::REFUSED, false, self.max_udp);
                        return Local::Reply(facts(AnswerSource::Server, rcode::REFUSED));
                    }
                    w.finish(&q, rcode, true, false, self.max_udp);
                    return Local::Reply(facts(AnswerSource::Zone, rcode));
                }
                Outcome::Cname { target_at } => {
                    w.finish(&q, rcode::NOERROR, true, false, self.max_udp);
                    if self.resolver.is_some() && q.qtype != rtype::CNAME {
                        let target = out[target_at..]
                            .iter()
                            .position(|&b| b == 0)
                            .map(|e| out[target_at..target_at + e + 1].to_vec());
                        if let Some(target) = target {
                            return Local::Forward(Box::new(Pending {
                                query: q.into_owned(),
                                chase: Some((out.clone(), target)),
                                after: None,
                            }));
                        }
                    }
                    return Local::Reply(facts(AnswerSource::Zone, rcode::NOERROR));
                }
                Outcome::NotOurs | Outcome::Fallthrough => {}
            }
        }
        match &self.resolver {
            Some(r) => {
                if let Some(src) = r.answer_local(&q, max, out) {
                    return Local::Reply(facts(src, wire::rcode_of(out)));
                }
                Local::Forward(Box::new(Pending {
                    query: q.into_owned(),
                    chase: None,
                    after: None,
                }))
            }
            None => {
                // Not ours and nowhere to forward: REFUSED (RFC 1035 §4.1.1).
                wire::rcode_reply(out, &q, rcode::REFUSED, false, self.max_udp);
                Local::Reply(facts(AnswerSource::Server, rcode::REFUSED))
            }
        }
    }

    /// Whether `q`'s name is under a forwarding domain inside the cluster zone.
    fn is_delegated(&self, q: &Query<'_>) -> bool {
        if self.delegated.is_empty() || self.resolver.is_none() {
            return false;
        }
        let shown = wire::name::display_name(q.qname_lower());
        let name = shown.trim_end_matches('.');
        self.delegated
            .iter()
            .any(|d| crate::names::in_zone(name, d))
    }

    /// The waiting part: ask the resolver, then finish what answer shaping left to do.
    pub async fn forward(&self, p: &Pending, proto: Proto) -> Resolved {
        let r = self.forward_plain(p, proto).await;
        match &p.after {
            Some(a) => {
                a.finish(self, proto, limit(&p.query, proto, self.max_udp), r)
                    .await
            }
            None => r,
        }
    }

    /// Ask the resolver (or chase a CNAME through it) for `p`.
    pub(crate) async fn forward_plain(&self, p: &Pending, proto: Proto) -> Resolved {
        let q = &p.query;
        let max = limit(q, proto, self.max_udp);
        match &self.resolver {
            Some(r) => match &p.chase {
                None => r.resolve(q, max).await,
                Some((ours, target)) => chase_external(r.as_ref(), q, ours, target, max).await,
            },
            None => {
                let mut out = Vec::new();
                wire::rcode_reply(&mut out, q, rcode::REFUSED, false, self.max_udp);
                Resolved {
                    reply: out,
                    source: AnswerSource::Server,
                    upstream: None,
                }
            }
        }
    }

    /// Count one answered query (and log it when the sampled query log is on). Costs a few
    /// atomic increments: the label handles were resolved when the metrics were built.
    #[inline]
    pub fn observe(
        &self,
        f: &Facts,
        request_size: usize,
        reply: &[u8],
        proto: Proto,
        src: SocketAddr,
        start: Instant,
    ) {
        if !self.count && self.querylog.is_none() {
            return;
        }
        let o = QueryObservation {
            proto,
            ipv6: src.is_ipv6(),
            qtype: f.qtype,
            rcode: f.rcode,
            source: f.source,
            request_size,
            response_size: reply.len(),
            duration: start.elapsed(),
            do_bit: f.do_bit,
        };
        if self.count {
            self.metrics.observe_query(&o);
        }
        if let Some(ql) = &self.querylog
            && ql.enabled()
            && let Some(qname) = echoed_qname(reply)
        {
            ql.log(src, qname, f.upstream, &o);
        }
    }
}

/// The question name our reply echoes (always written in full), or None for a reply without a
/// question (FORMERR for a question that could not be read).
fn echoed_qname(reply: &[u8]) -> Option<&[u8]> {
    if reply.len() < HEADER_LEN || wire::u16_at(reply, 4) != 1 {
        return None;
    }
    let n = wire::name::uncompressed_len(&reply[HEADER_LEN..])?;
    Some(&reply[HEADER_LEN..HEADER_LEN + n])
}

/// Append the records of an ExternalName's target (resolved upstream) to our CNAME reply.
/// hickory does the re-encoding: this is the rare path. A reply that would not fit the
/// client's size goes out as the CNAME alone with TC set, so the client retries over TCP.
async fn chase_external(
    r: &dyn Upstream,
    q: &Query<'_>,
    ours: &[u8],
    target: &[u8],
    max: usize,
) -> Resolved {
    use hickory_proto::op::{Message, ResponseCode};
    let cname_only = |tc: bool| {
        let mut v = ours.to_vec();
        if tc && v.len() > 2 {
            v[2] |= wire::F_TC;
        }
        Resolved {
            reply: v,
            source: AnswerSource::Zone,
            upstream: None,
        }
    };
    let Ok(tq) = Query::from_vec(wire::query::build(0, target, q.qtype, true, None)) else {
        return cname_only(false);
    };
    let up = r.resolve(&tq, TCP_MAX).await;
    let (Ok(mut m), Ok(upm)) = (Message::from_vec(ours), Message::from_vec(&up.reply)) else {
        return cname_only(false);
    };
    m.answers.extend(upm.answers);
    if upm.metadata.response_code == ResponseCode::NXDomain {
        // RFC 6604 §3: the rcode describes the last name in the chain.
        m.metadata.response_code = ResponseCode::NXDomain;
        m.authorities = upm.authorities;
    }
    match m.to_vec() {
        Ok(v) if v.len() <= max => Resolved {
            reply: v,
            source: AnswerSource::Zone,
            upstream: up.upstream,
        },
        _ => cname_only(true),
    }
}

/// Facts of a transfer request answered with `rcode`.
pub fn transfer_facts(q: &Query<'_>, rcode: u16) -> Facts {
    Facts {
        source: AnswerSource::Zone,
        qtype: q.qtype,
        do_bit: q.do_bit(),
        rcode,
        upstream: None,
    }
}

/// Facts of a forwarded query, with the rcode and the upstream of its reply.
pub fn forwarded_facts(q: &Query<'_>, r: &Resolved) -> Facts {
    Facts {
        source: r.source,
        qtype: q.qtype,
        do_bit: q.do_bit(),
        rcode: wire::rcode_of(&r.reply),
        upstream: r.upstream,
    }
}

/// The forwarding domains of `cfg` inside its cluster zone (normalised), when forwarding is on.
fn delegated_domains(cfg: &Config) -> Vec<String> {
    if !cfg.forward.enabled || !cfg.cluster.enabled {
        return Vec::new();
    }
    let Ok(zone) = crate::names::parse_domain(&cfg.cluster.zone) else {
        return Vec::new();
    };
    cfg.forward
        .stub_domains
        .keys()
        .chain(cfg.forward.domains.keys())
        .filter_map(|d| crate::names::parse_domain(d).ok())
        .filter(|d| crate::names::in_zone(d, &zone))
        .collect()
}
