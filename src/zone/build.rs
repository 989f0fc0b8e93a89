//! Cluster state → zone snapshot, incrementally: only the services, namespaces and pods an
//! event touched are recomputed, and the persistent maps of the previous snapshot are updated
//! in place of being rebuilt.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use crate::cluster::objects::{Kind, Port, ServiceInfo, ServiceKind};
use crate::cluster::selector::Selector;
use crate::cluster::state::{Changes, ClusterState, Key};
use crate::cluster::ClusterEvent;
use crate::config::{ClusterConfig, PodsMode};

use super::snapshot::{dashed_ip, Endpoint, Headless, PtrTarget, RecordsKind, ServiceRecords, Snapshot};
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
    pending: Changes,
    /// Kinds that must be listed before the zone counts as synced.
    required: HashSet<Kind>,
}

impl ZoneBuilder {
    pub fn new(cfg: &ClusterConfig, required: &[Kind]) -> Self {
        let labels = cfg.labels.as_deref().map(Selector::parse).transpose().ok().flatten().unwrap_or_default();
        let namespace_labels = cfg.namespace_labels.as_deref().and_then(|s| Selector::parse(s).ok());
        let mut snap = Snapshot::empty(cfg);
        snap.ns_addrs = Arc::from(default_ns_addrs(cfg, None));
        ZoneBuilder {
            cfg: cfg.clone(),
            labels,
            namespace_labels,
            state: ClusterState::default(),
            snap,
            pending: Changes::default(),
            required: required.iter().copied().collect(),
        }
    }

    /// Take new cluster settings (a config reload): the next publish rebuilds every record from
    /// the state already held, without asking the sources again.
    pub fn reconfigure(&mut self, cfg: &ClusterConfig, required: &[Kind]) {
        let serial = self.snap.serial;
        let state = std::mem::take(&mut self.state);
        let mut fresh = ZoneBuilder::new(cfg, required);
        fresh.snap.serial = serial;
        for (k, s) in &state.services {
            fresh.pending.services.insert(k.clone());
            fresh.pending.ns_touched.insert(s.namespace.clone());
        }
        for n in state.namespaces.keys() {
            fresh.pending.namespaces.insert(n.clone());
        }
        for p in state.pods.values() {
            fresh.pending.pods.push((None, Some(p.clone())));
        }
        fresh.state = state;
        *self = fresh;
    }

    /// Apply one event; nothing is published until [`ZoneBuilder::publish`].
    pub fn apply(&mut self, event: ClusterEvent) {
        self.state.apply(event, &mut self.pending);
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
        !self.pending.is_empty() || self.snap.synced != self.synced() || self.snap.serial == 0
    }

