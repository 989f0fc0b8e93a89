//! Knot DNS and BIND 9 as real secondaries of clusterdns (watching the test API server): both
//! load the cluster zone and a reverse zone by AXFR (TSIG-signed, more than one 64 KiB message),
//! then follow 50 changes made at the API server — services created, endpoints added, an
//! ExternalName changed, services deleted — by NOTIFY and IXFR. After every change each
//! secondary holds exactly clusterdns's records, and answers (`dig` against it) every name and
//! type the changed records have as clusterdns does; at the start and the end, every name and
//! type the zones hold.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::apiserver::*;
use crate::support::secondary::{dig_answers, dig_axfr, names_and_types, parse_dig};
use crate::support::*;

const KEY_NAME: &str = "xfr-key";
/// 32 bytes, base64 (what `tsig-keygen` prints).
const KEY: &str = "x8Qm0qE6u1pT8v0zq1bq3aQJ1g4xVdJ9cYz7rX2kLmA=";
const ZONES: [&str; 2] = ["cluster.local", "10.in-addr.arpa"];
/// Services in the cluster from the start: enough for an AXFR of more than one message.
const SERVICES: usize = 500;

/// clusterdns's config for a primary notifying `secondaries`.
pub(crate) fn primary_config(secondaries: &[SocketAddr]) -> String {
    let notify: Vec<String> = secondaries.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "cluster:\n  reverse_zones: [10.in-addr.arpa, in-addr.arpa, ip6.arpa]\n  loadbalance: false\n\
         transfer:\n  allow: [\"127.0.0.0/8\"]\n  zones: [cluster.local, 10.in-addr.arpa]\n  notify: [{}]\n  tsig:\n    name: {KEY_NAME}\n    secret: \"{KEY}\"\n",
        notify.join(", ")
    )
}

fn initial_cluster(api: &ApiServer) {
    api.create(namespace("prod"));
    for i in 0..SERVICES {
        let name = format!("svc-{i}");
        let ip = format!("10.96.{}.{}", i / 200, i % 200 + 1);
        api.create(svc("prod", &name).cluster_ip(&ip).port("http", 80, "TCP"));
        let ep_ip = format!("10.1.{}.{}", i / 200, i % 200 + 1);
        api.create(
            slice("prod", &format!("{name}-abcde"), &name)
                .port("http", 8080, "TCP")
                .endpoint(ep(&[&ep_ip])),
        );
    }
    api.create(
        svc("prod", "ext")
            .external_name("target-start.example.com")
            .port("https", 443, "TCP"),
    );
    let db = svc("prod", "db").headless().port("pg", 5432, "TCP");
    api.create(&db);
    api.create(
        db.endpoint_slice("db-abcde")
            .endpoint(ep(&["10.3.0.1"]).hostname("db-0"))
            .endpoint(ep(&["10.3.0.2"]).hostname("db-1")),
    );
}

/// The service change `i` (a multiple of 4) creates, and later changes its slice of and
/// deletes: its name and the Service.
fn new_service(i: usize) -> (String, Fixture) {
    let name = format!("new-{i}");
    let service = svc("prod", &name)
        .cluster_ip(&format!("10.96.250.{i}"))
        .port("web", 8000, "TCP");
    (name, service)
}

/// One change of the 50: what it did, for messages.
fn change(api: &ApiServer, i: usize) -> String {
    match i % 4 {
        0 => {
            let (name, service) = new_service(i);
            api.create(&service);
            api.create(
                service
                    .endpoint_slice(&format!("{name}-abcde"))
                    .endpoint(ep(&[&format!("10.2.{i}.1")])),
            );
            format!("service {name} created")
        }
        1 => {
            let (name, service) = new_service(i - 1);
            api.update(
                service
                    .endpoint_slice(&format!("{name}-abcde"))
                    .endpoint(ep(&[&format!("10.2.{}.1", i - 1)]))
                    .endpoint(ep(&[&format!("10.2.{}.2", i - 1)]).hostname(&format!("h{i}"))),
            );
            format!("endpoint added to {name}")
        }
        2 => {
            api.update(
                svc("prod", "ext")
                    .external_name(&format!("target-{i}.example.com"))
                    .port("https", 443, "TCP"),
            );
            format!("ExternalName ext now target-{i}")
        }
        _ => {
            let name = format!("new-{}", i - 3);
            api.delete_named("Service", "prod", &name);
            api.delete_named("EndpointSlice", "prod", &format!("{name}-abcde"));
            format!("service {name} deleted")
        }
    }
}

fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    assert!(wait_for(limit, &mut cond), "timed out: {what}");
}

