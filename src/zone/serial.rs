//! The zone's SOA serial: RFC 1982 arithmetic, and how each published snapshot's serial is
//! derived from the API state, so that replicas holding the same state publish the same serial
//! and a restart without local storage never goes back.
//!
//! **From Kubernetes** (`Revisions`): the serial is the API state's revision times
//! [`STEPS_PER_REVISION`], taken modulo 2^32. The revision is the etcd revision the state is
//! known to be at: the `resourceVersion` of the newest watch event that changed the cluster
//! state, or of the newest complete list (the list's own `resourceVersion`, not its objects':
//! a deletion leaves no object behind, but the list's revision is past it). Every conformant API
//! server's resourceVersions are etcd revisions (decimal integers; kine's too): one counter
//! for every object of every kind, increasing with every write. So
//!
//! - the same state gives the same revision on every replica, whatever the batching: the
//!   revision of the last change applied, not a count of publishes or a clock;
//! - a later state has a higher revision: every change is a write, and writes only raise it;
//! - after a restart the first lists' revision is at least that of anything the previous
//!   process had seen (deletions included), so the serial does not go back;
//! - the watch streams of different kinds are independent, so a replica can apply an event of
//!   one kind after a newer one of another kind. Its state changed, the revision did not: the
//!   serial must still rise, by 1 (RFC 1982 `prev + 1`). That is what the factor is for: those
//!   steps stay inside the revision's own range of serials, and the next change (a higher
//!   revision) brings every replica back to `revision × 4`, the same number. A replica can run
//!   ahead of the others by such steps only until the next change.
//!
//! RFC 1982 compares serials less than 2^31 apart; ×4 leaves 2^29 revisions (about 5×10^8
//! writes) between two serials a secondary compares: a secondary refreshes within the SOA's
//! expire (a day), and no etcd takes 6,000 writes a second for a day.
//!
//! **From a file** (`Clock`): a file has no revision, and its content can even go back to an
//! older version. The serial is the Unix time in seconds (what CoreDNS uses), at least the
//! previous serial + 1: increasing within a run and across restarts (unless more than one
//! snapshot a second was published right before the restart); replicas agree only when they
//! publish in the same second.
//!
//! **Before the first complete sync** snapshots are not versions of the zone: transfers are
//! refused and no NOTIFY is sent. Their serial is the candidate alone, so the first synced
//! snapshot is `revision × 4` on every replica, whatever was published on the way.

use std::time::SystemTime;

/// Serials per API revision: room for a few state changes that raise no revision (see the
/// module documentation).
pub const STEPS_PER_REVISION: u64 = 4;

/// RFC 1982 §3.2: `a` is greater than `b` when `a - b` (mod 2^32) is in `1 .. 2^31`; serials
/// exactly 2^31 apart are not comparable, and count as not greater.
#[inline]
pub fn serial_gt(a: u32, b: u32) -> bool {
    let d = a.wrapping_sub(b);
    d != 0 && d < 1 << 31
}

/// Where serials come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SerialSource {
    /// The Unix time in seconds (the file source).
    #[default]
    Clock,
    /// The API state's revision (the Kubernetes source).
    Revisions,
}

/// The builder's serial state: the source, and the newest revision seen.
#[derive(Debug, Clone, Default)]
pub struct Serials {
    source: SerialSource,
    revision: Option<u64>,
}

impl Serials {
    pub fn new(source: SerialSource) -> Self {
        Serials {
            source,
            revision: None,
        }
    }

    pub fn source(&self) -> SerialSource {
        self.source
    }

    /// The API state is now (at least) at `revision`.
    pub fn observe(&mut self, revision: u64) {
        self.revision = Some(self.revision.map_or(revision, |r| r.max(revision)));
    }

    /// The newest revision seen.
    pub fn revision(&self) -> Option<u64> {
        self.revision
    }

    /// The serial this source gives now, before the rule that it must rise.
    pub fn candidate(&self) -> u32 {
        match self.source {
            SerialSource::Revisions => {
                self.revision.unwrap_or(0).wrapping_mul(STEPS_PER_REVISION) as u32
            }
            SerialSource::Clock => SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs() as u32)
                .unwrap_or(0),
        }
    }

    /// The serial of the next published snapshot. `prev`: the last synced snapshot's serial,
    /// None before the first (then the candidate is taken as it is).
    pub fn next(&self, prev: Option<u32>) -> u32 {
        let c = self.candidate();
        match prev {
            Some(p) if !serial_gt(c, p) => p.wrapping_add(1),
            _ => c,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1982_comparison() {
        assert!(serial_gt(2, 1));
        assert!(!serial_gt(1, 2));
        assert!(!serial_gt(7, 7));
        // Across the wrap: 0 follows u32::MAX.
        assert!(serial_gt(0, u32::MAX));
        assert!(serial_gt(5, u32::MAX - 5));
        assert!(!serial_gt(u32::MAX, 0));
        // 2^31 - 1 ahead is greater; 2^31 apart is undefined (neither).
        assert!(serial_gt((1 << 31) - 1, 0));
        assert!(!serial_gt(1 << 31, 0));
        assert!(!serial_gt(0, 1 << 31));
    }

    #[test]
    fn revisions_give_the_serial_and_steps_stay_below_the_next_revision() {
        let mut s = Serials::new(SerialSource::Revisions);
        s.observe(100);
        assert_eq!(s.next(None), 400);
        // A change that raises no revision: one step, still below revision 101's serial.
        assert_eq!(s.next(Some(400)), 401);
        assert_eq!(s.next(Some(401)), 402);
        s.observe(99); // an older revision changes nothing
        assert_eq!(s.revision(), Some(100));
        s.observe(101);
        // Back on the revision's serial: a replica that took no steps agrees.
        assert_eq!(s.next(Some(402)), 404);
        // Large revisions wrap modulo 2^32 and still rise in RFC 1982 terms.
        let mut s = Serials::new(SerialSource::Revisions);
        s.observe((1u64 << 30) - 1);
        let a = s.next(None);
        s.observe(1u64 << 30);
        let b = s.next(Some(a));
        assert_eq!(b, 0);
        assert!(serial_gt(b, a));
    }

    #[test]
    fn the_clock_rises_at_least_by_one() {
        let s = Serials::new(SerialSource::Clock);
        let now = s.next(None);
        assert!(now > 1_600_000_000);
        assert_eq!(s.next(Some(now.wrapping_add(5))), now.wrapping_add(6));
    }
}
