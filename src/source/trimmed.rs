//! The Kubernetes objects as clusterdns reads them, from the API (`kube.rs`) and from files
//! (`file.rs`): serde types with only the fields DNS needs. Everything else in an object is
//! skipped while parsing, without allocating (no `managedFields`, no annotations but the
//! last-change-trigger-time, no pod spec). Field names are the API's, which are not all
//! camelCase (`clusterIP`, `clusterIPs`, `podIP`, `podIPs`). Each converts into the compact
//! [`crate::cluster::objects`] form at once.

use std::collections::BTreeMap;
use std::time::SystemTime;

use k8s_openapi::api::core::v1::{
    Namespace, ObjectReference, Pod, PodIP, PodStatus, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::core::PartialObjectMeta;
use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};

use crate::cluster::Object;
use crate::cluster::objects::{NamespaceInfo, PodInfo, ServiceInfo, SliceInfo};
use crate::error::ObjectError;

/// The annotation the EndpointSlice controller sets to the time of the change that triggered
/// the slice's last update.
pub const LAST_CHANGE_TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// One object turned into its DNS form, with the timestamps `changed_at` may come from.
pub(crate) struct Converted {
    pub(crate) object: Result<Object, ObjectError>,
    /// `metadata.creationTimestamp`.
    pub(crate) created: Option<SystemTime>,
    /// The EndpointSlice last-change-trigger-time annotation.
    pub(crate) triggered: Option<SystemTime>,
}

fn time_to_system(t: &Time) -> SystemTime {
    SystemTime::from(t.0)
}

/// `metadata` with name, namespace, resourceVersion, labels, creationTimestamp and only the
/// last-change-trigger-time annotation.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetaFields {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    resource_version: Option<String>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    annotations: Option<TriggerTimeOnly>,
    #[serde(default)]
    creation_timestamp: Option<Time>,
}

fn trimmed_meta<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    let m = MetaFields::deserialize(d)?;
    Ok(ObjectMeta {
        name: m.name,
        namespace: m.namespace,
        resource_version: m.resource_version,
        labels: m.labels,
        annotations: m
            .annotations
            .and_then(|a| a.0)
            .map(|v| BTreeMap::from([(LAST_CHANGE_TRIGGER_TIME.to_string(), v)])),
        creation_timestamp: m.creation_timestamp,
        ..ObjectMeta::default()
    })
}

/// `metadata` with name, namespace and resourceVersion only (Pods).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NameFields {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    resource_version: Option<String>,
}

fn names_only_meta<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    let m = NameFields::deserialize(d)?;
    Ok(ObjectMeta {
        name: m.name,
        namespace: m.namespace,
        resource_version: m.resource_version,
        ..ObjectMeta::default()
    })
}

/// An annotations map of which only [`LAST_CHANGE_TRIGGER_TIME`] is kept; other values (such
/// as `kubectl.kubernetes.io/last-applied-configuration`) are skipped without allocating.
struct TriggerTimeOnly(Option<String>);

impl<'de> Deserialize<'de> for TriggerTimeOnly {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TriggerTimeOnly;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of annotations")
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(TriggerTimeOnly(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut found = None;
                while let Some(wanted) = map.next_key::<IsTriggerTime>()? {
                    if wanted.0 {
                        found = map.next_value::<Option<String>>()?;
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(TriggerTimeOnly(found))
            }
        }
        d.deserialize_any(V)
    }
}

/// A map key compared with [`LAST_CHANGE_TRIGGER_TIME`] without being allocated.
struct IsTriggerTime(bool);

impl<'de> Deserialize<'de> for IsTriggerTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = IsTriggerTime;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an annotation key")
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(IsTriggerTime(v == LAST_CHANGE_TRIGGER_TIME))
            }
        }
        d.deserialize_str(V)
    }
}

/// A Service with only what DNS needs.
#[derive(Clone, Debug, Deserialize, kube::Resource)]
#[resource(inherit = Service)]
pub(crate) struct TrimService {
    #[serde(deserialize_with = "trimmed_meta")]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: Option<TrimServiceSpec>,
    /// Only `loadBalancer.ingress` (IPs and host names), for `k8s_external`.
    #[serde(default)]
    status: Option<k8s_openapi::api::core::v1::ServiceStatus>,
}

