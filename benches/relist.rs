//! Relists, outages and large object files, measured on the real (release) binary against the
//! project's test API server (`tests/it/apiserver/`). Run by hand, not in CI:
//!
//! ```sh
//! nice -n 10 cargo bench --bench relist -- --phase profile   # the 5,000-node profile, forced expiries
//! nice -n 10 cargo bench --bench relist -- --phase latency   # changes right after an expiry, small cluster
//! nice -n 10 cargo bench --bench relist -- --phase outage --outage-secs 1800
//! nice -n 10 cargo bench --bench relist -- --phase file      # the profile as YAML and JSON files
//! ```
//!
//! The 5,000-node profile (after the 2026 CoreDNS scale test): 150,000 pods, 8,200 services of
//! which 10 % headless, 100,000 endpoints in EndpointSlices of up to 100, 500 namespaces,
//! `pods: verified`. Objects look like `kubectl get -o json` prints them (owner references,
//! container specs, conditions, statuses: about 2 KB per pod), so decoding costs what it costs
//! in a cluster. `--pods`, `--services`, `--endpoints` resize it.
//!
//! - `profile`: the cluster served by the test API server, clusterdns synced, then forced
//!   expiries (every watch ends, the history is compacted past every resourceVersion given out:
//!   resuming gets 410 Gone). Reports steady RSS (next to CoreDNS's published sizing,
//!   (pods + services) / 1000 + 54 MB), peak RSS during each relist (`VmHWM`, reset before the
//!   expiry through `/proc/PID/clear_refs`), wrong answers seen by a client polling 600 names
//!   throughout, the time from the expiry to each kind's relisted state (the zone builder's
//!   `list applied` log line), and how long a Service change made right after the expiry, and
//!   one made during the Pod relist, take to reach DNS.
//! - `latency`: a few hundred objects; `--samples` times: expire, change a service at once,
//!   poll DNS until the change is there. Reports p50/p90/p99/max.
//! - `outage`: the test API server stopped for `--outage-secs` (default 1800) while a client
//!   polls (each name once a second) and `/ready` and `clusterdns_watch_staleness_seconds` are
//!   read every 10 s; a change is made during the outage. Reports wrong answers, `/ready`
//!   failures, the staleness reached, and how long after the server's return the watch resumed.
//! - `file`: the profile written as a `kind: List` in YAML and in JSON; `clusterdns check` and
//!   `clusterdns serve --objects` on each: load time and peak RSS.

#[path = "../tests/it/apiserver/mod.rs"]
#[allow(unused_imports)]
mod apiserver;
#[allow(dead_code)] // each bench uses some of the shared helpers
mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use apiserver::ApiServer;
use common::{RD, arg, num, question, status_kib};
use serde_json::{Value, json};

// ---- the cluster ---------------------------------------------------------------------------

/// The shape of the generated cluster.
#[derive(Clone, Copy, Debug)]
struct Profile {
    namespaces: usize,
    services: usize,
    endpoints: usize,
    pods: usize,
}

impl Profile {
    fn from_args() -> Profile {
        Profile {
            namespaces: num("--namespaces", 500),
            services: num("--services", 8_200),
            endpoints: num("--endpoints", 100_000),
            pods: num("--pods", 150_000),
        }
    }
}

fn pod_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 64 + (i >> 16) as u8, (i >> 8) as u8, i as u8)
}

fn cluster_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 96 + (i >> 16) as u8, (i >> 8) as u8, i as u8)
}

const TS: &str = "2026-11-02T10:00:00Z";

fn uid(kind: u8, i: usize) -> String {
    format!("{kind:08x}-0000-4000-8000-{i:012x}")
}

