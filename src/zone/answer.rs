//! One question → the answer, authority and additional sections, written as wire bytes.
//!
//! The names, per the Kubernetes DNS specification (schema 1.1.0) and CoreDNS's behaviour
//! where the specification is silent:
//!
//! ```text
//! <zone>                                   SOA, NS (apex)
//! dns-version.<zone>                       TXT "1.1.0"                            (spec §2.2)
//! ns.dns.<zone>                            A/AAAA of this server
//! <svc>.<ns>.svc.<zone>                    A/AAAA ClusterIPs, or ready endpoints   (§2.3.1, §2.4.1)
//!                                          CNAME for ExternalName                  (§2.5)
//!                                          SRV for every port (CoreDNS)
//! <host>.<svc>.<ns>.svc.<zone>             A/AAAA of that endpoint                  (§2.4.1)
//! _<port>._<proto>.<svc>.<ns>.svc.<zone>   SRV                                      (§2.3.2, §2.4.2)
//! <a-b-c-d>.<ns>.pod.<zone>                A/AAAA (pods insecure | verified)
//! <reverse IP>.in-addr.arpa / ip6.arpa     PTR                                      (§2.3.3, §2.4.3)
//! ```
//!
//! Negative answers carry the zone's SOA in the authority section, NXDOMAIN when the name does
//! not exist, NODATA (NOERROR, empty answer) when it exists with other types — including empty
//! non-terminals such as `svc.<zone>` and `<ns>.svc.<zone>` (RFC 2308 §2.1, §2.2; RFC 8020).

use std::cell::Cell;
use std::net::IpAddr;

use crate::config::PodsMode;
use crate::wire::{ADDITIONAL, ANSWER, AUTHORITY, Query, Writer, rcode, rtype};

use super::snapshot::{RecordsKind, ServiceRecords, Snapshot, undash_ip};

/// The TTL CoreDNS gives `dns-version` (its default for the schema record).
pub(crate) const DNS_VERSION_TTL: u32 = 28800;
/// SOA timers, as CoreDNS writes them.
pub(crate) const SOA_REFRESH: u32 = 7200;
pub(crate) const SOA_RETRY: u32 = 1800;
pub(crate) const SOA_EXPIRE: u32 = 86400;

/// What the zone made of a question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Written: finish the message with this rcode, AA set.
    Answered { rcode: u16 },
    /// Not in any zone served here: forward it (or REFUSED).
    NotOurs,
    /// In a zone served here, not found, and the zone falls through (reverse names of
    /// addresses outside the cluster): forward it.
    Fallthrough,
    /// Written: a CNAME to a name outside the cluster zone. The target (absolute wire name) is
    /// at `target_at` in the message; a resolver may append the target's records.
    Cname { target_at: usize },
}

thread_local! {
    /// Rotation counter for `loadbalance`: per thread, so no cache line is shared between cores.
    static ROTATE: Cell<usize> = const { Cell::new(0) };
}

fn rotation(n: usize, enabled: bool) -> usize {
    if !enabled || n < 2 {
        return 0;
    }
    ROTATE.with(|c| {
        let v = c.get().wrapping_add(1);
        c.set(v);
        v % n
    })
}

/// Where the question name ends relative to a zone: the relative labels, left to right.
struct Rel<'a> {
    labels: [&'a [u8]; 8],
    n: usize,
}

/// If `qname` (lowercase wire) is `zone` or below it, its labels left of the zone (at most 8;
/// deeper names cannot exist in the cluster zone and get `None` for the labels, but still match).
fn relative<'a>(qname: &'a [u8], zone: &[u8]) -> Option<Option<Rel<'a>>> {
    if qname.len() < zone.len() || &qname[qname.len() - zone.len()..] != zone {
        return None;
    }
    let end = qname.len() - zone.len();
    let mut rel = Rel {
        labels: [&[]; 8],
        n: 0,
    };
    let mut p = 0;
    while p < end {
        let len = qname[p] as usize;
        if rel.n == 8 {
            return Some(None);
        }
        rel.labels[rel.n] = &qname[p..p + 1 + len];
        rel.n += 1;
        p += 1 + len;
    }
    // The zone must start at a label boundary.
    if p != end {
        return None;
    }
    Some(Some(rel))
}