/// Both secondaries hold clusterdns's serial of every zone.
fn converge(primary: SocketAddr, secondaries: &[Secondary], what: &str) -> u32 {
    let serial = soa_serial(primary, ZONES[0]).expect("clusterdns answers the SOA");
    for s in secondaries {
        let t = Instant::now();
        for z in ZONES {
            wait_until(
                Duration::from_secs(20),
                &format!(
                    "{} has serial {serial} of {z} after {what}",
                    s.flavor.name()
                ),
                || s.serial(z) == Some(serial),
            );
        }
        eprintln!("T   {} {:?}", s.flavor.name(), t.elapsed());
    }
    serial
}

fn dig() -> PathBuf {
    require("dig")
}

type Zones = BTreeMap<String, BTreeSet<String>>;

/// Every record of every zone, as clusterdns transfers it.
fn primary_zones(primary: SocketAddr) -> Zones {
    dig_axfr(&dig(), primary, &ZONES, Some((KEY_NAME, KEY)))
}

/// Each secondary's copy is clusterdns's, record for record.
fn same_records(primary: &Zones, secondaries: &[Secondary], what: &str) {
    for s in secondaries {
        let copy = dig_axfr(&dig(), s.addr, &ZONES, None);
        for (z, want) in primary {
            let got = &copy[z];
            let missing: Vec<_> = want.difference(got).take(5).collect();
            let extra: Vec<_> = got.difference(want).take(5).collect();
            assert!(
                missing.is_empty() && extra.is_empty(),
                "{} after {what}, zone {z}: missing {missing:?}, extra {extra:?}",
                s.flavor.name()
            );
        }
    }
}

/// Each secondary answers `questions` as clusterdns does (the servers asked at the same time).
fn same_answers(
    primary: SocketAddr,
    secondaries: &[Secondary],
    questions: &[(String, String)],
    what: &str,
) {
    let (want, got) = std::thread::scope(|t| {
        let want = t.spawn(|| dig_answers(&dig(), primary, questions));
        let got: Vec<_> = secondaries
            .iter()
            .map(|s| t.spawn(move || dig_answers(&dig(), s.addr, questions)))
            .collect();
        (
            want.join().unwrap(),
            got.into_iter()
                .map(|g| g.join().unwrap())
                .collect::<Vec<_>>(),
        )
    });
    assert_eq!(
        want.len(),
        questions.len(),
        "clusterdns answered every question"
    );
    for (s, got) in secondaries.iter().zip(got) {
        for q in questions {
            if got.get(q) != want.get(q) {
                let again = dig_at(s.addr, &[&q.0, &q.1]);
                panic!(
                    "{} after {what}: {q:?}: {:?}, clusterdns {:?}; asked again:\n{again}\n{}",
                    s.flavor.name(),
                    got.get(q),
                    want.get(q),
                    s.log()
                );
            }
        }
    }
}