#[derive(Clone, Debug, Deserialize)]
struct TrimServiceSpec {
    #[serde(rename = "type", default)]
    type_: Option<String>,
    #[serde(rename = "clusterIP", default)]
    cluster_ip: Option<String>,
    #[serde(rename = "clusterIPs", default)]
    cluster_ips: Option<Vec<String>>,
    #[serde(rename = "externalName", default)]
    external_name: Option<String>,
    #[serde(default)]
    ports: Option<Vec<TrimServicePort>>,
    #[serde(rename = "publishNotReadyAddresses", default)]
    publish_not_ready_addresses: Option<bool>,
    #[serde(rename = "externalIPs", default)]
    external_ips: Option<Vec<String>>,
}

#[derive(Clone, Debug, Deserialize)]
struct TrimServicePort {
    #[serde(default)]
    name: Option<String>,
    /// Absent: 0, which the conversion rejects naming the object.
    #[serde(default)]
    port: i32,
    #[serde(default)]
    protocol: Option<String>,
}

pub(crate) fn convert_service(t: TrimService) -> Converted {
    let created = t.metadata.creation_timestamp.as_ref().map(time_to_system);
    let svc = Service {
        metadata: t.metadata,
        spec: t.spec.map(|s| ServiceSpec {
            type_: s.type_,
            cluster_ip: s.cluster_ip,
            cluster_ips: s.cluster_ips,
            external_name: s.external_name,
            ports: s.ports.map(|ps| {
                ps.into_iter()
                    .map(|p| ServicePort {
                        name: p.name,
                        port: p.port,
                        protocol: p.protocol,
                        ..ServicePort::default()
                    })
                    .collect()
            }),
            publish_not_ready_addresses: s.publish_not_ready_addresses,
            external_ips: s.external_ips,
            ..ServiceSpec::default()
        }),
        // Conditions of the status are not DNS's business: only the ingress is kept.
        status: t.status.map(|s| k8s_openapi::api::core::v1::ServiceStatus {
            load_balancer: s.load_balancer,
            conditions: None,
        }),
    };
    Converted {
        object: ServiceInfo::try_from(&svc).map(Object::Service),
        created,
        triggered: None,
    }
}

/// An EndpointSlice with only what DNS needs.
#[derive(Clone, Debug, Deserialize, kube::Resource)]
#[resource(inherit = EndpointSlice)]
pub(crate) struct TrimSlice {
    #[serde(deserialize_with = "trimmed_meta")]
    metadata: ObjectMeta,
    #[serde(rename = "addressType", default)]
    address_type: String,
    /// `null` for a slice without endpoints.
    #[serde(default)]
    endpoints: Option<Vec<TrimEndpoint>>,
    #[serde(default)]
    ports: Option<Vec<TrimSlicePort>>,
}

#[derive(Clone, Debug, Deserialize)]
struct TrimEndpoint {
    #[serde(default)]
    addresses: Option<Vec<String>>,
    #[serde(default)]
    conditions: Option<TrimConditions>,
    #[serde(default)]
    hostname: Option<String>,
    #[serde(rename = "targetRef", default)]
    target_ref: Option<TrimTargetRef>,
}

#[derive(Clone, Debug, Deserialize)]
struct TrimConditions {
    #[serde(default)]
    ready: Option<bool>,
}

