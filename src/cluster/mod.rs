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

/// What a source tells the zone builder. A source emits these on one bounded channel (a source
/// that outruns the builder waits, so nothing piles up in between); the builder coalesces
/// whatever is pending into one new snapshot.
///
/// A complete list of a kind arrives as a stream, never as one collection: [`ListBegin`], one
/// [`Listed`] per object, [`ListEnd`]. The builder applies each listed object as it comes,
/// marking it; at `ListEnd` it removes the objects of the kind that were not listed (mark and
/// sweep) and publishes everything the list changed at once. So a list of any size costs no
/// more memory than the objects that changed, and DNS answers the last complete state until
/// the list is complete.
///
/// [`ListBegin`]: ClusterEvent::ListBegin
/// [`Listed`]: ClusterEvent::Listed
/// [`ListEnd`]: ClusterEvent::ListEnd
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
    /// A complete list of `kind` begins (the first sync, a relist after a 410 Gone, or a file
    /// read again): the [`ClusterEvent::Listed`] objects that follow are the kind's whole
    /// state. A `ListBegin` before the previous list's `ListEnd` starts the list over.
    ListBegin { kind: Kind },
    /// One object of the list in progress of its kind.
    Listed { object: Object },
    /// The list of `kind` is complete: objects of the kind not listed since its `ListBegin` are
    /// gone. Marks the kind synced.
    ListEnd { kind: Kind },
    /// A complete list of one kind given at once (tests, benchmarks): the same as `ListBegin`,
    /// `Listed` for each object, `ListEnd`.
    Relist { kind: Kind, objects: Vec<Object> },
    /// The complete cluster given at once (`check`, tests): every kind listed as by `Relist`.
    ReplaceAll { objects: Vec<Object> },
    /// A watch restarted (dropped, expired, or errored); for the event log of tests.
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
