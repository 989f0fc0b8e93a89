//! Wiring of `clusterdns serve`: source → builder → snapshot → sockets, with the resolver and
//! the operator endpoints beside them, and the shutdown sequence.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, watch};

use crate::Error;
use crate::cluster::Kind;
use crate::config::Config;
use crate::ops::lifecycle::DrainGuard;
use crate::ops::metrics::Metrics;
use crate::server::listen::Listener;
use crate::server::{Engine, udp};
use crate::zone::build::{ZoneBuilder, required_kinds};
use crate::zone::snapshot::Snapshot;

/// Where the cluster objects come from, after flags and config are merged.
#[derive(Debug, Clone)]
pub enum SourceChoice {
    File(std::path::PathBuf),
    Embedded,
    Kubernetes(crate::config::KubernetesSourceConfig),
    None,
}

/// Decide the source: the config's, else in-cluster when running in a pod, else the embedded
/// sample (with a warning: fine for trying clusterdns out, never what a cluster wants).
pub fn choose_source(cfg: &Config) -> SourceChoice {
    if !cfg.cluster.enabled {
        return SourceChoice::None;
    }
    if let Some(f) = &cfg.source.file {
        return SourceChoice::File(f.clone());
    }
    if let Some(k) = &cfg.source.kubernetes {
        return SourceChoice::Kubernetes(k.clone());
    }
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        return SourceChoice::Kubernetes(Default::default());
    }
    SourceChoice::Embedded
}

/// The addresses a running server bound (port 0 in the config becomes a real port here).
#[derive(Debug, Clone, Default)]
pub struct Bound {
    pub dns: Vec<SocketAddr>,
}

/// Start the zone: builder task and source task, both counting into `metrics`. Returns the
/// snapshot handle. Cluster settings sent on `settings` later are applied without a restart.
/// `journal`: zone transfers are on, and it receives every snapshot.
pub fn start_zone(
    cfg: &Config,
    shutdown: watch::Receiver<bool>,
    on_synced: Box<dyn Fn() + Send>,
    settings: watch::Receiver<crate::config::ClusterConfig>,
    journal: Option<Arc<crate::zone::xfr::Journal>>,
    metrics: Arc<Metrics>,
) -> Arc<ArcSwap<Snapshot>> {
    let swap = Arc::new(ArcSwap::from_pointee(Snapshot::empty(&cfg.cluster)));
    let source = choose_source(cfg);
    let required: Vec<Kind> = match source {
        SourceChoice::None => vec![],
        _ => required_kinds(&cfg.cluster),
    };
    // Autopath needs each client pod's namespace: the Pod watch and the address index.
    let client_namespaces = cfg.shape.autopath.enabled && cfg.cluster.enabled;
    let mut builder = ZoneBuilder::new(&cfg.cluster, &required)
        .with_client_namespaces(client_namespaces && !matches!(source, SourceChoice::None));
    if matches!(source, SourceChoice::Kubernetes(_)) {
        // Serials from the API state, the same on every replica (`zone::serial`).
        builder.set_serial_source(crate::zone::serial::SerialSource::Revisions);
    }
    let (tx, rx) = mpsc::channel(crate::zone::feed::QUEUE);
    let settings_for_source = settings.clone();
    if matches!(source, SourceChoice::None) {
        on_synced();
        return swap;
    }
    tokio::spawn(crate::zone::feed::run(
        builder,
        rx,
        swap.clone(),
        on_synced,
        settings,
        journal,
        metrics.clone(),
    ));
    match source {
        SourceChoice::File(p) => {
            tokio::spawn(crate::source::file::run(
                Some(p),
                tx,
                shutdown,
                Duration::from_millis(500),
                metrics,
            ));
        }
        SourceChoice::Embedded => {
            tracing::warn!(
                "no source configured: serving the embedded sample cluster (set source.file or source.kubernetes)"
            );
            tokio::spawn(crate::source::file::run(
                None,
                tx,
                shutdown,
                Duration::from_secs(3600),
                metrics,
            ));
        }
        SourceChoice::Kubernetes(k) => {
            start_kube(
                k,
                client_namespaces,
                tx,
                shutdown,
                settings_for_source,
                metrics,
            );
        }
        SourceChoice::None => {}
    }
    swap
}

