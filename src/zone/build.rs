//! Cluster state → zone snapshot, incrementally: only the services, namespaces and pods an
//! event touched are recomputed, and the persistent maps of the previous snapshot are updated
//! in place of being rebuilt.
//!
//! A list in progress ([`ClusterEvent::ListBegin`] .. [`ClusterEvent::ListEnd`]) is applied to
//! the state object by object, but what it changes is held back and published with its end:
//! until then DNS answers the last complete state. Lists of different kinds are independent,
//! and changes from watch events are published at once, during any list: a Service change
//! never waits for a list of 150,000 Pods.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use crate::cluster::ClusterEvent;
use crate::cluster::objects::{ExternalAddr, Kind};
use crate::cluster::selector::Selector;
use crate::cluster::state::{Changes, ClusterState, EntryKind, Key, ServiceEntry};
use crate::config::{ClusterConfig, PodsMode};

use super::serial::{SerialSource, Serials};
use super::snapshot::{
    ClusterIps, Endpoints, ExternalAddrs, Label, NewEndpoint, Ports, RecordsKind, ServiceRecords,
    Snapshot, dashed_label,
};
use crate::wire::encode_labels;

/// A service whose records were published, for the programming-duration metric.
#[derive(Debug, Clone)]
pub struct Programmed {
    pub kind: crate::ops::metrics::ServiceKind,
    pub changed_at: SystemTime,
}

/// Owns the cluster state and the current snapshot; turns events into new snapshots.
pub struct ZoneBuilder {
    cfg: ClusterConfig,
    labels: Selector,
    namespace_labels: Option<Selector>,
    state: ClusterState,
    snap: Snapshot,
    /// What applied events changed, for the next publish.
    pending: Changes,
    /// What each list in progress changed so far: published with its end.
    listing: BTreeMap<Kind, Changes>,
    /// Kinds that must be listed before the zone counts as synced.
    required: HashSet<Kind>,
    /// Service ids ([`ServiceRecords::id`]) given back, and the next never given.
    free_ids: Vec<u32>,
    next_id: u32,
    /// Where serials come from, and the API revision the state is at (`zone::serial`).
    serials: Serials,
    /// The serial of the last synced snapshot published (None before the first).
    synced_serial: Option<u32>,
    /// Whether anything was published yet (the first publish happens even with no change).
    published: bool,
    /// Keep the namespace of each pod's address ([`Snapshot::pod_namespaces`], for autopath).
    client_namespaces: bool,
}

impl ZoneBuilder {
    pub fn new(cfg: &ClusterConfig, required: &[Kind]) -> Self {
        let labels = cfg
            .labels
            .as_deref()
            .map(Selector::parse)
            .transpose()
            .ok()
            .flatten()
            .unwrap_or_default();
        let namespace_labels = cfg
            .namespace_labels
            .as_deref()
            .and_then(|s| Selector::parse(s).ok());
        let mut snap = Snapshot::empty(cfg);
        snap.ns_addrs = Arc::from(default_ns_addrs(cfg, None));
        ZoneBuilder {
            cfg: cfg.clone(),
            labels,
            namespace_labels,
            state: ClusterState::default(),
            snap,
            pending: Changes::default(),
            listing: BTreeMap::new(),
            required: required.iter().copied().collect(),
            free_ids: Vec::new(),
            next_id: 0,
            serials: Serials::default(),
            synced_serial: None,
            published: false,
            client_namespaces: false,
        }
    }

    /// Derive serials from `source` (the Kubernetes source: API revisions; default: the clock).
    pub fn set_serial_source(&mut self, source: SerialSource) {
        self.serials = Serials::new(source);
    }

    /// Also index which namespace the pod holding each address is in (autopath's clients):
    /// Pods must then be listed before the zone counts as synced. Set at start; a reload keeps
    /// it (the Pod watch is started with the source).
    pub fn with_client_namespaces(mut self, on: bool) -> Self {
        self.client_namespaces = on;
        if on {
            self.required.insert(Kind::Pod);
        }
        self
    }

