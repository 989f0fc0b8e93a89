//! Builders for the objects the test API server serves, as the JSON the real API server returns.
//!
//! ```ignore
//! api.create(namespace("prod").label("team", "dns"));
//! api.create(svc("prod", "web").cluster_ip("10.0.0.10").port("http", 80, "TCP"));
//! api.create(svc("prod", "db").headless().port("pg", 5432, "TCP"));
//! api.create(svc("prod", "ext").external_name("example.com"));
//! api.create(slice("prod", "db-abc12", "db").port("pg", 5432, "TCP")
//!     .endpoint(ep(&["10.1.0.5"]).hostname("db-0").pod("db-0"))
//!     .endpoint(ep(&["10.1.0.6"]).ready(false)));
//! api.create(pod("prod", "db-0").ip("10.1.0.5"));
//! let web = svc("prod", "web2").cluster_ip("10.0.0.11").port("http", 80, "TCP");
//! api.create(&web);
//! api.create(web.endpoint_slice("web2-x1").endpoint(ep(&["10.1.0.7"]))); // port http 80 too
//! api.create(svc("prod", "bad").cluster_ip("not-an-ip")); // stored as given
//! ```

use serde_json::{Value, json};

/// An object under construction; `Into<serde_json::Value>`.
#[derive(Clone, Debug, PartialEq)]
pub struct Fixture(pub Value);

impl From<Fixture> for Value {
    fn from(f: Fixture) -> Value {
        f.0
    }
}

impl From<&Fixture> for Value {
    fn from(f: &Fixture) -> Value {
        f.0.clone()
    }
}

/// A Namespace.
pub(crate) fn namespace(name: &str) -> Fixture {
    Fixture(
        json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": name }, "status": { "phase": "Active" } }),
    )
}

/// A Service of type ClusterIP without an IP yet (give one with [`Fixture::cluster_ip`], or
/// make it [`Fixture::headless`] or [`Fixture::external_name`]).
pub(crate) fn svc(namespace: &str, name: &str) -> Fixture {
    Fixture(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": name, "namespace": namespace },
        "spec": { "type": "ClusterIP", "sessionAffinity": "None" },
        "status": { "loadBalancer": {} },
    }))
}

/// An EndpointSlice of `service` (label `kubernetes.io/service-name`), address type IPv4, managed
/// by the EndpointSlice controller, with no endpoints yet (`"endpoints": null`, as the API
/// server writes an empty list).
pub(crate) fn slice(namespace: &str, name: &str, service: &str) -> Fixture {
    Fixture(json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                "kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            },
        },
        "addressType": "IPv4",
        "endpoints": null,
        "ports": null,
    }))
}

/// A running Pod without an IP yet ([`Fixture::ip`]).
pub(crate) fn pod(namespace: &str, name: &str) -> Fixture {
    Fixture(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "namespace": namespace },
        "spec": { "containers": [{ "name": "main", "image": "registry.k8s.io/pause:3.10" }], "nodeName": "node-1" },
        "status": { "phase": "Running" },
    }))
}

/// One endpoint of an EndpointSlice: ready, serving, not terminating.
pub(crate) fn ep(addresses: &[&str]) -> EndpointFixture {
    EndpointFixture(json!({
        "addresses": addresses,
        "conditions": { "ready": true, "serving": true, "terminating": false },
        "nodeName": "node-1",
    }))
}

/// An endpoint under construction.
#[derive(Clone, Debug, PartialEq)]
pub struct EndpointFixture(pub Value);