/// What the API source watches for `cluster` settings (and Pods for `autopath`, set at start),
/// and how it connects.
fn kube_options(
    k: &crate::config::KubernetesSourceConfig,
    cluster: &crate::config::ClusterConfig,
    autopath: bool,
) -> crate::source::kube::KubeSourceOptions {
    crate::source::kube::KubeSourceOptions {
        kubeconfig: k.kubeconfig.clone(),
        context: k.context.clone(),
        endpoint: k.endpoint.clone(),
        watch_pods: cluster.pods == crate::config::PodsMode::Verified || autopath,
        service_label_selector: cluster.labels.clone(),
        watch_endpoints: !cluster.noendpoints,
    }
}

/// Run the API source; when reloaded cluster settings (`settings`) change what must be
/// watched (`pods: verified`, `noendpoints`, `labels`), its watches are stopped and started
/// again with the new set: each kind is listed again (a relist: objects missing from it, e.g.
/// services the new `labels` leave out, are gone), and the zone, which now requires the new
/// kinds, syncs as soon as they are listed. What is served meanwhile stays.
fn start_kube(
    k: crate::config::KubernetesSourceConfig,
    autopath: bool,
    tx: mpsc::Sender<crate::cluster::ClusterEvent>,
    mut shutdown: watch::Receiver<bool>,
    mut settings: watch::Receiver<crate::config::ClusterConfig>,
    metrics: Arc<Metrics>,
) {
    let supervise = async move {
        loop {
            let opts = kube_options(&k, &settings.borrow_and_update(), autopath);
            let (stop_tx, stop_rx) = watch::channel(false);
            let run = crate::source::kube::run(opts.clone(), tx.clone(), stop_rx, metrics.clone());
            tokio::pin!(run);
            let mut settings_alive = true;
            loop {
                tokio::select! {
                    r = &mut run => return r,
                    _ = async { drop(shutdown.wait_for(|stop| *stop).await) } => {
                        let _ = stop_tx.send(true);
                        return run.await;
                    }
                    c = settings.changed(), if settings_alive => {
                        if c.is_err() {
                            settings_alive = false;
                        } else if kube_options(&k, &settings.borrow(), autopath) != opts {
                            break;
                        }
                    }
                }
            }
            let _ = stop_tx.send(true);
            run.await?;
            tracing::info!("cluster settings changed what is watched: watches started again");
        }
    };
    // The watchers get a thread and runtime of their own: decoding a relist of a large cluster
    // is CPU work that must not delay the query path's workers.
    let spawned = std::thread::Builder::new().name("kube-source".into()).spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(error = %e, "kubernetes source runtime");
                return;
            }
        };
        if let Err(e) = rt.block_on(supervise) {
            tracing::error!(error = %e, "kubernetes source stopped; the last snapshot keeps serving");
        }
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the kubernetes source thread");
    }
}

/// Bind the DNS sockets: per listen address, `server.udp_workers` UDP sockets (0: one per
/// CPU) and one TCP listener on the same port, one socket per address family (see [`crate::server::listen`]).
pub fn bind_dns(cfg: &Config) -> Result<(Vec<Listener>, Bound), Error> {
    let workers = if cfg.server.udp_workers == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        cfg.server.udp_workers
    };
    let listeners =
        crate::server::listen::bind_all(&cfg.dns_listen(), workers, cfg.server.udp_balance)
            .map_err(|(addr, e)| Error::Listen {
                addr: addr.to_string(),
                source: e,
            })?;
    let bound = Bound {
        dns: listeners.iter().map(|l| l.addr).collect(),
    };
    Ok((listeners, bound))
}

