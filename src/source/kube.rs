//! The live Kubernetes API as a source: kube-rs watchers on Namespaces (metadata only), Services,
//! EndpointSlices (`discovery.k8s.io/v1`) and, when asked, Pods.
//!
//! Each kind runs one `kube::runtime::watcher` stream (list + watch, bookmarks on, paginated lists
//! of 500) in its own task. Objects are deserialized into trimmed serde types that keep only the
//! fields DNS needs (no `managedFields`, no annotations but the one this module reads, no pod
//! spec), converted at once into the compact [`crate::cluster::objects`] types, and dropped:
//! nothing here keeps objects, there is no reflector store. The zone builder's indexes are the
//! state.
//!
//! What is emitted on the channel, per kind:
//! - [`ClusterEvent::Relist`] after every complete list (the first sync and every relist after a
//!   `410 Gone` or a failed list): the `InitApply` objects between kube-rs's `Init` and `InitDone`
//!   are buffered and sent as one list, so objects deleted while the watch was down disappear.
//! - [`ClusterEvent::Apply`] / [`ClusterEvent::Delete`] for watch events.
//! - [`ClusterEvent::WatchRestart`] for every error the watcher reports (410 Gone, a watch or list
//!   that could not be started, a broken stream). kube-rs resumes a watch that merely ended (server
//!   timeout, connection closed at a chunk boundary) from its resourceVersion without reporting
//!   anything, so such a resume emits nothing, and needs nothing.
//!
//! While the API server is away, nothing but `WatchRestart` is emitted, so the last snapshot keeps
//! serving unchanged; when it returns, the watch resumes from its resourceVersion (replaying what
//! was missed) or, if that history is gone, relists.
//!
//! Bad objects (an unparsable IP, an unknown protocol, a missing name) are logged with
//! `tracing::warn!` naming the object and skipped. A watch event that turns a good object bad
//! emits a `Delete` for it, so the zone after a watch event matches the zone after a relist (where
//! a bad object is simply absent).
//!
//! `changed_at` (for the DNS programming duration metric):
//! - EndpointSlice: the `endpoints.kubernetes.io/last-change-trigger-time` annotation (RFC 3339),
//!   when present and valid, as CoreDNS does.
//! - Service: `metadata.creationTimestamp`, only for the first watch event of a service this
//!   source has not seen before (i.e. a creation, kube-rs merges ADDED and MODIFIED into `Apply`)
//!   and only when that timestamp is less than [`FRESH_CREATION`] old (a service that starts
//!   matching the label selector long after its creation is not a creation).
//! - Pod, Namespace, and every object in a `Relist`: none.
//!
//! Retries use kube-rs's default watcher backoff (800 ms doubling to 30 s, jittered: client-go's
//! parameters), except that the first error after 10 quiet seconds is retried at once
//! ([`QuickRetry`]): a `410 Gone` relists in milliseconds, not after 0.8-1.6 s. Lists are
//! consistent reads (kube-rs's default `MostRecent`, no `resourceVersion=0`): a relist after a 410
//! must not go back in time, which a lagging watch cache could make it do. Pods are watched with
//! [`POD_FIELD_SELECTOR`], as CoreDNS does; the label selector applies to Services only.
//!
//! Metrics: `watch_restart(kind)` for every `WatchRestart`; `relist(kind)` for every complete
//! list after the first one of the kind (the initial sync is not a relist).

use std::collections::{BTreeMap, HashSet};
use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    Namespace, ObjectReference, Pod, PodIP, PodStatus, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, DefaultBackoff, Event};
use kube::{Client, Resource};
use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer, IgnoredAny, MapAccess, Visitor};
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinSet;

use crate::cluster::objects::{NamespaceInfo, PodInfo, ServiceInfo, SliceInfo};
use crate::cluster::{ClusterEvent, Kind, Object, ObjectKey};
use crate::error::{ObjectError, SourceError};
use crate::ops::metrics::Metrics;

/// How the API source connects and what it watches.
#[derive(Debug, Clone, Default)]
pub struct KubeSourceOptions {
    /// A kubeconfig file. `None`: `KUBECONFIG`, `~/.kube/config`, then the in-cluster service
    /// account (`kube::Config::infer`).
    pub kubeconfig: Option<PathBuf>,
    /// Watch Pods (only for `pods verified` and endpoint pod names).
    pub watch_pods: bool,
    /// `cluster.labels`: passed to the API as the `labelSelector` of the Service watch.
    pub service_label_selector: Option<String>,
    /// Watch EndpointSlices; false with `noendpoints`.
    pub watch_endpoints: bool,
}

