//! The immutable zone snapshot behind `arc-swap`: everything a query needs, in maps keyed by
//! the wire form of name parts, so a lookup is a slice of the lowercased question name — no
//! allocation, no lock, no walk over object lists.
//!
//! The maps are persistent ([`super::pmap`], hash tries with wide leaves): publishing a new
//! snapshot after one object changed clones the maps in O(1) and copies one path of the trie,
//! so the cost of a change does not grow with the size of the cluster, and readers of the
//! previous snapshot are never disturbed.
//!
//! Memory is what a large cluster costs, so the records are compact: an endpoint without a
//! hostname is its address alone (its name, the dashed address, is written from it), the
//! reverse map holds one address and one service pointer per entry, and a pod is 8 bytes.

use std::cmp::Ordering;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use super::pmap::{Item, PMap, hash_bytes, hash_u64, hash_u128};
use crate::cluster::objects::Port;
use crate::config::PodsMode;

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
    pub services: ServiceMap,
    /// Namespaces that exist (and are exposed), by their wire label.
    pub namespaces: NameSet,
    /// The services that hold each address, as a ClusterIP or an endpoint: PTR answers.
    pub reverse: ReverseMap,
    /// Pods by namespace and address, for verified pod records.
    pub pods: PodIndex,
    /// The namespace of the pod holding an address (pods on the host network left out), for
    /// autopath; empty unless autopath is on.
    pub pod_namespaces: PodNamespaces,
    /// Addresses of `ns.dns.<zone>`.
    pub ns_addrs: Arc<[IpAddr]>,
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
    pub endpoints: Endpoints,
    /// The builder's number for the service (stable while it exists): the reverse map points
    /// at services by it.
    pub id: u32,
    /// Where the service is reached from outside the cluster (`k8s_external`); None for most.
    pub external: Option<Box<ExternalAddrs>>,
}

/// A service's external IPs and load balancers' addresses, in the order CoreDNS takes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalAddrs {
    pub ips: Box<[IpAddr]>,
    /// Load balancers known by host name only: absolute wire names, lowercase.
    pub hosts: Box<[Box<[u8]>]>,
    /// The service's own ports (a headless service's too): each address serves each.
    pub ports: Ports,
}

impl ServiceRecords {
    /// The key in [`Snapshot::services`]: `\x<n>name\x<m>ns`.
    #[inline]
    pub fn key(&self) -> &[u8] {
        &self.labels[..self.labels.len() - 4]
    }

    /// Whether `ip` is one of the service's ClusterIPs.
    pub fn has_cluster_ip(&self, ip: &IpAddr) -> bool {
        match (&self.kind, ip) {
            (RecordsKind::ClusterIp { ips, .. }, IpAddr::V4(a)) => ips.v4().contains(a),
            (RecordsKind::ClusterIp { ips, .. }, IpAddr::V6(a)) => ips.v6().contains(a),
            _ => false,
        }
    }

    /// Every address that has a PTR record to this service or its endpoints, each once.
    pub fn reverse_ips(&self) -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = self.endpoints.ips().collect();
        if let RecordsKind::ClusterIp { ips, .. } = &self.kind {
            v.extend(ips.iter());
        }
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// A set of ports, shared by every service and slice that has the same.
pub type Ports = Arc<[Port]>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordsKind {
    /// A ClusterIP service: A/AAAA of its IPs; SRV per named port targeting the service name.
    ClusterIp { ips: ClusterIps, ports: Ports },
    /// A headless service: A/AAAA per endpoint; SRV per endpoint and port.
    Headless,
    /// An ExternalName service: a CNAME to `target` (absolute wire name, lowercase).
    External { target: Box<[u8]>, ports: Ports },
}

/// A service's ClusterIPs: one IPv4 address (most services) inline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterIps {
    One(Ipv4Addr),
    Other(Box<(Box<[Ipv4Addr]>, Box<[Ipv6Addr]>)>),
}

