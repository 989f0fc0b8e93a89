//! The DNS-relevant part of each Kubernetes object kind, and the conversion from the API types.
//!
//! Sources (file or API) turn every object into one of these right away, so nothing downstream
//! holds full API objects. A conversion error names the object; the source logs it and skips
//! the object, and everything else keeps working.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Pod, Service, ServiceSpec};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::error::ObjectError;

/// Transport protocol of a port, as the spec names it in SRV owners (`_tcp`, `_udp`, `_sctp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_uppercase().as_str() {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }
    /// The SRV label without its underscore.
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// A named (or unnamed) port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Port {
    /// Lowercase port name; empty for an unnamed port (no SRV owner of its own).
    pub name: Box<str>,
    pub protocol: Protocol,
    pub port: u16,
}

/// What kind of records a service gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceKind {
    /// A/AAAA with the cluster IPs (one per family in dual-stack).
    ClusterIp(Vec<IpAddr>),
    /// `clusterIP: None`: records from the endpoints.
    Headless,
    /// CNAME to this name (lowercase, no trailing dot).
    ExternalName(Box<str>),
}

/// A Service, trimmed to what DNS needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInfo {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
    pub kind: ServiceKind,
    pub ports: Vec<Port>,
    pub publish_not_ready: bool,
    pub labels: BTreeMap<String, String>,
    /// `spec.externalIPs`, then `status.loadBalancer.ingress` (an IP, or else a host name), for
    /// `k8s_external`; most services have none.
    pub external: Vec<ExternalAddr>,
}

/// An address a Service is reached at from outside the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExternalAddr {
    Ip(IpAddr),
    /// A load balancer's host name (lowercase, no trailing dot).
    Host(Box<str>),
}

/// One endpoint of an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointInfo {
    pub addresses: Vec<IpAddr>,
    /// `conditions.ready`; an absent condition counts as ready (as the API documents).
    pub ready: bool,
    pub hostname: Option<Box<str>>,
    /// `targetRef.name` when the target is a Pod (for `endpoint_pod_names`).
    pub pod_name: Option<Box<str>>,
}

/// An EndpointSlice, trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceInfo {
    pub namespace: Arc<str>,
    /// The slice's own name.
    pub name: Arc<str>,
    /// The `kubernetes.io/service-name` label: the service these endpoints belong to.
    pub service: Option<Arc<str>>,
    pub endpoints: Vec<EndpointInfo>,
    pub ports: Vec<Port>,
}

/// A Pod, trimmed: where it is, its IPs, and whether they are the node's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
    pub ips: Vec<IpAddr>,
    /// `spec.hostNetwork`: the pod's IPs are its node's.
    pub host_network: bool,
}

/// A Namespace, trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceInfo {
    pub name: Arc<str>,
    pub labels: BTreeMap<String, String>,
}

/// Any of the object kinds clusterdns watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    Service(ServiceInfo),
    Slice(SliceInfo),
    Pod(PodInfo),
    Namespace(NamespaceInfo),
}

/// The kinds, for sync tracking and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Namespace,
    Service,
    EndpointSlice,
    Pod,
}

impl Kind {
    /// Every kind, in the order a whole cluster is applied.
    pub const ALL: [Kind; 4] = [
        Kind::Namespace,
        Kind::Service,
        Kind::EndpointSlice,
        Kind::Pod,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Pod => "Pod",
        }
    }
}

/// Identity of an object: kind, namespace (empty for namespaces) and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub kind: Kind,
    pub namespace: Arc<str>,
    pub name: Arc<str>,
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::Service(_) => Kind::Service,
            Object::Slice(_) => Kind::EndpointSlice,
            Object::Pod(_) => Kind::Pod,
            Object::Namespace(_) => Kind::Namespace,
        }
    }

    pub fn key(&self) -> ObjectKey {
        match self {
            Object::Service(s) => ObjectKey {
                kind: Kind::Service,
                namespace: s.namespace.clone(),
                name: s.name.clone(),
            },
            Object::Slice(s) => ObjectKey {
                kind: Kind::EndpointSlice,
                namespace: s.namespace.clone(),
                name: s.name.clone(),
            },
            Object::Pod(p) => ObjectKey {
                kind: Kind::Pod,
                namespace: p.namespace.clone(),
                name: p.name.clone(),
            },
            Object::Namespace(n) => ObjectKey {
                kind: Kind::Namespace,
                namespace: "".into(),
                name: n.name.clone(),
            },
        }
    }
}

