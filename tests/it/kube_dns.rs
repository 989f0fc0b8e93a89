//! The live cluster end to end: the real binary watching the test API server through an
//! ordinary kubeconfig, and DNS answers following every change.

use std::time::{Duration, Instant};

use crate::apiserver::*;
use crate::support::*;

fn short(s: &Server, name: &str) -> String {
    let mut v: Vec<String> = s
        .dig(&["+short", name])
        .lines()
        .map(str::to_string)
        .collect();
    v.sort();
    v.join(",")
}

/// Wait until `short(name)` is `want`; returns how long it took.
fn converge(s: &Server, name: &str, want: &str) -> Duration {
    let t0 = Instant::now();
    let done = wait_for(Duration::from_secs(10), || short(s, name) == want);
    assert!(done, "{name}: still {:?}, want {want:?}", short(s, name));
    t0.elapsed()
}

/// Wait until `dig name` answers with `status`.
fn await_status(s: &Server, name: &str, status: &str) {
    let done = wait_for(Duration::from_secs(10), || s.status(&[name]) == status);
    assert!(done, "{name}: {}, want {status}", s.status(&[name]));
}

#[test]
fn kube_changes_reach_dns() {
    let (api, _) = ApiServer::start_blocking();
    api.create(namespace("demo"));
    api.create(
        svc("demo", "web")
            .cluster_ip("10.0.0.1")
            .port("http", 80, "TCP"),
    );
    let s = Server::start_kube(&api, "");
    converge(&s, "web.demo.svc.cluster.local", "10.0.0.1");
    // update
    api.update(
        svc("demo", "web")
            .cluster_ip("10.0.0.2")
            .port("http", 80, "TCP"),
    );
    let took = converge(&s, "web.demo.svc.cluster.local", "10.0.0.2");
    eprintln!("service update visible in DNS after {took:?}");
    // a headless service: ready endpoints only; one turning ready appears
    api.create(svc("demo", "db").headless().port("pg", 5432, "TCP"));
    api.create(
        slice("demo", "db-abc", "db")
            .port("pg", 5432, "TCP")
            .endpoint(ep(&["10.1.0.1"]).hostname("db-0"))
            .endpoint(ep(&["10.1.0.2"]).hostname("db-1").ready(false)),
    );
    converge(&s, "db.demo.svc.cluster.local", "10.1.0.1");
    assert_eq!(s.status(&["db-1.db.demo.svc.cluster.local"]), "NXDOMAIN");
    api.update(
        slice("demo", "db-abc", "db")
            .port("pg", 5432, "TCP")
            .endpoint(ep(&["10.1.0.1"]).hostname("db-0"))
            .endpoint(ep(&["10.1.0.2"]).hostname("db-1").ready(true)),
    );
    converge(&s, "db.demo.svc.cluster.local", "10.1.0.1,10.1.0.2");
    converge(&s, "db-1.db.demo.svc.cluster.local", "10.1.0.2");
    let srv = s.dig(&["+short", "_pg._tcp.db.demo.svc.cluster.local", "SRV"]);
    assert!(
        srv.contains("db-0.db.demo.svc.cluster.local.")
            && srv.contains("db-1.db.demo.svc.cluster.local."),
        "{srv}"
    );
    // an endpoint going not-ready disappears
    api.update(
        slice("demo", "db-abc", "db")
            .port("pg", 5432, "TCP")
            .endpoint(ep(&["10.1.0.1"]).hostname("db-0").ready(false))
            .endpoint(ep(&["10.1.0.2"]).hostname("db-1")),
    );
    converge(&s, "db.demo.svc.cluster.local", "10.1.0.2");
    // ExternalName
    api.create(svc("demo", "ext").external_name("example.org"));
    assert_eq!(
        s.wait_for(
            &["+short", "ext.demo.svc.cluster.local", "CNAME"],
            |o| !o.trim().is_empty(),
            Duration::from_secs(5)
        )
        .trim(),
        "example.org."
    );
    // delete
    api.delete_named("Service", "demo", "web");
    converge(&s, "web.demo.svc.cluster.local", "");
    assert_eq!(s.status(&["web.demo.svc.cluster.local"]), "NXDOMAIN");
    // a new namespace exists as a name once it exists
    assert_eq!(s.status(&["fresh.svc.cluster.local"]), "NXDOMAIN");
    api.create(namespace("fresh"));
    await_status(&s, "fresh.svc.cluster.local", "NOERROR");
}