impl ClusterIps {
    pub fn new(v4: Vec<Ipv4Addr>, v6: Vec<Ipv6Addr>) -> Self {
        match (&v4[..], &v6[..]) {
            ([a], []) => ClusterIps::One(*a),
            _ => ClusterIps::Other(Box::new((v4.into(), v6.into()))),
        }
    }
    #[inline]
    pub fn v4(&self) -> &[Ipv4Addr] {
        match self {
            ClusterIps::One(a) => std::slice::from_ref(a),
            ClusterIps::Other(b) => &b.0,
        }
    }
    #[inline]
    pub fn v6(&self) -> &[Ipv6Addr] {
        match self {
            ClusterIps::One(_) => &[],
            ClusterIps::Other(b) => &b.1,
        }
    }
    /// IPv4 addresses first, then IPv6.
    pub fn iter(&self) -> impl Iterator<Item = IpAddr> + Clone + '_ {
        self.v4()
            .iter()
            .map(|a| IpAddr::V4(*a))
            .chain(self.v6().iter().map(|a| IpAddr::V6(*a)))
    }
    pub fn len(&self) -> usize {
        self.v4().len() + self.v6().len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

// ---- endpoints ----------------------------------------------------------------------------

/// The endpoints of a service, sorted by name label then address, in a few flat arrays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    addrs: Addrs,
    /// The first (most often the only) port set of the EndpointSlices.
    ports: Ports,
    /// What most services do not need: names of their own, more than one port set.
    extra: Option<Box<Extra>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Extra {
    /// Names of the endpoints that have one of their own; None: every name is dashed.
    names: Option<Names>,
    /// Every port set when there are several (else empty: `ports` is the one).
    port_sets: Box<[Ports]>,
    /// Per endpoint, its index in `port_sets` (empty when there is one set).
    sets: Box<[u16]>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Addrs {
    V4(Box<[Ipv4Addr]>),
    Any(Box<[IpAddr]>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Names {
    /// Per endpoint, where its wire label starts in `bytes`, or `DASHED`.
    at: Box<[u32]>,
    bytes: Box<[u8]>,
}

const DASHED: u32 = u32::MAX;

/// An endpoint's name label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpName<'a> {
    /// A name of its own (hostname, or pod name): one wire label with its length byte.
    Label(&'a [u8]),
    /// The address with `-` for `.`/`:`, as [`dashed_label`] spells it.
    Dashed(IpAddr),
}

impl EpName<'_> {
    /// Whether two names are the same label.
    #[inline]
    pub fn same(&self, o: &EpName<'_>) -> bool {
        match (self, o) {
            (EpName::Dashed(a), EpName::Dashed(b)) => a == b,
            (EpName::Label(a), EpName::Label(b)) => a == b,
            (EpName::Label(l), EpName::Dashed(ip)) | (EpName::Dashed(ip), EpName::Label(l)) => {
                *l == dashed_label(ip).as_bytes()
            }
        }
    }

    /// The wire label.
    #[inline]
    pub fn label(&self) -> Label {
        match self {
            EpName::Label(l) => Label::from_wire(l),
            EpName::Dashed(ip) => dashed_label(ip),
        }
    }
}

/// One endpoint for [`Endpoints::new`].
pub struct NewEndpoint<'a> {
    /// Its own name (wire label), or None for the dashed address.
    pub name: Option<&'a [u8]>,
    pub ip: IpAddr,
    pub port_set: u16,
}

impl Endpoints {
    /// Endpoints in the order given (already sorted and deduplicated by the builder), with the
    /// port sets they index (`no_ports` when there are none).
    pub fn new(eps: &[NewEndpoint<'_>], port_sets: Vec<Ports>, no_ports: &Ports) -> Self {
        let addrs = if eps.iter().all(|e| e.ip.is_ipv4()) {
            Addrs::V4(
                eps.iter()
                    .map(|e| {
                        if let IpAddr::V4(a) = e.ip {
                            a
                        } else {
                            unreachable!()
                        }
                    })
                    .collect(),
            )
        } else {
            Addrs::Any(eps.iter().map(|e| e.ip).collect())
        };
        let names = eps.iter().any(|e| e.name.is_some()).then(|| {
            let mut bytes = Vec::new();
            let at = eps
                .iter()
                .map(|e| match e.name {
                    Some(n) => {
                        let at = bytes.len() as u32;
                        bytes.extend_from_slice(n);
                        at
                    }
                    None => DASHED,
                })
                .collect();
            Names {
                at,
                bytes: bytes.into_boxed_slice(),
            }
        });
        let ports = port_sets.first().unwrap_or(no_ports).clone();
        let (port_sets, sets) = if port_sets.len() > 1 {
            (
                port_sets.into_boxed_slice(),
                eps.iter().map(|e| e.port_set).collect(),
            )
        } else {
            (Box::new([]) as Box<[Ports]>, Box::new([]) as Box<[u16]>)
        };
        let extra = (names.is_some() || !sets.is_empty()).then(|| {
            Box::new(Extra {
                names,
                port_sets,
                sets,
            })
        });
        Endpoints {
            addrs,
            ports,
            extra,
        }
    }

    #[inline]
    pub fn len(&self) -> usize {
        match &self.addrs {
            Addrs::V4(v) => v.len(),
            Addrs::Any(v) => v.len(),
        }
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline]
    pub fn ip(&self, i: usize) -> IpAddr {
        match &self.addrs {
            Addrs::V4(v) => IpAddr::V4(v[i]),
            Addrs::Any(v) => v[i],
        }
    }

    /// Every endpoint's address, in order.
    pub fn ips(&self) -> impl Iterator<Item = IpAddr> + Clone + '_ {
        (0..self.len()).map(|i| self.ip(i))
    }

    #[inline(always)]
    fn names(&self) -> Option<&Names> {
        self.extra.as_ref().and_then(|x| x.names.as_ref())
    }

    #[inline(always)]
    pub fn name(&self, i: usize) -> EpName<'_> {
        if let Some(n) = self.names() {
            let at = n.at[i];
            if at != DASHED {
                let at = at as usize;
                return EpName::Label(&n.bytes[at..at + 1 + n.bytes[at] as usize]);
            }
        }
        EpName::Dashed(self.ip(i))
    }

    /// Whether endpoints `i` and `j` have the same name.
    #[inline]
    pub fn same_name(&self, i: usize, j: usize) -> bool {
        match (self.names(), &self.addrs) {
            (None, Addrs::V4(v)) => v[i] == v[j],
            (None, Addrs::Any(v)) => v[i] == v[j],
            (Some(_), _) => self.name(i).same(&self.name(j)),
        }
    }

    #[inline]
    pub fn port_set(&self, i: usize) -> &[Port] {
        match &self.extra {
            Some(x) if !x.sets.is_empty() => &x.port_sets[x.sets[i] as usize],
            _ => &self.ports,
        }
    }

    /// The port sets of the slices, in order.
    pub fn port_sets(&self) -> impl Iterator<Item = &[Port]> {
        let many = self.extra.as_ref().map_or(&[][..], |x| &x.port_sets[..]);
        let one = if many.is_empty() {
            Some(&self.ports[..])
        } else {
            None
        };
        one.into_iter().chain(many.iter().map(|p| &p[..]))
    }

    /// The endpoints (indices) whose name is `label` (a lowercase wire label with its length
    /// byte), in order.
    pub fn matching<'a>(&'a self, label: &'a [u8]) -> impl Iterator<Item = usize> + Clone + 'a {
        let dashed = DashedMatch::new(label);
        (0..self.len()).filter(move |&i| match self.name(i) {
            EpName::Label(l) => l == label,
            EpName::Dashed(ip) => dashed.matches(&ip, label),
        })
    }

    /// The endpoints (indices) with address `ip`, in order.
    pub fn with_ip(&self, ip: IpAddr) -> impl Iterator<Item = usize> + '_ {
        (0..self.len()).filter(move |&i| self.ip(i) == ip)
    }
}