    /// Take new cluster settings (a config reload): the next publish rebuilds every record from
    /// the state already held, without asking the sources again.
    pub fn reconfigure(&mut self, cfg: &ClusterConfig, required: &[Kind]) {
        let serial = self.snap.serial;
        let was_synced = self.synced();
        let state = std::mem::take(&mut self.state);
        let mut fresh =
            ZoneBuilder::new(cfg, required).with_client_namespaces(self.client_namespaces);
        if was_synced {
            // A kind required anew (pods, for `pods: verified`) is listed by the watch the
            // reload starts; meanwhile the zone answers from what it holds instead of turning
            // every name it does not hold into SERVFAIL.
            fresh.required.retain(|k| state.synced.contains(k));
        }
        fresh.snap.serial = serial;
        fresh.serials = self.serials.clone();
        fresh.synced_serial = self.synced_serial;
        fresh.published = self.published;
        // The fresh build covers everything the state holds, lists in progress included; their
        // later objects are still held until their ends.
        fresh.listing = self
            .listing
            .keys()
            .map(|k| (*k, Changes::default()))
            .collect();
        for k in state.service_keys() {
            fresh.pending.services.insert(k.clone());
            fresh.pending.ns_touched.insert(k.0.clone());
        }
        for n in state.namespace_names() {
            fresh.pending.namespaces.insert(n.clone());
        }
        state.for_each_pod(|p| fresh.pending.pods.push((None, Some(p))));
        fresh.state = state;
        *self = fresh;
    }

    /// Apply one event; nothing is published until [`ZoneBuilder::publish`], and nothing a list
    /// changes until its end.
    ///
    /// An event at an API revision raises the revision the serial is derived from when it
    /// changed the state (or may have: an event for something already changed since the last
    /// publish is counted, the safe side, see `zone::serial`), and always for a kind's first
    /// list (after a restart, the lists' revision is what keeps the serial from going back).
    pub fn apply(&mut self, event: ClusterEvent) {
        match event {
            ClusterEvent::AtRevision { revision, event } => {
                let first_list = matches!(event.inner(), ClusterEvent::Relist { kind, .. } | ClusterEvent::ListEnd { kind }
                    if !self.state.synced.contains(kind));
                let pending_before = touched(&self.pending);
                self.apply(*event);
                if first_list || pending_before > 0 || touched(&self.pending) > 0 {
                    self.serials.observe(revision);
                }
            }
            ClusterEvent::ListBegin { kind } => {
                // A list begun again keeps what its unfinished start changed: those objects are
                // in the state, and this list will confirm or remove them.
                self.listing.entry(kind).or_default();
                self.state.begin_list(kind);
            }
            ClusterEvent::Listed { object } => match self.listing.get_mut(&object.kind()) {
                Some(held) => self.state.apply(ClusterEvent::Listed { object }, held),
                None => {
                    tracing::debug!(kind = ?object.kind(), "an object listed outside a list");
                    self.state
                        .apply(ClusterEvent::Listed { object }, &mut self.pending)
                }
            },
            ClusterEvent::ListEnd { kind } => {
                let mut changed = self.listing.remove(&kind).unwrap_or_default();
                self.state.end_list(kind, &mut changed);
                self.pending.merge(changed);
            }
            event => self.state.apply(event, &mut self.pending),
        }
    }

    /// The API revision the state is at, when the source has revisions.
    pub fn revision(&self) -> Option<u64> {
        self.serials.revision()
    }

    /// Whether a list of `kind` is in progress.
    pub fn listing(&self, kind: Kind) -> bool {
        self.listing.contains_key(&kind)
    }

    /// Whether every required kind has completed its first list.
    pub fn synced(&self) -> bool {
        self.required.iter().all(|k| self.state.synced.contains(k))
    }

    pub fn state(&self) -> &ClusterState {
        &self.state
    }

    /// Whether applied events changed anything since the last publish (or sync state changed).
    pub fn has_changes(&self) -> bool {
        !self.pending.is_empty() || self.snap.synced != self.synced() || !self.published
    }