    /// Recompute what changed and return the new snapshot (with a new serial) plus the
    /// services whose change times are known, for latency metrics.
    pub fn publish(&mut self) -> (Arc<Snapshot>, Vec<Programmed>) {
        let changes = std::mem::take(&mut self.pending);
        let mut services: HashSet<Key> = changes.services;
        // A Namespace object that changed may expose or hide all its services, when exposure
        // depends on namespace labels.
        let by_labels = if self.namespace_labels.is_some() { changes.namespaces.iter().collect() } else { Vec::new() };
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
                && let Some(s) = self.state.services.get(key)
            {
                let kind = match &s.kind {
                    ServiceKind::ClusterIp(_) | ServiceKind::ExternalName(_) => crate::ops::metrics::ServiceKind::ClusterIp,
                    ServiceKind::Headless if self.state.slices_by_service.contains_key(key) => {
                        crate::ops::metrics::ServiceKind::HeadlessWithSelector
                    }
                    ServiceKind::Headless => crate::ops::metrics::ServiceKind::HeadlessWithoutSelector,
                };
                programmed.push(Programmed { kind, changed_at: *t });
            }
        }
        for ns in &touched_ns {
            self.update_namespace(ns);
        }
        for (old, new) in changes.pods {
            if let Some(p) = old {
                for ip in &p.ips {
                    let k = pod_key(&p.namespace, ip);
                    let n = self.snap.pods.get(&k).copied().unwrap_or(0);
                    if n <= 1 {
                        self.snap.pods.remove(&k);
                    } else {
                        self.snap.pods.insert(k, n - 1);
                    }
                }
            }
            if let Some(p) = new {
                for ip in &p.ips {
                    *self.snap.pods.entry(pod_key(&p.namespace, ip)).or_insert(0) += 1;
                }
            }
        }
        if services.iter().any(|(ns, n)| &**ns == "kube-system" && &**n == "kube-dns") {
            let kube_dns = self.state.services.get(&(Arc::from("kube-system"), Arc::from("kube-dns")));
            self.snap.ns_addrs = Arc::from(default_ns_addrs(&self.cfg, kube_dns));
        }
        self.snap.synced = self.synced();
        // RFC 1982 serial arithmetic: any change must increase the serial. Seconds since the
        // epoch, as CoreDNS uses, but never less than the previous serial + 1.
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs() as u32).unwrap_or(0);
        self.snap.serial = now.max(self.snap.serial.wrapping_add(1));
        (Arc::new(self.snap.clone()), programmed)
    }

    fn exposed_ns(&self, ns: &str) -> bool {
        if !self.cfg.namespaces.is_empty() && !self.cfg.namespaces.iter().any(|n| n.eq_ignore_ascii_case(ns)) {
            return false;
        }
        if let Some(sel) = &self.namespace_labels {
            return match self.state.namespaces.get(ns) {
                Some(n) => sel.matches(&n.labels),
                None => false,
            };
        }
        true
    }

    fn update_namespace(&mut self, ns: &Arc<str>) {
        let k = encode_labels(&[ns]);
        let exists = self.exposed_ns(ns)
            && (self.state.namespaces.contains_key(ns)
                || self.state.services_by_ns.get(ns).is_some_and(|s| {
                    s.iter().any(|n| self.snap.services.contains_key(&*encode_labels(&[n, ns])))
                }));
        if exists {
            self.snap.namespaces.insert(k, 1);
        } else {
            self.snap.namespaces.remove(&k);
        }
    }

    fn update_service(&mut self, key: &Key) {
        let wire_key = encode_labels(&[&key.1, &key.0]);
        let old = self.snap.services.get(&wire_key).cloned();
        let new = self.state.services.get(key).filter(|s| self.exposed_ns(&s.namespace) && self.labels.matches(&s.labels)).and_then(|s| {
            let recs = build_service(&self.cfg, s, &self.state, key);
            // `ignore empty_service`: a service with no ready endpoints does not exist.
            let empty = recs.endpoints.endpoints.is_empty() && !matches!(recs.kind, RecordsKind::External { .. });
            if self.cfg.ignore_empty_service && empty { None } else { Some(Arc::new(recs)) }
        });
        if let Some(o) = &old {
            for ip in reverse_ips(o) {
                if let Some(list) = self.snap.reverse.get(&ip) {
                    let kept: Vec<PtrTarget> = list.iter().filter(|t| !Arc::ptr_eq(&t.service, o)).cloned().collect();
                    if kept.is_empty() {
                        self.snap.reverse.remove(&ip);
                    } else {
                        self.snap.reverse.insert(ip, Arc::from(kept));
                    }
                }
            }
        }
        match new {
            Some(n) => {
                add_reverse(&mut self.snap, &n);
                self.snap.services.insert(wire_key, n);
            }
            None => {
                self.snap.services.remove(&wire_key);
            }
        }
    }
}

fn pod_key(ns: &str, ip: &IpAddr) -> Box<[u8]> {
    let mut k = encode_labels(&[ns]).into_vec();
    match ip {
        IpAddr::V4(a) => k.extend_from_slice(&a.to_ipv6_mapped().octets()),
        IpAddr::V6(a) => k.extend_from_slice(&a.octets()),
    }
    k.into_boxed_slice()
}

/// The lookup key of a pod record: namespace label (wire) + the address as 16 bytes.
pub fn pod_lookup_key(ns_label_wire: &[u8], ip: &IpAddr, out: &mut [u8; 96]) -> usize {
    let n = ns_label_wire.len();
    out[..n].copy_from_slice(ns_label_wire);
    let o = match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    };
    out[n..n + 16].copy_from_slice(&o);
    n + 16
}

fn reverse_ips(s: &ServiceRecords) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = s.endpoints.endpoints.iter().map(|e| e.ip).collect();
    if let RecordsKind::ClusterIp { v4, v6, .. } = &s.kind {
        v.extend(v4.iter().map(|a| IpAddr::V4(*a)));
        v.extend(v6.iter().map(|a| IpAddr::V6(*a)));
    }
    v.sort();
    v.dedup();
    v
}