fn label_is(l: &[u8], s: &str) -> bool {
    l.len() == s.len() + 1 && &l[1..] == s.as_bytes()
}

/// Answer `q` from `snap`, writing records into `w` (its header and question are written).
/// `can_fall_through`: names of fallthrough zones that are not found may go elsewhere (there is
/// a resolver); otherwise they get NXDOMAIN here.
pub fn answer(
    snap: &Snapshot,
    q: &Query<'_>,
    w: &mut Writer<'_>,
    can_fall_through: bool,
) -> Outcome {
    let qname = q.qname_lower();
    if let Some(rel) = relative(qname, &snap.zone) {
        w.set_zone_suffix(snap.zone.len());
        let out = match rel {
            Some(rel) => cluster(snap, q.qtype, &rel, w),
            None => Res::NxDomain,
        };
        let out = match out {
            Res::Cname(at) => chase(snap, q.qtype, w, at),
            o => o,
        };
        return finish(snap, q, w, out, &snap.zone, false);
    }
    for (i, z) in snap.reverse_zones.iter().enumerate() {
        if relative(qname, z).is_some() {
            w.set_zone_suffix(z.len());
            let out = reverse(snap, q, w);
            let falls = can_fall_through
                && snap
                    .fallthrough
                    .iter()
                    .any(|f| relative(qname, f).is_some());
            return finish(snap, q, w, out, &snap.reverse_zones[i], falls);
        }
    }
    Outcome::NotOurs
}

/// Follow an ExternalName's CNAME while its target stays in the cluster zone (CoreDNS does, so
/// a stub resolver gets the addresses in one answer), at most 8 links. A target outside the
/// zone is left for the server to resolve.
fn chase(snap: &Snapshot, qtype: u16, w: &mut Writer<'_>, mut target_at: usize) -> Res {
    for _ in 0..8 {
        let mut name = [0u8; 255];
        let n = {
            let bytes = &w.written()[target_at..];
            let Some(len) = bytes.iter().position(|&b| b == 0).map(|p| p + 1) else {
                return Res::Answer;
            };
            if len > 255 {
                return Res::Answer;
            }
            name[..len].copy_from_slice(&bytes[..len]);
            len
        };
        let Some(Some(rel)) = relative(&name[..n], &snap.zone) else {
            return Res::Cname(target_at);
        };
        w.set_owner(target_at);
        match cluster(snap, qtype, &rel, w) {
            Res::Cname(next) => target_at = next,
            // The CNAME itself is the answer; a missing target does not make it NXDOMAIN.
            _ => return Res::Answer,
        }
    }
    Res::Answer
}

/// The result before negative answers are written.
enum Res {
    /// Records were written to the answer section.
    Answer,
    /// The name exists, no records of the type (NODATA).
    NoData,
    NxDomain,
    /// A CNAME out of the zone was written.
    Cname(usize),
}

fn finish(
    snap: &Snapshot,
    q: &Query<'_>,
    w: &mut Writer<'_>,
    res: Res,
    zone: &[u8],
    fallthrough: bool,
) -> Outcome {
    match res {
        Res::Answer => Outcome::Answered {
            rcode: rcode::NOERROR,
        },
        Res::Cname(at) => Outcome::Cname { target_at: at },
        Res::NoData => {
            soa_authority(snap, w, zone);
            Outcome::Answered {
                rcode: rcode::NOERROR,
            }
        }
        Res::NxDomain if fallthrough => Outcome::Fallthrough,
        Res::NxDomain => {
            let _ = q;
            soa_authority(snap, w, zone);
            // Before the first sync an absent name may just not be listed yet: SERVFAIL, so
            // that nobody caches a false NXDOMAIN (CoreDNS does the same).
            let code = if snap.synced {
                rcode::NXDOMAIN
            } else {
                rcode::SERVFAIL
            };
            Outcome::Answered { rcode: code }
        }
    }
}

