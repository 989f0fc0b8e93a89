//! The live cluster end to end: the real binary watching the test API server through an
//! ordinary kubeconfig, and DNS answers following every change.

use std::time::{Duration, Instant};

use crate::apiserver::*;
use crate::support::*;

/// [`Server::converge`] within the 10 s these tests allow a change.
fn converge(s: &Server, name: &str, want: &str) -> Duration {
    s.converge(name, want, Duration::from_secs(10))
}

/// Wait until `dig name` answers with `status`.
fn await_status(s: &Server, name: &str, status: &str) {
    let done = wait_for(Duration::from_secs(10), || s.status(&[name]) == status);
    assert!(done, "{name}: {}, want {status}", s.status(&[name]));
}

/// A test API server holding namespace `demo` and its service `web` (ClusterIP 10.0.0.1, port
/// http 80/TCP).
fn api_with_demo_web() -> ApiServer {
    let (api, _) = ApiServer::start_blocking();
    api.create(namespace("demo"));
    api.create(
        svc("demo", "web")
            .cluster_ip("10.0.0.1")
            .port("http", 80, "TCP"),
    );
    api
}

#[test]
fn kube_changes_reach_dns() {
    let api = api_with_demo_web();
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
    let db = svc("demo", "db").headless().port("pg", 5432, "TCP");
    api.create(&db);
    api.create(
        db.endpoint_slice("db-abc")
            .endpoint(ep(&["10.1.0.1"]).hostname("db-0"))
            .endpoint(ep(&["10.1.0.2"]).hostname("db-1").ready(false)),
    );
    converge(&s, "db.demo.svc.cluster.local", "10.1.0.1");
    assert_eq!(s.status(&["db-1.db.demo.svc.cluster.local"]), "NXDOMAIN");
    api.update(
        db.endpoint_slice("db-abc")
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
        db.endpoint_slice("db-abc")
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
        s.short("a.demo.svc.cluster.local") == "10.0.0.1"
            && s.short("b.demo.svc.cluster.local") == "10.0.0.2"
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
    assert_eq!(s.short("a.demo.svc.cluster.local"), "10.0.0.1");
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
    assert_eq!(s.short("s19.demo.svc.cluster.local"), "10.0.1.19");
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
    let api = api_with_demo_web();
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

// ---- relists, expiries and outages ------------------------------------------------------

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clusterdns::cluster::Kind;

/// Asks a set of names over and over (raw UDP, from a thread of its own) and keeps every answer
/// that is not the expected one: a wrong address, no address, an error code, no reply.
struct Poller {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(u64, Vec<String>)>,
}

impl Poller {
    fn start(dns: SocketAddr, expect: Expected) -> Poller {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut asked, mut wrong) = (0u64, Vec::new());
            let mut id = 0u16;
            while !flag.load(Ordering::Relaxed) {
                for (name, want) in &expect {
                    id = id.wrapping_add(1);
                    asked += 1;
                    let got = udp_exchange(dns, &query(name, 1, id, None)).map(|r| {
                        let m = decode(&r);
                        let mut a = a_addrs(&m);
                        a.sort();
                        (m.metadata.response_code, a)
                    });
                    match got {
                        Some((_, a)) if a == *want => {}
                        other => wrong.push(format!("{name}: {other:?}, want {want:?}")),
                    }
                }
            }
            (asked, wrong)
        });
        Poller { stop, thread }
    }

    /// Stops; how many questions were asked, and the wrong answers.
    fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("poller")
    }
}

/// The names of `expect` that do not answer their addresses (asked once each, raw UDP).
fn wrong_answers(s: &Server, expect: &[(String, Vec<Ipv4Addr>)]) -> Vec<String> {
    let mut wrong = Vec::new();
    for (id, (name, want)) in expect.iter().enumerate() {
        let got = udp_exchange(s.dns, &query(name, 1, id as u16, None)).map(|r| {
            let mut a = a_addrs(&decode(&r));
            a.sort();
            a
        });
        if got.as_ref() != Some(want) {
            wrong.push(format!("{name}: {got:?}, want {want:?}"));
        }
    }
    wrong
}

/// Waits until every name of `expect` answers its addresses.
fn await_all(s: &Server, expect: &[(String, Vec<Ipv4Addr>)]) {
    let done = wait_for(Duration::from_secs(20), || {
        wrong_answers(s, expect).is_empty()
    });
    assert!(done, "not served: {:?}", wrong_answers(s, expect));
}