    /// Recompute what changed and return the new snapshot (with a new serial) plus the
    /// services whose change times are known, for latency metrics.
    pub fn publish(&mut self) -> (Arc<Snapshot>, Vec<Programmed>) {
        let changes = std::mem::take(&mut self.pending);
        let mut services: HashSet<Key> = changes.services;
        // A Namespace object that changed may expose or hide all its services, when exposure
        // depends on namespace labels.
        let by_labels = if self.namespace_labels.is_some() {
            changes.namespaces.iter().collect()
        } else {
            Vec::new()
        };
        for ns in by_labels {
            if let Some(names) = self.state.services_by_ns.get(ns) {
                for n in names {
                    services.insert((ns.clone(), n.clone()));
                }
            }
        }
        let mut programmed = Vec::new();
        let mut touched_ns: HashSet<Arc<str>> = changes.namespaces;
        touched_ns.extend(changes.ns_touched);
        for key in &services {
            touched_ns.insert(key.0.clone());
            self.update_service(key);
            if let Some(t) = changes.changed_at.get(key)
                && let Some(s) = self.state.service(key)
            {
                let kind = match &s.kind {
                    EntryKind::ClusterIp(_) | EntryKind::ExternalName(_) => {
                        crate::ops::metrics::ServiceKind::ClusterIp
                    }
                    EntryKind::Headless if self.state.has_slices(key) => {
                        crate::ops::metrics::ServiceKind::HeadlessWithSelector
                    }
                    EntryKind::Headless => {
                        crate::ops::metrics::ServiceKind::HeadlessWithoutSelector
                    }
                };
                programmed.push(Programmed {
                    kind,
                    changed_at: *t,
                });
            }
        }
        for ns in &touched_ns {
            self.update_namespace(ns);
        }
        // Pods feed two indexes: (namespace, address) for `pods verified`, and address →
        // namespace for autopath, which leaves host-network pods out (their address is the
        // node's: it names no one client).
        let verified = self.cfg.pods == PodsMode::Verified;
        for (old, new) in changes.pods {
            if let Some(p) = old {
                let ns = encode_labels(&[&p.namespace]);
                for ip in p.ips.iter() {
                    if verified {
                        self.snap.pods.remove(&ns, &ip);
                    }
                    if self.client_namespaces && !p.host_network {
                        self.snap.pod_namespaces.remove(&ns, ip);
                    }
                }
            }
            if let Some(p) = new {
                let ns = encode_labels(&[&p.namespace]);
                for ip in p.ips.iter() {
                    if verified {
                        self.snap.pods.add(&ns, &ip);
                    }
                    if self.client_namespaces && !p.host_network {
                        self.snap.pod_namespaces.add(&ns, ip);
                    }
                }
            }
        }
        if services
            .iter()
            .any(|(ns, n)| &**ns == "kube-system" && &**n == "kube-dns")
        {
            let kube_dns = self
                .state
                .service(&(Arc::from("kube-system"), Arc::from("kube-dns")));
            self.snap.ns_addrs = Arc::from(default_ns_addrs(&self.cfg, kube_dns));
        }
        self.snap.synced = self.synced();
        // Every synced snapshot has a serial above the last one (RFC 1982), derived from the
        // API state where the source has revisions (`zone::serial`).
        self.snap.serial = self.serials.next(self.synced_serial);
        if self.snap.synced {
            self.synced_serial = Some(self.snap.serial);
        }
        self.published = true;
        (Arc::new(self.snap.clone()), programmed)
    }

    fn exposed_ns(&self, ns: &str) -> bool {
        if !self.cfg.namespaces.is_empty()
            && !self
                .cfg
                .namespaces
                .iter()
                .any(|n| n.eq_ignore_ascii_case(ns))
        {
            return false;
        }
        if let Some(sel) = &self.namespace_labels {
            return match self.state.namespace(ns) {
                Some(n) => sel.matches(&n.labels),
                None => false,
            };
        }
        true
    }