fn soa_authority(snap: &Snapshot, w: &mut Writer<'_>, _zone: &[u8]) {
    w.section(AUTHORITY);
    w.record(|w| soa_record(snap, w));
}

/// `<zone> SOA ns.dns.<zone> hostmaster.<zone> serial 7200 1800 86400 <ttl>`; the zone keeps
/// the query's case through a pointer into the question.
fn soa_record(snap: &Snapshot, w: &mut Writer<'_>) {
    w.zone_ptr();
    let at = w.rr_head(rtype::SOA, snap.ttl);
    w.bytes(b"\x02ns\x03dns");
    w.zone_ptr();
    w.bytes(b"\x0ahostmaster");
    w.zone_ptr();
    for v in [snap.serial, SOA_REFRESH, SOA_RETRY, SOA_EXPIRE, snap.ttl] {
        w.bytes(&v.to_be_bytes());
    }
    w.end_rdata(at);
}

fn wants(qtype: u16, t: u16) -> bool {
    qtype == t || qtype == rtype::ANY
}

fn cluster(snap: &Snapshot, qt: u16, rel: &Rel<'_>, w: &mut Writer<'_>) -> Res {
    let l = &rel.labels[..rel.n];
    match l {
        [] => apex(snap, qt, w),
        [v] if label_is(v, "dns-version") => {
            if !wants(qt, rtype::TXT) {
                return Res::NoData;
            }
            w.record(|w| {
                w.owner_qname();
                let at = w.rr_head(rtype::TXT, DNS_VERSION_TTL);
                w.bytes(b"\x051.1.0");
                w.end_rdata(at);
            });
            Res::Answer
        }
        [d] if label_is(d, "dns") => Res::NoData,
        [n, d] if label_is(n, "ns") && label_is(d, "dns") => {
            if write_addrs(snap, qt, w, snap.ns_addrs.iter().copied()) {
                Res::Answer
            } else {
                Res::NoData
            }
        }
        [s] if label_is(s, "svc") || label_is(s, "pod") => Res::NoData,
        [ns, s] if label_is(s, "svc") => {
            if snap.namespaces.contains_key(ns) {
                Res::NoData
            } else {
                Res::NxDomain
            }
        }
        [ns, p] if label_is(p, "pod") => match snap.pods_mode {
            PodsMode::Disabled => Res::NxDomain,
            _ if snap.namespaces.contains_key(ns) => Res::NoData,
            _ => Res::NxDomain,
        },
        [ip, ns, p] if label_is(p, "pod") => pod(snap, qt, ip, ns, w),
        [svc, ns, s] if label_is(s, "svc") => match service(snap, svc, ns) {
            Some(r) => service_name(snap, qt, r, w),
            None => Res::NxDomain,
        },
        [host, svc, ns, s] if label_is(s, "svc") => {
            let Some(r) = service(snap, svc, ns) else {
                return Res::NxDomain;
            };
            // An ExternalName has no endpoints and no port or protocol names under it: CoreDNS
            // skips it for any name below the service's ("External services do not have
            // endpoints, nor can we accept port/protocol pseudo subdomains in an SRV query").
            if matches!(r.kind, RecordsKind::External { .. }) {
                return Res::NxDomain;
            }
            if host.get(1) == Some(&b'_') {
                // `_tcp.<svc>...`: an empty non-terminal above its SRV names.
                let proto = &host[2..];
                let has = ports_of(r)
                    .any(|p| !p.name.is_empty() && p.protocol.label().as_bytes() == proto);
                return if has { Res::NoData } else { Res::NxDomain };
            }
            let found = r.endpoints.matching(host);
            if found.clone().next().is_none() {
                return Res::NxDomain;
            }
            let ips = found.map(|i| r.endpoints.ip(i));
            if write_addrs(snap, qt, w, ips) {
                Res::Answer
            } else {
                Res::NoData
            }
        }
        [port, proto, svc, ns, s] if label_is(s, "svc") => {
            let Some(r) = service(snap, svc, ns) else {
                return Res::NxDomain;
            };
            if matches!(r.kind, RecordsKind::External { .. }) {
                return Res::NxDomain;
            }
            let port = strip_underscore(port);
            let proto = strip_underscore(proto);
            let matches = |p: &crate::cluster::objects::Port| {
                !p.name.is_empty()
                    && p.name.as_bytes() == port
                    && p.protocol.label().as_bytes() == proto
            };
            if !ports_of(r).any(matches) {
                return Res::NxDomain;
            }
            if matches!(r.kind, RecordsKind::Headless) && r.endpoints.is_empty() {
                return Res::NxDomain;
            }
            if !wants(qt, rtype::SRV) {
                return Res::NoData;
            }
            srv(snap, r, w, &matches);
            Res::Answer
        }
        _ => Res::NxDomain,
    }
}