/// A cluster of `services` ClusterIP services (every tenth headless, with five endpoints) in
/// four namespaces and `pods` pods; returns the names to poll and their answers.
fn fill(api: &ApiServer, services: usize, pods: usize) -> Expected {
    let mut expect = Vec::new();
    for n in 0..4 {
        api.create(namespace(&format!("ns{n}")));
    }
    for i in 0..services {
        let ns = format!("ns{}", i % 4);
        let name = format!("s{i}");
        if i % 10 == 0 {
            api.create(svc(&ns, &name).headless().port("http", 80, "TCP"));
            let mut sl = slice(&ns, &format!("{name}-1"), &name).port("http", 80, "TCP");
            let mut ips = Vec::new();
            for e in 0..5u8 {
                let ip = Ipv4Addr::new(10, 2, i as u8, e + 1);
                sl = sl.endpoint(ep(&[&ip.to_string()]));
                ips.push(ip);
            }
            api.create(sl);
            expect.push((format!("{name}.{ns}.svc.cluster.local"), ips));
        } else {
            let ip = Ipv4Addr::new(10, 0, (i / 250) as u8, (i % 250 + 1) as u8);
            api.create(
                svc(&ns, &name)
                    .cluster_ip(&ip.to_string())
                    .port("http", 80, "TCP"),
            );
            api.create(
                slice(&ns, &format!("{name}-1"), &name)
                    .port("http", 80, "TCP")
                    .endpoint(ep(&[&format!("10.3.{}.{}", i / 250, i % 250 + 1)])),
            );
            expect.push((format!("{name}.{ns}.svc.cluster.local"), vec![ip]));
        }
    }
    for p in 0..pods {
        let ns = format!("ns{}", p % 4);
        let ip = Ipv4Addr::new(10, 1, (p / 250) as u8, (p % 250 + 1) as u8);
        api.create(pod(&ns, &format!("p{p}")).ip(&ip.to_string()));
        if p % 4 == 0 {
            let dashed = ip.to_string().replace('.', "-");
            expect.push((format!("{dashed}.{ns}.pod.cluster.local"), vec![ip]));
        }
    }
    expect
}

/// The names of a filled cluster to poll, with their answers.
type Expected = Vec<(String, Vec<Ipv4Addr>)>;

/// The start the relist and outage tests share: [`fill`]'s cluster of `services` and `pods`,
/// one more service `name.ns` at `ip` (the one the test changes), and the server watching it
/// with pod records verified, returned once that service answers. The names of `fill` are
/// returned, not waited for.
fn filled_cluster(
    services: usize,
    pods: usize,
    (ns, name, ip): (&str, &str, &str),
) -> (ApiServer, Server, Expected) {
    let (api, _) = ApiServer::start_blocking();
    let expect = fill(&api, services, pods);
    api.create(svc(ns, name).cluster_ip(ip));
    let s = Server::start_kube(&api, "cluster:\n  pods: verified\n");
    converge(&s, &format!("{name}.{ns}.svc.cluster.local"), ip);
    (api, s, expect)
}

/// `clusterdns_relists_total` per kind, from the metrics endpoint.
fn relists(s: &Server) -> BTreeMap<String, f64> {
    metric_values(s, "clusterdns_relists_total")
}

/// The values of one metric family by its `kind` label.
fn metric_values(s: &Server, family: &str) -> BTreeMap<String, f64> {
    let addr = s.listen("metrics").expect("metrics address");
    let text = get(addr, "/metrics", &[]).expect("scrape").text();
    text.lines()
        .filter_map(|l| l.strip_prefix(family)?.strip_prefix("{kind=\""))
        .filter_map(|l| {
            let (kind, rest) = l.split_once("\"}")?;
            Some((kind.to_string(), rest.trim().parse().ok()?))
        })
        .collect()
}

fn ready_status(s: &Server) -> u16 {
    let addr = s.listen("ready").expect("ready address");
    get(addr, "/ready", &[]).map_or(0, |r| r.status)
}

/// Waits (10 s at most) until a list of `resource` (`pods`, `services`) has asked for a page
/// after its first: with [`ApiServer::hold_list_pages`], a list held in progress.
fn asked_for_a_second_page(api: &ApiServer, resource: &str) -> bool {
    let path = format!("/{resource}");
    wait_for(Duration::from_secs(10), || {
        api.requests().iter().any(|r| {
            r.path.ends_with(&path)
                && r.param("watch").is_none()
                && r.param("continue").is_some_and(|c| !c.is_empty())
        })
    })
}