fn all_questions(zones: &Zones) -> Vec<(String, String)> {
    zones
        .values()
        .flat_map(names_and_types)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

#[test]
fn knot_and_bind_follow_fifty_changes_by_notify_and_ixfr() {
    let start = Instant::now();
    let (api, _) = ApiServer::start_blocking();
    initial_cluster(&api);
    let (knot_port, bind_port) = (free_port(), free_port());
    let lo = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    let s = Server::start_kube(&api, &primary_config(&[lo(knot_port), lo(bind_port)]));
    wait_until(Duration::from_secs(20), "clusterdns synced", || {
        s.status(&["svc-1.prod.svc.cluster.local", "A"]) == "NOERROR"
    });
    // The serial is the API state's: its revision × 4 (`zone::serial`).
    let serial = soa_serial(s.dns, "cluster.local").unwrap();
    assert_eq!(
        u64::from(serial),
        api.resource_version() * 4,
        "serial from the API revision"
    );

    let key = Some((KEY_NAME, KEY));
    let follow = Follow {
        primary: s.dns,
        zones: &ZONES,
        key,
    };
    let secondaries = vec![
        Secondary::start(Flavor::Knot, &require("knotd"), knot_port, &follow),
        Secondary::start(Flavor::Bind, &require("named"), bind_port, &follow),
    ];
    converge(s.dns, &secondaries, "the first AXFR");
    eprintln!("T converged {:?}", start.elapsed());

    // The first transfer took more than one message, every one signed (dig checks each MAC).
    let out = dig_at(
        s.dns,
        &[
            "-y",
            &format!("hmac-sha256:{KEY_NAME}:{KEY}"),
            "cluster.local",
            "AXFR",
        ],
    );
    let messages: usize = out
        .split("messages ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no XFR size in {}", &out[out.len().saturating_sub(300)..]));
    assert!(
        messages >= 2,
        "a {SERVICES}-service zone takes several 64 KiB messages: {messages}"
    );

    let mut zones = primary_zones(s.dns);
    same_records(&zones, &secondaries, "the first AXFR");
    same_answers(
        s.dns,
        &secondaries,
        &all_questions(&zones),
        "the first AXFR",
    );

    for i in 0..50 {
        let before = soa_serial(s.dns, "cluster.local").unwrap();
        let t0 = Instant::now();
        let what = change(&api, i);
        wait_until(
            Duration::from_secs(10),
            &format!("clusterdns publishes {what}"),
            || soa_serial(s.dns, "cluster.local").is_some_and(|n| n != before),
        );
        // Both writes of a change may come in two snapshots: wait for the API's revision.
        let want = (api.resource_version() * 4) as u32;
        wait_until(
            Duration::from_secs(10),
            &format!("clusterdns at revision after {what}"),
            || {
                soa_serial(s.dns, "cluster.local")
                    .is_some_and(|n| n == want || n.wrapping_sub(want) < 4)
            },
        );
        let t1 = t0.elapsed();
        converge(s.dns, &secondaries, &what);
        let t2 = t0.elapsed();
        let now = primary_zones(s.dns);
        // Record for record every few changes (and at the end); the names changed, always.
        if i % 10 == 9 {
            same_records(&now, &secondaries, &what);
        }
        // The names and types the change touched (added or removed records).
        let mut changed: BTreeSet<(String, String)> = BTreeSet::new();
        for (z, recs) in &now {
            let old = &zones[z];
            let diff: BTreeSet<String> = recs.symmetric_difference(old).cloned().collect();
            changed.extend(
                names_and_types(&diff)
                    .into_iter()
                    .filter(|(_, t)| t != "SOA"),
            );
        }
        assert!(!changed.is_empty(), "{what} changed no record");
        same_answers(
            s.dns,
            &secondaries,
            &changed.into_iter().collect::<Vec<_>>(),
            &what,
        );
        zones = now;
        eprintln!(
            "T change {i}: published {t1:?} converged {t2:?} compared {:?}",
            t0.elapsed()
        );
    }
    same_answers(s.dns, &secondaries, &all_questions(&zones), "50 changes");

    // They followed by IXFR, told by NOTIFY.
    let metrics = s.metrics();
    let incremental = metric_value(
        &metrics,
        "clusterdns_transfers_total{result=\"incremental\",type=\"ixfr\"}",
    )
    .unwrap_or(0.0);
    assert!(
        incremental >= 50.0,
        "IXFR answered incrementally {incremental} times:\n{}",
        grep(&metrics, "clusterdns_transfer")
    );
    for sec in &secondaries {
        let label = format!(
            "clusterdns_notify_total{{result=\"ok\",to=\"{}\"}}",
            sec.addr
        );
        let ok = metric_value(&metrics, &label).unwrap_or(0.0);
        assert!(
            ok >= 50.0,
            "NOTIFY acknowledged by {} {ok} times:\n{}",
            sec.flavor.name(),
            grep(&metrics, "clusterdns_notify")
        );
    }
    eprintln!("knot and bind followed 50 changes in {:?}", start.elapsed());
    if let Some(d) = std::env::var_os("XFR_DEBUG_LOGS") {
        for sec in &secondaries {
            std::fs::write(std::path::Path::new(&d).join(sec.flavor.name()), sec.log()).unwrap();
        }
    }
}

fn grep(text: &str, what: &str) -> String {
    text.lines()
        .filter(|l| l.contains(what))
        .collect::<Vec<_>>()
        .join("\n")
}

/// dig's own query coming back (a random source port equal to the server's, on loopback) is
/// not taken for the server's answer.
#[test]
fn dig_output_is_read_per_question() {
    let text = ";; Got answer:
;; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 55271
;; flags: qr aa; QUERY: 1, ANSWER: 1, AUTHORITY: 1, ADDITIONAL: 1

;; OPT PSEUDOSECTION:
; EDNS: version: 0, flags:; udp: 1232
;; QUESTION SECTION:
;a.example.	IN	PTR

;; ANSWER SECTION:
a.example. 30	IN	PTR	x.example.

;; Warning: query response not set
;; Got answer:
;; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 36716
;; flags: ad; QUERY: 1, ANSWER: 0, AUTHORITY: 0, ADDITIONAL: 1

;; QUESTION SECTION:
;b.example.	IN	PTR

;; Got answer:
;; ->>HEADER<<- opcode: QUERY, status: NXDOMAIN, id: 15232
;; flags: qr aa; QUERY: 1, ANSWER: 0, AUTHORITY: 1, ADDITIONAL: 1

;; QUESTION SECTION:
;c.example.	IN	A
";
    let m = parse_dig(text);
    let q = |n: &str, t: &str| (n.to_string(), t.to_string());
    assert_eq!(
        m.get(&q("a.example.", "PTR")),
        Some(&(
            "NOERROR".to_string(),
            vec!["a.example. 30 in ptr x.example.".to_string()]
        ))
    );
    assert_eq!(
        m.get(&q("b.example.", "PTR")),
        None,
        "dig's own query is no answer"
    );
    assert_eq!(
        m.get(&q("c.example.", "A")),
        Some(&("NXDOMAIN".to_string(), vec![]))
    );
}
