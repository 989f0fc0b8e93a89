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
}
