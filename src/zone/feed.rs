//! The zone builder's task: receive cluster events, coalesce whatever is pending into one
//! change, publish the new snapshot with one atomic swap.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::mpsc;

use super::build::ZoneBuilder;
use super::snapshot::Snapshot;
use super::xfr::Journal;
use crate::cluster::{ClusterEvent, Kind};
use crate::ops::metrics::Metrics;

/// How many events the source may queue ahead of the builder. A list streams its objects
/// through this queue: a bound keeps a fast source from piling up a copy of the cluster in it.
pub const QUEUE: usize = 1024;

/// How long one round may apply queued events before it publishes what it has: a list of a
/// large kind streams for seconds, and a change to another kind must not wait for its end.
const ROUND: Duration = Duration::from_millis(2);

/// A list with at least this many objects frees enough memory (decoded pages, the objects
/// themselves) that returning it to the system is worth the walk over the heap.
const LARGE_LIST: usize = 10_000;

/// Run until the channel closes. `on_synced` is called once, when every required kind has
/// been listed. Snapshots, programming delays and watch restarts are counted in `metrics`.
/// `journal`: zone transfers are on; every snapshot goes to it before queries can see its
/// serial.
pub async fn run(
    mut builder: ZoneBuilder,
    mut rx: mpsc::Receiver<ClusterEvent>,
    swap: Arc<ArcSwap<Snapshot>>,
    on_synced: Box<dyn Fn() + Send>,
    mut settings: tokio::sync::watch::Receiver<crate::config::ClusterConfig>,
    journal: Option<Arc<Journal>>,
    metrics: Arc<Metrics>,
) {
    let mut announced = false;
    let mut settings_alive = true;
    let mut lists = Lists::default();
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(ev) => lists.apply(&mut builder, ev, &metrics),
                None => return,
            },
            changed = settings.changed(), if settings_alive => {
                if changed.is_err() {
                    // nobody reloads settings any more: keep serving with what we have
                    settings_alive = false;
                    continue;
                }
                let cfg = settings.borrow_and_update().clone();
                let required = crate::zone::build::required_kinds(&cfg);
                builder.reconfigure(&cfg, &required);
                tracing::info!("cluster settings reloaded");
            }
        }
        // A burst of changes becomes one swap: drain what is already queued, for one round,
        // but publish a completed list at once.
        let round = Instant::now() + ROUND;
        while !lists.ended_this_round {
            let Ok(ev) = rx.try_recv() else { break };
            lists.apply(&mut builder, ev, &metrics);
            if Instant::now() >= round {
                break;
            }
        }
        if !builder.has_changes() {
            lists.after_round();
            continue;
        }
        let (snap, programmed) = builder.publish();
        let counts = snap.counts();
        if let Some(j) = &journal {
            j.publish(&snap);
        }
        swap.store(snap);
        if let Some(j) = &journal {
            j.announce();
        }
        let m = &metrics;
        m.snapshot_published(
            counts.services,
            counts.endpoints,
            counts.pods,
            counts.records,
        );
        let now = SystemTime::now();
        for p in programmed {
            if let Ok(d) = now.duration_since(p.changed_at) {
                m.dns_programming(p.kind, d);
            }
        }
        tracing::debug!(
            services = counts.services,
            endpoints = counts.endpoints,
            records = counts.records,
            "snapshot published"
        );
        lists.after_round();
        if !announced && builder.synced() {
            announced = true;
            tracing::info!(
                services = counts.services,
                endpoints = counts.endpoints,
                "cluster zone synced"
            );
            on_synced();
        }
    }
}

/// Lists in progress, for their log line and for handing memory back after large ones.
#[derive(Default)]
struct Lists {
    /// Per kind: when its list began and how many objects it has listed.
    open: std::collections::BTreeMap<Kind, (Instant, usize)>,
    /// A list ended this round.
    ended_this_round: bool,
    /// A large list ended this round.
    large_ended: bool,
}

impl Lists {
    fn apply(&mut self, b: &mut ZoneBuilder, ev: ClusterEvent, metrics: &Metrics) {
        // An event at an API revision (for the zone's serial) is looked at as the event it wraps.
        match ev.inner() {
            ClusterEvent::WatchRestart { kind } => metrics.watch_restart(kind.as_str()),
            ClusterEvent::ListBegin { kind } => {
                self.open.insert(*kind, (Instant::now(), 0));
            }
            ClusterEvent::Listed { object } => {
                if let Some((_, n)) = self.open.get_mut(&object.kind()) {
                    *n += 1;
                }
            }
            ClusterEvent::ListEnd { kind } => {
                let (began, n) = self.open.remove(kind).unwrap_or((Instant::now(), 0));
                tracing::info!(
                    kind = kind.as_str(),
                    objects = n,
                    ms = began.elapsed().as_secs_f64() * 1e3,
                    "list applied"
                );
                self.ended_this_round = true;
                self.large_ended |= n >= LARGE_LIST;
            }
            ClusterEvent::Relist { .. } | ClusterEvent::ReplaceAll { .. } => {
                self.large_ended = true;
            }
            _ => {}
        }
        b.apply(ev);
    }

    fn after_round(&mut self) {
        self.ended_this_round = false;
        if std::mem::take(&mut self.large_ended) {
            // A large list decoded many objects and freed them again: hand the freed pages
            // back, so resident memory reflects what is held, not the peak.
            crate::memory::release_free_memory();
        }
    }
}