/// A pod as `kubectl get -o json` shows it, trimmed of nothing DNS would skip anyway.
fn pod_json(i: usize, ns: &str, app: &str) -> Value {
    let ip = pod_ip(i).to_string();
    let name = format!("{app}-7d4b9c8f6-{i:05x}");
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "namespace": ns, "uid": uid(1, i), "creationTimestamp": TS,
            "generateName": format!("{app}-7d4b9c8f6-"),
            "labels": { "app": app, "pod-template-hash": "7d4b9c8f6" },
            "ownerReferences": [{ "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{app}-7d4b9c8f6"),
                "uid": uid(2, i), "controller": true, "blockOwnerDeletion": true }],
        },
        "spec": {
            "containers": [{
                "name": "app", "image": format!("registry.example.com/{app}:1.4.2"),
                "imagePullPolicy": "IfNotPresent",
                "ports": [{ "containerPort": 8080, "name": "http", "protocol": "TCP" }],
                "resources": { "requests": { "cpu": "100m", "memory": "128Mi" }, "limits": { "memory": "256Mi" } },
                "env": [{ "name": "POD_NAME", "valueFrom": { "fieldRef": { "apiVersion": "v1", "fieldPath": "metadata.name" } } }],
                "volumeMounts": [{ "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "name": "kube-api-access", "readOnly": true }],
                "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
            }],
            "dnsPolicy": "ClusterFirst", "enableServiceLinks": true, "nodeName": format!("node-{:04}", i % 5000),
            "preemptionPolicy": "PreemptLowerPriority", "priority": 0, "restartPolicy": "Always",
            "schedulerName": "default-scheduler", "serviceAccountName": "default", "terminationGracePeriodSeconds": 30,
            "tolerations": [
                { "effect": "NoExecute", "key": "node.kubernetes.io/not-ready", "operator": "Exists", "tolerationSeconds": 300 },
                { "effect": "NoExecute", "key": "node.kubernetes.io/unreachable", "operator": "Exists", "tolerationSeconds": 300 },
            ],
        },
        "status": {
            "phase": "Running", "podIP": ip, "podIPs": [{ "ip": ip }], "hostIP": format!("192.168.{}.{}", (i % 5000) / 250, (i % 5000) % 250 + 1),
            "qosClass": "Burstable", "startTime": TS,
            "conditions": [
                { "lastProbeTime": null, "lastTransitionTime": TS, "status": "True", "type": "Initialized" },
                { "lastProbeTime": null, "lastTransitionTime": TS, "status": "True", "type": "Ready" },
                { "lastProbeTime": null, "lastTransitionTime": TS, "status": "True", "type": "ContainersReady" },
                { "lastProbeTime": null, "lastTransitionTime": TS, "status": "True", "type": "PodScheduled" },
            ],
            "containerStatuses": [{
                "name": "app", "ready": true, "restartCount": 0, "started": true,
                "image": format!("registry.example.com/{app}:1.4.2"),
                "imageID": "registry.example.com/app@sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                "containerID": format!("containerd://{:064x}", i),
                "lastState": {}, "state": { "running": { "startedAt": TS } },
            }],
        },
    })
}

fn service_json(i: usize, ns: &str, headless: bool) -> Value {
    let name = format!("svc-{i}");
    let ip = cluster_ip(i).to_string();
    let (cip, cips) = if headless {
        (json!("None"), json!(["None"]))
    } else {
        (json!(ip), json!([ip]))
    };
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": { "name": name, "namespace": ns, "uid": uid(3, i), "creationTimestamp": TS,
            "labels": { "app": name },
            "annotations": { "kubectl.kubernetes.io/last-applied-configuration": format!("{{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{{\"name\":\"{name}\",\"namespace\":\"{ns}\"}}}}\n") } },
        "spec": { "clusterIP": cip, "clusterIPs": cips, "internalTrafficPolicy": "Cluster",
            "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
            "ports": [{ "name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080 }],
            "selector": { "app": name }, "sessionAffinity": "None", "type": "ClusterIP" },
        "status": { "loadBalancer": {} },
    })
}

