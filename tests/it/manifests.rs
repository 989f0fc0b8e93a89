//! The deployment artifacts: every manifest under `manifests/` parsed into the real Kubernetes
//! types (k8s-openapi) and checked for the invariants that break a cluster's DNS when wrong
//! (rendered by `kubectl kustomize` too), and the Dockerfile against the manifests. The release
//! build the image ships (`scripts/release-build.sh`, which checks its own result) is not run
//! here: it is the Dockerfile's and the load benchmark's (`benches/load.py`).
//!
//! Two variants, each its own kustomization: `manifests/` (clusterdns as kube-dns, a Deployment)
//! and `manifests/node-local/` (a node-local cache, a DaemonSet on the host network).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, PodTemplateSpec, Probe, Service, ServiceAccount,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize;

use clusterdns::cluster::Kind;
use clusterdns::config::{Config, parse_http_listen};

use crate::support::{assert_check_accepts, convert_fixture, repo, require};

const NAMESPACE: &str = "kube-system";
/// The labels of CoreDNS's pods in a kubeadm cluster: what clusterdns's own selectors must not
/// match alone (they would adopt or budget CoreDNS's pods during a migration).
const COREDNS_POD_LABELS: &[(&str, &str)] = &[("k8s-app", "kube-dns")];

/// Where the shipped manifests mount an `emptyDir` for the critical-names state file
/// (`hosts.state_file`): the root filesystem is read-only.
const STATE_DIR: &str = "/var/lib/clusterdns";

fn manifests_dir() -> PathBuf {
    repo().join("manifests")
}

// ----------------------------------------------------------------------------------------------
// Loading
// ----------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Kustomization {
    #[serde(rename = "apiVersion")]
    api_version: String,
    kind: String,
    namespace: Option<String>,
    resources: Vec<String>,
    #[serde(default)]
    images: Vec<KustomizeImage>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KustomizeImage {
    name: String,
    #[serde(rename = "newName")]
    new_name: Option<String>,
    #[serde(rename = "newTag")]
    new_tag: Option<String>,
}

#[derive(Debug, Deserialize)]
struct TypeMeta {
    #[serde(rename = "apiVersion")]
    api_version: String,
    kind: String,
}

/// One kustomization's objects, by kind, each with the file it came from.
#[derive(Default)]
struct Variant {
    dir: PathBuf,
    kustomization: Option<Kustomization>,
    deployments: Vec<(String, Deployment)>,
    daemonsets: Vec<(String, DaemonSet)>,
    services: Vec<(String, Service)>,
    configmaps: Vec<(String, ConfigMap)>,
    serviceaccounts: Vec<(String, ServiceAccount)>,
    clusterroles: Vec<(String, ClusterRole)>,
    clusterrolebindings: Vec<(String, ClusterRoleBinding)>,
    pdbs: Vec<(String, PodDisruptionBudget)>,
}

fn parse<T: serde::de::DeserializeOwned>(file: &str, text: &str) -> T {
    serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn load(dir: &Path) -> Variant {
    let kpath = dir.join("kustomization.yaml");
    let ktext =
        std::fs::read_to_string(&kpath).unwrap_or_else(|e| panic!("{}: {e}", kpath.display()));
    let k: Kustomization = parse("kustomization.yaml", &ktext);
    assert_eq!(k.api_version, "kustomize.config.k8s.io/v1beta1");
    assert_eq!(k.kind, "Kustomization");
    let mut v = Variant {
        dir: dir.to_path_buf(),
        ..Variant::default()
    };
    for file in &k.resources {
        let path = dir.join(file);
        assert!(
            path.is_file(),
            "{}: listed in kustomization.yaml but missing",
            path.display()
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.lines().any(|l| l.trim_end() == "---"),
            "{file}: one object per file, so that each file's kind is clear"
        );
        let meta: TypeMeta = parse(file, &text);
        let f = file.clone();
        match (meta.api_version.as_str(), meta.kind.as_str()) {
            ("apps/v1", "Deployment") => v.deployments.push((f, parse(file, &text))),
            ("apps/v1", "DaemonSet") => v.daemonsets.push((f, parse(file, &text))),
            ("v1", "Service") => v.services.push((f, parse(file, &text))),
            ("v1", "ConfigMap") => v.configmaps.push((f, parse(file, &text))),
            ("v1", "ServiceAccount") => v.serviceaccounts.push((f, parse(file, &text))),
            ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
                v.clusterroles.push((f, parse(file, &text)))
            }
            ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                v.clusterrolebindings.push((f, parse(file, &text)))
            }
            ("policy/v1", "PodDisruptionBudget") => v.pdbs.push((f, parse(file, &text))),
            (api, kind) => panic!("{file}: {api} {kind} is not a kind these tests check"),
        }
    }
    v.kustomization = Some(k);
    v
}

/// A pod-owning workload, Deployment or DaemonSet.
struct Workload<'a> {
    what: String,
    selector: BTreeMap<String, String>,
    template: &'a PodTemplateSpec,
}

impl Variant {
    fn kustomization(&self) -> &Kustomization {
        self.kustomization.as_ref().unwrap()
    }

    fn workloads(&self) -> Vec<Workload<'_>> {
        let deployments = self.deployments.iter().map(|(f, d)| {
            let spec = d.spec.as_ref().expect("spec");
            (f, "Deployment", &d.metadata, &spec.selector, &spec.template)
        });
        let daemonsets = self.daemonsets.iter().map(|(f, d)| {
            let spec = d.spec.as_ref().expect("spec");
            (f, "DaemonSet", &d.metadata, &spec.selector, &spec.template)
        });
        deployments
            .chain(daemonsets)
            .map(|(f, kind, meta, selector, template)| {
                assert!(
                    selector.match_expressions.is_none(),
                    "{f}: matchLabels only"
                );
                Workload {
                    what: format!("{f} ({kind} {})", name(meta)),
                    selector: selector.match_labels.clone().unwrap_or_default(),
                    template,
                }
            })
            .collect()
    }

    /// The config a ConfigMap holds under `clusterdns.yaml`, parsed.
    fn shipped_config(&self, configmap: &str) -> Config {
        let text = self
            .configmap(configmap)
            .data
            .as_ref()
            .and_then(|d| d.get("clusterdns.yaml"))
            .unwrap_or_else(|| panic!("ConfigMap {configmap} has no clusterdns.yaml"));
        Config::from_yaml(text, Path::new("clusterdns.yaml"))
            .unwrap_or_else(|e| panic!("ConfigMap {configmap}: {e}"))
    }

    fn configmap(&self, name_: &str) -> &ConfigMap {
        self.configmaps
            .iter()
            .map(|(_, c)| c)
            .find(|c| name(&c.metadata) == name_)
            .unwrap_or_else(|| panic!("ConfigMap {name_} is not in {}", self.dir.display()))
    }
}