/// The annotation the EndpointSlice controller sets to the time of the change that triggered
/// the slice's last update.
pub const LAST_CHANGE_TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// A service first seen on the watch counts as created (and gets `changed_at` =
/// `creationTimestamp`) only if it was created less than this long ago.
pub const FRESH_CREATION: Duration = Duration::from_secs(60);

/// Pods that can no longer have a serving IP are not listed (as CoreDNS does); a pod that
/// enters one of these phases is DELETED from the watch by the API server.
pub const POD_FIELD_SELECTOR: &str =
    "status.phase!=Succeeded,status.phase!=Failed,status.phase!=Unknown";

/// Runs until `shutdown` becomes true (or its sender is dropped), or until `tx` is closed.
///
/// Emits, per watched kind, [`ClusterEvent::Relist`] after each complete (re)list,
/// [`ClusterEvent::Apply`] / [`ClusterEvent::Delete`] for watch events, and
/// [`ClusterEvent::WatchRestart`] for every watch error. Returns an error only if no client can be
/// built (no usable kubeconfig or in-cluster config); once running, API errors are retried
/// forever with backoff. Relists and watch restarts are counted in `metrics`.
pub async fn run(
    opts: KubeSourceOptions,
    tx: UnboundedSender<ClusterEvent>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    metrics: Arc<Metrics>,
) -> Result<(), SourceError> {
    let client = client(&opts).await?;
    tracing::info!(
        pods = opts.watch_pods,
        endpoints = opts.watch_endpoints,
        labels = opts.service_label_selector.as_deref().unwrap_or(""),
        "watching the Kubernetes API"
    );

    let mut tasks = JoinSet::new();
    tasks.spawn(watch_kind(
        Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
        watcher::Config::default(),
        Kind::Namespace,
        tx.clone(),
        convert_namespace,
        metrics.clone(),
    ));
    let mut svc_cfg = watcher::Config::default();
    if let Some(sel) = opts
        .service_label_selector
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        svc_cfg = svc_cfg.labels(sel);
    }
    tasks.spawn(watch_kind(
        Api::<TrimService>::all(client.clone()),
        svc_cfg,
        Kind::Service,
        tx.clone(),
        convert_service,
        metrics.clone(),
    ));
    if opts.watch_endpoints {
        tasks.spawn(watch_kind(
            Api::<TrimSlice>::all(client.clone()),
            watcher::Config::default(),
            Kind::EndpointSlice,
            tx.clone(),
            convert_slice,
            metrics.clone(),
        ));
    }
    if opts.watch_pods {
        tasks.spawn(watch_kind(
            Api::<TrimPod>::all(client.clone()),
            watcher::Config::default().fields(POD_FIELD_SELECTOR),
            Kind::Pod,
            tx.clone(),
            convert_pod,
            metrics.clone(),
        ));
    }
    tokio::select! {
        // Err: the sender is gone, nobody can ask any more; stop as well.
        _ = async { drop(shutdown.wait_for(|stop| *stop).await) } => {
            tracing::debug!("kubernetes source: shutting down");
        }
        _ = tx.closed() => {
            tracing::debug!("kubernetes source: event channel closed");
        }
        _ = async { while tasks.join_next().await.is_some() {} } => {}
    }
    tasks.shutdown().await;
    Ok(())
}