fn err(kind: &'static str, ns: &str, name: &str, message: impl Into<String>) -> ObjectError {
    ObjectError {
        kind,
        namespace: ns.to_string(),
        name: name.to_string(),
        message: message.into(),
    }
}

/// Whether `s` is an RFC 1123 label as Kubernetes validates the names that become DNS labels
/// (namespaces, services, endpoint hostnames): 1 to 63 of `a-z`, `0-9` and `-`, starting and
/// ending with a letter or digit. Checked after lowercasing. The API server never sends other
/// names; a hand-written objects file may, and such a name would break the wire form of every
/// answer that carries it (a label longer than 63 bytes reads as a compression pointer).
fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=63).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// `s` if it is a DNS label ([`is_dns_label`]), else an error naming `field` (formatted only
/// then: this runs for every object of every list).
fn dns_label(
    kind: &'static str,
    (ns, name): (&str, &str),
    field: fmt::Arguments<'_>,
    s: &str,
) -> Result<(), ObjectError> {
    if is_dns_label(s) {
        return Ok(());
    }
    Err(err(
        kind,
        ns,
        name,
        format!(
            "{field}: {s:?} is not a DNS label (1 to 63 letters, digits and '-', starting and ending with a letter or digit)"
        ),
    ))
}

/// Namespace and name, lowercased; the namespace must be a DNS label, and the name too when
/// `name_is_label` (a Service's, which becomes a DNS label; a slice's or a pod's does not).
fn meta_names(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    kind: &'static str,
    name_is_label: bool,
) -> Result<(Arc<str>, Arc<str>), ObjectError> {
    let ns = lowercase(meta.namespace.as_deref().unwrap_or("default"));
    let name = meta
        .name
        .as_deref()
        .ok_or_else(|| err(kind, &ns, "<unnamed>", "metadata.name is missing"))?;
    if name.is_empty() {
        return Err(err(kind, &ns, "<unnamed>", "metadata.name is empty"));
    }
    let name = lowercase(name);
    dns_label(kind, (&ns, &name), format_args!("metadata.namespace"), &ns)?;
    if name_is_label {
        dns_label(kind, (&ns, &name), format_args!("metadata.name"), &name)?;
    }
    Ok((Arc::from(&*ns), Arc::from(&*name)))
}

/// `s` in lower case, copied only when it has upper-case letters (names in a cluster are
/// nearly always lower case already: this runs for every object of every list).
fn lowercase(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
    }
}

fn parse_ip(
    kind: &'static str,
    ns: &str,
    name: &str,
    field: fmt::Arguments<'_>,
    s: &str,
) -> Result<IpAddr, ObjectError> {
    s.trim().parse::<IpAddr>().map_err(|_| {
        err(
            kind,
            ns,
            name,
            format!("{field}: {s:?} is not an IP address"),
        )
    })
}

/// Accepts a DNS name as an ExternalName: labels of letters, digits, `-` and `_`.
fn external_name(
    kind: &'static str,
    ns: &str,
    name: &str,
    s: &str,
) -> Result<Box<str>, ObjectError> {
    let t = s.trim().trim_end_matches('.').to_ascii_lowercase();
    if t.is_empty() || t.len() > 253 || t.split('.').any(|l| l.is_empty() || l.len() > 63) {
        return Err(err(
            kind,
            ns,
            name,
            format!("spec.externalName: {s:?} is not a DNS name"),
        ));
    }
    Ok(t.into())
}

