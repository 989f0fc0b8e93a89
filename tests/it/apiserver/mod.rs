//! A test Kubernetes API server that speaks enough of the real protocol for kube-rs (and
//! client-go style clients) to list and watch Namespaces, Services, Pods and EndpointSlices.
//!
//! What it implements, as the real API server does:
//! - `GET /api/v1/{namespaces,services,pods}`, `GET /apis/discovery.k8s.io/v1/endpointslices`,
//!   their namespaced forms (`/api/v1/namespaces/{ns}/services`, ...) and single objects
//!   (`.../services/{name}`); `/version`, `/healthz`, `/readyz`, `/livez`.
//! - Lists: a `*List` object with `metadata.resourceVersion`; `limit` / `continue` pagination
//!   served from a consistent snapshot (the list's resourceVersion, `410 Expired` once that is
//!   compacted away; `remainingItemCount` for lists without selectors), without copying the
//!   store per page unless it changed since the list began (lists of 150,000 objects are served
//!   in seconds); `resourceVersion` (unset or `0`: current state; `N` with
//!   `resourceVersionMatch=Exact`: the state at N; otherwise not older than N); `labelSelector`
//!   (equality and set-based forms) and `fieldSelector` (`=`, `==`, `!=` on dotted paths such as
//!   `metadata.name` or `status.phase`).
//! - Watches (`watch=true`): newline-delimited JSON `{"type":"ADDED|MODIFIED|DELETED|BOOKMARK|ERROR",
//!   "object":...}` events from the given resourceVersion (unset or `0`: synthetic ADDED for
//!   every current object first); a resourceVersion older than the retained history gets a
//!   `200` stream with one `ERROR` event carrying a `410 Expired` Status, as the API server's
//!   watch cache does; `allowWatchBookmarks` (periodic BOOKMARK events, every 500 ms by default);
//!   `timeoutSeconds` (the stream ends cleanly); `sendInitialEvents=true` (streaming lists, with
//!   the `k8s.io/initial-events-end` bookmark). Objects moving into or out of a watch's label or
//!   field selector are sent as ADDED / DELETED.
//! - Metadata-only requests: `Accept: application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1`
//!   for lists and `as=PartialObjectMetadata` for watches and single objects (what kube-rs sends
//!   for `Api<PartialObjectMeta<K>>`); any other `as=` is `406 Not Acceptable`.
//! - One global resourceVersion counter (like etcd's revision); DELETED events carry a new
//!   resourceVersion.
//!
//! The test side changes the cluster while the server runs (`create`, `update`, `apply`,
//! `delete`), and breaks things: `drop_all_watches` (connections cut mid-stream),
//! `end_all_watches` (clean end, as at `timeoutSeconds`), `partition_watches` (open watches stop
//! receiving anything, as over a dead network path), `expire_history` (compaction: a watch or
//! continue token from an older resourceVersion gets 410), `force_expiry` (an API server restart
//! as clients see it: every watch ends and every resourceVersion given out is compacted away), `stop` / `restart` (an outage; the
//! cluster state and history survive, the port stays the same), `set_max_watch_duration`,
//! `set_bookmark_interval`, `set_expired_watch_as_http_410`, `hold_list_pages` (a kind's list
//! pages after the first wait until `release_list_pages`: a relist kept in progress). `wait_watching` waits until a
//! client's watches are open (a watch starts only after its list is consumed); `requests()`
//! records every request (path, decoded query, Accept, Authorization). `start_blocking` runs the
//! server on a runtime of its own, for tests that drive the `clusterdns` binary without tokio.
//! Objects are stored as given:
//! nothing is validated, so a test can store an object no real API server would accept (a
//! clusterIP of "not-an-ip").

// Shared by the integration tests and three benchmarks, each using part of it.
#![allow(dead_code)]

pub(crate) mod fixtures;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use clusterdns::cluster::selector::Selector;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

pub(crate) use fixtures::*;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = UnsyncBoxBody<Bytes, BoxError>;

/// The resources this server serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Res {
    Namespaces,
    Services,
    Pods,
    EndpointSlices,
}

impl Res {
    pub(crate) const ALL: [Res; 4] = [
        Res::Namespaces,
        Res::Services,
        Res::Pods,
        Res::EndpointSlices,
    ];

    pub(crate) fn kind(self) -> &'static str {
        match self {
            Res::Namespaces => "Namespace",
            Res::Services => "Service",
            Res::Pods => "Pod",
            Res::EndpointSlices => "EndpointSlice",
        }
    }
    pub(crate) fn api_version(self) -> &'static str {
        match self {
            Res::EndpointSlices => "discovery.k8s.io/v1",
            _ => "v1",
        }
    }
    pub(crate) fn plural(self) -> &'static str {
        match self {
            Res::Namespaces => "namespaces",
            Res::Services => "services",
            Res::Pods => "pods",
            Res::EndpointSlices => "endpointslices",
        }
    }
    pub(crate) fn namespaced(self) -> bool {
        self != Res::Namespaces
    }
    pub(crate) fn from_kind(kind: &str) -> Option<Res> {
        Res::ALL.into_iter().find(|r| r.kind() == kind)
    }
    fn from_plural(group: Group, plural: &str) -> Option<Res> {
        Res::ALL
            .into_iter()
            .find(|r| r.plural() == plural && Group::of(*r) == group)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Group {
    Core,
    Discovery,
}

impl Group {
    fn of(r: Res) -> Group {
        if r == Res::EndpointSlices {
            Group::Discovery
        } else {
            Group::Core
        }
    }
}

/// One request as the server saw it, for assertions on what a client sent.
#[derive(Clone, Debug)]
pub(crate) struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// The raw query string (without `?`).
    pub query: String,
    /// Decoded query parameters.
    pub params: BTreeMap<String, String>,
    pub accept: Option<String>,
    pub authorization: Option<String>,
}

