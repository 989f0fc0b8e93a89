//! The live cluster end to end: the real binary watching the test API server through an
//! ordinary kubeconfig, and DNS answers following every change.

use std::time::{Duration, Instant};

use crate::apiserver::*;
use crate::support::*;

fn start_server(api: &ApiServer, extra: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = api.write_kubeconfig(dir.path());
    let extra = if extra.contains("forward:") {
        extra.to_string()
    } else {
        format!("forward:\n  enabled: false\n{extra}")
    };
    let cfg = format!(
        "listen: [\"127.0.0.1:0\"]\nsource:\n  kubernetes:\n    kubeconfig: {}\n    startup_timeout: 1s\nmetrics: {{listen: \"127.0.0.1:0\"}}\nhealth: {{listen: \"127.0.0.1:0\", lameduck: 1s}}\nready: {{listen: \"127.0.0.1:0\"}}\n{extra}",
        kubeconfig.display()
    );
    let s = Server::start(&cfg, &[]);
    std::mem::forget(dir);
    s
}

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
    while t0.elapsed() < Duration::from_secs(10) {
        if short(s, name) == want {
            return t0.elapsed();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("{name}: still {:?}, want {want:?}", short(s, name));
}

fn status(s: &Server, args: &[&str]) -> String {
    let out = s.dig(args);
    out.split("status: ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .unwrap_or("none")
        .to_string()
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
    let s = start_server(&api, "");
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
    assert_eq!(status(&s, &["db-1.db.demo.svc.cluster.local"]), "NXDOMAIN");
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
    assert_eq!(status(&s, &["web.demo.svc.cluster.local"]), "NXDOMAIN");
    // a new namespace exists as a name once it exists
    assert_eq!(status(&s, &["fresh.svc.cluster.local"]), "NXDOMAIN");
    api.create(namespace("fresh"));
    let t0 = Instant::now();
    while status(&s, &["fresh.svc.cluster.local"]) != "NOERROR"
        && t0.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(status(&s, &["fresh.svc.cluster.local"]), "NOERROR");
}

#[test]
fn kube_outage_keeps_serving_then_converges() {
    let (api, _) = ApiServer::start_blocking();
    api.create(namespace("demo"));
    api.create(svc("demo", "a").cluster_ip("10.0.0.1"));
    api.create(svc("demo", "b").cluster_ip("10.0.0.2"));
    let s = start_server(&api, "");
    converge(&s, "a.demo.svc.cluster.local", "10.0.0.1");
    api.stop_blocking();
    // the API is away: the last snapshot keeps answering, nothing flaps
    for _ in 0..20 {
        assert_eq!(short(&s, "a.demo.svc.cluster.local"), "10.0.0.1");
        assert_eq!(short(&s, "b.demo.svc.cluster.local"), "10.0.0.2");
        std::thread::sleep(Duration::from_millis(50));
    }
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
    let s = start_server(&api, "");
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

#[test]
fn kube_servfail_until_first_sync() {
    let (api, _) = ApiServer::start_blocking();
    api.create(namespace("demo"));
    api.create(svc("demo", "a").cluster_ip("10.0.0.1"));
    api.stop_blocking();
    let s = start_server(&api, "");
    // not synced: names that would be NXDOMAIN are SERVFAIL, so no resolver caches a lie
    assert_eq!(status(&s, &["a.demo.svc.cluster.local"]), "SERVFAIL");
    assert_eq!(status(&s, &["nope.demo.svc.cluster.local"]), "SERVFAIL");
    api.restart_blocking();
    converge(&s, "a.demo.svc.cluster.local", "10.0.0.1");
    // every kind (namespaces, services, endpoint slices) listed: NXDOMAIN again
    let t0 = Instant::now();
    while status(&s, &["nope.demo.svc.cluster.local"]) != "NXDOMAIN"
        && t0.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(status(&s, &["nope.demo.svc.cluster.local"]), "NXDOMAIN");
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
    let s = start_server(
        &api,
        "cluster:\n  namespaces: [shown]\n  labels: \"expose=yes\"\n",
    );
    converge(&s, "a.shown.svc.cluster.local", "10.0.0.1");
    assert_eq!(status(&s, &["b.shown.svc.cluster.local"]), "NXDOMAIN");
    assert_eq!(status(&s, &["c.hidden.svc.cluster.local"]), "NXDOMAIN");
    assert_eq!(status(&s, &["hidden.svc.cluster.local"]), "NXDOMAIN");
    // a label change exposes a service
    api.update(
        svc("shown", "b")
            .cluster_ip("10.0.0.2")
            .label("expose", "yes"),
    );
    converge(&s, "b.shown.svc.cluster.local", "10.0.0.2");
}