impl TryFrom<&Service> for ServiceInfo {
    type Error = ObjectError;
    fn try_from(svc: &Service) -> Result<Self, ObjectError> {
        const K: &str = "Service";
        let (namespace, name) = meta_names(&svc.metadata, K, true)?;
        let no_spec = ServiceSpec::default();
        let spec = svc.spec.as_ref().unwrap_or(&no_spec);
        let mut ports = Vec::new();
        for (i, p) in spec.ports.iter().flatten().enumerate() {
            let proto = p.protocol.as_deref().unwrap_or("TCP");
            let protocol = Protocol::parse(proto).ok_or_else(|| {
                err(
                    K,
                    &namespace,
                    &name,
                    format!("spec.ports[{i}].protocol: unknown protocol {proto:?}"),
                )
            })?;
            let port = u16::try_from(p.port)
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| {
                    err(
                        K,
                        &namespace,
                        &name,
                        format!("spec.ports[{i}].port: {} is out of range", p.port),
                    )
                })?;
            ports.push(Port {
                name: p.name.as_deref().unwrap_or("").to_ascii_lowercase().into(),
                protocol,
                port,
            });
        }
        let typ = spec.type_.as_deref().unwrap_or("ClusterIP");
        let kind = if typ == "ExternalName" {
            let ext = spec.external_name.as_deref().ok_or_else(|| {
                err(
                    K,
                    &namespace,
                    &name,
                    "spec.externalName is missing for type ExternalName",
                )
            })?;
            ServiceKind::ExternalName(external_name(K, &namespace, &name, ext)?)
        } else {
            let mut ips: Vec<&str> = spec
                .cluster_ips
                .iter()
                .flatten()
                .map(String::as_str)
                .collect();
            if ips.is_empty()
                && let Some(ip) = &spec.cluster_ip
            {
                ips.push(ip);
            }
            if ips.is_empty() || ips.iter().any(|ip| ip.eq_ignore_ascii_case("none")) {
                ServiceKind::Headless
            } else {
                let mut parsed = Vec::with_capacity(ips.len());
                for ip in ips.iter().filter(|ip| !ip.is_empty()) {
                    parsed.push(parse_ip(
                        K,
                        &namespace,
                        &name,
                        format_args!("spec.clusterIPs"),
                        ip,
                    )?);
                }
                if parsed.is_empty() {
                    ServiceKind::Headless
                } else {
                    ServiceKind::ClusterIp(parsed)
                }
            }
        };
        // As CoreDNS's object.Service: external IPs first, then each ingress's IP or else its
        // host name. An entry that is neither is left out: the service's own records do not
        // depend on it, so they are not lost over it.
        let mut external = Vec::new();
        for ip in spec.external_ips.iter().flatten() {
            if let Ok(ip) = ip.trim().parse() {
                external.push(ExternalAddr::Ip(ip));
            }
        }
        let ingress = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref());
        for ing in ingress.into_iter().flatten() {
            match (ing.ip.as_deref(), ing.hostname.as_deref()) {
                (Some(ip), _) if !ip.is_empty() => {
                    if let Ok(ip) = ip.trim().parse() {
                        external.push(ExternalAddr::Ip(ip));
                    }
                }
                (_, Some(h)) if !h.is_empty() => {
                    if let Ok(h) = external_name(K, &namespace, &name, h) {
                        external.push(ExternalAddr::Host(h));
                    }
                }
                _ => {}
            }
        }
        Ok(ServiceInfo {
            namespace,
            name,
            kind,
            ports,
            publish_not_ready: spec.publish_not_ready_addresses.unwrap_or(false),
            labels: svc.metadata.labels.clone().unwrap_or_default(),
            external,
        })
    }
}

impl TryFrom<&EndpointSlice> for SliceInfo {
    type Error = ObjectError;
    fn try_from(es: &EndpointSlice) -> Result<Self, ObjectError> {
        const K: &str = "EndpointSlice";
        let (namespace, name) = meta_names(&es.metadata, K, false)?;
        let service = es
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("kubernetes.io/service-name"))
            .map(|s| Arc::from(&*lowercase(s)));
        let fqdn = es.address_type.eq_ignore_ascii_case("FQDN");
        let mut ports = Vec::new();
        for (i, p) in es.ports.iter().flatten().enumerate() {
            let proto = p.protocol.as_deref().unwrap_or("TCP");
            let protocol = Protocol::parse(proto).ok_or_else(|| {
                err(
                    K,
                    &namespace,
                    &name,
                    format!("ports[{i}].protocol: unknown protocol {proto:?}"),
                )
            })?;
            // A slice port without a number (allowed by the API) serves no SRV record.
            let Some(port) = p
                .port
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| *n > 0)
            else {
                continue;
            };
            ports.push(Port {
                name: p.name.as_deref().unwrap_or("").to_ascii_lowercase().into(),
                protocol,
                port,
            });
        }
        let mut endpoints = Vec::new();
        if !fqdn {
            for (i, ep) in es.endpoints.iter().enumerate() {
                let mut addresses = Vec::with_capacity(ep.addresses.len());
                for a in &ep.addresses {
                    addresses.push(parse_ip(
                        K,
                        &namespace,
                        &name,
                        format_args!("endpoints[{i}].addresses"),
                        a,
                    )?);
                }
                let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                // A pod name is a DNS subdomain (it may hold dots or run past 63 bytes): one
                // that is not a label cannot name the endpoint (`endpoint_pod_names`), which
                // then gets its dashed-IP name.
                let pod_name = ep
                    .target_ref
                    .as_ref()
                    .filter(|t| t.kind.as_deref().is_none_or(|k| k == "Pod"))
                    .and_then(|t| t.name.as_deref())
                    .map(lowercase)
                    .filter(|n| is_dns_label(n))
                    .map(|n| Box::from(&*n));
                let hostname = match ep.hostname.as_deref().filter(|h| !h.is_empty()) {
                    None => None,
                    Some(h) => {
                        let h = lowercase(h);
                        let field = format_args!("endpoints[{i}].hostname");
                        dns_label(K, (&namespace, &name), field, &h)?;
                        Some(Box::from(&*h))
                    }
                };
                endpoints.push(EndpointInfo {
                    addresses,
                    ready,
                    hostname,
                    pod_name,
                });
            }
        }
        Ok(SliceInfo {
            namespace,
            name,
            service,
            endpoints,
            ports,
        })
    }
}

