//! What benchmarks and tests share (not used by the server itself): synthetic clusters, and
//! DNS queries as clients send them.

use std::net::{IpAddr, Ipv4Addr};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};

use crate::cluster::objects::*;

/// A name as given: its case kept, a missing final dot added.
pub fn name(name: &str) -> Name {
    let mut n = Name::from_ascii(name).unwrap_or_else(|e| panic!("name {name:?}: {e}"));
    n.set_fqdn(true);
    n
}

/// A query in wire form, built with hickory-proto: [`name`]`(name)`, the RD bit as given, an
/// OPT record advertising `edns` bytes when given.
pub fn query(
    name: &str,
    qtype: impl Into<RecordType>,
    id: u16,
    rd: bool,
    edns: Option<u16>,
) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = rd;
    m.add_query(Query::query(self::name(name), qtype.into()));
    if let Some(payload) = edns {
        let mut o = Edns::new();
        o.set_max_payload(payload);
        m.set_edns(o);
    }
    m.to_vec().expect("encodable query")
}

/// A cluster of `services` services in `namespaces` namespaces; every `headless_every`-th
/// service is headless; each service has `endpoints_per` ready endpoints; `pods` pods.
pub fn synthetic_cluster(
    services: usize,
    namespaces: usize,
    endpoints_per: usize,
    headless_every: usize,
    pods: usize,
) -> Vec<Object> {
    let mut out = Vec::with_capacity(services * 2 + namespaces + pods);
    let ns_name = |i: usize| format!("team-{i}");
    for n in 0..namespaces {
        out.push(Object::Namespace(NamespaceInfo {
            name: ns_name(n).into(),
            labels: Default::default(),
        }));
    }
    let mut ep_ip: u32 = u32::from(Ipv4Addr::new(10, 128, 0, 1));
    for s in 0..services {
        let ns = ns_name(s % namespaces);
        let name = format!("svc-{s}");
        let headless = headless_every > 0 && s % headless_every == 0;
        let cip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + 10 + s as u32);
        out.push(Object::Service(ServiceInfo {
            namespace: ns.as_str().into(),
            name: name.as_str().into(),
            kind: if headless {
                ServiceKind::Headless
            } else {
                ServiceKind::ClusterIp(vec![IpAddr::V4(cip)])
            },
            ports: vec![Port {
                name: "http".into(),
                protocol: Protocol::Tcp,
                port: 80,
            }],
            publish_not_ready: false,
            labels: Default::default(),
            external: vec![],
        }));
        let endpoints = (0..endpoints_per)
            .map(|_| {
                ep_ip += 1;
                EndpointInfo {
                    addresses: vec![IpAddr::V4(Ipv4Addr::from(ep_ip))],
                    ready: true,
                    hostname: None,
                    pod_name: None,
                }
            })
            .collect();
        out.push(Object::Slice(SliceInfo {
            namespace: ns.as_str().into(),
            name: format!("{name}-abcde").into(),
            service: Some(name.as_str().into()),
            endpoints,
            ports: vec![Port {
                name: "http".into(),
                protocol: Protocol::Tcp,
                port: 8080,
            }],
        }));
    }
    let mut pod_ip: u32 = u32::from(Ipv4Addr::new(10, 200, 0, 1));
    for p in 0..pods {
        pod_ip += 1;
        out.push(Object::Pod(PodInfo {
            namespace: ns_name(p % namespaces).into(),
            name: format!("pod-{p}").into(),
            ips: vec![IpAddr::V4(Ipv4Addr::from(pod_ip))],
            host_network: false,
        }));
    }
    out
}