fn strip_underscore(l: &[u8]) -> &[u8] {
    let b = &l[1..];
    b.strip_prefix(b"_").unwrap_or(b)
}

fn service<'s>(snap: &'s Snapshot, svc: &[u8], ns: &[u8]) -> Option<&'s ServiceRecords> {
    let mut key = [0u8; 128];
    let n = svc.len() + ns.len();
    if n > key.len() {
        return None;
    }
    key[..svc.len()].copy_from_slice(svc);
    key[svc.len()..n].copy_from_slice(ns);
    snap.services.get(&key[..n]).map(|a| &**a)
}

/// Ports that SRV records are made of: the service's own for ClusterIP and ExternalName
/// services, the EndpointSlices' for headless ones.
fn ports_of(r: &ServiceRecords) -> Box<dyn Iterator<Item = &crate::cluster::objects::Port> + '_> {
    match &r.kind {
        RecordsKind::ClusterIp { ports, .. } | RecordsKind::External { ports, .. } => {
            Box::new(ports.iter())
        }
        RecordsKind::Headless => Box::new(r.endpoints.port_sets().flat_map(|s| s.iter())),
    }
}

fn apex(snap: &Snapshot, qt: u16, w: &mut Writer<'_>) -> Res {
    let mut any = false;
    if wants(qt, rtype::SOA) {
        any |= w.record(|w| soa_record(snap, w));
    }
    if wants(qt, rtype::NS) {
        let mut target = 0;
        any |= w.record(|w| {
            w.zone_ptr();
            let at = w.rr_head(rtype::NS, snap.ttl);
            target = w.pos();
            w.bytes(b"\x02ns\x03dns");
            w.zone_ptr();
            w.end_rdata(at);
        });
        if qt == rtype::NS {
            w.section(ADDITIONAL);
            for ip in snap.ns_addrs.iter() {
                w.record(|w| {
                    w.name_at(target);
                    addr_record(w, snap.ttl, *ip);
                });
            }
        }
    }
    if any { Res::Answer } else { Res::NoData }
}

/// An SRV record's type, TTL, priority 0, `weight` and `port`, after its owner; the target
/// follows. Returns where the RDATA starts (for `end_rdata`).
fn srv_head(w: &mut Writer<'_>, ttl: u32, weight: u16, port: u16) -> usize {
    let at = w.rr_head(rtype::SRV, ttl);
    w.bytes(&[0, 0]);
    w.bytes(&weight.to_be_bytes());
    w.bytes(&port.to_be_bytes());
    at
}

fn addr_record(w: &mut Writer<'_>, ttl: u32, ip: IpAddr) {
    match ip {
        IpAddr::V4(a) => w.a(ttl, a),
        IpAddr::V6(a) => w.aaaa(ttl, a),
    }
}

/// A/AAAA records owned by the question name, rotated when `loadbalance` is on. Returns
/// whether any record of the asked type exists.
fn write_addrs(
    snap: &Snapshot,
    qt: u16,
    w: &mut Writer<'_>,
    ips: impl Iterator<Item = IpAddr> + Clone,
) -> bool {
    let want4 = wants(qt, rtype::A);
    let want6 = wants(qt, rtype::AAAA);
    let mut any = false;
    if want4 {
        any |= write_rotated(snap, w, ips.clone().filter(IpAddr::is_ipv4));
    }
    if want6 {
        any |= write_rotated(snap, w, ips.filter(IpAddr::is_ipv6));
    }
    any
}

