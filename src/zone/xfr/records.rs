//! The records of a transferred zone, generated from a snapshot: the same records the answer
//! path ([`crate::zone::answer`]) writes for each name and type (the tests hold the two
//! together), as plain values that can be compared, diffed and written into messages.

use std::net::IpAddr;
use std::sync::Arc;

use crate::cluster::objects::Port;
use crate::config::PodsMode;
use crate::wire::{in_domain, reverse_name, rtype};
use crate::zone::answer::{DNS_VERSION_TTL, SOA_EXPIRE, SOA_REFRESH, SOA_RETRY};
use crate::zone::snapshot::{RecordsKind, ServiceRecords, Snapshot};

/// One record of a transferred zone (class IN), names in full, lowercase.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rr {
    /// The owner's labels below the zone apex (wire labels without the zone; empty: the apex).
    pub owner: Box<[u8]>,
    pub rtype: u16,
    pub ttl: u32,
    /// The RDATA, every name in it written out in full.
    pub rdata: Box<[u8]>,
}

impl Rr {
    fn new(owner: &[u8], rtype: u16, ttl: u32, rdata: Vec<u8>) -> Rr {
        Rr {
            owner: owner.into(),
            rtype,
            ttl,
            rdata: rdata.into_boxed_slice(),
        }
    }

    /// What the record costs to keep (for the journal's byte bound).
    pub fn size(&self) -> usize {
        self.owner.len() + self.rdata.len() + 10 + std::mem::size_of::<Rr>()
    }
}

/// Whether a zone offered for transfer is the cluster zone or a reverse zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneKind {
    Cluster,
    Reverse,
}

/// A zone offered for transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferZone {
    /// The apex in wire form, lowercase.
    pub apex: Box<[u8]>,
    pub kind: ZoneKind,
}

impl TransferZone {
    /// The zone with apex `apex` (wire, lowercase) as it stands in `snap`: the cluster zone,
    /// one of its reverse zones, or None (not served).
    pub fn of(snap: &Snapshot, apex: &[u8]) -> Option<TransferZone> {
        let kind = if *apex == *snap.zone {
            ZoneKind::Cluster
        } else if snap.reverse_zones.iter().any(|z| **z == *apex) {
            ZoneKind::Reverse
        } else {
            return None;
        };
        Some(TransferZone {
            apex: apex.into(),
            kind,
        })
    }

    /// Whether the reverse name `name` (wire, lowercase) is in this zone; its labels below the
    /// apex if so.
    fn relative<'a>(&self, name: &'a [u8]) -> Option<&'a [u8]> {
        in_domain(name, &self.apex).then(|| &name[..name.len() - self.apex.len()])
    }
}

/// `ns.dns.<apex>`, the name server of every zone clusterdns serves (as the answer path
/// writes it).
fn ns_name(apex: &[u8]) -> Vec<u8> {
    let mut n = b"\x02ns\x03dns".to_vec();
    n.extend_from_slice(apex);
    n
}

/// The zone's SOA at `serial`: `<apex> SOA ns.dns.<apex> hostmaster.<apex> serial 7200 1800
/// 86400 <ttl>`, as the answer path writes it.
pub fn soa(snap: &Snapshot, zone: &TransferZone, serial: u32) -> Rr {
    let mut d = ns_name(&zone.apex);
    d.extend_from_slice(b"\x0ahostmaster");
    d.extend_from_slice(&zone.apex);
    for v in [serial, SOA_REFRESH, SOA_RETRY, SOA_EXPIRE, snap.ttl] {
        d.extend_from_slice(&v.to_be_bytes());
    }
    Rr::new(&[], rtype::SOA, snap.ttl, d)
}

/// The records at and near the apex: NS, and in the cluster zone the addresses of
/// `ns.dns.<zone>` and the `dns-version` TXT record.
pub fn apex(snap: &Snapshot, zone: &TransferZone, out: &mut Vec<Rr>) {
    out.push(Rr::new(&[], rtype::NS, snap.ttl, ns_name(&zone.apex)));
    if zone.kind == ZoneKind::Cluster {
        ns_addresses(snap, out);
        out.push(Rr::new(
            b"\x0bdns-version",
            rtype::TXT,
            DNS_VERSION_TTL,
            b"\x051.1.0".to_vec(),
        ));
    }
}

/// A/AAAA of `ns.dns.<zone>`.
pub fn ns_addresses(snap: &Snapshot, out: &mut Vec<Rr>) {
    for ip in snap.ns_addrs.iter() {
        out.push(addr(b"\x02ns\x03dns", snap.ttl, *ip));
    }
}