fn name(m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> &str {
    m.name.as_deref().expect("metadata.name")
}

fn labels(
    m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> BTreeMap<String, String> {
    m.labels.clone().unwrap_or_default()
}

fn subset(sel: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    sel.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn coredns_pod_labels() -> BTreeMap<String, String> {
    COREDNS_POD_LABELS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The config a pod runs with: the `--config` path from its args, the volume mounted there, the
/// ConfigMap and key behind it, parsed and validated.
struct PodConfig {
    config: Config,
    text: String,
    configmap: String,
}

fn pod_config(v: &Variant, w: &Workload<'_>, c: &Container) -> PodConfig {
    let args = c.args.clone().unwrap_or_default();
    let i = args
        .iter()
        .position(|a| a == "--config")
        .unwrap_or_else(|| panic!("{}: no --config in {args:?}", w.what));
    let path = PathBuf::from(&args[i + 1]);
    let (dir, key) = (
        path.parent().unwrap(),
        path.file_name().unwrap().to_str().unwrap(),
    );
    let mounts = c.volume_mounts.clone().unwrap_or_default();
    let mount = mounts
        .iter()
        .find(|m| Path::new(&m.mount_path) == dir)
        .unwrap_or_else(|| panic!("{}: nothing is mounted at {}", w.what, dir.display()));
    assert_eq!(
        mount.read_only,
        Some(true),
        "{}: the config mount is read-only",
        w.what
    );
    let spec = w.template.spec.as_ref().unwrap();
    let vol = spec
        .volumes
        .iter()
        .flatten()
        .find(|vol| vol.name == mount.name)
        .unwrap_or_else(|| panic!("{}: no volume {}", w.what, mount.name));
    let cmv = vol
        .config_map
        .as_ref()
        .unwrap_or_else(|| panic!("{}: volume {} is not a ConfigMap", w.what, vol.name));
    if let Some(items) = &cmv.items {
        assert!(
            items.iter().any(|it| it.key == key && it.path == key),
            "{}: the ConfigMap volume's items leave out {key}",
            w.what
        );
    }
    let cm = v.configmap(&cmv.name);
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .unwrap_or_else(|| panic!("ConfigMap {} has no key {key}", cmv.name))
        .clone();
    let config = Config::from_yaml(&text, Path::new(key))
        .unwrap_or_else(|e| panic!("ConfigMap {}: {e}", cmv.name));
    config
        .validate()
        .unwrap_or_else(|e| panic!("ConfigMap {}: {e}", cmv.name));
    PodConfig {
        config,
        text,
        configmap: cmv.name.clone(),
    }
}

// ----------------------------------------------------------------------------------------------
// Invariants shared by both variants
// ----------------------------------------------------------------------------------------------

fn port_number(c: &Container, port: &IntOrString) -> (i32, String) {
    match port {
        IntOrString::Int(n) => {
            let p = c.ports.iter().flatten().find(|p| p.container_port == *n);
            (
                *n,
                p.and_then(|p| p.protocol.clone())
                    .unwrap_or_else(|| "TCP".into()),
            )
        }
        IntOrString::String(s) => {
            let p = c
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(s))
                .unwrap_or_else(|| panic!("no container port named {s}"));
            (
                p.container_port,
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
            )
        }
    }
}

fn named_port(c: &Container, name_: &str) -> Option<(i32, String)> {
    c.ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some(name_))
        .map(|p| {
            (
                p.container_port,
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
            )
        })
}

/// The liveness probe keeps kubeadm's CoreDNS timings (60 s initial delay, 5 s timeout, one
/// success, five failures).
fn assert_kubeadm_liveness(c: &Container, what: &str) {
    let live = c.liveness_probe.as_ref().expect("liveness probe");
    assert_eq!(
        (
            live.initial_delay_seconds,
            live.timeout_seconds,
            live.success_threshold,
            live.failure_threshold
        ),
        (Some(60), Some(5), Some(1), Some(5)),
        "{what}: kubeadm's liveness timings"
    );
}

/// An HTTP listener of the config against the container port and probe that reach it.
fn check_http(
    w: &Workload<'_>,
    c: &Container,
    host_network: bool,
    listen: &Option<String>,
    port_name: &str,
    probe: Option<&Probe>,
    path: &str,
) {
    let Some(listen) = listen else {
        assert!(
            named_port(c, port_name).is_none(),
            "{}: port {port_name} declared but nothing listens",
            w.what
        );
        assert!(
            probe.is_none(),
            "{}: a probe on {path} but its listener is off",
            w.what
        );
        return;
    };
    let addr: SocketAddr = parse_http_listen(listen).unwrap();
    let (port, proto) = named_port(c, port_name)
        .unwrap_or_else(|| panic!("{}: no container port named {port_name}", w.what));
    assert_eq!(
        (port, proto.as_str()),
        (addr.port() as i32, "TCP"),
        "{}: {port_name} vs the config's {listen}",
        w.what
    );
    if path == "/metrics" {
        return;
    }
    let probe = probe.unwrap_or_else(|| panic!("{}: no probe for {path}", w.what));
    let get = probe
        .http_get
        .as_ref()
        .unwrap_or_else(|| panic!("{}: the {path} probe is not httpGet", w.what));
    assert_eq!(get.path.as_deref(), Some(path), "{}", w.what);
    assert_eq!(
        get.port,
        IntOrString::String(port_name.into()),
        "{}: probe {path} uses the named port",
        w.what
    );
    assert_eq!(
        port_number(c, &get.port).0,
        addr.port() as i32,
        "{}",
        w.what
    );
    assert!(
        get.scheme.as_deref().unwrap_or("HTTP") == "HTTP",
        "{}",
        w.what
    );
    // The kubelet probes the pod IP unless told a host: the listener must be reachable there.
    let ip = addr.ip();
    assert!(
        !ip.is_loopback(),
        "{}: {listen} is loopback: the kubelet cannot probe it",
        w.what
    );
    if ip.is_unspecified() {
        assert_eq!(
            get.host, None,
            "{}: {listen} listens everywhere: probe the pod IP",
            w.what
        );
    } else {
        assert!(
            host_network,
            "{}: {listen} is a fixed address, only reachable from the kubelet on the host network",
            w.what
        );
        assert_eq!(
            get.host.as_deref(),
            Some(ip.to_string().as_str()),
            "{}: the probe must go to {ip}",
            w.what
        );
    }
}

fn memory_bytes(q: &str) -> u64 {
    let units = [
        ("Ki", 1u64 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("k", 1000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ];
    for (u, m) in units {
        if let Some(n) = q.strip_suffix(u) {
            return n.parse::<u64>().unwrap() * m;
        }
    }
    q.parse().unwrap()
}

/// Checks every DNS workload passes; returns its config.
fn check_dns_workload(v: &Variant, w: &Workload<'_>) -> PodConfig {
    let spec = w.template.spec.as_ref().expect("pod spec");
    let tlabels = w.template.metadata.as_ref().map(labels).unwrap_or_default();
    assert!(
        !w.selector.is_empty() && subset(&w.selector, &tlabels),
        "{}: selector {:?} must match the template's labels {tlabels:?}",
        w.what,
        w.selector
    );
    assert!(
        !subset(&w.selector, &coredns_pod_labels()),
        "{}: selector {:?} would also select CoreDNS's pods: add a clusterdns label",
        w.what,
        w.selector
    );
    assert_eq!(
        spec.dns_policy.as_deref(),
        Some("Default"),
        "{}: forward to the node's resolvers, not to itself",
        w.what
    );
    let host_network = spec.host_network == Some(true);

    let c = spec
        .containers
        .iter()
        .find(|c| c.name == "clusterdns")
        .unwrap_or_else(|| panic!("{}: no container clusterdns", w.what));
    assert_eq!(spec.containers.len(), 1, "{}", w.what);
    let image = c.image.as_deref().unwrap();
    assert!(
        v.kustomization()
            .images
            .iter()
            .any(|i| i.name == image && i.new_name.is_some() && i.new_tag.is_some()),
        "{}: image {image} must be set by kustomization.yaml's images",
        w.what
    );
    assert_eq!(
        c.args.as_deref(),
        Some(dockerfile().cmd.as_slice()),
        "{}: args must be the image's CMD",
        w.what
    );

    let pc = pod_config(v, w, c);
    let cfg = &pc.config;

    // DNS ports: every listen address is one port, answered on UDP and TCP.
    let ports: BTreeSet<u16> = cfg.listen.iter().map(|a| a.port()).collect();
    assert_eq!(
        ports.len(),
        1,
        "{}: the config listens on several ports {ports:?}",
        w.what
    );
    let dns_port = *ports.iter().next().unwrap() as i32;
    assert_eq!(
        named_port(c, "dns"),
        Some((dns_port, "UDP".into())),
        "{}",
        w.what
    );
    assert_eq!(
        named_port(c, "dns-tcp"),
        Some((dns_port, "TCP".into())),
        "{}",
        w.what
    );
    for a in &cfg.listen {
        if !a.ip().is_unspecified() {
            assert!(
                host_network,
                "{}: listening on {a} needs that address in the pod: only the host network has it",
                w.what
            );
        }
    }

    // HTTP listeners against ports and probes.
    check_http(
        w,
        c,
        host_network,
        &cfg.metrics.listen,
        "metrics",
        None,
        "/metrics",
    );
    check_http(
        w,
        c,
        host_network,
        &cfg.health.listen,
        "liveness-probe",
        c.liveness_probe.as_ref(),
        "/health",
    );
    check_http(
        w,
        c,
        host_network,
        &cfg.ready.listen,
        "readiness-probe",
        c.readiness_probe.as_ref(),
        "/ready",
    );
    assert_kubeadm_liveness(c, &w.what);
    let ready = c.readiness_probe.as_ref().expect("readiness probe");
    assert_eq!(ready.period_seconds.unwrap_or(10), 10, "{}", w.what);
    // No stray ports.
    let declared: BTreeSet<String> = c
        .ports
        .iter()
        .flatten()
        .filter_map(|p| p.name.clone())
        .collect();
    let expected: BTreeSet<String> = [
        "dns",
        "dns-tcp",
        "metrics",
        "liveness-probe",
        "readiness-probe",
    ]
    .into_iter()
    .filter(|n| match *n {
        "metrics" => cfg.metrics.listen.is_some(),
        "liveness-probe" => cfg.health.listen.is_some(),
        "readiness-probe" => cfg.ready.listen.is_some(),
        _ => true,
    })
    .map(String::from)
    .collect();
    assert_eq!(declared, expected, "{}: container ports", w.what);
    assert_eq!(
        c.ports.iter().flatten().count(),
        expected.len(),
        "{}: every port is named",
        w.what
    );

    // Security: non-root, only NET_BIND_SERVICE, read-only root filesystem.
    let psc = spec.security_context.as_ref().expect("pod securityContext");
    assert_eq!(psc.run_as_non_root, Some(true), "{}", w.what);
    let sc = c
        .security_context
        .as_ref()
        .expect("container securityContext");
    assert_eq!(sc.run_as_non_root, Some(true), "{}", w.what);
    assert_eq!(sc.run_as_user, Some(65532), "{}", w.what);
    assert_eq!(
        sc.run_as_user.map(|u| u.to_string()),
        Some(dockerfile().user.split(':').next().unwrap().to_string()),
        "{}: the image's USER",
        w.what
    );
    assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", w.what);
    assert_eq!(sc.read_only_root_filesystem, Some(true), "{}", w.what);
    assert!(!sc.privileged.unwrap_or(false), "{}", w.what);
    let caps = sc.capabilities.as_ref().expect("capabilities");
    assert_eq!(
        caps.drop.as_deref(),
        Some(&["ALL".to_string()][..]),
        "{}",
        w.what
    );
    assert_eq!(
        caps.add.as_deref(),
        Some(&["NET_BIND_SERVICE".to_string()][..]),
        "{}",
        w.what
    );
    for ic in spec.init_containers.iter().flatten() {
        let sc = ic.security_context.as_ref().unwrap_or_else(|| {
            panic!(
                "{}: init container {} has no securityContext",
                w.what, ic.name
            )
        });
        assert_eq!(
            sc.allow_privilege_escalation,
            Some(false),
            "{}: {}",
            w.what,
            ic.name
        );
        assert!(!sc.privileged.unwrap_or(false), "{}: {}", w.what, ic.name);
        let caps = sc.capabilities.as_ref().expect("capabilities");
        assert_eq!(
            caps.drop.as_deref(),
            Some(&["ALL".to_string()][..]),
            "{}: {}",
            w.what,
            ic.name
        );
        assert!(
            caps.add.iter().flatten().all(|c| c == "NET_ADMIN"),
            "{}: {} adds only NET_ADMIN",
            w.what,
            ic.name
        );
    }

    // Resources: requests for scheduling, a memory limit, no CPU limit (throttling stalls DNS).
    let res = c.resources.as_ref().expect("resources");
    let req = res.requests.clone().unwrap_or_default();
    let lim = res.limits.clone().unwrap_or_default();
    assert!(
        req.contains_key("cpu") && req.contains_key("memory"),
        "{}: cpu and memory requests",
        w.what
    );
    assert!(!lim.contains_key("cpu"), "{}: no CPU limit", w.what);
    let (rm, lm) = (
        memory_bytes(&req["memory"].0),
        memory_bytes(&lim.get("memory").expect("memory limit").0),
    );
    assert!(rm <= lm, "{}: memory request above its limit", w.what);

    // Shutdown: the grace period outlasts lameduck and the drain after it.
    let grace = spec.termination_grace_period_seconds.unwrap_or(30) as u64;
    let needed = (cfg.health.lameduck + cfg.health.drain_timeout).as_secs();
    assert!(
        grace > needed,
        "{}: terminationGracePeriodSeconds {grace} must exceed lameduck + drain ({needed}s)",
        w.what
    );

    // The ServiceAccount the pod runs as exists, in the pod's namespace.
    let sa = spec
        .service_account_name
        .as_deref()
        .unwrap_or_else(|| panic!("{}: no serviceAccountName", w.what));
    assert!(
        v.serviceaccounts
            .iter()
            .any(|(_, s)| name(&s.metadata) == sa
                && s.metadata.namespace.as_deref() == Some(NAMESPACE)),
        "{}: ServiceAccount {sa} is not in the manifests",
        w.what
    );

    // The critical-names state file outlives a container restart: its folder is a writable
    // emptyDir (the root filesystem is read-only), for the shipped config and for one that
    // turns critical names on as the config reference shows.
    if let Some(file) = cfg.hosts.as_ref().and_then(|h| h.state_file.as_ref()) {
        check_state_mount(w, c, file);
    }
    check_state_mount(w, c, &Path::new(STATE_DIR).join("critical.json"));

    // `clusterdns check` accepts the config as the pod will read it.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("clusterdns.yaml");
    std::fs::write(&file, &pc.text).unwrap();
    assert_check_accepts(&file, &format!("ConfigMap {}", pc.configmap));
    pc
}

/// What every variant holds to: its kustomization (also as `kubectl kustomize` renders it), its
/// one DNS workload, and RBAC for what that workload's config watches.
fn check_variant(v: &Variant) -> (Workload<'_>, PodConfig) {
    check_kustomization(v);
    check_kustomize_renders(v);
    let mut workloads = v.workloads();
    assert_eq!(workloads.len(), 1, "{}: one DNS workload", v.dir.display());
    let w = workloads.remove(0);
    let pc = check_dns_workload(v, &w);
    check_rbac(v, &w, &pc.config);
    (w, pc)
}

/// `file` lies in a writable `emptyDir` volume of the container: written by the server, kept
/// across restarts of the container (not of the pod: an emptyDir lives as long as the pod).
fn check_state_mount(w: &Workload<'_>, c: &Container, file: &Path) {
    let mounts = c.volume_mounts.clone().unwrap_or_default();
    let mount = mounts
        .iter()
        .filter(|m| file.starts_with(&m.mount_path))
        .max_by_key(|m| m.mount_path.len())
        .unwrap_or_else(|| {
            panic!(
                "{}: nothing is mounted where the state file {} goes (the root filesystem is \
                 read-only)",
                w.what,
                file.display()
            )
        });
    assert_ne!(
        mount.read_only,
        Some(true),
        "{}: {} is mounted read-only",
        w.what,
        mount.mount_path
    );
    let vol = w
        .template
        .spec
        .as_ref()
        .unwrap()
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)
        .unwrap_or_else(|| panic!("{}: no volume {}", w.what, mount.name));
    assert!(
        vol.empty_dir.is_some(),
        "{}: volume {} at {} is not an emptyDir",
        w.what,
        vol.name,
        mount.mount_path
    );
}

/// RBAC: the ServiceAccount is bound to a ClusterRole granting exactly list+watch on what the
/// server watches for this config, and nothing else. Without a cluster zone, no RBAC at all.
fn check_rbac(v: &Variant, w: &Workload<'_>, cfg: &Config) {
    let spec = w.template.spec.as_ref().unwrap();
    let sa_name = spec.service_account_name.as_deref().unwrap();
    if !cfg.cluster.enabled {
        assert!(
            v.clusterroles.is_empty() && v.clusterrolebindings.is_empty(),
            "{}: no API access without a cluster zone",
            w.what
        );
        let sa = v
            .serviceaccounts
            .iter()
            .find(|(_, s)| name(&s.metadata) == sa_name)
            .unwrap();
        let automount = spec
            .automount_service_account_token
            .or(sa.1.automount_service_account_token);
        assert_eq!(
            automount,
            Some(false),
            "{}: no token when nothing reads the API",
            w.what
        );
        return;
    }
    assert!(
        cfg.source.kubernetes.is_some(),
        "{}: the shipped config reads the API",
        w.what
    );
    let binding = v
        .clusterrolebindings
        .iter()
        .map(|(_, b)| b)
        .find(|b| {
            b.subjects.iter().flatten().any(|s| {
                s.kind == "ServiceAccount"
                    && s.name == sa_name
                    && s.namespace.as_deref() == Some(NAMESPACE)
            })
        })
        .unwrap_or_else(|| {
            panic!(
                "{}: ServiceAccount {sa_name} is bound by no ClusterRoleBinding",
                w.what
            )
        });
    assert_eq!(
        (
            binding.role_ref.api_group.as_str(),
            binding.role_ref.kind.as_str()
        ),
        ("rbac.authorization.k8s.io", "ClusterRole")
    );
    let role = v
        .clusterroles
        .iter()
        .map(|(_, r)| r)
        .find(|r| name(&r.metadata) == binding.role_ref.name)
        .unwrap_or_else(|| {
            panic!(
                "ClusterRole {} is not in the manifests",
                binding.role_ref.name
            )
        });
    assert!(role.aggregation_rule.is_none());

    let mut granted: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for r in role.rules.iter().flatten() {
        assert!(
            r.non_resource_urls.is_none() && r.resource_names.is_none(),
            "{r:?}"
        );
        let groups = r.api_groups.clone().unwrap_or_default();
        for g in &groups {
            for res in r.resources.iter().flatten() {
                assert!(g != "*" && res != "*", "no wildcards: {r:?}");
                granted
                    .entry((g.clone(), res.clone()))
                    .or_default()
                    .extend(r.verbs.iter().cloned());
            }
        }
    }
    let needed: BTreeSet<(String, String)> = clusterdns::zone::build::required_kinds(&cfg.cluster)
        .into_iter()
        .map(|k| {
            let (g, r) = match k {
                Kind::Namespace => ("", "namespaces"),
                Kind::Service => ("", "services"),
                Kind::EndpointSlice => ("discovery.k8s.io", "endpointslices"),
                Kind::Pod => ("", "pods"),
            };
            (g.to_string(), r.to_string())
        })
        .collect();
    let have: BTreeSet<(String, String)> = granted.keys().cloned().collect();
    assert_eq!(
        have,
        needed,
        "ClusterRole {}: resources vs what the server watches with this config",
        name(&role.metadata)
    );
    let list_watch: BTreeSet<String> = ["list".to_string(), "watch".to_string()].into();
    for (res, verbs) in &granted {
        assert_eq!(
            verbs,
            &list_watch,
            "ClusterRole {}: {res:?}",
            name(&role.metadata)
        );
    }
    assert!(
        !needed.contains(&(String::new(), "pods".into()))
            || cfg.cluster.pods == clusterdns::config::PodsMode::Verified,
        "pods are watched only for pods: verified"
    );
}

/// kustomization.yaml lists every manifest file in its folder, and each listed file exists
/// (checked by `load`); every object lands in kube-system.
fn check_kustomization(v: &Variant) {
    let k = v.kustomization();
    assert_eq!(k.namespace.as_deref(), Some(NAMESPACE));
    let listed: BTreeSet<&str> = k.resources.iter().map(String::as_str).collect();
    assert_eq!(
        listed.len(),
        k.resources.len(),
        "{}: a resource listed twice",
        v.dir.display()
    );
    for e in std::fs::read_dir(&v.dir).unwrap().flatten() {
        let f = e.file_name().to_string_lossy().to_string();
        if (f.ends_with(".yaml") || f.ends_with(".yml")) && f != "kustomization.yaml" {
            assert!(
                listed.contains(f.as_str()),
                "{}/{f} is not listed in kustomization.yaml",
                v.dir.display()
            );
        }
        if e.path().is_dir() {
            assert!(
                e.path().join("kustomization.yaml").is_file(),
                "{}/{f}/ has manifests but no kustomization.yaml",
                v.dir.display()
            );
        }
    }
    let metas = v
        .deployments
        .iter()
        .map(|(f, o)| (f, &o.metadata))
        .chain(v.daemonsets.iter().map(|(f, o)| (f, &o.metadata)))
        .chain(v.services.iter().map(|(f, o)| (f, &o.metadata)))
        .chain(v.configmaps.iter().map(|(f, o)| (f, &o.metadata)))
        .chain(v.serviceaccounts.iter().map(|(f, o)| (f, &o.metadata)))
        .chain(v.pdbs.iter().map(|(f, o)| (f, &o.metadata)));
    for (f, m) in metas {
        assert_eq!(m.namespace.as_deref(), Some(NAMESPACE), "{f}: namespace");
    }
}

/// `kubectl kustomize` renders the folder (`scripts/install-test-deps.sh` installs kubectl).
fn check_kustomize_renders(v: &Variant) {
    let out = Command::new(require("kubectl"))
        .arg("kustomize")
        .arg(&v.dir)
        .output()
        .expect("run kubectl kustomize");
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        v.dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for i in &v.kustomization().images {
        let want = format!(
            "image: {}:{}",
            i.new_name.as_ref().unwrap(),
            i.new_tag.as_ref().unwrap()
        );
        assert!(
            text.contains(&want),
            "kubectl kustomize {}: no `{want}`",
            v.dir.display()
        );
    }
}

// ----------------------------------------------------------------------------------------------
// The kube-dns variant
// ----------------------------------------------------------------------------------------------

#[test]
fn kube_dns_manifests_hold_their_invariants() {
    let v = load(&manifests_dir());
    let (w, pc) = check_variant(&v);
    let cfg = &pc.config;
    assert!(v.daemonsets.is_empty());
    let (_, d) = &v.deployments[0];
    assert_eq!(name(&d.metadata), "clusterdns");
    let spec = d.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(2));

    let pod = w.template.spec.as_ref().unwrap();
    let tlabels = labels(w.template.metadata.as_ref().unwrap());
    assert_eq!(
        tlabels.get("k8s-app").map(String::as_str),
        Some("kube-dns"),
        "the pods join the kube-dns Service"
    );
    assert_eq!(
        pod.priority_class_name.as_deref(),
        Some("system-cluster-critical")
    );
    assert_ne!(pod.host_network, Some(true));
    assert!(
        cfg.listen.iter().all(|a| a.ip().is_unspecified()),
        "listen on the pod's addresses: {:?}",
        cfg.listen
    );
    assert!(cfg.cluster.enabled);
    // Spread across nodes: anti-affinity or a topology spread on the hostname, for these pods.
    let spread = pod.topology_spread_constraints.iter().flatten().any(|t| {
        t.topology_key == "kubernetes.io/hostname"
            && t.label_selector
                .as_ref()
                .and_then(|s| s.match_labels.as_ref())
                .is_some_and(|m| subset(m, &tlabels))
    });
    let anti = pod
        .affinity
        .as_ref()
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .is_some_and(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .iter()
                .flatten()
                .map(|p| &p.pod_affinity_term)
                .chain(
                    a.required_during_scheduling_ignored_during_execution
                        .iter()
                        .flatten(),
                )
                .any(|t| {
                    t.topology_key == "kubernetes.io/hostname"
                        && t.label_selector
                            .as_ref()
                            .and_then(|s| s.match_labels.as_ref())
                            .is_some_and(|m| subset(m, &tlabels))
                })
        });
    assert!(
        spread && anti,
        "replicas spread across nodes (topologySpreadConstraints and podAntiAffinity)"
    );

    // The kube-dns Service: same name, IP and selector as the one CoreDNS had.
    assert_eq!(v.services.len(), 1);
    let (_, svc) = &v.services[0];
    assert_eq!(name(&svc.metadata), "kube-dns");
    assert_eq!(
        labels(&svc.metadata).get("k8s-app").map(String::as_str),
        Some("kube-dns")
    );
    let ann = svc.metadata.annotations.clone().unwrap_or_default();
    let s = svc.spec.as_ref().unwrap();
    assert_eq!(s.cluster_ip.as_deref(), Some("10.96.0.10"));
    let sel = s.selector.clone().unwrap_or_default();
    assert_eq!(
        sel,
        coredns_pod_labels(),
        "the Service selects CoreDNS's and clusterdns's pods alike (a migration without a gap)"
    );
    assert!(subset(&sel, &tlabels));
    let c = &pod.containers[0];
    let ports: BTreeSet<(String, i32, String)> = s
        .ports
        .iter()
        .flatten()
        .map(|p| {
            (
                p.name.clone().unwrap_or_default(),
                p.port,
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
            )
        })
        .collect();
    let want: BTreeSet<(String, i32, String)> = [
        ("dns", 53, "UDP"),
        ("dns-tcp", 53, "TCP"),
        ("metrics", 9153, "TCP"),
    ]
    .iter()
    .map(|(n, p, pr)| (n.to_string(), *p, pr.to_string()))
    .collect();
    assert_eq!(ports, want, "kube-dns Service ports");
    for p in s.ports.iter().flatten() {
        let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into());
        let target = match p.target_port.clone().unwrap_or(IntOrString::Int(p.port)) {
            IntOrString::Int(n) => (n, proto.clone()),
            named => port_number(c, &named),
        };
        let named = named_port(c, p.name.as_deref().unwrap()).unwrap();
        assert_eq!(
            target, named,
            "Service port {:?} reaches the container port of the same name",
            p.name
        );
        assert_eq!(named.1, proto, "Service port {:?}: protocol", p.name);
    }
    let metrics_port = parse_http_listen(cfg.metrics.listen.as_deref().expect("metrics on"))
        .unwrap()
        .port();
    assert_eq!(
        ann.get("prometheus.io/scrape").map(String::as_str),
        Some("true")
    );
    assert_eq!(
        ann.get("prometheus.io/port"),
        Some(&metrics_port.to_string())
    );

    // The PodDisruptionBudget covers clusterdns's pods, not CoreDNS's (two budgets over one pod
    // make evictions fail).
    assert_eq!(v.pdbs.len(), 1);
    let pdb = v.pdbs[0].1.spec.as_ref().unwrap();
    assert_eq!(pdb.max_unavailable, Some(IntOrString::Int(1)));
    assert!(pdb.min_available.is_none());
    let psel = pdb
        .selector
        .as_ref()
        .and_then(|s| s.match_labels.clone())
        .unwrap_or_default();
    assert!(
        !psel.is_empty() && subset(&psel, &tlabels),
        "the PDB selects the pods"
    );
    assert!(
        !subset(&psel, &coredns_pod_labels()),
        "the PDB must not also select CoreDNS's pods"
    );
}

