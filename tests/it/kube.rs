//! The Kubernetes API source (`clusterdns::source::kube::run`) against the test API server:
//! initial sync, watch events, relists after 410 Gone, outages, bad objects, label selectors,
//! pagination; and the test API server's own protocol, through kube-rs.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use clusterdns::cluster::objects::ServiceKind;
use clusterdns::cluster::{ClusterEvent, Kind, Object, ObjectKey};
use clusterdns::error::SourceError;
use clusterdns::source::kube::{KubeSourceOptions, run};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::apiserver::*;
use crate::support::kube_client;

/// A running `source::kube::run` and everything it emitted. A list streamed as `ListBegin`,
/// `Listed`..., `ListEnd` is checked for order and recorded as one `Relist` of its objects.
struct Source {
    rx: mpsc::Receiver<ClusterEvent>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<Result<(), SourceError>>,
    _dir: tempfile::TempDir,
    /// Every event received so far, in order.
    seen: Vec<ClusterEvent>,
    /// The cluster as the events describe it.
    model: BTreeMap<ObjectKey, Object>,
    /// Lists in progress: the objects listed so far.
    listing: BTreeMap<Kind, Vec<Object>>,
}

fn opts_all() -> KubeSourceOptions {
    KubeSourceOptions {
        watch_pods: true,
        watch_endpoints: true,
        ..Default::default()
    }
}

impl Source {
    /// A source of `kinds` (pods and endpoint slices watched only when asked for), once it has
    /// listed each of them and its watches are open.
    async fn watching(api: &ApiServer, kinds: &[Kind]) -> Source {
        let opts = KubeSourceOptions {
            watch_pods: kinds.contains(&Kind::Pod),
            watch_endpoints: kinds.contains(&Kind::EndpointSlice),
            ..opts_all()
        };
        let mut src = Source::start(api, opts).await;
        src.synced(kinds).await;
        let res: Vec<Res> = kinds
            .iter()
            .map(|k| match k {
                Kind::Namespace => Res::Namespaces,
                Kind::Service => Res::Services,
                Kind::EndpointSlice => Res::EndpointSlices,
                Kind::Pod => Res::Pods,
            })
            .collect();
        api.wait_watching(&res, Duration::from_secs(2)).await;
        src
    }

    async fn start(api: &ApiServer, mut opts: KubeSourceOptions) -> Source {
        let dir = tempfile::tempdir().unwrap();
        opts.kubeconfig = Some(api.write_kubeconfig(dir.path()));
        let (tx, rx) = mpsc::channel(64);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let task = tokio::spawn(run(opts, tx, shutdown_rx, Default::default()));
        Source {
            rx,
            shutdown,
            task,
            _dir: dir,
            seen: Vec::new(),
            model: BTreeMap::new(),
            listing: BTreeMap::new(),
        }
    }

    /// A streamed list's events: `Some(Relist)` once one is complete, `None` while it is not.
    fn assemble(&mut self, ev: ClusterEvent) -> Option<ClusterEvent> {
        match ev {
            ClusterEvent::ListBegin { kind } => {
                // A list begun again (a failed page) starts over.
                self.listing.insert(kind, Vec::new());
                None
            }
            ClusterEvent::Listed { object } => {
                let kind = object.key().kind;
                self.listing
                    .get_mut(&kind)
                    .unwrap_or_else(|| panic!("{kind:?} listed outside a list: {object:?}"))
                    .push(object);
                None
            }
            ClusterEvent::ListEnd { kind } => {
                let objects = self
                    .listing
                    .remove(&kind)
                    .unwrap_or_else(|| panic!("ListEnd of {kind:?} without ListBegin"));
                Some(ClusterEvent::Relist { kind, objects })
            }
            ev => {
                if let ClusterEvent::Apply { object, .. } = &ev {
                    assert!(
                        !self.listing.contains_key(&object.key().kind),
                        "a watch event during a list of its kind: {ev:?}"
                    );
                }
                Some(ev)
            }
        }
    }

    fn record(&mut self, ev: &ClusterEvent) {
        match ev {
            ClusterEvent::Relist { kind, objects } => {
                self.model.retain(|k, _| k.kind != *kind);
                for o in objects {
                    self.model.insert(o.key(), o.clone());
                }
            }
            ClusterEvent::Apply { object, .. } => {
                self.model.insert(object.key(), object.clone());
            }
            ClusterEvent::Delete { key } => {
                self.model.remove(key);
            }
            ClusterEvent::WatchRestart { .. } => {}
            other => panic!("not an event of the API source: {other:?}"),
        }
        self.seen.push(ev.clone());
    }