/// A kube client from the given kubeconfig, or inferred (`KUBECONFIG`, `~/.kube/config`,
/// in-cluster). A kubeconfig may name a plain `http://` server.
async fn client(opts: &KubeSourceOptions) -> Result<Client, SourceError> {
    let config = match &opts.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| SourceError::Kube(format!("kubeconfig {}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| SourceError::Kube(format!("kubeconfig {}: {e}", path.display())))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| SourceError::Kube(format!("no cluster configuration: {e}")))?,
    };
    tracing::debug!(url = %config.cluster_url, "kubernetes API server");
    Client::try_from(config).map_err(|e| SourceError::Kube(format!("cannot build a client: {e}")))
}

/// One object turned into its DNS form, with the timestamps `changed_at` may come from.
struct Converted {
    object: Result<Object, ObjectError>,
    /// `metadata.creationTimestamp`.
    created: Option<SystemTime>,
    /// The EndpointSlice last-change-trigger-time annotation.
    triggered: Option<SystemTime>,
}

/// Drives one kind's watcher until the channel closes.
async fn watch_kind<K>(
    api: Api<K>,
    config: watcher::Config,
    kind: Kind,
    tx: UnboundedSender<ClusterEvent>,
    convert: fn(K) -> Converted,
    metrics: Arc<Metrics>,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let kind_str = kind.as_str();
    // The objects of the list in progress (Init..InitDone).
    let mut listing: Option<Vec<Object>> = None;
    let mut skipped = 0usize;
    let mut lists = 0u64;
    // Services only: keys seen, to tell a creation from an update (for `changed_at`).
    let mut known: Option<HashSet<ObjectKey>> = (kind == Kind::Service).then(HashSet::new);
    // Paces the (rare) restarts of the whole watcher, below.
    let mut restart_backoff = QuickRetry::default();

    'restart: loop {
        let stream = watcher::watcher(api.clone(), config.clone()).backoff(QuickRetry::default());
        let mut stream = std::pin::pin!(stream);

        while let Some(item) = stream.next().await {
            // The API revision after the event (its resourceVersion), for the zone's serial.
            let revision: Option<u64>;
            let event = match item {
                Ok(Event::Init) => {
                    listing = Some(Vec::new());
                    skipped = 0;
                    continue;
                }
                Ok(Event::InitApply(obj)) => {
                    match (convert(obj).object, listing.as_mut()) {
                        (Ok(object), Some(list)) => list.push(object),
                        (Ok(_), None) => {} // cannot happen: kube-rs sends Init first
                        (Err(e), _) => {
                            skipped += 1;
                            tracing::warn!(kind = kind_str, error = %e, "skipping bad object");
                        }
                    }
                    continue;
                }
                Ok(Event::InitDone) => {
                    let objects = listing.take().unwrap_or_default();
                    lists += 1;
                    if lists > 1 {
                        metrics.relist(kind_str);
                    }
                    tracing::info!(
                        kind = kind_str,
                        objects = objects.len(),
                        skipped,
                        relist = lists > 1,
                        "listed"
                    );
                    if let Some(known) = known.as_mut() {
                        *known = objects.iter().map(Object::key).collect();
                    }
                    revision = list_revision(&api, &config).await;
                    ClusterEvent::Relist { kind, objects }
                }
                Ok(Event::Apply(obj)) => {
                    let key = key_of(kind, obj.meta());
                    revision = revision_of(obj.meta());
                    let c = convert(obj);
                    match c.object {
                        Ok(object) => {
                            let changed_at = match kind {
                                Kind::EndpointSlice => c.triggered,
                                Kind::Service => {
                                    let new =
                                        known.as_mut().is_some_and(|k| k.insert(object.key()));
                                    c.created.filter(|t| {
                                        new && t.elapsed().map_or(true, |age| age < FRESH_CREATION)
                                    })
                                }
                                _ => None,
                            };
                            ClusterEvent::Apply { object, changed_at }
                        }
                        Err(e) => {
                            tracing::warn!(kind = kind_str, error = %e, "skipping bad object");
                            // Whatever version was good before is not the object any more.
                            let Some(key) = key else { continue };
                            if let Some(known) = known.as_mut() {
                                known.remove(&key);
                            }
                            ClusterEvent::Delete { key }
                        }
                    }
                }
                Ok(Event::Delete(obj)) => {
                    revision = revision_of(obj.meta());
                    let Some(key) = key_of(kind, obj.meta()) else {
                        tracing::warn!(
                            kind = kind_str,
                            "ignoring the deletion of an object without a name"
                        );
                        continue;
                    };
                    if let Some(known) = known.as_mut() {
                        known.remove(&key);
                    }
                    ClusterEvent::Delete { key }
                }
                Err(e) => {
                    if is_gone(&e) {
                        tracing::info!(kind = kind_str, error = %e, "watch expired; relisting");
                    } else {
                        tracing::warn!(kind = kind_str, error = %e, "watch failed; retrying");
                    }
                    metrics.watch_restart(kind_str);
                    if tx.send(ClusterEvent::WatchRestart { kind }).is_err() {
                        return;
                    }
                    // A watch refused with an HTTP 410 (rather than the usual ERROR event in the
                    // stream) leaves kube-rs 5 retrying the same expired resourceVersion forever:
                    // start a new watcher, which lists again.
                    if matches!(&e, watcher::Error::WatchStartFailed(kube::Error::Api(s)) if s.code == 410)
                    {
                        tokio::time::sleep(
                            restart_backoff.next().unwrap_or(Duration::from_secs(30)),
                        )
                        .await;
                        continue 'restart;
                    }
                    continue;
                }
            };
            let event = match revision {
                Some(revision) => ClusterEvent::AtRevision {
                    revision,
                    event: Box::new(event),
                },
                None => event,
            };
            if tx.send(event).is_err() {
                return;
            }
        }
        return; // a watcher stream never ends
    }
}

