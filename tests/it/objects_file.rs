//! Large files of objects (`serve --objects`, `check`): read item by item whatever their size,
//! in YAML and in JSON; a file that does not parse leaves the last good state serving.

use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::*;

/// `services` services in 20 namespaces, every fifth headless, each with an EndpointSlice of
/// `per` endpoints; as a `kind: List` in YAML the way `kubectl get -o yaml` writes it, or in
/// JSON. Returns the text.
fn cluster(services: usize, per: usize, yaml: bool) -> String {
    let mut items = Vec::with_capacity(services * 2);
    for i in 0..services {
        let ns = format!("ns{}", i % 20);
        let headless = i % 5 == 0;
        let ip = if headless {
            "None".to_string()
        } else {
            format!("10.96.{}.{}", i / 250, i % 250 + 1)
        };
        items.push(serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": { "name": format!("s{i}"), "namespace": ns, "labels": { "app": format!("s{i}") } },
            "spec": { "clusterIP": ip, "clusterIPs": [ip], "type": "ClusterIP",
                "ports": [{ "name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080 }] },
        }));
        let eps: Vec<serde_json::Value> = (0..per)
            .map(|e| {
                let k = i * per + e;
                serde_json::json!({
                    "addresses": [format!("10.{}.{}.{}", 64 + k / 65536, (k / 256) % 256, k % 256)],
                    "conditions": { "ready": true, "serving": true, "terminating": false },
                    "targetRef": { "kind": "Pod", "name": format!("s{i}-{e}"), "namespace": ns },
                })
            })
            .collect();
        items.push(serde_json::json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": { "name": format!("s{i}-abc"), "namespace": ns,
                "labels": { "kubernetes.io/service-name": format!("s{i}") } },
            "endpoints": eps,
            "ports": [{ "name": "http", "port": 8080, "protocol": "TCP" }],
        }));
    }
    if !yaml {
        return serde_json::to_string_pretty(
            &serde_json::json!({ "apiVersion": "v1", "items": items, "kind": "List", "metadata": { "resourceVersion": "" } }),
        )
        .unwrap();
    }
    let mut out = String::from("apiVersion: v1\nitems:\n");
    for item in &items {
        for (n, line) in serde_saphyr::to_string(item).unwrap().lines().enumerate() {
            let _ = writeln!(out, "{}{line}", if n == 0 { "- " } else { "  " });
        }
    }
    out.push_str("kind: List\nmetadata:\n  resourceVersion: \"\"\n");
    out
}

