//! The immutable zone snapshot behind `arc-swap`: everything a query needs, in maps keyed by
//! the wire form of name parts, so a lookup is a slice of the lowercased question name — no
//! allocation, no lock, no walk over object lists.
//!
//! The maps are persistent (`imbl`, hash array mapped tries): publishing a new snapshot after
//! one object changed clones the maps in O(1) and rewrites O(log n) nodes, so the cost of a
//! change does not grow with the size of the cluster, and readers of the previous snapshot are
//! never disturbed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use crate::cluster::objects::Port;
use crate::config::PodsMode;

/// A map keyed by wire-form name parts.
pub type NameMap<V> = imbl::HashMap<Box<[u8]>, V>;

/// Everything needed to answer for the cluster zone and its reverse zones.
#[derive(Clone)]
pub struct Snapshot {
    /// The cluster zone in wire form, lowercase (e.g. `\x07cluster\x05local\x00`).
    pub zone: Box<[u8]>,
    /// Reverse zones served (wire, lowercase), e.g. `in-addr.arpa`.
    pub reverse_zones: Arc<[Box<[u8]>]>,
    /// Zones whose unknown names fall through to forwarding.
    pub fallthrough: Arc<[Box<[u8]>]>,
    /// SOA serial: changes with every published snapshot.
    pub serial: u32,
    /// Every source has completed its first full list.
    pub synced: bool,
    pub ttl: u32,
    pub pods_mode: PodsMode,
    pub loadbalance: bool,
    /// Services keyed by `\x<n>name\x<m>namespace` (the two labels as they sit in a query).
    pub services: NameMap<Arc<ServiceRecords>>,
    /// Namespaces that exist (and are exposed), keyed by their wire label; the value counts
    /// why (a Namespace object and/or services in it).
    pub namespaces: NameMap<u32>,
    /// PTR targets by IP: service ClusterIPs first, then endpoint addresses.
    pub reverse: imbl::HashMap<IpAddr, Arc<[PtrTarget]>>,
    /// Pods by `namespace label + 16-byte IP`, for verified pod records.
    pub pods: NameMap<u32>,
    /// Addresses of `ns.dns.<zone>`.
    pub ns_addrs: Arc<[IpAddr]>,
}

/// What a PTR answer points at: a service's name, or one of its endpoints' names.
#[derive(Debug, Clone)]
pub struct PtrTarget {
    pub service: Arc<ServiceRecords>,
    /// Index into the service's endpoints; None for the service name itself.
    pub endpoint: Option<u32>,
}

impl PartialEq for PtrTarget {
    fn eq(&self, o: &Self) -> bool {
        Arc::ptr_eq(&self.service, &o.service) && self.endpoint == o.endpoint
    }
}

/// The records of one service, in the compact form answers are written from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRecords {
    /// `\x<n>name\x<m>ns\x03svc`: the service's name without the zone, for SRV targets and PTRs.
    pub labels: Box<[u8]>,
    pub kind: RecordsKind,
    /// Ready endpoints (and not-ready ones with `publishNotReadyAddresses`), for every kind of
    /// service: headless services answer with them; every service's endpoints have names
    /// (`<host>.<svc>.<ns>.svc`) and PTR records, as CoreDNS serves them.
    pub endpoints: Headless,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordsKind {
    /// A ClusterIP service: A/AAAA of its IPs; SRV per named port targeting the service name.
    ClusterIp { v4: Box<[Ipv4Addr]>, v6: Box<[Ipv6Addr]>, ports: Box<[Port]> },
    /// A headless service: A/AAAA per endpoint; SRV per endpoint and port.
    Headless,
    /// An ExternalName service: a CNAME to `target` (absolute wire name, lowercase).
    External { target: Box<[u8]>, ports: Box<[Port]> },
}

/// Endpoints of a headless service, sorted by hostname label then address.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Headless {
    pub endpoints: Box<[Endpoint]>,
    /// Port sets of the EndpointSlices; each endpoint names one by index.
    pub port_sets: Box<[Box<[Port]>]>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The endpoint's name as one wire label: its hostname, its pod name (with
    /// `endpoint_pod_names`), or its address with `-` for `.`/`:` (CoreDNS's spelling).
    pub host: Box<[u8]>,
    pub ip: IpAddr,
    pub port_set: u16,
}