    /// The next event (a complete list as one `Relist`), if one comes within `within`.
    async fn next(&mut self, within: Duration) -> Option<ClusterEvent> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.rx.recv()).await {
                Ok(Some(ev)) => {
                    // The API revision an event carries is for the zone's serial; here, the event.
                    let ev = match ev {
                        ClusterEvent::AtRevision { event, .. } => *event,
                        ev => ev,
                    };
                    if let Some(ev) = self.assemble(ev) {
                        self.record(&ev);
                        return Some(ev);
                    }
                }
                Ok(None) => panic!(
                    "the source closed its channel; run returned {:?}",
                    self.task.is_finished()
                ),
                Err(_) => return None,
            }
        }
    }

    /// Waits for an event matching `pred` (others are recorded and skipped).
    async fn expect(
        &mut self,
        what: &str,
        within: Duration,
        mut pred: impl FnMut(&ClusterEvent) -> bool,
    ) -> ClusterEvent {
        let deadline = Instant::now() + within;
        let from = self.seen.len();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Some(ev) if pred(&ev) => return ev,
                Some(_) => {}
                None => panic!("no {what} within {within:?}; got {:#?}", &self.seen[from..]),
            }
        }
    }

    async fn expect_relist(&mut self, kind: Kind, within: Duration) -> Vec<Object> {
        match self
            .expect(
                &format!("Relist of {kind:?}"),
                within,
                |e| matches!(e, ClusterEvent::Relist { kind: k, .. } if *k == kind),
            )
            .await
        {
            ClusterEvent::Relist { objects, .. } => objects,
            _ => unreachable!(),
        }
    }

    /// Waits for the next Relist of each of `kinds`, in any order.
    async fn expect_relists(
        &mut self,
        kinds: &[Kind],
        within: Duration,
    ) -> BTreeMap<Kind, Vec<Object>> {
        let mut want: BTreeSet<Kind> = kinds.iter().copied().collect();
        let mut got = BTreeMap::new();
        while !want.is_empty() {
            let ev = self
                .expect(
                    &format!("Relists of {want:?}"),
                    within,
                    |e| matches!(e, ClusterEvent::Relist { kind, .. } if want.contains(kind)),
                )
                .await;
            if let ClusterEvent::Relist { kind, objects } = ev {
                want.remove(&kind);
                got.insert(kind, objects);
            }
        }
        got
    }

    /// Waits for the first Relist of each kind.
    async fn synced(&mut self, kinds: &[Kind]) {
        self.expect_relists(kinds, Duration::from_secs(5)).await;
    }

    /// Everything that arrives within `d`.
    async fn quiet(&mut self, d: Duration) -> Vec<ClusterEvent> {
        let deadline = Instant::now() + d;
        let mut out = Vec::new();
        while let Some(ev) = self
            .next(deadline.saturating_duration_since(Instant::now()))
            .await
        {
            out.push(ev);
        }
        out
    }

    /// Waits until the model satisfies `pred`.
    async fn converge(
        &mut self,
        what: &str,
        within: Duration,
        pred: impl Fn(&BTreeMap<ObjectKey, Object>) -> bool,
    ) {
        let deadline = Instant::now() + within;
        let from = self.seen.len();
        while !pred(&self.model) {
            let left = deadline.saturating_duration_since(Instant::now());
            if self.next(left).await.is_none() {
                panic!(
                    "not converged to {what} within {within:?}; events: {:#?}\nmodel: {:#?}",
                    &self.seen[from..],
                    self.model
                );
            }
        }
    }

    /// Waits (briefly: [`FAST`]) for the Apply of one object.
    async fn applied(&mut self, kind: Kind, ns: &str, name: &str) -> ClusterEvent {
        let what = format!("Apply of {kind:?} {ns}/{name}");
        self.expect(&what, FAST, |e| is_apply_of(e, kind, ns, name))
            .await
    }

    /// Waits (briefly: [`FAST`]) for the Delete of one object.
    async fn deleted(&mut self, kind: Kind, ns: &str, name: &str) -> ClusterEvent {
        let what = format!("Delete of {kind:?} {ns}/{name}");
        self.expect(&what, FAST, |e| is_delete_of(e, kind, ns, name))
            .await
    }

    /// How many events so far match `pred`.
    fn count(&self, pred: impl Fn(&ClusterEvent) -> bool) -> usize {
        self.seen.iter().filter(|e| pred(e)).count()
    }

    fn names(&self, kind: Kind) -> BTreeSet<String> {
        self.model
            .keys()
            .filter(|k| k.kind == kind)
            .map(|k| format!("{}/{}", k.namespace, k.name))
            .collect()
    }

    /// Shuts the source down; `run` must return Ok promptly.
    async fn stop(self) {
        self.shutdown.send(true).unwrap();
        let r = tokio::time::timeout(Duration::from_secs(2), self.task)
            .await
            .expect("run did not return after shutdown");
        r.expect("run panicked").expect("run returned an error");
    }
}

fn key(kind: Kind, ns: &str, name: &str) -> ObjectKey {
    ObjectKey {
        kind,
        namespace: ns.into(),
        name: name.into(),
    }
}

