//! Cluster objects in: the DNS-relevant part of each object ([`objects`]), the events sources
//! emit ([`ClusterEvent`]) and the compact per-kind indexes they update ([`state`]). Nothing here
//! knows DNS wire format.

pub mod objects;
pub mod state;

/// Label selectors moved below the config ([`crate::selector`]), which validates them; this
/// path stays for the code that still reaches them here.
pub use crate::selector;

use std::time::SystemTime;

pub use objects::{Kind, Object, ObjectKey};

/// What a source tells the zone builder. A source emits these on one channel; the builder
/// coalesces whatever is pending into one new snapshot.
#[derive(Debug, Clone)]
pub enum ClusterEvent {
    /// An object was added or changed. `changed_at` is when the change happened in the cluster,
    /// where the object says (e.g. an EndpointSlice's `endpoints.kubernetes.io/last-change-trigger-time`),
    /// for the programming-duration metric.
    Apply {
        object: Object,
        changed_at: Option<SystemTime>,
    },
    /// An object was deleted.
    Delete { key: ObjectKey },
    /// A complete list of one kind (first sync or relist after a dropped watch or 410 Gone):
    /// objects of that kind not in the list are gone. Marks the kind synced.
    Relist { kind: Kind, objects: Vec<Object> },
    /// The complete cluster (the file source): replaces every kind and marks all synced.
    ReplaceAll { objects: Vec<Object> },
    /// A watch restarted (dropped, expired, or errored); for metrics.
    WatchRestart { kind: Kind },
    /// `event`, after which the API state is at `revision` (its `resourceVersion` as an
    /// integer: the object's for a watch event, the list's for a list). The zone's serial is
    /// derived from it (`zone::serial`); sources without revisions (a file) send events bare.
    AtRevision {
        revision: u64,
        event: Box<ClusterEvent>,
    },
}

impl ClusterEvent {
    /// The event itself, without its revision.
    pub fn inner(&self) -> &ClusterEvent {
        match self {
            ClusterEvent::AtRevision { event, .. } => event.inner(),
            e => e,
        }
    }

    /// A complete list (of one kind, or of everything).
    pub fn is_list(&self) -> bool {
        matches!(
            self.inner(),
            ClusterEvent::Relist { .. } | ClusterEvent::ReplaceAll { .. }
        )
    }
}
