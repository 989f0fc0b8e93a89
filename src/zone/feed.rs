//! The zone builder's task: receive cluster events, coalesce whatever is pending into one
//! change, publish the new snapshot with one atomic swap.

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use tokio::sync::mpsc;

use super::build::ZoneBuilder;
use super::snapshot::Snapshot;
use super::xfr::Journal;
use crate::cluster::ClusterEvent;
use crate::ops::metrics::Metrics;

/// Run until the channel closes. `on_synced` is called once, when every required kind has
/// been listed. Snapshots, programming delays and watch restarts are counted in `metrics`.
/// `journal`: zone transfers are on; every snapshot goes to it before queries can see its
/// serial.
pub async fn run(
    mut builder: ZoneBuilder,
    mut rx: mpsc::UnboundedReceiver<ClusterEvent>,
    swap: Arc<ArcSwap<Snapshot>>,
    on_synced: Box<dyn Fn() + Send>,
    mut settings: tokio::sync::watch::Receiver<crate::config::ClusterConfig>,
    journal: Option<Arc<Journal>>,
    metrics: Arc<Metrics>,
) {
    let mut announced = false;
    let mut settings_alive = true;
    let mut relisted = false;
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(ev) => {
                    relisted |= ev.is_list();
                    apply(&mut builder, ev, &metrics)
                }
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
        // A burst of changes becomes one swap: drain what is already queued.
        while let Ok(ev) = rx.try_recv() {
            relisted |= ev.is_list();
            apply(&mut builder, ev, &metrics);
        }
        if !builder.has_changes() {
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
        if std::mem::take(&mut relisted) {
            // A full list decodes the whole cluster once and frees most of it again: hand the
            // freed pages back, so resident memory reflects what is held, not the peak.
            crate::memory::release_free_memory();
        }
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

fn apply(b: &mut ZoneBuilder, ev: ClusterEvent, metrics: &Metrics) {
    if let ClusterEvent::WatchRestart { kind } = ev.inner() {
        metrics.watch_restart(kind.as_str());
    }
    b.apply(ev);
}
