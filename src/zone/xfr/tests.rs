//! The transferred zone against the answer path: every record generated is what a query for
//! its name and type answers, and nothing else is answered at those names; the journal's
//! differences turn one version's records into the next one's.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::op::Message;

use super::journal::{Journal, JournalLimits};
use super::records::{self, Rr, TransferZone};
use crate::cluster::ClusterEvent;
use crate::cluster::objects::*;
use crate::config::{ClusterConfig, PodsMode};
use crate::wire::{Query, Writer, rtype};
use crate::zone::answer::{Outcome, answer};
use crate::zone::build::{ZoneBuilder, required_kinds};
use crate::zone::snapshot::Snapshot;

fn port(name: &str, port: u16, protocol: Protocol) -> Port {
    Port {
        name: name.into(),
        protocol,
        port,
    }
}

fn service(ns: &str, name: &str, kind: ServiceKind, ports: Vec<Port>) -> Object {
    Object::Service(ServiceInfo {
        namespace: ns.into(),
        name: name.into(),
        kind,
        ports,
        publish_not_ready: false,
        labels: Default::default(),
        external: vec![],
    })
}

fn ips(v: &[&str]) -> Vec<IpAddr> {
    v.iter().map(|s| s.parse().unwrap()).collect()
}

/// A slice: endpoints as (addresses, hostname).
fn slice(
    ns: &str,
    name: &str,
    svc: &str,
    eps: &[(&[&str], Option<&str>)],
    ports: Vec<Port>,
) -> Object {
    Object::Slice(SliceInfo {
        namespace: ns.into(),
        name: name.into(),
        service: Some(svc.into()),
        endpoints: eps
            .iter()
            .map(|(a, h)| EndpointInfo {
                addresses: ips(a),
                ready: true,
                hostname: h.map(Into::into),
                pod_name: None,
            })
            .collect(),
        ports,
    })
}

fn namespace(name: &str) -> Object {
    Object::Namespace(NamespaceInfo {
        name: name.into(),
        labels: Default::default(),
    })
}

fn pod(ns: &str, name: &str, a: &[&str]) -> Object {
    Object::Pod(PodInfo {
        namespace: ns.into(),
        name: name.into(),
        ips: ips(a),
        host_network: false,
    })
}

/// Every kind of record the zones hold, and the corners of the answer path.
fn objects() -> Vec<Object> {
    use Protocol::{Tcp, Udp};
    vec![
        namespace("prod"),
        namespace("kube-system"),
        namespace("empty"),
        service(
            "kube-system",
            "kube-dns",
            ServiceKind::ClusterIp(ips(&["10.96.0.10"])),
            vec![
                port("dns", 53, Udp),
                port("dns-tcp", 53, Tcp),
                port("metrics", 9153, Tcp),
            ],
        ),
        // Ports with the same number on two protocols, an unnamed port, a name used twice.
        service(
            "prod",
            "web",
            ServiceKind::ClusterIp(ips(&["10.96.1.1"])),
            vec![
                port("http", 80, Tcp),
                port("http", 80, Udp),
                port("", 8080, Tcp),
                port("alt", 81, Tcp),
                port("alt", 82, Tcp),
            ],
        ),
        slice(
            "prod",
            "web-1",
            "web",
            &[(&["10.1.0.1"], Some("web-0")), (&["10.1.0.2"], None)],
            vec![port("http", 8080, Tcp)],
        ),
        service(
            "prod",
            "dual",
            ServiceKind::ClusterIp(ips(&["10.96.1.2", "fd00::2"])),
            vec![port("https", 443, Tcp)],
        ),
        // Headless: hostnames, a shared name, IPv6, two slices with different ports, an address
        // under two names.
        service("prod", "db", ServiceKind::Headless, vec![]),
        slice(
            "prod",
            "db-a",
            "db",
            &[
                (&["10.1.1.1"], Some("db-0")),
                (&["10.1.1.2"], Some("db-1")),
                (&["10.1.1.3"], Some("shared")),
                (&["10.1.1.4"], Some("shared")),
                (&["fd00::1:5"], None),
                (&["10.1.1.6"], None),
            ],
            vec![port("pg", 5432, Tcp), port("", 9000, Tcp)],
        ),
        slice(
            "prod",
            "db-b",
            "db",
            &[(&["10.1.1.7"], None), (&["10.1.1.1"], Some("again"))],
            vec![port("pg", 5433, Tcp), port("repl", 5434, Udp)],
        ),
        // Headless without endpoints: no records at all.
        service(
            "prod",
            "nothing",
            ServiceKind::Headless,
            vec![port("x", 1, Tcp)],
        ),
        // ExternalName with ports.
        service(
            "prod",
            "ext",
            ServiceKind::ExternalName("api.example.com".into()),
            vec![port("https", 443, Tcp), port("https", 8443, Tcp)],
        ),
        // An endpoint address that is another service's ClusterIP, and one shared by two
        // services.
        service(
            "prod",
            "other",
            ServiceKind::ClusterIp(ips(&["10.96.1.3"])),
            vec![],
        ),
        slice(
            "prod",
            "other-1",
            "other",
            &[
                (&["10.96.1.1"], Some("clash")),
                (&["10.1.1.2"], Some("twin")),
            ],
            vec![],
        ),
        // Pods (verified mode).
        pod("prod", "p1", &["10.2.0.1"]),
        pod("prod", "p2", &["10.2.0.2", "fd00::2:2"]),
        pod("empty", "p3", &["10.2.0.1"]),
    ]
}