/// Which dashed names a query label can be, decided once per query.
#[derive(Clone, Copy)]
enum DashedMatch {
    /// Exactly the dashed name of this address.
    Ip(IpAddr),
    /// No address's dashed name.
    Never,
    /// The label has a `.`: only IPv4-mapped IPv6 addresses are written with one; compare.
    Slow,
}

impl DashedMatch {
    fn new(label: &[u8]) -> Self {
        let text = &label[1..];
        if text.contains(&b'.') {
            return DashedMatch::Slow;
        }
        // A dashed name without a '.' parses back to its address, and the address spells it.
        match undash_ip(text) {
            Some(ip) if dashed_label(&ip).as_bytes() == label => DashedMatch::Ip(ip),
            _ => DashedMatch::Never,
        }
    }
    #[inline]
    fn matches(&self, ip: &IpAddr, label: &[u8]) -> bool {
        match self {
            DashedMatch::Ip(a) => a == ip,
            DashedMatch::Never => false,
            DashedMatch::Slow => dashed_label(ip).as_bytes() == label,
        }
    }
}

/// One wire label (length byte and up to 63 bytes) on the stack.
#[derive(Clone, Copy)]
pub struct Label {
    buf: [u8; 64],
}

impl Label {
    /// From a wire label (length byte first; at most 63 bytes are kept).
    pub fn from_wire(l: &[u8]) -> Self {
        let n = l.len().min(64);
        let mut buf = [0u8; 64];
        buf[..n].copy_from_slice(&l[..n]);
        buf[0] = (n.max(1) - 1) as u8;
        Label { buf }
    }
    /// From the label's text; None when empty or longer than 63 bytes.
    pub fn from_text(s: &[u8]) -> Option<Self> {
        if s.is_empty() || s.len() > 63 {
            return None;
        }
        let mut buf = [0u8; 64];
        buf[0] = s.len() as u8;
        buf[1..=s.len()].copy_from_slice(s);
        Some(Label { buf })
    }
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..1 + self.buf[0] as usize]
    }
}

impl PartialEq for Label {
    fn eq(&self, o: &Self) -> bool {
        self.as_bytes() == o.as_bytes()
    }
}
impl Eq for Label {}