fn check(path: &std::path::Path) -> (bool, String) {
    let out = Command::new(bin())
        .args(["check", "--objects"])
        .arg(path)
        .env("CLUSTERDNS_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// A dump with well over the 250,000 YAML nodes that used to stop the reader (700 services and
/// slices of 20 endpoints: about 320,000) loads, as YAML and as JSON, in `check` and in `serve`.
#[test]
fn objects_file_beyond_the_yaml_node_budget_loads_in_yaml_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = cluster(700, 20, true);
    // The reader's default limits would refuse this file.
    let whole = serde_saphyr::from_str::<serde_json::Value>(&yaml);
    assert!(
        whole
            .as_ref()
            .is_err_and(|e| e.to_string().contains("budget")),
        "the file should exceed the default YAML budget: {:?}",
        whole.map(|_| ())
    );
    let yaml_path = dir.path().join("cluster.yaml");
    std::fs::write(&yaml_path, &yaml).unwrap();
    let json_path = dir.path().join("cluster.json");
    std::fs::write(&json_path, cluster(700, 20, false)).unwrap();
    for path in [&yaml_path, &json_path] {
        let (ok, out) = check(path);
        assert!(ok, "{out}");
        assert!(
            out.contains("would serve: 700 services, 14000 endpoints"),
            "{}: {out}",
            path.display()
        );
    }
    for path in [&yaml_path, &json_path] {
        let s = Server::start(&base_config(path, ""), &[]);
        s.converge(
            "s699.ns19.svc.cluster.local",
            "10.96.2.200",
            Duration::from_secs(60),
        );
        let k = 695 * 20;
        let first = format!("10.{}.{}.{}", 64 + k / 65536, (k / 256) % 256, k % 256);
        let srv = s.dig(&["+short", "+tcp", "s695.ns15.svc.cluster.local"]);
        assert_eq!(srv.lines().count(), 20, "{srv}");
        assert!(srv.lines().any(|l| l == first), "{srv}");
    }
}

/// A new version of the file that does not parse (here: cut off in the middle of its last
/// item) changes nothing served, however much of it came before the error; the next good
/// version is served.
#[test]
fn objects_file_that_breaks_keeps_the_last_good_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cluster.yaml");
    std::fs::write(
        &path,
        "apiVersion: v1\nkind: Service\nmetadata: {name: old, namespace: ns0}\nspec: {clusterIP: 10.0.0.1}\n",
    )
    .unwrap();
    let s = Server::start(&base_config(&path, ""), &[]);
    s.converge(
        "old.ns0.svc.cluster.local",
        "10.0.0.1",
        Duration::from_secs(10),
    );

    let big = cluster(300, 20, true);
    let cut = &big[..big.len() - 200];
    let broken = format!("{cut}\n  spec: [unclosed\n");
    let tmp = dir.path().join("next.yaml");
    std::fs::write(&tmp, &broken).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    let t0 = Instant::now();
    let mut saw_error = false;
    while t0.elapsed() < Duration::from_secs(60) && !saw_error {
        while let Ok(line) = s.lines.try_recv() {
            if line.contains("cluster objects file is invalid") {
                assert!(line.contains("line"), "the error names where: {line}");
                saw_error = true;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(saw_error, "no error logged for the broken file");
    assert_eq!(
        s.dig(&["+short", "old.ns0.svc.cluster.local"]).trim(),
        "10.0.0.1"
    );
    let early = s.dig(&["s1.ns1.svc.cluster.local"]);
    assert!(
        early.contains("status: NXDOMAIN"),
        "nothing of the broken file is served: {early}"
    );

    std::fs::write(&tmp, &big).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    s.converge(
        "s299.ns19.svc.cluster.local",
        "10.96.1.50",
        Duration::from_secs(60),
    );
    s.converge("old.ns0.svc.cluster.local", "", Duration::from_secs(5));
}

/// The objects file as a ConfigMap volume mounts it (`cluster.yaml -> ..data/cluster.yaml`,
/// `..data -> ..<version>`): an update swaps the `..data` symlink, and the new version, of the
/// same size and modification time (only its inode differs), is served. A file that
/// disappears keeps the last state serving until a version is back.
#[test]
fn objects_file_follows_a_configmap_swap_and_survives_removal() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let version = |n: u32, ip: &str| {
        let v = d.join(format!("..v{n}"));
        std::fs::create_dir(&v).unwrap();
        std::fs::write(
            v.join("cluster.yaml"),
            format!("apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: ns0}}\nspec: {{clusterIP: {ip}}}\n"),
        )
        .unwrap();
        v
    };
    let v1 = version(1, "10.0.0.1");
    let v2 = version(2, "10.0.0.2");
    let t = std::fs::metadata(v1.join("cluster.yaml"))
        .unwrap()
        .modified()
        .unwrap();
    std::fs::File::options()
        .write(true)
        .open(v2.join("cluster.yaml"))
        .unwrap()
        .set_modified(t)
        .unwrap();
    symlink("..v1", d.join("..data")).unwrap();
    let path = d.join("cluster.yaml");
    symlink("..data/cluster.yaml", &path).unwrap();
    let s = Server::start(&base_config(&path, ""), &[]);
    let web = "web.ns0.svc.cluster.local";
    s.converge(web, "10.0.0.1", Duration::from_secs(10));

    symlink("..v2", d.join("..data_tmp")).unwrap();
    std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
    s.converge(web, "10.0.0.2", Duration::from_secs(10));

    // Gone: logged, and the last state keeps answering.
    std::fs::remove_file(&path).unwrap();
    let missing = s.log_until(Duration::from_secs(10), |l| {
        l.contains("cluster objects file is missing")
    });
    assert!(
        missing
            .iter()
            .any(|l| l.contains("cluster objects file is missing")),
        "no error logged for the missing file"
    );
    assert_eq!(s.dig(&["+short", web]).trim(), "10.0.0.2");
    // Back, with a new version.
    let v3 = version(3, "10.0.0.3");
    symlink(v3.join("cluster.yaml"), &path).unwrap();
    s.converge(web, "10.0.0.3", Duration::from_secs(10));
}