fn cfg() -> ClusterConfig {
    ClusterConfig {
        ttl: 7,
        loadbalance: false,
        pods: PodsMode::Verified,
        nameserver_ips: ips(&["10.96.0.10", "fd00::10"]),
        reverse_zones: vec![
            "10.in-addr.arpa".into(),
            "in-addr.arpa".into(),
            "ip6.arpa".into(),
        ],
        ..Default::default()
    }
}

fn snapshot(objs: Vec<Object>) -> Arc<Snapshot> {
    let c = cfg();
    let mut b = ZoneBuilder::new(&c, &required_kinds(&c));
    b.apply(ClusterEvent::ReplaceAll { objects: objs });
    b.publish().0
}

fn wire(name: &str) -> Vec<u8> {
    crate::wire::dotted_to_wire(name).unwrap()
}

fn zone(snap: &Snapshot, name: &str) -> TransferZone {
    TransferZone::of(snap, &wire(name)).unwrap()
}

/// Every record of `zone` (SOA included).
fn all(snap: &Snapshot, z: &TransferZone) -> Vec<Rr> {
    let mut v = vec![records::soa(snap, z, snap.serial)];
    records::each_batch(snap, z, &mut |b| v.append(b));
    v
}

/// Records as hickory writes them, lowercase, one string each, sorted.
fn texts(apex: &[u8], rrs: &[Rr]) -> Vec<String> {
    let mut m = vec![0, 0, 0x84, 0, 0, 0];
    m.extend_from_slice(&(rrs.len() as u16).to_be_bytes());
    m.extend_from_slice(&[0, 0, 0, 0]);
    for r in rrs {
        m.extend_from_slice(&r.owner);
        m.extend_from_slice(apex);
        m.extend_from_slice(&r.rtype.to_be_bytes());
        m.extend_from_slice(&[0, 1]);
        m.extend_from_slice(&r.ttl.to_be_bytes());
        m.extend_from_slice(&(r.rdata.len() as u16).to_be_bytes());
        m.extend_from_slice(&r.rdata);
    }
    let msg = Message::from_vec(&m).expect("generated records decode");
    let mut v: Vec<String> = msg
        .answers
        .iter()
        .map(|r| r.to_string().to_ascii_lowercase())
        .collect();
    v.sort();
    v
}

/// What the answer path says for `name`/`qtype`: the rcode, and the answer records at that
/// name of that type, as [`texts`] writes them.
fn asked(snap: &Snapshot, name: &str, qtype: u16) -> (u8, Vec<String>) {
    let q = Query::new(name, qtype).unwrap();
    let mut buf = Vec::new();
    let mut w = Writer::new(&mut buf, &q, 65535);
    let rcode = match answer(snap, &q, &mut w, false) {
        Outcome::Answered { rcode } => rcode,
        Outcome::Cname { .. } => 0,
        o => panic!("{name} {qtype}: {o:?}"),
    };
    w.finish(&q, rcode, true, false, 1232);
    let m = Message::from_vec(&buf).unwrap();
    let want = hickory_proto::rr::Name::from_ascii(name).unwrap();
    let mut v: Vec<String> = m
        .answers
        .iter()
        .filter(|r| r.name == want && u16::from(r.record_type()) == qtype)
        .map(|r| r.to_string().to_ascii_lowercase())
        .collect();
    v.sort();
    v.dedup();
    (rcode as u8, v)
}