fn addr(owner: &[u8], ttl: u32, ip: IpAddr) -> Rr {
    match ip {
        IpAddr::V4(a) => Rr::new(owner, rtype::A, ttl, a.octets().to_vec()),
        IpAddr::V6(a) => Rr::new(owner, rtype::AAAA, ttl, a.octets().to_vec()),
    }
}

fn srv_rdata(weight: u16, port: u16, target: &[&[u8]]) -> Vec<u8> {
    let mut d = vec![0, 0];
    d.extend_from_slice(&weight.to_be_bytes());
    d.extend_from_slice(&port.to_be_bytes());
    for part in target {
        d.extend_from_slice(part);
    }
    d
}

/// `_<name>._<proto>` as one owner prefix (two wire labels).
fn port_owner(p: &Port) -> Vec<u8> {
    let mut o = Vec::with_capacity(p.name.len() + 8);
    o.push(p.name.len() as u8 + 1);
    o.push(b'_');
    o.extend_from_slice(p.name.as_bytes());
    let proto = p.protocol.label();
    o.push(proto.len() as u8 + 1);
    o.push(b'_');
    o.extend_from_slice(proto.as_bytes());
    o
}

/// The cluster-zone records of one service (owners below the zone apex), sorted, each once.
pub fn service(snap: &Snapshot, r: &ServiceRecords, out: &mut Vec<Rr>) {
    let start = out.len();
    let ttl = snap.ttl;
    let zone = &snap.zone[..];
    let own = &r.labels[..];
    let with = |prefix: &[u8]| -> Vec<u8> { [prefix, own].concat() };
    match &r.kind {
        RecordsKind::ClusterIp { ips, ports } => {
            for ip in ips.iter() {
                out.push(addr(own, ttl, ip));
            }
            // The service name's SRV: every port, 100 / (addresses × ports) each, one record
            // per port number.
            let nips = ips.len().max(1);
            if !ports.is_empty() {
                let w = (100 / (nips * ports.len())).max(1) as u16;
                for p in ports.iter() {
                    out.push(Rr::new(
                        own,
                        rtype::SRV,
                        ttl,
                        srv_rdata(w, p.port, &[own, zone]),
                    ));
                }
            }
            // `_<name>._<proto>` per named port: the ports with that name and protocol.
            for p in ports.iter().filter(|p| !p.name.is_empty()) {
                let sel = ports
                    .iter()
                    .filter(|q| q.name == p.name && q.protocol == p.protocol)
                    .count();
                let w = (100 / (nips * sel)).max(1) as u16;
                out.push(Rr::new(
                    &with(&port_owner(p)),
                    rtype::SRV,
                    ttl,
                    srv_rdata(w, p.port, &[own, zone]),
                ));
            }
            endpoint_names(snap, r, out);
        }
        RecordsKind::Headless => {
            let eps = &r.endpoints;
            if !eps.is_empty() {
                for ip in eps.ips() {
                    out.push(addr(own, ttl, ip));
                }
                headless_srv(snap, r, own, &|_| true, out);
                // Per named port of any port set.
                let mut named: Vec<&Port> = eps
                    .port_sets()
                    .flat_map(|s| s.iter())
                    .filter(|p| !p.name.is_empty())
                    .collect();
                named.sort_by(|a, b| (&a.name, a.protocol).cmp(&(&b.name, b.protocol)));
                named.dedup_by(|a, b| a.name == b.name && a.protocol == b.protocol);
                for p in named {
                    let (name, proto) = (p.name.clone(), p.protocol);
                    headless_srv(
                        snap,
                        r,
                        &with(&port_owner(p)),
                        &|q| q.name == name && q.protocol == proto,
                        out,
                    );
                }
            }
            endpoint_names(snap, r, out);
        }
        // The CNAME alone: no port or protocol names under an ExternalName (the answer path
        // gives NXDOMAIN for them, as CoreDNS does).
        RecordsKind::External { target, .. } => {
            out.push(Rr::new(own, rtype::CNAME, ttl, target.to_vec()));
        }
    }
    let mine = &mut out[start..];
    mine.sort_unstable();
    let n = dedup_sorted(mine);
    out.truncate(start + n);
}

/// Move the distinct items of a sorted slice to its front; how many there are.
fn dedup_sorted<T: PartialEq>(v: &mut [T]) -> usize {
    if v.is_empty() {
        return 0;
    }
    let mut w = 1;
    for r in 1..v.len() {
        if v[r] != v[w - 1] {
            v.swap(w, r);
            w += 1;
        }
    }
    w
}

