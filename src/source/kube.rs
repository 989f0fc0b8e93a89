//! The live Kubernetes API as a source: one list-and-watch loop per kind on Namespaces
//! (metadata only), Services, EndpointSlices (`discovery.k8s.io/v1`) and, when asked, Pods.
//!
//! Each kind lists (pages of [`PAGE_SIZE`], a consistent read) and then watches from the list's
//! resourceVersion (bookmarks on, server-side timeout 290 s), in a task of its own. Objects are
//! deserialized into the trimmed types of [`super::trimmed`], converted at once into the compact
//! [`crate::cluster::objects`] types, and dropped: nothing here keeps objects, there is no
//! reflector store. The zone builder's indexes are the state. The kinds' tasks share one thread;
//! while another kind lists, a Pod list gives way (`precedence.rs`), so that after an API
//! server restart the Services and EndpointSlices are relisted first.
//!
//! What is emitted on the channel, per kind:
//! - a list, streamed as it is read: [`ClusterEvent::ListBegin`], one [`ClusterEvent::Listed`]
//!   per object of each page as the page arrives, [`ClusterEvent::ListEnd`]. Neither the list
//!   nor a copy of it is ever held: the builder marks what is listed and sweeps the rest at the
//!   end (objects deleted while the watch was down disappear), and the channel is bounded, so
//!   a source faster than the builder waits (and with it, over TCP, the API server).
//! - [`ClusterEvent::Apply`] / [`ClusterEvent::Delete`] for watch events.
//! - [`ClusterEvent::WatchRestart`] for every error (410 Gone, a list or watch that could not be
//!   started, a broken stream).
//!
//! Why a loop of its own rather than kube-runtime's `watcher`: the watcher hides bookmarks (so it
//! cannot tell a quiet, healthy watch from a dead one: [`WatchFreshness`] needs them), backs off
//! on a 410 Gone as on a failure (a relist after an API server restart should start at once),
//! and retries a watch refused with an HTTP 410 from the same resourceVersion forever.
//!
//! Retries, as client-go's reflector:
//! - a watch that ends (the server's timeout, a closed connection at a chunk boundary) resumes
//!   at once from its resourceVersion; so does one idle for longer than its timeout plus
//!   [`IDLE_MARGIN`] (a dead connection);
//! - `410 Gone` (on the watch, or on a page of a list) lists again at once: the relist after an
//!   API server restart starts the moment the server answers. Only when a list is of no use
//!   twice in a row (its own pages expire, or the first watch from it is refused with 410: the
//!   server compacts faster than a list takes) does the next list wait, as after a failure;
//! - anything else (refused, reset, 5xx) retries after a delay growing from 800 ms to 30 s
//!   (never more: an API server back from an outage is seen within 30 s), except that the first
//!   failure after 10 quiet seconds retries at once ([`Retry`]); a list or a watch event starts
//!   the delays over.
//!
//! While the API server is away, nothing but `WatchRestart` is emitted, so the last snapshot keeps
//! serving unchanged (and `/ready` stays up: the data is still good);
//! `clusterdns_watch_staleness_seconds{kind}` grows. When the server returns, the watch resumes
//! from its resourceVersion (replaying what was missed) or, if that history is gone, relists.
//!
//! Lists are consistent reads (no `resourceVersion`): a relist after a 410 must not go back in
//! time, which a lagging watch cache could make it do. Pods are listed and watched with
//! [`POD_FIELD_SELECTOR`], as CoreDNS does; the label selector applies to Services only.
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
//!   source has not seen before (i.e. a creation, the API's ADDED and MODIFIED are one `Apply`)
//!   and only when that timestamp is less than [`FRESH_CREATION`] old (a service that starts
//!   matching the label selector long after its creation is not a creation).
//! - Pod, Namespace, and every listed object: none.
//!
//! Metrics (a handle passed in): `watch_restart(kind)` for every `WatchRestart` (counted by the
//! zone builder as it receives it); `relist(kind)` for every complete
//! list after the first one of the kind (the initial sync is not a relist); the kind's
//! [`WatchFreshness`] on every list page, watch event and bookmark.

use std::collections::HashSet;
use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ListMeta, ObjectMeta};
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use kube::core::PartialObjectMeta;
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc::Sender;
use tokio::task::JoinSet;

