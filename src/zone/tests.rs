//! The specification as tests: CoreDNS's `plugin/kubernetes` handler tables (handler_test.go,
//! handler_case_test.go, handler_pod_*_test.go, kubernetes_apex_test.go) ported as facts, plus
//! the corners they do not cover. Replies are decoded with hickory-proto, the reference.

use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::op::{Message, ResponseCode};

use super::answer::{Outcome, answer};
use super::build::{ZoneBuilder, required_kinds};
use super::snapshot::Snapshot;
use crate::cluster::ClusterEvent;
use crate::cluster::objects::*;
use crate::config::{ClusterConfig, PodsMode};
use crate::wire::{Query, Writer, rtype};

// ---- builder-style fixtures ------------------------------------------------------------

pub(super) fn svc(ns: &str, name: &str) -> ServiceInfo {
    ServiceInfo {
        namespace: ns.into(),
        name: name.into(),
        kind: ServiceKind::Headless,
        ports: vec![],
        publish_not_ready: false,
        labels: Default::default(),
        external: vec![],
    }
}

trait SvcExt {
    fn ips(self, ips: &[&str]) -> Self;
    fn port(self, name: &str, port: u16, proto: Protocol) -> Self;
    fn external(self, target: &str) -> Self;
}

impl SvcExt for ServiceInfo {
    fn ips(mut self, ips: &[&str]) -> Self {
        self.kind = ServiceKind::ClusterIp(ips.iter().map(|i| i.parse().unwrap()).collect());
        self
    }
    fn port(mut self, name: &str, port: u16, protocol: Protocol) -> Self {
        self.ports.push(Port {
            name: name.into(),
            protocol,
            port,
        });
        self
    }
    fn external(mut self, target: &str) -> Self {
        self.kind = ServiceKind::ExternalName(target.trim_end_matches('.').into());
        self
    }
}

fn slice(
    ns: &str,
    svc: &str,
    eps: &[(&str, Option<&str>, bool)],
    ports: &[(&str, u16)],
) -> SliceInfo {
    SliceInfo {
        namespace: ns.into(),
        name: format!("{svc}-slice1").into(),
        service: Some(svc.into()),
        endpoints: eps
            .iter()
            .map(|(ip, host, ready)| EndpointInfo {
                addresses: vec![ip.parse().unwrap()],
                ready: *ready,
                hostname: host.map(|h| h.into()),
                pod_name: None,
            })
            .collect(),
        ports: ports
            .iter()
            .map(|(n, p)| Port {
                name: (*n).into(),
                protocol: Protocol::Tcp,
                port: *p,
            })
            .collect(),
    }
}

fn ns(name: &str) -> Object {
    Object::Namespace(NamespaceInfo {
        name: name.into(),
        labels: Default::default(),
    })
}

/// The objects of CoreDNS's handler_test.go.
pub(super) fn coredns_objects() -> Vec<Object> {
    use Protocol::Tcp;
    let mut v = vec![ns("testns"), ns("kube-system"), ns("podns")];
    let svcs = vec![
        svc("kube-system", "kubedns")
            .ips(&["10.0.0.10"])
            .port("dns", 53, Protocol::Udp),
        svc("testns", "svc1")
            .ips(&["10.0.0.1"])
            .port("http", 80, Tcp),
        svc("testns", "svcempty")
            .ips(&["10.0.0.1"])
            .port("http", 80, Tcp),
        svc("testns", "svc6")
            .ips(&["1234:abcd::1"])
            .port("http", 80, Tcp),
        svc("testns", "hdls1"),
        svc("testns", "external")
            .external("ext.interwebs.test")
            .port("http", 80, Tcp),
        svc("testns", "external-to-service")
            .external("svc1.testns.svc.cluster.local.")
            .port("http", 80, Tcp),
        svc("testns", "hdlsprtls"),
        svc("unexposedns", "svc1")
            .ips(&["10.0.0.2"])
            .port("http", 80, Tcp),
        svc("testns", "svc-dual-stack")
            .ips(&["10.0.0.3", "10::3"])
            .port("http", 80, Tcp),
    ];
    v.extend(svcs.into_iter().map(Object::Service));
    let slices = vec![
        slice(
            "kube-system",
            "kubedns",
            &[("172.0.0.100", None, true)],
            &[("dns", 53)],
        ),
        slice(
            "testns",
            "svc1",
            &[("172.0.0.1", Some("ep1a"), true)],
            &[("http", 80)],
        ),
        slice("testns", "svcempty", &[], &[("http", 80)]),
        slice(
            "testns",
            "hdls1",
            &[
                ("172.0.0.2", None, true),
                ("172.0.0.3", None, true),
                ("172.0.0.4", Some("dup-name"), true),
                ("172.0.0.5", Some("dup-name"), true),
                ("5678:abcd::1", None, true),
                ("5678:abcd::2", None, true),
            ],
            &[("http", 80)],
        ),
        slice("testns", "hdlsprtls", &[("172.0.0.20", None, true)], &[]),
    ];
    v.extend(slices.into_iter().map(Object::Slice));
    v
}

fn cfg() -> ClusterConfig {
    ClusterConfig {
        ttl: 5,
        loadbalance: false,
        nameserver_ips: vec!["127.0.0.1".parse().unwrap()],
        ..Default::default()
    }
}

pub(super) fn snapshot_with(cfg: &ClusterConfig, objects: Vec<Object>) -> Arc<Snapshot> {
    let mut b = ZoneBuilder::new(cfg, &required_kinds(cfg));
    b.apply(ClusterEvent::ReplaceAll { objects });
    b.publish().0
}

/// Ask the snapshot one question; the reply decoded by hickory.
pub(super) fn ask(snap: &Snapshot, name: &str, qtype: u16) -> Message {
    ask_sized(snap, name, qtype, 65535).0
}

fn ask_sized(snap: &Snapshot, name: &str, qtype: u16, max: usize) -> (Message, usize) {
    let q = Query::new(name, qtype).unwrap();
    let mut buf = Vec::new();
    let mut w = Writer::new(&mut buf, &q, max);
    let rcode = match answer(snap, &q, &mut w, true) {
        Outcome::Answered { rcode } => rcode,
        Outcome::Cname { .. } => 0,
        o => panic!("{name}: not answered: {o:?}"),
    };
    w.finish(&q, rcode, true, false, 1232);
    let len = buf.len();
    (
        Message::from_vec(&buf).unwrap_or_else(|e| panic!("{name}: undecodable reply: {e}")),
        len,
    )
}