#[test]
fn kube_dns_configmap_does_what_kubeadms_corefile_did() {
    let v = load(&manifests_dir());
    let shipped = v.shipped_config("clusterdns");
    let kubeadm = convert_fixture("kubeadm/Corefile")
        .unwrap_or_else(|e| panic!("{e}"))
        .config;
    assert_eq!(shipped.listen, kubeadm.listen);
    assert_eq!(shipped.cluster, kubeadm.cluster);
    assert_eq!(shipped.source, kubeadm.source);
    let (a, b) = (&shipped.forward, &kubeadm.forward);
    assert_eq!(
        (
            a.enabled,
            &a.upstreams,
            &a.resolv_conf,
            &a.stub_domains,
            a.policy,
            a.force_tcp,
            a.prefer_udp,
            a.max_concurrent
        ),
        (
            b.enabled,
            &b.upstreams,
            &b.resolv_conf,
            &b.stub_domains,
            b.policy,
            b.force_tcp,
            b.prefer_udp,
            b.max_concurrent
        )
    );
    // The cache's caps are kubeadm's (`cache 30`); prefetch, serve-stale and the entry count keep
    // clusterdns's defaults on purpose.
    assert_eq!(
        (
            shipped.cache.enabled,
            shipped.cache.max_ttl,
            shipped.cache.max_negative_ttl
        ),
        (
            kubeadm.cache.enabled,
            kubeadm.cache.max_ttl,
            kubeadm.cache.max_negative_ttl
        )
    );
    assert_eq!(shipped.metrics, kubeadm.metrics);
    assert_eq!(shipped.health.listen, kubeadm.health.listen);
    assert_eq!(shipped.health.lameduck, kubeadm.health.lameduck);
    assert_eq!(shipped.ready, kubeadm.ready);
    assert_eq!(shipped.querylog.enabled, kubeadm.querylog.enabled);
}