/// SRV records of a headless service at `owner` for the ports `matches` selects: one per
/// endpoint name and port, weight 100 / (endpoint, port) pairs (as the answer path).
fn headless_srv(
    snap: &Snapshot,
    r: &ServiceRecords,
    owner: &[u8],
    matches: &dyn Fn(&Port) -> bool,
    out: &mut Vec<Rr>,
) {
    let eps = &r.endpoints;
    let pairs: usize = (0..eps.len())
        .map(|i| eps.port_set(i).iter().filter(|p| matches(p)).count())
        .sum();
    if pairs == 0 {
        return;
    }
    let w = (100 / pairs).max(1) as u16;
    for i in 0..eps.len() {
        let name = eps.name(i).label();
        for p in eps.port_set(i).iter().filter(|p| matches(p)) {
            out.push(Rr::new(
                owner,
                rtype::SRV,
                snap.ttl,
                srv_rdata(w, p.port, &[name.as_bytes(), &r.labels, &snap.zone]),
            ));
        }
    }
}

/// `<endpoint name>.<svc>.<ns>.svc` A/AAAA for every endpoint (not of an ExternalName).
fn endpoint_names(snap: &Snapshot, r: &ServiceRecords, out: &mut Vec<Rr>) {
    let eps = &r.endpoints;
    for i in 0..eps.len() {
        let label = eps.name(i).label();
        // A first label starting with `_` is read as a port or protocol by the answer path.
        if label.as_bytes().get(1) == Some(&b'_') {
            continue;
        }
        let owner = [label.as_bytes(), &r.labels[..]].concat();
        out.push(addr(&owner, snap.ttl, eps.ip(i)));
    }
}

/// `<a-b-c-d>.<ns>.pod` A/AAAA of a pod, in `pods: verified` mode only.
pub fn pod(snap: &Snapshot, ns_label: &[u8], ip: IpAddr, out: &mut Vec<Rr>) {
    if snap.pods_mode != PodsMode::Verified {
        return;
    }
    let label = crate::zone::snapshot::dashed_label(&ip);
    let owner = [label.as_bytes(), ns_label, b"\x03pod"].concat();
    out.push(addr(&owner, snap.ttl, ip));
}

/// The PTR records of `ip` in `zone` (nothing when its reverse name is outside it), as the
/// answer path writes them: a ClusterIP names its service alone (the first by name); any
/// other address every endpoint that has it, by service name, then in the service's order.
pub fn ptr(snap: &Snapshot, zone: &TransferZone, ip: IpAddr, out: &mut Vec<Rr>) {
    let name = reverse_name(ip);
    let Some(owner) = zone.relative(&name) else {
        return;
    };
    let mut services: Vec<&Arc<ServiceRecords>> = snap.reverse.services(ip).collect();
    services.sort_by(|a, b| a.labels.cmp(&b.labels));
    let target = |host: Option<&[u8]>, s: &ServiceRecords| -> Vec<u8> {
        [host.unwrap_or(&[]), &s.labels[..], &snap.zone[..]].concat()
    };
    let start = out.len();
    if let Some(s) = services.iter().find(|s| s.has_cluster_ip(&ip)) {
        out.push(Rr::new(owner, rtype::PTR, snap.ttl, target(None, s)));
    } else {
        for s in &services {
            for i in s.endpoints.with_ip(ip) {
                let label = s.endpoints.name(i).label();
                out.push(Rr::new(
                    owner,
                    rtype::PTR,
                    snap.ttl,
                    target(Some(label.as_bytes()), s),
                ));
            }
        }
    }
    let mine = &mut out[start..];
    mine.sort_unstable();
    let n = dedup_sorted(mine);
    out.truncate(start + n);
}

/// Every record of `zone` in `snap` except the SOA, in batches: `f` is called with a few
/// records at a time (a service's, an address's), so a large zone is never held whole.
pub fn each_batch(snap: &Snapshot, zone: &TransferZone, f: &mut dyn FnMut(&mut Vec<Rr>)) {
    let mut batch = Vec::new();
    apex(snap, zone, &mut batch);
    f(&mut batch);
    match zone.kind {
        ZoneKind::Cluster => {
            for s in snap.services.values() {
                batch.clear();
                service(snap, s, &mut batch);
                f(&mut batch);
            }
            if snap.pods_mode == PodsMode::Verified {
                batch.clear();
                snap.pods.for_each(&mut |ns, ip| {
                    pod(snap, ns, ip, &mut batch);
                    if batch.len() >= 256 {
                        f(&mut batch);
                        batch.clear();
                    }
                });
                f(&mut batch);
            }
        }
        ZoneKind::Reverse => {
            batch.clear();
            for ip in snap.reverse.addresses() {
                ptr(snap, zone, ip, &mut batch);
                if batch.len() >= 256 {
                    f(&mut batch);
                    batch.clear();
                }
            }
            f(&mut batch);
        }
    }
}
