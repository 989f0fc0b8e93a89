//! Server-side search path (CoreDNS's `autopath @kubernetes`): a pod's first search-path
//! expansion is answered with the answer of the first expansion that exists.
//!
//! As CoreDNS does it (plugin/autopath/autopath.go, plugin/kubernetes/autopath.go):
//! - The client is a pod when its address belongs to a pod the cluster holds (pods on the host
//!   network are not indexed: their address is the node's, shared by everything on it). Its
//!   search path is `<ns>.svc.<zone> svc.<zone> <zone>`, then the host's search domains (the
//!   `search` line of `autopath.resolv_conf`), then the bare name.
//! - Only a name in the first element's domain is walked (`firstInSearchPath`): the base is
//!   the name less `<ns>.svc.<zone>`, and `base.<element>` is looked up for each element in
//!   turn (through the templates, the zone and forwarding, as CoreDNS calls the plugins after
//!   it), until one is not NXDOMAIN.
//! - That reply goes to the client with the client's question, and a CNAME from the asked name
//!   to the owner of the first answer record put first (CoreDNS's `cnamer`, with that record's
//!   TTL), so a stub resolver accepts it and stops walking its own search list.
//! - Every expansion NXDOMAIN: the first reply (that of the asked name) goes back as it was,
//!   and the client walks its list itself.
//!
//! Behind a node-local cache the client address is the cache's (a hostNetwork pod, or the
//! node): no pod holds it, so no autopath happens there; the cache forwards each expansion and
//! caches the answers as usual. Run autopath where pods ask directly.

use std::net::IpAddr;

use hickory_proto::op::Message;
use hickory_proto::rr::rdata::CNAME;
use hickory_proto::rr::{RData, Record};

use super::{Shaper, facts};
use crate::observe::{AnswerSource, Proto};
use crate::server::handler::{Engine, Local, Resolved};
use crate::wire::{self, Query, rcode};

/// The configured search path beyond the cluster's own elements.
pub(crate) struct AutoPath {
    /// The host's search domains (wire, lowercase, absolute).
    host_search: Vec<Vec<u8>>,
}

/// The walk still to do for a query whose expansion went upstream.
pub(crate) struct Rest {
    /// The client's query.
    client: Query<'static>,
    /// The candidates after the one forwarded (wire names).
    next: Vec<Vec<u8>>,
    /// The reply to the asked name (the first candidate), to give back if nothing exists.
    first: Option<Vec<u8>>,
    src: Option<IpAddr>,
}

/// `search` domains of a resolv.conf file (the last `search` or `domain` line wins, as the
/// resolver reads it).
pub(crate) fn search_domains(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let mut f = line.split_whitespace();
        match f.next() {
            Some("search") | Some("domain") => {
                out = f
                    .map(|s| s.trim_end_matches('.').to_ascii_lowercase())
                    .collect();
            }
            _ => {}
        }
    }
    out
}

impl AutoPath {
    pub(crate) fn new(host_search: &[String]) -> Result<AutoPath, String> {
        let mut v = Vec::new();
        for d in host_search {
            if d.is_empty() {
                continue;
            }
            v.push(wire::dotted_to_wire(d).map_err(|_| format!("{d:?} is not a domain name"))?);
        }
        Ok(AutoPath { host_search: v })
    }

    /// The expansions to try for `q` from `client`, the asked name first; None when the query
    /// is not a pod's first expansion.
    fn candidates(&self, e: &Engine, q: &Query<'_>, client: IpAddr) -> Option<Vec<Vec<u8>>> {
        if !e.cluster_enabled() {
            return None;
        }
        let snap = e.zone().load();
        let ns = snap.pod_namespaces.namespace_of(client)?;
        let zone = &snap.zone;
        // `<ns>.svc.<zone>`
        let mut first = Vec::with_capacity(ns.len() + 4 + zone.len());
        first.extend_from_slice(ns);
        first.extend_from_slice(b"\x03svc");
        first.extend_from_slice(zone);
        let name = q.qname_lower();
        if name.len() <= first.len() || !wire::in_domain(name, &first) {
            return None;
        }
        // The base as the client wrote it (its case kept), without the root.
        let base = &q.qname()[..name.len() - first.len()];
        let svc_zone = &first[ns.len()..];
        let mut out = Vec::with_capacity(4 + self.host_search.len());
        for suffix in [&first[..], svc_zone, zone]
            .into_iter()
            .chain(self.host_search.iter().map(|h| &h[..]))
            .chain(std::iter::once(&[0u8][..]))
        {
            if base.len() + suffix.len() > wire::MAX_NAME {
                continue;
            }
            let mut c = base.to_vec();
            c.extend_from_slice(suffix);
            out.push(c);
        }
        Some(out)
    }
}