/// An object's resourceVersion as the integer etcd makes it (the API calls it opaque; every
/// etcd-backed server, and kine, writes the revision in decimal). None when it is not one: the
/// zone's serial then just counts up (see `zone::serial`), which is logged once.
fn revision_of(meta: &ObjectMeta) -> Option<u64> {
    let rv = meta.resource_version.as_deref()?;
    let r = rv.parse().ok();
    if r.is_none() {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            tracing::warn!(
                resource_version = rv,
                "resourceVersions are not integers: zone serials will not agree between replicas"
            );
        });
    }
    r
}

/// The revision of a list just completed: the resourceVersion of a list made now (one item;
/// a consistent read, at least the list's own revision). Not the newest of the list's
/// objects: an object deleted before the list left nothing behind, and the serial must be past
/// its deletion (after a restart especially). None if the API does not answer.
async fn list_revision<K>(api: &Api<K>, watch: &watcher::Config) -> Option<u64>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    // The watch's selectors: asked exactly as the watch is (the same RBAC, the same filters).
    let mut lp = kube::api::ListParams::default().limit(1);
    if let Some(l) = &watch.label_selector {
        lp = lp.labels(l);
    }
    if let Some(f) = &watch.field_selector {
        lp = lp.fields(f);
    }
    match api.list(&lp).await {
        Ok(list) => revision_of(&ObjectMeta {
            resource_version: list.metadata.resource_version,
            ..ObjectMeta::default()
        }),
        Err(e) => {
            tracing::debug!(error = %e, "list revision");
            None
        }
    }
}

/// `410 Gone`: the resourceVersion is older than the server's history; kube-rs relists.
fn is_gone(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::WatchError(status) => status.code == 410,
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status)) => status.code == 410,
        _ => false,
    }
}

/// The key of an object from its metadata, normalized as the conversions in
/// [`crate::cluster::objects`] do (lowercase, namespace `default` when absent).
fn key_of(kind: Kind, meta: &ObjectMeta) -> Option<ObjectKey> {
    let name = meta.name.as_deref().filter(|n| !n.is_empty())?;
    let namespace = if kind == Kind::Namespace {
        "".into()
    } else {
        meta.namespace
            .as_deref()
            .unwrap_or("default")
            .to_ascii_lowercase()
            .into()
    };
    Some(ObjectKey {
        kind,
        namespace,
        name: name.to_ascii_lowercase().into(),
    })
}

/// The default watcher backoff (800 ms doubling to 30 s with jitter, client-go's parameters),
/// except that the first error after a quiet period is retried at once: a `410 Gone` relists in
/// milliseconds instead of after 0.8-1.6 s. At most one immediate retry per [`Self::QUIET`], so
/// a server that keeps failing is never hammered.
#[derive(Default)]
struct QuickRetry {
    inner: DefaultBackoff,
    last_immediate: Option<Instant>,
}

impl QuickRetry {
    const QUIET: Duration = Duration::from_secs(10);
}

impl Iterator for QuickRetry {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        let now = Instant::now();
        if self
            .last_immediate
            .is_none_or(|t| now.duration_since(t) >= Self::QUIET)
        {
            self.last_immediate = Some(now);
            return Some(Duration::ZERO);
        }
        self.inner.next()
    }
}

impl Backoff for QuickRetry {
    fn reset(&mut self) {
        self.inner.reset();
    }
}