#[derive(Clone, Debug, Deserialize)]
struct TrimTargetRef {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
struct TrimSlicePort {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    port: Option<i32>,
    #[serde(default)]
    protocol: Option<String>,
}

pub(crate) fn convert_slice(t: TrimSlice) -> Converted {
    let triggered = t
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(LAST_CHANGE_TRIGGER_TIME))
        .and_then(|s| match s.trim().parse::<k8s_openapi::jiff::Timestamp>() {
            Ok(ts) => Some(SystemTime::from(ts)),
            Err(_) => {
                tracing::debug!(
                    namespace = t.metadata.namespace.as_deref().unwrap_or(""),
                    name = t.metadata.name.as_deref().unwrap_or(""),
                    value = s.as_str(),
                    "invalid {LAST_CHANGE_TRIGGER_TIME} annotation"
                );
                None
            }
        });
    let created = t.metadata.creation_timestamp.as_ref().map(time_to_system);
    let es = EndpointSlice {
        metadata: t.metadata,
        address_type: t.address_type,
        endpoints: t
            .endpoints
            .unwrap_or_default()
            .into_iter()
            .map(|e| Endpoint {
                addresses: e.addresses.unwrap_or_default(),
                conditions: e.conditions.map(|c| EndpointConditions {
                    ready: c.ready,
                    ..EndpointConditions::default()
                }),
                hostname: e.hostname,
                target_ref: e.target_ref.map(|r| ObjectReference {
                    kind: r.kind,
                    name: r.name,
                    ..ObjectReference::default()
                }),
                ..Endpoint::default()
            })
            .collect(),
        ports: t.ports.map(|ps| {
            ps.into_iter()
                .map(|p| EndpointPort {
                    name: p.name,
                    port: p.port,
                    protocol: p.protocol,
                    ..EndpointPort::default()
                })
                .collect()
        }),
    };
    Converted {
        object: SliceInfo::try_from(&es).map(Object::Slice),
        created,
        triggered,
    }
}

/// A Pod with only what DNS needs: its name, IPs, and whether it is on the host network.
#[derive(Clone, Debug, Deserialize, kube::Resource)]
#[resource(inherit = Pod)]
pub(crate) struct TrimPod {
    #[serde(deserialize_with = "names_only_meta")]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: Option<TrimPodSpec>,
    #[serde(default)]
    status: Option<TrimPodStatus>,
}

#[derive(Clone, Debug, Deserialize)]
struct TrimPodSpec {
    #[serde(rename = "hostNetwork", default)]
    host_network: Option<bool>,
}

#[derive(Clone, Debug, Deserialize)]
struct TrimPodStatus {
    #[serde(rename = "podIP", default)]
    pod_ip: Option<String>,
    #[serde(rename = "podIPs", default)]
    pod_ips: Option<Vec<TrimPodIp>>,
}

#[derive(Clone, Debug, Deserialize)]
struct TrimPodIp {
    #[serde(default)]
    ip: String,
}

pub(crate) fn convert_pod(t: TrimPod) -> Converted {
    let pod = Pod {
        metadata: t.metadata,
        spec: t.spec.map(|s| k8s_openapi::api::core::v1::PodSpec {
            host_network: s.host_network,
            ..Default::default()
        }),
        status: t.status.map(|s| PodStatus {
            pod_ip: s.pod_ip,
            pod_ips: s
                .pod_ips
                .map(|ips| ips.into_iter().map(|p| PodIP { ip: p.ip }).collect()),
            ..PodStatus::default()
        }),
    };
    Converted {
        object: PodInfo::try_from(&pod).map(Object::Pod),
        created: None,
        triggered: None,
    }
}