// ----------------------------------------------------------------------------------------------
// The node-local variant
// ----------------------------------------------------------------------------------------------

/// A Service's clusterIP in a variant, by name.
fn service_ip(v: &Variant, service: &str) -> String {
    v.services
        .iter()
        .find(|(_, s)| name(&s.metadata) == service)
        .and_then(|(_, s)| s.spec.as_ref()?.cluster_ip.clone())
        .unwrap_or_else(|| panic!("no Service {service} with a clusterIP"))
}

/// The node-local DaemonSet: node-local mode, rolling updates with no gap, exactly the
/// privileges it uses, probes that reach their own pod's process.
fn check_node_local_workload(v: &Variant, ds: &DaemonSet, w: &Workload<'_>) -> PodConfig {
    let spec = w.template.spec.as_ref().expect("pod spec");
    let tlabels = labels(w.template.metadata.as_ref().unwrap());
    assert!(!w.selector.is_empty() && subset(&w.selector, &tlabels));
    assert!(!subset(&w.selector, &coredns_pod_labels()));
    // It must not join kube-dns: that Service would send queries to node addresses.
    assert_ne!(tlabels.get("k8s-app").map(String::as_str), Some("kube-dns"));
    assert_eq!(spec.dns_policy.as_deref(), Some("Default"));
    assert_eq!(spec.host_network, Some(true));
    assert_eq!(
        spec.priority_class_name.as_deref(),
        Some("system-node-critical")
    );
    assert!(
        spec.init_containers.is_none(),
        "clusterdns sets up the node itself"
    );
    assert_eq!(spec.containers.len(), 1);
    let c = &spec.containers[0];
    assert_eq!(c.name, "clusterdns");
    let image = c.image.as_deref().unwrap();
    assert!(
        v.kustomization()
            .images
            .iter()
            .any(|i| i.name == image && i.new_name.is_some() && i.new_tag.is_some())
    );
    assert_eq!(c.args.as_deref(), Some(dockerfile().cmd.as_slice()));
    let pc = pod_config(v, w, c);
    let cfg = &pc.config;
    assert!(cfg.nodelocal.enabled, "node-local mode");

    // Rolling updates: a surge pod beside the old one, never a node without a ready pod.
    let ru = ds
        .spec
        .as_ref()
        .unwrap()
        .update_strategy
        .as_ref()
        .expect("updateStrategy");
    assert_eq!(ru.type_.as_deref(), Some("RollingUpdate"));
    let ru = ru.rolling_update.as_ref().expect("rollingUpdate");
    assert_eq!(ru.max_surge, Some(IntOrString::Int(1)));
    assert_eq!(ru.max_unavailable, Some(IntOrString::Int(0)));
    // No ports: on the host network they are hostPorts, and the surge pod would never schedule.
    assert!(c.ports.is_none(), "no container ports");

    // Probes: exec through this pod's own unix sockets, on an emptyDir (per pod).
    let mounts = c.volume_mounts.clone().unwrap_or_default();
    let volume_at = |path: &Path| {
        let m = mounts
            .iter()
            .filter(|m| path.starts_with(&m.mount_path))
            .max_by_key(|m| m.mount_path.len())
            .unwrap_or_else(|| panic!("nothing mounted at {}", path.display()));
        spec.volumes
            .iter()
            .flatten()
            .find(|vol| vol.name == m.name)
            .unwrap()
            .clone()
    };
    for (listen, probe, path) in [
        (&cfg.health.listen, c.liveness_probe.as_ref(), "/health"),
        (&cfg.ready.listen, c.readiness_probe.as_ref(), "/ready"),
    ] {
        let listen = listen.as_deref().expect("endpoint on");
        let socket = Path::new(listen.strip_prefix("unix:").expect("a unix socket"));
        assert!(
            volume_at(socket).empty_dir.is_some(),
            "{listen}: on an emptyDir"
        );
        let exec = probe
            .and_then(|p| p.exec.as_ref())
            .unwrap_or_else(|| panic!("an exec probe for {path}"));
        assert_eq!(
            exec.command.as_deref().unwrap(),
            [
                format!("/{}", dockerfile().entrypoint[0].trim_start_matches('/')),
                "probe".into(),
                listen.to_string(),
                "--path".into(),
                path.to_string()
            ]
        );
    }
    assert_kubeadm_liveness(c, &w.what);

    // Privileges: root in the host network with NET_ADMIN (interface and rules), NET_RAW
    // (iptables-legacy) and NET_BIND_SERVICE; nothing else.
    let sc = c.security_context.as_ref().expect("securityContext");
    assert_eq!(sc.run_as_user, Some(0));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert!(!sc.privileged.unwrap_or(false));
    let caps = sc.capabilities.as_ref().unwrap();
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
    let added: BTreeSet<&str> = caps.add.iter().flatten().map(String::as_str).collect();
    assert_eq!(
        added,
        BTreeSet::from(["NET_ADMIN", "NET_RAW", "NET_BIND_SERVICE"])
    );
    // The xtables lock is the node's; the lease lock is on the node (it must outlive pods).
    let lock = volume_at(Path::new("/run/xtables.lock"));
    assert_eq!(
        lock.host_path.as_ref().map(|h| h.path.as_str()),
        Some("/run/xtables.lock")
    );
    let lease = volume_at(&cfg.nodelocal.lock_file);
    assert!(
        lease.host_path.is_some(),
        "the lease lock file is on the node"
    );
    assert_eq!(
        mounts.len(),
        5,
        "config, state, xtables lock, lease, probes"
    );
    // A critical-names state file (`hosts.state_file`) outlives a container restart here.
    check_state_mount(w, c, &Path::new(STATE_DIR).join("critical.json"));

    // Resources: requests, a memory limit, no CPU limit.
    let res = c.resources.as_ref().unwrap();
    let req = res.requests.clone().unwrap_or_default();
    let lim = res.limits.clone().unwrap_or_default();
    assert!(req.contains_key("cpu") && req.contains_key("memory"));
    assert!(!lim.contains_key("cpu"));
    assert!(memory_bytes(&req["memory"].0) <= memory_bytes(&lim["memory"].0));
    let grace = spec.termination_grace_period_seconds.unwrap_or(30) as u64;
    assert!(grace > (cfg.health.lameduck + cfg.health.drain_timeout).as_secs());

    // `clusterdns check` accepts the config as the pod reads it.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("clusterdns.yaml");
    std::fs::write(&file, &pc.text).unwrap();
    assert_check_accepts(&file, &format!("ConfigMap {}", pc.configmap));
    pc
}