// ---------------------------------------------------------------------------------------------
// Trimmed API types: only the fields DNS needs. Everything else in the JSON is skipped while
// parsing (no allocation for it). Field names are the API's, which are not all camelCase
// (`clusterIP`, `clusterIPs`, `podIP`, `podIPs`).

fn time_to_system(t: &Time) -> SystemTime {
    SystemTime::from(t.0)
}

/// `metadata` with name, namespace, resourceVersion, labels, creationTimestamp and only the
/// last-change-trigger-time annotation.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetaFields {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    resource_version: Option<String>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    annotations: Option<TriggerTimeOnly>,
    #[serde(default)]
    creation_timestamp: Option<Time>,
}

fn trimmed_meta<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    let m = MetaFields::deserialize(d)?;
    Ok(ObjectMeta {
        name: m.name,
        namespace: m.namespace,
        resource_version: m.resource_version,
        labels: m.labels,
        annotations: m
            .annotations
            .and_then(|a| a.0)
            .map(|v| BTreeMap::from([(LAST_CHANGE_TRIGGER_TIME.to_string(), v)])),
        creation_timestamp: m.creation_timestamp,
        ..ObjectMeta::default()
    })
}

/// `metadata` with name, namespace and resourceVersion only (Pods).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NameFields {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    resource_version: Option<String>,
}

fn names_only_meta<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    let m = NameFields::deserialize(d)?;
    Ok(ObjectMeta {
        name: m.name,
        namespace: m.namespace,
        resource_version: m.resource_version,
        ..ObjectMeta::default()
    })
}

/// An annotations map of which only [`LAST_CHANGE_TRIGGER_TIME`] is kept; other values (such
/// as `kubectl.kubernetes.io/last-applied-configuration`) are skipped without allocating.
struct TriggerTimeOnly(Option<String>);

impl<'de> Deserialize<'de> for TriggerTimeOnly {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TriggerTimeOnly;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of annotations")
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(TriggerTimeOnly(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut found = None;
                while let Some(wanted) = map.next_key::<IsTriggerTime>()? {
                    if wanted.0 {
                        found = map.next_value::<Option<String>>()?;
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(TriggerTimeOnly(found))
            }
        }
        d.deserialize_any(V)
    }
}

/// A map key compared with [`LAST_CHANGE_TRIGGER_TIME`] without being allocated.
struct IsTriggerTime(bool);

impl<'de> Deserialize<'de> for IsTriggerTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = IsTriggerTime;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an annotation key")
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(IsTriggerTime(v == LAST_CHANGE_TRIGGER_TIME))
            }
        }
        d.deserialize_str(V)
    }
}

/// A Service with only what DNS needs.
#[derive(Clone, Debug, Deserialize, kube::Resource)]
#[resource(inherit = Service)]
struct TrimService {
    #[serde(deserialize_with = "trimmed_meta")]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: Option<TrimServiceSpec>,
}

#[derive(Clone, Debug, Deserialize)]
struct TrimServiceSpec {
    #[serde(rename = "type", default)]
    type_: Option<String>,
    #[serde(rename = "clusterIP", default)]
    cluster_ip: Option<String>,
    #[serde(rename = "clusterIPs", default)]
    cluster_ips: Option<Vec<String>>,
    #[serde(rename = "externalName", default)]
    external_name: Option<String>,
    #[serde(default)]
    ports: Option<Vec<TrimServicePort>>,
    #[serde(rename = "publishNotReadyAddresses", default)]
    publish_not_ready_addresses: Option<bool>,
}

#[derive(Clone, Debug, Deserialize)]
struct TrimServicePort {
    #[serde(default)]
    name: Option<String>,
    /// Absent: 0, which the conversion rejects naming the object.
    #[serde(default)]
    port: i32,
    #[serde(default)]
    protocol: Option<String>,
}

fn convert_service(t: TrimService) -> Converted {
    let created = t.metadata.creation_timestamp.as_ref().map(time_to_system);
    let svc = Service {
        metadata: t.metadata,
        spec: t.spec.map(|s| ServiceSpec {
            type_: s.type_,
            cluster_ip: s.cluster_ip,
            cluster_ips: s.cluster_ips,
            external_name: s.external_name,
            ports: s.ports.map(|ps| {
                ps.into_iter()
                    .map(|p| ServicePort {
                        name: p.name,
                        port: p.port,
                        protocol: p.protocol,
                        ..ServicePort::default()
                    })
                    .collect()
            }),
            publish_not_ready_addresses: s.publish_not_ready_addresses,
            ..ServiceSpec::default()
        }),
        status: None,
    };
    Converted {
        object: ServiceInfo::try_from(&svc).map(Object::Service),
        created,
        triggered: None,
    }
}