/// Run the DNS server until `stop` turns true, then stop accepting and return once the UDP
/// workers have answered what their sockets queued. The work still under way — forwarded UDP
/// queries waiting for their answers, TCP connections answering what they have read — holds
/// clones of `drain`, and the shutdown's drain waits for it (bounded by `health.drain_timeout`).
pub async fn run_dns(
    cfg: &Config,
    engine: crate::server::SharedEngine,
    listeners: Vec<Listener>,
    stop: watch::Receiver<bool>,
    drain: DrainGuard,
) -> Result<(), Error> {
    let udp_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    let mut tcp_servers = Vec::new();
    let settings = crate::server::tcp::TcpSettings::new(cfg.server.tcp_idle_timeout);
    // One gate for every listener: the connection caps are the process's.
    let fds = crate::server::tcp::fd_budget(cfg.forward.max_in_flight());
    if fds < cfg.limits.tcp.max_connections {
        tracing::warn!(
            fd_budget = fds,
            max_connections = cfg.limits.tcp.max_connections,
            "the file-descriptor limit (RLIMIT_NOFILE) leaves room for fewer TCP connections than limits.tcp.max_connections: holding them to the lower number"
        );
    }
    let gate = Arc::new(crate::server::tcp::Gate::new(fds));
    for Listener { addr, udp, tcp } in listeners {
        for (i, s) in udp.into_iter().enumerate() {
            let (engine, stop, drain, rt) = (
                engine.clone(),
                udp_stop.clone(),
                drain.clone(),
                tokio::runtime::Handle::current(),
            );
            let t = std::thread::Builder::new()
                .name(format!("udp-{}-{i}", addr.port()))
                .spawn(move || udp::worker(s, engine, stop, drain, rt))
                .map_err(|e| Error::Other(format!("cannot start a UDP worker: {e}")))?;
            workers.push(t);
        }
        let tcp = tokio::net::TcpListener::from_std(tcp).map_err(|e| Error::Listen {
            addr: addr.to_string(),
            source: e,
        })?;
        tcp_servers.push(tokio::spawn(crate::server::tcp::serve(
            tcp,
            engine.clone(),
            settings.clone(),
            gate.clone(),
            stop.clone(),
            drain.clone(),
        )));
    }
    let mut stop2 = stop.clone();
    while !*stop2.borrow() {
        if stop2.changed().await.is_err() {
            break;
        }
    }
    udp_stop.store(true, std::sync::atomic::Ordering::Release);
    let _ = tokio::task::spawn_blocking(move || {
        for w in workers {
            let _ = w.join();
        }
    })
    .await;
    // The accept loops have stopped; their connections run on, each holding a drain guard.
    for t in tcp_servers {
        let _ = t.await;
    }
    Ok(())
}

/// Counts of the snapshot a set of objects makes under `cfg` (for `check`).
pub fn snapshot_counts(
    cfg: &Config,
    objects: Vec<crate::cluster::Object>,
) -> crate::zone::snapshot::SnapshotCounts {
    let mut b = ZoneBuilder::new(&cfg.cluster, &required_kinds(&cfg.cluster));
    b.apply(crate::cluster::ClusterEvent::ReplaceAll { objects });
    b.publish().0.counts()
}

/// Counts of the snapshot a file of objects makes under `cfg` (for `check`), and the objects
/// skipped: the file is read object by object, in bounded memory whatever its size.
pub fn file_snapshot_counts(
    cfg: &Config,
    path: &std::path::Path,
) -> Result<
    (
        crate::zone::snapshot::SnapshotCounts,
        Vec<crate::error::ObjectError>,
    ),
    Error,
