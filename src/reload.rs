//! Config reload without a failed query: on SIGHUP or when the config file changes, the new
//! config is read and validated, and everything that needs building (a new resolver) is built
//! before anything is switched. Then the engine is replaced with one `ArcSwap::store` and the
//! cluster settings go to the zone builder, which rebuilds the zone from the state it holds.
//! An invalid config is rejected with a log line naming the key, counted in
//! `coredns_reload_failed_total`, and the running config stays.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::Error;
use crate::config::{ClusterConfig, Config};
use crate::server::{Engine, QueryLogger, SharedEngine};

/// Loads the config as the command line asked for it (file plus flags).
pub type Loader = Box<dyn Fn() -> Result<Config, Error> + Send + Sync>;

/// What a reload may replace.
pub struct Reloader {
    pub current: Config,
    pub loader: Loader,
    pub path: Option<PathBuf>,
    pub shared: SharedEngine,
    pub settings: watch::Sender<ClusterConfig>,
    pub querylog: Box<dyn Fn(&Config) -> Option<Arc<dyn QueryLogger>> + Send + Sync>,
    /// The resolver in force (kept for the loop probe and so its background tasks live).
    pub resolver: Option<Arc<crate::resolve::Resolver>>,
}

/// Why a reload did nothing.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    Unchanged,
    Rejected(String),
}

impl Reloader {
    /// Read the config again and apply what changed.
    pub fn reload(&mut self) -> Outcome {
        let new = match (self.loader)() {
            Ok(c) => c,
            Err(e) => return self.reject(e.to_string()),
        };
        if new == self.current {
            return Outcome::Unchanged;
        }
        for (what, changed) in [
            ("listen", new.listen != self.current.listen),
            ("source", new.source != self.current.source),
            (
                "metrics.listen",
                new.metrics.listen != self.current.metrics.listen,
            ),
            (
                "health.listen",
                new.health.listen != self.current.health.listen,
            ),
            (
                "ready.listen",
                new.ready.listen != self.current.ready.listen,
            ),
            ("server", new.server != self.current.server),
            ("transfer", new.transfer != self.current.transfer),
        ] {
            if changed {
                tracing::warn!(
                    key = what,
                    "this part of the config takes effect only on a restart"
                );
            }
        }
        // Build first, switch after: a resolver that cannot be built rejects the whole reload.
        let resolve_changed = new.forward != self.current.forward
            || new.cache != self.current.cache
            || new.hosts != self.current.hosts;
        let resolver = if resolve_changed {
            if new.forward.enabled {
                match crate::resolve::Resolver::new(&new) {
                    Ok(r) => {
                        r.start();
                        // New upstreams are probed for loops as at start-up.
                        crate::app_ops::after_listen(&Some(r.clone()));
                        Some(r)
                    }
                    Err(e) => return self.reject(e.to_string()),
                }
            } else {
                None
            }
        } else {
            self.resolver.clone()
        };
        let old = self.shared.load_full();
        let engine = Engine {
            zone: old.zone.clone(),
            cluster_enabled: new.cluster.enabled,
            resolver: resolver
                .clone()
                .map(|r| r as Arc<dyn crate::server::Upstream>),
            max_udp: self.current.server.max_udp_size,
            querylog: (self.querylog)(&new),
            count: old.count,
            xfr: old.xfr.clone(),
        };
        self.shared.store(Arc::new(engine));
        if new.cluster != self.current.cluster {
            let _ = self.settings.send(new.cluster.clone());
        }
        self.resolver = resolver;
        self.current = new;
        tracing::info!("config reloaded");
        Outcome::Applied
    }

    fn reject(&self, why: String) -> Outcome {
        crate::ops::metrics::global().reload_failed();
        tracing::error!(error = %why, "config reload rejected; the running config stays");
        Outcome::Rejected(why)
    }

    /// Reload on SIGHUP and when the config file changes (polled: ConfigMap volumes swap a
    /// symlink, which inotify on the file itself would miss).
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = signal(SignalKind::hangup()).ok();
        let mut last = self.path.as_deref().and_then(stamp);
        loop {
            let by_signal = tokio::select! {
                _ = async { match hup.as_mut() { Some(h) => { h.recv().await; } None => std::future::pending::<()>().await } } => true,
                _ = tokio::time::sleep(Duration::from_secs(1)) => false,
                _ = stop.changed() => return,
            };
            let now = self.path.as_deref().and_then(stamp);
            if by_signal || now != last {
                last = now;
                self.reload();
            }
        }
    }
}

fn stamp(p: &std::path::Path) -> Option<(u64, std::time::SystemTime)> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.len(), m.modified().ok()?))
}