/// The dashed name label of an address, without allocating (see [`dashed_ip`]).
pub fn dashed_label(ip: &IpAddr) -> Label {
    let mut buf = [0u8; 64];
    let mut n = 1;
    match ip {
        IpAddr::V4(a) => {
            for (i, o) in a.octets().iter().enumerate() {
                if i > 0 {
                    buf[n] = b'-';
                    n += 1;
                }
                let o = *o;
                if o >= 100 {
                    buf[n] = b'0' + o / 100;
                    n += 1;
                }
                if o >= 10 {
                    buf[n] = b'0' + (o / 10) % 10;
                    n += 1;
                }
                buf[n] = b'0' + o % 10;
                n += 1;
            }
        }
        IpAddr::V6(a) => {
            struct W<'a>(&'a mut [u8; 64], usize);
            impl std::fmt::Write for W<'_> {
                fn write_str(&mut self, s: &str) -> std::fmt::Result {
                    let end = self.1 + s.len();
                    if end > 63 {
                        return Err(std::fmt::Error);
                    }
                    self.0[self.1..end].copy_from_slice(s.as_bytes());
                    self.1 = end;
                    Ok(())
                }
            }
            let mut w = W(&mut buf, 1);
            let _ = std::fmt::write(&mut w, format_args!("{a}"));
            n = w.1;
            for b in &mut buf[1..n] {
                if *b == b':' {
                    *b = b'-';
                }
            }
            if buf[n - 1] == b'-' {
                buf[n] = b'0';
                n += 1;
            }
        }
    }
    buf[0] = (n - 1) as u8;
    Label { buf }
}

// ---- the maps -----------------------------------------------------------------------------

#[derive(Clone)]
struct SvcItem {
    hash: u64,
    svc: Arc<ServiceRecords>,
}

impl Item for SvcItem {
    #[inline]
    fn hash(&self) -> u64 {
        self.hash
    }
    fn tie(&self, o: &Self) -> Ordering {
        self.svc.key().cmp(o.svc.key())
    }
}

/// Services by [`ServiceRecords::key`].
#[derive(Clone, Default)]
pub struct ServiceMap(PMap<SvcItem>);

impl ServiceMap {
    #[inline]
    pub fn get(&self, key: &[u8]) -> Option<&Arc<ServiceRecords>> {
        self.0
            .find(hash_bytes(key))
            .iter()
            .find(|i| i.svc.key() == key)
            .map(|i| &i.svc)
    }
    pub fn contains_key(&self, key: &[u8]) -> bool {
        self.get(key).is_some()
    }
    /// Add `svc`, replacing the service with its key.
    pub fn insert(&mut self, svc: Arc<ServiceRecords>) {
        let hash = hash_bytes(svc.key());
        self.0.remove_where(hash, |i| i.svc.key() == svc.key());
        self.0.insert(SvcItem { hash, svc });
    }
    pub fn remove(&mut self, key: &[u8]) {
        self.0.remove_where(hash_bytes(key), |i| i.svc.key() == key);
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn values(&self) -> impl Iterator<Item = &Arc<ServiceRecords>> {
        self.0.iter().map(|i| &i.svc)
    }

    /// The services that differ between `self` (older) and `new`, as (old, new) (None: absent
    /// on that side), found without looking at the parts the two maps share.
    pub fn changed<'a>(
        &'a self,
        new: &'a ServiceMap,
        f: &mut dyn FnMut(Option<&'a Arc<ServiceRecords>>, Option<&'a Arc<ServiceRecords>>),
    ) {
        self.0.diff(&new.0, &mut |old, new| {
            // Both sides are in (hash, key) order: walk them together.
            let (mut i, mut j) = (0, 0);
            while i < old.len() || j < new.len() {
                let ord = match (old.get(i), new.get(j)) {
                    (Some(a), Some(b)) => (a.hash, a.svc.key()).cmp(&(b.hash, b.svc.key())),
                    (Some(_), None) => Ordering::Less,
                    _ => Ordering::Greater,
                };
                match ord {
                    Ordering::Less => {
                        f(Some(&old[i].svc), None);
                        i += 1;
                    }
                    Ordering::Greater => {
                        f(None, Some(&new[j].svc));
                        j += 1;
                    }
                    Ordering::Equal => {
                        let (a, b) = (&old[i].svc, &new[j].svc);
                        if !Arc::ptr_eq(a, b) && a != b {
                            f(Some(a), Some(b));
                        }
                        i += 1;
                        j += 1;
                    }
                }
            }
        });
    }
}

#[derive(Clone)]
struct NameItem {
    hash: u64,
    name: Box<[u8]>,
}

impl Item for NameItem {
    #[inline]
    fn hash(&self) -> u64 {
        self.hash
    }
    fn tie(&self, o: &Self) -> Ordering {
        self.name.cmp(&o.name)
    }
}

/// A set of wire names.
#[derive(Clone, Default)]
pub struct NameSet(PMap<NameItem>);