const TYPES: [u16; 8] = [
    rtype::A,
    rtype::AAAA,
    rtype::SRV,
    rtype::CNAME,
    rtype::TXT,
    rtype::PTR,
    rtype::NS,
    rtype::SOA,
];

#[test]
fn every_record_is_what_the_answer_path_answers() {
    let snap = snapshot(objects());
    let mut checked = 0;
    for name in ["cluster.local.", "10.in-addr.arpa.", "ip6.arpa."] {
        let z = zone(&snap, name);
        let rrs = all(&snap, &z);
        let mut by_owner: BTreeMap<&[u8], Vec<Rr>> = BTreeMap::new();
        for r in &rrs {
            by_owner.entry(&r.owner).or_default().push(r.clone());
        }
        for (owner, recs) in &by_owner {
            let full = [*owner, &z.apex[..]].concat();
            let text = crate::wire::display_name(&full);
            for t in TYPES {
                let mine: Vec<Rr> = recs.iter().filter(|r| r.rtype == t).cloned().collect();
                let (rcode, got) = asked(&snap, &text, t);
                assert_ne!(rcode, 3, "{text} exists in the zone but answers NXDOMAIN");
                assert_eq!(texts(&z.apex, &mine), got, "{text} type {t}");
                checked += mine.len();
            }
        }
        assert_eq!(
            checked,
            rrs.len(),
            "{name}: every record is of a type asked"
        );
        checked = 0;
    }
}

#[test]
fn the_zone_holds_every_kind_of_record() {
    let snap = snapshot(objects());
    let z = zone(&snap, "cluster.local.");
    let t = texts(&z.apex, &all(&snap, &z));
    for want in [
        "cluster.local. 7 in soa ns.dns.cluster.local. hostmaster.cluster.local.",
        "cluster.local. 7 in ns ns.dns.cluster.local.",
        "ns.dns.cluster.local. 7 in a 10.96.0.10",
        "ns.dns.cluster.local. 7 in aaaa fd00::10",
        "dns-version.cluster.local. 28800 in txt 1.1.0",
        "web.prod.svc.cluster.local. 7 in a 10.96.1.1",
        "_http._tcp.web.prod.svc.cluster.local. 7 in srv 0 100 80 web.prod.svc.cluster.local.",
        "_alt._tcp.web.prod.svc.cluster.local. 7 in srv 0 50 81 web.prod.svc.cluster.local.",
        "web-0.web.prod.svc.cluster.local. 7 in a 10.1.0.1",
        "10-1-0-2.web.prod.svc.cluster.local. 7 in a 10.1.0.2",
        "dual.prod.svc.cluster.local. 7 in aaaa fd00::2",
        "shared.db.prod.svc.cluster.local. 7 in a 10.1.1.4",
        "fd00--1-5.db.prod.svc.cluster.local. 7 in aaaa fd00::1:5",
        "_repl._udp.db.prod.svc.cluster.local. 7 in srv",
        "ext.prod.svc.cluster.local. 7 in cname api.example.com.",
        "10-2-0-1.prod.pod.cluster.local. 7 in a 10.2.0.1",
        "10-2-0-1.empty.pod.cluster.local. 7 in a 10.2.0.1",
        "fd00--2-2.prod.pod.cluster.local. 7 in aaaa fd00::2:2",
    ] {
        assert!(
            t.iter().any(|r| r.starts_with(want)),
            "no {want:?} in {t:#?}"
        );
    }
    // Nothing under an ExternalName but its CNAME (the answer path says NXDOMAIN there).
    assert!(
        !t.iter()
            .any(|r| r.ends_with("ext.prod.svc.cluster.local. 7 in srv")
                || r.contains("._tcp.ext.prod")),
        "{t:#?}"
    );
    assert!(
        !t.iter().any(|r| r.contains("nothing.prod")),
        "a headless service without endpoints has no records"
    );
    let r = zone(&snap, "10.in-addr.arpa.");
    let t = texts(&r.apex, &all(&snap, &r));
    for want in [
        "10.in-addr.arpa. 7 in ns ns.dns.10.in-addr.arpa.",
        "1.1.96.10.in-addr.arpa. 7 in ptr web.prod.svc.cluster.local.",
        "2.1.1.10.in-addr.arpa. 7 in ptr db-1.db.prod.svc.cluster.local.",
        "2.1.1.10.in-addr.arpa. 7 in ptr twin.other.prod.svc.cluster.local.",
    ] {
        assert!(
            t.iter().any(|r| r.starts_with(want)),
            "no {want:?} in {t:#?}"
        );
    }
    // A ClusterIP names its service only, though it is another service's endpoint too.
    assert!(!t.iter().any(|r| r.contains("clash")));
}