fn slice_json(svc: usize, part: usize, ns: &str, pods: &[(usize, String)]) -> Value {
    let name = format!("svc-{svc}");
    let eps: Vec<Value> = pods
        .iter()
        .map(|(i, pod)| {
            json!({ "addresses": [pod_ip(*i).to_string()],
                "conditions": { "ready": true, "serving": true, "terminating": false },
                "nodeName": format!("node-{:04}", i % 5000),
                "targetRef": { "kind": "Pod", "name": pod, "namespace": ns, "uid": uid(1, *i) } })
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
        "metadata": { "name": format!("{name}-{part:05x}"), "namespace": ns, "uid": uid(4, svc * 16 + part),
            "creationTimestamp": TS, "generateName": format!("{name}-"),
            "labels": { "kubernetes.io/service-name": name,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io" },
            "annotations": { "endpoints.kubernetes.io/last-change-trigger-time": TS } },
        "endpoints": eps,
        "ports": [{ "name": "http", "port": 8080, "protocol": "TCP" }],
    })
}

/// What a polling client asks and expects.
type Expect = Vec<(String, Vec<Ipv4Addr>)>;

/// Generates the profile, handing each object to `emit` (namespaces, services, slices, pods);
/// returns a sample of names and their answers to poll.
fn generate(p: &Profile, emit: &mut dyn FnMut(Value)) -> Expect {
    let ns = |i: usize| format!("ns-{}", i % p.namespaces);
    for n in 0..p.namespaces {
        emit(json!({ "apiVersion": "v1", "kind": "Namespace",
            "metadata": { "name": format!("ns-{n}"), "uid": uid(5, n), "creationTimestamp": TS,
                "labels": { "kubernetes.io/metadata.name": format!("ns-{n}") } },
            "spec": { "finalizers": ["kubernetes"] }, "status": { "phase": "Active" } }));
    }
    // Endpoints per service: a hundredth of the services are large (200 endpoints, two slices),
    // the rest share what is left evenly.
    let big = (p.services / 100).max(1);
    let big_each = 200.min(p.endpoints / p.services.max(1) * 20).max(1);
    let rest = p.endpoints.saturating_sub(big * big_each);
    let small = p.services - big;
    let mut counts: Vec<usize> = (0..p.services)
        .map(|i| {
            if i < big {
                big_each
            } else {
                rest / small + usize::from((i - big) < rest % small)
            }
        })
        .collect();
    counts.rotate_left(big / 2); // the large ones spread out, not all first
    let mut expect = Vec::new();
    let mut pod_ns: Vec<(String, String)> = Vec::with_capacity(p.pods);
    let mut next_pod = 0;
    let mut slices = Vec::new();
    for (i, &n) in counts.iter().enumerate() {
        let headless = i % 10 == 0;
        let sns = ns(i);
        emit(service_json(i, &sns, headless));
        let mut eps = Vec::new();
        for _ in 0..n {
            if next_pod >= p.pods {
                break;
            }
            let pod = format!("svc-{i}-7d4b9c8f6-{next_pod:05x}");
            pod_ns.push((sns.clone(), format!("svc-{i}")));
            eps.push((next_pod, pod));
            next_pod += 1;
        }
        if i % 27 == 0 && expect.len() < 300 && (!headless || eps.len() <= 12) {
            let mut want: Vec<Ipv4Addr> = if headless {
                eps.iter().map(|(e, _)| pod_ip(*e)).collect()
            } else {
                vec![cluster_ip(i)]
            };
            want.sort();
            expect.push((format!("svc-{i}.{sns}.svc.cluster.local"), want));
        }
        for (part, chunk) in eps.chunks(100).enumerate() {
            slices.push(slice_json(i, part, &sns, chunk));
        }
        if slices.len() >= 1000 {
            slices.drain(..).for_each(&mut *emit);
        }
    }
    slices.drain(..).for_each(&mut *emit);
    for i in 0..p.pods {
        let (pns, app) = match pod_ns.get(i) {
            Some((n, a)) => (n.clone(), a.clone()),
            None => (ns(i), format!("job-{}", i % 997)),
        };
        let pod = pod_json(i, &pns, &app);
        if i % 500 == 7 && expect.len() < 600 {
            let dashed = pod_ip(i).to_string().replace('.', "-");
            expect.push((format!("{dashed}.{pns}.pod.cluster.local"), vec![pod_ip(i)]));
        }
        emit(pod);
    }
    expect
}

// ---- the server ----------------------------------------------------------------------------

/// A running release `clusterdns serve`, its addresses, and its log lines as they arrived.
struct Server {
    child: Child,
    dns: SocketAddr,
    metrics: Option<SocketAddr>,
    ready: Option<SocketAddr>,
    lines: mpsc::Receiver<(Instant, String)>,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// The bench's clients ask from loopback as fast as the server answers: exempt from the
    /// per-client rate limit (on by default, 1,000 a second), which would otherwise drop their
    /// questions and time them out.
    fn start(source: &str, extra: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("c.yaml");
        std::fs::write(
            &cfg,
            format!(
                "listen: [\"127.0.0.1:0\"]\nsource: {source}\nforward: {{enabled: false}}\nmetrics: {{listen: \"127.0.0.1:0\"}}\nhealth: {{listen: null}}\nready: {{listen: \"127.0.0.1:0\"}}\nserver: {{udp_workers: 1}}\ncluster: {{pods: verified}}\nlimits: {{exempt: [\"127.0.0.0/8\"]}}\n{extra}"
            ),
        )
        .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_clusterdns"))
            .args(["serve", "--config"])
            .arg(&cfg)
            .env("CLUSTERDNS_LOG", "info,hickory_server=warn")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start clusterdns");
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("RELIST_BENCH_ECHO").is_some() {
                    eprintln!("[server] {line}");
                }
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        let (mut dns, mut metrics, mut ready) = (None, None, None);
        while dns.is_none() || metrics.is_none() || ready.is_none() {
            let (_, l) = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("server output");
            if let Some(rest) = l.strip_prefix("clusterdns: listening ")
                && let Some((k, v)) = rest.split_once('=')
            {
                let a: SocketAddr = v.trim().parse().unwrap();
                match k {
                    "dns" => dns = Some(a),
                    "metrics" => metrics = Some(a),
                    "ready" => ready = Some(a),
                    _ => {}
                }
            }
        }
        Server {
            child,
            dns: dns.unwrap(),
            metrics,
            ready,
            lines: rx,
            _dir: dir,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for a log line containing every one of `parts`; returns when it arrived.
    fn wait_line(&self, parts: &[&str], within: Duration) -> (Instant, String) {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((t, l)) if parts.iter().all(|p| l.contains(p)) => return (t, l),
                Ok(_) => {}
                Err(_) => panic!("no log line with {parts:?} within {within:?}"),
            }
        }
    }

    /// Drops the log lines received so far.
    fn drain_lines(&self) {
        while self.lines.try_recv().is_ok() {}
    }

    fn http(&self, addr: Option<SocketAddr>, path: &str) -> (u16, String) {
        use std::io::Read;
        let Some(addr) = addr else {
            return (0, String::new());
        };
        let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
            return (0, String::new());
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        let status = out
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (status, out)
    }

    /// One metric family's values by its `kind` label.
    fn metric(&self, family: &str) -> BTreeMap<String, f64> {
        let (_, text) = self.http(self.metrics, "/metrics");
        text.lines()
            .filter_map(|l| l.strip_prefix(family)?.strip_prefix("{kind=\""))
            .filter_map(|l| {
                let (k, v) = l.split_once("\"}")?;
                Some((k.to_string(), v.trim().parse().ok()?))
            })
            .collect()
    }
}

/// CPU seconds (user + system) the process has used.
fn cpu_secs(pid: u32) -> f64 {
    stat_cpu_secs(&format!("/proc/{pid}/stat"))
}

/// CPU seconds (user + system) the process's thread named `name` has used.
fn thread_cpu_secs(pid: u32, name: &str) -> f64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten();
    tasks
        .flatten()
        .find(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name))
        .map_or(0.0, |t| {
            stat_cpu_secs(&t.path().join("stat").to_string_lossy())
        })
}