impl RecordedRequest {
    pub(crate) fn is_watch(&self) -> bool {
        matches!(
            self.params.get("watch").map(String::as_str),
            Some("true" | "1")
        )
    }
    pub(crate) fn param(&self, k: &str) -> Option<&str> {
        self.params.get(k).map(String::as_str)
    }
}

/// (namespace, name); the namespace is empty for cluster-scoped objects.
type Key = (String, String);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EvType {
    Added,
    Modified,
    Deleted,
}

struct HistEvent {
    rv: u64,
    typ: EvType,
    obj: Arc<Value>,
    /// The object before this change (Modified, Deleted).
    prev: Option<Arc<Value>>,
}

#[derive(Default)]
struct Store {
    objects: BTreeMap<Key, Arc<Value>>,
    /// Each object as a list item (JSON without `kind` and `apiVersion`), encoded once when
    /// stored, as the API server's watch cache keeps objects serialized: a list of 150,000
    /// pods costs the test server copies of bytes, not 150,000 encodings.
    encoded: HashMap<Key, Bytes>,
    history: VecDeque<HistEvent>,
}

/// An object as a list item: JSON without `kind` and `apiVersion`.
fn list_item(obj: &Value) -> Bytes {
    let mut item = obj.clone();
    if let Some(m) = item.as_object_mut() {
        m.remove("kind");
        m.remove("apiVersion");
    }
    Bytes::from(serde_json::to_vec(&item).expect("json"))
}

#[derive(Clone, Debug, Default)]
struct Filter {
    namespace: Option<String>,
    labels: Option<Selector>,
    fields: Vec<FieldReq>,
}

#[derive(Clone, Debug)]
struct FieldReq {
    /// The field's path, split at its dots (`status.phase`: `["status", "phase"]`).
    path: Vec<String>,
    value: String,
    negate: bool,
}

impl Filter {
    fn matches(&self, obj: &Value) -> bool {
        if let Some(ns) = &self.namespace
            && obj.pointer("/metadata/namespace").and_then(Value::as_str) != Some(ns.as_str())
        {
            return false;
        }
        if let Some(sel) = &self.labels {
            let labels: BTreeMap<String, String> = obj
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default();
            if !sel.matches(&labels) {
                return false;
            }
        }
        // Compared in place: this runs for every object of every list of a large store.
        self.fields.iter().all(|f| {
            let field = f.path.iter().try_fold(obj, |v, k| v.get(k.as_str()));
            let equal = match field {
                Some(Value::String(s)) => *s == f.value,
                Some(Value::Null) | None => f.value.is_empty(),
                // A number or a boolean, compared as the selector's text.
                Some(other) => {
                    let text = other.to_string();
                    text == f.value
                }
            };
            equal != f.negate
        })
    }
}

fn parse_fields(s: &str) -> Result<Vec<FieldReq>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (path, value, negate) = if let Some((k, v)) = part.split_once("!=") {
            (k, v, true)
        } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
            (k, v, false)
        } else {
            return Err(format!("invalid field selector requirement {part:?}"));
        };
        out.push(FieldReq {
            path: path.trim().split('.').map(str::to_string).collect(),
            value: value.trim().to_string(),
            negate,
        });
    }
    Ok(out)
}

enum WatchMsg {
    Data(Bytes),
    /// Cut the connection without ending the chunked body.
    Abort,
}

struct Watcher {
    res: Res,
    filter: Filter,
    meta_only: bool,
    bookmarks: bool,
    tx: mpsc::UnboundedSender<WatchMsg>,
}

impl Watcher {
    fn send_line(&self, line: Bytes) -> bool {
        self.tx.send(WatchMsg::Data(line)).is_ok()
    }

    /// The event this watcher gets for a change, if any (selector transitions included).
    fn event_for(&self, typ: EvType, obj: &Value, prev: Option<&Value>) -> Option<Bytes> {
        let t = match typ {
            EvType::Added => self.filter.matches(obj).then_some("ADDED"),
            EvType::Modified => {
                let was = prev.is_some_and(|p| self.filter.matches(p));
                match (was, self.filter.matches(obj)) {
                    (true, true) => Some("MODIFIED"),
                    (true, false) => Some("DELETED"),
                    (false, true) => Some("ADDED"),
                    (false, false) => None,
                }
            }
            EvType::Deleted => self
                .filter
                .matches(prev.unwrap_or(obj))
                .then_some("DELETED"),
        }?;
        Some(event_line(t, &self.render(obj)))
    }

    fn render(&self, obj: &Value) -> Value {
        if self.meta_only {
            partial_metadata(obj)
        } else {
            obj.clone()
        }
    }