/// Records for `ips` (all of one family) owned by the question name, starting at the rotation
/// point when `loadbalance` is on. Returns whether there were any.
fn write_rotated(
    snap: &Snapshot,
    w: &mut Writer<'_>,
    ips: impl Iterator<Item = IpAddr> + Clone,
) -> bool {
    let n = ips.clone().count();
    let start = rotation(n, snap.loadbalance);
    for ip in ips.clone().skip(start).chain(ips.take(start)) {
        w.record(|w| {
            w.owner_qname();
            addr_record(w, snap.ttl, ip);
        });
    }
    n > 0
}

fn service_name(snap: &Snapshot, qt: u16, r: &ServiceRecords, w: &mut Writer<'_>) -> Res {
    match &r.kind {
        RecordsKind::External { target, .. } => {
            // RFC 1034 §3.6.2: a CNAME answers every type at its owner. The target is not
            // chased here; the server may chase it through the cluster zone or a resolver.
            let mut target_at = 0;
            w.record(|w| {
                w.owner_qname();
                let at = w.rr_head(rtype::CNAME, snap.ttl);
                target_at = w.pos();
                w.bytes(target);
                w.end_rdata(at);
            });
            if qt == rtype::CNAME {
                return Res::Answer;
            }
            Res::Cname(target_at)
        }
        RecordsKind::ClusterIp { ips, .. } => {
            if qt == rtype::SRV {
                srv(snap, r, w, &|_| true);
                return if ports_of(r).next().is_some() {
                    Res::Answer
                } else {
                    Res::NoData
                };
            }
            write_addrs(snap, qt, w, ips.iter());
            if w.count(ANSWER) > 0 {
                Res::Answer
            } else {
                Res::NoData
            }
        }
        RecordsKind::Headless => {
            // A headless service with no endpoints has no records at all: the name does not
            // exist (CoreDNS answers NXDOMAIN too).
            if r.endpoints.is_empty() {
                return Res::NxDomain;
            }
            if qt == rtype::SRV {
                srv(snap, r, w, &|_| true);
                return if w.count(ANSWER) > 0 {
                    Res::Answer
                } else {
                    Res::NoData
                };
            }
            write_addrs(snap, qt, w, r.endpoints.ips());
            if w.count(ANSWER) > 0 {
                Res::Answer
            } else {
                Res::NoData
            }
        }
    }
}