/// An EndpointSlice with only what DNS needs.
#[derive(Clone, Debug, Deserialize, kube::Resource)]
#[resource(inherit = EndpointSlice)]
struct TrimSlice {
    #[serde(deserialize_with = "trimmed_meta")]
    metadata: ObjectMeta,
    #[serde(rename = "addressType", default)]
    address_type: String,
    /// `null` for a slice without endpoints.
    #[serde(default)]
    endpoints: Option<Vec<TrimEndpoint>>,
    #[serde(default)]
    ports: Option<Vec<TrimSlicePort>>,
}

#[derive(Clone, Debug, Deserialize)]
struct TrimEndpoint {
    #[serde(default)]
    addresses: Option<Vec<String>>,
    #[serde(default)]
    conditions: Option<TrimConditions>,
    #[serde(default)]
    hostname: Option<String>,
    #[serde(rename = "targetRef", default)]
    target_ref: Option<TrimTargetRef>,
}

#[derive(Clone, Debug, Deserialize)]
struct TrimConditions {
    #[serde(default)]
    ready: Option<bool>,
}

#[derive(Clone, Debug, Deserialize)]
struct TrimTargetRef {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
struct TrimSlicePort {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    port: Option<i32>,
    #[serde(default)]
    protocol: Option<String>,
}

fn convert_slice(t: TrimSlice) -> Converted {
    let triggered = t
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(LAST_CHANGE_TRIGGER_TIME))
        .and_then(|s| match s.trim().parse::<k8s_openapi::jiff::Timestamp>() {
            Ok(ts) => Some(SystemTime::from(ts)),
            Err(_) => {
                tracing::debug!(
                    namespace = t.metadata.namespace.as_deref().unwrap_or(""),
                    name = t.metadata.name.as_deref().unwrap_or(""),
                    value = s.as_str(),
                    "invalid {LAST_CHANGE_TRIGGER_TIME} annotation"
                );
                None
            }
        });
    let created = t.metadata.creation_timestamp.as_ref().map(time_to_system);
    let es = EndpointSlice {
        metadata: t.metadata,
        address_type: t.address_type,
        endpoints: t
            .endpoints
            .unwrap_or_default()
            .into_iter()
            .map(|e| Endpoint {
                addresses: e.addresses.unwrap_or_default(),
                conditions: e.conditions.map(|c| EndpointConditions {
                    ready: c.ready,
                    ..EndpointConditions::default()
                }),
                hostname: e.hostname,
                target_ref: e.target_ref.map(|r| ObjectReference {
                    kind: r.kind,
                    name: r.name,
                    ..ObjectReference::default()
                }),
                ..Endpoint::default()
            })
            .collect(),
        ports: t.ports.map(|ps| {
            ps.into_iter()
                .map(|p| EndpointPort {
                    name: p.name,
                    port: p.port,
                    protocol: p.protocol,
                    ..EndpointPort::default()
                })
                .collect()
        }),
    };
    Converted {
        object: SliceInfo::try_from(&es).map(Object::Slice),
        created,
        triggered,
    }
}

/// A Pod with only what DNS needs: its name and IPs.
#[derive(Clone, Debug, Deserialize, kube::Resource)]
#[resource(inherit = Pod)]
struct TrimPod {
    #[serde(deserialize_with = "names_only_meta")]
    metadata: ObjectMeta,
    #[serde(default)]
    status: Option<TrimPodStatus>,
}

#[derive(Clone, Debug, Deserialize)]
struct TrimPodStatus {
    #[serde(rename = "podIP", default)]
    pod_ip: Option<String>,
    #[serde(rename = "podIPs", default)]
    pod_ips: Option<Vec<TrimPodIp>>,
}

#[derive(Clone, Debug, Deserialize)]
struct TrimPodIp {
    #[serde(default)]
    ip: String,
}