fn strs(rs: &[hickory_proto::rr::Record]) -> Vec<String> {
    let mut v: Vec<String> = rs
        .iter()
        .map(|r| {
            r.to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    v.sort();
    v
}

fn norm(v: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = v
        .iter()
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    v.sort();
    v
}

/// One row of a table: question, rcode, and the sections (records as text, any order).
struct Case {
    q: &'static str,
    t: u16,
    rcode: ResponseCode,
    answer: &'static [&'static str],
    ns: &'static [&'static str],
    extra: &'static [&'static str],
}

const SOA: &str = "cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. SERIAL 7200 1800 86400 5";

fn check(snap: &Snapshot, cases: &[Case]) {
    for c in cases {
        let m = ask(snap, c.q, c.t);
        let ctx = format!("{} {}", c.q, c.t);
        assert_eq!(m.metadata.response_code, c.rcode, "{ctx}: rcode");
        assert!(m.metadata.authoritative, "{ctx}: AA");
        let serial = snap.serial.to_string();
        let ans: Vec<String> = norm(c.answer)
            .into_iter()
            .map(|s| s.replace("SERIAL", &serial))
            .collect();
        assert_eq!(strs(&m.answers), ans, "{ctx}: answer");
        let ns: Vec<String> = norm(c.ns)
            .into_iter()
            .map(|s| s.replace("SERIAL", &serial))
            .collect();
        assert_eq!(strs(&m.authorities), ns, "{ctx}: authority");
        assert_eq!(strs(&m.additionals), norm(c.extra), "{ctx}: additional");
    }
}

use ResponseCode::{NXDomain as NX, NoError as OK};