impl NameSet {
    #[inline]
    pub fn contains_key(&self, name: &[u8]) -> bool {
        self.0
            .find(hash_bytes(name))
            .iter()
            .any(|i| &*i.name == name)
    }
    pub fn insert(&mut self, name: Box<[u8]>) {
        if !self.contains_key(&name) {
            self.0.insert(NameItem {
                hash: hash_bytes(&name),
                name,
            });
        }
    }
    pub fn remove(&mut self, name: &[u8]) {
        self.0.remove_where(hash_bytes(name), |i| &*i.name == name);
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// An IPv4 address held by the service with that id.
#[derive(Clone)]
struct Rev4 {
    ip: u32,
    id: u32,
}

impl Item for Rev4 {
    #[inline]
    fn hash(&self) -> u64 {
        hash_u64(self.ip as u64)
    }
    fn tie(&self, o: &Self) -> Ordering {
        self.id.cmp(&o.id)
    }
}

#[derive(Clone)]
struct Rev6 {
    ip: [u8; 16],
    id: u32,
}

impl Item for Rev6 {
    #[inline]
    fn hash(&self) -> u64 {
        hash_u128(u128::from_be_bytes(self.ip))
    }
    fn tie(&self, o: &Self) -> Ordering {
        (self.ip, self.id).cmp(&(o.ip, o.id))
    }
}

#[derive(Clone)]
struct ById(Arc<ServiceRecords>);

impl Item for ById {
    #[inline]
    fn hash(&self) -> u64 {
        hash_u64(self.0.id as u64)
    }
    fn tie(&self, o: &Self) -> Ordering {
        self.0.id.cmp(&o.0.id)
    }
}

/// Addresses → the services that hold them (as a ClusterIP or an endpoint). An entry is an
/// address and a service id (8 bytes for IPv4), and the services are found by id.
#[derive(Clone, Default)]
pub struct ReverseMap {
    v4: PMap<Rev4>,
    v6: PMap<Rev6>,
    by_id: PMap<ById>,
    /// Distinct addresses.
    addrs: usize,
}

impl ReverseMap {
    /// Number of distinct addresses.
    pub fn len(&self) -> usize {
        self.addrs
    }
    pub fn is_empty(&self) -> bool {
        self.addrs == 0
    }

    /// The ids of the services holding `ip`.
    #[inline]
    fn ids(&self, ip: IpAddr) -> impl Iterator<Item = u32> + Clone + '_ {
        let (a, b): (&[Rev4], &[Rev6]) = match ip {
            IpAddr::V4(a) => (self.v4.find(hash_u64(u32::from(a) as u64)), &[]),
            IpAddr::V6(a) => (&[], self.v6.find(hash_u128(u128::from(a)))),
        };
        let o = match ip {
            IpAddr::V6(a) => a.octets(),
            IpAddr::V4(_) => [0; 16],
        };
        a.iter()
            .map(|r| r.id)
            .chain(b.iter().filter(move |r| r.ip == o).map(|r| r.id))
    }

    /// The service with id `id`.
    #[inline]
    pub fn service(&self, id: u32) -> Option<&Arc<ServiceRecords>> {
        self.by_id
            .find(hash_u64(id as u64))
            .iter()
            .find(|s| s.0.id == id)
            .map(|s| &s.0)
    }

    /// The services holding `ip`, in no particular order.
    #[inline]
    pub fn services(&self, ip: IpAddr) -> impl Iterator<Item = &Arc<ServiceRecords>> + Clone {
        self.ids(ip).filter_map(|id| self.service(id))
    }

    /// Record that the service with `id` holds `ip` (once per service and address).
    pub fn add(&mut self, ip: IpAddr, id: u32) {
        if self.ids(ip).next().is_none() {
            self.addrs += 1;
        }
        match ip {
            IpAddr::V4(a) => self.v4.insert(Rev4 { ip: a.into(), id }),
            IpAddr::V6(a) => self.v6.insert(Rev6 { ip: a.octets(), id }),
        }
    }

    /// Forget that the service with `id` holds `ip`.
    pub fn remove(&mut self, ip: IpAddr, id: u32) {
        let n = match ip {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                self.v4
                    .remove_where(hash_u64(a as u64), |r| r.ip == a && r.id == id)
            }
            IpAddr::V6(a) => {
                let o = a.octets();
                self.v6
                    .remove_where(hash_u128(u128::from(a)), |r| r.ip == o && r.id == id)
            }
        };
        if n > 0 && self.ids(ip).next().is_none() {
            self.addrs -= 1;
        }
    }

    /// The records of the service with `svc.id`, new or replacing the previous ones.
    pub fn set_service(&mut self, svc: &Arc<ServiceRecords>) {
        self.remove_service(svc.id);
        self.by_id.insert(ById(svc.clone()));
    }

    pub fn remove_service(&mut self, id: u32) {
        self.by_id
            .remove_where(hash_u64(id as u64), |s| s.0.id == id);
    }

    /// Every address held, each once, in no particular order.
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        let mut last4 = None;
        let v4 = self.v4.iter().filter_map(move |r| {
            // Entries of one address are next to each other (same hash, ordered by id).
            (last4.replace(r.ip) != Some(r.ip)).then_some(IpAddr::V4(r.ip.into()))
        });
        let mut last6 = None;
        let v6 = self.v6.iter().filter_map(move |r| {
            (last6.replace(r.ip) != Some(r.ip)).then_some(IpAddr::V6(r.ip.into()))
        });
        v4.chain(v6)
    }
}

/// A pod's IPv4 address in a namespace: namespace id << 32 | address.
#[derive(Clone)]
struct Pod4(u64);

impl Item for Pod4 {
    #[inline]
    fn hash(&self) -> u64 {
        hash_u64(self.0)
    }
    fn tie(&self, _: &Self) -> Ordering {
        Ordering::Equal
    }
}