#[test]
fn kube_outage_keeps_serving_then_converges() {
    let (api, _) = ApiServer::start_blocking();
    api.create(namespace("demo"));
    api.create(svc("demo", "a").cluster_ip("10.0.0.1"));
    api.create(svc("demo", "b").cluster_ip("10.0.0.2"));
    let s = Server::start_kube(&api, "");
    converge(&s, "a.demo.svc.cluster.local", "10.0.0.1");
    api.stop_blocking();
    // the API is away: the last snapshot keeps answering, nothing flaps, until (and after) the
    // server has noticed (a watch restart counted)
    let metrics = s.listen("metrics").unwrap();
    let noticed = || {
        get(metrics, "/metrics", &[]).is_ok_and(|r| {
            r.text()
                .lines()
                .any(|l| l.starts_with("clusterdns_watch_restarts_total{") && !l.ends_with(" 0"))
        })
    };
    let answering = || {
        short(&s, "a.demo.svc.cluster.local") == "10.0.0.1"
            && short(&s, "b.demo.svc.cluster.local") == "10.0.0.2"
    };
    let mut flapped = false;
    let seen = wait_for(Duration::from_secs(10), || {
        flapped |= !answering();
        noticed()
    });
    assert!(seen, "no watch restart counted after the API went away");
    assert!(
        !flapped && answering(),
        "answers changed while the API was away"
    );
    // the cluster changes while we cannot see it
    api.update(svc("demo", "a").cluster_ip("10.0.0.11"));
    api.delete_named("Service", "demo", "b");
    api.create(svc("demo", "c").cluster_ip("10.0.0.3"));
    assert_eq!(short(&s, "a.demo.svc.cluster.local"), "10.0.0.1");
    api.restart_blocking();
    converge(&s, "a.demo.svc.cluster.local", "10.0.0.11");
    converge(&s, "b.demo.svc.cluster.local", "");
    converge(&s, "c.demo.svc.cluster.local", "10.0.0.3");
}

#[test]
fn kube_relist_after_dropped_watches_and_expired_history() {
    let (api, _) = ApiServer::start_blocking();
    api.create(namespace("demo"));
    for i in 0..20 {
        api.create(svc("demo", &format!("s{i}")).cluster_ip(&format!("10.0.1.{i}")));
    }
    let s = Server::start_kube(&api, "");
    converge(&s, "s19.demo.svc.cluster.local", "10.0.1.19");
    api.stop_blocking();
    api.delete_named("Service", "demo", "s3");
    api.update(svc("demo", "s4").cluster_ip("10.0.2.4"));
    api.expire_history();
    api.restart_blocking();
    converge(&s, "s3.demo.svc.cluster.local", "");
    converge(&s, "s4.demo.svc.cluster.local", "10.0.2.4");
    api.drop_all_watches();
    api.expire_history();
    api.create(svc("demo", "late").cluster_ip("10.0.3.1"));
    converge(&s, "late.demo.svc.cluster.local", "10.0.3.1");
    assert_eq!(short(&s, "s19.demo.svc.cluster.local"), "10.0.1.19");
}

/// Before the first full list the server is alive but not ready, and names that would be
/// NXDOMAIN are SERVFAIL (no resolver caches a lie); after it, ready and NXDOMAIN.
#[test]
fn kube_before_the_first_sync_servfail_and_not_ready() {
    let (api, _) = ApiServer::start_blocking();
    api.create(namespace("demo"));
    api.create(svc("demo", "a").cluster_ip("10.0.0.1"));
    api.stop_blocking();
    let s = Server::start_kube(&api, "");
    let (health, ready) = (s.listen("health").unwrap(), s.listen("ready").unwrap());
    assert_eq!(status_body(health, "/health"), Some((200, "OK".into())));
    assert_eq!(
        status_body(ready, "/ready"),
        Some((503, "kubernetes".into())),
        "not ready before the first sync"
    );
    assert_eq!(s.status(&["a.demo.svc.cluster.local"]), "SERVFAIL");
    assert_eq!(s.status(&["nope.demo.svc.cluster.local"]), "SERVFAIL");
    api.restart_blocking();
    converge(&s, "a.demo.svc.cluster.local", "10.0.0.1");
    // every kind (namespaces, services, endpoint slices) listed: ready, NXDOMAIN again
    await_status(&s, "nope.demo.svc.cluster.local", "NXDOMAIN");
    let is_ready = || status_body(ready, "/ready").is_some_and(|r| r.0 == 200);
    assert!(wait_for(Duration::from_secs(10), is_ready));
    assert_eq!(status_body(ready, "/ready"), Some((200, "OK".into())));
    assert_eq!(status_body(health, "/nope").map(|r| r.0), Some(404));
}