#[test]
fn coredns_handler_cases() {
    let snap = snapshot_with(&cfg(), coredns_objects());
    check(
        &snap,
        &[
            Case {
                q: "svc1.testns.svc.cluster.local.",
                t: rtype::A,
                rcode: OK,
                answer: &["svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1"],
                ns: &[],
                extra: &[],
            },
            Case {
                q: "svcempty.testns.svc.cluster.local.",
                t: rtype::A,
                rcode: OK,
                answer: &["svcempty.testns.svc.cluster.local. 5 IN A 10.0.0.1"],
                ns: &[],
                extra: &[],
            },
            Case {
                q: "svc1.testns.svc.cluster.local.",
                t: rtype::SRV,
                rcode: OK,
                answer: &[
                    "svc1.testns.svc.cluster.local. 5 IN SRV 0 100 80 svc1.testns.svc.cluster.local.",
                ],
                ns: &[],
                extra: &["svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1"],
            },
            Case {
                q: "svc6.testns.svc.cluster.local.",
                t: rtype::SRV,
                rcode: OK,
                answer: &[
                    "svc6.testns.svc.cluster.local. 5 IN SRV 0 100 80 svc6.testns.svc.cluster.local.",
                ],
                ns: &[],
                extra: &["svc6.testns.svc.cluster.local. 5 IN AAAA 1234:abcd::1"],
            },
            Case {
                q: "_http._tcp.svc1.testns.svc.cluster.local.",
                t: rtype::SRV,
                rcode: OK,
                answer: &[
                    "_http._tcp.svc1.testns.svc.cluster.local. 5 IN SRV 0 100 80 svc1.testns.svc.cluster.local.",
                ],
                ns: &[],
                extra: &["svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1"],
            },
            Case {
                q: "hdls1.testns.svc.cluster.local.",
                t: rtype::A,
                rcode: OK,
                answer: &[
                    "hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.2",
                    "hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.3",
                    "hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.4",
                    "hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.5",
                ],
                ns: &[],
                extra: &[],
            },
            Case {
                q: "hdlsprtls.testns.svc.cluster.local.",
                t: rtype::A,
                rcode: OK,
                answer: &["hdlsprtls.testns.svc.cluster.local. 5 IN A 172.0.0.20"],
                ns: &[],
                extra: &[],
            },
            // NODATA: the name exists with A only
            Case {
                q: "svc1.testns.svc.cluster.local.",
                t: rtype::AAAA,
                rcode: OK,
                answer: &[],
                ns: &[SOA],
                extra: &[],
            },
            Case {
                q: "svc0.testns.svc.cluster.local.",
                t: rtype::AAAA,
                rcode: NX,
                answer: &[],
                ns: &[SOA],
                extra: &[],
            },
            Case {
                q: "svc0.testns.svc.cluster.local.",
                t: rtype::A,
                rcode: NX,
                answer: &[],
                ns: &[SOA],
                extra: &[],
            },
            Case {
                q: "svc0.svc-nons.svc.cluster.local.",
                t: rtype::A,
                rcode: NX,
                answer: &[],
                ns: &[SOA],
                extra: &[],
            },
            Case {
                q: "dns-version.cluster.local.",
                t: rtype::TXT,
                rcode: OK,
                answer: &["dns-version.cluster.local. 28800 IN TXT 1.1.0"],
                ns: &[],
                extra: &[],
            },
            Case {
                q: "svc1.testns.svc.cluster.local.",
                t: rtype::TXT,
                rcode: OK,
                answer: &[],
                ns: &[SOA],
                extra: &[],
            },
            Case {
                q: "svc0.svc-nons.svc.cluster.local.",
                t: rtype::TXT,
                rcode: NX,
                answer: &[],
                ns: &[SOA],
                extra: &[],
            },
            Case {
                q: "bogusendpoint.hdls1.testns.svc.cluster.local.",
                t: rtype::A,
                rcode: NX,
                answer: &[],
                ns: &[SOA],
                extra: &[],
            },
            Case {
                q: "bogusendpoint.svc0.testns.svc.cluster.local.",
                t: rtype::A,
                rcode: NX,
                answer: &[],
                ns: &[SOA],
                extra: &[],
            },
            Case {
                q: "svc6.testns.svc.cluster.local.",
                t: rtype::AAAA,
                rcode: OK,
                answer: &["svc6.testns.svc.cluster.local. 5 IN AAAA 1234:abcd::1"],
                ns: &[],
                extra: &[],
            },
            Case {
                q: "hdls1.testns.svc.cluster.local.",
                t: rtype::AAAA,
                rcode: OK,
                answer: &[
                    "hdls1.testns.svc.cluster.local. 5 IN AAAA 5678:abcd::1",
                    "hdls1.testns.svc.cluster.local. 5 IN AAAA 5678:abcd::2",
                ],
                ns: &[],
                extra: &[],
            },
            // empty non-terminals
            Case {
                q: "svc.cluster.local.",
                t: rtype::A,
                rcode: OK,
                answer: &[],
                ns: &[SOA],
                extra: &[],
            },
            Case {
                q: "pod.cluster.local.",
                t: rtype::A,
                rcode: OK,
                answer: &[],
                ns: &[SOA],
                extra: &[],
            },
            Case {
                q: "testns.svc.cluster.local.",
                t: rtype::A,
                rcode: OK,
                answer: &[],
                ns: &[SOA],
                extra: &[],
            },
            Case {
                q: "svc.cluster.local.",
                t: rtype::NS,
                rcode: OK,
                answer: &[],
                ns: &[SOA],
                extra: &[],
            },
            Case {
                q: "testns.svc.cluster.local.",
                t: rtype::NS,
                rcode: OK,
                answer: &[],
                ns: &[SOA],
                extra: &[],
            },
            Case {
                q: "foo.cluster.local.",
                t: rtype::NS,
                rcode: NX,
                answer: &[],
                ns: &[SOA],
                extra: &[],
            },
            Case {
                q: "foo.svc.cluster.local.",
                t: rtype::NS,
                rcode: NX,
                answer: &[],
                ns: &[SOA],
                extra: &[],
            },
            // dual stack
            Case {
                q: "svc-dual-stack.testns.svc.cluster.local.",
                t: rtype::A,
                rcode: OK,
                answer: &["svc-dual-stack.testns.svc.cluster.local. 5 IN A 10.0.0.3"],
                ns: &[],
                extra: &[],
            },
            Case {
                q: "svc-dual-stack.testns.svc.cluster.local.",
                t: rtype::AAAA,
                rcode: OK,
                answer: &["svc-dual-stack.testns.svc.cluster.local. 5 IN AAAA 10::3"],
                ns: &[],
                extra: &[],
            },
            Case {
                q: "svc-dual-stack.testns.svc.cluster.local.",
                t: rtype::SRV,
                rcode: OK,
                answer: &[
                    "svc-dual-stack.testns.svc.cluster.local. 5 IN SRV 0 50 80 svc-dual-stack.testns.svc.cluster.local.",
                ],
                ns: &[],
                extra: &[
                    "svc-dual-stack.testns.svc.cluster.local. 5 IN A 10.0.0.3",
                    "svc-dual-stack.testns.svc.cluster.local. 5 IN AAAA 10::3",
                ],
            },
            Case {
                q: "svc1.testns.svc.cluster.local.",
                t: rtype::SOA,
                rcode: OK,
                answer: &[],
                ns: &[SOA],
                extra: &[],
            },
            Case {
                q: "endpoint.external.testns.svc.cluster.local.",
                t: rtype::CNAME,
                rcode: NX,
                answer: &[],
                ns: &[SOA],
                extra: &[],
            },
            Case {
                q: "subdomain.subdomain.external.testns.svc.cluster.local.",
                t: rtype::CNAME,
                rcode: NX,
                answer: &[],
                ns: &[SOA],
                extra: &[],
            },
            // headless SRV: one record per (target, port), weight from 6 addresses
            Case {
                q: "_http._tcp.hdls1.testns.svc.cluster.local.",
                t: rtype::SRV,
                rcode: OK,
                answer: &[
                    "_http._tcp.hdls1.testns.svc.cluster.local. 5 IN SRV 0 16 80 172-0-0-2.hdls1.testns.svc.cluster.local.",
                    "_http._tcp.hdls1.testns.svc.cluster.local. 5 IN SRV 0 16 80 172-0-0-3.hdls1.testns.svc.cluster.local.",
                    "_http._tcp.hdls1.testns.svc.cluster.local. 5 IN SRV 0 16 80 5678-abcd--1.hdls1.testns.svc.cluster.local.",
                    "_http._tcp.hdls1.testns.svc.cluster.local. 5 IN SRV 0 16 80 5678-abcd--2.hdls1.testns.svc.cluster.local.",
                    "_http._tcp.hdls1.testns.svc.cluster.local. 5 IN SRV 0 16 80 dup-name.hdls1.testns.svc.cluster.local.",
                ],
                ns: &[],
                extra: &[
                    "172-0-0-2.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.2",
                    "172-0-0-3.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.3",
                    "5678-abcd--1.hdls1.testns.svc.cluster.local. 5 IN AAAA 5678:abcd::1",
                    "5678-abcd--2.hdls1.testns.svc.cluster.local. 5 IN AAAA 5678:abcd::2",
                    "dup-name.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.4",
                    "dup-name.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.5",
                ],
            },
            Case {
                q: "5678-abcd--2.hdls1.testns.svc.cluster.local",
                t: rtype::AAAA,
                rcode: OK,
                answer: &["5678-abcd--2.hdls1.testns.svc.cluster.local. 5 IN AAAA 5678:abcd::2"],
                ns: &[],
                extra: &[],
            },
            Case {
                q: "172-0-0-20.hdlsprtls.testns.svc.cluster.local.",
                t: rtype::A,
                rcode: OK,
                answer: &["172-0-0-20.hdlsprtls.testns.svc.cluster.local. 5 IN A 172.0.0.20"],
                ns: &[],
                extra: &[],
            },
            Case {
                q: "172-0-0-2.hdls1.testns.svc.cluster.local.",
                t: rtype::A,
                rcode: OK,
                answer: &["172-0-0-2.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.2"],
                ns: &[],
                extra: &[],
            },
            Case {
                q: "dup-name.hdls1.testns.svc.cluster.local.",
                t: rtype::A,
                rcode: OK,
                answer: &[
                    "dup-name.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.4",
                    "dup-name.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.5",
                ],
                ns: &[],
                extra: &[],
            },
            Case {
                q: "external.testns.svc.cluster.local.",
                t: rtype::CNAME,
                rcode: OK,
                answer: &["external.testns.svc.cluster.local. 5 IN CNAME ext.interwebs.test."],
                ns: &[],
                extra: &[],
            },
            // an endpoint of a ClusterIP service has a name too (CoreDNS)
            Case {
                q: "ep1a.svc1.testns.svc.cluster.local.",
                t: rtype::A,
                rcode: OK,
                answer: &["ep1a.svc1.testns.svc.cluster.local. 5 IN A 172.0.0.1"],
                ns: &[],
                extra: &[],
            },
            // _proto is an empty non-terminal above the SRV owner (RFC 8020: not NXDOMAIN)
            Case {
                q: "_tcp.svc1.testns.svc.cluster.local.",
                t: rtype::SRV,
                rcode: OK,
                answer: &[],
                ns: &[SOA],
                extra: &[],
            },
            Case {
                q: "_udp.svc1.testns.svc.cluster.local.",
                t: rtype::SRV,
                rcode: NX,
                answer: &[],
                ns: &[SOA],
                extra: &[],
            },
            Case {
                q: "_https._tcp.svc1.testns.svc.cluster.local.",
                t: rtype::SRV,
                rcode: NX,
                answer: &[],
                ns: &[SOA],
                extra: &[],
            },
            Case {
                q: "_http._tcp.svc1.testns.svc.cluster.local.",
                t: rtype::A,
                rcode: OK,
                answer: &[],
                ns: &[SOA],
                extra: &[],
            },
        ],
    );
}

