//! CoreDNS's `k8s_external`: Services' external IPs and load balancers' addresses under zones of
//! their own (`<svc>.<ns>.<zone>`), and with `headless`, headless services' endpoints.
//!
//! As CoreDNS answers (plugin/k8s_external/external.go, apex.go, msg_to_dns.go and
//! plugin/kubernetes/external.go), every reply authoritative, every record with the plugin's TTL:
//! - The apex: SOA (`ns1.<apex>.<zone>`, `hostmaster.<apex>.<zone>`, refresh 7200, retry 1800,
//!   expire 86400, minimum the TTL) and NS `ns1.<apex>.<zone>` (with its addresses in the
//!   additional section); other types NODATA.
//! - `<apex>.<zone>`: NODATA; `ns1.<apex>.<zone>`: the addresses of the kube-dns Service's
//!   external addresses (CoreDNS: those of its own service), NODATA without; any other name
//!   below it NXDOMAIN.
//! - `<ns>.<zone>`: NODATA when the namespace exists, NXDOMAIN when not.
//! - `<svc>.<ns>.<zone>`: A/AAAA of the external IPs (each once); a load balancer known by its
//!   host name is a CNAME to it (the target's records follow, from upstream); SRV per external
//!   address and port (`_<port>._<proto>.<svc>.<ns>.<zone>` narrows to one port), targets
//!   `<svc>.<ns>.<zone>` with the addresses in the additional section, weights splitting 100.
//!   A service with external addresses but no ports has nothing to answer: NXDOMAIN, as
//!   CoreDNS's loop over the ports finds nothing.
//! - `headless`: a headless service without external IPs answers with its endpoints instead
//!   (`<endpoint>.<svc>.<ns>.<zone>` too, SRV targets are the endpoint names).
//! - PTR of an external IP, when a reverse zone is one of the plugin's zones:
//!   `<svc>.<ns>.<first zone>` (the services are scanned: PTR questions there are rare).
//! - Anything that finds nothing: NXDOMAIN with the SOA, or, in a `fallthrough` zone, the name
//!   goes on to the cluster zone and forwarding.

use std::collections::HashSet;
use std::net::IpAddr;

use hickory_proto::op::Message;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record};

use super::template::Outcome;
use super::{Zones, dotted_lower};
use crate::config::ExternalConfig;
use crate::wire::{self, Query, Writer, rcode, rtype};
use crate::zone::snapshot::{RecordsKind, Snapshot};

/// The compiled `shape.external` section.
pub(crate) struct External {
    zones: Zones,
    /// The zones as hickory names (same order as `zones`).
    names: Vec<Name>,
    apex: String,
    ttl: u32,
    headless: bool,
    fallthrough: Zones,
}

/// One address record to answer with: the name it is under and the address or host.
struct Found {
    /// Owner of the SRV target: `<svc>.<ns>.<zone>` or `<endpoint>.<svc>.<ns>.<zone>`.
    target: Name,
    host: Host,
    port: u16,
}

enum Host {
    Ip(IpAddr),
    /// Absolute wire name.
    Name(Vec<u8>),
}

impl External {
    pub(crate) fn new(c: &ExternalConfig) -> Result<External, String> {
        let zones = Zones::parse(&c.zones).map_err(|e| format!("shape.external.zones: {e}"))?;
        if c.zones.is_empty() {
            return Err("shape.external.zones: at least one zone is needed".into());
        }
        let fallthrough =
            Zones::parse(&c.fallthrough).map_err(|e| format!("shape.external.fallthrough: {e}"))?;
        if c.apex.is_empty() || c.apex.contains('.') || c.apex.len() > 63 {
            return Err(format!(
                "shape.external.apex: {:?} is not one label",
                c.apex
            ));
        }
        let names = (0..c.zones.len())
            .map(|i| Name::from_ascii(zones.name(i)).map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("shape.external.zones: {e}"))?;
        Ok(External {
            zones,
            names,
            apex: c.apex.to_ascii_lowercase(),
            ttl: c.ttl,
            headless: c.headless,
            fallthrough,
        })
    }