/// SRV records for the ports `matches` selects, with the targets' addresses in the additional
/// section. Weights as CoreDNS computes them: 100 divided by the number of (address, port)
/// pairs, at least 1; identical records are written once.
fn srv(
    snap: &Snapshot,
    r: &ServiceRecords,
    w: &mut Writer<'_>,
    matches: &dyn Fn(&crate::cluster::objects::Port) -> bool,
) {
    let ttl = snap.ttl;
    match &r.kind {
        RecordsKind::ClusterIp { ips, ports } => {
            let nips = ips.len().max(1);
            let sel: usize = ports.iter().filter(|p| matches(p)).count();
            if sel == 0 {
                return;
            }
            let weight = (100 / (nips * sel)).max(1) as u16;
            let mut svc_at: Option<usize> = None;
            let mut written: [u16; 64] = [0; 64];
            let mut nw = 0;
            for p in ports.iter().filter(|p| matches(p)) {
                if written[..nw].contains(&p.port) {
                    continue;
                }
                if nw < written.len() {
                    written[nw] = p.port;
                    nw += 1;
                }
                w.record(|w| {
                    w.owner_qname();
                    let at = srv_head(w, ttl, weight, p.port);
                    // RFC 2782: the target is never compressed (Go's resolver rejects it).
                    if svc_at.is_none() {
                        svc_at = Some(w.pos());
                    }
                    w.name_in_zone_uncompressed(&r.labels);
                    w.end_rdata(at);
                });
            }
            if let Some(o) = svc_at {
                w.section(ADDITIONAL);
                for ip in ips.iter() {
                    w.record(|w| {
                        w.name_at(o);
                        addr_record(w, ttl, ip);
                    });
                }
            }
        }
        RecordsKind::Headless => {
            let eps = &r.endpoints;
            let n = eps.len();
            let pairs: usize = (0..n)
                .filter(|&i| fits(eps.name(i).label().as_bytes(), r, snap))
                .map(|i| eps.port_set(i).iter().filter(|p| matches(p)).count())
                .sum();
            if pairs == 0 {
                return;
            }
            let weight = (100 / pairs).max(1) as u16;
            // Endpoints are sorted by name, so the endpoints of one name are adjacent: each is
            // known by the first of its run. Linear in the endpoints: a service of thousands
            // must not make one query cost millions of comparisons.
            let mut first = vec![0u32; n];
            for i in 1..n {
                first[i] = if eps.same_name(i, i - 1) {
                    first[i - 1]
                } else {
                    i as u32
                };
            }
            // Where each name's target was written (0: not yet), and the names in order, for
            // the additional section.
            let mut target_at = vec![0u32; n];
            let mut targets: Vec<usize> = Vec::new();
            let mut seen_ports: Vec<(u16, crate::cluster::objects::Protocol)> = Vec::new();
            for i in 0..n {
                for p in eps.port_set(i).iter().filter(|p| matches(p)) {
                    if !seen_ports.contains(&(p.port, p.protocol)) {
                        seen_ports.push((p.port, p.protocol));
                    }
                }
            }
            'ports: for (port, proto) in seen_ports {
                let mut prev: Option<usize> = None;
                for i in 0..n {
                    if w.truncated() {
                        break 'ports;
                    }
                    let has = eps
                        .port_set(i)
                        .iter()
                        .any(|p| p.port == port && p.protocol == proto && matches(p));
                    // One record per (name, port): equal names are adjacent.
                    if !has || prev.is_some_and(|j| first[j] == first[i]) {
                        continue;
                    }
                    prev = Some(i);
                    let host = eps.name(i).label();
                    if !fits(host.as_bytes(), r, snap) {
                        continue;
                    }
                    let mut at_target = 0;
                    let kept = w.record(|w| {
                        w.owner_qname();
                        let at = srv_head(w, ttl, weight, port);
                        // RFC 2782: the target is written in full, never compressed;
                        // the additional section's owners may point at it.
                        at_target = w.pos();
                        w.bytes(host.as_bytes());
                        w.name_in_zone_uncompressed(&r.labels);
                        w.end_rdata(at);
                    });
                    let g = first[i] as usize;
                    if kept && target_at[g] == 0 {
                        target_at[g] = at_target as u32;
                        targets.push(g);
                    }
                }
            }
            w.section(ADDITIONAL);
            'additional: for g in targets {
                for j in (g..n).take_while(|&j| first[j] as usize == g) {
                    if !w.record(|w| {
                        w.name_at(target_at[g] as usize);
                        addr_record(w, ttl, eps.ip(j));
                    }) {
                        // Full: nothing later fits either (records are written whole or not).
                        break 'additional;
                    }
                }
            }
        }
        RecordsKind::External { target, ports } => {
            let sel = ports.iter().filter(|p| matches(p)).count();
            if sel == 0 {
                return;
            }
            let weight = (100 / sel).max(1) as u16;
            for p in ports.iter().filter(|p| matches(p)) {
                w.record(|w| {
                    w.owner_qname();
                    let at = srv_head(w, ttl, weight, p.port);
                    w.bytes(target);
                    w.end_rdata(at);
                });
            }
        }
    }
}