/// Every watch ends and the history is compacted (an API server restart), three times, while a
/// client keeps asking: no answer is ever wrong, every kind relists, and what changed while the
/// watches were cut off is there after the relist.
#[test]
fn kube_forced_expiry_relists_every_kind_without_a_wrong_answer() {
    let (api, s, expect) = filled_cluster(80, 240, ("ns1", "gone", "10.0.9.1"));
    await_all(&s, &expect);
    let poller = Poller::start(s.dns, expect.clone());
    let kinds = Kind::ALL.map(|k| k.as_str().to_string());
    for round in 0..3 {
        let before = relists(&s);
        if round == 1 {
            // Changes the cut-off watches never deliver: only the relist can bring them.
            api.partition_watches();
            api.create(svc("ns2", "late").cluster_ip("10.0.9.2"));
            api.delete_named("Service", "ns1", "gone");
        }
        api.force_expiry();
        let t0 = Instant::now();
        loop {
            let now = relists(&s);
            let done = kinds.iter().all(|k| {
                now.get(k).copied().unwrap_or(0.0) > before.get(k).copied().unwrap_or(0.0)
            });
            if done {
                eprintln!(
                    "round {round}: every kind relisted after {:?}",
                    t0.elapsed()
                );
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(15),
                "not every kind relisted: before {before:?}, now {now:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        if round == 1 {
            converge(&s, "late.ns2.svc.cluster.local", "10.0.9.2");
            converge(&s, "gone.ns1.svc.cluster.local", "");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let (asked, wrong) = poller.finish();
    eprintln!("{asked} questions asked during the relists");
    assert!(asked > 100, "the poller asked only {asked} questions");
    assert!(
        wrong.is_empty(),
        "{} wrong answers: {:#?}",
        wrong.len(),
        &wrong[..wrong.len().min(20)]
    );
}

/// A relist holds back only its own kind's changes: while the Pod relist is in progress (the
/// API server answers its first page and holds the next), a Service changed after the expiry
/// is served, and the pods the relist adds or removes are not (DNS answers the last complete
/// state, every name as before); once the list completes, they are.
#[test]
fn kube_relist_of_one_kind_holds_back_only_its_own_changes() {
    // More pods than one page (500): the Pod list has pages after the first.
    let (api, s, expect) = filled_cluster(20, 1200, ("ns0", "web", "10.0.8.1"));
    await_all(&s, &expect);
    let (old_pod, new_pod) = (
        "10-1-0-1.ns0.pod.cluster.local",
        "10-1-99-1.ns0.pod.cluster.local",
    );
    converge(&s, old_pod, "10.1.0.1");
    // Changes to pods that only the relist can bring (the watches are cut off first): p0 is
    // deleted, and a new pod sorts first in its namespace, so it is on the first page.
    api.partition_watches();
    api.delete_named("Pod", "ns0", "p0");
    api.create(pod("ns0", "a-new").ip("10.1.99.1"));
    api.hold_list_pages(Res::Pods);
    api.force_expiry();
    assert!(
        asked_for_a_second_page(&api, "pods"),
        "the Pod relist never asked for its second page"
    );

    api.update(svc("ns0", "web").cluster_ip("10.0.8.2"));
    converge(&s, "web.ns0.svc.cluster.local", "10.0.8.2");
    assert_eq!(s.short(old_pod), "10.1.0.1", "a pod the relist removes");
    assert_eq!(s.status(&[new_pod]), "NXDOMAIN", "a pod the relist adds");
    let wrong = wrong_answers(&s, &expect);
    assert!(wrong.is_empty(), "during the relist: {wrong:?}");

    api.release_list_pages();
    converge(&s, new_pod, "10.1.99.1");
    converge(&s, old_pod, "");
    api.update(svc("ns0", "web").cluster_ip("10.0.8.3"));
    converge(&s, "web.ns0.svc.cluster.local", "10.0.8.3");
}

/// When every kind relists at once, the Pod list gives way to the others: while the Service
/// relist is in progress (its second page held by the API server), the Pod relist does not
/// finish, though its pages are there; it waits for at most 2 s in all, then goes on without
/// the Services.
#[test]
fn kube_pod_relist_gives_way_to_a_service_relist_for_a_bounded_time() {
    // More services than one page (500), so that the Service list has a second page to hold.
    let (api, s, expect) = filled_cluster(600, 1200, ("ns0", "web", "10.0.8.1"));
    await_all(&s, &expect);
    let before = relists(&s);
    let count = |m: &BTreeMap<String, f64>, k: &str| m.get(k).copied().unwrap_or(0.0);
    api.hold_list_pages(Res::Services);
    api.force_expiry();
    assert!(
        asked_for_a_second_page(&api, "services"),
        "the Service relist never asked for its second page"
    );
    let held_at = Instant::now();
    // 1,200 pods relist in tens of milliseconds when nothing holds them back; the Pod list
    // gives way for 2 s. A slower machine only makes the relist later, never earlier.
    std::thread::sleep(Duration::from_millis(1000));
    let now = relists(&s);
    assert_eq!(
        count(&now, "Pod"),
        count(&before, "Pod"),
        "the Pod relist finished beside the Service relist: {now:?}"
    );
    // The give-way is bounded: the Pods are relisted while the Services still wait.
    let pods_relisted = wait_for(Duration::from_secs(20), || {
        count(&relists(&s), "Pod") > count(&before, "Pod")
    });
    assert!(pods_relisted, "the Pod relist waited without end");
    eprintln!(
        "Pod relist done {:?} after the Service list was held",
        held_at.elapsed()
    );
    assert_eq!(
        count(&relists(&s), "Service"),
        count(&before, "Service"),
        "the Service list is still held"
    );
    api.release_list_pages();
    let services_relisted = wait_for(Duration::from_secs(10), || {
        count(&relists(&s), "Service") > count(&before, "Service")
    });
    assert!(services_relisted, "the Service relist never finished");
    let wrong = wrong_answers(&s, &expect);
    assert!(wrong.is_empty(), "after the relists: {wrong:?}");
}

/// A change made right after every watch expired reaches DNS without waiting for anything but
/// the relist (bounded generously here; the benchmark measures it).
#[test]
fn kube_changes_right_after_an_expiry_reach_dns() {
    let (api, s, _) = filled_cluster(60, 200, ("ns0", "web", "10.0.8.1"));
    let mut took = Vec::new();
    for i in 0..8u8 {
        api.force_expiry();
        let ip = format!("10.0.8.{}", i + 2);
        let t0 = Instant::now();
        api.update(svc("ns0", "web").cluster_ip(&ip));
        let want = vec![ip.parse::<Ipv4Addr>().unwrap()];
        let mut id = 0u16;
        loop {
            id = id.wrapping_add(1);
            let got = udp_exchange(s.dns, &query("web.ns0.svc.cluster.local", 1, id, None))
                .map(|r| a_addrs(&decode(&r)));
            if got.as_ref() == Some(&want) {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "change {i} never arrived: {got:?}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        took.push(t0.elapsed());
        std::thread::sleep(Duration::from_millis(300));
    }
    took.sort();
    eprintln!(
        "change after an expiry visible in DNS: median {:?}, max {:?}",
        took[took.len() / 2],
        took.last().unwrap()
    );
}

/// The API server is away for 30 seconds: every name keeps its answer, `/ready` stays 200, the
/// staleness metric grows; then the watch resumes by itself and the changes made meanwhile and
/// after are served.
#[test]
fn kube_api_outage_of_30s_keeps_answers_and_resumes() {
    let (api, s, expect) = filled_cluster(20, 40, ("ns3", "moved", "10.0.7.1"));
    await_all(&s, &expect);
    let stale_before = metric_values(&s, "clusterdns_watch_staleness_seconds");
    assert_eq!(stale_before.len(), 4, "{stale_before:?}");
    assert!(stale_before.values().all(|v| *v < 5.0), "{stale_before:?}");
    let poller = Poller::start(s.dns, expect.clone());

    api.stop_blocking();
    let t0 = Instant::now();
    api.update(svc("ns3", "moved").cluster_ip("10.0.7.2"));
    let mut staleness = Vec::new();
    while t0.elapsed() < Duration::from_secs(30) {
        assert_eq!(ready_status(&s), 200, "/ready during the outage");
        assert_eq!(s.short("moved.ns3.svc.cluster.local"), "10.0.7.1");
        staleness.push(metric_values(&s, "clusterdns_watch_staleness_seconds")["Service"]);
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(
        staleness.windows(2).all(|w| w[1] >= w[0]) && *staleness.last().unwrap() >= 25.0,
        "the staleness grows through the outage: {staleness:?}"
    );

    api.restart_blocking();
    let back = Instant::now();
    // The watch resumes at its next retry (the backoff reaches 30 s, jittered up to 60 s).
    let deadline = Duration::from_secs(75);
    while s.short("moved.ns3.svc.cluster.local") != "10.0.7.2" {
        assert!(
            back.elapsed() < deadline,
            "the watch did not resume within {deadline:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "resumed {:?} after the API server came back",
        back.elapsed()
    );
    api.create(svc("ns0", "after").cluster_ip("10.0.7.3"));
    converge(&s, "after.ns0.svc.cluster.local", "10.0.7.3");
    let stale_after = metric_values(&s, "clusterdns_watch_staleness_seconds");
    assert!(stale_after["Service"] < 5.0, "{stale_after:?}");
    assert_eq!(ready_status(&s), 200);
    let (asked, wrong) = poller.finish();
    assert!(asked > 100, "{asked}");
    assert!(
        wrong.is_empty(),
        "{} wrong answers: {:#?}",
        wrong.len(),
        &wrong[..wrong.len().min(20)]
    );
}