    /// Answer `q` if it is in one of the zones.
    pub(crate) fn answer(
        &self,
        snap: &Snapshot,
        q: &Query<'_>,
        max: usize,
        max_udp: u16,
        out: &mut Vec<u8>,
    ) -> Outcome {
        let qname = q.qname_lower();
        let Some(zi) = self.zones.matches(qname) else {
            return Outcome::Next;
        };
        let zone = &self.names[zi];
        let name = dotted_lower(qname);
        let Ok(asked) = Name::from_ascii(&name) else {
            return Outcome::Next;
        };
        let mut m = Reply::default();
        let labels = asked.num_labels() - zone.num_labels();
        let apex_name = Name::from_ascii(&self.apex)
            .ok()
            .and_then(|a| a.append_domain(zone).ok());
        if labels == 0 {
            match q.qtype {
                rtype::SOA => m.answer.push(self.soa(snap, zone)),
                rtype::NS => {
                    let ns = self.ns1(zone);
                    m.answer
                        .push(self.rec(zone.clone(), RData::NS(NS(ns.clone()))));
                    for ip in kube_dns_external(snap) {
                        m.extra.push(self.addr(ns.clone(), ip));
                    }
                }
                _ => {}
            }
            return self.finish(snap, zone, q, rcode::NOERROR, m, max, max_udp, out);
        }
        if let Some(apex) = apex_name.filter(|a| a.zone_of(&asked)) {
            let below = asked.num_labels() - apex.num_labels();
            let rc = match below {
                0 => rcode::NOERROR,
                1 if asked
                    .iter()
                    .next()
                    .is_some_and(|l| l.eq_ignore_ascii_case(b"ns1")) =>
                {
                    for ip in kube_dns_external(snap) {
                        let family = if ip.is_ipv4() { rtype::A } else { rtype::AAAA };
                        if q.qtype == family {
                            m.answer.push(self.addr(asked.clone(), ip));
                        }
                    }
                    rcode::NOERROR
                }
                _ => rcode::NXDOMAIN,
            };
            return self.finish(snap, zone, q, rc, m, max, max_udp, out);
        }
        let (found, rc) = self.lookup(snap, &asked, zone, q.qtype);
        if found.is_empty() {
            if rc == rcode::NXDOMAIN && self.fallthrough.matches(qname).is_some() {
                return Outcome::Next;
            }
            return self.finish(snap, zone, q, rc, m, max, max_udp, out);
        }
        let mut cname = None;
        match q.qtype {
            rtype::A | rtype::AAAA => {
                let mut seen = HashSet::new();
                for f in &found {
                    match &f.host {
                        Host::Ip(ip) if (ip.is_ipv4()) == (q.qtype == rtype::A) => {
                            if seen.insert(*ip) {
                                m.answer.push(self.addr(asked.clone(), *ip));
                            }
                        }
                        Host::Ip(_) => {}
                        Host::Name(t) => {
                            if let Ok(target) = Name::from_ascii(wire::display_name(t)) {
                                m.answer
                                    .push(self.rec(asked.clone(), RData::CNAME(CNAME(target))));
                                cname.get_or_insert_with(|| t.clone());
                            }
                        }
                    }
                }
            }
            rtype::SRV => {
                let weight = (100 / found.len()).max(1) as u16;
                let mut seen_srv = HashSet::new();
                let mut seen_extra = HashSet::new();
                for f in &found {
                    let target = match &f.host {
                        Host::Ip(_) => f.target.clone(),
                        Host::Name(t) => match Name::from_ascii(wire::display_name(t)) {
                            Ok(n) => n,
                            Err(_) => continue,
                        },
                    };
                    if seen_srv.insert((target.clone(), f.port)) {
                        m.answer.push(self.rec(
                            asked.clone(),
                            RData::SRV(SRV::new(0, weight, f.port, target.clone())),
                        ));
                    }
                    if let Host::Ip(ip) = f.host
                        && seen_extra.insert((target.clone(), ip))
                    {
                        m.extra.push(self.addr(target, ip));
                    }
                }
            }
            _ => {}
        }
        let out_come = self.finish(snap, zone, q, rcode::NOERROR, m, max, max_udp, out);
        match (cname, out_come) {
            (Some(target), Outcome::Answered { rcode }) => Outcome::Cname { rcode, target },
            (_, o) => o,
        }
    }