fn pod(snap: &Snapshot, qt: u16, ip_label: &[u8], ns: &[u8], w: &mut Writer<'_>) -> Res {
    let Some(ip) = undash_ip(&ip_label[1..]) else {
        return Res::NxDomain;
    };
    let exists = match snap.pods_mode {
        PodsMode::Disabled => false,
        PodsMode::Insecure => snap.namespaces.contains_key(ns),
        PodsMode::Verified => snap.pods.contains(ns, &ip),
    };
    if !exists {
        return Res::NxDomain;
    }
    if write_addrs(snap, qt, w, std::iter::once(ip)) {
        Res::Answer
    } else {
        Res::NoData
    }
}

fn reverse(snap: &Snapshot, q: &Query<'_>, w: &mut Writer<'_>) -> Res {
    let qname = q.qname_lower();
    if snap.reverse_zones.iter().any(|z| &**z == qname) {
        return apex(snap, q.qtype, w);
    }
    let Some(ip) = crate::wire::reverse_ip(qname) else {
        return Res::NxDomain;
    };
    // The services holding the address, by name (almost always one; a few at most).
    let mut few: [Option<&ServiceRecords>; 8] = [None; 8];
    let mut more: Vec<&ServiceRecords> = Vec::new();
    let mut n = 0;
    for s in snap.reverse.services(ip) {
        if n < few.len() {
            few[n] = Some(s);
        } else {
            more.push(s);
        }
        n += 1;
    }
    if n == 0 {
        return Res::NxDomain;
    }
    if !wants(q.qtype, rtype::PTR) {
        return Res::NoData;
    }
    if n > few.len() {
        let mut all: Vec<&ServiceRecords> = few.iter().flatten().copied().chain(more).collect();
        all.sort_by(|a, b| a.labels.cmp(&b.labels));
        return ptr_answer(snap, w, ip, all.iter().copied());
    }
    let list = &mut few[..n];
    if n > 1 {
        list.sort_by(|a, b| a.map(|s| &s.labels).cmp(&b.map(|s| &s.labels)));
    }
    ptr_answer(snap, w, ip, list.iter().flatten().copied())
}

/// PTR records for `ip` from the services holding it, ordered by name.
fn ptr_answer<'a>(
    snap: &Snapshot,
    w: &mut Writer<'_>,
    ip: IpAddr,
    services: impl Iterator<Item = &'a ServiceRecords> + Clone,
) -> Res {
    let ptr = |w: &mut Writer<'_>, host: Option<&[u8]>, svc: &ServiceRecords| {
        if !fits(host.unwrap_or_default(), svc, snap) {
            return;
        }
        w.record(|w| {
            w.owner_qname();
            let at = w.rr_head(rtype::PTR, snap.ttl);
            if let Some(h) = host {
                w.bytes(h);
            }
            w.bytes(&svc.labels);
            w.bytes(&snap.zone);
            w.end_rdata(at);
        });
    };
    // A ClusterIP answers with its service alone (the first by name); otherwise every endpoint
    // with that address, by service name, then in the service's order.
    if let Some(s) = services.clone().find(|s| s.has_cluster_ip(&ip)) {
        ptr(w, None, s);
    } else {
        for s in services {
            for i in s.endpoints.with_ip(ip) {
                ptr(w, Some(s.endpoints.name(i).label().as_bytes()), s);
            }
        }
    }
    // The address is in the cluster; only names too long to write can leave nothing.
    if w.count(ANSWER) > 0 || w.truncated() {
        Res::Answer
    } else {
        Res::NoData
    }
}

/// Does `<host>.<svc>.<ns>.svc.<zone>` (`host` a wire label, or empty for the service's own
/// name) fit the 255 bytes of a wire name (RFC 1035 §3.1)? Kubernetes names are up to 63
/// bytes per label, so under a long cluster zone an endpoint's name can be longer: such a name
/// cannot be asked for, and a record pointing to it (an SRV target, a PTR) is left out rather
/// than written as a name no resolver can read.
#[inline]
fn fits(host: &[u8], svc: &ServiceRecords, snap: &Snapshot) -> bool {
    host.len() + svc.labels.len() + snap.zone.len() <= crate::wire::MAX_NAME
}