use super::pages::ListBody;
use super::precedence::{GIVE_WAY, Precedence};
use super::trimmed::{
    Converted, TrimPod, TrimService, TrimSlice, convert_namespace, convert_pod, convert_service,
    convert_slice,
};
use crate::cluster::{ClusterEvent, Kind, ObjectKey};
use crate::error::{ObjectError, SourceError};
use crate::ops::metrics::{Metrics, WatchFreshness};

/// How the API source connects and what it watches.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KubeSourceOptions {
    /// A kubeconfig file. `None`: `KUBECONFIG`, `~/.kube/config`, then the in-cluster service
    /// account (`kube::Config::infer`).
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context; `None`: its current context.
    pub context: Option<String>,
    /// The API server URL, replacing the kubeconfig's (or the in-cluster one).
    pub endpoint: Option<String>,
    /// Watch Pods (only for `pods verified` and endpoint pod names).
    pub watch_pods: bool,
    /// `cluster.labels`: passed to the API as the `labelSelector` of the Service watch.
    pub service_label_selector: Option<String>,
    /// Watch EndpointSlices; false with `noendpoints`.
    pub watch_endpoints: bool,
}

/// A service first seen on the watch counts as created (and gets `changed_at` =
/// `creationTimestamp`) only if it was created less than this long ago.
pub const FRESH_CREATION: Duration = Duration::from_secs(60);

/// Pods that can no longer have a serving IP are not listed (as CoreDNS does); a pod that
/// enters one of these phases is DELETED from the watch by the API server.
pub const POD_FIELD_SELECTOR: &str =
    "status.phase!=Succeeded,status.phase!=Failed,status.phase!=Unknown";

/// Objects per list page (client-go's and kube-runtime's default).
pub const PAGE_SIZE: u32 = 500;

/// The server-side watch timeout, in seconds (kube-runtime's default; client-go picks 5-10 min).
const WATCH_TIMEOUT_SECS: u32 = 290;

/// A watch silent for its timeout plus this long is taken for a dead connection.
pub const IDLE_MARGIN: Duration = Duration::from_secs(5);