#[derive(Clone)]
struct Pod6 {
    ip: [u8; 16],
    ns: u32,
}

impl Item for Pod6 {
    #[inline]
    fn hash(&self) -> u64 {
        hash_u128(u128::from_be_bytes(self.ip)) ^ self.ns as u64
    }
    fn tie(&self, o: &Self) -> Ordering {
        (self.ip, self.ns).cmp(&(o.ip, o.ns))
    }
}

#[derive(Clone)]
struct NsId {
    hash: u64,
    name: Box<[u8]>,
    id: u32,
}

impl Item for NsId {
    #[inline]
    fn hash(&self) -> u64 {
        self.hash
    }
    fn tie(&self, o: &Self) -> Ordering {
        self.name.cmp(&o.name)
    }
}

/// Which namespaces have a pod with which address (a multiset: pods may share an address).
#[derive(Clone, Default)]
pub struct PodIndex {
    v4: PMap<Pod4>,
    v6: PMap<Pod6>,
    /// Namespace wire labels → small ids (never reused; namespaces are few).
    ids: PMap<NsId>,
    next_id: u32,
    /// Distinct (namespace, address) pairs.
    keys: usize,
}

/// An IPv4-mapped IPv6 address is the IPv4 address here (one 16-byte key for both before).
fn pod_addr(ip: &IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(*ip, IpAddr::V4),
        _ => *ip,
    }
}

impl PodIndex {
    /// Number of distinct (namespace, address) pairs.
    pub fn len(&self) -> usize {
        self.keys
    }
    pub fn is_empty(&self) -> bool {
        self.keys == 0
    }

    fn id(&self, ns_label: &[u8]) -> Option<u32> {
        self.ids
            .find(hash_bytes(ns_label))
            .iter()
            .find(|i| &*i.name == ns_label)
            .map(|i| i.id)
    }

    fn count(&self, id: u32, ip: &IpAddr) -> usize {
        match pod_addr(ip) {
            IpAddr::V4(a) => self
                .v4
                .find(hash_u64((id as u64) << 32 | u32::from(a) as u64))
                .len(),
            IpAddr::V6(a) => {
                let p = Pod6 {
                    ip: a.octets(),
                    ns: id,
                };
                self.v6
                    .find(p.hash())
                    .iter()
                    .filter(|q| q.ip == p.ip && q.ns == id)
                    .count()
            }
        }
    }

    /// Whether a pod in the namespace (its lowercase wire label) has `ip`.
    #[inline]
    pub fn contains(&self, ns_label: &[u8], ip: &IpAddr) -> bool {
        self.id(ns_label).is_some_and(|id| self.count(id, ip) > 0)
    }

    pub fn add(&mut self, ns_label: &[u8], ip: &IpAddr) {
        let id = match self.id(ns_label) {
            Some(id) => id,
            None => {
                let id = self.next_id;
                self.next_id += 1;
                self.ids.insert(NsId {
                    hash: hash_bytes(ns_label),
                    name: ns_label.into(),
                    id,
                });
                id
            }
        };
        if self.count(id, ip) == 0 {
            self.keys += 1;
        }
        match pod_addr(ip) {
            IpAddr::V4(a) => self
                .v4
                .insert(Pod4((id as u64) << 32 | u32::from(a) as u64)),
            IpAddr::V6(a) => self.v6.insert(Pod6 {
                ip: a.octets(),
                ns: id,
            }),
        }
    }

    /// The namespace label of each id, for walking the maps.
    fn labels(&self) -> std::collections::HashMap<u32, &[u8]> {
        self.ids.iter().map(|n| (n.id, &*n.name)).collect()
    }

    /// Every (namespace wire label, address) that has a pod, each once.
    pub fn for_each(&self, f: &mut dyn FnMut(&[u8], IpAddr)) {
        let labels = self.labels();
        let mut last = None;
        for p in self.v4.iter() {
            if last.replace(p.0) == Some(p.0) {
                continue;
            }
            if let Some(l) = labels.get(&((p.0 >> 32) as u32)) {
                f(l, IpAddr::V4(Ipv4Addr::from(p.0 as u32)));
            }
        }
        let mut last = None;
        for p in self.v6.iter() {
            if last.replace((p.ip, p.ns)) == Some((p.ip, p.ns)) {
                continue;
            }
            if let Some(l) = labels.get(&p.ns) {
                f(l, IpAddr::V6(p.ip.into()));
            }
        }
    }

