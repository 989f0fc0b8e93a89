//! Routing one request: parse, then the cluster zone, the resolver (hosts, cache, upstreams),
//! or an error code. Knows no Kubernetes type and no socket: the UDP loop and the TCP handler
//! both call [`Engine`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;

use crate::ops::metrics::{self, AnswerSource, Proto, QueryObservation};
use crate::wire::{self, ParseError, Query, Writer, rcode, rtype};
use crate::zone::answer::{self, Outcome};
use crate::zone::snapshot::Snapshot;

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
}

/// What the synchronous part of answering produced.
pub enum Local {
    /// A complete reply is in the buffer.
    Reply(Facts),
    /// Nothing to send (not a query).
    Drop,
    /// The query must wait for an upstream: call [`Engine::forward`].
    Forward(Box<Pending>),
}

/// Names outside the zone: the resolver (hosts, cache, upstreams) as the server sees it.
/// A trait keeps `server/` independent of how `resolve/` is built.
pub trait Upstream: Send + Sync + 'static {
    /// Answer from hosts/cache without waiting, or None.
    fn answer_local(
        &self,
        query: &[u8],
        max_size: usize,
        out: &mut Vec<u8>,
    ) -> Option<AnswerSource>;
    /// Ask upstream; always produces a reply.
    fn resolve<'a>(
        &'a self,
        query: &'a [u8],
        max_size: usize,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = (Vec<u8>, AnswerSource)> + Send + 'a>>;
    /// Our own loop-detection probe came back.
    fn is_loop_probe(&self, qname_lower: &[u8]) -> bool;
}

/// Something that logs sampled queries.
pub trait QueryLogger: Send + Sync + 'static {
    fn log(&self, src: SocketAddr, query: &Query, o: &QueryObservation);
    fn enabled(&self) -> bool;
}

/// A query that waits for an upstream.
pub struct Pending {
    pub query: Query,
    /// An ExternalName's CNAME out of the cluster: our reply so far and the target (absolute
    /// wire name) whose records the resolver adds, as CoreDNS's `kubernetes` plugin does.
    pub chase: Option<(Vec<u8>, Vec<u8>)>,
}

/// The request router, shared by every socket.
pub struct Engine {
    pub zone: Arc<ArcSwap<Snapshot>>,
    /// Serve the cluster zone at all.
    pub cluster_enabled: bool,
    pub resolver: Option<Arc<dyn Upstream>>,
    pub max_udp: u16,
    pub querylog: Option<Arc<dyn QueryLogger>>,
    /// Count queries in the metrics (off when no metrics endpoint is configured: nobody could
    /// read them).
    pub count: bool,
}