/// User + system time from a `stat` file of `/proc`, in seconds.
fn stat_cpu_secs(path: &str) -> f64 {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let rest = text.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // utime and stime are fields 14 and 15 of the line: 12 and 13 after the command name.
    let ticks = f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

fn mb(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Resets the process's peak RSS (`VmHWM`) to its current RSS.
fn reset_hwm(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

/// Steady RSS: the median of a few samples a quarter second apart.
fn steady_rss(pid: u32) -> u64 {
    let mut v: Vec<u64> = (0..7)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(250));
            status_kib(pid, "VmRSS:")
        })
        .collect();
    v.sort();
    v[v.len() / 2]
}

// ---- DNS ------------------------------------------------------------------------------------

/// The sorted A addresses of the answer, or `None` without a reply.
fn ask(sock: &UdpSocket, dns: SocketAddr, name: &str, id: u16) -> Option<Vec<Ipv4Addr>> {
    sock.send_to(&question(id, RD, name, 1), dns).ok()?;
    let mut buf = [0u8; 4096];
    loop {
        let (n, _) = sock.recv_from(&mut buf).ok()?;
        if n < 12 || u16::from_be_bytes([buf[0], buf[1]]) != id {
            continue; // a late reply to an earlier question
        }
        let m = hickory_proto::op::Message::from_vec(&buf[..n]).ok()?;
        let mut a: Vec<Ipv4Addr> = m
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                hickory_proto::rr::RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect();
        a.sort();
        return Some(a);
    }
}