    /// The (namespace label, address) pairs whose pods may differ between `self` (older) and
    /// `new` (a pair may come more than once; whether it has a pod on each side is for the
    /// caller to ask with [`PodIndex::contains`]).
    pub fn changed(&self, new: &PodIndex, f: &mut dyn FnMut(&[u8], IpAddr)) {
        let (old_labels, new_labels) = (self.labels(), new.labels());
        let label = |id: u32| new_labels.get(&id).or_else(|| old_labels.get(&id)).copied();
        self.v4.diff(&new.v4, &mut |a, b| {
            for p in a.iter().chain(b) {
                if let Some(l) = label((p.0 >> 32) as u32) {
                    f(l, IpAddr::V4(Ipv4Addr::from(p.0 as u32)));
                }
            }
        });
        self.v6.diff(&new.v6, &mut |a, b| {
            for p in a.iter().chain(b) {
                if let Some(l) = label(p.ns) {
                    f(l, IpAddr::V6(p.ip.into()));
                }
            }
        });
    }

    /// Remove one pod's `ip` in the namespace.
    pub fn remove(&mut self, ns_label: &[u8], ip: &IpAddr) {
        let Some(id) = self.id(ns_label) else { return };
        let n = match pod_addr(ip) {
            IpAddr::V4(a) => {
                let k = (id as u64) << 32 | u32::from(a) as u64;
                self.v4.remove_some(hash_u64(k), |p| p.0 == k, 1)
            }
            IpAddr::V6(a) => {
                let p = Pod6 {
                    ip: a.octets(),
                    ns: id,
                };
                self.v6
                    .remove_some(p.hash(), |q| q.ip == p.ip && q.ns == id, 1)
            }
        };
        if n > 0 && self.count(id, ip) == 0 {
            self.keys -= 1;
        }
    }
}

/// A pod's IPv4 address, its namespace's id, and the order it came in (the newest holder of a
/// reused address wins): 12 bytes.
#[derive(Clone)]
struct AddrNs4 {
    ip: u32,
    ns: u32,
    seq: u32,
}

impl Item for AddrNs4 {
    #[inline]
    fn hash(&self) -> u64 {
        hash_u64(self.ip as u64)
    }
    fn tie(&self, o: &Self) -> Ordering {
        (self.ip, self.seq).cmp(&(o.ip, o.seq))
    }
}

#[derive(Clone)]
struct AddrNs6 {
    ip: [u8; 16],
    ns: u32,
    seq: u32,
}

impl Item for AddrNs6 {
    #[inline]
    fn hash(&self) -> u64 {
        hash_u128(u128::from_be_bytes(self.ip))
    }
    fn tie(&self, o: &Self) -> Ordering {
        (self.ip, self.seq).cmp(&(o.ip, o.seq))
    }
}

/// A namespace by its id.
#[derive(Clone)]
struct IdNs {
    id: u32,
    name: Box<[u8]>,
}

impl Item for IdNs {
    #[inline]
    fn hash(&self) -> u64 {
        hash_u64(self.id as u64)
    }
    fn tie(&self, o: &Self) -> Ordering {
        self.id.cmp(&o.id)
    }
}

/// Which namespace the pod holding an address is in: what autopath needs to know of a client
/// (CoreDNS's `podWithIP`). Only the address, the namespace (as a small id) and the arrival
/// order are kept per pod. An address can be held twice for a while (a pod deleted late, its
/// address already given to a pod of another namespace): the pod that came last answers, and
/// the other's removal leaves it alone.
#[derive(Clone, Default)]
pub struct PodNamespaces {
    v4: PMap<AddrNs4>,
    v6: PMap<AddrNs6>,
    ids: PMap<NsId>,
    names: PMap<IdNs>,
    next_id: u32,
    next_seq: u32,
}

impl PodNamespaces {
    /// Entries (a pod with two addresses is two).
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn id(&self, ns_label: &[u8]) -> Option<u32> {
        self.ids
            .find(hash_bytes(ns_label))
            .iter()
            .find(|i| &*i.name == ns_label)
            .map(|i| i.id)
    }

    /// A pod of the namespace (its wire label, lowercase) holds `ip`.
    pub fn add(&mut self, ns_label: &[u8], ip: IpAddr) {
        let ns = match self.id(ns_label) {
            Some(id) => id,
            None => {
                let id = self.next_id;
                self.next_id += 1;
                self.ids.insert(NsId {
                    hash: hash_bytes(ns_label),
                    name: ns_label.into(),
                    id,
                });
                self.names.insert(IdNs {
                    id,
                    name: ns_label.into(),
                });
                id
            }
        };
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        match pod_addr(&ip) {
            IpAddr::V4(a) => self.v4.insert(AddrNs4 {
                ip: a.into(),
                ns,
                seq,
            }),
            IpAddr::V6(a) => self.v6.insert(AddrNs6 {
                ip: a.octets(),
                ns,
                seq,
            }),
        }
    }