    fn bookmark(&self, rv: u64, initial_events_end: bool) -> Bytes {
        let (kind, api_version) = if self.meta_only {
            ("PartialObjectMetadata", "meta.k8s.io/v1")
        } else {
            (self.res.kind(), self.res.api_version())
        };
        let mut metadata = json!({ "resourceVersion": rv.to_string() });
        if initial_events_end {
            metadata["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
        }
        event_line(
            "BOOKMARK",
            &json!({ "kind": kind, "apiVersion": api_version, "metadata": metadata }),
        )
    }
}

fn event_line(typ: &str, obj: &Value) -> Bytes {
    let mut v = serde_json::to_vec(&json!({ "type": typ, "object": obj })).expect("json");
    v.push(b'\n');
    Bytes::from(v)
}

fn partial_metadata(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

struct State {
    rv: u64,
    /// Watches and continue tokens from a resourceVersion below this get 410.
    compacted: u64,
    stores: HashMap<Res, Store>,
    watchers: Vec<Watcher>,
    /// Watches cut off by `partition_watches`: open, but nothing reaches them any more.
    partitioned: Vec<Watcher>,
    uid: u64,
    requests: Vec<RecordedRequest>,
    bookmark_interval: Option<Duration>,
    max_watch: Option<Duration>,
    /// Refuse a watch from a compacted resourceVersion with an HTTP 410 instead of the ERROR event.
    expired_watch_as_http_410: bool,
}

impl State {
    fn store(&mut self, r: Res) -> &mut Store {
        self.stores.entry(r).or_default()
    }

    /// Objects of `r` as they were at resourceVersion `at` (undoing later history).
    fn objects_at(&mut self, r: Res, at: u64) -> Option<BTreeMap<Key, Arc<Value>>> {
        if at < self.compacted {
            return None;
        }
        let store = self.store(r);
        let mut objects = store.objects.clone();
        for ev in store.history.iter().rev().take_while(|e| e.rv > at) {
            let key = key_of(r, &ev.obj);
            match ev.typ {
                EvType::Added => {
                    objects.remove(&key);
                }
                EvType::Modified | EvType::Deleted => {
                    if let Some(p) = &ev.prev {
                        objects.insert(key, p.clone());
                    }
                }
            }
        }
        Some(objects)
    }

    /// Records a change and sends it to every matching watch.
    fn publish(&mut self, r: Res, typ: EvType, obj: Arc<Value>, prev: Option<Arc<Value>>) {
        let rv = self.rv;
        self.watchers.retain(|w| {
            if w.res != r {
                return true;
            }
            match w.event_for(typ, &obj, prev.as_deref()) {
                Some(line) => w.send_line(line),
                None => !w.tx.is_closed(),
            }
        });
        self.store(r)
            .history
            .push_back(HistEvent { rv, typ, obj, prev });
    }

    fn send_bookmarks(&mut self) {
        let rv = self.rv;
        self.watchers.retain(|w| {
            if w.bookmarks {
                w.send_line(w.bookmark(rv, false))
            } else {
                !w.tx.is_closed()
            }
        });
    }
}

/// An object as the server stores it: its resource, the object normalized, its key.
fn normalized(obj: impl Into<Value>) -> (Res, Value, Key) {
    let mut obj = obj.into();
    let r = res_of(&obj);
    normalize(r, &mut obj);
    let key = key_of(r, &obj);
    (r, obj, key)
}

/// The store key of `namespace/name` (no namespace for cluster-scoped kinds).
fn key_in(r: Res, namespace: &str, name: &str) -> Key {
    let ns = if r.namespaced() { namespace } else { "" };
    (ns.to_string(), name.to_string())
}

fn key_of(r: Res, obj: &Value) -> Key {
    let ns = if r.namespaced() {
        obj.pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default")
    } else {
        ""
    };
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    (ns.to_string(), name.to_string())
}

struct Inner {
    state: Mutex<State>,
    /// Kinds whose list pages after the first wait (see [`ApiServer::hold_list_pages`]).
    held_pages: tokio::sync::watch::Sender<Vec<Res>>,
    addr: SocketAddr,
    running: Mutex<Option<Running>>,
    /// Where the server's tasks run.
    rt: tokio::runtime::Handle,
}

struct Running {
    accept: JoinHandle<()>,
    ticker: JoinHandle<()>,
}

impl Running {
    fn abort(self) {
        // Aborting the accept task drops its JoinSet, which aborts every connection task:
        // sockets close mid-response, as when an API server dies.
        self.accept.abort();
        self.ticker.abort();
    }
}

/// A running test API server. Dropping it stops it.
pub(crate) struct ApiServer {
    inner: Arc<Inner>,
    /// The runtime of a server made by [`ApiServer::start_blocking`].
    own_rt: Option<tokio::runtime::Runtime>,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(r) = self.inner.running.lock().unwrap().take() {
            r.abort();
        }
        if let Some(rt) = self.own_rt.take() {
            rt.shutdown_background();
        }
    }
}

impl ApiServer {
    /// Starts a server on `127.0.0.1` on a free port; returns it and its URL (`http://127.0.0.1:PORT`).
    pub(crate) async fn start() -> (ApiServer, String) {
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind the test API server");
        let addr = listener.local_addr().unwrap();
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                rv: 100,
                compacted: 100,
                stores: HashMap::new(),
                watchers: Vec::new(),
                partitioned: Vec::new(),
                uid: 0,
                requests: Vec::new(),
                bookmark_interval: Some(Duration::from_millis(500)),
                max_watch: None,
                expired_watch_as_http_410: false,
            }),
            held_pages: tokio::sync::watch::Sender::new(Vec::new()),
            addr,
            running: Mutex::new(None),
            rt: tokio::runtime::Handle::current(),
        });
        let server = ApiServer {
            inner,
            own_rt: None,
        };
        server.serve(listener);
        let url = server.url();
        (server, url)
    }

    /// [`Self::start`] for tests without a tokio runtime (e.g. ones that run the `clusterdns`
    /// binary): the server gets a runtime thread of its own. Use [`Self::stop_blocking`] and
    /// [`Self::restart_blocking`]; everything else is synchronous anyway.
    pub(crate) fn start_blocking() -> (ApiServer, String) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("test-apiserver")
            .enable_all()
            .build()
            .expect("test API server runtime");
        let (mut server, url) = rt.block_on(ApiServer::start());
        server.own_rt = Some(rt);
        (server, url)
    }

    /// [`Self::stop`] from outside a runtime.
    pub(crate) fn stop_blocking(&self) {
        self.inner.rt.clone().block_on(self.stop())
    }

    /// [`Self::restart`] from outside a runtime.
    pub(crate) fn restart_blocking(&self) {
        self.inner.rt.clone().block_on(self.restart())
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap()
    }

    fn serve(&self, listener: TcpListener) {
        let inner = self.inner.clone();
        let accept = self.inner.rt.spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        // As Go's servers do: a watch event is a small write after the headers,
                        // which Nagle's algorithm would hold until the client's delayed ACK.
                        let _ = stream.set_nodelay(true);
                        let inner = inner.clone();
                        conns.spawn(async move {
                            let service = hyper::service::service_fn(move |req| handle(inner.clone(), req));
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        let inner = self.inner.clone();
        let ticker = self.inner.rt.spawn(async move {
            loop {
                let interval = inner.state.lock().unwrap().bookmark_interval;
                match interval {
                    Some(d) => {
                        tokio::time::sleep(d).await;
                        inner.state.lock().unwrap().send_bookmarks();
                    }
                    None => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        *self.inner.running.lock().unwrap() = Some(Running { accept, ticker });
    }

    /// An outage: closes the listener and every connection (watches end mid-stream, pooled
    /// connections die). The cluster state and its history are kept; changes made while stopped
    /// are replayed to watches that resume after [`Self::restart`].
    pub(crate) async fn stop(&self) {
        let running = self.inner.running.lock().unwrap().take();
        if let Some(r) = running {
            let accept = r.accept;
            r.ticker.abort();
            accept.abort();
            let _ = accept.await;
        }
        let mut st = self.state();
        st.watchers.clear();
        st.partitioned.clear();
    }

    /// Serves again on the same port after [`Self::stop`].
    pub(crate) async fn restart(&self) {
        if self.inner.running.lock().unwrap().is_some() {
            return;
        }
        let mut tries = 0;
        let listener = loop {
            match bind(self.inner.addr).await {
                Ok(l) => break l,
                Err(_) if tries < 50 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("cannot bind {} again: {e}", self.inner.addr),
            }
        };
        self.serve(listener);
    }

    /// Writes an ordinary kubeconfig (cluster, context, user with a token) for this server's
    /// `http://` URL to `dir/kubeconfig` and returns its path.
    pub(crate) fn write_kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {url}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: test\n    namespace: default\ncurrent-context: test\nusers:\n- name: test\n  user:\n    token: test-token\npreferences: {{}}\n",
            url = self.url()
        );
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }

    // ----- changing the cluster -----

    /// Stores a new object (kind from its `kind` field) and returns it as stored (with
    /// resourceVersion, uid, creationTimestamp). Panics if it exists.
    pub(crate) fn create(&self, obj: impl Into<Value>) -> Value {
        let (r, mut obj, key) = normalized(obj);
        let mut st = self.state();
        assert!(
            !st.store(r).objects.contains_key(&key),
            "{} {}/{} already exists",
            r.kind(),
            key.0,
            key.1
        );
        st.rv += 1;
        st.uid += 1;
        let (rv, uid) = (st.rv, st.uid);
        let meta = obj["metadata"].as_object_mut().unwrap();
        meta.insert("resourceVersion".into(), json!(rv.to_string()));
        meta.insert(
            "uid".into(),
            json!(format!("00000000-0000-0000-0000-{uid:012}")),
        );
        meta.entry("creationTimestamp")
            .or_insert_with(|| json!(now_rfc3339()));
        meta.entry("generation").or_insert(json!(1));
        let obj = Arc::new(obj);
        let store = st.store(r);
        store.encoded.insert(key.clone(), list_item(&obj));
        store.objects.insert(key, obj.clone());
        st.publish(r, EvType::Added, obj.clone(), None);
        (*obj).clone()
    }

    /// Replaces an existing object (uid and creationTimestamp kept); returns it as stored.
    /// Panics if it does not exist.
    pub(crate) fn update(&self, obj: impl Into<Value>) -> Value {
        let (r, mut obj, key) = normalized(obj);
        let mut st = self.state();
        let prev = st
            .store(r)
            .objects
            .get(&key)
            .cloned()
            .unwrap_or_else(|| panic!("{} {}/{} does not exist", r.kind(), key.0, key.1));
        st.rv += 1;
        let rv = st.rv;
        let meta = obj["metadata"].as_object_mut().unwrap();
        meta.insert("resourceVersion".into(), json!(rv.to_string()));
        for k in ["uid", "creationTimestamp"] {
            if let Some(v) = prev.pointer(&format!("/metadata/{k}")) {
                meta.insert(k.into(), v.clone());
            }
        }
        let generation = prev
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        meta.insert("generation".into(), json!(generation + 1));
        let obj = Arc::new(obj);
        let store = st.store(r);
        store.encoded.insert(key.clone(), list_item(&obj));
        store.objects.insert(key, obj.clone());
        st.publish(r, EvType::Modified, obj.clone(), Some(prev));
        (*obj).clone()
    }

    /// Creates or updates.
    pub(crate) fn apply(&self, obj: impl Into<Value>) -> Value {
        let obj = obj.into();
        let (r, _, key) = normalized(obj.clone());
        let exists = self.state().store(r).objects.contains_key(&key);
        if exists {
            self.update(obj)
        } else {
            self.create(obj)
        }
    }

    /// Deletes the object named by `obj` (its kind, namespace and name); returns its final state.
    /// Panics if it does not exist.
    pub(crate) fn delete(&self, obj: impl Into<Value>) -> Value {
        let (r, _, (ns, name)) = normalized(obj);
        self.delete_named(r.kind(), &ns, &name)
    }

    /// Deletes by kind (`"Service"`, ...), namespace (ignored for namespaces) and name.
    pub(crate) fn delete_named(&self, kind: &str, namespace: &str, name: &str) -> Value {
        let r = Res::from_kind(kind).unwrap_or_else(|| panic!("unknown kind {kind}"));
        let key = key_in(r, namespace, name);
        let mut st = self.state();
        st.store(r).encoded.remove(&key);
        let prev = st
            .store(r)
            .objects
            .remove(&key)
            .unwrap_or_else(|| panic!("{kind} {namespace}/{name} does not exist"));
        st.rv += 1;
        let mut last = (*prev).clone();
        last["metadata"]["resourceVersion"] = json!(st.rv.to_string());
        let last = Arc::new(last);
        st.publish(r, EvType::Deleted, last.clone(), Some(prev));
        (*last).clone()
    }

    /// The stored object, if any.
    pub(crate) fn get(&self, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let r = Res::from_kind(kind)?;
        let key = key_in(r, namespace, name);
        self.state()
            .store(r)
            .objects
            .get(&key)
            .map(|o| (**o).clone())
    }

    /// The current (latest) resourceVersion.
    pub(crate) fn resource_version(&self) -> u64 {
        self.state().rv
    }

    // ----- breaking things -----

    /// Cuts every open watch connection mid-stream (no terminating chunk), as a dropped
    /// connection or a dying API server replica does. Clients reconnect from their last
    /// resourceVersion.
    pub(crate) fn drop_all_watches(&self) {
        let mut st = self.state();
        let mut all: Vec<Watcher> = st.watchers.drain(..).collect();
        all.append(&mut st.partitioned);
        for w in all {
            let _ = w.tx.send(WatchMsg::Abort);
        }
    }

    /// Ends every open watch cleanly, as the API server does at `timeoutSeconds`.
    pub(crate) fn end_all_watches(&self) {
        let mut st = self.state();
        st.watchers.clear();
        st.partitioned.clear();
    }

    /// Open watches stay connected but receive nothing more (no events, no bookmarks), as over a
    /// dead network path; new watches work normally. Follow with changes, [`Self::expire_history`]
    /// and [`Self::drop_all_watches`] to make clients miss changes and relist.
    pub(crate) fn partition_watches(&self) {
        let mut st = self.state();
        let cut: Vec<Watcher> = st.watchers.drain(..).collect();
        st.partitioned.extend(cut);
    }

    /// Compacts the history at the current resourceVersion: a watch (or a continue token) from
    /// an older resourceVersion gets `410 Gone` / `Expired`.
    pub(crate) fn expire_history(&self) {
        let mut st = self.state();
        st.compacted = st.rv;
        for s in st.stores.values_mut() {
            s.history.clear();
        }
    }

    /// What clients see of an API server restart with a cold watch cache: every watch ends
    /// (cleanly, as at its timeout) and the history is compacted past every resourceVersion
    /// given out so far, so a client resuming its watch gets `410 Gone` and must list again.
    /// The objects stay as they are.
    pub(crate) fn force_expiry(&self) {
        let mut st = self.state();
        st.rv += 1;
        st.compacted = st.rv;
        for s in st.stores.values_mut() {
            s.history.clear();
        }
        st.watchers.clear();
        st.partitioned.clear();
    }

    /// From now on, a list of `res` gets its first page, and its next pages wait (the client's
    /// request open, unanswered) until [`Self::release_list_pages`]: a relist that stays in
    /// progress for as long as a test needs, as a list of a huge kind does.
    pub(crate) fn hold_list_pages(&self, res: Res) {
        self.inner.held_pages.send_modify(|h| h.push(res));
    }

    /// Answers the list pages held by [`Self::hold_list_pages`], and holds none from now on.
    pub(crate) fn release_list_pages(&self) {
        self.inner.held_pages.send_modify(Vec::clear);
    }

    /// Sends a BOOKMARK at the current resourceVersion to every watch that allows them.
    pub(crate) fn bookmark_now(&self) {
        self.state().send_bookmarks();
    }

    /// How often BOOKMARK events are sent (default 500 ms); `None`: never by themselves.
    pub(crate) fn set_bookmark_interval(&self, every: Option<Duration>) {
        self.state().bookmark_interval = every;
    }

    /// Caps every watch's duration (a shorter `timeoutSeconds`): streams end cleanly after it.
    pub(crate) fn set_max_watch_duration(&self, max: Option<Duration>) {
        self.state().max_watch = max;
    }

    /// Waits until each of `res` has an open (not partitioned) watch; panics after `within`.
    /// A client's watch starts only after its list is consumed, so wait for this before
    /// partitioning or dropping watches.
    pub(crate) async fn wait_watching(&self, res: &[Res], within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while !res.iter().all(|r| self.open_watches(*r) > 0) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no open watch on all of {res:?} within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Refuse a watch from a compacted resourceVersion with an HTTP `410` response instead of the
    /// `200` stream with one ERROR event that the API server's watch cache sends.
    pub(crate) fn set_expired_watch_as_http_410(&self, on: bool) {
        self.state().expired_watch_as_http_410 = on;
    }

    /// Every request served so far.
    pub(crate) fn requests(&self) -> Vec<RecordedRequest> {
        self.state().requests.clone()
    }

    /// Open watches (not partitioned) on a resource.
    pub(crate) fn open_watches(&self, r: Res) -> usize {
        let mut st = self.state();
        st.watchers.retain(|w| !w.tx.is_closed());
        st.watchers.iter().filter(|w| w.res == r).count()
    }
}

async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let sock = TcpSocket::new_v4()?;
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    sock.listen(1024)
}

fn res_of(obj: &Value) -> Res {
    let kind = obj
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("object without kind: {obj}"));
    Res::from_kind(kind).unwrap_or_else(|| panic!("the test API server does not serve kind {kind}"))
}

fn normalize(r: Res, obj: &mut Value) {
    assert!(obj.is_object(), "not an object: {obj}");
    obj["apiVersion"] = json!(r.api_version());
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    let meta = obj["metadata"].as_object_mut().unwrap();
    assert!(
        meta.get("name")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty()),
        "object without metadata.name: {obj}"
    );
    if r.namespaced() {
        meta.entry("namespace").or_insert(json!("default"));
    } else {
        meta.remove("namespace");
    }
}

pub(crate) fn now_rfc3339() -> String {
    k8s_openapi::jiff::fmt::strtime::format(
        "%Y-%m-%dT%H:%M:%SZ",
        k8s_openapi::jiff::Timestamp::now(),
    )
    .unwrap()
}

// ----- HTTP -----

fn full(status: StatusCode, body: &Value) -> Response<Body> {
    let bytes = Bytes::from(serde_json::to_vec(body).expect("json"));
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(
            Full::new(bytes)
                .map_err(|e: Infallible| match e {})
                .boxed_unsync(),
        )
        .unwrap()
}

fn status_obj(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

fn error(code: u16, reason: &str, message: &str) -> Response<Body> {
    full(
        StatusCode::from_u16(code).unwrap(),
        &status_obj(code, reason, message),
    )
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_query(q: &str) -> BTreeMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// What the path names.
struct Target {
    res: Res,
    namespace: Option<String>,
    name: Option<String>,
}

fn route(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match segs.as_slice() {
        ["api", "v1", rest @ ..] => (Group::Core, rest),
        ["apis", "discovery.k8s.io", "v1", rest @ ..] => (Group::Discovery, rest),
        _ => return None,
    };
    let t = |res: Res, namespace: Option<&str>, name: Option<&str>| {
        Some(Target {
            res,
            namespace: namespace.map(str::to_string),
            name: name.map(str::to_string),
        })
    };
    match rest {
        [plural] => t(Res::from_plural(group, plural)?, None, None),
        ["namespaces", name] if group == Group::Core => t(Res::Namespaces, None, Some(name)),
        ["namespaces", ns, plural] => {
            let r = Res::from_plural(group, plural).filter(|r| r.namespaced())?;
            t(r, Some(ns), None)
        }
        ["namespaces", ns, plural, name] => {
            let r = Res::from_plural(group, plural).filter(|r| r.namespaced())?;
            t(r, Some(ns), Some(name))
        }
        _ => None,
    }
}

/// How the client wants objects: whole, or metadata only (list or single form).
#[derive(Clone, Copy, PartialEq, Eq)]
enum As {
    Full,
    Meta,
    MetaList,
}

fn parse_accept(accept: Option<&str>) -> Result<As, String> {
    let Some(a) = accept else { return Ok(As::Full) };
    // Clients may offer several types; take the first JSON one.
    for offer in a.split(',') {
        let params: Vec<&str> = offer.split(';').map(str::trim).collect();
        let mt = params[0];
        if !(mt == "application/json" || mt == "*/*" || mt == "application/*") {
            continue;
        }
        let as_ = params.iter().find_map(|p| p.strip_prefix("as="));
        return match as_ {
            None => Ok(As::Full),
            Some("PartialObjectMetadata") => Ok(As::Meta),
            Some("PartialObjectMetadataList") => Ok(As::MetaList),
            Some(other) => Err(format!("as={other} is not supported")),
        };
    }
    Err(format!("no acceptable media type in {a:?}"))
}

async fn handle(inner: Arc<Inner>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let params = parse_query(&query);
    let header = |h: &str| {
        req.headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let rec = RecordedRequest {
        method: req.method().to_string(),
        path: path.clone(),
        query,
        params: params.clone(),
        accept: header("accept"),
        authorization: header("authorization"),
    };
    let accept = rec.accept.clone();
    inner.state.lock().unwrap().requests.push(rec);

    if req.method() != Method::GET {
        return Ok(error(
            405,
            "MethodNotAllowed",
            "the test API server changes objects only from the test code",
        ));
    }
    match path.as_str() {
        "/version" => {
            return Ok(full(
                StatusCode::OK,
                &json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-clusterdns-test", "platform": "linux/amd64"}),
            ));
        }
        "/healthz" | "/readyz" | "/livez" => {
            return Ok(Response::builder()
                .status(200)
                .header("content-type", "text/plain")
                .body(
                    Full::new(Bytes::from_static(b"ok"))
                        .map_err(|e: Infallible| match e {})
                        .boxed_unsync(),
                )
                .unwrap());
        }
        _ => {}
    }
    let Some(target) = route(&path) else {
        return Ok(error(
            404,
            "NotFound",
            &format!("the server could not find the requested resource ({path})"),
        ));
    };
    let as_ = match parse_accept(accept.as_deref()) {
        Ok(a) => a,
        Err(m) => return Ok(error(406, "NotAcceptable", &m)),
    };
    let watch = matches!(params.get("watch").map(String::as_str), Some("true" | "1"));
    let resp = if let Some(name) = &target.name {
        if as_ == As::MetaList {
            error(
                406,
                "NotAcceptable",
                "as=PartialObjectMetadataList is for lists",
            )
        } else {
            get_one(&inner, &target, name, as_ == As::Meta)
        }
    } else if watch && as_ == As::MetaList {
        error(
            406,
            "NotAcceptable",
            "a watch of metadata takes as=PartialObjectMetadata",
        )
    } else if !watch && as_ == As::Meta {
        error(
            406,
            "NotAcceptable",
            "a list of metadata takes as=PartialObjectMetadataList",
        )
    } else {
        match filter_of(&target, &params) {
            Err(m) => error(400, "BadRequest", &m),
            Ok(filter) => {
                let next_page = params.get("continue").is_some_and(|c| !c.is_empty());
                if !watch && next_page {
                    let mut held = inner.held_pages.subscribe();
                    // Err: the server is being dropped; answer anyway.
                    let _ = held.wait_for(|h| !h.contains(&target.res)).await;
                }
                let read = Read {
                    inner: &inner,
                    t: &target,
                    filter,
                    params: &params,
                    meta: as_ == As::Meta || as_ == As::MetaList,
                };
                if watch { start_watch(read) } else { list(read) }
            }
        }
    };
    Ok(resp)
}

fn get_one(inner: &Inner, t: &Target, name: &str, meta: bool) -> Response<Body> {
    let key = (t.namespace.clone().unwrap_or_default(), name.to_string());
    let mut st = inner.state.lock().unwrap();
    match st.store(t.res).objects.get(&key) {
        Some(o) => full(
            StatusCode::OK,
            &if meta {
                partial_metadata(o)
            } else {
                (**o).clone()
            },
        ),
        None => error(
            404,
            "NotFound",
            &format!("{} \"{name}\" not found", t.res.plural()),
        ),
    }
}

fn filter_of(t: &Target, params: &BTreeMap<String, String>) -> Result<Filter, String> {
    let labels = match params.get("labelSelector").filter(|s| !s.is_empty()) {
        Some(s) => Some(Selector::parse(s)?),
        None => None,
    };
    let fields = match params.get("fieldSelector") {
        Some(s) => parse_fields(s)?,
        None => Vec::new(),
    };
    Ok(Filter {
        namespace: t.namespace.clone(),
        labels,
        fields,
    })
}

fn encode_continue(rv: u64, key: &Key) -> String {
    format!("{rv}/{}/{}", key.0, key.1)
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn decode_continue(s: &str) -> Option<(u64, Key)> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    let text = String::from_utf8(bytes?).ok()?;
    let mut parts = text.splitn(3, '/');
    let rv = parts.next()?.parse().ok()?;
    Some((rv, (parts.next()?.to_string(), parts.next()?.to_string())))
}

/// A list or watch request, its selectors parsed.
struct Read<'a> {
    inner: &'a Inner,
    t: &'a Target,
    filter: Filter,
    params: &'a BTreeMap<String, String>,
    /// Metadata only (`as=PartialObjectMetadata[List]`).
    meta: bool,
}

/// A list (`limit`/`continue` pages, `resourceVersion` semantics) of what `filter` selects.
fn list(read: Read<'_>) -> Response<Body> {
    let Read {
        inner,
        t,
        filter,
        params,
        meta,
    } = read;
    let limit = match params
        .get("limit")
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>())
    {
        None => None,
        Some(Ok(0)) => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => return error(400, "BadRequest", "invalid limit"),
    };
    let mut st = inner.state.lock().unwrap();
    let current = st.rv;
    // Which state the list shows: the one at `at`, from the object after `after` on.
    let (list_rv, after, at) = if let Some(c) = params.get("continue").filter(|s| !s.is_empty()) {
        let Some((rv, after)) = decode_continue(c) else {
            return error(400, "BadRequest", "invalid continue token");
        };
        if rv < st.compacted {
            return error(
                410,
                "Expired",
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
            );
        }
        (rv, Some(after), rv)
    } else {
        let rv_param = params
            .get("resourceVersion")
            .map(String::as_str)
            .unwrap_or("");
        let exact = params.get("resourceVersionMatch").map(String::as_str) == Some("Exact");
        match rv_param {
            "" | "0" => (current, None, current),
            n => {
                let Ok(n) = n.parse::<u64>() else {
                    return error(400, "BadRequest", &format!("invalid resourceVersion {n:?}"));
                };
                if n > current {
                    return error(
                        504,
                        "Timeout",
                        &format!("Too large resource version: {n}, current: {current}"),
                    );
                }
                if exact && n < st.compacted {
                    return error(
                        410,
                        "Expired",
                        &format!("too old resource version: {n} ({})", st.compacted),
                    );
                }
                if exact {
                    (n, None, n)
                } else {
                    (current, None, current)
                }
            }
        }
    };
    // The objects as they were at `at`: the store itself when nothing changed since (every page
    // of a list of a quiet cluster: no copy of a large store per page), else a reconstruction.
    let changed_since = st.store(t.res).history.back().is_some_and(|e| e.rv > at);
    let reconstructed = if changed_since {
        match st.objects_at(t.res, at) {
            Some(o) => Some(o),
            None => return error(410, "Expired", &format!("too old resource version: {at}")),
        }
    } else {
        None
    };
    let store = st.stores.entry(t.res).or_default();
    let objects = match &reconstructed {
        Some(o) => o,
        None => &store.objects,
    };
    // Items as stored, when the store is what the list shows (encoded anew otherwise).
    let stored = !meta && reconstructed.is_none();

    use std::ops::Bound;
    let from = match &after {
        Some(a) => Bound::Excluded(a.clone()),
        None => Bound::Unbounded,
    };
    let mut matching = objects
        .range((from, Bound::Unbounded))
        .filter(|(_, o)| filter.matches(o));
    // Each item as stored (`Ok`), or the object to encode.
    let mut page: Vec<Result<Bytes, Arc<Value>>> = Vec::new();
    let mut last_key = None;
    for (k, o) in matching.by_ref() {
        let encoded = stored.then(|| store.encoded.get(k).cloned()).flatten();
        page.push(encoded.ok_or_else(|| o.clone()));
        last_key = Some(k);
        if limit.is_some_and(|l| page.len() >= l) {
            break;
        }
    }
    let more = limit.is_some() && matching.next().is_some();
    // As the API server: the count of what is left only for lists without selectors.
    let remaining =
        (more && filter.labels.is_none() && filter.fields.is_empty()).then(|| 1 + matching.count());
    let last_key = last_key.cloned();
    drop(st);
    // Assembled without the lock: other requests (and the test) go on meanwhile.
    let items: Vec<Bytes> = page
        .into_iter()
        .map(|item| match item {
            Ok(b) => b,
            Err(o) if meta => Bytes::from(serde_json::to_vec(&partial_metadata(&o)).expect("json")),
            Err(o) => list_item(&o),
        })
        .collect();

    let mut list_meta = json!({ "resourceVersion": list_rv.to_string() });
    if more {
        list_meta["continue"] = json!(encode_continue(list_rv, last_key.as_ref().unwrap()));
        if let Some(n) = remaining {
            list_meta["remainingItemCount"] = json!(n);
        }
    }
    let (kind, api_version) = if meta {
        ("PartialObjectMetadataList".to_string(), "meta.k8s.io/v1")
    } else {
        (format!("{}List", t.res.kind()), t.res.api_version())
    };
    let head = json!({ "kind": kind, "apiVersion": api_version, "metadata": list_meta });
    let mut body = serde_json::to_vec(&head).expect("json");
    body.pop(); // the closing brace: the items follow
    body.extend_from_slice(b",\"items\":[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(item);
    }
    body.extend_from_slice(b"]}");
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(
            Full::new(Bytes::from(body))
                .map_err(|e: Infallible| match e {})
                .boxed_unsync(),
        )
        .unwrap()
}

/// A watch stream of what `filter` selects, from the request's `resourceVersion`.
fn start_watch(read: Read<'_>) -> Response<Body> {
    let Read {
        inner, t, params, ..
    } = read;
    let flag = |k: &str| matches!(params.get(k).map(String::as_str), Some("true" | "1"));
    let bookmarks = flag("allowWatchBookmarks");
    let initial_events = flag("sendInitialEvents");
    let timeout = params
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map(Duration::from_secs);

    let (tx, rx) = mpsc::unbounded_channel();
    let w = Watcher {
        res: t.res,
        filter: read.filter,
        meta_only: read.meta,
        bookmarks,
        tx,
    };
    let mut st = inner.state.lock().unwrap();
    let max = st.max_watch;
    let rv_param = params
        .get("resourceVersion")
        .map(String::as_str)
        .unwrap_or("");
    let mut register = true;
    if initial_events || rv_param.is_empty() || rv_param == "0" {
        // "Get state and start at most recent": synthetic ADDED for everything that exists.
        let objects: Vec<Arc<Value>> = st.store(t.res).objects.values().cloned().collect();
        for o in objects.iter().filter(|o| w.filter.matches(o)) {
            w.send_line(event_line("ADDED", &w.render(o)));
        }
        if initial_events && bookmarks {
            w.send_line(w.bookmark(st.rv, true));
        }
    } else {
        let Ok(from) = rv_param.parse::<u64>() else {
            return error(
                400,
                "BadRequest",
                &format!("invalid resourceVersion {rv_param:?}"),
            );
        };
        if from < st.compacted && st.expired_watch_as_http_410 {
            return error(
                410,
                "Expired",
                &format!("too old resource version: {from} ({})", st.compacted),
            );
        } else if from < st.compacted {
            let status = status_obj(
                410,
                "Expired",
                &format!("too old resource version: {from} ({})", st.compacted),
            );
            w.send_line(event_line("ERROR", &status));
            register = false; // the stream ends after the error, as the API server's does
        } else {
            let store = st.store(t.res);
            for ev in store.history.iter().filter(|e| e.rv > from) {
                if let Some(line) = w.event_for(ev.typ, &ev.obj, ev.prev.as_deref()) {
                    w.send_line(line);
                }
            }
        }
    }
    if register {
        st.watchers.push(w);
    } // else `w` (the sender) is dropped here: the body ends after the buffered ERROR line
    drop(st);

    let limit = match (timeout, max) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b).unwrap_or(Duration::from_secs(1800)),
    };
    let deadline = tokio::time::Instant::now() + limit;
    let stream = futures::stream::unfold(Some(rx), move |rx| async move {
        let mut rx = rx?;
        tokio::select! {
            m = rx.recv() => match m {
                Some(WatchMsg::Data(b)) => Some((Ok(Frame::data(b)), Some(rx))),
                Some(WatchMsg::Abort) => Some((Err::<Frame<Bytes>, BoxError>("watch connection dropped by the test".into()), None)),
                None => None,
            },
            _ = tokio::time::sleep_until(deadline) => None,
        }
    });
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(UnsyncBoxBody::new(StreamBody::new(stream)))
        .unwrap()
}