/// A model of a secondary: apply the journal's steps from `from` to a set of records.
fn apply(mut have: BTreeSet<Rr>, steps: &[Arc<super::Step>], index: usize) -> BTreeSet<Rr> {
    for s in steps {
        let d = &s.zones[index];
        for r in &d.removed {
            assert!(
                have.remove(r),
                "step {}→{} removes {r:?}, which is not there",
                s.from,
                s.to
            );
        }
        for r in &d.added {
            assert!(
                have.insert(r.clone()),
                "step {}→{} adds {r:?}, which is there",
                s.from,
                s.to
            );
        }
    }
    have
}

fn without_soa(snap: &Snapshot, z: &TransferZone) -> BTreeSet<Rr> {
    all(snap, z)
        .into_iter()
        .filter(|r| r.rtype != rtype::SOA)
        .collect()
}

#[test]
fn journal_steps_turn_each_version_into_the_next() {
    let c = cfg();
    let mut b = ZoneBuilder::new(&c, &required_kinds(&c));
    b.apply(ClusterEvent::ReplaceAll { objects: objects() });
    let zones: Vec<String> = vec![
        "cluster.local".into(),
        "10.in-addr.arpa".into(),
        "ip6.arpa".into(),
    ];
    let j = Journal::new(
        &zones,
        JournalLimits {
            entries: 1000,
            bytes: 1 << 30,
        },
        Default::default(),
    );
    let mut versions = Vec::new();
    let first = b.publish().0;
    j.publish(&first);
    versions.push(first);
    let mut rng = 7u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for step in 0..60 {
        let n = next() % 40;
        let name = format!("s{n}");
        let ev = match next() % 5 {
            0 => ClusterEvent::Delete {
                key: ObjectKey {
                    kind: Kind::Service,
                    namespace: "prod".into(),
                    name: name.as_str().into(),
                },
            },
            1 => ClusterEvent::Apply {
                object: slice(
                    "prod",
                    &format!("{name}-1"),
                    &name,
                    &[
                        (&[&format!("10.3.{n}.{}", next() % 4)], None),
                        (&[&format!("fd00::3:{n}")], Some("h")),
                    ],
                    vec![port("p", 1000 + (next() % 3) as u16, Protocol::Tcp)],
                ),
                changed_at: None,
            },
            2 => ClusterEvent::Apply {
                object: service(
                    "prod",
                    &name,
                    ServiceKind::ExternalName(format!("t{}.example", next() % 3).into()),
                    vec![],
                ),
                changed_at: None,
            },
            3 => ClusterEvent::Apply {
                object: pod("prod", &name, &[&format!("10.4.0.{}", next() % 8)]),
                changed_at: None,
            },
            _ => ClusterEvent::Apply {
                object: service(
                    "prod",
                    &name,
                    ServiceKind::ClusterIp(ips(&[&format!("10.96.9.{}", next() % 50)])),
                    vec![port("web", 80, Protocol::Tcp)],
                ),
                changed_at: None,
            },
        };
        b.apply(ev);
        if step == 30 {
            // A change to the name server's addresses.
            b.apply(ClusterEvent::Apply {
                object: service(
                    "kube-system",
                    "kube-dns",
                    ServiceKind::ClusterIp(ips(&["10.96.0.11"])),
                    vec![],
                ),
                changed_at: None,
            });
        }
        if !b.has_changes() {
            continue;
        }
        let s = b.publish().0;
        j.publish(&s);
        versions.push(s);
    }
    let last = versions.last().unwrap().clone();
    for (i, name) in zones.iter().enumerate() {
        let z = zone(&last, &format!("{name}."));
        let want = without_soa(&last, &z);
        // From every version held, the steps lead to the current records.
        for v in &versions[..versions.len() - 1] {
            let plan = j.plan(Some(v.serial)).unwrap();
            let steps = plan.steps.expect("every version is in the journal");
            assert!(!steps.is_empty());
            let zv = zone(v, &format!("{name}."));
            assert_eq!(
                apply(without_soa(v, &zv), &steps, i),
                want,
                "{name} from {}",
                v.serial
            );
        }
        // Current or ahead: nothing to send; unknown: the whole zone.
        assert_eq!(
            j.plan(Some(last.serial)).unwrap().steps.map(|s| s.len()),
            Some(0)
        );
        assert_eq!(
            j.plan(Some(last.serial.wrapping_add(10)))
                .unwrap()
                .steps
                .map(|s| s.len()),
            Some(0)
        );
        assert!(
            j.plan(Some(last.serial.wrapping_sub(1 << 20)))
                .unwrap()
                .steps
                .is_none()
        );
    }
}