#[test]
fn node_local_manifests_hold_their_invariants() {
    let v = load(&manifests_dir().join("node-local"));
    check_kustomization(&v);
    check_kustomize_renders(&v);
    assert!(v.deployments.is_empty());
    assert_eq!(v.daemonsets.len(), 1);
    let workloads = v.workloads();
    let w = &workloads[0];
    let pc = check_node_local_workload(&v, &v.daemonsets[0].1, w);
    let cfg = &pc.config;
    check_rbac(&v, w, cfg);
    let tlabels = labels(w.template.metadata.as_ref().unwrap());
    assert!(
        !cfg.cluster.enabled,
        "a cache in front of kube-dns answers nothing from the API itself"
    );
    // It holds the link-local address and intercepts the kube-dns Service IP.
    let main = load(&manifests_dir());
    let kube_dns_ip: IpAddr = service_ip(&main, "kube-dns").parse().unwrap();
    assert!(
        cfg.nodelocal
            .addresses
            .contains(&"169.254.20.10".parse().unwrap())
    );
    assert!(cfg.nodelocal.addresses.contains(&kube_dns_ip));
    assert_eq!(cfg.nodelocal.port, 53);
    // The cluster and reverse zones go to kube-dns-upstream, which selects the kube-dns pods;
    // never to an address this cache intercepts (it would come back here).
    let upstream = service_ip(&v, "kube-dns-upstream");
    let (_, up) = v
        .services
        .iter()
        .find(|(_, s)| name(&s.metadata) == "kube-dns-upstream")
        .unwrap();
    let (_, kd) = &main.services[0];
    assert_eq!(
        up.spec.as_ref().unwrap().selector,
        kd.spec.as_ref().unwrap().selector
    );
    for zone in ["cluster.local", "in-addr.arpa", "ip6.arpa"] {
        assert_eq!(
            cfg.forward.domains.get(zone).map(|d| &d.upstreams),
            Some(&vec![upstream.clone()]),
            "forwarded domain {zone}"
        );
    }
    for ip in &cfg.nodelocal.addresses {
        assert_ne!(ip.to_string(), upstream);
    }
    assert!(
        cfg.forward.enabled && cfg.forward.upstreams.is_empty(),
        "the rest goes to the node's resolv.conf"
    );
    assert!(cfg.cache.enabled);
    // The metrics Service is headless and selects these pods on the metrics port.
    let (_, s) = v
        .services
        .iter()
        .find(|(_, s)| name(&s.metadata) == "clusterdns-node-local")
        .unwrap();
    let s = s.spec.as_ref().unwrap();
    assert_eq!(s.cluster_ip.as_deref(), Some("None"));
    assert!(subset(s.selector.as_ref().unwrap(), &tlabels));
    let metrics_port = parse_http_listen(cfg.metrics.listen.as_deref().unwrap())
        .unwrap()
        .port() as i32;
    assert_eq!(s.ports.as_ref().unwrap()[0].port, metrics_port);
}