> {
    use crate::cluster::ClusterEvent;
    let file = std::fs::File::open(path).map_err(|source| crate::error::SourceError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut b = ZoneBuilder::new(&cfg.cluster, &required_kinds(&cfg.cluster));
    let mut skipped = Vec::new();
    for kind in Kind::ALL {
        b.apply(ClusterEvent::ListBegin { kind });
    }
    crate::source::file::read_objects(file, path, &mut |item| {
        match item {
            Ok(object) => b.apply(ClusterEvent::Listed { object }),
            Err(e) => skipped.push(e),
        }
        true
    })?;
    for kind in Kind::ALL {
        b.apply(ClusterEvent::ListEnd { kind });
    }
    Ok((b.publish().0.counts(), skipped))
}

/// `clusterdns serve`: run until SIGTERM/SIGINT, then readiness off at once, DNS through the
/// lameduck period, drain in-flight queries, and return (exit 0).
pub async fn serve(
    cfg: Config,
    config_path: Option<std::path::PathBuf>,
    loader: crate::reload::Loader,
) -> Result<(), Error> {
    use crate::ops::lifecycle::{Lifecycle, Phase, Readiness};
    use crate::ops::metrics;
    // Node-local mode: the addresses must be on the node before the sockets can bind them.
    let nodelocal = match cfg.nodelocal.enabled {
        true => Some(Arc::new(
            crate::nodelocal::NodeLocal::prepare(&cfg)
                .await
                .map_err(|e| Error::Other(e.to_string()))?,
        )),
        false => None,
    };
    // Bind first: `server="dns://:53"` as CoreDNS labels it comes from the port actually bound,
    // and the registry must know it before anything (the resolver's upstream handles) counts.
    // Queries that arrive before the workers start wait in the sockets' queues.
    let (sockets, bound) = bind_dns(&cfg)?;
    // The process's one registry: everything that counts is handed this handle.
    let metrics = Arc::new(Metrics::new(
        &metrics::server_label(bound.dns.first().map(|a| a.port()).unwrap_or(53)),
        cfg.forward.legacy_metrics,
        &metrics::plugins_for(&cfg),
    ));
    metrics::install_panic_hook(metrics.clone());
    let mut pending = Vec::<&str>::new();
    if cfg.cluster.enabled {
        pending.push("kubernetes");
    }
    if nodelocal.is_some() {
        // Ready once interface and rules are in place: a rolling update (maxUnavailable 0)
        // stops the old pod only then.
        pending.push("nodelocal");
        metrics.nodecache_setup_errors_init(&crate::nodelocal::SETUP_ERROR_TYPES);
    }
    let readiness = Readiness::new(pending);
    let lc = Lifecycle::new(readiness.clone(), &cfg.health);
    // Signals are caught from here on: a SIGTERM during start-up still drains properly, and a
    // SIGHUP waits for the reloader instead of ending the process.
    let signal_err = |e: std::io::Error| Error::Other(format!("signal handlers: {e}"));
    let life = lc.run().map_err(signal_err)?;
    let hangups = crate::reload::hangups().map_err(signal_err)?;
    let (settings_tx, settings_rx) = watch::channel(cfg.cluster.clone());
    let on_synced = readiness.setter("kubernetes");
    let transfers = crate::xfr::Transfers::from_config(&cfg, &metrics).map_err(Error::Other)?;
    let zone = start_zone(
        &cfg,
        lc.signal().as_bool(Phase::Stopped),
        Box::new(on_synced),
        settings_rx,
        transfers.as_ref().map(|t| t.journal().clone()),
        metrics.clone(),
    );
    let shape = crate::server::shape::Shaper::new(&cfg)?;
    let resolver = crate::app_ops::resolver(&cfg, &metrics, None)?;
    let engine = Engine::new(
        &cfg,
        zone,
        crate::app_ops::as_upstream(&resolver),
        shape,
        metrics.clone(),
    )
    .with_transfers(transfers.clone());
    let shared: crate::server::SharedEngine = Arc::new(ArcSwap::from_pointee(engine));
    let reloader = crate::reload::Reloader {
        current: cfg.clone(),
        loader,
        path: config_path.clone(),
        shared: shared.clone(),
        settings: settings_tx,
        resolver: resolver.clone(),
        metrics: metrics.clone(),
        lifecycle: Some(lc.clone()),
    };
    tokio::spawn(reloader.run(hangups, lc.signal().as_bool(Phase::Draining)));
    let ep = crate::ops::http::start(&cfg, metrics.clone(), readiness.clone(), lc.signal())
        .await
        .map_err(|e| Error::Other(e.to_string()))?;
    for a in &bound.dns {
        eprintln!("clusterdns: listening dns={a}");
    }
    for (what, a) in [
        ("metrics", ep.metrics),
        ("health", ep.health),
        ("ready", ep.ready),
    ] {
        if let Some(a) = a {
            eprintln!("clusterdns: listening {what}={a}");
        }
    }
    for (endpoint, path) in &ep.unix {
        eprintln!(
            "clusterdns: listening {}=unix:{}",
            endpoint.name(),
            path.display()
        );
    }
    crate::app_ops::after_listen(&resolver);
    if let Some(t) = &transfers {
        let targets = cfg
            .transfer
            .notify
            .iter()
            .filter_map(|n| crate::config::parse_upstream(n).ok())
            .collect();
        crate::xfr::notify::spawn(
            t.journal().clone(),
            targets,
            t.key().cloned(),
            metrics.clone(),
        );
    }
    if let Some(nl) = &nodelocal {
        tokio::spawn(
            nl.clone()
                .run(metrics.clone(), readiness.setter("nodelocal"), lc.signal()),
        );
    }
    let startup_timeout = cfg
        .source
        .kubernetes
        .as_ref()
        .map(|k| k.startup_timeout)
        .unwrap_or(Duration::from_secs(5));
    {
        let readiness = readiness.clone();
        tokio::spawn(async move {
            if !readiness.wait_ready(startup_timeout).await {
                tracing::warn!(
                    ?startup_timeout,
                    "cluster not synced within the startup timeout: serving what there is (SERVFAIL for names not yet known)"
                );
            }
        });
    }
    let drain = lc.drain_guard();
    let dns_stop = lc.signal().as_bool(Phase::Draining);
    let cfg2 = cfg.clone();
    let dns = tokio::spawn(async move { run_dns(&cfg2, shared, sockets, dns_stop, drain).await });
    life.await;
    ep.join().await;
    match dns.await {
        Ok(r) => r?,
        Err(e) => return Err(Error::Other(format!("dns server task: {e}"))),
    }
    if let Some(nl) = nodelocal {
        let _ = tokio::task::spawn_blocking(move || nl.finish()).await;
    }
    tracing::info!("stopped");
    Ok(())
}