/// The client's message asking `name` instead (its header, the new question, its OPT record).
fn ask(client: &Query<'_>, name: &[u8]) -> Option<Query<'static>> {
    let msg = client.message();
    let mut m = Vec::with_capacity(msg.len() + name.len());
    m.extend_from_slice(&msg[..wire::HEADER_LEN]);
    m.extend_from_slice(name);
    m.extend_from_slice(&client.qtype.to_be_bytes());
    m.extend_from_slice(&client.qclass.to_be_bytes());
    m.extend_from_slice(&msg[client.question_end()..]);
    Query::from_vec(m).ok()
}

/// CoreDNS's `cnamer`: a CNAME from the asked name to the owner of the first answer record
/// that is not owned by it, first in the answer; the client's question back in place.
fn cnamer(reply: &mut Vec<u8>, client: &Query<'_>, max: usize) {
    let (Ok(mut m), Ok(orig)) = (
        Message::from_vec(reply),
        Message::from_vec(&wire::query::build(
            0,
            client.qname(),
            client.qtype,
            true,
            None,
        )),
    ) else {
        return;
    };
    let asked = orig.queries[0].name().clone();
    // Names compare without case, as CoreDNS's `strings.EqualFold`.
    if let Some(first) = m.answers.iter().find(|r| r.name != asked) {
        let cname = Record::from_rdata(
            asked.clone(),
            first.ttl,
            RData::CNAME(CNAME(first.name.clone())),
        );
        m.answers.insert(0, cname);
    }
    let mut qn = orig.queries[0].clone();
    qn.query_class = m.queries.first().map_or(qn.query_class, |q| q.query_class);
    m.queries = vec![qn];
    if let Ok(v) = m.to_vec() {
        *reply = v;
        wire::fit(reply, max);
    }
}

/// The walk goes on past NXDOMAIN, and past a failure (CoreDNS goes on when the plugin after it
/// wrote nothing: `plugin.ClientWrite` is false for SERVFAIL).
fn goes_on(rc: u16) -> bool {
    rc == rcode::NXDOMAIN || rc == rcode::SERVFAIL
}

impl Shaper {
    /// Autopath `q` when its client is a pod asking its first expansion; None: not ours.
    pub(crate) fn autopath(
        &self,
        e: &Engine,
        q: &Query<'_>,
        proto: Proto,
        src: Option<IpAddr>,
        out: &mut Vec<u8>,
    ) -> Option<Local> {
        let ap = self.autopath.as_ref()?;
        let cands = ap.candidates(e, q, src?)?;
        let max = e.limit(q, proto);
        let mut first: Option<Vec<u8>> = None;
        let mut it = cands.into_iter();
        while let Some(name) = it.next() {
            let cq = ask(q, &name)?;
            match self.lookup(e, cq, proto, src, max, out) {
                Local::Reply(_) => {
                    let rc = wire::rcode_of(out);
                    if first.is_none() {
                        first = Some(out.clone());
                    }
                    if goes_on(rc) {
                        continue;
                    }
                    cnamer(out, q, max);
                    e.metrics().autopath_success();
                    return Some(Local::Reply(facts(q, AnswerSource::Zone, rc)));
                }
                Local::Forward(mut p) => {
                    p.after = Some(Box::new(super::After {
                        undo: None,
                        autopath: Some(Rest {
                            client: q.clone().into_owned(),
                            next: it.collect(),
                            first,
                            src,
                        }),
                    }));
                    return Some(Local::Forward(p));
                }
                // Transfers are taken before shaping (`Engine::answer_local`).
                Local::Drop | Local::Transfer(_) => break,
            }
        }
        match first {
            Some(f) => {
                *out = f;
                let rc = wire::rcode_of(out);
                Some(Local::Reply(facts(q, AnswerSource::Zone, rc)))
            }
            None => None,
        }
    }

    /// The rest of a walk whose expansion `r` came from upstream.
    pub(crate) async fn autopath_rest(
        &self,
        e: &Engine,
        proto: Proto,
        rest: &Rest,
        mut r: Resolved,
    ) -> Resolved {
        let client = &rest.client;
        let max = e.limit(client, proto);
        let mut first = rest.first.clone();
        let mut next = rest.next.iter();
        loop {
            if first.is_none() {
                first = Some(r.reply.clone());
            }
            if !goes_on(wire::rcode_of(&r.reply)) {
                cnamer(&mut r.reply, client, max);
                e.metrics().autopath_success();
                return r;
            }
            let Some(name) = next.next() else { break };
            let Some(cq) = ask(client, name) else { break };
            let mut out = Vec::new();
            r = match self.lookup(e, cq, proto, rest.src, max, &mut out) {
                Local::Reply(_) => Resolved {
                    reply: out,
                    source: AnswerSource::Zone,
                    upstream: None,
                },
                Local::Forward(p) => Box::pin(e.forward_plain(&p, proto)).await,
                Local::Drop | Local::Transfer(_) => break,
            };
        }
        let reply = first.unwrap_or(r.reply);
        Resolved {
            reply,
            source: r.source,
            upstream: r.upstream,
        }
    }
}