fn add_reverse(snap: &mut Snapshot, s: &Arc<ServiceRecords>) {
    let mut add = |ip: IpAddr, t: PtrTarget| {
        let mut list: Vec<PtrTarget> = snap.reverse.get(&ip).map(|l| l.to_vec()).unwrap_or_default();
        if !list.contains(&t) {
            list.push(t);
            // Service names before endpoint names (CoreDNS answers a ClusterIP with its
            // service), then by name, so the answer does not depend on map order.
            list.sort_by(|a, b| (a.endpoint.is_some(), &a.service.labels, a.endpoint).cmp(&(b.endpoint.is_some(), &b.service.labels, b.endpoint)));
            snap.reverse.insert(ip, Arc::from(list));
        }
    };
    if let RecordsKind::ClusterIp { v4, v6, .. } = &s.kind {
        for ip in v4.iter().map(|a| IpAddr::V4(*a)).chain(v6.iter().map(|a| IpAddr::V6(*a))) {
            add(ip, PtrTarget { service: s.clone(), endpoint: None });
        }
    }
    for (i, e) in s.endpoints.endpoints.iter().enumerate() {
        add(e.ip, PtrTarget { service: s.clone(), endpoint: Some(i as u32) });
    }
}

fn default_ns_addrs(cfg: &ClusterConfig, kube_dns: Option<&ServiceInfo>) -> Vec<IpAddr> {
    if !cfg.nameserver_ips.is_empty() {
        return cfg.nameserver_ips.clone();
    }
    if let Some(ServiceInfo { kind: ServiceKind::ClusterIp(ips), .. }) = kube_dns {
        return ips.clone();
    }
    if let Ok(ip) = std::env::var("POD_IP")
        && let Ok(ip) = ip.parse()
    {
        return vec![ip];
    }
    vec![IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)]
}

/// The records of one service from its spec and its EndpointSlices.
pub fn build_service(cfg: &ClusterConfig, s: &ServiceInfo, state: &ClusterState, key: &Key) -> ServiceRecords {
    let labels = encode_labels(&[&s.name, &s.namespace, "svc"]);
    let mut port_sets: Vec<Box<[Port]>> = Vec::new();
    let mut eps: Vec<Endpoint> = Vec::new();
    if !cfg.noendpoints {
        for slice in state.slices_of(key) {
            let set: Box<[Port]> = slice.ports.clone().into_boxed_slice();
            let idx = match port_sets.iter().position(|p| *p == set) {
                Some(i) => i,
                None => {
                    port_sets.push(set);
                    port_sets.len() - 1
                }
            } as u16;
            for ep in &slice.endpoints {
                if !(ep.ready || s.publish_not_ready) {
                    continue;
                }
                for ip in &ep.addresses {
                    let host: String = match (&ep.hostname, &ep.pod_name) {
                        (Some(h), _) => h.to_string(),
                        (None, Some(p)) if cfg.endpoint_pod_names => p.to_string(),
                        _ => dashed_ip(ip),
                    };
                    if host.is_empty() || host.len() > 63 {
                        continue;
                    }
                    eps.push(Endpoint { host: encode_labels(&[&host]), ip: *ip, port_set: idx });
                }
            }
        }
    }
    eps.sort_by(|a, b| (&a.host, a.ip).cmp(&(&b.host, b.ip)));
    eps.dedup_by(|a, b| a.host == b.host && a.ip == b.ip);
    if port_sets.is_empty() {
        port_sets.push(Box::new([]));
    }
    let endpoints = Headless { endpoints: eps.into_boxed_slice(), port_sets: port_sets.into_boxed_slice() };
    let ports: Box<[Port]> = s.ports.clone().into_boxed_slice();
    let kind = match &s.kind {
        ServiceKind::ClusterIp(ips) => {
            let mut v4: Vec<_> = ips.iter().filter_map(|i| if let IpAddr::V4(a) = i { Some(*a) } else { None }).collect();
            let mut v6: Vec<_> = ips.iter().filter_map(|i| if let IpAddr::V6(a) = i { Some(*a) } else { None }).collect();
            v4.dedup();
            v6.dedup();
            RecordsKind::ClusterIp { v4: v4.into(), v6: v6.into(), ports }
        }
        ServiceKind::Headless => RecordsKind::Headless,
        ServiceKind::ExternalName(target) => {
            let mut t = Vec::new();
            crate::wire::encode_name(target, &mut t).unwrap_or_else(|_| t.push(0));
            RecordsKind::External { target: t.into_boxed_slice(), ports }
        }
    };
    ServiceRecords { labels, kind, endpoints }
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
