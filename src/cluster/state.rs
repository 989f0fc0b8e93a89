//! Compact per-kind indexes of the cluster, updated by [`super::ClusterEvent`]s.
//!
//! Applying an event records what it touched ([`Changes`]): the zone builder then recomputes
//! only those services, namespaces and pods. Objects equal to what is already held change
//! nothing, so a relist that finds the cluster as it was publishes no new snapshot.
//!
//! A complete list of a kind is applied as a mark and sweep ([`ClusterState::begin_list`],
//! then each listed object, then [`ClusterState::end_list`]): every object carries a mark that
//! the list's begin clears and listing the object sets, and the list's end removes what is still
//! unmarked. A list thus never holds a second copy of anything: not of the objects (they arrive
//! one by one), not of their keys.
//!
//! The state is held for as long as the server runs, so it keeps each object in the least
//! memory that still rebuilds every record after any change or config reload: names are
//! interned (one allocation per distinct namespace and service name), an EndpointSlice's
//! endpoints are one packed byte string (an endpoint with one IPv4 address and no names is 6
//! bytes), and a pod is its name and addresses in a map per namespace.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::SystemTime;

use hashbrown::HashTable;

use super::ClusterEvent;
use super::objects::{
    Kind, NamespaceInfo, Object, ObjectKey, Port, ServiceInfo, ServiceKind, SliceInfo,
};

/// `(namespace, name)`, both lowercase.
pub type Key = (Arc<str>, Arc<str>);

/// What one or more events touched, for the zone builder.
#[derive(Debug, Default)]
pub struct Changes {
    /// Services whose records must be recomputed.
    pub services: HashSet<Key>,
    /// Namespaces whose Namespace object changed (existence or labels).
    pub namespaces: HashSet<Arc<str>>,
    /// Namespaces that gained or lost a service (their existence as a name may change).
    pub ns_touched: HashSet<Arc<str>>,
    /// Pods before and after (None: absent), for the pod index.
    pub pods: Vec<(Option<PodAddrs>, Option<PodAddrs>)>,
    /// Earliest cluster-side change time per service touched, for programming latency.
    pub changed_at: HashMap<Key, SystemTime>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
            && self.namespaces.is_empty()
            && self.ns_touched.is_empty()
            && self.pods.is_empty()
    }

    /// Adds what `later` touched (pod changes in order, after these).
    pub fn merge(&mut self, later: Changes) {
        self.services.extend(later.services);
        self.namespaces.extend(later.namespaces);
        self.ns_touched.extend(later.ns_touched);
        self.pods.extend(later.pods);
        for (k, t) in later.changed_at {
            let e = self.changed_at.entry(k).or_insert(t);
            if t < *e {
                *e = t;
            }
        }
    }
}

/// A pod as the pod index sees it: where it is and its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodAddrs {
    pub namespace: Arc<str>,
    pub ips: Addrs,
    /// On the node's network (`spec.hostNetwork`): its address is the node's, shared with
    /// everything else on the node, so it names no one client.
    pub host_network: bool,
}

/// A list of addresses; most objects have none or exactly one IPv4 address, held without a
/// heap box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addrs {
    None,
    V4(Ipv4Addr),
    Many(Box<Vec<IpAddr>>),
}

impl Addrs {
    pub fn new(ips: &[IpAddr]) -> Self {
        match ips {
            [] => Addrs::None,
            [IpAddr::V4(a)] => Addrs::V4(*a),
            _ => Addrs::Many(Box::new(ips.to_vec())),
        }
    }
    pub fn iter(&self) -> impl Iterator<Item = IpAddr> + '_ {
        let (one, many): (Option<IpAddr>, &[IpAddr]) = match self {
            Addrs::None => (None, &[]),
            Addrs::V4(a) => (Some(IpAddr::V4(*a)), &[]),
            Addrs::Many(v) => (None, v),
        };
        one.into_iter().chain(many.iter().copied())
    }
}

/// A pod as the state holds it: its list mark, addresses and name in one allocation, looked
/// up by the name.
#[derive(Debug, Clone)]
struct PodRec(Box<[u8]>);

/// [`PodRec`]'s first byte: the pod was listed by the list in progress (or changed since it
/// began).
const POD_LISTED: u8 = 1;