impl TryFrom<&Pod> for PodInfo {
    type Error = ObjectError;
    fn try_from(pod: &Pod) -> Result<Self, ObjectError> {
        const K: &str = "Pod";
        let (namespace, name) = meta_names(&pod.metadata, K, false)?;
        let status = pod.status.as_ref();
        let mut ips = Vec::new();
        for p in status
            .and_then(|s| s.pod_ips.as_deref())
            .unwrap_or_default()
        {
            ips.push(parse_ip(
                K,
                &namespace,
                &name,
                format_args!("status.podIPs"),
                &p.ip,
            )?);
        }
        if ips.is_empty()
            && let Some(ip) = status
                .and_then(|s| s.pod_ip.as_deref())
                .filter(|s| !s.is_empty())
        {
            ips.push(parse_ip(
                K,
                &namespace,
                &name,
                format_args!("status.podIP"),
                ip,
            )?);
        }
        let host_network = pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false);
        Ok(PodInfo {
            namespace,
            name,
            ips,
            host_network,
        })
    }
}

impl TryFrom<&Namespace> for NamespaceInfo {
    type Error = ObjectError;
    fn try_from(ns: &Namespace) -> Result<Self, ObjectError> {
        let name = ns
            .metadata
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| err("Namespace", "", "<unnamed>", "metadata.name is missing"))?
            .to_ascii_lowercase();
        dns_label(
            "Namespace",
            ("", &name),
            format_args!("metadata.name"),
            &name,
        )?;
        Ok(NamespaceInfo {
            name: name.into(),
            labels: ns.metadata.labels.clone().unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(ns: &str, name: &str) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": ns},
            "spec": {"clusterIP": "10.0.0.1"}
        }))
        .unwrap()
    }

    fn slice(hostname: &str, pod: &str) -> EndpointSlice {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "s.1", "namespace": "ns",
                         "labels": {"kubernetes.io/service-name": "svc"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.1.0.1"], "hostname": hostname,
                           "targetRef": {"kind": "Pod", "name": pod}}]
        }))
        .unwrap()
    }

    /// Names that become DNS labels must be labels: found by fuzzing the objects file, where a
    /// 70-byte namespace made every answer about it undecodable.
    #[test]
    fn names_that_become_labels_are_checked() {
        let s = ServiceInfo::try_from(&service("Demo", "Web")).unwrap();
        assert_eq!((&*s.namespace, &*s.name), ("demo", "web"));
        let long = "k".repeat(64);
        for (ns, name, field) in [
            (long.as_str(), "web", "metadata.namespace"),
            ("demo", long.as_str(), "metadata.name"),
            ("demo", "a.b", "metadata.name"),
            ("demo", "-web", "metadata.name"),
            ("de mo", "web", "metadata.namespace"),
        ] {
            let e = ServiceInfo::try_from(&service(ns, name)).unwrap_err();
            assert!(e.message.starts_with(field), "{ns}/{name}: {e}");
        }
        assert!(ServiceInfo::try_from(&service(&"k".repeat(63), "w")).is_ok());
        let sl = SliceInfo::try_from(&slice("DB-0", "db-0")).unwrap();
        assert_eq!(sl.endpoints[0].hostname.as_deref(), Some("db-0"));
        assert_eq!(sl.endpoints[0].pod_name.as_deref(), Some("db-0"));
        let e = SliceInfo::try_from(&slice("db_0", "db-0")).unwrap_err();
        assert!(e.message.starts_with("endpoints[0].hostname"), "{e}");
        // A pod name that is no label does not name the endpoint.
        let sl = SliceInfo::try_from(&slice("", "web.v1-abc")).unwrap();
        assert_eq!(sl.endpoints[0].pod_name, None);
        let ns: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": long}})).unwrap();
        assert!(NamespaceInfo::try_from(&ns).is_err());
    }
}