pub(crate) fn convert_namespace(m: PartialObjectMeta<Namespace>) -> Converted {
    let ns = Namespace {
        metadata: m.metadata,
        ..Namespace::default()
    };
    Converted {
        object: NamespaceInfo::try_from(&ns).map(Object::Namespace),
        created: None,
        triggered: None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn trimmed_service_keeps_dns_fields() {
        let json = r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"Web","namespace":"prod",
            "resourceVersion":"7","labels":{"app":"web"},"creationTimestamp":"2024-01-02T03:04:05Z",
            "annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{\"huge\":[1,2,3]}"},
            "managedFields":[{"manager":"kubectl","fieldsV1":{"f:spec":{}}}]},
            "spec":{"type":"ClusterIP","clusterIP":"10.0.0.1","clusterIPs":["10.0.0.1","fd00::1"],
            "ports":[{"name":"HTTP","port":80,"protocol":"TCP","targetPort":8080}],"selector":{"app":"web"}},
            "status":{"loadBalancer":{}}}"#;
        let t: TrimService = serde_json::from_str(json).unwrap();
        assert_eq!(t.metadata.resource_version.as_deref(), Some("7"));
        assert!(t.metadata.annotations.is_none());
        assert!(t.metadata.managed_fields.is_none());
        let c = convert_service(t);
        let Ok(Object::Service(s)) = c.object else {
            panic!("{:?}", c.object)
        };
        assert_eq!(&*s.name, "web");
        assert_eq!(&*s.namespace, "prod");
        assert_eq!(
            s.kind,
            crate::cluster::objects::ServiceKind::ClusterIp(vec![
                "10.0.0.1".parse().unwrap(),
                "fd00::1".parse().unwrap()
            ])
        );
        assert_eq!(&*s.ports[0].name, "http");
        assert_eq!(s.labels.get("app").map(String::as_str), Some("web"));
        assert!(c.created.is_some());
    }

    #[test]
    fn trimmed_slice_reads_trigger_time_and_null_endpoints() {
        let json = r#"{"metadata":{"name":"web-abc","namespace":"prod","resourceVersion":"9",
            "labels":{"kubernetes.io/service-name":"web"},
            "annotations":{"a":"b","endpoints.kubernetes.io/last-change-trigger-time":"2024-01-02T03:04:05.5Z"}},
            "addressType":"IPv4","endpoints":null,"ports":[{"name":"http","port":80,"protocol":"TCP"}]}"#;
        let t: TrimSlice = serde_json::from_str(json).unwrap();
        let c = convert_slice(t);
        let Ok(Object::Slice(s)) = c.object else {
            panic!()
        };
        assert_eq!(s.service.as_deref(), Some("web"));
        assert!(s.endpoints.is_empty());
        let want = SystemTime::UNIX_EPOCH + Duration::from_millis(1_704_164_645_500);
        assert_eq!(c.triggered, Some(want));
    }

    #[test]
    fn trimmed_pod_reads_ips() {
        let json = r#"{"metadata":{"name":"p","namespace":"ns","resourceVersion":"3","labels":{"x":"y"}},
            "spec":{"containers":[{"name":"c","image":"i"}]},
            "status":{"phase":"Running","podIP":"10.1.0.5","podIPs":[{"ip":"10.1.0.5"},{"ip":"fd00::5"}]}}"#;
        let t: TrimPod = serde_json::from_str(json).unwrap();
        assert!(t.metadata.labels.is_none());
        let Ok(Object::Pod(p)) = convert_pod(t).object else {
            panic!()
        };
        assert_eq!(p.ips.len(), 2);
        assert!(!p.host_network);
        let json = r#"{"metadata":{"name":"kp","namespace":"kube-system","resourceVersion":"4"},
            "spec":{"hostNetwork":true,"nodeName":"n1"},"status":{"podIP":"192.168.0.7"}}"#;
        let Ok(Object::Pod(p)) = convert_pod(serde_json::from_str(json).unwrap()).object else {
            panic!()
        };
        assert!(p.host_network);
    }

    #[test]
    fn trimmed_service_reads_external_addresses() {
        let json = r#"{"metadata":{"name":"lb","namespace":"ns","resourceVersion":"5"},
            "spec":{"type":"LoadBalancer","clusterIP":"10.0.0.9","externalIPs":["192.0.2.1"],
              "ports":[{"name":"http","port":80,"protocol":"TCP"}]},
            "status":{"loadBalancer":{"ingress":[{"ip":"198.51.100.2"},{"hostname":"LB.Example.com"}]},
              "conditions":[{"type":"x","status":"True","lastTransitionTime":"2024-01-02T03:04:05Z","reason":"r","message":"m"}]}}"#;
        let t: TrimService = serde_json::from_str(json).unwrap();
        let Ok(Object::Service(s)) = convert_service(t).object else {
            panic!()
        };
        use crate::cluster::objects::ExternalAddr;
        assert_eq!(
            s.external,
            [
                ExternalAddr::Ip("192.0.2.1".parse().unwrap()),
                ExternalAddr::Ip("198.51.100.2".parse().unwrap()),
                ExternalAddr::Host("lb.example.com".into()),
            ]
        );
    }
}