impl EndpointFixture {
    pub fn ready(mut self, ready: bool) -> Self {
        self.0["conditions"]["ready"] = json!(ready);
        self.0["conditions"]["serving"] = json!(ready);
        self
    }
    /// No `conditions` at all (ready, as the API documents for an absent condition).
    pub fn no_conditions(mut self) -> Self {
        self.0.as_object_mut().unwrap().remove("conditions");
        self
    }
    pub fn hostname(mut self, h: &str) -> Self {
        self.0["hostname"] = json!(h);
        self
    }
    /// `targetRef` to a Pod of this name.
    pub fn pod(mut self, name: &str) -> Self {
        self.0["targetRef"] = json!({ "kind": "Pod", "name": name });
        self
    }
    pub fn node(mut self, n: &str) -> Self {
        self.0["nodeName"] = json!(n);
        self
    }
    pub fn zone(mut self, z: &str) -> Self {
        self.0["zone"] = json!(z);
        self
    }
}

impl Fixture {
    pub fn kind(&self) -> &str {
        self.0["kind"].as_str().unwrap_or("")
    }

    pub fn json(&self) -> &Value {
        &self.0
    }

    /// Sets the value at a JSON pointer (`/spec/clusterIP`), creating objects on the way.
    pub fn set(mut self, pointer: &str, v: impl Into<Value>) -> Self {
        let mut cur = &mut self.0;
        for seg in pointer.trim_start_matches('/').split('/') {
            let seg = seg.replace("~1", "/").replace("~0", "~");
            if !cur.is_object() {
                *cur = json!({});
            }
            cur = cur
                .as_object_mut()
                .unwrap()
                .entry(seg)
                .or_insert(Value::Null);
        }
        *cur = v.into();
        self
    }