#[test]
fn kube_namespace_and_label_filters() {
    let (api, _) = ApiServer::start_blocking();
    api.create(namespace("shown"));
    api.create(namespace("hidden"));
    api.create(
        svc("shown", "a")
            .cluster_ip("10.0.0.1")
            .label("expose", "yes"),
    );
    api.create(svc("shown", "b").cluster_ip("10.0.0.2"));
    api.create(
        svc("hidden", "c")
            .cluster_ip("10.0.0.3")
            .label("expose", "yes"),
    );
    let s = Server::start_kube(
        &api,
        "cluster:\n  namespaces: [shown]\n  labels: \"expose=yes\"\n",
    );
    converge(&s, "a.shown.svc.cluster.local", "10.0.0.1");
    assert_eq!(s.status(&["b.shown.svc.cluster.local"]), "NXDOMAIN");
    assert_eq!(s.status(&["c.hidden.svc.cluster.local"]), "NXDOMAIN");
    assert_eq!(s.status(&["hidden.svc.cluster.local"]), "NXDOMAIN");
    // a label change exposes a service
    api.update(
        svc("shown", "b")
            .cluster_ip("10.0.0.2")
            .label("expose", "yes"),
    );
    converge(&s, "b.shown.svc.cluster.local", "10.0.0.2");
}

/// `source.kubernetes.context` picks a kubeconfig context other than the current one, and
/// `source.kubernetes.endpoint` (CoreDNS's `endpoint`) replaces the API server URL the
/// kubeconfig names.
#[test]
fn kubeconfig_context_and_endpoint_choose_the_api_server() {
    let (api, _) = ApiServer::start_blocking();
    api.create(namespace("demo"));
    api.create(
        svc("demo", "web")
            .cluster_ip("10.0.0.1")
            .port("http", 80, "TCP"),
    );
    // Port 9 on loopback: nothing answers there.
    let dead = "http://127.0.0.1:9";
    let start = |kubeconfig: String, extra: &str| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        std::fs::write(&path, kubeconfig).unwrap();
        let source = format!(
            "source:\n  kubernetes:\n    kubeconfig: {}\n    startup_timeout: 1s\n{extra}",
            path.display()
        );
        Server::start_in(dir, &config_with_source(&source, ""), &[])
    };
    let two_contexts = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: dead\n  cluster:\n    server: {dead}\n- name: live\n  cluster:\n    server: {url}\ncontexts:\n- name: dead\n  context:\n    cluster: dead\n    user: test\n- name: live\n  context:\n    cluster: live\n    user: test\ncurrent-context: dead\nusers:\n- name: test\n  user:\n    token: test-token\n",
        url = api.url()
    );
    let s = start(two_contexts.clone(), "    context: live\n");
    converge(&s, "web.demo.svc.cluster.local", "10.0.0.1");
    drop(s);
    // The current context (the dead server) without `context`: nothing is synced.
    let s = start(two_contexts, "");
    await_status(&s, "web.demo.svc.cluster.local", "SERVFAIL");
    drop(s);
    // `endpoint` overrides the dead server the current context names.
    let one_dead = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: dead\n  cluster:\n    server: {dead}\ncontexts:\n- name: dead\n  context:\n    cluster: dead\n    user: test\ncurrent-context: dead\nusers:\n- name: test\n  user:\n    token: test-token\n"
    );
    let s = start(one_dead, &format!("    endpoint: {}\n", api.url()));
    converge(&s, "web.demo.svc.cluster.local", "10.0.0.1");
}