#[test]
fn apex_cases() {
    let snap = snapshot_with(&cfg(), coredns_objects());
    check(
        &snap,
        &[
            Case {
                q: "cluster.local.",
                t: rtype::SOA,
                rcode: OK,
                answer: &[SOA],
                ns: &[],
                extra: &[],
            },
            Case {
                q: "cluster.local.",
                t: rtype::HINFO,
                rcode: OK,
                answer: &[],
                ns: &[SOA],
                extra: &[],
            },
            Case {
                q: "cluster.local.",
                t: rtype::NS,
                rcode: OK,
                answer: &["cluster.local. 5 IN NS ns.dns.cluster.local."],
                ns: &[],
                extra: &["ns.dns.cluster.local. 5 IN A 127.0.0.1"],
            },
            Case {
                q: "cluster.local.",
                t: rtype::A,
                rcode: OK,
                answer: &[],
                ns: &[SOA],
                extra: &[],
            },
            Case {
                q: "cluster.local.",
                t: rtype::AAAA,
                rcode: OK,
                answer: &[],
                ns: &[SOA],
                extra: &[],
            },
            Case {
                q: "cluster.local.",
                t: rtype::SRV,
                rcode: OK,
                answer: &[],
                ns: &[SOA],
                extra: &[],
            },
            Case {
                q: "ns.dns.cluster.local.",
                t: rtype::A,
                rcode: OK,
                answer: &["ns.dns.cluster.local. 5 IN A 127.0.0.1"],
                ns: &[],
                extra: &[],
            },
            Case {
                q: "dns.cluster.local.",
                t: rtype::A,
                rcode: OK,
                answer: &[],
                ns: &[SOA],
                extra: &[],
            },
        ],
    );
}

#[test]
fn case_is_preserved() {
    let snap = snapshot_with(&cfg(), coredns_objects());
    let m = ask(&snap, "not-a-service.testns.svc.ClUsTeR.lOcAl.", rtype::A);
    assert_eq!(m.metadata.response_code, NX);
    let soa = m.authorities[0].to_string();
    assert!(
        soa.starts_with("ClUsTeR.lOcAl. 5 IN SOA ns.dns.ClUsTeR.lOcAl. hostmaster.ClUsTeR.lOcAl."),
        "{soa}"
    );
    let m = ask(&snap, "SvC1.TeStNs.SvC.cLuStEr.LoCaL.", rtype::A);
    assert_eq!(
        m.answers[0].to_string(),
        "SvC1.TeStNs.SvC.cLuStEr.LoCaL. 5 IN A 10.0.0.1"
    );
    assert_eq!(
        m.queries[0].name().to_string(),
        "SvC1.TeStNs.SvC.cLuStEr.LoCaL."
    );
    let m = ask(
        &snap,
        "_HtTp._TcP.sVc1.TeStNs.SvC.cLuStEr.LoCaL.",
        rtype::SRV,
    );
    assert_eq!(
        m.answers[0].to_string(),
        "_HtTp._TcP.sVc1.TeStNs.SvC.cLuStEr.LoCaL. 5 IN SRV 0 100 80 svc1.testns.svc.cLuStEr.LoCaL."
    );
    assert_eq!(
        m.additionals[0].to_string(),
        "svc1.testns.svc.cLuStEr.LoCaL. 5 IN A 10.0.0.1"
    );
    let m = ask(&snap, "Cluster.local.", rtype::SOA);
    assert!(
        m.answers[0]
            .to_string()
            .starts_with("Cluster.local. 5 IN SOA ns.dns.Cluster.local. hostmaster.Cluster.local.")
    );
}

