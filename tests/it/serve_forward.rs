//! Forwarding through the real binary: a real Knot DNS upstream on loopback, names outside
//! the cluster, reverse names that fall through, ExternalName targets resolved upstream, and
//! loop detection at start.

use std::process::Command;

use crate::support::*;

const OBJECTS: &str = "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Namespace, metadata: {name: x}}\n- apiVersion: v1\n  kind: Service\n  metadata: {name: a, namespace: x}\n  spec: {clusterIP: 10.9.0.1}\n- apiVersion: v1\n  kind: Service\n  metadata: {name: ext, namespace: x}\n  spec: {type: ExternalName, externalName: www.example.test}\n";

fn server_with_upstream(upstream: std::net::SocketAddr) -> Server {
    let extra = format!("forward:\n  upstreams: [\"{upstream}\"]\n  timeout: 500ms\n");
    Server::with_objects(OBJECTS, &extra)
}

#[test]
fn names_outside_the_cluster_are_forwarded_and_cached() {
    let knot = start_knot();
    let s = server_with_upstream(knot.addr);
    assert_eq!(s.dig(&["+short", "www.example.test"]).trim(), "192.0.2.10");
    assert_eq!(
        s.dig(&["+short", "WwW.ExAmPlE.tEsT", "AAAA"]).trim(),
        "2001:db8::10"
    );
    let out = s.dig(&["WwW.ExAmPlE.tEsT"]);
    assert!(
        out.contains(";WwW.ExAmPlE.tEsT."),
        "question case kept: {out}"
    );
    // cluster names are still ours
    assert_eq!(
        s.dig(&["+short", "a.x.svc.cluster.local"]).trim(),
        "10.9.0.1"
    );
    // NXDOMAIN from upstream passes through with its SOA
    let out = s.dig(&["nope.example.test"]);
    assert!(
        out.contains("status: NXDOMAIN") && out.contains("AUTHORITY: 1"),
        "{out}"
    );
    // over TCP too
    assert_eq!(
        s.dig(&["+tcp", "+short", "www.example.test"]).trim(),
        "192.0.2.10"
    );
}

#[test]
fn external_name_target_outside_is_resolved_upstream() {
    let knot = start_knot();
    let s = server_with_upstream(knot.addr);
    let out = s.dig(&["+short", "ext.x.svc.cluster.local", "A"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, vec!["www.example.test.", "192.0.2.10"], "{out}");
    // asking for the CNAME itself: just the CNAME
    assert_eq!(
        s.dig(&["+short", "ext.x.svc.cluster.local", "CNAME"])
            .trim(),
        "www.example.test."
    );
}

#[test]
fn reverse_names_of_the_cluster_are_answered_others_fall_through() {
    let knot = start_knot();
    let s = server_with_upstream(knot.addr);
    assert_eq!(
        s.dig(&["+short", "-x", "10.9.0.1"]).trim(),
        "a.x.svc.cluster.local."
    );
    // 192.0.2.10 is not a cluster address: forwarded; knot does not serve that reverse zone
    // and says so (REFUSED), which reaches the client instead of our NXDOMAIN
    let out = s.dig(&["-x", "192.0.2.10"]);
    assert!(
        !out.contains("status: NXDOMAIN"),
        "fell through to the upstream: {out}"
    );
    assert!(
        out.contains("status: REFUSED") || out.contains("status: NOERROR"),
        "{out}"
    );
}

#[test]
fn forwarding_to_itself_refuses_to_start() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let objects = dir.path().join("objects.yaml");
    std::fs::write(&objects, OBJECTS).unwrap();
    let cfg = dir.path().join("c.yaml");
    std::fs::write(
        &cfg,
        format!("listen: [\"127.0.0.1:{port}\"]\nsource: {{file: {}}}\nforward:\n  upstreams: [\"127.0.0.1:{port}\"]\nmetrics: {{listen: null}}\nhealth: {{listen: null}}\nready: {{listen: null}}\n", objects.display()),
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "must not start: {err}");
    assert!(err.contains("loop"), "{err}");
    assert!(
        err.contains(&format!("127.0.0.1:{port}")),
        "names the address: {err}"
    );
}