impl Engine {
    /// Answer what can be answered without waiting: the zone, errors, hosts and cache hits.
    /// `out` receives the reply. `max` is the largest reply the transport allows the client.
    pub fn answer_local(&self, msg: &[u8], proto: Proto, out: &mut Vec<u8>) -> Local {
        let q = match Query::parse(msg) {
            Ok(q) => q,
            Err(ParseError::Drop) => {
                metrics::global().dropped(metrics::DropReason::Malformed);
                return Local::Drop;
            }
            Err(ParseError::Reply { id, flags, rcode }) => {
                wire::error_reply(out, id, flags, rcode);
                return Local::Reply(Facts {
                    source: AnswerSource::Server,
                    qtype: 0,
                    do_bit: false,
                    rcode,
                });
            }
        };
        let facts = |source: AnswerSource, rcode: u16| Facts {
            source,
            qtype: q.qtype,
            do_bit: q.edns.is_some_and(|e| e.dnssec_ok),
            rcode,
        };
        let max = match proto {
            Proto::Udp => wire::udp_limit(&q, self.max_udp),
            Proto::Tcp => TCP_MAX,
        };
        // RFC 6891 §6.1.3: a version we do not implement gets BADVERS, with our OPT.
        if q.edns.is_some_and(|e| e.version > 0) {
            let w = Writer::new(out, &q, max);
            w.finish(&q, rcode::BADVERS, false, false, self.max_udp);
            return Local::Reply(facts(AnswerSource::Server, rcode::BADVERS));
        }
        if q.qclass != wire::CLASS_IN && q.qclass != wire::CLASS_ANY {
            let w = Writer::new(out, &q, max);
            w.finish(&q, rcode::REFUSED, false, false, self.max_udp);
            return Local::Reply(facts(AnswerSource::Server, rcode::REFUSED));
        }
        if self.cluster_enabled {
            let snap = self.zone.load();
            let mut w = Writer::new(out, &q, max);
            match answer::answer(&snap, &q, &mut w, self.resolver.is_some()) {
                Outcome::Answered { rcode } => {
                    // Zone transfers are not offered (yet): RFC 5936 §2.2.1 REFUSED is the
                    // answer an operator expects from a server that does not do them.
                    if q.qtype == rtype::AXFR || q.qtype == rtype::IXFR {
                        let w = Writer::new(out, &q, max);
                        w.finish(&q, rcode::REFUSED, false, false, self.max_udp);
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
                                query: q,
                                chase: Some((out.clone(), target)),
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
                if let Some(src) = r.answer_local(msg, max, out) {
                    let rc = out.get(3).map(|b| (b & 0x0F) as u16).unwrap_or(0);
                    return Local::Reply(facts(src, rc));
                }
                if r.is_loop_probe(q.qname_lower()) {
                    tracing::error!(
                        qname = %wire::display_name(q.qname_raw()),
                        "forwarding loop detected: our own probe query came back to us; check forward.upstreams / resolv.conf"
                    );
                    std::process::exit(2);
                }
                Local::Forward(Box::new(Pending {
                    query: q,
                    chase: None,
                }))
            }
            None => {
                // Not ours and nowhere to forward: REFUSED (RFC 1035 §4.1.1).
                let w = Writer::new(out, &q, max);
                w.finish(&q, rcode::REFUSED, false, false, self.max_udp);
                Local::Reply(facts(AnswerSource::Server, rcode::REFUSED))
            }
        }
    }

    /// The waiting part: ask the resolver.
    pub async fn forward(&self, msg: &[u8], p: &Pending, proto: Proto) -> (Vec<u8>, AnswerSource) {
        let q = &p.query;
        let max = match proto {
            Proto::Udp => wire::udp_limit(q, self.max_udp),
            Proto::Tcp => TCP_MAX,
        };
        match &self.resolver {
            Some(r) => match &p.chase {
                None => r.resolve(msg, max).await,
                Some((ours, target)) => (
                    chase_external(r.as_ref(), q, ours, target, max).await,
                    AnswerSource::Zone,
                ),
            },
            None => {
                let mut out = Vec::new();
                let w = Writer::new(&mut out, q, max);
                w.finish(q, rcode::REFUSED, false, false, self.max_udp);
                (out, AnswerSource::Server)
            }
        }
    }

    /// Both parts: the whole answer for one message, for the TCP path and tests.
    pub async fn answer(&self, msg: &[u8], proto: Proto, src: SocketAddr) -> Option<Vec<u8>> {
        let start = Instant::now();
        let mut out = Vec::with_capacity(512);
        let facts = match self.answer_local(msg, proto, &mut out) {
            Local::Reply(f) => f,
            Local::Drop => return None,
            Local::Forward(p) => {
                let (r, s) = self.forward(msg, &p, proto).await;
                out = r;
                forwarded_facts(&p.query, s, &out)
            }
        };
        self.observe(&facts, msg.len(), &out, proto, src, start);
        Some(out)
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
            metrics::global().observe_query(&o);
        }
        if let Some(ql) = &self.querylog
            && ql.enabled()
            && let Ok(q) = Query::parse_question_only(reply)
        {
            ql.log(src, &q, &o);
        }
    }
}

/// Append the records of an ExternalName's target (resolved upstream) to our CNAME reply.
/// hickory does the re-encoding: this is the rare path. A reply that would not fit the
/// client's size goes out as the CNAME alone with TC set, so the client retries over TCP.
async fn chase_external(
    r: &dyn Upstream,
    q: &Query,
    ours: &[u8],
    target: &[u8],
    max: usize,
) -> Vec<u8> {
    use hickory_proto::op::{Message, ResponseCode};
    let mut tq = vec![0, 0, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    tq.extend_from_slice(target);
    tq.extend_from_slice(&q.qtype.to_be_bytes());
    tq.extend_from_slice(&wire::CLASS_IN.to_be_bytes());
    let (reply, _) = r.resolve(&tq, TCP_MAX).await;
    let (Ok(mut m), Ok(up)) = (Message::from_vec(ours), Message::from_vec(&reply)) else {
        return ours.to_vec();
    };
    m.answers.extend(up.answers);
    if up.metadata.response_code == ResponseCode::NXDomain {
        // RFC 6604 §3: the rcode describes the last name in the chain.
        m.metadata.response_code = ResponseCode::NXDomain;
        m.authorities = up.authorities;
    }
    match m.to_vec() {
        Ok(v) if v.len() <= max => v,
        _ => {
            let mut v = ours.to_vec();
            if v.len() > 2 {
                v[2] |= 0x02;
            }
            v
        }
    }
}

/// Facts of a forwarded query, with the rcode the upstream gave.
pub fn forwarded_facts(q: &Query, source: AnswerSource, reply: &[u8]) -> Facts {
    Facts {
        source,
        qtype: q.qtype,
        do_bit: q.edns.is_some_and(|e| e.dnssec_ok),
        rcode: reply
            .get(3)
            .map(|b| (b & 0x0F) as u16)
            .unwrap_or(rcode::SERVFAIL),
    }
}

#[allow(dead_code)]
fn has_badvers(reply: &[u8]) -> bool {
    // The OPT is the last record we write: its TTL's first byte is the extended rcode.
    reply.len() >= 11
        && reply[reply.len() - 11..reply.len() - 8] == [0, 0, 41]
        && reply[reply.len() - 6] == 1
}
