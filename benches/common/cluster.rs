//! The cluster the propagation and transfer benches measure against: the project's test API
//! server filled with services and endpoint slices, and the release binary watching it.
//! Included by those benches (`#[path = "common/cluster.rs"] mod cluster;`) beside
//! `mod apiserver;`.

use std::io::{BufRead, BufReader, Lines};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStderr, Command, Stdio};

use crate::apiserver::*;

/// Fills `api` with `namespaces` namespaces and `services` services (ClusterIPs 10.96.x.y,
/// service `i` in namespace `i % namespaces`), each with one slice of `per` endpoints.
pub(crate) fn fill(api: &ApiServer, services: usize, per: usize, namespaces: usize) {
    for n in 0..namespaces {
        api.create(namespace(&format!("ns-{n}")));
    }
    for i in 0..services {
        let ns = format!("ns-{}", i % namespaces);
        let name = format!("svc-{i}");
        let ip = format!("10.96.{}.{}", i / 250, i % 250 + 1);
        api.create(svc(&ns, &name).cluster_ip(&ip).port("http", 80, "TCP"));
        let mut sl = slice(&ns, &format!("{name}-x"), &name).port("http", 8080, "TCP");
        for e in 0..per {
            let k = i * per + e;
            sl = sl.endpoint(ep(&[&format!(
                "10.{}.{}.{}",
                128 + k / 65536,
                (k / 256) % 256,
                k % 256
            )]));
        }
        api.create(sl);
    }
}

/// The name of the last service [`fill`] created.
pub(crate) fn last_service(services: usize, namespaces: usize) -> String {
    format!(
        "svc-{}.ns-{}.svc.cluster.local",
        services - 1,
        (services - 1) % namespaces
    )
}

/// The `c`-th of the benches' ClusterIP changes, made at `api`: service `(c * 7919) %
/// services` of [`fill`]'s cluster (a stride spreading the changes over it) gets ClusterIP
/// 10.97.x.y, a range [`fill`] never hands out. Returns the name to ask and the new address.
pub(crate) fn change_cluster_ip(
    api: &ApiServer,
    c: usize,
    services: usize,
    namespaces: usize,
) -> (String, [u8; 4]) {
    let i = (c * 7919) % services;
    let ns = format!("ns-{}", i % namespaces);
    let name = format!("svc-{i}");
    let new_ip = [10, 97, (c / 250) as u8, (c % 250 + 1) as u8];
    api.update(
        svc(&ns, &name)
            .cluster_ip(&format!("10.97.{}.{}", c / 250, c % 250 + 1))
            .port("http", 80, "TCP"),
    );
    (format!("{name}.{ns}.svc.cluster.local"), new_ip)
}

/// Writes `dir/c.yaml`: DNS on an ephemeral loopback port, the Kubernetes source reading
/// `api`, no forwarding, no HTTP endpoints, one UDP worker, loopback clients exempt from the
/// per-client rate limit (the benches ask as fast as the server answers); `extra` is appended.
pub(crate) fn write_config(api: &ApiServer, dir: &Path, extra: &str) -> std::path::PathBuf {
    let kubeconfig = api.write_kubeconfig(dir);
    let cfg = dir.join("c.yaml");
    std::fs::write(
        &cfg,
        format!(
            "listen: [\"127.0.0.1:0\"]\nsource: {{kubernetes: {{kubeconfig: {}, startup_timeout: 60s}}}}\nforward: {{enabled: false}}\nmetrics: {{listen: null}}\nhealth: {{listen: null}}\nready: {{listen: null}}\nserver: {{udp_workers: 1}}\nlimits: {{exempt: [\"127.0.0.0/8\"]}}\n{extra}",
            kubeconfig.display()
        ),
    )
    .unwrap();
    cfg
}

/// Starts the release `clusterdns serve --config cfg` with `CLUSTERDNS_LOG=log`; returns it,
/// its DNS address (from its `listening dns=` line) and the rest of its log lines.
pub(crate) fn serve(cfg: &Path, log: &str) -> (Child, SocketAddr, Lines<BufReader<ChildStderr>>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_clusterdns"))
        .args(["serve", "--config"])
        .arg(cfg)
        .env("CLUSTERDNS_LOG", log)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start clusterdns");
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let dns: SocketAddr = loop {
        let l = lines.next().expect("server output").unwrap();
        if let Some(a) = l.strip_prefix("clusterdns: listening dns=") {
            break a.trim().parse().unwrap();
        }
    };
    (child, dns, lines)
}