    /// A pod of the namespace no longer holds `ip`: its oldest entry goes.
    pub fn remove(&mut self, ns_label: &[u8], ip: IpAddr) {
        let Some(ns) = self.id(ns_label) else { return };
        match pod_addr(&ip) {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                self.v4
                    .remove_some(hash_u64(a as u64), |e| e.ip == a && e.ns == ns, 1);
            }
            IpAddr::V6(a) => {
                let o = a.octets();
                self.v6
                    .remove_some(hash_u128(u128::from(a)), |e| e.ip == o && e.ns == ns, 1);
            }
        }
    }

    /// The namespace (wire label) of the newest pod holding `ip`.
    pub fn namespace_of(&self, ip: IpAddr) -> Option<&[u8]> {
        let ns = match pod_addr(&ip) {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                self.v4
                    .find(hash_u64(a as u64))
                    .iter()
                    .filter(|e| e.ip == a)
                    .max_by_key(|e| e.seq)?
                    .ns
            }
            IpAddr::V6(a) => {
                let o = a.octets();
                self.v6
                    .find(hash_u128(u128::from(a)))
                    .iter()
                    .filter(|e| e.ip == o)
                    .max_by_key(|e| e.seq)?
                    .ns
            }
        };
        self.names
            .find(hash_u64(ns as u64))
            .iter()
            .find(|n| n.id == ns)
            .map(|n| &*n.name)
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
            pod_namespaces: Default::default(),
            ns_addrs: Arc::from(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]),
        }
    }

    /// Counts for `check`, logs and metrics: (services, endpoints, records).
    pub fn counts(&self) -> SnapshotCounts {
        let mut c = SnapshotCounts {
            services: self.services.len(),
            ..Default::default()
        };
        for s in self.services.values() {
            let h = &s.endpoints;
            c.endpoints += h.len();
            // every endpoint has an A/AAAA record on its own name
            c.records += h.len();
            match &s.kind {
                RecordsKind::ClusterIp { ips, ports } => {
                    c.records += ips.len() + ports.iter().filter(|p| !p.name.is_empty()).count();
                }
                RecordsKind::Headless => {
                    // A/AAAA on the service name, SRV per endpoint and named port
                    c.records += h.len();
                    for i in 0..h.len() {
                        c.records += h.port_set(i).iter().filter(|p| !p.name.is_empty()).count();
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
    String::from_utf8_lossy(&dashed_label(ip).as_bytes()[1..]).into_owned()
}

/// Parse a dashed pod/endpoint label back into an IP (`10-244-1-5`, `fd00--1`), without
/// allocating.
pub fn undash_ip(label: &[u8]) -> Option<IpAddr> {
    if label.len() > 63 || label.iter().any(|&b| b == b':' || b == b'.') {
        return None;
    }
    std::str::from_utf8(label).ok()?;
    let mut buf = [0u8; 63];
    let buf = &mut buf[..label.len()];
    let dashes = label.iter().filter(|&&b| b == b'-').count();
    if dashes == 3 {
        // Only the canonical spelling: exactly four dashed decimal parts.
        for (d, s) in buf.iter_mut().zip(label) {
            *d = if *s == b'-' { b'.' } else { *s };
        }
        if let Ok(a) = std::str::from_utf8(buf).ok()?.parse::<Ipv4Addr>() {
            return Some(IpAddr::V4(a));
        }
    }
    for (d, s) in buf.iter_mut().zip(label) {
        *d = if *s == b'-' { b':' } else { *s };
    }
    std::str::from_utf8(buf)
        .ok()?
        .parse::<Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dashed_labels_spell_as_before() {
        let old = |ip: &IpAddr| match ip {
            IpAddr::V4(a) => a.to_string().replace('.', "-"),
            IpAddr::V6(a) => {
                let s = a.to_string().replace(':', "-");
                if s.ends_with('-') { format!("{s}0") } else { s }
            }
        };
        for s in [
            "10.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "1.20.100.9",
            "fd00::",
            "::",
            "::1",
            "5678:abcd::1",
            "::ffff:1.2.3.4",
            "1:2:3:4:5:6:7:0",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "1::2:3",
        ] {
            let ip: IpAddr = s.parse().unwrap();
            let l = dashed_label(&ip);
            assert_eq!(&l.as_bytes()[1..], old(&ip).as_bytes(), "{s}");
            assert_eq!(l.as_bytes()[0] as usize, old(&ip).len());
        }
    }

    #[test]
    fn undash_as_before() {
        let old = |label: &[u8]| -> Option<IpAddr> {
            let s = std::str::from_utf8(label).ok()?;
            if s.contains(':') || s.contains('.') {
                return None;
            }
            let v4 = s.replace('-', ".");
            if let Ok(a) = v4.parse::<Ipv4Addr>()
                && s.split('-').count() == 4
            {
                return Some(IpAddr::V4(a));
            }
            s.replace('-', ":").parse::<Ipv6Addr>().ok().map(IpAddr::V6)
        };
        for s in [
            "10-0-0-1",
            "10-0-0-01",
            "1-2-3",
            "1-2-3-4-5",
            "fd00--1",
            "fd00--",
            "--1",
            "----",
            "a-b-c-d",
            "1.2.3.4",
            "",
            "-",
            "10-0-0-256",
            "5678-abcd--1",
            "1-2-3-4-5-6-7-8",
        ] {
            assert_eq!(undash_ip(s.as_bytes()), old(s.as_bytes()), "{s}");
        }
    }
}