impl PodRec {
    /// Layout: the mark byte, the address count times two plus one on the host network
    /// (LEB128), then per address 4 or 6 and its bytes, then the name.
    fn new(name: &str, ips: &Addrs, host_network: bool) -> Self {
        let mut b = Vec::with_capacity(2 + 5 + name.len());
        b.push(POD_LISTED);
        put_len(&mut b, ips.iter().count() * 2 + host_network as usize);
        for ip in ips.iter() {
            match ip {
                IpAddr::V4(a) => {
                    b.push(4);
                    b.extend_from_slice(&a.octets());
                }
                IpAddr::V6(a) => {
                    b.push(6);
                    b.extend_from_slice(&a.octets());
                }
            }
        }
        b.extend_from_slice(name.as_bytes());
        PodRec(b.into_boxed_slice())
    }
    fn listed(&self) -> bool {
        self.0[0] & POD_LISTED != 0
    }
    fn set_listed(&mut self, listed: bool) {
        self.0[0] = if listed { POD_LISTED } else { 0 };
    }
    /// Same name and addresses (the mark aside).
    fn same(&self, o: &PodRec) -> bool {
        self.0[1..] == o.0[1..]
    }
    /// The addresses, and where the name starts.
    fn decode(&self) -> (Vec<IpAddr>, usize) {
        let b = &self.0;
        let mut p = 1;
        let n = get_len(b, &mut p) / 2;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            if b[p] == 4 {
                v.push(IpAddr::V4(Ipv4Addr::new(
                    b[p + 1],
                    b[p + 2],
                    b[p + 3],
                    b[p + 4],
                )));
                p += 5;
            } else {
                let o: [u8; 16] = b[p + 1..p + 17].try_into().expect("16 bytes");
                v.push(IpAddr::V6(Ipv6Addr::from(o)));
                p += 17;
            }
        }
        (v, p)
    }
    fn name(&self) -> &str {
        let b = &self.0;
        let mut p = 1;
        let n = get_len(b, &mut p) / 2;
        for _ in 0..n {
            p += if b[p] == 4 { 5 } else { 17 };
        }
        std::str::from_utf8(&b[p..]).unwrap_or("")
    }
    fn ips(&self) -> Addrs {
        Addrs::new(&self.decode().0)
    }
    fn host_network(&self) -> bool {
        let mut p = 1;
        get_len(&self.0, &mut p) & 1 == 1
    }
    /// The pod as the pod index sees it.
    fn addrs(&self, namespace: &Arc<str>) -> PodAddrs {
        PodAddrs {
            namespace: namespace.clone(),
            ips: self.ips(),
            host_network: self.host_network(),
        }
    }
}

/// Pods of one namespace, by name. A table rather than a set: the list mark inside a record
/// changes in place.
#[derive(Debug, Default)]
struct Pods(HashTable<PodRec>);

impl Pods {
    fn find_mut(&mut self, h: &RandomState, name: &str) -> Option<&mut PodRec> {
        self.0.find_mut(h.hash_one(name), |r| r.name() == name)
    }
    fn insert_new(&mut self, h: &RandomState, rec: PodRec) {
        self.0
            .insert_unique(h.hash_one(rec.name()), rec, |r| h.hash_one(r.name()));
    }
    fn take(&mut self, h: &RandomState, name: &str) -> Option<PodRec> {
        match self.0.find_entry(h.hash_one(name), |r| r.name() == name) {
            Ok(e) => Some(e.remove().0),
            Err(_) => None,
        }
    }
}

/// What records a service gets (see [`ServiceKind`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    ClusterIp(Addrs),
    Headless,
    ExternalName(Box<str>),
}

/// A set of ports; equal sets are one shared copy (with the snapshot's records too).
pub type Ports = Arc<[Port]>;

/// A Service as the zone builder needs it (its namespace and name are its key).
///
/// Entries never keep an allocation of the object they were made from: the objects of a full
/// list are freed right after, and one of their strings kept alive would keep the memory page
/// it sits on from being handed back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceEntry {
    pub kind: EntryKind,
    pub ports: Ports,
    pub publish_not_ready: bool,
    /// The service's labels, sorted by key (for the `labels` selector).
    labels: Box<[(Box<str>, Box<str>)]>,
    /// External IPs and load-balancer addresses (`k8s_external`); empty for most services.
    pub external: Box<[super::objects::ExternalAddr]>,
}

impl ServiceEntry {
    fn new(s: &ServiceInfo, ports: Ports) -> Self {
        let kind = match &s.kind {
            ServiceKind::ClusterIp(ips) => EntryKind::ClusterIp(Addrs::new(ips)),
            ServiceKind::Headless => EntryKind::Headless,
            ServiceKind::ExternalName(n) => EntryKind::ExternalName(Box::from(&**n)),
        };
        ServiceEntry {
            kind,
            ports,
            publish_not_ready: s.publish_not_ready,
            labels: s
                .labels
                .iter()
                .map(|(k, v)| (Box::from(k.as_str()), Box::from(v.as_str())))
                .collect(),
            external: s.external.iter().cloned().collect(),
        }
    }

    /// The labels, as a selector takes them.
    pub fn labels_map(&self) -> BTreeMap<String, String> {
        self.labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

/// An EndpointSlice as the zone builder needs it (its namespace and name are its key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceEntry {
    /// The service these endpoints belong to.
    pub service: Option<Arc<str>>,
    pub ports: Ports,
    /// The endpoints, packed (see [`SliceEntry::for_each_endpoint`]).
    endpoints: Box<[u8]>,
}

/// One endpoint of a [`SliceEntry`].
#[derive(Debug, Clone, Copy)]
pub struct EndpointView<'a> {
    pub ready: bool,
    pub hostname: Option<&'a str>,
    pub pod_name: Option<&'a str>,
    pub addresses: &'a [IpAddr],
}

const READY: u8 = 1;
const HOSTNAME: u8 = 2;
const POD_NAME: u8 = 4;
/// Exactly one address, IPv4: its 4 bytes follow. Otherwise a count, then per address its
/// family (4 or 6) and bytes.
const ONE_V4: u8 = 8;

