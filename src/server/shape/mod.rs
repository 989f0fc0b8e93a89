//! Answer shaping: what CoreDNS's `rewrite`, `autopath`, `template` and `k8s_external` plugins
//! do, and the AAAA filter for forwarded names, between the server and the zone/resolver.
//!
//! The engine calls [`Shaper::answer`] (its one hook) only when something here is configured;
//! otherwise a query costs one branch more. The order is CoreDNS's plugin order:
//!
//! ```text
//! query ─> rewrite (question) ─> autopath ─> template ─> k8s_external ─> zone / resolver
//!       ─> rewrite undone (reply)
//!                                               │ would be forwarded, AAAA, filter_aaaa on
//!                                               v
//!                                         NOERROR, no answer
//! ```
//!
//! - [`autopath`]: a pod's search path walked on the server (CoreDNS `autopath @kubernetes`).
//! - [`template`]: answers made from the question name by regular expressions.
//! - [`rewrite`]: the question rewritten before lookup, the reply given the client's question.
//! - [`external`]: Services' external addresses under zones of their own (`k8s_external`).
//! - [`expand`]: the template fields (`{{ .Name }}`, ...), without a Go template engine.
//! - [`rr`]: a record from zone-file text.

pub(crate) mod autopath;
pub(crate) mod expand;
pub(crate) mod external;
pub(crate) mod rewrite;
pub(crate) mod rr;
pub(crate) mod template;

use std::net::IpAddr;
use std::sync::Arc;

use crate::config::Config;
use crate::error::{ConfigError, Error};
use crate::observe::{AnswerSource, Proto};
use crate::server::handler::{Engine, Facts, Local, Pending, Resolved};
use crate::wire::{self, Query, Writer, rcode, rtype};

/// The configured shaping, compiled.
pub struct Shaper {
    rewrites: Option<rewrite::Rewrites>,
    templates: Option<template::Templates>,
    autopath: Option<autopath::AutoPath>,
    external: Option<external::External>,
    filter_aaaa: bool,
    max_udp: u16,
}

/// What must still happen to a forwarded query's reply.
pub struct After {
    undo: Option<rewrite::Undo>,
    autopath: Option<autopath::Rest>,
}

impl After {
    /// Finish the reply `r` of a forwarded query: the rest of an autopath walk, then the
    /// rewritten question given back (`max`: the client's size).
    pub async fn finish(&self, e: &Engine, proto: Proto, max: usize, mut r: Resolved) -> Resolved {
        if let (Some(rest), Some(s)) = (&self.autopath, e.shape()) {
            r = s.autopath_rest(e, proto, rest, r).await;
        }
        if let Some(u) = &self.undo {
            u.apply(&mut r.reply, max);
        }
        r
    }
}

impl std::fmt::Debug for Shaper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shaper")
            .field("rewrites", &self.rewrites.is_some())
            .field("templates", &self.templates.is_some())
            .field("autopath", &self.autopath.is_some())
            .field("external", &self.external.is_some())
            .field("filter_aaaa", &self.filter_aaaa)
            .finish()
    }
}