fn names(objects: &[Object]) -> BTreeSet<String> {
    objects
        .iter()
        .map(|o| {
            let k = o.key();
            format!("{}/{}", k.namespace, k.name)
        })
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn service<'a>(
    objects: &'a [Object],
    ns: &str,
    name: &str,
) -> &'a clusterdns::cluster::objects::ServiceInfo {
    objects
        .iter()
        .find_map(|o| match o {
            Object::Service(s) if &*s.namespace == ns && &*s.name == name => Some(s),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no service {ns}/{name} in {objects:#?}"))
}

fn is_apply_of(e: &ClusterEvent, kind: Kind, ns: &str, name: &str) -> bool {
    matches!(e, ClusterEvent::Apply { object, .. } if object.key() == key(kind, ns, name))
}

fn is_delete_of(e: &ClusterEvent, kind: Kind, ns: &str, name: &str) -> bool {
    matches!(e, ClusterEvent::Delete { key: k } if *k == key(kind, ns, name))
}

const ALL: [Kind; 4] = [
    Kind::Namespace,
    Kind::Service,
    Kind::EndpointSlice,
    Kind::Pod,
];
/// Everything but pods.
const THREE: [Kind; 3] = [Kind::Namespace, Kind::Service, Kind::EndpointSlice];
const FAST: Duration = Duration::from_millis(500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_initial_sync_emits_one_relist_per_kind() {
    let (api, _url) = ApiServer::start().await;
    api.create(namespace("prod").label("team", "dns"));
    api.create(namespace("default"));
    api.create(
        svc("prod", "web")
            .cluster_ip("10.0.0.10")
            .cluster_ip("fd00::10")
            .port("http", 80, "TCP")
            .label("app", "web"),
    );
    api.create(svc("prod", "db").headless().port("pg", 5432, "TCP"));
    api.create(svc("prod", "ext").external_name("Example.COM."));
    api.create(
        slice("prod", "db-abc12", "db")
            .port("pg", 5432, "TCP")
            .endpoint(ep(&["10.1.0.5"]).hostname("db-0").pod("db-0"))
            .endpoint(ep(&["10.1.0.6"]).ready(false).pod("db-1")),
    );
    api.create(slice("prod", "web-xyz", "web")); // "endpoints": null
    api.create(pod("prod", "db-0").ip("10.1.0.5"));
    api.create(pod("prod", "job-done").ip("10.1.0.9").phase("Succeeded"));

    let mut src = Source::start(&api, opts_all()).await;
    let mut lists: BTreeMap<Kind, Vec<Object>> = BTreeMap::new();
    while lists.len() < 4 {
        if let ClusterEvent::Relist { kind, objects } = src
            .expect("Relist", Duration::from_secs(5), |e| {
                matches!(e, ClusterEvent::Relist { .. })
            })
            .await
        {
            assert!(
                lists.insert(kind, objects).is_none(),
                "two Relists of {kind:?}"
            );
        }
    }
    assert_eq!(names(&lists[&Kind::Namespace]), set(&["/default", "/prod"]));
    let Some(Object::Namespace(prod)) = lists[&Kind::Namespace]
        .iter()
        .find(|o| &*o.key().name == "prod")
    else {
        panic!()
    };
    assert_eq!(prod.labels.get("team").map(String::as_str), Some("dns"));

    let svcs = &lists[&Kind::Service];
    assert_eq!(names(svcs), set(&["prod/db", "prod/ext", "prod/web"]));
    let web = service(svcs, "prod", "web");
    assert_eq!(
        web.kind,
        ServiceKind::ClusterIp(vec![ip("10.0.0.10"), ip("fd00::10")])
    );
    assert_eq!((&*web.ports[0].name, web.ports[0].port), ("http", 80));
    assert_eq!(web.labels.get("app").map(String::as_str), Some("web"));
    assert_eq!(service(svcs, "prod", "db").kind, ServiceKind::Headless);
    assert_eq!(
        service(svcs, "prod", "ext").kind,
        ServiceKind::ExternalName("example.com".into())
    );

    let slices = &lists[&Kind::EndpointSlice];
    assert_eq!(names(slices), set(&["prod/db-abc12", "prod/web-xyz"]));
    let Some(Object::Slice(db)) = slices.iter().find(|o| &*o.key().name == "db-abc12") else {
        panic!()
    };
    assert_eq!(db.service.as_deref(), Some("db"));
    assert_eq!(db.endpoints.len(), 2);
    assert_eq!(db.endpoints[0].hostname.as_deref(), Some("db-0"));
    assert_eq!(db.endpoints[0].pod_name.as_deref(), Some("db-0"));
    assert!(db.endpoints[0].ready && !db.endpoints[1].ready);

    // Finished pods are not listed (field selector on status.phase, as CoreDNS does).
    assert_eq!(names(&lists[&Kind::Pod]), set(&["prod/db-0"]));

    // Nothing else happens on a healthy connection (bookmarks are not events).
    let extra = src.quiet(Duration::from_millis(1200)).await;
    assert!(extra.is_empty(), "unexpected events: {extra:#?}");

    // What kube-rs asked for.
    let reqs = api.requests();
    let ns_list = reqs
        .iter()
        .find(|r| r.path == "/api/v1/namespaces" && !r.is_watch())
        .expect("namespace list");
    assert!(
        ns_list
            .accept
            .as_deref()
            .unwrap_or("")
            .contains("as=PartialObjectMetadataList"),
        "{ns_list:?}"
    );
    assert_eq!(ns_list.param("limit"), Some("500"));
    let ns_watch = reqs
        .iter()
        .find(|r| r.path == "/api/v1/namespaces" && r.is_watch())
        .expect("namespace watch");
    assert!(
        ns_watch
            .accept
            .as_deref()
            .unwrap_or("")
            .contains("as=PartialObjectMetadata;"),
        "{ns_watch:?}"
    );
    let svc_watch = reqs
        .iter()
        .find(|r| r.path == "/api/v1/services" && r.is_watch())
        .expect("service watch");
    assert_eq!(svc_watch.param("allowWatchBookmarks"), Some("true"));
    assert!(
        svc_watch
            .param("resourceVersion")
            .is_some_and(|rv| rv != "0" && !rv.is_empty())
    );
    assert!(
        reqs.iter()
            .any(|r| r.path == "/apis/discovery.k8s.io/v1/endpointslices" && r.is_watch())
    );
    let pod_list = reqs
        .iter()
        .find(|r| r.path == "/api/v1/pods" && !r.is_watch())
        .expect("pod list");
    assert_eq!(
        pod_list.param("fieldSelector"),
        Some("status.phase!=Succeeded,status.phase!=Failed,status.phase!=Unknown")
    );
    assert!(
        reqs.iter()
            .all(|r| r.authorization.as_deref() == Some("Bearer test-token")),
        "token from the kubeconfig"
    );
    src.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_watch_events_apply_and_delete_every_kind() {
    let (api, _url) = ApiServer::start().await;
    let mut src = Source::watching(&api, &ALL).await;

    // Namespace: metadata only, labels follow.
    let t = Instant::now();
    api.create(namespace("team-a"));
    src.applied(Kind::Namespace, "", "team-a").await;
    let latency = t.elapsed();
    api.update(namespace("team-a").label("env", "prod"));
    let ev = src.applied(Kind::Namespace, "", "team-a").await;
    let ClusterEvent::Apply {
        object: Object::Namespace(ns),
        ..
    } = ev
    else {
        panic!()
    };
    assert_eq!(ns.labels.get("env").map(String::as_str), Some("prod"));

    // Service: creation carries creationTimestamp, an update does not.
    let before = SystemTime::now() - Duration::from_secs(2);
    api.create(
        svc("team-a", "web")
            .cluster_ip("10.0.0.20")
            .port("http", 80, "TCP"),
    );
    let ev = src.applied(Kind::Service, "team-a", "web").await;
    let ClusterEvent::Apply { changed_at, .. } = ev else {
        panic!()
    };
    let created = changed_at.expect("a new service carries its creationTimestamp");
    assert!(
        created >= before && created <= SystemTime::now(),
        "{created:?}"
    );
    api.update(
        svc("team-a", "web")
            .cluster_ip("10.0.0.20")
            .port("http", 80, "TCP")
            .port("dns", 53, "UDP"),
    );
    let ev = src.applied(Kind::Service, "team-a", "web").await;
    let ClusterEvent::Apply {
        object: Object::Service(s),
        changed_at,
    } = ev
    else {
        panic!()
    };
    assert_eq!(s.ports.len(), 2);
    assert_eq!(changed_at, None, "an update is not a creation");

    // EndpointSlice: changed_at from last-change-trigger-time.
    api.create(
        slice("team-a", "web-1", "web")
            .port("http", 80, "TCP")
            .endpoint(ep(&["10.1.0.20"]))
            .trigger_time("2024-05-06T07:08:09.250Z"),
    );
    let ev = src.applied(Kind::EndpointSlice, "team-a", "web-1").await;
    let ClusterEvent::Apply {
        object: Object::Slice(sl),
        changed_at,
    } = ev
    else {
        panic!()
    };
    assert_eq!(sl.endpoints[0].addresses, vec![ip("10.1.0.20")]);
    let want = k8s_openapi::jiff::Timestamp::from_millisecond(1_714_979_289_250).unwrap();
    assert_eq!(changed_at, Some(SystemTime::from(want)));
    api.update(
        slice("team-a", "web-1", "web")
            .port("http", 80, "TCP")
            .endpoint(ep(&["10.1.0.20"]))
            .endpoint(ep(&["10.1.0.21"])),
    );
    let ev = src.applied(Kind::EndpointSlice, "team-a", "web-1").await;
    let ClusterEvent::Apply {
        object: Object::Slice(sl),
        changed_at,
    } = ev
    else {
        panic!()
    };
    assert_eq!(sl.endpoints.len(), 2);
    assert_eq!(changed_at, None);

    // Pod: IPs; leaving the Running phases removes it (the API server sends DELETED through
    // the field selector).
    api.create(pod("team-a", "web-0").ip("10.1.0.20"));
    let ev = src.applied(Kind::Pod, "team-a", "web-0").await;
    let ClusterEvent::Apply {
        object: Object::Pod(p),
        ..
    } = ev
    else {
        panic!()
    };
    assert_eq!(p.ips, vec![ip("10.1.0.20")]);
    api.update(pod("team-a", "web-0").ip("10.1.0.20").phase("Succeeded"));
    src.deleted(Kind::Pod, "team-a", "web-0").await;

    // Deletions.
    api.delete(slice("team-a", "web-1", "web"));
    src.deleted(Kind::EndpointSlice, "team-a", "web-1").await;
    api.delete(svc("team-a", "web"));
    src.deleted(Kind::Service, "team-a", "web").await;
    api.delete_named("Namespace", "", "team-a");
    src.deleted(Kind::Namespace, "", "team-a").await;

    assert!(src.model.is_empty(), "{:#?}", src.model);
    assert!(
        !src.seen
            .iter()
            .any(|e| matches!(e, ClusterEvent::WatchRestart { .. })),
        "{:#?}",
        src.seen
    );
    assert!(
        latency < Duration::from_millis(1000),
        "a change took {latency:?} to arrive"
    );
    src.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_expired_history_relists_and_drops_gap_deletions() {
    let (api, _url) = ApiServer::start().await;
    api.create(svc("prod", "a").cluster_ip("10.0.0.1"));
    api.create(svc("prod", "b").cluster_ip("10.0.0.2"));
    api.create(slice("prod", "a-1", "a").endpoint(ep(&["10.1.0.1"])));
    let mut src = Source::watching(&api, &THREE).await;
    let restarts_before = src.count(|e| matches!(e, ClusterEvent::WatchRestart { .. }));

    // The source stops hearing anything; meanwhile things change and the history is compacted.
    api.partition_watches();
    api.delete(svc("prod", "a"));
    api.delete(slice("prod", "a-1", "a"));
    api.create(svc("prod", "c").cluster_ip("10.0.0.3"));
    api.update(svc("prod", "b").cluster_ip("10.0.0.22"));
    let leaked = src.quiet(Duration::from_millis(300)).await;
    assert!(
        leaked.is_empty(),
        "the partition leaked events: {leaked:#?}"
    );
    api.expire_history();
    let t = Instant::now();
    api.drop_all_watches();

    // kube-rs resumes from its old resourceVersion, gets 410 Gone, and relists.
    let lists = src
        .expect_relists(
            &[Kind::Service, Kind::EndpointSlice],
            Duration::from_secs(3),
        )
        .await;
    let relist_after = t.elapsed();
    let svcs = &lists[&Kind::Service];
    assert_eq!(
        names(svcs),
        set(&["prod/b", "prod/c"]),
        "the relist drops the service deleted during the gap"
    );
    assert_eq!(
        service(svcs, "prod", "b").kind,
        ServiceKind::ClusterIp(vec![ip("10.0.0.22")])
    );
    let slices = &lists[&Kind::EndpointSlice];
    assert!(slices.is_empty(), "{slices:#?}");
    assert!(
        relist_after < Duration::from_millis(750),
        "relist took {relist_after:?}: the first retry after 410 should be immediate"
    );
    for kind in [Kind::Service, Kind::EndpointSlice] {
        assert!(
            src.seen
                .iter()
                .filter(|e| matches!(e, ClusterEvent::WatchRestart { .. }))
                .skip(restarts_before)
                .any(|e| matches!(e, ClusterEvent::WatchRestart { kind: k } if *k == kind)),
            "the 410 is reported as WatchRestart of {kind:?}: {:#?}",
            src.seen
        );
    }

    // The new watch works.
    api.create(svc("prod", "d").cluster_ip("10.0.0.4"));
    src.applied(Kind::Service, "prod", "d").await;
    assert_eq!(
        src.names(Kind::Service),
        set(&["prod/b", "prod/c", "prod/d"])
    );
    src.stop().await;
}

/// kube-rs 5 retries a watch refused with an HTTP 410 from the same resourceVersion forever;
/// the source starts a new watcher (a relist) instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_expired_watch_refused_with_http_410_relists() {
    let (api, _url) = ApiServer::start().await;
    api.set_expired_watch_as_http_410(true);
    api.create(svc("prod", "a").cluster_ip("10.0.0.1"));
    let mut src = Source::watching(&api, &[Kind::Namespace, Kind::Service]).await;

    api.partition_watches();
    api.delete(svc("prod", "a"));
    api.create(svc("prod", "b").cluster_ip("10.0.0.2"));
    api.expire_history();
    api.drop_all_watches();
    let svcs = src
        .expect_relist(Kind::Service, Duration::from_secs(3))
        .await;
    assert_eq!(names(&svcs), set(&["prod/b"]));
    api.create(svc("prod", "c").cluster_ip("10.0.0.3"));
    src.applied(Kind::Service, "prod", "c").await;
    src.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_dropped_watch_resumes_without_relist() {
    let (api, _url) = ApiServer::start().await;
    api.create(svc("prod", "a").cluster_ip("10.0.0.1"));
    let mut src = Source::watching(&api, &THREE).await;

    for i in 0..3 {
        api.wait_watching(&[Res::Services], Duration::from_secs(2))
            .await;
        api.drop_all_watches();
        let name = format!("n{i}");
        api.create(svc("prod", &name).cluster_ip(&format!("10.0.1.{i}")));
        src.expect("Apply after a dropped watch", Duration::from_secs(2), |e| {
            is_apply_of(e, Kind::Service, "prod", &name)
        })
        .await;
    }
    api.delete(svc("prod", "a"));
    src.deleted(Kind::Service, "prod", "a").await;
    let extra = src.quiet(Duration::from_millis(300)).await;
    assert!(extra.is_empty(), "{extra:#?}");
    let relists = src.count(|e| matches!(e, ClusterEvent::Relist { .. }));
    assert_eq!(
        relists, 3,
        "a dropped watch resumes from its resourceVersion, no relist: {:#?}",
        src.seen
    );
    assert_eq!(
        src.names(Kind::Service),
        set(&["prod/n0", "prod/n1", "prod/n2"])
    );
    src.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_watch_timeouts_resume_cleanly() {
    let (api, _url) = ApiServer::start().await;
    api.set_max_watch_duration(Some(Duration::from_millis(200)));
    api.create(svc("prod", "a").cluster_ip("10.0.0.1"));
    let mut src = Source::watching(&api, &[Kind::Namespace, Kind::Service]).await;
    let extra = src.quiet(Duration::from_millis(900)).await;
    assert!(
        extra.is_empty(),
        "a watch that ends at its timeout resumes silently: {extra:#?}"
    );
    api.create(svc("prod", "b").cluster_ip("10.0.0.2"));
    src.applied(Kind::Service, "prod", "b").await;
    let watches: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.path == "/api/v1/services" && r.is_watch())
        .collect();
    assert!(watches.len() >= 3, "{watches:#?}");
    assert!(watches.iter().all(|w| {
        w.param("resourceVersion")
            .is_some_and(|rv| rv.parse::<u64>().is_ok())
    }));
    // (A list of one item after each complete list is the source asking for the list's
    // revision, for the zone's serial.)
    let lists = api
        .requests()
        .into_iter()
        .filter(|r| r.path == "/api/v1/services" && !r.is_watch() && r.param("limit") != Some("1"))
        .count();
    assert_eq!(lists, 1);
    src.stop().await;
}

/// The API server goes away: nothing but WatchRestart is emitted (the last snapshot keeps
/// serving); changes made meanwhile arrive once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_api_outage_keeps_state_and_converges() {
    let (api, _url) = ApiServer::start().await;
    api.create(svc("prod", "a").cluster_ip("10.0.0.1"));
    api.create(svc("prod", "b").cluster_ip("10.0.0.2"));
    api.create(slice("prod", "a-1", "a").endpoint(ep(&["10.1.0.1"])));
    let mut src = Source::watching(&api, &THREE).await;

    api.stop().await;
    api.delete(svc("prod", "a"));
    api.create(svc("prod", "c").cluster_ip("10.0.0.3"));
    api.update(svc("prod", "b").cluster_ip("10.0.0.22"));
    let during = src.quiet(Duration::from_millis(1000)).await;
    assert!(
        during
            .iter()
            .all(|e| matches!(e, ClusterEvent::WatchRestart { .. })),
        "only WatchRestart while the API is away: {during:#?}"
    );
    assert!(!during.is_empty(), "the outage is reported as WatchRestart");
    assert_eq!(src.names(Kind::Service), set(&["prod/a", "prod/b"]));

    api.restart().await;
    let t = Instant::now();
    src.converge("the changes made during the outage", Duration::from_secs(7), |m| {
        let svcs: BTreeSet<&str> = m.keys().filter(|k| k.kind == Kind::Service).map(|k| &*k.name).collect();
        let b_updated = matches!(m.get(&key(Kind::Service, "prod", "b")), Some(Object::Service(s)) if s.kind == ServiceKind::ClusterIp(vec![ip("10.0.0.22")]));
        svcs == BTreeSet::from(["b", "c"]) && b_updated
    })
    .await;
    eprintln!("converged {:?} after the restart", t.elapsed());
    assert!(
        src.model
            .contains_key(&key(Kind::EndpointSlice, "prod", "a-1"))
    );

    api.create(svc("prod", "d").cluster_ip("10.0.0.4"));
    src.applied(Kind::Service, "prod", "d").await;
    src.stop().await;
}

/// An outage long enough for the history to be compacted: the source relists when the API is
/// back, and deletions made meanwhile disappear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_api_outage_with_compaction_relists() {
    let (api, _url) = ApiServer::start().await;
    api.create(svc("prod", "a").cluster_ip("10.0.0.1"));
    api.create(slice("prod", "a-1", "a").endpoint(ep(&["10.1.0.1"])));
    let mut src = Source::watching(&api, &THREE).await;
    let relists_before = src.count(|e| matches!(e, ClusterEvent::Relist { .. }));

    api.stop().await;
    api.delete(svc("prod", "a"));
    api.delete(slice("prod", "a-1", "a"));
    api.create(svc("prod", "z").cluster_ip("10.0.0.26"));
    api.expire_history();
    src.expect("WatchRestart for the outage", Duration::from_secs(5), |e| {
        matches!(e, ClusterEvent::WatchRestart { .. })
    })
    .await;
    api.restart().await;

    src.converge("the relisted cluster", Duration::from_secs(7), |m| {
        let svcs: BTreeSet<&str> = m
            .keys()
            .filter(|k| k.kind == Kind::Service)
            .map(|k| &*k.name)
            .collect();
        svcs == BTreeSet::from(["z"]) && !m.keys().any(|k| k.kind == Kind::EndpointSlice)
    })
    .await;
    let relists = src.count(|e| matches!(e, ClusterEvent::Relist { .. }));
    assert!(
        relists > relists_before,
        "deletions during a compacted gap come from a relist"
    );
    assert!(
        !src.seen
            .iter()
            .any(|e| matches!(e, ClusterEvent::Delete { .. })),
        "no watch event could have told about the deletions: {:#?}",
        src.seen
    );
    src.stop().await;
}

#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuf {
    type Writer = LogBuf;
    fn make_writer(&'a self) -> LogBuf {
        self.clone()
    }
}

impl LogBuf {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Bad objects are skipped with a warning naming them; everything else keeps flowing. (A
/// current-thread runtime, so the thread-local log capture sees the source's tasks.)
#[tokio::test]
async fn kube_bad_objects_are_skipped_and_logged() {
    let logs = LogBuf::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let (api, _url) = ApiServer::start().await;
    api.create(svc("prod", "good").cluster_ip("10.0.0.1"));
    api.create(svc("prod", "bad-ip").cluster_ip("not-an-ip"));
    api.create(
        svc("prod", "bad-proto")
            .cluster_ip("10.0.0.2")
            .port("x", 80, "QUIC"),
    );
    api.create(slice("prod", "bad-ep", "good").endpoint(ep(&["10.1.0.300"])));
    api.create(slice("prod", "good-ep", "good").endpoint(ep(&["10.1.0.3"])));
    api.create(pod("prod", "bad-pod").ip("10.1.0.1.1"));
    // Does not even decode (kube-rs's list would fail whole, and forever, on it).
    api.create(pod("prod", "odd-pod").set("/status/podIPs", "not-a-list"));
    api.create(pod("prod", "good-pod").ip("10.1.0.4"));

    let mut src = Source::watching(&api, &ALL).await;
    assert_eq!(src.names(Kind::Service), set(&["prod/good"]));
    assert_eq!(src.names(Kind::EndpointSlice), set(&["prod/good-ep"]));
    assert_eq!(src.names(Kind::Pod), set(&["prod/good-pod"]));
    let text = logs.text();
    for needle in [
        "Service prod/bad-ip",
        "not-an-ip",
        "Service prod/bad-proto",
        "QUIC",
        "EndpointSlice prod/bad-ep",
        "Pod prod/bad-pod",
        "Pod prod/odd-pod",
    ] {
        assert!(text.contains(needle), "no {needle:?} in the log:\n{text}");
    }

    // On the watch: a bad new object is skipped, the next good one arrives; so does one after
    // an event that does not decode.
    api.create(pod("prod", "odd-2").set("/status/podIPs", "not-a-list"));
    api.create(pod("prod", "good-2").ip("10.1.0.5"));
    src.expect("the good pod after one that does not decode", FAST, |e| {
        is_apply_of(e, Kind::Pod, "prod", "good-2")
    })
    .await;
    api.create(svc("prod", "bad-2").external_name("bad..name"));
    api.create(svc("prod", "good-2").cluster_ip("10.0.0.5"));
    src.applied(Kind::Service, "prod", "good-2").await;
    assert!(
        !src.seen
            .iter()
            .any(|e| is_apply_of(e, Kind::Service, "prod", "bad-2"))
    );
    assert!(
        logs.text().contains("Service prod/bad-2"),
        "{}",
        logs.text()
    );

    // A good object turned bad is removed (as a relist would), and comes back when fixed.
    api.update(svc("prod", "good").cluster_ip("10.0.0.999"));
    src.deleted(Kind::Service, "prod", "good").await;
    api.update(svc("prod", "good").cluster_ip("10.0.0.9"));
    src.applied(Kind::Service, "prod", "good").await;
    assert_eq!(src.names(Kind::Service), set(&["prod/good", "prod/good-2"]));
    src.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_service_label_selector_is_honored() {
    let (api, _url) = ApiServer::start().await;
    api.create(
        svc("prod", "in")
            .cluster_ip("10.0.0.1")
            .label("expose", "yes"),
    );
    api.create(svc("prod", "out").cluster_ip("10.0.0.2"));
    api.create(
        svc("prod", "other")
            .cluster_ip("10.0.0.3")
            .label("expose", "no"),
    );
    let opts = KubeSourceOptions {
        service_label_selector: Some("expose in (yes, true)".into()),
        watch_pods: false,
        ..opts_all()
    };
    let mut src = Source::start(&api, opts).await;
    src.synced(&[Kind::Namespace, Kind::Service, Kind::EndpointSlice])
        .await;
    assert_eq!(src.names(Kind::Service), set(&["prod/in"]));

    let reqs = api.requests();
    for r in reqs.iter().filter(|r| r.path == "/api/v1/services") {
        assert_eq!(
            r.param("labelSelector"),
            Some("expose in (yes, true)"),
            "{r:?}"
        );
    }
    assert!(
        reqs.iter()
            .filter(|r| r.path != "/api/v1/services")
            .all(|r| r.param("labelSelector").is_none())
    );

    api.create(svc("prod", "out-2").cluster_ip("10.0.0.4"));
    api.create(
        svc("prod", "in-2")
            .cluster_ip("10.0.0.5")
            .label("expose", "true"),
    );
    src.applied(Kind::Service, "prod", "in-2").await;
    // Leaving the selector is a deletion, entering it an addition.
    api.update(
        svc("prod", "in")
            .cluster_ip("10.0.0.1")
            .label("expose", "no"),
    );
    src.deleted(Kind::Service, "prod", "in").await;
    api.update(
        svc("prod", "out")
            .cluster_ip("10.0.0.2")
            .label("expose", "yes"),
    );
    src.applied(Kind::Service, "prod", "out").await;
    src.quiet(Duration::from_millis(200)).await;
    assert_eq!(src.names(Kind::Service), set(&["prod/in-2", "prod/out"]));
    assert!(
        !src.seen
            .iter()
            .any(|e| is_apply_of(e, Kind::Service, "prod", "out-2"))
    );
    src.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_paginated_list_is_complete() {
    let (api, _url) = ApiServer::start().await;
    for i in 0..1203 {
        api.create(
            svc(&format!("ns{}", i % 7), &format!("svc-{i:04}")).cluster_ip(&format!(
                "10.0.{}.{}",
                i / 250,
                i % 250
            )),
        );
    }
    let mut src = Source::start(
        &api,
        KubeSourceOptions {
            watch_pods: false,
            watch_endpoints: false,
            ..opts_all()
        },
    )
    .await;
    let svcs = src
        .expect_relist(Kind::Service, Duration::from_secs(8))
        .await;
    assert_eq!(svcs.len(), 1203);
    let lists: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.path == "/api/v1/services" && !r.is_watch() && r.param("limit") != Some("1"))
        .collect();
    assert_eq!(lists.len(), 3, "{lists:#?}");
    assert_eq!(
        lists
            .iter()
            .filter(|r| r.param("continue").is_some())
            .count(),
        2
    );
    src.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_missing_kubeconfig_is_an_error() {
    let (tx, _rx) = mpsc::channel(8);
    let (_stop, stop_rx) = watch::channel(false);
    let opts = KubeSourceOptions {
        kubeconfig: Some("/nonexistent/kubeconfig".into()),
        ..opts_all()
    };
    let err = run(opts, tx, stop_rx, Default::default())
        .await
        .expect_err("no kubeconfig");
    assert!(
        matches!(err, SourceError::Kube(ref m) if m.contains("/nonexistent/kubeconfig")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_run_returns_when_the_channel_closes() {
    let (api, _url) = ApiServer::start().await;
    let src = Source::watching(&api, &ALL).await;
    let Source {
        rx,
        task,
        shutdown: _keep,
        ..
    } = src;
    drop(rx);
    let r = tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("run did not return after the channel closed");
    r.expect("run panicked").expect("run returned an error");
}

/// The test API server itself, through kube-rs with the full k8s-openapi types: pagination from
/// a consistent snapshot, exact resourceVersion lists, 410 for compacted history, metadata lists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_apiserver_speaks_the_list_watch_protocol() {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::{Namespace, Service};
    use kube::api::{Api, ListParams, VersionMatch, WatchEvent, WatchParams};
    use kube::core::PartialObjectMeta;

    let (api, _url) = ApiServer::start().await;
    let client = kube_client(&api).await;
    let svcs: Api<Service> = Api::all(client.clone());

    for n in ["a", "b", "c", "d", "e"] {
        api.create(svc("prod", n).cluster_ip("10.0.0.1"));
    }
    let rv_after_create = api.resource_version();

    // Pages come from one snapshot: a change between pages is not in the list.
    let page1 = svcs.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(page1.items.len(), 2);
    let token = page1.metadata.continue_.clone().expect("continue token");
    assert_eq!(page1.metadata.remaining_item_count, Some(3));
    api.delete(svc("prod", "e"));
    api.create(svc("prod", "f").cluster_ip("10.0.0.1"));
    let page2 = svcs
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    let page3 = svcs
        .list(
            &ListParams::default()
                .limit(2)
                .continue_token(page2.metadata.continue_.as_deref().unwrap()),
        )
        .await
        .unwrap();
    let all: Vec<String> = page1
        .items
        .iter()
        .chain(&page2.items)
        .chain(&page3.items)
        .map(|s| s.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(all, ["a", "b", "c", "d", "e"]);
    assert!(page3.metadata.continue_.is_none());
    assert_eq!(
        page3.metadata.resource_version,
        Some(rv_after_create.to_string())
    );

    // Exact resourceVersion: the state then; a plain list: the state now.
    let exact = ListParams::default()
        .at(&rv_after_create.to_string())
        .matching(VersionMatch::Exact);
    assert_eq!(svcs.list(&exact).await.unwrap().items.len(), 5);
    let now: Vec<String> = svcs
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|s| s.metadata.name.unwrap())
        .collect();
    assert_eq!(now, ["a", "b", "c", "d", "f"]);

    // A watch from an old resourceVersion replays history.
    let mut w = svcs
        .watch(&WatchParams::default(), &rv_after_create.to_string())
        .await
        .unwrap()
        .boxed();
    match w.next().await {
        Some(Ok(WatchEvent::Deleted(s))) => assert_eq!(s.metadata.name.as_deref(), Some("e")),
        other => panic!("{other:?}"),
    }
    match w.next().await {
        Some(Ok(WatchEvent::Added(s))) => assert_eq!(s.metadata.name.as_deref(), Some("f")),
        other => panic!("{other:?}"),
    }
    api.bookmark_now();
    match w.next().await {
        Some(Ok(WatchEvent::Bookmark(b))) => {
            assert_eq!(
                b.metadata.resource_version,
                api.resource_version().to_string()
            )
        }
        other => panic!("{other:?}"),
    }

    // Compaction: old watches and continue tokens get 410 Expired.
    api.expire_history();
    let mut w = svcs
        .watch(&WatchParams::default(), &rv_after_create.to_string())
        .await
        .unwrap()
        .boxed();
    match w.next().await {
        Some(Ok(WatchEvent::Error(status))) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"))
        }
        other => panic!("{other:?}"),
    }
    assert!(w.next().await.is_none(), "the stream ends after the error");
    match svcs
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
    {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 410),
        other => panic!("{other:?}"),
    }

    // Metadata-only lists and label selectors.
    api.create(namespace("prod").label("team", "dns"));
    api.create(namespace("dev"));
    let nss: Api<PartialObjectMeta<Namespace>> = Api::all(client.clone());
    let list = nss
        .list(&ListParams::default().labels("team=dns"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].metadata.name.as_deref(), Some("prod"));
    assert_eq!(list.types.kind, "PartialObjectMetadataList");

    // Single objects.
    let one = Api::<Service>::namespaced(client.clone(), "prod")
        .get("a")
        .await
        .unwrap();
    assert_eq!(one.spec.unwrap().cluster_ip.as_deref(), Some("10.0.0.1"));
    assert!(
        Api::<Service>::namespaced(client, "prod")
            .get_opt("zzz")
            .await
            .unwrap()
            .is_none()
    );
}

/// The server also runs without the caller's runtime (for tests of the `clusterdns` binary).
#[test]
fn kube_apiserver_runs_on_its_own_runtime() {
    let (api, url) = ApiServer::start_blocking();
    api.create(svc("prod", "a").cluster_ip("10.0.0.1"));
    let get = |path: &str| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(api.addr()).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let body = get("/api/v1/namespaces/prod/services/a");
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(body.contains("\"clusterIP\":\"10.0.0.1\""), "{body}");
    api.stop_blocking();
    assert!(
        std::net::TcpStream::connect(api.addr()).is_err(),
        "{url} still answers after stop"
    );
    api.restart_blocking();
    assert!(get("/api/v1/services").contains("\"kind\":\"ServiceList\""));
}

/// Streaming lists (`sendInitialEvents=true`), which kube-rs uses with `streaming_lists()`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_apiserver_serves_streaming_lists() {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::Service;
    use kube::runtime::watcher::{self, Event};

    let (api, _url) = ApiServer::start().await;
    api.create(svc("prod", "a").cluster_ip("10.0.0.1"));
    api.create(svc("prod", "b").cluster_ip("10.0.0.2"));
    let client = kube_client(&api).await;
    let stream = watcher::watcher(
        kube::Api::<Service>::all(client),
        watcher::Config::default().streaming_lists(),
    );
    let mut stream = std::pin::pin!(stream);
    let mut listed = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(2), stream.next())
            .await
            .expect("watcher stalled")
        {
            Some(Ok(Event::Init)) => {}
            Some(Ok(Event::InitApply(s))) => listed.push(s.metadata.name.unwrap()),
            Some(Ok(Event::InitDone)) => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(listed, ["a", "b"]);
    api.create(svc("prod", "c").cluster_ip("10.0.0.3"));
    match tokio::time::timeout(Duration::from_secs(2), stream.next())
        .await
        .unwrap()
    {
        Some(Ok(Event::Apply(s))) => assert_eq!(s.metadata.name.as_deref(), Some("c")),
        other => panic!("{other:?}"),
    }
    let w = api.requests().into_iter().find(|r| r.is_watch()).unwrap();
    assert_eq!(w.param("sendInitialEvents"), Some("true"));
    assert!(
        !api.requests().iter().any(|r| !r.is_watch()),
        "no list request with streaming lists"
    );
}