/// Runs until `shutdown` becomes true (or its sender is dropped), or until `tx` is closed.
///
/// Emits, per watched kind, each complete (re)list as it is read ([`ClusterEvent::ListBegin`],
/// [`ClusterEvent::Listed`] each, [`ClusterEvent::ListEnd`]), [`ClusterEvent::Apply`] /
/// [`ClusterEvent::Delete`] for watch events, and [`ClusterEvent::WatchRestart`] for every
/// error. Returns an error only if no client can be built (no usable kubeconfig or in-cluster
/// config); once running, API errors are retried forever. Relists and the kinds' freshness are
/// counted in `metrics` (watch restarts by the zone builder, from `WatchRestart`).
pub async fn run(
    opts: KubeSourceOptions,
    tx: Sender<ClusterEvent>,
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

    let precedence = Arc::new(Precedence::default());
    let mut tasks = JoinSet::new();
    tasks.spawn(
        KindLoop::new(
            Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
            Kind::Namespace,
            convert_namespace,
            tx.clone(),
            &metrics,
            &precedence,
        )
        .run(),
    );
    let mut services = KindLoop::new(
        Api::<TrimService>::all(client.clone()),
        Kind::Service,
        convert_service,
        tx.clone(),
        &metrics,
        &precedence,
    );
    services.labels = opts
        .service_label_selector
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    tasks.spawn(services.run());
    if opts.watch_endpoints {
        tasks.spawn(
            KindLoop::new(
                Api::<TrimSlice>::all(client.clone()),
                Kind::EndpointSlice,
                convert_slice,
                tx.clone(),
                &metrics,
                &precedence,
            )
            .run(),
        );
    }
    if opts.watch_pods {
        let mut pods = KindLoop::new(
            Api::<TrimPod>::all(client.clone()),
            Kind::Pod,
            convert_pod,
            tx.clone(),
            &metrics,
            &precedence,
        );
        pods.fields = Some(POD_FIELD_SELECTOR.to_string());
        tasks.spawn(pods.run());
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
    let kc_opts = kube::config::KubeConfigOptions {
        context: opts.context.clone(),
        ..Default::default()
    };
    let mut config = match (&opts.kubeconfig, &opts.context, &opts.endpoint) {
        (Some(path), _, _) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| SourceError::Kube(format!("kubeconfig {}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kc, &kc_opts)
                .await
                .map_err(|e| SourceError::Kube(format!("kubeconfig {}: {e}", path.display())))?
        }
        (None, Some(ctx), _) => kube::Config::from_kubeconfig(&kc_opts)
            .await
            .map_err(|e| SourceError::Kube(format!("kubeconfig context {ctx:?}: {e}")))?,
        // CoreDNS's `endpoint` without a kubeconfig: the in-cluster credentials if there are
        // any, else none (an API server that needs none, e.g. behind `kubectl proxy`).
        (None, None, Some(url)) => match kube::Config::infer().await {
            Ok(c) => c,
            Err(_) => kube::Config::new(
                url.parse()
                    .map_err(|e| SourceError::Kube(format!("kubernetes endpoint {url:?}: {e}")))?,
            ),
        },
        (None, None, None) => kube::Config::infer()
            .await
            .map_err(|e| SourceError::Kube(format!("no cluster configuration: {e}")))?,
    };
    if let Some(url) = &opts.endpoint {
        config.cluster_url = url
            .parse()
            .map_err(|e| SourceError::Kube(format!("kubernetes endpoint {url:?}: {e}")))?;
    }
    tracing::debug!(url = %config.cluster_url, "kubernetes API server");
    Client::try_from(config).map_err(|e| SourceError::Kube(format!("cannot build a client: {e}")))
}

/// The channel is closed: nobody listens any more, the loop ends.
struct Closed;

/// How a list attempt failed.
enum ListFailed {
    Closed,
    /// `410 Gone` (a continue token older than the server's history): list again.
    Gone,
    /// Anything else: list again after the backoff.
    Other,
}

/// How a page of a list failed.
enum PageFailed {
    Closed,
    /// The API server's answer (`gone`: 410), or a broken or garbled response.
    Api {
        gone: bool,
        error: String,
    },
}

impl PageFailed {
    fn other(e: impl std::fmt::Display) -> Self {
        PageFailed::Api {
            gone: false,
            error: e.to_string(),
        }
    }
}

/// An object of a list that does not decode into its trimmed type (a field of the wrong type),
/// named as far as its metadata can be read.
fn undecodable(kind: Kind, bytes: &[u8], e: &serde_json::Error) -> ObjectError {
    #[derive(serde::Deserialize, Default)]
    struct Names {
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        namespace: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Meta {
        #[serde(default)]
        metadata: Names,
    }
    let names = serde_json::from_slice::<Meta>(bytes)
        .map(|m| m.metadata)
        .unwrap_or_default();
    ObjectError {
        kind: kind.as_str(),
        namespace: names.namespace.unwrap_or_default(),
        name: names.name.unwrap_or_else(|| "<unnamed>".into()),
        message: e.to_string(),
    }
}

/// How a watch ended.
enum WatchEnded {
    Closed,
    /// Normally (server timeout, idle): resume from the resourceVersion at once.
    Ended,
    /// `410 Gone`: the resourceVersion is older than the server's history; list again.
    Gone,
    /// Anything else: resume after the backoff.
    Failed,
}

/// One kind's list-and-watch loop.
struct KindLoop<K> {
    api: Api<K>,
    kind: Kind,
    convert: fn(K) -> Converted,
    tx: Sender<ClusterEvent>,
    /// `labelSelector` of the list and the watch.
    labels: Option<String>,
    /// `fieldSelector` of the list and the watch.
    fields: Option<String>,
    /// The API serves only metadata (`PartialObjectMeta`): lists ask for metadata lists.
    metadata_only: bool,
    metrics: Arc<Metrics>,
    /// Lists of every kind but Pods are urgent: a Pod list gives way to them (see
    /// [`super::precedence`]).
    precedence: Arc<Precedence>,
    freshness: WatchFreshness,
    /// Services only: the services seen, to tell a creation from an update (for `changed_at`).
    known: Option<Known>,
    retry: Retry,
    /// Complete lists so far.
    lists: u64,
    /// Lists in a row that were of no use: expired before their end, or before any watch from
    /// them worked.
    useless_lists: u32,
}

impl<K> KindLoop<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    fn new(
        api: Api<K>,
        kind: Kind,
        convert: fn(K) -> Converted,
        tx: Sender<ClusterEvent>,
        metrics: &Arc<Metrics>,
        precedence: &Arc<Precedence>,
    ) -> Self {
        KindLoop {
            api,
            kind,
            convert,
            tx,
            labels: None,
            fields: None,
            metadata_only: K::metadata_api(),
            metrics: metrics.clone(),
            precedence: precedence.clone(),
            freshness: metrics.watch_freshness(kind.as_str()),
            known: (kind == Kind::Service).then(Known::default),
            retry: Retry::default(),
            lists: 0,
            useless_lists: 0,
        }
    }

    async fn run(mut self) {
        'list: loop {
            if self.useless_lists >= 2 {
                self.pause().await;
            }
            let mut rv = match self.list().await {
                Ok(rv) => rv,
                Err(ListFailed::Closed) => return,
                Err(ListFailed::Gone) => {
                    self.useless_lists += 1;
                    continue 'list;
                }
                Err(ListFailed::Other) => {
                    self.pause().await;
                    continue 'list;
                }
            };
            // A watch from this list delivered something or ran to its end.
            let mut worked = false;
            loop {
                match self.watch(&mut rv, &mut worked).await {
                    WatchEnded::Closed => return,
                    WatchEnded::Ended => worked = true,
                    WatchEnded::Gone => {
                        self.useless_lists = if worked { 0 } else { self.useless_lists + 1 };
                        continue 'list;
                    }
                    WatchEnded::Failed => self.pause().await,
                }
            }
        }
    }

    /// Waits out the backoff after a failure.
    async fn pause(&mut self) {
        tokio::time::sleep(self.retry.next()).await;
    }

    async fn send(&self, ev: ClusterEvent) -> Result<(), Closed> {
        self.tx.send(ev).await.map_err(|_| Closed)
    }

    /// A watch or list failed: told to the zone builder, which counts it.
    async fn restart(
        &self,
        gone: bool,
        what: &str,
        error: impl std::fmt::Display,
    ) -> Result<(), Closed> {
        let kind = self.kind.as_str();
        let error = error.to_string();
        if gone {
            tracing::info!(kind, error = %error, "{what} expired; relisting");
        } else {
            tracing::warn!(kind, error = %error, "{what} failed; retrying");
        }
        self.send(ClusterEvent::WatchRestart { kind: self.kind })
            .await
    }

    /// Lists the kind page by page, each object sent on as soon as its page is in. Returns the
    /// resourceVersion to watch from.
    async fn list(&mut self) -> Result<String, ListFailed> {
        let began = Instant::now();
        let kind = self.kind.as_str();
        self.send(ClusterEvent::ListBegin { kind: self.kind })
            .await
            .map_err(|_| ListFailed::Closed)?;
        let mut known = self.known.as_ref().map(Known::fresh);
        let mut lp = ListParams {
            label_selector: self.labels.clone(),
            field_selector: self.fields.clone(),
            limit: Some(PAGE_SIZE),
            ..ListParams::default()
        };
        let (mut listed, mut skipped, mut pages) = (0usize, 0usize, 0usize);
        let (_urgent, mut give_way) = if self.kind == Kind::Pod {
            (None, GIVE_WAY)
        } else {
            (Some(self.precedence.urgent()), Duration::ZERO)
        };
        let rv = loop {
            let page = match self
                .list_page(&lp, &mut known, &mut listed, &mut skipped, &mut give_way)
                .await
            {
                Ok(page) => page,
                Err(PageFailed::Closed) => return Err(ListFailed::Closed),
                Err(PageFailed::Api { gone, error }) => {
                    self.restart(gone, "list", error)
                        .await
                        .map_err(|_| ListFailed::Closed)?;
                    return Err(if gone {
                        ListFailed::Gone
                    } else {
                        ListFailed::Other
                    });
                }
            };
            pages += 1;
            self.freshness.touch();
            match page.continue_.filter(|c| !c.is_empty()) {
                Some(token) => lp.continue_token = Some(token),
                None => match page.resource_version.filter(|v| !v.is_empty()) {
                    Some(rv) => break rv,
                    None => {
                        self.restart(false, "list", "the list has no resourceVersion")
                            .await
                            .map_err(|_| ListFailed::Closed)?;
                        return Err(ListFailed::Other);
                    }
                },
            }
        };
        // The list's own resourceVersion is the API revision the listed state is at (a
        // consistent read): the zone's serial is derived from it.
        self.send(at_revision(
            revision_of(Some(&rv)),
            ClusterEvent::ListEnd { kind: self.kind },
        ))
        .await
        .map_err(|_| ListFailed::Closed)?;
        if known.is_some() {
            self.known = known;
        }
        self.lists += 1;
        if self.lists > 1 {
            self.metrics.relist(kind);
        }
        self.retry.reset();
        tracing::info!(
            kind,
            objects = listed,
            skipped,
            pages,
            ms = began.elapsed().as_secs_f64() * 1e3,
            relist = self.lists > 1,
            "listed"
        );
        Ok(rv)
    }

    /// One page of the list, each object sent on as soon as its last byte has arrived (see
    /// [`super::pages`]): only one object of the page is ever held, decoded or not. Before each
    /// chunk of the body, a list that gives way (Pods) waits while another kind's list is under
    /// way, out of `give_way` ([`super::precedence`]). Returns the page's list metadata
    /// (continue token, resourceVersion).
    async fn list_page(
        &mut self,
        lp: &ListParams,
        known: &mut Option<Known>,
        listed: &mut usize,
        skipped: &mut usize,
        give_way: &mut Duration,
    ) -> Result<ListMeta, PageFailed> {
        use futures::{AsyncBufRead, AsyncBufReadExt};
        let kind = self.kind.as_str();
        let request = kube::core::Request::new(self.api.resource_url());
        let request = if self.metadata_only {
            request.list_metadata(lp)
        } else {
            request.list(lp)
        };
        let request = request.map_err(PageFailed::other)?;
        let body = self
            .api
            .clone()
            .into_client()
            .request_stream(request)
            .await
            .map_err(|e| PageFailed::Api {
                gone: matches!(&e, kube::Error::Api(s) if s.code == 410),
                error: e.to_string(),
            })?;
        let mut body = Box::pin(body);
        let mut page = ListBody::default();
        // The objects of one chunk of the body are decoded first, then sent one after another:
        // the zone builder, woken by the first, takes the rest in the same round. Sent as each
        // was decoded, the builder (faster than the decoding) would sleep and be woken again for
        // every object, and those wake-ups were most of a small relist's time.
        let mut decoded = Vec::new();
        loop {
            self.precedence.give_way(give_way).await;
            let n = {
                let chunk = body.fill_buf().await.map_err(PageFailed::other)?;
                page.feed::<K>(chunk, |item| {
                    let object = match item {
                        Ok(obj) => (self.convert)(obj).object,
                        Err((bytes, e)) => Err(undecodable(self.kind, bytes, &e)),
                    };
                    match object {
                        Ok(object) => {
                            if let Some(k) = known.as_mut() {
                                k.insert(&object.key());
                            }
                            *listed += 1;
                            decoded.push(object);
                        }
                        Err(e) => {
                            *skipped += 1;
                            tracing::warn!(kind, error = %e, "skipping bad object");
                        }
                    }
                });
                chunk.len()
            };
            if n == 0 {
                break;
            }
            body.as_mut().consume(n);
            for object in decoded.drain(..) {
                self.send(ClusterEvent::Listed { object })
                    .await
                    .map_err(|_| PageFailed::Closed)?;
            }
        }
        let rest = page
            .finish()
            .ok_or_else(|| PageFailed::other("the list response ended early or is not JSON"))?;
        #[derive(serde::Deserialize)]
        struct Head {
            #[serde(default)]
            metadata: ListMeta,
        }
        let head: Head = serde_json::from_slice(&rest).map_err(PageFailed::other)?;
        Ok(head.metadata)
    }

    /// Watches from `rv` (kept up to date with events and bookmarks) until the watch ends;
    /// `worked` is set once it delivers anything.
    async fn watch(&mut self, rv: &mut String, worked: &mut bool) -> WatchEnded {
        let wp = WatchParams {
            label_selector: self.labels.clone(),
            field_selector: self.fields.clone(),
            timeout: Some(WATCH_TIMEOUT_SECS),
            bookmarks: true,
            send_initial_events: false,
        };
        let idle = Duration::from_secs(WATCH_TIMEOUT_SECS.into()) + IDLE_MARGIN;
        let stream = match self.api.watch(&wp, rv).await {
            Ok(stream) => stream,
            Err(e) => {
                // A watch refused with an HTTP 410 rather than the usual ERROR event.
                let gone = matches!(&e, kube::Error::Api(s) if s.code == 410);
                if self.restart(gone, "watch", e).await.is_err() {
                    return WatchEnded::Closed;
                }
                return if gone {
                    WatchEnded::Gone
                } else {
                    WatchEnded::Failed
                };
            }
        };
        let mut stream = std::pin::pin!(stream);
        let mut delivered = false;
        loop {
            let event = match tokio::time::timeout(idle, stream.next()).await {
                Ok(Some(event)) => event,
                Ok(None) => return WatchEnded::Ended,
                Err(_) => {
                    tracing::debug!(kind = self.kind.as_str(), "watch idle: reconnecting");
                    return WatchEnded::Ended;
                }
            };
            let sent = match event {
                Ok(WatchEvent::Added(obj) | WatchEvent::Modified(obj)) => {
                    if let Some(v) = obj.resource_version().filter(|v| !v.is_empty()) {
                        *rv = v;
                    }
                    self.applied(obj).await
                }
                Ok(WatchEvent::Deleted(obj)) => {
                    if let Some(v) = obj.resource_version().filter(|v| !v.is_empty()) {
                        *rv = v;
                    }
                    self.deleted(obj.meta()).await
                }
                Ok(WatchEvent::Bookmark(b)) => {
                    *rv = b.metadata.resource_version;
                    Ok(())
                }
                Ok(WatchEvent::Error(status)) => {
                    let gone = status.code == 410;
                    if self.restart(gone, "watch", status).await.is_err() {
                        return WatchEnded::Closed;
                    }
                    return if gone {
                        WatchEnded::Gone
                    } else {
                        WatchEnded::Failed
                    };
                }
                // One event that does not decode into the trimmed type (a field of the wrong
                // type): skipped, the watch goes on (resuming would replay it forever). kube-client
                // reports such a line as a `Status` with no code when it parses as one, which any
                // JSON object does.
                Err(kube::Error::SerdeError(e)) => {
                    tracing::warn!(kind = self.kind.as_str(), error = %e, "skipping a watch event that does not decode");
                    continue;
                }
                Err(kube::Error::Api(status)) if status.code == 0 => {
                    tracing::warn!(
                        kind = self.kind.as_str(),
                        "skipping a watch event that does not decode"
                    );
                    continue;
                }
                Err(e) => {
                    if self.restart(false, "watch", e).await.is_err() {
                        return WatchEnded::Closed;
                    }
                    return WatchEnded::Failed;
                }
            };
            if sent.is_err() {
                return WatchEnded::Closed;
            }
            self.freshness.touch();
            if !delivered {
                delivered = true;
                *worked = true;
                self.useless_lists = 0;
                self.retry.reset();
            }
        }
    }

    /// An ADDED or MODIFIED watch event.
    async fn applied(&mut self, obj: K) -> Result<(), Closed> {
        let kind = self.kind;
        let key = key_of(kind, obj.meta());
        let revision = revision_of(obj.meta().resource_version.as_ref());
        let c = (self.convert)(obj);
        let event = match c.object {
            Ok(object) => {
                let changed_at = match kind {
                    Kind::EndpointSlice => c.triggered,
                    Kind::Service => {
                        let new = self.known.as_mut().is_some_and(|k| k.insert(&object.key()));
                        c.created
                            .filter(|t| new && t.elapsed().map_or(true, |age| age < FRESH_CREATION))
                    }
                    _ => None,
                };
                ClusterEvent::Apply { object, changed_at }
            }
            Err(e) => {
                tracing::warn!(kind = kind.as_str(), error = %e, "skipping bad object");
                // Whatever version was good before is not the object any more.
                let Some(key) = key else { return Ok(()) };
                if let Some(known) = self.known.as_mut() {
                    known.remove(&key);
                }
                ClusterEvent::Delete { key }
            }
        };
        self.send(at_revision(revision, event)).await
    }

    /// A DELETED watch event.
    async fn deleted(&mut self, meta: &ObjectMeta) -> Result<(), Closed> {
        let Some(key) = key_of(self.kind, meta) else {
            tracing::warn!(
                kind = self.kind.as_str(),
                "ignoring the deletion of an object without a name"
            );
            return Ok(());
        };
        if let Some(known) = self.known.as_mut() {
            known.remove(&key);
        }
        let revision = revision_of(meta.resource_version.as_ref());
        self.send(at_revision(revision, ClusterEvent::Delete { key }))
            .await
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

/// The objects a source has seen, by a 64-bit hash of their key: the keys themselves would keep
/// the allocations of the objects they came from alive, scattered over the pages a list was
/// decoded in, which could then never be handed back. (A collision makes a creation look like
/// an update, which only leaves it out of the programming-duration metric.)
#[derive(Debug, Default)]
struct Known {
    hashes: HashSet<u64>,
    hasher: std::hash::RandomState,
}

impl Known {
    /// An empty set hashing alike.
    fn fresh(&self) -> Known {
        Known {
            hashes: HashSet::new(),
            hasher: self.hasher.clone(),
        }
    }
    fn hash(&self, key: &ObjectKey) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(key)
    }
    /// Whether the key is new.
    fn insert(&mut self, key: &ObjectKey) -> bool {
        let h = self.hash(key);
        self.hashes.insert(h)
    }
    fn remove(&mut self, key: &ObjectKey) {
        let h = self.hash(key);
        self.hashes.remove(&h);
    }
}

/// Delays before retrying after failures. The first failure after [`Self::QUIET`] without one is
/// retried at once: a watch cut by an API server restart is asked again in milliseconds. After
/// that, 800 ms doubling to 30 s (client-go's reflector), each delay drawn between half and all
/// of its step, so that replicas cut off at the same moment do not come back in step, and so
/// that no wait is ever longer than 30 s: an API server back from an outage is seen within 30 s.
#[derive(Debug, Default)]
struct Retry {
    /// Failures since the last success (or since the last immediate retry).
    failures: u32,
    last_immediate: Option<Instant>,
}

impl Retry {
    const QUIET: Duration = Duration::from_secs(10);
    const FIRST: Duration = Duration::from_millis(800);
    const MAX: Duration = Duration::from_secs(30);

    fn next(&mut self) -> Duration {
        let now = Instant::now();
        if self
            .last_immediate
            .is_none_or(|t| now.duration_since(t) >= Self::QUIET)
        {
            self.last_immediate = Some(now);
            return Duration::ZERO;
        }
        let step = Self::FIRST
            .saturating_mul(1 << self.failures.min(16))
            .min(Self::MAX);
        self.failures += 1;
        step.mul_f64(0.5 + 0.5 * fastrand::f64())
    }

    /// The server answered: the next failures start from the first step again.
    fn reset(&mut self) {
        self.failures = 0;
    }
}

/// An event at an API revision, when there is one.
fn at_revision(revision: Option<u64>, event: ClusterEvent) -> ClusterEvent {
    match revision {
        Some(revision) => ClusterEvent::AtRevision {
            revision,
            event: Box::new(event),
        },
        None => event,
    }
}

/// A resourceVersion as the integer etcd makes it (the API calls it opaque; every etcd-backed
/// server, and kine, writes the revision in decimal). None when it is not one: the zone's
/// serial then just counts up (see `zone::serial`), which is logged once.
fn revision_of(rv: Option<&String>) -> Option<u64> {
    let rv = rv?;
    let r = rv.parse().ok();
    if r.is_none() {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            tracing::warn!(
                resource_version = rv.as_str(),
                "resourceVersions are not integers: zone serials will not agree between replicas"
            );
        });
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_is_immediate_once_per_quiet_period_then_grows_to_30s() {
        let mut r = Retry::default();
        assert_eq!(r.next(), Duration::ZERO);
        let second = r.next();
        assert!(
            (Duration::from_millis(400)..=Duration::from_millis(800)).contains(&second),
            "{second:?}"
        );
        let third = r.next();
        assert!(
            (Duration::from_millis(800)..=Duration::from_millis(1600)).contains(&third),
            "{third:?}"
        );
        let later: Vec<Duration> = (0..24).map(|_| r.next()).skip(4).collect();
        assert!(
            later
                .iter()
                .all(|d| (Duration::from_secs(15)..=Duration::from_secs(30)).contains(d)),
            "{later:?}"
        );
        r.reset();
        assert!(r.next() <= Duration::from_millis(800), "reset starts over");
    }
}
