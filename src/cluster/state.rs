//! Compact per-kind indexes of the cluster, updated by [`super::ClusterEvent`]s.
//!
//! Applying an event records what it touched ([`Changes`]): the zone builder then recomputes
//! only those services, namespaces and pods. Objects equal to what is already held change
//! nothing, so a relist that finds the cluster as it was publishes no new snapshot.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use super::objects::{Kind, NamespaceInfo, Object, ObjectKey, PodInfo, ServiceInfo, SliceInfo};
use super::ClusterEvent;

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
    pub pods: Vec<(Option<PodInfo>, Option<PodInfo>)>,
    /// Earliest cluster-side change time per service touched, for programming latency.
    pub changed_at: HashMap<Key, SystemTime>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.services.is_empty() && self.namespaces.is_empty() && self.ns_touched.is_empty() && self.pods.is_empty()
    }
}

/// The cluster as DNS sees it.
#[derive(Debug, Default)]
pub struct ClusterState {
    pub services: HashMap<Key, ServiceInfo>,
    pub slices: HashMap<Key, SliceInfo>,
    /// `(namespace, service)` → slice names.
    pub slices_by_service: HashMap<Key, BTreeSet<Arc<str>>>,
    pub services_by_ns: HashMap<Arc<str>, BTreeSet<Arc<str>>>,
    pub pods: HashMap<Key, PodInfo>,
    pub namespaces: HashMap<Arc<str>, NamespaceInfo>,
    /// Kinds that have completed a full list.
    pub synced: BTreeSet<Kind>,
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
            ClusterEvent::Relist { kind, objects } => {
                self.relist(kind, objects, changes);
                self.synced.insert(kind);
            }
            ClusterEvent::ReplaceAll { objects } => {
                let mut by_kind: HashMap<Kind, Vec<Object>> = HashMap::new();
                for o in objects {
                    by_kind.entry(o.key().kind).or_default().push(o);
                }
                for kind in [Kind::Namespace, Kind::Service, Kind::EndpointSlice, Kind::Pod] {
                    self.relist(kind, by_kind.remove(&kind).unwrap_or_default(), changes);
                    self.synced.insert(kind);
                }
            }
            ClusterEvent::WatchRestart { .. } => {}
        }
    }

    fn service_keys_of(&self, o: &Object) -> Vec<Key> {
        match o {
            Object::Service(s) => vec![(s.namespace.clone(), s.name.clone())],
            Object::Slice(s) => s.service.iter().map(|svc| (s.namespace.clone(), svc.clone())).collect(),
            _ => vec![],
        }
    }

    fn relist(&mut self, kind: Kind, objects: Vec<Object>, changes: &mut Changes) {
        let listed: HashSet<ObjectKey> = objects.iter().map(Object::key).collect();
        let gone: Vec<ObjectKey> = match kind {
            Kind::Service => self.services.keys().map(|(ns, n)| key(kind, ns, n)).collect(),
            Kind::EndpointSlice => self.slices.keys().map(|(ns, n)| key(kind, ns, n)).collect(),
            Kind::Pod => self.pods.keys().map(|(ns, n)| key(kind, ns, n)).collect(),
            Kind::Namespace => self.namespaces.keys().map(|n| key(kind, &Arc::from(""), n)).collect(),
        };
        for k in gone.into_iter().filter(|k| !listed.contains(k)) {
            self.remove(&k, changes);
        }
        for o in objects {
            self.upsert(o, changes);
        }
    }

    fn upsert(&mut self, object: Object, changes: &mut Changes) {
        match object {
            Object::Service(s) => {
                let k = (s.namespace.clone(), s.name.clone());
                if self.services.get(&k) == Some(&s) {
                    return;
                }
                self.services_by_ns.entry(k.0.clone()).or_default().insert(k.1.clone());
                changes.ns_touched.insert(k.0.clone());
                changes.services.insert(k.clone());
                self.services.insert(k, s);
            }
            Object::Slice(s) => {
                let k = (s.namespace.clone(), s.name.clone());
                if self.slices.get(&k) == Some(&s) {
                    return;
                }
                if let Some(old) = self.slices.remove(&k) {
                    self.unlink_slice(&old, changes);
                }
                if let Some(svc) = &s.service {
                    let sk = (s.namespace.clone(), svc.clone());
                    self.slices_by_service.entry(sk.clone()).or_default().insert(s.name.clone());
                    changes.services.insert(sk);
                }
                self.slices.insert(k, s);
            }
            Object::Pod(p) => {
                let k = (p.namespace.clone(), p.name.clone());
                let old = self.pods.get(&k).cloned();
                if old.as_ref() == Some(&p) {
                    return;
                }
                changes.pods.push((old, Some(p.clone())));
                self.pods.insert(k, p);
            }
            Object::Namespace(n) => {
                if self.namespaces.get(&n.name) == Some(&n) {
                    return;
                }
                changes.namespaces.insert(n.name.clone());
                self.namespaces.insert(n.name.clone(), n);
            }
        }
    }

    fn unlink_slice(&mut self, old: &SliceInfo, changes: &mut Changes) {
        if let Some(svc) = &old.service {
            let sk = (old.namespace.clone(), svc.clone());
            if let Some(set) = self.slices_by_service.get_mut(&sk) {
                set.remove(&old.name);
                if set.is_empty() {
                    self.slices_by_service.remove(&sk);
                }
            }
            changes.services.insert(sk);
        }
    }

    fn remove(&mut self, key: &ObjectKey, changes: &mut Changes) {
        let k = (key.namespace.clone(), key.name.clone());
        match key.kind {
            Kind::Service => {
                if self.services.remove(&k).is_some() {
                    if let Some(set) = self.services_by_ns.get_mut(&k.0) {
                        set.remove(&k.1);
                        if set.is_empty() {
                            self.services_by_ns.remove(&k.0);
                        }
                    }
                    changes.ns_touched.insert(k.0.clone());
                    changes.services.insert(k);
                }
            }
            Kind::EndpointSlice => {
                if let Some(old) = self.slices.remove(&k) {
                    self.unlink_slice(&old, changes);
                }
            }
            Kind::Pod => {
                if let Some(old) = self.pods.remove(&k) {
                    changes.pods.push((Some(old), None));
                }
            }
            Kind::Namespace => {
                if self.namespaces.remove(&key.name).is_some() {
                    changes.namespaces.insert(key.name.clone());
                }
            }
        }
    }

    /// The slices of a service.
    pub fn slices_of<'a>(&'a self, k: &Key) -> impl Iterator<Item = &'a SliceInfo> + 'a {
        let names = self.slices_by_service.get(k);
        let ns = k.0.clone();
        names
            .into_iter()
            .flat_map(|s| s.iter())
            .filter_map(move |n| self.slices.get(&(ns.clone(), n.clone())))
    }
}

fn key(kind: Kind, ns: &Arc<str>, name: &Arc<str>) -> ObjectKey {
    ObjectKey { kind, namespace: ns.clone(), name: name.clone() }
}