fn convert_pod(t: TrimPod) -> Converted {
    let pod = Pod {
        metadata: t.metadata,
        spec: None,
        status: t.status.map(|s| PodStatus {
            pod_ip: s.pod_ip,
            pod_ips: s
                .pod_ips
                .map(|ips| ips.into_iter().map(|p| PodIP { ip: p.ip }).collect()),
            ..PodStatus::default()
        }),
    };
    Converted {
        object: PodInfo::try_from(&pod).map(Object::Pod),
        created: None,
        triggered: None,
    }
}

fn convert_namespace(m: PartialObjectMeta<Namespace>) -> Converted {
    let ns = Namespace {
        metadata: m.metadata,
        ..Namespace::default()
    };
    Converted {
        object: NamespaceInfo::try_from(&ns).map(Object::Namespace),
        created: None,
        triggered: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimmed_service_keeps_dns_fields() {
        let json = r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"Web","namespace":"prod",
            "resourceVersion":"7","labels":{"app":"web"},"creationTimestamp":"2024-01-02T03:04:05Z",
            "annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{\"huge\":[1,2,3]}"},
            "managedFields":[{"manager":"kubectl","fieldsV1":{"f:spec":{}}}]},
            "spec":{"type":"ClusterIP","clusterIP":"10.0.0.1","clusterIPs":["10.0.0.1","fd00::1"],
            "ports":[{"name":"HTTP","port":80,"protocol":"TCP","targetPort":8080}],"selector":{"app":"web"}},
            "status":{"loadBalancer":{}}}"#;
        let t: TrimService = serde_json::from_str(json).unwrap();
        assert_eq!(t.metadata.resource_version.as_deref(), Some("7"));
        assert!(t.metadata.annotations.is_none());
        assert!(t.metadata.managed_fields.is_none());
        let c = convert_service(t);
        let Ok(Object::Service(s)) = c.object else {
            panic!("{:?}", c.object)
        };
        assert_eq!(&*s.name, "web");
        assert_eq!(&*s.namespace, "prod");
        assert_eq!(
            s.kind,
            crate::cluster::objects::ServiceKind::ClusterIp(vec![
                "10.0.0.1".parse().unwrap(),
                "fd00::1".parse().unwrap()
            ])
        );
        assert_eq!(&*s.ports[0].name, "http");
        assert_eq!(s.labels.get("app").map(String::as_str), Some("web"));
        assert!(c.created.is_some());
    }

    #[test]
    fn trimmed_slice_reads_trigger_time_and_null_endpoints() {
        let json = r#"{"metadata":{"name":"web-abc","namespace":"prod","resourceVersion":"9",
            "labels":{"kubernetes.io/service-name":"web"},
            "annotations":{"a":"b","endpoints.kubernetes.io/last-change-trigger-time":"2024-01-02T03:04:05.5Z"}},
            "addressType":"IPv4","endpoints":null,"ports":[{"name":"http","port":80,"protocol":"TCP"}]}"#;
        let t: TrimSlice = serde_json::from_str(json).unwrap();
        let c = convert_slice(t);
        let Ok(Object::Slice(s)) = c.object else {
            panic!()
        };
        assert_eq!(s.service.as_deref(), Some("web"));
        assert!(s.endpoints.is_empty());
        let want = SystemTime::UNIX_EPOCH + Duration::from_millis(1_704_164_645_500);
        assert_eq!(c.triggered, Some(want));
    }

    #[test]
    fn trimmed_pod_reads_ips() {
        let json = r#"{"metadata":{"name":"p","namespace":"ns","resourceVersion":"3","labels":{"x":"y"}},
            "spec":{"containers":[{"name":"c","image":"i"}]},
            "status":{"phase":"Running","podIP":"10.1.0.5","podIPs":[{"ip":"10.1.0.5"},{"ip":"fd00::5"}]}}"#;
        let t: TrimPod = serde_json::from_str(json).unwrap();
        assert!(t.metadata.labels.is_none());
        let Ok(Object::Pod(p)) = convert_pod(t).object else {
            panic!()
        };
        assert_eq!(p.ips.len(), 2);
    }

    #[test]
    fn quick_retry_is_immediate_once_per_quiet_period() {
        let mut b = QuickRetry::default();
        assert_eq!(b.next(), Some(Duration::ZERO));
        let second = b.next().unwrap();
        assert!(second >= Duration::from_millis(800), "{second:?}");
        b.reset();
        assert!(b.next().unwrap() >= Duration::from_millis(800));
    }
}