impl Headless {
    pub fn v4(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.endpoints.iter().filter_map(|e| match e.ip {
            IpAddr::V4(a) => Some(a),
            _ => None,
        })
    }
    pub fn v6(&self) -> impl Iterator<Item = Ipv6Addr> + '_ {
        self.endpoints.iter().filter_map(|e| match e.ip {
            IpAddr::V6(a) => Some(a),
            _ => None,
        })
    }
    /// The endpoints whose name label (lowercase wire label incl. length byte) is `label`.
    pub fn by_host<'a>(&'a self, label: &'a [u8]) -> impl Iterator<Item = &'a Endpoint> + Clone + 'a {
        self.endpoints.iter().filter(move |e| &*e.host == label)
    }
}

impl Snapshot {
    /// An empty snapshot for `zone`, not yet synced.
    pub fn empty(cfg: &crate::config::ClusterConfig) -> Self {
        let wire = |z: &str| -> Box<[u8]> {
            let mut v = Vec::new();
            crate::wire::encode_name(&z.to_ascii_lowercase(), &mut v).expect("validated zone");
            v.into_boxed_slice()
        };
        Snapshot {
            zone: wire(&cfg.zone),
            reverse_zones: cfg.reverse_zones.iter().map(|z| wire(z)).collect(),
            fallthrough: cfg.fallthrough.iter().map(|z| wire(z)).collect(),
            serial: 0,
            synced: false,
            ttl: cfg.ttl,
            pods_mode: cfg.pods,
            loadbalance: cfg.loadbalance,
            services: Default::default(),
            namespaces: Default::default(),
            reverse: Default::default(),
            pods: Default::default(),
            ns_addrs: Arc::from(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]),
        }
    }

    /// Counts for `check`, logs and metrics: (services, endpoints, records).
    pub fn counts(&self) -> SnapshotCounts {
        let mut c = SnapshotCounts { services: self.services.len(), ..Default::default() };
        for s in self.services.values() {
            let h = &s.endpoints;
            c.endpoints += h.endpoints.len();
            // every endpoint has an A/AAAA record on its own name
            c.records += h.endpoints.len();
            match &s.kind {
                RecordsKind::ClusterIp { v4, v6, ports } => {
                    c.records += v4.len() + v6.len() + ports.iter().filter(|p| !p.name.is_empty()).count();
                }
                RecordsKind::Headless => {
                    // A/AAAA on the service name, SRV per endpoint and named port
                    c.records += h.endpoints.len();
                    for e in h.endpoints.iter() {
                        c.records += h.port_sets[e.port_set as usize].iter().filter(|p| !p.name.is_empty()).count();
                    }
                }
                RecordsKind::External { .. } => c.records += 1,
            }
        }
        c.records += self.reverse.len();
        c.pods = self.pods.len();
        c.namespaces = self.namespaces.len();
        c
    }
}

/// What a snapshot holds, in numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SnapshotCounts {
    pub services: usize,
    pub endpoints: usize,
    pub pods: usize,
    pub namespaces: usize,
    pub records: usize,
}

/// The dashed name CoreDNS gives an endpoint without a hostname: `10-0-0-1`, or for IPv6 the
/// address as written with `:` replaced (`5678-abcd--1`), a trailing `-` completed with `0`.
pub fn dashed_ip(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => a.to_string().replace('.', "-"),
        IpAddr::V6(a) => {
            let s = a.to_string().replace(':', "-");
            if s.ends_with('-') { format!("{s}0") } else { s }
        }
    }
}

/// Parse a dashed pod/endpoint label back into an IP (`10-244-1-5`, `fd00--1`).
pub fn undash_ip(label: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(label).ok()?;
    if s.contains(':') || s.contains('.') {
        return None;
    }
    let v4 = s.replace('-', ".");
    if let Ok(a) = v4.parse::<Ipv4Addr>() {
        // Require the canonical spelling: exactly four dashed decimal parts.
        if s.split('-').count() == 4 {
            return Some(IpAddr::V4(a));
        }
    }
    let v6 = s.replace('-', ":");
    v6.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}