#[test]
fn pods_modes() {
    let mut objs = coredns_objects();
    objs.push(Object::Pod(PodInfo {
        namespace: "podns".into(),
        name: "foo".into(),
        ips: vec!["10.240.0.1".parse().unwrap()],
        host_network: false,
    }));
    let mut c = cfg();
    c.pods = PodsMode::Disabled;
    let snap = snapshot_with(&c, objs.clone());
    check(
        &snap,
        &[
            Case {
                q: "10-240-0-1.podns.pod.cluster.local.",
                t: rtype::A,
                rcode: NX,
                answer: &[],
                ns: &[SOA],
                extra: &[],
            },
            Case {
                q: "172-0-0-2.podns.pod.cluster.local.",
                t: rtype::A,
                rcode: NX,
                answer: &[],
                ns: &[SOA],
                extra: &[],
            },
        ],
    );
    c.pods = PodsMode::Insecure;
    let snap = snapshot_with(&c, objs.clone());
    check(
        &snap,
        &[
            Case {
                q: "10-240-0-1.podns.pod.cluster.local.",
                t: rtype::A,
                rcode: OK,
                answer: &["10-240-0-1.podns.pod.cluster.local. 5 IN A 10.240.0.1"],
                ns: &[],
                extra: &[],
            },
            Case {
                q: "172-0-0-2.podns.pod.cluster.local.",
                t: rtype::A,
                rcode: OK,
                answer: &["172-0-0-2.podns.pod.cluster.local. 5 IN A 172.0.0.2"],
                ns: &[],
                extra: &[],
            },
            Case {
                q: "blah.podns.pod.cluster.local.",
                t: rtype::A,
                rcode: NX,
                answer: &[],
                ns: &[SOA],
                extra: &[],
            },
            Case {
                q: "blah.podns.pod.cluster.local.",
                t: rtype::AAAA,
                rcode: NX,
                answer: &[],
                ns: &[SOA],
                extra: &[],
            },
            Case {
                q: "blah.podns.pod.cluster.local.",
                t: rtype::HINFO,
                rcode: NX,
                answer: &[],
                ns: &[SOA],
                extra: &[],
            },
            Case {
                q: "blah.pod-nons.pod.cluster.local.",
                t: rtype::A,
                rcode: NX,
                answer: &[],
                ns: &[SOA],
                extra: &[],
            },
            Case {
                q: "podns.pod.cluster.local.",
                t: rtype::A,
                rcode: OK,
                answer: &[],
                ns: &[SOA],
                extra: &[],
            },
            Case {
                q: "fd00--1.podns.pod.cluster.local.",
                t: rtype::AAAA,
                rcode: OK,
                answer: &["fd00--1.podns.pod.cluster.local. 5 IN AAAA fd00::1"],
                ns: &[],
                extra: &[],
            },
            Case {
                q: "10-240-0-1.podns.pod.cluster.local.",
                t: rtype::AAAA,
                rcode: OK,
                answer: &[],
                ns: &[SOA],
                extra: &[],
            },
        ],
    );
    c.pods = PodsMode::Verified;
    let snap = snapshot_with(&c, objs);
    check(
        &snap,
        &[
            Case {
                q: "10-240-0-1.podns.pod.cluster.local.",
                t: rtype::A,
                rcode: OK,
                answer: &["10-240-0-1.podns.pod.cluster.local. 5 IN A 10.240.0.1"],
                ns: &[],
                extra: &[],
            },
            Case {
                q: "podns.pod.cluster.local.",
                t: rtype::A,
                rcode: OK,
                answer: &[],
                ns: &[SOA],
                extra: &[],
            },
            Case {
                q: "testns.svc.cluster.local.",
                t: rtype::A,
                rcode: OK,
                answer: &[],
                ns: &[SOA],
                extra: &[],
            },
            Case {
                q: "pod-nons.pod.cluster.local.",
                t: rtype::A,
                rcode: NX,
                answer: &[],
                ns: &[SOA],
                extra: &[],
            },
            Case {
                q: "172-0-0-2.podns.pod.cluster.local.",
                t: rtype::A,
                rcode: NX,
                answer: &[],
                ns: &[SOA],
                extra: &[],
            },
        ],
    );
}

#[test]
fn ignore_empty_service() {
    let mut c = cfg();
    c.ignore_empty_service = true;
    let snap = snapshot_with(&c, coredns_objects());
    check(
        &snap,
        &[
            Case {
                q: "svcempty.testns.svc.cluster.local.",
                t: rtype::A,
                rcode: NX,
                answer: &[],
                ns: &[SOA],
                extra: &[],
            },
            Case {
                q: "external.testns.svc.cluster.local.",
                t: rtype::CNAME,
                rcode: OK,
                answer: &["external.testns.svc.cluster.local. 5 IN CNAME ext.interwebs.test."],
                ns: &[],
                extra: &[],
            },
            Case {
                q: "svc1.testns.svc.cluster.local.",
                t: rtype::A,
                rcode: OK,
                answer: &["svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1"],
                ns: &[],
                extra: &[],
            },
        ],
    );
}

#[test]
fn reverse_names() {
    let snap = snapshot_with(&cfg(), coredns_objects());
    let ptr = |q: &str| {
        let m = ask(&snap, q, rtype::PTR);
        (m.metadata.response_code, strs(&m.answers))
    };
    assert_eq!(
        ptr("1.0.0.10.in-addr.arpa."),
        (
            OK,
            norm(&["1.0.0.10.in-addr.arpa. 5 IN PTR svc1.testns.svc.cluster.local."])
        )
    );
    assert_eq!(
        ptr("2.0.0.172.in-addr.arpa."),
        (
            OK,
            norm(&["2.0.0.172.in-addr.arpa. 5 IN PTR 172-0-0-2.hdls1.testns.svc.cluster.local."])
        )
    );
    assert_eq!(
        ptr("4.0.0.172.in-addr.arpa."),
        (
            OK,
            norm(&["4.0.0.172.in-addr.arpa. 5 IN PTR dup-name.hdls1.testns.svc.cluster.local."])
        )
    );
    let v6 = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.c.b.a.4.3.2.1.ip6.arpa.";
    assert_eq!(
        ptr(v6),
        (
            OK,
            norm(&[&format!("{v6} 5 IN PTR svc6.testns.svc.cluster.local.")])
        )
    );
    // an address the cluster does not know: not answered here; it falls through to forwarding
    let q = Query::new("9.9.9.9.in-addr.arpa.", rtype::PTR).unwrap();
    let mut buf = Vec::new();
    let mut w = Writer::new(&mut buf, &q, 512);
    assert_eq!(answer(&snap, &q, &mut w, true), Outcome::Fallthrough);
    // without fallthrough: NXDOMAIN with the reverse zone's SOA
    let mut c = cfg();
    c.fallthrough.clear();
    let snap = snapshot_with(&c, coredns_objects());
    let m = ask(&snap, "9.9.9.9.in-addr.arpa.", rtype::PTR);
    assert_eq!(m.metadata.response_code, NX);
    assert!(
        m.authorities[0]
            .to_string()
            .starts_with("in-addr.arpa. 5 IN SOA ns.dns.in-addr.arpa.")
    );
    // A for a reverse name that exists: NODATA
    let m = ask(&snap, "1.0.0.10.in-addr.arpa.", rtype::A);
    assert_eq!(
        (
            m.metadata.response_code,
            m.answers.len(),
            m.authorities.len()
        ),
        (OK, 0, 1)
    );
}

