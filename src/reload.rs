//! Config reload without a failed query: on SIGHUP or when the config file changes, the new
//! config is read and validated, and everything that needs building (a new resolver) is built
//! before anything is switched. Then the engine is replaced with one `ArcSwap::store` and the
//! cluster settings go to the zone builder, which rebuilds the zone from the state it holds.
//! An invalid config is rejected with a log line naming the key, counted in
//! `coredns_reload_failed_total`, and the running config stays. This is the only place SIGHUP
//! is handled.
//!
//! Every key takes effect on a reload except those [`RESTART_ONLY`] names, each named in a
//! log line when it changed. `health.lameduck`/`drain_timeout` go to the lifecycle,
//! `forward.legacy_metrics` to the registry; `cluster.pods`, `noendpoints` and `labels` make
//! the API source start the watches they need (see `app::start_kube`); a new resolver keeps
//! the caches whose config did not change.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::Signal;
use tokio::sync::watch;

use crate::Error;
use crate::config::{ClusterConfig, Config};
use crate::filewatch::FileWatch;
use crate::ops::metrics::Metrics;
use crate::server::{Engine, SharedEngine};

/// Loads the config as the command line asked for it (file plus flags), validated.
pub type Loader = Box<dyn Fn() -> Result<Config, Error> + Send + Sync>;

/// How often the config file is looked at.
const POLL: Duration = Duration::from_secs(1);

/// What a reload may replace.
pub struct Reloader {
    /// The config in force (its restart-only parts as the process started with them).
    pub current: Config,
    pub loader: Loader,
    /// The config file, watched for changes.
    pub path: Option<PathBuf>,
    pub shared: SharedEngine,
    pub settings: watch::Sender<ClusterConfig>,
    /// The resolver in force (kept for the loop probe and so its background tasks live).
    pub resolver: Option<Arc<crate::resolve::Resolver>>,
    /// Where reload failures and the new resolver count.
    pub metrics: Arc<Metrics>,
    /// The shutdown sequence, for `health.lameduck` and `health.drain_timeout`.
    pub lifecycle: Option<crate::ops::lifecycle::Lifecycle>,
}

/// The keys that take effect only on a restart: sockets bound, the source chosen, the node set
/// up at start.
pub const RESTART_ONLY: [&str; 9] = [
    "listen",
    "source",
    "metrics.listen",
    "health.listen",
    "ready.listen",
    "server",
    "nodelocal",
    "cluster.enabled",
    "transfer",
];

/// Why a reload did nothing.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    Unchanged,
    Rejected(String),
}

/// `new` with the parts that take effect only on a restart as they are in `current`, so the
/// config in force says what really runs.
fn in_force(mut new: Config, current: &Config) -> Config {
    new.listen = current.listen.clone();
    new.source = current.source.clone();
    new.metrics.listen = current.metrics.listen.clone();
    new.health.listen = current.health.listen.clone();
    new.ready.listen = current.ready.listen.clone();
    new.server = current.server.clone();
    new.transfer = current.transfer.clone();
    new.nodelocal = current.nodelocal.clone();
    new.cluster.enabled = current.cluster.enabled;
    new
}

/// Which [`RESTART_ONLY`] keys differ between `a` and `b`.
fn restart_only_changes(a: &Config, b: &Config) -> Vec<&'static str> {
    let changed = [
        a.listen != b.listen,
        a.source != b.source,
        a.metrics.listen != b.metrics.listen,
        a.health.listen != b.health.listen,
        a.ready.listen != b.ready.listen,
        a.server != b.server,
        a.nodelocal != b.nodelocal,
        a.cluster.enabled != b.cluster.enabled,
        a.transfer != b.transfer,
    ];
    RESTART_ONLY
        .into_iter()
        .zip(changed)
        .filter_map(|(k, c)| c.then_some(k))
        .collect()
}

impl Reloader {
    /// Read the config again and apply what changed.
    pub fn reload(&mut self) -> Outcome {
        let new = match (self.loader)() {
            Ok(c) => c,
            Err(e) => return self.reject(e.to_string()),
        };
        for key in restart_only_changes(&new, &self.current) {
            tracing::warn!(
                key,
                "this part of the config takes effect only on a restart"
            );
        }
        let new = in_force(new, &self.current);
        if new == self.current {
            return Outcome::Unchanged;
        }
        // Build first, switch after: shaping or a resolver that cannot be built rejects the
        // whole reload (shaping first: it starts nothing).
        let shape = match crate::server::shape::Shaper::new(&new) {
            Ok(s) => s,
            Err(e) => return self.reject(e.to_string()),
        };
        let resolve_changed = new.forward != self.current.forward
            || new.cache != self.current.cache
            || new.hosts != self.current.hosts
            || new.cluster.loadbalance != self.current.cluster.loadbalance;
        let resolver = if resolve_changed {
            match crate::app_ops::resolver(&new, &self.metrics, self.resolver.as_deref()) {
                Ok(r) => {
                    // New upstreams are probed for loops as at start-up.
                    crate::app_ops::after_listen(&r);
                    r
                }
                Err(e) => return self.reject(e.to_string()),
            }
        } else {
            self.resolver.clone()
        };
        let old = self.shared.load_full();
        let engine = Engine::new(
            &new,
            old.zone().clone(),
            crate::app_ops::as_upstream(&resolver),
            shape,
            self.metrics.clone(),
        )
        // Rate-limit state and the forwarding bound carry over: a reload is no fresh start.
        .inherit(&old)
        // The transfer service and its journal stay (`transfer` needs a restart).
        .with_transfers(old.xfr().cloned());
        self.shared.store(Arc::new(engine));
        if new.health != self.current.health
            && let Some(lc) = &self.lifecycle
        {
            lc.set_timings(&new.health);
        }
        self.metrics.set_legacy_forward(new.forward.legacy_metrics);
        // Plugins turned on (the query log, hosts, ...) show in `coredns_plugin_enabled`.
        self.metrics
            .enable_plugins(&crate::ops::metrics::plugins_for(&new));
        if new.cluster != self.current.cluster {
            let _ = self.settings.send(new.cluster.clone());
        }
        self.resolver = resolver;
        self.current = new;
        tracing::info!("config reloaded");
        Outcome::Applied
    }

    fn reject(&self, why: String) -> Outcome {
        self.metrics.reload_failed();
        tracing::error!(error = %why, "config reload rejected; the running config stays");
        Outcome::Rejected(why)
    }

    /// Reload on each signal `hangups` delivers (see [`hangups`]) and when the config file
    /// changes (see [`crate::filewatch`]: ConfigMap volumes swap a symlink, which inotify on
    /// the file itself would miss), until `stop` turns true.
    pub async fn run(mut self, mut hangups: Signal, mut stop: watch::Receiver<bool>) {
        let mut file = self.path.clone().map(FileWatch::new);
        // The version read at start is the one in force.
        if let Some(f) = file.as_mut() {
            f.check();
        }
        loop {
            let by_signal = tokio::select! {
                _ = hangups.recv() => true,
                _ = tokio::time::sleep(POLL) => false,
                _ = stop.changed() => return,
            };
            if by_signal {
                tracing::info!(signal = "SIGHUP", "reloading the config");
            }
            let changed = file.as_mut().is_some_and(|f| f.check().is_some());
            if by_signal || changed {
                self.reload();
            }
        }
    }
}

/// Catch SIGHUP from now on (its default action ends the process): call this early at start,
/// before anything could send one, and hand the stream to [`Reloader::run`].
pub fn hangups() -> std::io::Result<Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
}