impl Shaper {
    /// Compile what `cfg` configures; None when nothing is (the engine then skips the hook).
    /// Errors name the key.
    pub fn new(cfg: &Config) -> Result<Option<Arc<Shaper>>, Error> {
        let invalid = |e: String| {
            let (key, message) = e.split_once(": ").unwrap_or(("shape", &e));
            Error::Config(ConfigError::Invalid {
                key: key.into(),
                message: message.into(),
            })
        };
        let s = &cfg.shape;
        let rewrites = if s.rewrites.is_empty() {
            None
        } else {
            Some(rewrite::Rewrites::new(&s.rewrites).map_err(invalid)?)
        };
        let templates = if s.templates.is_empty() {
            None
        } else {
            Some(template::Templates::new(&s.templates).map_err(invalid)?)
        };
        let filter_aaaa = cfg.forward.enabled && cfg.forward.filter_aaaa;
        let autopath = if s.autopath.enabled && cfg.cluster.enabled {
            let host = match &s.autopath.resolv_conf {
                None => Vec::new(),
                Some(p) => match std::fs::read_to_string(p) {
                    Ok(text) => autopath::search_domains(&text),
                    Err(e) => {
                        tracing::warn!(path = %p.display(), error = %e, "autopath: no host search domains (cannot read the resolv.conf)");
                        Vec::new()
                    }
                },
            };
            Some(
                autopath::AutoPath::new(&host)
                    .map_err(|e| invalid(format!("shape.autopath.resolv_conf: {e}")))?,
            )
        } else {
            None
        };
        let external = match &s.external {
            Some(x) if cfg.cluster.enabled => Some(external::External::new(x).map_err(invalid)?),
            _ => None,
        };
        if rewrites.is_none()
            && templates.is_none()
            && autopath.is_none()
            && external.is_none()
            && !filter_aaaa
        {
            return Ok(None);
        }
        Ok(Some(Arc::new(Shaper {
            rewrites,
            templates,
            autopath,
            external,
            filter_aaaa,
            max_udp: cfg.server.max_udp_size,
        })))
    }

    /// The hook: answer `q` (parsed, EDNS version checked) through the shaping stages and the
    /// engine's own routing ([`Engine::route`]).
    pub(crate) fn answer(
        &self,
        e: &Engine,
        q: Query<'_>,
        proto: Proto,
        src: Option<IpAddr>,
        out: &mut Vec<u8>,
    ) -> Local {
        let max = e.limit(&q, proto);
        let (q, undo) = match self.rewrites.as_ref().map(|r| r.apply(&q)) {
            None | Some(Ok(None)) => (q, None),
            Some(Ok(Some((nq, undo)))) => (nq, Some(undo)),
            Some(Err(())) => {
                wire::rcode_reply(out, &q, rcode::SERVFAIL, false, self.max_udp);
                return Local::Reply(facts(&q, AnswerSource::Server, rcode::SERVFAIL));
            }
        };
        let local = match self.autopath(e, &q, proto, src, out) {
            Some(l) => l,
            None => self.lookup(e, q, proto, src, max, out),
        };
        match (local, undo) {
            (Local::Reply(f), Some(u)) => {
                u.apply(out, max);
                Local::Reply(f)
            }
            (Local::Forward(mut p), Some(u)) => {
                match p.after.as_mut() {
                    Some(a) => a.undo = Some(u),
                    None => {
                        p.after = Some(Box::new(After {
                            undo: Some(u),
                            autopath: None,
                        }))
                    }
                }
                Local::Forward(p)
            }
            (l, _) => l,
        }
    }

    fn lookup(
        &self,
        e: &Engine,
        q: Query<'_>,
        proto: Proto,
        src: Option<IpAddr>,
        max: usize,
        out: &mut Vec<u8>,
    ) -> Local {
        if let Some(t) = &self.templates {
            match t.answer(&q, src, max, self.max_udp, out) {
                template::Outcome::Next => {}
                template::Outcome::Answered { rcode } => {
                    return Local::Reply(facts(&q, AnswerSource::Server, rcode));
                }
                template::Outcome::Cname { rcode, target } => {
                    return self.chase(e, q, proto, target, rcode, out);
                }
            }
        }
        if let Some(x) = &self.external {
            let snap = e.zone().load();
            match x.answer(&snap, &q, max, self.max_udp, out) {
                template::Outcome::Next => {}
                template::Outcome::Answered { rcode } => {
                    return Local::Reply(facts(&q, AnswerSource::Zone, rcode));
                }
                template::Outcome::Cname { rcode, target } => {
                    return self.chase(e, q, proto, target, rcode, out);
                }
            }
        }
        let qtype = q.qtype;
        match e.route(q, proto, out) {
            Local::Forward(p) if self.filter_aaaa && qtype == rtype::AAAA && p.chase.is_none() => {
                // Outside the cluster zone and about to leave the node: NOERROR, no records
                // (NODATA), as the upstream of an IPv4-only cluster would answer in the end.
                let q = &p.query;
                Writer::new(out, q, usize::MAX).finish(
                    q,
                    rcode::NOERROR,
                    false,
                    true,
                    self.max_udp,
                );
                Local::Reply(facts(q, AnswerSource::Server, rcode::NOERROR))
            }
            l => l,
        }
    }