#[test]
fn outside_the_zone_is_not_ours() {
    let snap = snapshot_with(&cfg(), coredns_objects());
    for name in ["example.com.", "local.", "xcluster.local.", "."] {
        let q = Query::new(name, rtype::A).unwrap();
        let mut buf = Vec::new();
        let mut w = Writer::new(&mut buf, &q, 512);
        assert_eq!(answer(&snap, &q, &mut w, true), Outcome::NotOurs, "{name}");
    }
}

#[test]
fn servfail_until_synced() {
    let c = cfg();
    let mut b = ZoneBuilder::new(&c, &required_kinds(&c));
    b.apply(ClusterEvent::Relist {
        kind: Kind::Service,
        objects: coredns_objects()
            .into_iter()
            .filter(|o| matches!(o, Object::Service(_)))
            .collect(),
    });
    let (snap, _) = b.publish();
    assert!(!snap.synced);
    assert_eq!(
        ask(&snap, "svc0.testns.svc.cluster.local.", rtype::A)
            .metadata
            .response_code,
        ResponseCode::ServFail
    );
    // known names answer
    assert_eq!(
        ask(&snap, "svc1.testns.svc.cluster.local.", rtype::A)
            .answers
            .len(),
        1
    );
    b.apply(ClusterEvent::Relist {
        kind: Kind::Namespace,
        objects: vec![],
    });
    b.apply(ClusterEvent::Relist {
        kind: Kind::EndpointSlice,
        objects: vec![],
    });
    let (snap, _) = b.publish();
    assert!(snap.synced);
    assert_eq!(
        ask(&snap, "svc0.testns.svc.cluster.local.", rtype::A)
            .metadata
            .response_code,
        NX
    );
}

#[test]
fn not_ready_endpoints_and_publish_not_ready() {
    let c = cfg();
    let mut objs = vec![ns("web")];
    let mut s = svc("web", "db").port("pg", 5432, Protocol::Tcp);
    objs.push(Object::Service(s.clone()));
    objs.push(Object::Slice(slice(
        "web",
        "db",
        &[
            ("10.1.0.1", Some("db-0"), true),
            ("10.1.0.2", Some("db-1"), false),
        ],
        &[("pg", 5432)],
    )));
    let snap = snapshot_with(&c, objs.clone());
    assert_eq!(
        strs(&ask(&snap, "db.web.svc.cluster.local.", rtype::A).answers),
        norm(&["db.web.svc.cluster.local. 5 IN A 10.1.0.1"])
    );
    assert_eq!(
        ask(&snap, "db-1.db.web.svc.cluster.local.", rtype::A)
            .metadata
            .response_code,
        NX
    );
    s.publish_not_ready = true;
    objs[1] = Object::Service(s);
    let snap = snapshot_with(&c, objs);
    assert_eq!(
        ask(&snap, "db.web.svc.cluster.local.", rtype::A)
            .answers
            .len(),
        2
    );
    assert_eq!(
        ask(&snap, "db-1.db.web.svc.cluster.local.", rtype::A)
            .answers
            .len(),
        1
    );
    // a headless service with no endpoints at all has no name
    let snap = snapshot_with(&c, vec![ns("web"), Object::Service(svc("web", "lonely"))]);
    assert_eq!(
        ask(&snap, "lonely.web.svc.cluster.local.", rtype::A)
            .metadata
            .response_code,
        NX
    );
}

#[test]
fn truncation_keeps_whole_records_and_sets_tc() {
    let c = cfg();
    let eps: Vec<(String, Option<&str>, bool)> = (1..=60)
        .map(|i| (format!("10.2.0.{i}"), None, true))
        .collect();
    let eps_ref: Vec<(&str, Option<&str>, bool)> =
        eps.iter().map(|(a, h, r)| (a.as_str(), *h, *r)).collect();
    let objs = vec![
        ns("big"),
        Object::Service(svc("big", "many")),
        Object::Slice(slice("big", "many", &eps_ref, &[("http", 80)])),
    ];
    let snap = snapshot_with(&c, objs);
    let (m, len) = ask_sized(&snap, "many.big.svc.cluster.local.", rtype::A, 512);
    assert!(m.metadata.truncation, "TC set");
    assert!(len <= 512, "{len}");
    assert!(!m.answers.is_empty() && m.answers.len() < 60);
    let (m, _) = ask_sized(&snap, "many.big.svc.cluster.local.", rtype::A, 65535);
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 60);
    // SRV whose additional section does not fit: answers complete, extras dropped, no TC
    let (m, len) = ask_sized(
        &snap,
        "_http._tcp.many.big.svc.cluster.local.",
        rtype::SRV,
        4096,
    );
    assert!(len <= 4096);
    assert_eq!(m.answers.len(), 60);
    assert!(!m.metadata.truncation);
}

#[test]
fn loadbalance_rotates_without_changing_the_set() {
    let mut c = cfg();
    c.loadbalance = true;
    let snap = snapshot_with(&c, coredns_objects());
    let mut firsts = std::collections::HashSet::new();
    for _ in 0..8 {
        let m = ask(&snap, "hdls1.testns.svc.cluster.local.", rtype::A);
        assert_eq!(m.answers.len(), 4);
        firsts.insert(m.answers[0].to_string());
        let mut all = strs(&m.answers);
        all.sort();
        assert_eq!(all.len(), 4);
    }
    assert_eq!(firsts.len(), 4, "every record leads in turn");
}