    fn update_namespace(&mut self, ns: &Arc<str>) {
        let k = encode_labels(&[ns]);
        let exists = self.exposed_ns(ns)
            && (self.state.namespace(ns).is_some()
                || self.state.services_by_ns.get(ns).is_some_and(|s| {
                    s.iter()
                        .any(|n| self.snap.services.contains_key(&encode_labels(&[n, ns])))
                }));
        if exists {
            self.snap.namespaces.insert(k);
        } else {
            self.snap.namespaces.remove(&k);
        }
    }

    fn update_service(&mut self, key: &Key) {
        let wire_key = encode_labels(&[&key.1, &key.0]);
        let old = self.snap.services.get(&wire_key).cloned();
        let id = match &old {
            Some(o) => o.id,
            None => self.free_ids.pop().unwrap_or_else(|| {
                self.next_id += 1;
                self.next_id - 1
            }),
        };
        let new = self
            .state
            .service(key)
            .filter(|s| self.exposed_ns(&key.0) && self.selected(s))
            .and_then(|s| {
                let recs = build_service(&self.cfg, s, &self.state, key, id);
                // `ignore empty_service`: a service with no ready endpoints does not exist.
                let empty =
                    recs.endpoints.is_empty() && !matches!(recs.kind, RecordsKind::External { .. });
                if self.cfg.ignore_empty_service && empty {
                    None
                } else {
                    Some(Arc::new(recs))
                }
            });
        // The reverse map points at the service by id: only addresses gained or lost change it.
        let old_ips = old.as_ref().map(|o| o.reverse_ips()).unwrap_or_default();
        let new_ips = new.as_ref().map(|n| n.reverse_ips()).unwrap_or_default();
        for ip in old_ips
            .iter()
            .filter(|ip| new_ips.binary_search(ip).is_err())
        {
            self.snap.reverse.remove(*ip, id);
        }
        for ip in new_ips
            .iter()
            .filter(|ip| old_ips.binary_search(ip).is_err())
        {
            self.snap.reverse.add(*ip, id);
        }
        match new {
            Some(n) => {
                self.snap.reverse.set_service(&n);
                self.snap.services.insert(n);
            }
            None => {
                if old.is_some() {
                    self.snap.reverse.remove_service(id);
                    self.snap.services.remove(&wire_key);
                }
                self.free_ids.push(id);
            }
        }
    }

    /// Whether the `labels` selector takes the service.
    fn selected(&self, s: &ServiceEntry) -> bool {
        self.labels == Selector::default() || self.labels.matches(&s.labels_map())
    }
}

/// How much is waiting to be published (0: nothing).
fn touched(c: &Changes) -> usize {
    c.services.len() + c.namespaces.len() + c.ns_touched.len() + c.pods.len()
}

fn default_ns_addrs(cfg: &ClusterConfig, kube_dns: Option<&ServiceEntry>) -> Vec<IpAddr> {
    if !cfg.nameserver_ips.is_empty() {
        return cfg.nameserver_ips.clone();
    }
    if let Some(ServiceEntry {
        kind: EntryKind::ClusterIp(ips),
        ..
    }) = kube_dns
    {
        return ips.iter().collect();
    }
    if let Ok(ip) = std::env::var("POD_IP")
        && let Ok(ip) = ip.parse()
    {
        return vec![ip];
    }
    vec![IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)]
}