    /// Removes the value at a JSON pointer, if there.
    pub fn remove(mut self, pointer: &str) -> Self {
        if let Some((parent, last)) = pointer.rsplit_once('/') {
            let last = last.replace("~1", "/").replace("~0", "~");
            let parent = if parent.is_empty() {
                Some(&mut self.0)
            } else {
                self.0.pointer_mut(parent)
            };
            if let Some(Value::Object(m)) = parent {
                m.remove(&last);
            }
        }
        self
    }

    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.meta_map("labels").insert(k.into(), json!(v));
        self
    }

    pub fn annotation(mut self, k: &str, v: &str) -> Self {
        self.meta_map("annotations").insert(k.into(), json!(v));
        self
    }

    fn meta_map(&mut self, field: &str) -> &mut serde_json::Map<String, Value> {
        let m = &mut self.0["metadata"][field];
        if !m.is_object() {
            *m = json!({});
        }
        m.as_object_mut().unwrap()
    }

    /// Adds a port: `spec.ports` of a Service, `ports` of an EndpointSlice.
    pub fn port(mut self, name: &str, port: i32, protocol: &str) -> Self {
        let is_svc = self.kind() == "Service";
        let list = if is_svc {
            &mut self.0["spec"]["ports"]
        } else {
            &mut self.0["ports"]
        };
        if !list.is_array() {
            *list = json!([]);
        }
        let mut p = json!({ "port": port, "protocol": protocol });
        if !name.is_empty() {
            p["name"] = json!(name);
        }
        if is_svc {
            p["targetPort"] = json!(port);
        }
        list.as_array_mut().unwrap().push(p);
        self
    }

    // ----- Service -----

    /// Adds a cluster IP (`clusterIP` is the first; `clusterIPs` lists all, dual-stack).
    pub fn cluster_ip(mut self, ip: &str) -> Self {
        let spec = &mut self.0["spec"];
        if spec.get("clusterIP").is_none_or(Value::is_null) {
            spec["clusterIP"] = json!(ip);
        }
        if !spec["clusterIPs"].is_array() {
            spec["clusterIPs"] = json!([]);
        }
        spec["clusterIPs"].as_array_mut().unwrap().push(json!(ip));
        let families: Vec<Value> = spec["clusterIPs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|ip| {
                json!(if ip.as_str().unwrap_or("").contains(':') {
                    "IPv6"
                } else {
                    "IPv4"
                })
            })
            .collect();
        spec["ipFamilies"] = json!(families);
        self
    }

    /// `clusterIP: None`.
    pub fn headless(mut self) -> Self {
        self.0["spec"]["clusterIP"] = json!("None");
        self.0["spec"]["clusterIPs"] = json!(["None"]);
        self
    }

    /// An EndpointSlice `name` of this Service ([`slice`]: in its namespace, labelled for it)
    /// with the Service's ports as the EndpointSlice controller copies them (each port's name
    /// and protocol, its `targetPort` as the port), no endpoints yet: the Service and its slice
    /// built once, as a selector makes them.
    pub fn endpoint_slice(&self, name: &str) -> Fixture {
        let meta = &self.0["metadata"];
        let mut sl = slice(
            meta["namespace"].as_str().unwrap_or(""),
            name,
            meta["name"].as_str().unwrap_or(""),
        );
        for p in self.0["spec"]["ports"].as_array().into_iter().flatten() {
            sl = sl.port(
                p["name"].as_str().unwrap_or(""),
                p["targetPort"].as_i64().unwrap_or(0) as i32,
                p["protocol"].as_str().unwrap_or("TCP"),
            );
        }
        sl
    }

    /// `type: ExternalName`.
    pub fn external_name(mut self, name: &str) -> Self {
        let spec = self.0["spec"].as_object_mut().unwrap();
        spec.insert("type".into(), json!("ExternalName"));
        spec.insert("externalName".into(), json!(name));
        spec.remove("clusterIP");
        spec.remove("clusterIPs");
        self
    }

    pub fn service_type(mut self, t: &str) -> Self {
        self.0["spec"]["type"] = json!(t);
        self
    }

    pub fn publish_not_ready(mut self) -> Self {
        self.0["spec"]["publishNotReadyAddresses"] = json!(true);
        self
    }

    pub fn selector(mut self, k: &str, v: &str) -> Self {
        let s = &mut self.0["spec"]["selector"];
        if !s.is_object() {
            *s = json!({});
        }
        s[k] = json!(v);
        self
    }

    // ----- EndpointSlice -----

    pub fn address_type(mut self, t: &str) -> Self {
        self.0["addressType"] = json!(t);
        self
    }

    pub fn endpoint(mut self, e: EndpointFixture) -> Self {
        let list = &mut self.0["endpoints"];
        if !list.is_array() {
            *list = json!([]);
        }
        list.as_array_mut().unwrap().push(e.0);
        self
    }

    /// The `endpoints.kubernetes.io/last-change-trigger-time` annotation (RFC 3339).
    pub fn trigger_time(self, rfc3339: &str) -> Self {
        self.annotation("endpoints.kubernetes.io/last-change-trigger-time", rfc3339)
    }

    // ----- Pod -----

    /// Adds a pod IP (`podIP` is the first; `podIPs` lists all).
    pub fn ip(mut self, ip: &str) -> Self {
        let status = &mut self.0["status"];
        if status.get("podIP").is_none_or(Value::is_null) {
            status["podIP"] = json!(ip);
        }
        if !status["podIPs"].is_array() {
            status["podIPs"] = json!([]);
        }
        status["podIPs"]
            .as_array_mut()
            .unwrap()
            .push(json!({ "ip": ip }));
        self
    }

    pub fn phase(mut self, p: &str) -> Self {
        self.0["status"]["phase"] = json!(p);
        self
    }
}

#[cfg(test)]
mod tests {
    // Paths rather than `use super::*`: the benches include this file too, without the tests,
    // where the import would be unused.
    /// The slice built from a Service is the one built by hand with the same ports.
    #[test]
    fn a_services_endpoint_slice_carries_its_ports() {
        let web = super::svc("prod", "web")
            .cluster_ip("10.0.0.10")
            .port("http", 80, "TCP")
            .port("", 53, "UDP");
        assert_eq!(
            web.endpoint_slice("web-1"),
            super::slice("prod", "web-1", "web")
                .port("http", 80, "TCP")
                .port("", 53, "UDP")
        );
    }
}