#[test]
fn incremental_changes_touch_only_their_service() {
    let c = cfg();
    let mut b = ZoneBuilder::new(&c, &required_kinds(&c));
    b.apply(ClusterEvent::ReplaceAll {
        objects: coredns_objects(),
    });
    let (s1, _) = b.publish();
    let before = s1
        .services
        .get(&crate::wire::encode_labels(&["svc6", "testns"]))
        .unwrap()
        .clone();
    b.apply(ClusterEvent::Apply {
        object: Object::Service(svc("testns", "svc1").ips(&["10.0.0.99"])),
        changed_at: None,
    });
    let (s2, _) = b.publish();
    assert!(s2.serial > s1.serial);
    let after = s2
        .services
        .get(&crate::wire::encode_labels(&["svc6", "testns"]))
        .unwrap()
        .clone();
    assert!(
        Arc::ptr_eq(&before, &after),
        "untouched services are shared, not rebuilt"
    );
    assert_eq!(
        strs(&ask(&s2, "svc1.testns.svc.cluster.local.", rtype::A).answers),
        norm(&["svc1.testns.svc.cluster.local. 5 IN A 10.0.0.99"])
    );
    // the old snapshot still answers the old way
    assert_eq!(
        strs(&ask(&s1, "svc1.testns.svc.cluster.local.", rtype::A).answers),
        norm(&["svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1"])
    );
    // reverse records follow
    // 10.0.0.1 is now svcempty's alone
    assert_eq!(
        strs(&ask(&s2, "1.0.0.10.in-addr.arpa.", rtype::PTR).answers),
        norm(&["1.0.0.10.in-addr.arpa. 5 IN PTR svcempty.testns.svc.cluster.local."])
    );
    assert_eq!(
        ask(&s2, "99.0.0.10.in-addr.arpa.", rtype::PTR)
            .answers
            .len(),
        1
    );
    // deleting the service removes its names
    b.apply(ClusterEvent::Delete {
        key: ObjectKey {
            kind: Kind::Service,
            namespace: "testns".into(),
            name: "svc1".into(),
        },
    });
    let (s3, _) = b.publish();
    assert_eq!(
        ask(&s3, "svc1.testns.svc.cluster.local.", rtype::A)
            .metadata
            .response_code,
        NX
    );
    let _: Option<IpAddr> = None;
}

#[test]
fn namespace_and_label_filters() {
    let mut c = cfg();
    c.namespaces = vec!["testns".into()];
    let snap = snapshot_with(&c, coredns_objects());
    assert_eq!(
        ask(&snap, "kubedns.kube-system.svc.cluster.local.", rtype::A)
            .metadata
            .response_code,
        NX
    );
    assert_eq!(
        ask(&snap, "kube-system.svc.cluster.local.", rtype::A)
            .metadata
            .response_code,
        NX
    );
    assert_eq!(
        ask(&snap, "svc1.testns.svc.cluster.local.", rtype::A)
            .answers
            .len(),
        1
    );
    let mut c = cfg();
    c.labels = Some("app=web".into());
    let mut objs = coredns_objects();
    let mut s = svc("testns", "labelled").ips(&["10.0.9.9"]);
    s.labels.insert("app".into(), "web".into());
    objs.push(Object::Service(s));
    let snap = snapshot_with(&c, objs);
    assert_eq!(
        ask(&snap, "svc1.testns.svc.cluster.local.", rtype::A)
            .metadata
            .response_code,
        NX
    );
    assert_eq!(
        ask(&snap, "labelled.testns.svc.cluster.local.", rtype::A)
            .answers
            .len(),
        1
    );
}

#[test]
fn external_name_answers_cname_for_every_type() {
    let snap = snapshot_with(&cfg(), coredns_objects());
    for t in [rtype::A, rtype::AAAA, rtype::TXT] {
        let m = ask(&snap, "external.testns.svc.cluster.local.", t);
        assert_eq!(
            strs(&m.answers),
            norm(&["external.testns.svc.cluster.local. 5 IN CNAME ext.interwebs.test."]),
            "{t}"
        );
    }
}

#[test]
fn external_name_to_a_cluster_service_is_chased() {
    let snap = snapshot_with(&cfg(), coredns_objects());
    let m = ask(
        &snap,
        "external-to-service.testns.svc.cluster.local",
        rtype::A,
    );
    assert_eq!(m.metadata.response_code, OK);
    // CNAME first, then the target's address (CoreDNS's CNAME order)
    assert_eq!(
        m.answers[0].to_string(),
        "external-to-service.testns.svc.cluster.local. 5 IN CNAME svc1.testns.svc.cluster.local."
    );
    assert_eq!(
        m.answers[1].to_string(),
        "svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1"
    );
    assert_eq!(m.answers.len(), 2);
}

/// The raw reply to a question.
fn ask_raw(snap: &Snapshot, name: &str, qtype: u16) -> Vec<u8> {
    let q = Query::new(name, qtype).unwrap();
    let mut buf = Vec::new();
    let mut w = Writer::new(&mut buf, &q, 65535);
    let rcode = match answer(snap, &q, &mut w, true) {
        Outcome::Answered { rcode } => rcode,
        _ => 0,
    };
    w.finish(&q, rcode, true, false, 1232);
    buf
}

#[test]
fn srv_targets_are_never_compressed() {
    // RFC 2782: "name compression is not to be used for this field"; Go's resolver
    // (golang.org/x/net/dns/dnsmessage) rejects SRV answers whose targets are compressed.
    let snap = snapshot_with(&cfg(), coredns_objects());
    for (name, want) in [
        ("_http._tcp.hdls1.testns.svc.cluster.local.", 5),
        ("_http._tcp.svc1.testns.svc.ClUsTeR.local.", 1),
        ("svc-dual-stack.testns.svc.cluster.local.", 1),
        ("hdls1.testns.svc.cluster.local.", 5),
    ] {
        let raw = ask_raw(&snap, name, rtype::SRV);
        let m = Message::from_vec(&raw).unwrap();
        assert_eq!(m.answers.len(), want, "{name}");
        // walk the answer section by hand: the SRV RDATA after priority/weight/port is a
        // sequence of plain labels ending in the root, with no pointer
        let mut p = 12 + q_len(&raw[12..]) + 4;
        for _ in 0..want {
            p += 2; // owner: a pointer to the question
            let rdlen = u16::from_be_bytes([raw[p + 8], raw[p + 9]]) as usize;
            let rdata = &raw[p + 10..p + 10 + rdlen];
            let mut t = 6;
            loop {
                let l = rdata[t];
                assert_eq!(l & 0xC0, 0, "{name}: compressed SRV target");
                t += 1 + l as usize;
                if l == 0 {
                    break;
                }
            }
            assert_eq!(t, rdlen, "{name}: target fills the RDATA");
            p += 10 + rdlen;
        }
        // the target keeps the query's case in the zone part, as CoreDNS writes it
        if name.contains("ClUsTeR") {
            assert!(
                m.answers[0]
                    .to_string()
                    .ends_with("svc1.testns.svc.ClUsTeR.local."),
                "{}",
                m.answers[0]
            );
        }
    }
}