/// The records of one service from its spec and its EndpointSlices.
pub fn build_service(
    cfg: &ClusterConfig,
    s: &ServiceEntry,
    state: &ClusterState,
    key: &Key,
    id: u32,
) -> ServiceRecords {
    let labels = encode_labels(&[&key.1, &key.0, "svc"]);
    let mut port_sets: Vec<Ports> = Vec::new();
    /// An endpoint before sorting: its name label, whether that is its own name (not the
    /// dashed address), its address and port set.
    struct Pending {
        label: Label,
        own: bool,
        ip: IpAddr,
        port_set: u16,
    }
    let mut eps: Vec<Pending> = Vec::new();
    if !cfg.noendpoints {
        for slice in state.slices_of(key) {
            let idx = match port_sets.iter().position(|p| *p == slice.ports) {
                Some(i) => i,
                None => {
                    port_sets.push(slice.ports.clone());
                    port_sets.len() - 1
                }
            } as u16;
            slice.for_each_endpoint(|ep| {
                if !(ep.ready || s.publish_not_ready) {
                    return;
                }
                for ip in ep.addresses {
                    let name = match (ep.hostname, ep.pod_name) {
                        (Some(h), _) => Some(h),
                        (None, Some(p)) if cfg.endpoint_pod_names => Some(p),
                        _ => None,
                    };
                    let (label, own) = match name {
                        Some(n) => match Label::from_text(n.as_bytes()) {
                            Some(l) => (l, true),
                            None => continue,
                        },
                        None => (dashed_label(ip), false),
                    };
                    eps.push(Pending {
                        label,
                        own,
                        ip: *ip,
                        port_set: idx,
                    });
                }
            });
        }
    }
    // Stable: of equal names and addresses, the first slice's endpoint stays.
    eps.sort_by(|a, b| (a.label.as_bytes(), a.ip).cmp(&(b.label.as_bytes(), b.ip)));
    eps.dedup_by(|a, b| a.label == b.label && a.ip == b.ip);
    let list: Vec<NewEndpoint<'_>> = eps
        .iter()
        .map(|e| NewEndpoint {
            name: e.own.then(|| e.label.as_bytes()),
            ip: e.ip,
            port_set: e.port_set,
        })
        .collect();
    let endpoints = Endpoints::new(&list, port_sets, state.no_ports());
    let ports: Ports = s.ports.clone();
    let kind = match &s.kind {
        EntryKind::ClusterIp(ips) => {
            let mut v4: Vec<_> = ips
                .iter()
                .filter_map(|i| if let IpAddr::V4(a) = i { Some(a) } else { None })
                .collect();
            let mut v6: Vec<_> = ips
                .iter()
                .filter_map(|i| if let IpAddr::V6(a) = i { Some(a) } else { None })
                .collect();
            v4.dedup();
            v6.dedup();
            RecordsKind::ClusterIp {
                ips: ClusterIps::new(v4, v6),
                ports,
            }
        }
        EntryKind::Headless => RecordsKind::Headless,
        EntryKind::ExternalName(target) => {
            let mut t = Vec::new();
            crate::wire::encode_name(target, &mut t).unwrap_or_else(|_| t.push(0));
            RecordsKind::External {
                target: t.into_boxed_slice(),
                ports,
            }
        }
    };
    let external = (!s.external.is_empty()).then(|| {
        let mut ips = Vec::new();
        let mut hosts = Vec::new();
        for a in s.external.iter() {
            match a {
                ExternalAddr::Ip(ip) => ips.push(*ip),
                ExternalAddr::Host(h) => {
                    let mut t = Vec::new();
                    if crate::wire::encode_name(h, &mut t).is_ok() {
                        hosts.push(t.into_boxed_slice());
                    }
                }
            }
        }
        Box::new(ExternalAddrs {
            ips: ips.into(),
            hosts: hosts.into(),
            ports: s.ports.clone(),
        })
    });
    ServiceRecords {
        labels,
        kind,
        endpoints,
        id,
        external,
    }
}

