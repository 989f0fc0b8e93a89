//! The zone builder's task: receive cluster events, coalesce whatever is pending into one
//! change, publish the new snapshot with one atomic swap.

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use tokio::sync::mpsc;

use super::build::ZoneBuilder;
use super::snapshot::Snapshot;
use crate::cluster::ClusterEvent;

/// Run until the channel closes. `on_synced` is called once, when every required kind has
/// been listed.
pub async fn run(
    mut builder: ZoneBuilder,
    mut rx: mpsc::UnboundedReceiver<ClusterEvent>,
    swap: Arc<ArcSwap<Snapshot>>,
    on_synced: Box<dyn Fn() + Send>,
) {
    let mut announced = false;
    while let Some(ev) = rx.recv().await {
        apply(&mut builder, ev);
        // A burst of changes becomes one swap: drain what is already queued.
        while let Ok(ev) = rx.try_recv() {
            apply(&mut builder, ev);
        }
        if !builder.has_changes() {
            continue;
        }
        let (snap, programmed) = builder.publish();
        let counts = snap.counts();
        swap.store(snap);
        let m = crate::ops::metrics::global();
        m.snapshot_published(counts.services, counts.endpoints, counts.pods, counts.records);
        let now = SystemTime::now();
        for p in programmed {
            if let Ok(d) = now.duration_since(p.changed_at) {
                m.dns_programming(p.kind, d);
            }
        }
        tracing::debug!(services = counts.services, endpoints = counts.endpoints, records = counts.records, "snapshot published");
        if !announced && builder.synced() {
            announced = true;
            tracing::info!(services = counts.services, endpoints = counts.endpoints, "cluster zone synced");
            on_synced();
        }
    }
}

fn apply(b: &mut ZoneBuilder, ev: ClusterEvent) {
    if let ClusterEvent::WatchRestart { kind } = &ev {
        crate::ops::metrics::global().watch_restart(kind.as_str());
    }
    b.apply(ev);
}