    /// What the name holds (CoreDNS's `External`): the addresses found and the rcode when
    /// there are none.
    fn lookup(&self, snap: &Snapshot, asked: &Name, zone: &Name, qtype: u16) -> (Vec<Found>, u16) {
        let mut found = Vec::new();
        if qtype == rtype::PTR
            && let Some(ip) = reverse_ip(asked)
        {
            return (Vec::new(), self.ptr_rcode(snap, ip));
        }
        // Labels below the zone, the last (the namespace) first.
        let below = asked.num_labels() - zone.num_labels();
        let segs: Vec<&[u8]> = asked.iter().take(below as usize).collect();
        let Some((&ns, rest)) = segs.split_last() else {
            return (found, rcode::SERVFAIL);
        };
        let ns_label = label(ns);
        if !snap.namespaces.contains_key(&ns_label) {
            return (found, rcode::NXDOMAIN);
        }
        let Some((&svc, rest)) = rest.split_last() else {
            return (found, rcode::NOERROR);
        };
        let (endpoint, port, proto) = match rest {
            [] => (None, None, None),
            [ep] => (Some(strip(ep)), None, None),
            [port, proto] => (None, Some(strip(port)), Some(strip(proto))),
            _ => return (found, rcode::NXDOMAIN),
        };
        let mut key = label(svc);
        key.extend_from_slice(&ns_label);
        let Some(r) = snap.services.get(&key) else {
            return (found, rcode::NXDOMAIN);
        };
        let mut rc = rcode::NXDOMAIN;
        let svc_name = Name::from_labels([svc, ns])
            .ok()
            .and_then(|n| n.append_domain(zone).ok());
        let Some(svc_name) = svc_name else {
            return (found, rcode::NXDOMAIN);
        };
        // CoreDNS's `matchPortAndProtocol`: no wildcards, an absent port or protocol matches
        // every one.
        let port_ok = |name: &[u8], protocol: &str| {
            port.is_none_or(|p| p.eq_ignore_ascii_case(name))
                && proto.is_none_or(|p| p.eq_ignore_ascii_case(protocol.as_bytes()))
        };
        let ext_empty = r.external.as_ref().is_none_or(|x| x.ips.is_empty());
        let headless = matches!(r.kind, RecordsKind::Headless);
        if self.headless && ext_empty && (headless || endpoint.is_some()) {
            for i in 0..r.endpoints.len() {
                let ep_label = r.endpoints.name(i).label();
                let ep_bytes = ep_label.as_bytes();
                if let Some(want) = endpoint
                    && !want.eq_ignore_ascii_case(&ep_bytes[1..])
                {
                    continue;
                }
                let Ok(target) =
                    Name::from_labels([&ep_bytes[1..]]).and_then(|n| n.append_domain(&svc_name))
                else {
                    continue;
                };
                for p in r.endpoints.port_set(i) {
                    if !port_ok(p.name.as_bytes(), p.protocol.label()) {
                        continue;
                    }
                    rc = rcode::NOERROR;
                    found.push(Found {
                        target: target.clone(),
                        host: Host::Ip(r.endpoints.ip(i)),
                        port: p.port,
                    });
                }
            }
            return (found, rc);
        }
        if endpoint.is_some() {
            return (found, rc);
        }
        let Some(x) = &r.external else {
            return (found, rc);
        };
        let hosts = x
            .ips
            .iter()
            .map(|ip| Host::Ip(*ip))
            .chain(x.hosts.iter().map(|h| Host::Name(h.to_vec())));
        for host in hosts {
            for p in x.ports.iter() {
                if !port_ok(p.name.as_bytes(), p.protocol.label()) {
                    continue;
                }
                rc = rcode::NOERROR;
                found.push(Found {
                    target: svc_name.clone(),
                    host: match &host {
                        Host::Ip(ip) => Host::Ip(*ip),
                        Host::Name(n) => Host::Name(n.clone()),
                    },
                    port: p.port,
                });
            }
        }
        if qtype == rtype::PTR {
            // A PTR question for a name that is not a reverse one: nothing, the rcode kept.
            return (Vec::new(), rc);
        }
        (found, rc)
    }

    /// A PTR question for an external IP: the rcode of CoreDNS's `ExternalReverse`; the
    /// records themselves are written by [`External::ptr_records`].
    fn ptr_rcode(&self, snap: &Snapshot, ip: IpAddr) -> u16 {
        if self.ptr_targets(snap, ip).is_empty() {
            rcode::NXDOMAIN
        } else {
            rcode::NOERROR
        }
    }

    /// `<svc>.<ns>.<first zone>` of every service with `ip` among its external IPs.
    fn ptr_targets(&self, snap: &Snapshot, ip: IpAddr) -> Vec<Name> {
        let first = &self.names[0];
        let mut v = Vec::new();
        for r in snap.services.values() {
            if r.external.as_ref().is_some_and(|x| x.ips.contains(&ip)) {
                let key = r.key();
                let svc = &key[1..1 + key[0] as usize];
                let ns = &key[2 + key[0] as usize..];
                if let Ok(n) = Name::from_labels([svc, ns]).and_then(|n| n.append_domain(first)) {
                    v.push(n);
                }
            }
        }
        v.sort();
        v.dedup();
        v
    }

    fn rec(&self, name: Name, data: RData) -> Record {
        Record::from_rdata(name, self.ttl, data)
    }

    fn addr(&self, name: Name, ip: IpAddr) -> Record {
        match ip {
            IpAddr::V4(a) => self.rec(name, RData::A(A(a))),
            IpAddr::V6(a) => self.rec(name, RData::AAAA(AAAA(a))),
        }
    }