#[test]
fn node_local_configmap_does_what_nodelocaldns_corefile_did() {
    let v = load(&manifests_dir().join("node-local"));
    let shipped = v.shipped_config("clusterdns-node-local");
    let nodelocal = convert_fixture("nodelocal/Corefile")
        .unwrap_or_else(|e| panic!("{e}"))
        .config;
    // The Corefile binds the link-local address (node-cache adds the kube-dns IP with
    // `-localip`); node-local mode listens on exactly its addresses, that one included.
    for a in &nodelocal.listen {
        assert!(shipped.dns_listen().contains(a), "{a}");
    }
    assert_eq!(shipped.cluster.enabled, nodelocal.cluster.enabled);
    assert_eq!(
        shipped.forward.domains.keys().collect::<Vec<_>>(),
        nodelocal.forward.domains.keys().collect::<Vec<_>>()
    );
    for (zone, d) in &nodelocal.forward.domains {
        let s = &shipped.forward.domains[zone];
        assert_eq!(
            s.force_tcp, d.force_tcp,
            "{zone}: force_tcp as NodeLocal DNSCache"
        );
        let ttls = |c: &Option<clusterdns::config::CacheConfig>| {
            c.as_ref().map(|c| {
                (
                    (c.max_ttl, c.max_negative_ttl, c.prefetch, c.serve_stale),
                    (c.max_entries, c.success_capacity, c.denial_capacity),
                )
            })
        };
        assert_eq!(ttls(&s.cache), ttls(&d.cache), "{zone}: its own cache");
    }
    assert_eq!(shipped.forward.upstreams, nodelocal.forward.upstreams);
    assert_eq!(shipped.forward.resolv_conf, nodelocal.forward.resolv_conf);
    assert_eq!(
        (shipped.cache.enabled, shipped.cache.max_ttl),
        (nodelocal.cache.enabled, nodelocal.cache.max_ttl)
    );
    assert_eq!(shipped.metrics, nodelocal.metrics);
    // Deliberate differences: the zones go to kube-dns-upstream (node-cache rewrites the
    // Corefile's kube-dns IP to it at start); health is a unix socket for exec probes.
    assert!(!nodelocal.forward.force_tcp && !shipped.forward.force_tcp);
}