#[test]
fn the_journal_keeps_within_its_bounds() {
    let c = cfg();
    let mut b = ZoneBuilder::new(&c, &required_kinds(&c));
    b.apply(ClusterEvent::ReplaceAll { objects: objects() });
    let j = Journal::new(
        &["cluster.local".into()],
        JournalLimits {
            entries: 3,
            bytes: 1 << 30,
        },
        Default::default(),
    );
    let mut serials = Vec::new();
    for i in 0..6 {
        b.apply(ClusterEvent::Apply {
            object: service(
                "prod",
                &format!("n{i}"),
                ServiceKind::ClusterIp(ips(&["10.96.5.5"])),
                vec![],
            ),
            changed_at: None,
        });
        let s = b.publish().0;
        serials.push(s.serial);
        j.publish(&s);
    }
    // The oldest serials fell out: IXFR from them is the whole zone.
    assert!(j.plan(Some(serials[0])).unwrap().steps.is_none());
    assert!(j.plan(Some(serials[1])).unwrap().steps.is_none());
    assert_eq!(j.plan(Some(serials[2])).unwrap().steps.unwrap().len(), 3);
    // A byte bound smaller than one difference holds nothing.
    let tiny = Journal::new(
        &["cluster.local".into()],
        JournalLimits {
            entries: 100,
            bytes: 10,
        },
        Default::default(),
    );
    let s1 = b.publish().0;
    tiny.publish(&s1);
    b.apply(ClusterEvent::Apply {
        object: service(
            "prod",
            "late",
            ServiceKind::ClusterIp(ips(&["10.96.5.6"])),
            vec![],
        ),
        changed_at: None,
    });
    let s2 = b.publish().0;
    tiny.publish(&s2);
    assert!(tiny.plan(Some(s1.serial)).unwrap().steps.is_none());
}

/// In `pods: insecure` mode pod names are synthesised from the query for any address: they are
/// in no list, so the transferred zone holds none (docs/transfer.md says so); the rest stays.
#[test]
fn insecure_pod_names_are_not_transferred() {
    let c = ClusterConfig {
        pods: PodsMode::Insecure,
        ..cfg()
    };
    let mut b = ZoneBuilder::new(&c, &required_kinds(&c));
    b.apply(ClusterEvent::ReplaceAll { objects: objects() });
    let snap = b.publish().0;
    let z = zone(&snap, "cluster.local.");
    let t = texts(&z.apex, &all(&snap, &z));
    assert!(
        !t.iter().any(|r| r.contains(".pod.cluster.local.")),
        "{t:#?}"
    );
    assert!(
        t.iter()
            .any(|r| r.starts_with("web.prod.svc.cluster.local."))
    );
    // The answer path still answers them, synthesised.
    assert_eq!(asked(&snap, "10-2-0-1.prod.pod.cluster.local.", 1).0, 0);
}