fn socket() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s
}

/// Waits until `name` answers exactly `want`; how long that took.
fn until_answer(dns: SocketAddr, name: &str, want: &[Ipv4Addr], within: Duration) -> Duration {
    let sock = socket();
    let t0 = Instant::now();
    let mut id = 0u16;
    loop {
        id = id.wrapping_add(1);
        if ask(&sock, dns, name, id).as_deref() == Some(want) {
            return t0.elapsed();
        }
        assert!(t0.elapsed() < within, "{name} never answered {want:?}");
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// A client asking the sample names over and over, keeping what was wrong.
struct Poller {
    stop: Arc<AtomicBool>,
    asked: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<Vec<String>>,
}

impl Poller {
    /// `pause` between rounds over the names.
    fn start(dns: SocketAddr, expect: Expect, pause: Duration) -> Poller {
        let stop = Arc::new(AtomicBool::new(false));
        let asked = Arc::new(AtomicU64::new(0));
        let (flag, count) = (stop.clone(), asked.clone());
        let thread = std::thread::spawn(move || {
            let sock = socket();
            let mut wrong = Vec::new();
            let mut id = 0u16;
            while !flag.load(Ordering::Relaxed) {
                for (name, want) in &expect {
                    id = id.wrapping_add(1);
                    count.fetch_add(1, Ordering::Relaxed);
                    let got = ask(&sock, dns, name, id);
                    if got.as_ref() != Some(want) {
                        wrong.push(format!("{name}: {got:?}, want {want:?}"));
                    }
                }
                std::thread::sleep(pause);
            }
            wrong
        });
        Poller {
            stop,
            asked,
            thread,
        }
    }

    fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let wrong = self.thread.join().unwrap();
        (self.asked.load(Ordering::Relaxed), wrong)
    }
}

/// The `p` quantile of sorted `v`, in milliseconds.
fn pct(v: &[Duration], p: f64) -> f64 {
    common::pct(v, p).as_secs_f64() * 1e3
}

// ---- phases --------------------------------------------------------------------------------

fn api_with(p: &Profile) -> (ApiServer, Expect) {
    let (api, _) = ApiServer::start_blocking();
    let t0 = Instant::now();
    let expect = generate(p, &mut |v| {
        api.create(v);
    });
    api.create(service_json(900_000, "ns-0", false));
    eprintln!(
        "test API server filled with {p:?} in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    (api, expect)
}

fn kube_source(api: &ApiServer, dir: &Path) -> String {
    let kc = api.write_kubeconfig(dir);
    format!(
        "{{kubernetes: {{kubeconfig: {}, startup_timeout: 300s}}}}",
        kc.display()
    )
}

/// The probe service (`svc-900000.ns-0`) moved to a new address; the name and the address.
fn move_probe(api: &ApiServer, n: usize) -> (String, Vec<Ipv4Addr>) {
    let mut v = service_json(900_000, "ns-0", false);
    let ip = Ipv4Addr::new(10, 200, (n >> 8) as u8, n as u8);
    v["spec"]["clusterIP"] = json!(ip.to_string());
    v["spec"]["clusterIPs"] = json!([ip.to_string()]);
    api.update(v);
    ("svc-900000.ns-0.svc.cluster.local".into(), vec![ip])
}

fn profile() {
    let p = Profile::from_args();
    let (api, expect) = api_with(&p);
    let dir = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let s = Server::start(&kube_source(&api, dir.path()), "");
    s.wait_line(&["cluster zone synced"], Duration::from_secs(600));
    let synced = t0.elapsed();
    let (last, want) = expect.last().unwrap();
    until_answer(s.dns, last, want, Duration::from_secs(60));
    let sync_peak = status_kib(s.pid(), "VmHWM:");
    let sync_cpu = cpu_secs(s.pid());
    std::thread::sleep(Duration::from_secs(2));
    let steady = steady_rss(s.pid());
    let coredns_mb = (p.pods + p.services) as f64 / 1000.0 + 54.0;
    println!(
        "profile: {} pods, {} services ({} headless), {} endpoints, {} namespaces",
        p.pods,
        p.services,
        p.services.div_ceil(10),
        p.endpoints,
        p.namespaces
    );
    println!(
        "first sync: {:.2} s ({sync_cpu:.1} s of clusterdns CPU, peak RSS {:.1} MB); steady RSS {:.1} MB; CoreDNS's sizing (pods + services)/1000 + 54 MB = {:.1} MB: {:.2} of it (goal 0.20)",
        synced.as_secs_f64(),
        mb(sync_peak),
        mb(steady),
        coredns_mb,
        mb(steady) / coredns_mb
    );
    let rounds = num("--rounds", 3);
    for round in 0..rounds {
        s.drain_lines();
        let before = steady_rss(s.pid());
        reset_hwm(s.pid());
        let poller = Poller::start(s.dns, expect.clone(), Duration::ZERO);
        std::thread::sleep(Duration::from_millis(300));
        let cpu0 = cpu_secs(s.pid());
        let t0 = Instant::now();
        api.force_expiry();
        let (probe, probe_ip) = move_probe(&api, 2 * round + 1);
        let svc_change = until_answer(s.dns, &probe, &probe_ip, Duration::from_secs(120));
        let mut applied: BTreeMap<String, Duration> = BTreeMap::new();
        let mut during_pods = None;
        while applied.len() < 4 {
            let (t, line) = s.wait_line(&["list applied"], Duration::from_secs(600));
            let kind = line
                .split("kind=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("?")
                .to_string();
            applied.insert(kind.clone(), t - t0);
            if kind == "Service" && !applied.contains_key("Pod") && during_pods.is_none() {
                // Another change while the Pods are still being listed.
                let (probe, ip) = move_probe(&api, 2 * round + 2);
                during_pods = Some(until_answer(s.dns, &probe, &ip, Duration::from_secs(120)));
            }
        }
        let cpu = cpu_secs(s.pid()) - cpu0;
        std::thread::sleep(Duration::from_millis(500));
        let (asked, wrong) = poller.finish();
        let peak = status_kib(s.pid(), "VmHWM:");
        let after = steady_rss(s.pid());
        println!(
            "expiry {}: RSS before {:.1} MB, peak {:.1} MB during the relist ({:.3} x steady {:.1} MB; goal <= 1.2), after {:.1} MB",
            round + 1,
            mb(before),
            mb(peak),
            peak as f64 / steady as f64,
            mb(steady),
            mb(after)
        );
        println!(
            "  clusterdns CPU for the relist (and the polling client's queries): {cpu:.1} s; relisted state after the expiry: {}",
            applied
                .iter()
                .map(|(k, d)| format!("{k} {:.0} ms", d.as_secs_f64() * 1e3))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!(
            "  service change right after the expiry in DNS after {:.1} ms; one during the Pod relist after {}",
            svc_change.as_secs_f64() * 1e3,
            during_pods.map_or("(the Pods were done first)".into(), |d| format!(
                "{:.1} ms",
                d.as_secs_f64() * 1e3
            ))
        );
        println!(
            "  polling client: {asked} questions, {} wrong{}",
            wrong.len(),
            wrong
                .first()
                .map(|w| format!(" (first: {w})"))
                .unwrap_or_default()
        );
        std::thread::sleep(Duration::from_secs(2));
    }
}

fn latency() {
    let p = Profile {
        namespaces: 4,
        services: num("--services", 100),
        endpoints: num("--endpoints", 300),
        pods: num("--pods", 300),
    };
    let (api, _) = api_with(&p);
    // Bookmarks every 100 ms; expiries 150 ms apart.
    api.set_bookmark_interval(Some(Duration::from_millis(100)));
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&kube_source(&api, dir.path()), "");
    s.wait_line(&["cluster zone synced"], Duration::from_secs(60));
    let samples = num("--samples", 200);
    let mut took = Vec::with_capacity(samples);
    let mut relisted = Vec::with_capacity(samples);
    let cpu = |pid| (cpu_secs(pid), thread_cpu_secs(pid, "kube-source"));
    let cpu_before = cpu(s.pid());
    for i in 0..samples {
        s.drain_lines();
        let t0 = Instant::now();
        api.force_expiry();
        let (probe, ip) = move_probe(&api, i + 1);
        took.push(until_answer(s.dns, &probe, &ip, Duration::from_secs(30)));
        let mut kinds = Vec::new();
        let mut last = Duration::ZERO;
        while kinds.len() < 4 {
            let (t, line) = s.wait_line(&["list applied"], Duration::from_secs(30));
            last = t - t0;
            let kind = line
                .split("kind=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("?");
            kinds.push(format!("{kind} {:.1}", last.as_secs_f64() * 1e3));
        }
        if std::env::var_os("RELIST_BENCH_SAMPLES").is_some() {
            eprintln!(
                "sample {i}: change {:.1} ms; relisted: {}",
                took.last().unwrap().as_secs_f64() * 1e3,
                kinds.join(", ")
            );
        }
        relisted.push(last);
        std::thread::sleep(Duration::from_millis(150));
    }
    let cpu_after = cpu(s.pid());
    took.sort();
    relisted.sort();
    println!(
        "latency: {} objects; a change made right after an expiry, in DNS after p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({samples} expiries; goal p99 <= 10 ms)",
        p.namespaces + p.services + p.pods + p.services,
        pct(&took, 0.5),
        pct(&took, 0.9),
        pct(&took, 0.99),
        pct(&took, 1.0)
    );
    println!(
        "  every kind relisted after p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        pct(&relisted, 0.5),
        pct(&relisted, 0.99),
        pct(&relisted, 1.0)
    );
    println!(
        "  clusterdns CPU per expiry: {:.2} ms, of which the kube-source thread {:.2} ms",
        (cpu_after.0 - cpu_before.0) * 1e3 / samples as f64,
        (cpu_after.1 - cpu_before.1) * 1e3 / samples as f64
    );
}

fn outage() {
    let p = Profile {
        namespaces: 50,
        services: num("--services", 1000),
        endpoints: num("--endpoints", 5000),
        pods: num("--pods", 5000),
    };
    let secs = num("--outage-secs", 1800) as u64;
    let (api, expect) = api_with(&p);
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&kube_source(&api, dir.path()), "");
    s.wait_line(&["cluster zone synced"], Duration::from_secs(120));
    let (last, want) = expect.last().unwrap();
    until_answer(s.dns, last, want, Duration::from_secs(60));
    let rss_before = steady_rss(s.pid());
    let poller = Poller::start(s.dns, expect.clone(), Duration::from_secs(1));
    api.stop_blocking();
    let t0 = Instant::now();
    let (probe, moved) = move_probe(&api, 1);
    let (mut ready_fail, mut checks) = (0, 0);
    let mut staleness = Vec::new();
    while t0.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(
            Duration::from_secs(10).min(Duration::from_secs(secs).saturating_sub(t0.elapsed())),
        );
        checks += 1;
        if s.http(s.ready, "/ready").0 != 200 {
            ready_fail += 1;
        }
        let st = s.metric("clusterdns_watch_staleness_seconds");
        staleness.push((
            t0.elapsed().as_secs(),
            st.get("Service").copied().unwrap_or(-1.0),
        ));
    }
    api.restart_blocking();
    let back = Instant::now();
    let resumed = until_answer(s.dns, &probe, &moved, Duration::from_secs(120));
    let (probe, moved) = move_probe(&api, 2);
    let after = until_answer(s.dns, &probe, &moved, Duration::from_secs(60));
    let (asked, wrong) = poller.finish();
    let rss_after = steady_rss(s.pid());
    println!(
        "outage of {secs} s ({} services, {} pods): {asked} questions, {} wrong; /ready not 200 in {ready_fail} of {checks} checks",
        p.services,
        p.pods,
        wrong.len()
    );
    println!(
        "  clusterdns_watch_staleness_seconds{{kind=\"Service\"}}: {}",
        staleness
            .iter()
            .step_by((staleness.len() / 8).max(1))
            .chain(staleness.last())
            .map(|(t, v)| format!("{v:.0} s at {t} s"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  the change made during the outage in DNS {:.1} s after the server came back ({:.1} s with the wait); a change after that in {:.1} ms; RSS {:.1} MB before, {:.1} MB after",
        resumed.as_secs_f64(),
        back.elapsed().as_secs_f64(),
        after.as_secs_f64() * 1e3,
        mb(rss_before),
        mb(rss_after)
    );
    if let Some(w) = wrong.first() {
        println!("  first wrong answer: {w}");
    }
}

/// Writes the profile as a `kind: List`, YAML as `kubectl get -o yaml` prints it or JSON.
fn write_file(p: &Profile, path: &Path, yaml: bool) -> Expect {
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    if yaml {
        out.write_all(b"apiVersion: v1\nitems:\n").unwrap();
    } else {
        out.write_all(b"{\n    \"apiVersion\": \"v1\",\n    \"items\": [\n")
            .unwrap();
    }
    let mut first = true;
    let expect = generate(p, &mut |v| {
        if yaml {
            let text = serde_saphyr::to_string(&v).unwrap();
            for (i, line) in text.lines().enumerate() {
                out.write_all(if i == 0 { b"- " } else { b"  " }).unwrap();
                out.write_all(line.as_bytes()).unwrap();
                out.write_all(b"\n").unwrap();
            }
        } else {
            if !first {
                out.write_all(b",\n").unwrap();
            }
            serde_json::to_writer_pretty(&mut out, &v).unwrap();
        }
        first = false;
    });
    if yaml {
        out.write_all(b"kind: List\nmetadata:\n  resourceVersion: \"\"\n")
            .unwrap();
    } else {
        out.write_all(b"\n    ],\n    \"kind\": \"List\",\n    \"metadata\": {\n        \"resourceVersion\": \"\"\n    }\n}\n")
            .unwrap();
    }
    out.flush().unwrap();
    expect
}

/// Runs a command to its end: wall time and peak RSS (from `wait4`).
fn run_measured(cmd: &mut Command) -> (Duration, u64, String) {
    let t0 = Instant::now();
    // Reaped by the wait4 below (which also gives its peak RSS), not by Child::wait.
    #[allow(clippy::zombie_processes)]
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut out = child.stdout.unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut out, &mut text).unwrap();
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid out-parameter; the pid is our child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `status` and `usage` are live out-parameters; the pid is our child.
    unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    (t0.elapsed(), usage.ru_maxrss as u64, text)
}

fn file() {
    let p = Profile::from_args();
    let dir =
        PathBuf::from(arg("--dir").unwrap_or_else(|| std::env::temp_dir().display().to_string()))
            .join(format!("clusterdns-relist-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (yaml, name) in [(true, "cluster.yaml"), (false, "cluster.json")] {
        let path = dir.join(name);
        let t0 = Instant::now();
        let expect = write_file(&p, &path, yaml);
        let size = std::fs::metadata(&path).unwrap().len();
        eprintln!(
            "wrote {} ({:.0} MB) in {:.1} s",
            path.display(),
            size as f64 / 1e6,
            t0.elapsed().as_secs_f64()
        );
        for _ in 0..2 {
            let (took, maxrss, out) = run_measured(
                Command::new(env!("CARGO_BIN_EXE_clusterdns"))
                    .args(["check", "--objects"])
                    .arg(&path),
            );
            let counts = out
                .lines()
                .find(|l| l.starts_with("would serve"))
                .unwrap_or("check failed")
                .to_string();
            println!(
                "file {name} ({:.0} MB): check in {:.1} s, peak RSS {:.1} MB; {counts}",
                size as f64 / 1e6,
                took.as_secs_f64(),
                mb(maxrss)
            );
        }
        let t0 = Instant::now();
        let s = Server::start(&format!("{{file: {}}}", path.display()), "");
        let (_, line) = s.wait_line(&["loaded cluster objects"], Duration::from_secs(900));
        let loaded = t0.elapsed();
        let (last, want) = expect.last().unwrap();
        until_answer(s.dns, last, want, Duration::from_secs(60));
        let peak = status_kib(s.pid(), "VmHWM:");
        std::thread::sleep(Duration::from_secs(1));
        let steady = steady_rss(s.pid());
        let objects = line
            .split("objects=")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .unwrap_or("?");
        println!(
            "  serve --objects: {objects} objects loaded in {:.1} s, peak RSS {:.1} MB, steady {:.1} MB",
            loaded.as_secs_f64(),
            mb(peak),
            mb(steady)
        );
        drop(s);
        let _ = std::fs::remove_file(&path);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    if !common::bench_requested(
        "relist",
        "cargo bench --bench relist -- --phase profile|latency|outage|file",
    ) {
        return;
    }
    match arg("--phase").as_deref().unwrap_or("latency") {
        "profile" => profile(),
        "latency" => latency(),
        "outage" => outage(),
        "file" => file(),
        other => panic!("unknown phase {other}"),
    }
}