#[test]
fn every_manifest_folder_is_a_tested_variant() {
    let mut variants = Vec::new();
    let mut stack = vec![manifests_dir()];
    while let Some(d) = stack.pop() {
        if d.join("kustomization.yaml").is_file() {
            variants.push(
                d.strip_prefix(manifests_dir())
                    .unwrap()
                    .display()
                    .to_string(),
            );
        }
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            }
        }
    }
    variants.sort();
    assert_eq!(
        variants,
        ["", "node-local"],
        "a new kustomization needs its own test here"
    );
}

// ----------------------------------------------------------------------------------------------
// The image
// ----------------------------------------------------------------------------------------------

struct Dockerfile {
    froms: Vec<String>,
    runs: Vec<String>,
    copies: Vec<String>,
    user: String,
    expose: BTreeSet<String>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
}

fn dockerfile() -> Dockerfile {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    // Join continuation lines, drop comments and the parser directive.
    let mut lines = Vec::new();
    let mut cur = String::new();
    for l in text.lines() {
        let t = l.trim();
        if t.starts_with('#') || t.is_empty() {
            continue;
        }
        if let Some(body) = t.strip_suffix('\\') {
            cur.push_str(body);
            cur.push(' ');
            continue;
        }
        cur.push_str(t);
        lines.push(std::mem::take(&mut cur));
    }
    let mut d = Dockerfile {
        froms: vec![],
        runs: vec![],
        copies: vec![],
        user: String::new(),
        expose: BTreeSet::new(),
        entrypoint: vec![],
        cmd: vec![],
    };
    let json = |s: &str| -> Vec<String> {
        serde_json::from_str(s).unwrap_or_else(|e| panic!("Dockerfile: {s} is not exec form: {e}"))
    };
    for l in lines {
        let (ins, rest) = l.split_once(' ').unwrap_or((&l, ""));
        let rest = rest.trim().to_string();
        match ins.to_ascii_uppercase().as_str() {
            "FROM" => d.froms.push(rest),
            "RUN" => d.runs.push(rest),
            "COPY" => d.copies.push(rest),
            "USER" => d.user = rest,
            "EXPOSE" => d.expose.extend(rest.split_whitespace().map(String::from)),
            "ENTRYPOINT" => d.entrypoint = json(&rest),
            "CMD" => d.cmd = json(&rest),
            "WORKDIR" | "ENV" | "ARG" | "LABEL" => {}
            other => panic!("Dockerfile: unexpected instruction {other}"),
        }
    }
    d
}