fn put_len(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn get_len(b: &[u8], p: &mut usize) -> usize {
    let mut n = 0usize;
    let mut shift = 0;
    loop {
        let v = b[*p];
        *p += 1;
        n |= ((v & 0x7f) as usize) << shift;
        if v < 0x80 {
            return n;
        }
        shift += 7;
    }
}

impl SliceEntry {
    fn new(service: Option<Arc<str>>, s: &SliceInfo, ports: Ports) -> Self {
        let mut b = Vec::new();
        let mut prev_pod: &str = "";
        for ep in &s.endpoints {
            let mut flags = 0;
            if ep.ready {
                flags |= READY;
            }
            if ep.hostname.is_some() {
                flags |= HOSTNAME;
            }
            if ep.pod_name.is_some() {
                flags |= POD_NAME;
            }
            let one_v4 = matches!(ep.addresses[..], [IpAddr::V4(_)]);
            if one_v4 {
                flags |= ONE_V4;
            }
            b.push(flags);
            if one_v4 {
                if let IpAddr::V4(a) = ep.addresses[0] {
                    b.extend_from_slice(&a.octets());
                }
            } else {
                put_len(&mut b, ep.addresses.len());
                for a in &ep.addresses {
                    match a {
                        IpAddr::V4(a) => {
                            b.push(4);
                            b.extend_from_slice(&a.octets());
                        }
                        IpAddr::V6(a) => {
                            b.push(6);
                            b.extend_from_slice(&a.octets());
                        }
                    }
                }
            }
            if let Some(h) = &ep.hostname {
                put_len(&mut b, h.len());
                b.extend_from_slice(h.as_bytes());
            }
            if let Some(p) = &ep.pod_name {
                // Pod names of a slice share long prefixes (`<deployment>-<hash>-`): each is
                // kept as the length it shares with the one before, and the rest.
                let shared = prev_pod
                    .bytes()
                    .zip(p.bytes())
                    .take_while(|(a, b)| a == b)
                    .count();
                put_len(&mut b, shared);
                put_len(&mut b, p.len() - shared);
                b.extend_from_slice(&p.as_bytes()[shared..]);
                prev_pod = p;
            }
        }
        SliceEntry {
            service,
            ports,
            endpoints: b.into_boxed_slice(),
        }
    }

    /// Every endpoint, in the slice's order.
    pub fn for_each_endpoint(&self, mut f: impl FnMut(EndpointView<'_>)) {
        let b = &self.endpoints;
        let mut p = 0;
        let mut addrs: Vec<IpAddr> = Vec::new();
        let mut pod: Vec<u8> = Vec::new();
        while p < b.len() {
            let flags = b[p];
            p += 1;
            addrs.clear();
            if flags & ONE_V4 != 0 {
                addrs.push(IpAddr::V4(Ipv4Addr::new(
                    b[p],
                    b[p + 1],
                    b[p + 2],
                    b[p + 3],
                )));
                p += 4;
            } else {
                for _ in 0..get_len(b, &mut p) {
                    let fam = b[p];
                    p += 1;
                    if fam == 4 {
                        addrs.push(IpAddr::V4(Ipv4Addr::new(
                            b[p],
                            b[p + 1],
                            b[p + 2],
                            b[p + 3],
                        )));
                        p += 4;
                    } else {
                        let o: [u8; 16] = b[p..p + 16].try_into().expect("16 bytes");
                        addrs.push(IpAddr::V6(Ipv6Addr::from(o)));
                        p += 16;
                    }
                }
            }
            let hostname = if flags & HOSTNAME != 0 {
                let n = get_len(b, &mut p);
                let h = std::str::from_utf8(&b[p..p + n]).ok();
                p += n;
                h
            } else {
                None
            };
            let has_pod = flags & POD_NAME != 0;
            if has_pod {
                let shared = get_len(b, &mut p);
                let n = get_len(b, &mut p);
                pod.truncate(shared);
                pod.extend_from_slice(&b[p..p + n]);
                p += n;
            }
            let pod_name = if has_pod {
                std::str::from_utf8(&pod).ok()
            } else {
                None
            };
            f(EndpointView {
                ready: flags & READY != 0,
                hostname,
                pod_name,
                addresses: &addrs,
            });
        }
    }
}

/// A service key's entry: the Service (if it exists) and the slices that name it.
#[derive(Debug, Default)]
struct ServiceSlot {
    service: Option<ServiceEntry>,
    /// The Service was listed by the list in progress (or changed since it began).
    listed: bool,
    slices: SliceNames,
}

/// An EndpointSlice and its list mark.
#[derive(Debug)]
struct SliceSlot {
    entry: SliceEntry,
    listed: bool,
}

/// A Namespace and its list mark.
#[derive(Debug)]
struct NamespaceSlot {
    info: NamespaceInfo,
    listed: bool,
}

/// Slice names, sorted; most services have one slice.
#[derive(Debug, Default)]
enum SliceNames {
    #[default]
    None,
    One(Arc<str>),
    Many(Box<[Arc<str>]>),
}

impl SliceNames {
    fn as_slice(&self) -> &[Arc<str>] {
        match self {
            SliceNames::None => &[],
            SliceNames::One(a) => std::slice::from_ref(a),
            SliceNames::Many(v) => v,
        }
    }
    fn is_empty(&self) -> bool {
        matches!(self, SliceNames::None)
    }
    fn set(&mut self, mut v: Vec<Arc<str>>) {
        *self = match v.len() {
            0 => SliceNames::None,
            1 => SliceNames::One(v.pop().expect("one")),
            _ => SliceNames::Many(v.into_boxed_slice()),
        };
    }
    fn insert(&mut self, name: &Arc<str>) {
        if let Err(at) = self.as_slice().binary_search(name) {
            let mut v = std::mem::take(self).as_slice().to_vec();
            v.insert(at, name.clone());
            self.set(v);
        }
    }
    fn remove(&mut self, name: &Arc<str>) {
        if let Ok(at) = self.as_slice().binary_search(name) {
            let mut v = std::mem::take(self).as_slice().to_vec();
            v.remove(at);
            self.set(v);
        }
    }
}

/// The cluster as DNS sees it.
#[derive(Debug, Default)]
pub struct ClusterState {
    /// `(namespace, service)` → the Service and the names of its slices.
    services: HashMap<Key, ServiceSlot>,
    slices: HashMap<Key, SliceSlot>,
    pub services_by_ns: HashMap<Arc<str>, BTreeSet<Arc<str>>>,
    /// Pods: namespace → pod name → addresses.
    pods: HashMap<Arc<str>, Pods>,
    /// How pod names hash in [`Pods`].
    pod_hasher: RandomState,
    namespaces: HashMap<Arc<str>, NamespaceSlot>,
    /// Kinds that have completed a full list.
    pub synced: BTreeSet<Kind>,
    /// Namespace and service names, one allocation each.
    strings: HashSet<Arc<str>>,
    /// Port sets, one allocation each.
    port_sets: HashSet<Ports>,
    /// The empty port set.
    no_ports: Ports,
    /// Sweep the interned names and port sets nothing holds any more at this size.
    sweep_at: usize,
}

impl ClusterState {
    /// Apply one event, adding what it touched to `changes`.
    pub fn apply(&mut self, event: ClusterEvent, changes: &mut Changes) {
        match event {
            ClusterEvent::Apply { object, changed_at } => {
                if let Some(t) = changed_at {
                    for k in self.service_keys_of(&object) {
                        let e = changes.changed_at.entry(k).or_insert(t);
                        if t < *e {
                            *e = t;
                        }
                    }
                }
                self.upsert(object, changes);
            }
            ClusterEvent::Delete { key } => self.remove(&key, changes),
            ClusterEvent::ListBegin { kind } => self.begin_list(kind),
            ClusterEvent::Listed { object } => self.upsert(object, changes),
            ClusterEvent::ListEnd { kind } => self.end_list(kind, changes),
            ClusterEvent::Relist { kind, objects } => {
                self.begin_list(kind);
                for o in objects {
                    self.upsert(o, changes);
                }
                self.end_list(kind, changes);
            }
            ClusterEvent::ReplaceAll { objects } => {
                for kind in Kind::ALL {
                    self.begin_list(kind);
                }
                for o in objects {
                    self.upsert(o, changes);
                }
                for kind in Kind::ALL {
                    self.end_list(kind, changes);
                }
            }
            ClusterEvent::WatchRestart { .. } => {}
            ClusterEvent::AtRevision { event, .. } => return self.apply(*event, changes),
        }
        if self.strings.len() + self.port_sets.len() >= self.sweep_at {
            self.sweep();
        }
    }

    /// The Service of a key.
    pub fn service(&self, k: &Key) -> Option<&ServiceEntry> {
        self.services.get(k).and_then(|s| s.service.as_ref())
    }

    /// The keys of every Service held.
    pub fn service_keys(&self) -> impl Iterator<Item = &Key> {
        self.services
            .iter()
            .filter(|(_, s)| s.service.is_some())
            .map(|(k, _)| k)
    }

    /// Whether any EndpointSlice names the service.
    pub fn has_slices(&self, k: &Key) -> bool {
        self.services.get(k).is_some_and(|s| !s.slices.is_empty())
    }

    /// A Namespace object held.
    pub fn namespace(&self, name: &str) -> Option<&NamespaceInfo> {
        self.namespaces.get(name).map(|n| &n.info)
    }

    /// The names of every Namespace object held.
    pub fn namespace_names(&self) -> impl Iterator<Item = &Arc<str>> {
        self.namespaces.keys()
    }

    /// Every object held, by kind: Namespace objects, Services, EndpointSlices, Pods.
    pub fn counts(&self) -> [usize; 4] {
        [
            self.namespaces.len(),
            self.service_keys().count(),
            self.slices.len(),
            self.pods.values().map(|p| p.0.len()).sum(),
        ]
    }

    /// A complete list of `kind` begins: every object of the kind is unmarked. Listing an
    /// object marks it (so does any change to it); [`Self::end_list`] removes the unmarked.
    pub fn begin_list(&mut self, kind: Kind) {
        match kind {
            Kind::Service => self.services.values_mut().for_each(|s| s.listed = false),
            Kind::EndpointSlice => self.slices.values_mut().for_each(|s| s.listed = false),
            Kind::Pod => self
                .pods
                .values_mut()
                .flat_map(|p| p.0.iter_mut())
                .for_each(|r| r.set_listed(false)),
            Kind::Namespace => self.namespaces.values_mut().for_each(|n| n.listed = false),
        }
    }

    /// The list of `kind` is complete: whatever of the kind it did not mark is gone. Marks the
    /// kind synced.
    pub fn end_list(&mut self, kind: Kind, changes: &mut Changes) {
        match kind {
            Kind::Service => {
                let gone: Vec<Key> = self
                    .services
                    .iter()
                    .filter(|(_, s)| s.service.is_some() && !s.listed)
                    .map(|(k, _)| k.clone())
                    .collect();
                for (ns, n) in gone {
                    self.remove(&key(kind, &ns, &n), changes);
                }
            }
            Kind::EndpointSlice => {
                let gone: Vec<Key> = self
                    .slices
                    .iter()
                    .filter(|(_, s)| !s.listed)
                    .map(|(k, _)| k.clone())
                    .collect();
                for (ns, n) in gone {
                    self.remove(&key(kind, &ns, &n), changes);
                }
            }
            Kind::Pod => {
                for (ns, pods) in self.pods.iter_mut() {
                    pods.0.retain(|r| {
                        if !r.listed() {
                            changes.pods.push((Some(r.addrs(ns)), None));
                        }
                        r.listed()
                    });
                }
                self.pods.retain(|_, p| !p.0.is_empty());
            }
            Kind::Namespace => {
                let gone: Vec<Arc<str>> = self
                    .namespaces
                    .iter()
                    .filter(|(_, n)| !n.listed)
                    .map(|(k, _)| k.clone())
                    .collect();
                for n in gone {
                    self.remove(&key(kind, &Arc::from(""), &n), changes);
                }
            }
        }
        self.synced.insert(kind);
        self.sweep();
    }

    /// The one shared copy of a namespace or service name.
    fn intern(&mut self, s: &Arc<str>) -> Arc<str> {
        match self.strings.get(s) {
            Some(a) => a.clone(),
            None => {
                let a: Arc<str> = Arc::from(&**s);
                self.strings.insert(a.clone());
                a
            }
        }
    }

    /// The one shared copy of a port set.
    fn intern_ports(&mut self, p: &[Port]) -> Ports {
        if p.is_empty() {
            return self.no_ports.clone();
        }
        match self.port_sets.get(p) {
            Some(a) => a.clone(),
            None => {
                let a: Ports = Arc::from(p);
                self.port_sets.insert(a.clone());
                a
            }
        }
    }

    /// The empty port set.
    pub fn no_ports(&self) -> &Ports {
        &self.no_ports
    }

    /// Forget interned names and port sets that nothing holds any more.
    fn sweep(&mut self) {
        self.strings.retain(|s| Arc::strong_count(s) > 1);
        self.strings.shrink_to_fit();
        self.port_sets.retain(|s| Arc::strong_count(s) > 1);
        self.port_sets.shrink_to_fit();
        self.sweep_at = (self.strings.len() + self.port_sets.len()) * 2 + 1024;
    }

    fn service_keys_of(&self, o: &Object) -> Vec<Key> {
        match o {
            Object::Service(s) => vec![(s.namespace.clone(), s.name.clone())],
            Object::Slice(s) => s
                .service
                .iter()
                .map(|svc| (s.namespace.clone(), svc.clone()))
                .collect(),
            _ => vec![],
        }
    }

    fn upsert(&mut self, object: Object, changes: &mut Changes) {
        let c = self.compact(&object);
        drop(object);
        self.put(c, changes);
    }

    /// The compact form of an object, in fresh allocations.
    fn compact(&mut self, object: &Object) -> Compact {
        match object {
            Object::Service(s) => {
                let k = (self.intern(&s.namespace), self.intern(&s.name));
                let ports = self.intern_ports(&s.ports);
                Compact::Service(k, ServiceEntry::new(s, ports))
            }
            Object::Slice(s) => {
                let k = (self.intern(&s.namespace), Arc::from(&*s.name));
                let service = s.service.as_ref().map(|n| self.intern(n));
                let ports = self.intern_ports(&s.ports);
                Compact::Slice(k, SliceEntry::new(service, s, ports))
            }
            Object::Pod(p) => Compact::Pod(
                self.intern(&p.namespace),
                PodRec::new(&p.name, &Addrs::new(&p.ips), p.host_network),
            ),
            Object::Namespace(n) => Compact::Namespace(NamespaceInfo {
                name: self.intern(&n.name),
                labels: n
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            }),
        }
    }

    fn put(&mut self, c: Compact, changes: &mut Changes) {
        match c {
            Compact::Service(k, e) => {
                if let Some(slot) = self.services.get_mut(&k)
                    && slot.service.as_ref() == Some(&e)
                {
                    slot.listed = true;
                    return;
                }
                self.services_by_ns
                    .entry(k.0.clone())
                    .or_default()
                    .insert(k.1.clone());
                changes.ns_touched.insert(k.0.clone());
                changes.services.insert(k.clone());
                let slot = self.services.entry(k).or_default();
                slot.service = Some(e);
                slot.listed = true;
            }
            Compact::Slice(k, e) => {
                if let Some(slot) = self.slices.get_mut(&k)
                    && slot.entry == e
                {
                    slot.listed = true;
                    return;
                }
                if let Some(old) = self.slices.remove(&k) {
                    self.unlink_slice(&k, &old.entry, changes);
                }
                if let Some(svc) = &e.service {
                    let sk = (k.0.clone(), svc.clone());
                    self.services
                        .entry(sk.clone())
                        .or_default()
                        .slices
                        .insert(&k.1);
                    changes.services.insert(sk);
                }
                self.slices.insert(
                    k,
                    SliceSlot {
                        entry: e,
                        listed: true,
                    },
                );
            }
            Compact::Pod(ns, rec) => {
                let h = &self.pod_hasher;
                let pods = self.pods.entry(ns.clone()).or_default();
                let new = rec.addrs(&ns);
                match pods.find_mut(h, rec.name()) {
                    Some(old) if old.same(&rec) => old.set_listed(true),
                    Some(old) => {
                        let before = old.addrs(&ns);
                        *old = rec;
                        changes.pods.push((Some(before), Some(new)));
                    }
                    None => {
                        pods.insert_new(h, rec);
                        changes.pods.push((None, Some(new)));
                    }
                }
            }
            Compact::Namespace(n) => {
                if let Some(slot) = self.namespaces.get_mut(&n.name)
                    && slot.info == n
                {
                    slot.listed = true;
                    return;
                }
                changes.namespaces.insert(n.name.clone());
                self.namespaces.insert(
                    n.name.clone(),
                    NamespaceSlot {
                        info: n,
                        listed: true,
                    },
                );
            }
        }
    }

    fn unlink_slice(&mut self, k: &Key, old: &SliceEntry, changes: &mut Changes) {
        if let Some(svc) = &old.service {
            let sk = (k.0.clone(), svc.clone());
            if let Some(slot) = self.services.get_mut(&sk) {
                slot.slices.remove(&k.1);
                if slot.slices.is_empty() && slot.service.is_none() {
                    self.services.remove(&sk);
                }
            }
            changes.services.insert(sk);
        }
    }

    fn remove(&mut self, key: &ObjectKey, changes: &mut Changes) {
        let k = (key.namespace.clone(), key.name.clone());
        match key.kind {
            Kind::Service => {
                let Some((k, slot)) = self.services.get_key_value(&k) else {
                    return;
                };
                if slot.service.is_none() {
                    return;
                }
                let k = k.clone();
                let slot = self.services.get_mut(&k).expect("just found");
                slot.service = None;
                if slot.slices.is_empty() {
                    self.services.remove(&k);
                }
                if let Some(set) = self.services_by_ns.get_mut(&k.0) {
                    set.remove(&k.1);
                    if set.is_empty() {
                        self.services_by_ns.remove(&k.0);
                    }
                }
                changes.ns_touched.insert(k.0.clone());
                changes.services.insert(k);
            }
            Kind::EndpointSlice => {
                if let Some((k, old)) = self.slices.remove_entry(&k) {
                    self.unlink_slice(&k, &old.entry, changes);
                }
            }
            Kind::Pod => {
                let Some(ns) = self.pods.get_key_value(&*k.0).map(|(ns, _)| ns.clone()) else {
                    return;
                };
                let pods = self.pods.get_mut(&ns).expect("just found");
                if let Some(old) = pods.take(&self.pod_hasher, &k.1) {
                    changes.pods.push((Some(old.addrs(&ns)), None));
                    if pods.0.is_empty() {
                        self.pods.remove(&ns);
                    }
                }
            }
            Kind::Namespace => {
                if let Some((n, _)) = self.namespaces.remove_entry(&key.name) {
                    changes.namespaces.insert(n);
                }
            }
        }
    }

    /// The slices of a service, by slice name.
    pub fn slices_of<'a>(&'a self, k: &Key) -> impl Iterator<Item = &'a SliceEntry> + 'a {
        let names = self
            .services
            .get(k)
            .map_or(&[][..], |s| s.slices.as_slice());
        let ns = k.0.clone();
        names
            .iter()
            .filter_map(move |n| self.slices.get(&(ns.clone(), n.clone())))
            .map(|s| &s.entry)
    }

    /// Every pod held.
    pub fn for_each_pod(&self, mut f: impl FnMut(PodAddrs)) {
        for (ns, pods) in &self.pods {
            for p in pods.0.iter() {
                f(p.addrs(ns));
            }
        }
    }
}

/// An object in the form the state keeps.
enum Compact {
    Service(Key, ServiceEntry),
    Slice(Key, SliceEntry),
    Pod(Arc<str>, PodRec),
    Namespace(NamespaceInfo),
}

fn key(kind: Kind, ns: &Arc<str>, name: &Arc<str>) -> ObjectKey {
    ObjectKey {
        kind,
        namespace: ns.clone(),
        name: name.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::objects::{EndpointInfo, Protocol};

    #[test]
    fn packed_endpoints_read_back() {
        let eps = vec![
            EndpointInfo {
                addresses: vec!["10.0.0.1".parse().unwrap()],
                ready: true,
                hostname: None,
                pod_name: None,
            },
            EndpointInfo {
                addresses: vec!["10.0.0.2".parse().unwrap(), "fd00::2".parse().unwrap()],
                ready: false,
                hostname: Some("web-0".into()),
                pod_name: Some("web-7d4b9c8f6-abcde".into()),
            },
            EndpointInfo {
                addresses: vec![],
                ready: true,
                hostname: None,
                pod_name: Some("web-7d4b9c8f6-xyz12".into()),
            },
            EndpointInfo {
                addresses: vec!["fd00::3".parse().unwrap()],
                ready: true,
                hostname: Some("h".repeat(200).into()),
                pod_name: Some("db".into()),
            },
        ];
        let s = SliceInfo {
            namespace: "ns".into(),
            name: "s".into(),
            service: Some("svc".into()),
            endpoints: eps.clone(),
            ports: vec![Port {
                name: "http".into(),
                protocol: Protocol::Tcp,
                port: 80,
            }],
        };
        let e = SliceEntry::new(s.service.clone(), &s, Arc::from(&s.ports[..]));
        let mut back = Vec::new();
        e.for_each_endpoint(|v| {
            back.push(EndpointInfo {
                addresses: v.addresses.to_vec(),
                ready: v.ready,
                hostname: v.hostname.map(Into::into),
                pod_name: v.pod_name.map(Into::into),
            })
        });
        assert_eq!(back, eps);
    }

    #[test]
    fn pod_records_read_back_and_are_found_by_name() {
        let many: Vec<IpAddr> = (0..300u32)
            .map(|i| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)))
            .collect();
        let cases: Vec<Vec<IpAddr>> = vec![
            vec![],
            vec!["10.0.0.1".parse().unwrap()],
            vec!["10.0.0.1".parse().unwrap(), "fd00::1".parse().unwrap()],
            many,
        ];
        let h = RandomState::new();
        let mut set = Pods::default();
        for (i, ips) in cases.iter().enumerate() {
            let name = format!("pod-{i}");
            // Odd cases on the host network: the flag shares the count's bytes.
            let host = i % 2 == 1;
            let r = PodRec::new(&name, &Addrs::new(ips), host);
            assert_eq!(r.name(), name);
            assert!(r.listed());
            assert_eq!(r.host_network(), host);
            assert_eq!(r.ips().iter().collect::<Vec<_>>(), *ips);
            set.insert_new(&h, r);
        }
        for (i, ips) in cases.iter().enumerate() {
            let found = set.find_mut(&h, &format!("pod-{i}")).expect("found");
            assert_eq!(found.ips().iter().collect::<Vec<_>>(), *ips);
            found.set_listed(false);
            assert!(!found.listed());
            assert_eq!(found.name(), format!("pod-{i}"));
        }
        assert!(set.find_mut(&h, "pod-9").is_none());
        assert!(set.take(&h, "pod-1").is_some());
        assert!(set.take(&h, "pod-1").is_none());
    }

    fn svc(ns: &str, name: &str, ip: &str) -> Object {
        Object::Service(ServiceInfo {
            namespace: ns.into(),
            name: name.into(),
            kind: ServiceKind::ClusterIp(vec![ip.parse().unwrap()]),
            ports: vec![],
            publish_not_ready: false,
            labels: Default::default(),
            external: vec![],
        })
    }

    fn pod(ns: &str, name: &str, ip: &str) -> Object {
        Object::Pod(crate::cluster::objects::PodInfo {
            namespace: ns.into(),
            name: name.into(),
            ips: vec![ip.parse().unwrap()],
            host_network: false,
        })
    }

    fn slice_of(ns: &str, name: &str, service: &str, ip: &str) -> Object {
        Object::Slice(SliceInfo {
            namespace: ns.into(),
            name: name.into(),
            service: Some(service.into()),
            endpoints: vec![EndpointInfo {
                addresses: vec![ip.parse().unwrap()],
                ready: true,
                hostname: None,
                pod_name: None,
            }],
            ports: vec![],
        })
    }

    fn ns(name: &str) -> Object {
        Object::Namespace(NamespaceInfo {
            name: name.into(),
            labels: Default::default(),
        })
    }

    fn listed(st: &mut ClusterState, kind: Kind, objects: Vec<Object>) -> Changes {
        let mut c = Changes::default();
        st.apply(ClusterEvent::ListBegin { kind }, &mut c);
        for object in objects {
            st.apply(ClusterEvent::Listed { object }, &mut c);
        }
        st.apply(ClusterEvent::ListEnd { kind }, &mut c);
        c
    }

    fn key_of(ns: &str, n: &str) -> Key {
        (ns.into(), n.into())
    }

    /// A list marks what it contains and sweeps the rest; an unchanged object changes nothing.
    #[test]
    fn a_list_sweeps_what_it_did_not_mark() {
        let mut st = ClusterState::default();
        let c = listed(
            &mut st,
            Kind::Service,
            vec![svc("a", "x", "10.0.0.1"), svc("a", "y", "10.0.0.2")],
        );
        assert_eq!(c.services.len(), 2);
        listed(
            &mut st,
            Kind::Pod,
            vec![pod("a", "p", "10.1.0.1"), pod("a", "q", "10.1.0.2")],
        );
        listed(&mut st, Kind::Namespace, vec![ns("a"), ns("b")]);
        listed(
            &mut st,
            Kind::EndpointSlice,
            vec![
                slice_of("a", "x-1", "x", "10.1.0.1"),
                slice_of("a", "y-1", "y", "10.1.0.2"),
            ],
        );
        assert_eq!(st.counts(), [2, 2, 2, 2]);

        // The same cluster listed again: nothing changes.
        assert!(
            listed(
                &mut st,
                Kind::Service,
                vec![svc("a", "y", "10.0.0.2"), svc("a", "x", "10.0.0.1")]
            )
            .is_empty()
        );
        assert!(
            listed(
                &mut st,
                Kind::Pod,
                vec![pod("a", "q", "10.1.0.2"), pod("a", "p", "10.1.0.1")]
            )
            .is_empty()
        );
        assert!(listed(&mut st, Kind::Namespace, vec![ns("b"), ns("a")]).is_empty());

        // One of each gone, one changed.
        let c = listed(&mut st, Kind::Service, vec![svc("a", "y", "10.0.0.22")]);
        assert_eq!(
            c.services,
            HashSet::from([key_of("a", "x"), key_of("a", "y")])
        );
        assert!(st.service(&key_of("a", "x")).is_none());
        assert!(
            st.has_slices(&key_of("a", "x")),
            "the slice of a deleted service stays"
        );
        let c = listed(&mut st, Kind::Pod, vec![pod("a", "q", "10.1.0.3")]);
        assert_eq!(c.pods.len(), 2, "{:?}", c.pods);
        let c = listed(
            &mut st,
            Kind::EndpointSlice,
            vec![slice_of("a", "y-1", "y", "10.1.0.2")],
        );
        assert_eq!(c.services, HashSet::from([key_of("a", "x")]));
        assert!(!st.has_slices(&key_of("a", "x")));
        let c = listed(&mut st, Kind::Namespace, vec![ns("b")]);
        assert_eq!(c.namespaces.len(), 1);
        assert_eq!(st.counts(), [1, 1, 1, 1]);
        let mut pods = Vec::new();
        st.for_each_pod(|p| pods.extend(p.ips.iter()));
        assert_eq!(pods, vec!["10.1.0.3".parse::<IpAddr>().unwrap()]);
    }

    /// A list begun again before its end (a page failed) counts only what the new list lists.
    #[test]
    fn a_list_begun_again_starts_over() {
        let mut st = ClusterState::default();
        listed(
            &mut st,
            Kind::Pod,
            vec![pod("a", "p", "10.1.0.1"), pod("a", "q", "10.1.0.2")],
        );
        let mut c = Changes::default();
        st.apply(ClusterEvent::ListBegin { kind: Kind::Pod }, &mut c);
        st.apply(
            ClusterEvent::Listed {
                object: pod("a", "p", "10.1.0.1"),
            },
            &mut c,
        );
        st.apply(ClusterEvent::ListBegin { kind: Kind::Pod }, &mut c);
        st.apply(
            ClusterEvent::Listed {
                object: pod("a", "q", "10.1.0.2"),
            },
            &mut c,
        );
        st.apply(ClusterEvent::ListEnd { kind: Kind::Pod }, &mut c);
        assert_eq!(st.counts()[3], 1);
        let mut left = Vec::new();
        st.for_each_pod(|p| left.extend(p.ips.iter()));
        assert_eq!(left, vec!["10.1.0.2".parse::<IpAddr>().unwrap()]);
    }

    /// Watch events of one kind during another kind's list, and a batch `Relist`, follow the
    /// same rules.
    #[test]
    fn lists_of_kinds_are_independent() {
        let mut st = ClusterState::default();
        let mut c = Changes::default();
        st.apply(ClusterEvent::ListBegin { kind: Kind::Pod }, &mut c);
        st.apply(
            ClusterEvent::Listed {
                object: pod("a", "p", "10.1.0.1"),
            },
            &mut c,
        );
        st.apply(
            ClusterEvent::Apply {
                object: svc("a", "x", "10.0.0.1"),
                changed_at: None,
            },
            &mut c,
        );
        st.apply(ClusterEvent::ListEnd { kind: Kind::Pod }, &mut c);
        assert!(st.service(&key_of("a", "x")).is_some());
        assert!(st.synced.contains(&Kind::Pod) && !st.synced.contains(&Kind::Service));
        let mut c = Changes::default();
        st.apply(
            ClusterEvent::Relist {
                kind: Kind::Service,
                objects: vec![],
            },
            &mut c,
        );
        assert!(st.service(&key_of("a", "x")).is_none());
        assert_eq!(st.counts()[3], 1);
    }
}