    fn ns1(&self, zone: &Name) -> Name {
        Name::from_labels([b"ns1".as_slice(), self.apex.as_bytes()])
            .and_then(|n| n.append_domain(zone))
            .unwrap_or_else(|_| zone.clone())
    }

    fn soa(&self, snap: &Snapshot, zone: &Name) -> Record {
        let mbox = Name::from_labels([b"hostmaster".as_slice(), self.apex.as_bytes()])
            .and_then(|n| n.append_domain(zone))
            .unwrap_or_else(|_| zone.clone());
        self.rec(
            zone.clone(),
            RData::SOA(SOA::new(
                self.ns1(zone),
                mbox,
                snap.serial,
                7200,
                1800,
                86400,
                self.ttl,
            )),
        )
    }

    /// Write the reply: AA, `rc`, the records; the SOA in the authority section when the answer
    /// is empty (NXDOMAIN and NODATA alike).
    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        snap: &Snapshot,
        zone: &Name,
        q: &Query<'_>,
        rc: u16,
        mut m: Reply,
        max: usize,
        max_udp: u16,
        out: &mut Vec<u8>,
    ) -> Outcome {
        if q.qtype == rtype::PTR
            && let Ok(asked) = Name::from_ascii(dotted_lower(q.qname_lower()))
            && let Some(ip) = reverse_ip(&asked)
        {
            for t in self.ptr_targets(snap, ip) {
                m.answer.push(self.rec(asked.clone(), RData::PTR(PTR(t))));
            }
        }
        if m.answer.is_empty() {
            m.authority.push(self.soa(snap, zone));
        }
        Writer::new(out, q, usize::MAX).finish(q, rc, true, false, max_udp);
        let Ok(mut msg) = Message::from_vec(out) else {
            return Outcome::Answered { rcode: rc };
        };
        // Owners as the client wrote the name (CoreDNS's `state.QName()`).
        let asked_case = msg.queries.first().map(|q| q.name().clone());
        let lower = Name::from_ascii(dotted_lower(q.qname_lower())).ok();
        let recase = |r: &mut Record| {
            if let (Some(a), Some(l)) = (&asked_case, &lower)
                && r.name == *l
            {
                r.name = a.clone();
            }
        };
        m.answer.iter_mut().for_each(recase);
        msg.answers = m.answer;
        msg.authorities = m.authority;
        msg.additionals = m.extra;
        if let Ok(v) = msg.to_vec() {
            *out = v;
            wire::fit(out, max);
        }
        Outcome::Answered { rcode: rc }
    }
}

#[derive(Default)]
struct Reply {
    answer: Vec<Record>,
    authority: Vec<Record>,
    extra: Vec<Record>,
}

/// A label in wire form (length first), lowercase.
fn label(l: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(l.len() + 1);
    v.push(l.len() as u8);
    v.extend(l.iter().map(u8::to_ascii_lowercase));
    v
}

/// `_http` → `http` (CoreDNS's `stripUnderscore`).
fn strip(l: &[u8]) -> &[u8] {
    l.strip_prefix(b"_").unwrap_or(l)
}

/// The kube-dns Service's external addresses: what `ns1.<apex>.<zone>` answers (CoreDNS: the
/// external addresses of the service in front of CoreDNS itself).
fn kube_dns_external(snap: &Snapshot) -> Vec<IpAddr> {
    snap.services
        .get(b"\x08kube-dns\x0bkube-system")
        .and_then(|r| r.external.as_ref())
        .map(|x| x.ips.to_vec())
        .unwrap_or_default()
}

/// The address of a reverse name (`4.3.2.1.in-addr.arpa.`, nibbles under `ip6.arpa.`).
fn reverse_ip(n: &Name) -> Option<IpAddr> {
    let text = n.to_ascii().to_ascii_lowercase();
    let text = text.trim_end_matches('.');
    if let Some(v4) = text.strip_suffix(".in-addr.arpa") {
        let parts: Vec<&str> = v4.split('.').collect();
        if parts.len() != 4 {
            return None;
        }
        let mut o = [0u8; 4];
        for (i, p) in parts.iter().rev().enumerate() {
            o[i] = p.parse().ok()?;
        }
        return Some(IpAddr::from(o));
    }
    if let Some(v6) = text.strip_suffix(".ip6.arpa") {
        let nibbles: Vec<&str> = v6.split('.').collect();
        if nibbles.len() != 32 {
            return None;
        }
        let mut o = [0u8; 16];
        for (i, nb) in nibbles.iter().rev().enumerate() {
            let v = u8::from_str_radix(nb, 16).ok()?;
            if nb.len() != 1 {
                return None;
            }
            o[i / 2] |= if i % 2 == 0 { v << 4 } else { v };
        }
        return Some(IpAddr::from(o));
    }
    None
}