#[test]
fn dockerfile_matches_manifests_and_release_script() {
    let d = dockerfile();
    assert_eq!(
        d.froms.len(),
        2,
        "a builder stage and a runtime stage: {:?}",
        d.froms
    );
    // Builder: Debian 12, the runtime's glibc; Rust at least the crate's rust-version.
    let (image, alias) = d.froms[0]
        .split_once(" AS ")
        .or_else(|| d.froms[0].split_once(" as "))
        .expect("FROM ... AS build");
    assert_eq!(alias.trim(), "build");
    let version = image
        .strip_prefix("rust:")
        .and_then(|v| v.strip_suffix("-bookworm"))
        .unwrap_or_else(|| panic!("builder {image}: rust:X.Y-bookworm"));
    let cargo = std::fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let msrv = cargo
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .unwrap()
        .trim_matches('"')
        .to_string();
    let num = |v: &str| {
        v.split('.')
            .take(2)
            .map(|p| p.parse::<u32>().unwrap())
            .collect::<Vec<_>>()
    };
    assert!(
        num(version) >= num(&msrv),
        "builder rust {version} is older than rust-version {msrv}"
    );
    assert_eq!(d.froms[1], "gcr.io/distroless/cc-debian12:nonroot");
    // The build is the release script, and only it.
    assert!(
        d.runs
            .iter()
            .any(|r| r.ends_with("scripts/release-build.sh /out")),
        "{:?}",
        d.runs
    );
    assert!(
        !d.runs.iter().any(|r| r.contains("cargo ")),
        "cargo runs only inside scripts/release-build.sh"
    );
    assert!(
        d.runs
            .iter()
            .any(|r| r.contains("setcap cap_net_bind_service=+ep /out/clusterdns")),
        "port 53 as non-root"
    );
    assert_eq!(
        d.copies.last().map(String::as_str),
        Some("--from=build /out/clusterdns /clusterdns")
    );
    // Runtime: the manifests' user, entrypoint, command and ports.
    assert_eq!(d.user, "65532:65532");
    assert_eq!(d.entrypoint, ["/clusterdns"]);
    assert_eq!(
        d.cmd,
        ["serve", "--config", "/etc/clusterdns/clusterdns.yaml"]
    );
    let v = load(&manifests_dir());
    let c = &v.deployments[0]
        .1
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0];
    let ports: BTreeSet<String> = c
        .ports
        .iter()
        .flatten()
        .map(|p| match p.protocol.as_deref() {
            Some("UDP") => format!("{}/udp", p.container_port),
            _ if p.container_port == 53 => "53/tcp".to_string(),
            _ => p.container_port.to_string(),
        })
        .collect();
    assert_eq!(
        d.expose, ports,
        "EXPOSE vs the Deployment's container ports"
    );
    // The build context keeps what cargo needs and leaves target/ out.
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).unwrap();
    let ignored: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert!(ignored.contains(&"target/"), "{ignored:?}");
    for keep in [
        "src",
        "Cargo.toml",
        "Cargo.lock",
        "scripts",
        "benches",
        "tests",
    ] {
        assert!(
            !ignored
                .iter()
                .any(|i| i.trim_end_matches('/') == keep || i.starts_with(&format!("{keep}/"))),
            ".dockerignore drops {keep}"
        );
    }
}