fn q_len(b: &[u8]) -> usize {
    let mut p = 0;
    while b[p] != 0 {
        p += 1 + b[p] as usize;
    }
    p + 1
}

/// Under a long cluster zone (allowed up to 242 bytes) Kubernetes names of up to 63 bytes per
/// label can make an endpoint's name pass the 255 bytes of a wire name: such names cannot be
/// asked for, and the SRV and PTR records that would point to them are left out; everything
/// else is answered, and every reply decodes.
#[test]
fn names_longer_than_255_bytes_are_left_out() {
    let l63 = |c: char| c.to_string().repeat(63);
    // 100 bytes of text: <svc63>.<ns63>.svc.<zone> is 234 bytes in wire form, an endpoint name
    // under it with a 63-byte hostname 298, with a 1-byte one 236.
    let zone = format!("{}.{}.example", "z".repeat(50), "y".repeat(41));
    assert_eq!(zone.len(), 100);
    let c = ClusterConfig {
        zone: zone.clone(),
        ..cfg()
    };
    let (svc_name, ns_name) = (l63('s'), l63('n'));
    let long_host = l63('h');
    let objects = vec![
        ns(&ns_name),
        Object::Service(svc(&ns_name, &svc_name).port("http", 80, Protocol::Tcp)),
        Object::Slice(slice(
            &ns_name,
            &svc_name,
            &[
                ("10.9.0.1", Some(long_host.as_str()), true),
                ("10.9.0.2", Some("a"), true),
            ],
            &[("http", 80)],
        )),
        Object::Service(svc(&ns_name, "c").ips(&["10.9.1.1"])),
    ];
    let snap = snapshot_with(&c, objects);
    let base = format!("{svc_name}.{ns_name}.svc.{zone}.");
    // A: both endpoints (the service's own name fits).
    let m = ask(&snap, &base, rtype::A);
    assert_eq!(m.answers.len(), 2, "{m:?}");
    // SRV: the short endpoint only, with its address.
    let m = ask(&snap, &base, rtype::SRV);
    assert_eq!(
        strs(&m.answers),
        norm(&[&format!("{base} 5 IN SRV 0 100 80 a.{base}")]),
    );
    assert_eq!(m.additionals.len(), 1);
    // PTR: the long name is left out (the address is the cluster's: NODATA), the short one
    // answered.
    let m = ask(&snap, "1.0.9.10.in-addr.arpa.", rtype::PTR);
    assert_eq!((m.metadata.response_code, m.answers.len()), (OK, 0));
    let m = ask(&snap, "2.0.9.10.in-addr.arpa.", rtype::PTR);
    assert_eq!(
        strs(&m.answers),
        norm(&[&format!("2.0.9.10.in-addr.arpa. 5 IN PTR a.{base}")])
    );
    let m = ask(&snap, "1.1.9.10.in-addr.arpa.", rtype::PTR);
    assert_eq!(
        strs(&m.answers),
        norm(&[&format!(
            "1.1.9.10.in-addr.arpa. 5 IN PTR c.{ns_name}.svc.{zone}."
        )])
    );

    // The longest zone: the SOA (hostmaster.<zone>, 255 bytes) is written; `s.x.svc.<zone>`
    // (252 bytes) is answered, `abcde.x.svc.<zone>` (256) is left out of the PTR.
    let label = "a".repeat(60);
    let zone = format!("{label}.{label}.{label}.{}", "b".repeat(59));
    assert_eq!(zone.len(), crate::names::MAX_SERVED_ZONE_LEN);
    let c = ClusterConfig {
        zone: zone.clone(),
        ..cfg()
    };
    let snap = snapshot_with(
        &c,
        vec![
            ns("x"),
            Object::Service(svc("x", "s").ips(&["10.9.2.2"])),
            Object::Service(svc("x", "abcde").ips(&["10.9.2.1"])),
        ],
    );
    let m = ask(&snap, &format!("{zone}."), rtype::SOA);
    assert_eq!(m.answers.len(), 1);
    let m = ask(&snap, "1.2.9.10.in-addr.arpa.", rtype::PTR);
    assert_eq!((m.metadata.response_code, m.answers.len()), (OK, 0));
    let m = ask(&snap, "2.2.9.10.in-addr.arpa.", rtype::PTR);
    assert_eq!(
        strs(&m.answers),
        norm(&[&format!("2.2.9.10.in-addr.arpa. 5 IN PTR s.x.svc.{zone}.")])
    );
}

/// CoreDNS skips an ExternalName service for any name below it ("External services do not have
/// endpoints, nor can we accept port/protocol pseudo subdomains in an SRV query"): a port and
/// protocol name under it, or the protocol alone, is NXDOMAIN, not an SRV to the external name.
#[test]
fn no_port_or_protocol_names_under_an_external_name() {
    let snap = snapshot_with(&cfg(), coredns_objects());
    for (name, t) in [
        ("_http._tcp.external.testns.svc.cluster.local.", rtype::SRV),
        ("_http._tcp.external.testns.svc.cluster.local.", rtype::A),
        ("_tcp.external.testns.svc.cluster.local.", rtype::SRV),
    ] {
        let m = ask(&snap, name, t);
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::NXDomain,
            "{name} {t}"
        );
        assert!(m.answers.is_empty(), "{name}: {:?}", m.answers);
        assert_eq!(m.authorities.len(), 1, "{name}: the zone's SOA");
    }
    // The service name itself still answers its CNAME.
    let m = ask(&snap, "external.testns.svc.cluster.local.", rtype::SRV);
    assert_eq!(
        strs(&m.answers),
        norm(&["external.testns.svc.cluster.local. 5 IN CNAME ext.interwebs.test."])
    );
}