/// Pods mode needs the Pod watch only when verified.
pub fn required_kinds(cfg: &ClusterConfig) -> Vec<Kind> {
    let mut k = vec![Kind::Namespace, Kind::Service];
    if !cfg.noendpoints {
        k.push(Kind::EndpointSlice);
    }
    if cfg.pods == PodsMode::Verified {
        k.push(Kind::Pod);
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Object;
    use crate::cluster::objects::{PodInfo, ServiceInfo, ServiceKind};

    fn svc(name: &str, ip: &str) -> Object {
        Object::Service(ServiceInfo {
            namespace: "ns".into(),
            name: name.into(),
            kind: ServiceKind::ClusterIp(vec![ip.parse().unwrap()]),
            ports: vec![],
            publish_not_ready: false,
            labels: Default::default(),
            external: vec![],
        })
    }

    fn pod(name: &str, ip: &str) -> Object {
        Object::Pod(PodInfo {
            namespace: "ns".into(),
            name: name.into(),
            ips: vec![ip.parse().unwrap()],
            host_network: false,
        })
    }

    fn has_svc(snap: &Snapshot, name: &str) -> bool {
        snap.services.contains_key(&encode_labels(&[name, "ns"]))
    }

    fn has_pod(snap: &Snapshot, ip: &str) -> bool {
        snap.pods
            .contains(&encode_labels(&["ns"]), &ip.parse().unwrap())
    }

    /// What a list changes is published with its end, not before; a watch event of another
    /// kind is published at once, in the middle of the list.
    #[test]
    fn a_list_is_published_whole_and_other_kinds_do_not_wait() {
        let cfg = ClusterConfig {
            pods: PodsMode::Verified,
            ..ClusterConfig::default()
        };
        let mut b = ZoneBuilder::new(&cfg, &required_kinds(&cfg));
        for kind in Kind::ALL {
            b.apply(ClusterEvent::Relist {
                kind,
                objects: vec![],
            });
        }
        b.apply(ClusterEvent::Apply {
            object: pod("old", "10.1.0.9"),
            changed_at: None,
        });
        let (snap, _) = b.publish();
        assert!(snap.synced && has_pod(&snap, "10.1.0.9"));

        b.apply(ClusterEvent::ListBegin { kind: Kind::Pod });
        b.apply(ClusterEvent::Listed {
            object: pod("new", "10.1.0.1"),
        });
        assert!(b.listing(Kind::Pod));
        assert!(!b.has_changes(), "a list in progress publishes nothing");
        b.apply(ClusterEvent::Apply {
            object: svc("web", "10.0.0.1"),
            changed_at: None,
        });
        assert!(b.has_changes());
        let (snap, _) = b.publish();
        assert!(
            has_svc(&snap, "web"),
            "the service change is published during the list"
        );
        assert!(
            !has_pod(&snap, "10.1.0.1"),
            "the list's changes wait for its end"
        );
        assert!(has_pod(&snap, "10.1.0.9"), "so does its sweep");

        b.apply(ClusterEvent::ListEnd { kind: Kind::Pod });
        assert!(!b.listing(Kind::Pod));
        let (snap, _) = b.publish();
        assert!(has_pod(&snap, "10.1.0.1"));
        assert!(
            !has_pod(&snap, "10.1.0.9"),
            "the pod the list did not list is gone"
        );
        assert!(has_svc(&snap, "web"));
    }

    /// A settings reload during a list rebuilds from the state held; the list's remaining
    /// objects and its sweep still wait for its end.
    #[test]
    fn a_reload_during_a_list_keeps_it_whole() {
        let cfg = ClusterConfig {
            pods: PodsMode::Verified,
            ..ClusterConfig::default()
        };
        let mut b = ZoneBuilder::new(&cfg, &required_kinds(&cfg));
        for kind in Kind::ALL {
            b.apply(ClusterEvent::Relist {
                kind,
                objects: vec![pod("a", "10.1.0.1"), pod("b", "10.1.0.2")]
                    .into_iter()
                    .filter(|o| o.kind() == kind)
                    .collect(),
            });
        }
        b.publish();
        b.apply(ClusterEvent::ListBegin { kind: Kind::Pod });
        b.apply(ClusterEvent::Listed {
            object: pod("a", "10.1.0.1"),
        });
        b.reconfigure(&cfg, &required_kinds(&cfg));
        let (snap, _) = b.publish();
        assert!(has_pod(&snap, "10.1.0.1") && has_pod(&snap, "10.1.0.2"));
        b.apply(ClusterEvent::Listed {
            object: pod("c", "10.1.0.3"),
        });
        assert!(!b.has_changes());
        b.apply(ClusterEvent::ListEnd { kind: Kind::Pod });
        let (snap, _) = b.publish();
        assert!(has_pod(&snap, "10.1.0.1") && has_pod(&snap, "10.1.0.3"));
        assert!(!has_pod(&snap, "10.1.0.2"));
        assert_eq!(snap.pods.len(), 2);
    }
}