    /// A template's CNAME asked for A/AAAA: the target's records follow it, from the cluster
    /// zone at once, or from upstream (as an ExternalName's CNAME).
    fn chase(
        &self,
        e: &Engine,
        q: Query<'_>,
        proto: Proto,
        target: Vec<u8>,
        rcode: u16,
        out: &mut Vec<u8>,
    ) -> Local {
        let done = |q: &Query<'_>| Local::Reply(facts(q, AnswerSource::Server, rcode));
        let Ok(tq) = Query::from_vec(wire::query::build(q.id, &target, q.qtype, true, None)) else {
            return done(&q);
        };
        let mut theirs = Vec::new();
        match e.route(tq, proto, &mut theirs) {
            Local::Reply(_) => {
                append_answers(out, &theirs, e.limit(&q, proto));
                done(&q)
            }
            Local::Forward(_) => Local::Forward(Box::new(Pending {
                query: q.into_owned(),
                chase: Some((out.clone(), target)),
                after: None,
            })),
            Local::Drop | Local::Transfer(_) => done(&q),
        }
    }
}

/// Append the answer records of `theirs` to our reply `ours` (a CNAME's target's records).
fn append_answers(ours: &mut Vec<u8>, theirs: &[u8], max: usize) {
    use hickory_proto::op::Message;
    let (Ok(mut m), Ok(t)) = (Message::from_vec(ours), Message::from_vec(theirs)) else {
        return;
    };
    m.answers.extend(t.answers);
    if let Ok(v) = m.to_vec() {
        *ours = v;
        wire::fit(ours, max);
    }
}

fn facts(q: &Query<'_>, source: AnswerSource, rcode: u16) -> Facts {
    Facts {
        source,
        qtype: q.qtype,
        do_bit: q.do_bit(),
        rcode,
        upstream: None,
    }
}

/// Zones of a plugin, as lowercase wire names with their text (trailing dot) for templates.
#[derive(Debug, Clone, Default)]
pub(crate) struct Zones {
    wire: Vec<Vec<u8>>,
    text: Vec<String>,
}

impl Zones {
    pub(crate) fn parse(zones: &[String]) -> Result<Zones, String> {
        let mut z = Zones::default();
        for s in zones {
            let t = s.trim();
            let w = if t == "." || t.is_empty() {
                vec![0]
            } else {
                wire::dotted_to_wire(t).map_err(|_| format!("{s:?} is not a domain name"))?
            };
            z.text.push(wire::display_name(&w));
            z.wire.push(w);
        }
        Ok(z)
    }

    /// The longest zone holding `qname` (lowercase wire), as CoreDNS's `Zones.Matches`.
    pub(crate) fn matches(&self, qname: &[u8]) -> Option<usize> {
        let mut best: Option<usize> = None;
        for (i, z) in self.wire.iter().enumerate() {
            if wire::in_domain(qname, z) && best.is_none_or(|b| self.wire[b].len() < z.len()) {
                best = Some(i);
            }
        }
        best
    }

    pub(crate) fn name(&self, i: usize) -> &str {
        &self.text[i]
    }
}

/// The lowercase dotted form of a lowercase wire name, with its trailing dot (as CoreDNS's
/// `state.Name()`).
pub(crate) fn dotted_lower(qname: &[u8]) -> String {
    wire::display_name(qname)
}
