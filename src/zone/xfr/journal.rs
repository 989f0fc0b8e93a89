//! The journal: the differences between consecutive published snapshots, for IXFR (RFC 1995),
//! bounded by entries and bytes, and the snapshot transfers are served from.
//!
//! The zone builder hands every published snapshot to [`Journal::publish`] before storing it for
//! the query path, so by the time anyone can see a serial (an SOA answer, a NOTIFY) the journal
//! holds it. A difference is computed from the two snapshots alone: the services that are not
//! shared between their persistent maps (so a change costs what changed, not the size of the
//! cluster), the addresses those services gained or lost (PTR records), the pods that differ
//! (verified mode) and the name server's addresses. Snapshots that differ in their settings (a
//! config reload: another zone, TTL or pods mode) have no difference worth keeping: the journal
//! starts again, and IXFR from before falls back to the whole zone.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::records::{self, Rr, TransferZone, ZoneKind};
use crate::ops::metrics::Metrics;
use crate::zone::serial::serial_gt;
use crate::zone::snapshot::Snapshot;

/// How much history the journal keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalLimits {
    pub entries: usize,
    pub bytes: usize,
}

/// One zone's difference between two serials: records removed, records added.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ZoneDiff {
    pub removed: Vec<Rr>,
    pub added: Vec<Rr>,
}

/// The difference from one serial to the next, for every zone offered (in the journal's order).
#[derive(Debug)]
pub struct Step {
    pub from: u32,
    pub to: u32,
    pub zones: Vec<ZoneDiff>,
    bytes: usize,
}

/// How to answer a transfer: the snapshot it is served from, and for an incremental one the
/// steps from the secondary's serial to it.
#[derive(Clone)]
pub struct Plan {
    pub snapshot: Arc<Snapshot>,
    /// None: the whole zone (AXFR, or IXFR from a serial no longer held).
    pub steps: Option<Vec<Arc<Step>>>,
}

struct State {
    current: Option<Arc<Snapshot>>,
    steps: VecDeque<Arc<Step>>,
    bytes: usize,
}

/// The journal of the zones offered for transfer.
pub struct Journal {
    /// Apexes of the zones offered (wire, lowercase), in the order of [`Step::zones`].
    apexes: Vec<Box<[u8]>>,
    limits: JournalLimits,
    state: Mutex<State>,
    /// The serial of the newest synced snapshot, for NOTIFY.
    serial: watch::Sender<Option<u32>>,
    /// Where its size and the serial are shown.
    metrics: Arc<Metrics>,
}

impl Journal {
    /// A journal for the zones named (dotted: the cluster zone, reverse zones), its size and
    /// serial shown in `metrics`.
    pub fn new(zones: &[String], limits: JournalLimits, metrics: Arc<Metrics>) -> Journal {
        let apexes = zones
            .iter()
            .filter_map(|z| crate::wire::dotted_to_wire(&z.to_ascii_lowercase()).ok())
            .map(Vec::into_boxed_slice)
            .collect();
        Journal {
            apexes,
            limits,
            state: Mutex::new(State {
                current: None,
                steps: VecDeque::new(),
                bytes: 0,
            }),
            serial: watch::channel(None).0,
            metrics,
        }
    }

    /// The zones offered, as they stand in `snap` (a zone no longer served is left out).
    pub fn zones(&self, snap: &Snapshot) -> Vec<Option<TransferZone>> {
        self.apexes
            .iter()
            .map(|a| TransferZone::of(snap, a))
            .collect()
    }

    /// The index of the zone with this apex (wire, lowercase), if offered.
    pub fn zone_index(&self, apex: &[u8]) -> Option<usize> {
        self.apexes.iter().position(|a| **a == *apex)
    }

    /// The apexes offered (wire, lowercase).
    pub fn apexes(&self) -> &[Box<[u8]>] {
        &self.apexes
    }

    /// Take a newly published snapshot: record its difference from the previous one. Call
    /// before the snapshot is visible to queries. Snapshots before the first complete sync are
    /// not versions of the zone and are not recorded.
    pub fn publish(&self, snap: &Arc<Snapshot>) {
        if !snap.synced {
            return;
        }
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let prev = st.current.replace(snap.clone());
        let step = match &prev {
            Some(p) if p.serial == snap.serial => None,
            Some(p) if same_settings(p, snap) && serial_gt(snap.serial, p.serial) => {
                Some(self.difference(p, snap))
            }
            _ => None,
        };
        match step {
            Some(s) => {
                st.bytes += s.bytes;
                st.steps.push_back(Arc::new(s));
                while st.steps.len() > self.limits.entries || st.bytes > self.limits.bytes {
                    let Some(old) = st.steps.pop_front() else {
                        break;
                    };
                    st.bytes -= old.bytes;
                }
            }
            None => {
                if prev.as_ref().is_some_and(|p| p.serial != snap.serial) {
                    st.steps.clear();
                    st.bytes = 0;
                }
            }
        }
        self.metrics
            .transfer()
            .journal(st.steps.len(), st.bytes, snap.serial);
    }

    /// Tell NOTIFY the newest serial: call once the snapshot is visible to queries too (a
    /// secondary that is notified asks for the SOA at once, and must see the new serial).
    pub fn announce(&self) {
        let serial = self.current().map(|s| s.serial);
        self.serial.send_if_modified(|s| {
            let changed = *s != serial;
            *s = serial;
            changed
        });
    }

    /// The newest synced snapshot (transfers are served from it), if any.
    pub fn current(&self) -> Option<Arc<Snapshot>> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .current
            .clone()
    }

    /// How to answer a transfer of the zone at `zone` from `from` (the secondary's serial:
    /// IXFR), or of the whole zone (None: AXFR). None when there is nothing to serve yet.
    /// From a serial at or past the current one, an empty list of steps.
    pub fn plan(&self, from: Option<u32>) -> Option<Plan> {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let snapshot = st.current.clone()?;
        let steps = from.and_then(|s| {
            if s == snapshot.serial || serial_gt(s, snapshot.serial) {
                return Some(Vec::new());
            }
            let at = st.steps.iter().position(|step| step.from == s)?;
            Some(st.steps.iter().skip(at).cloned().collect())
        });
        Some(Plan { snapshot, steps })
    }

    /// New serials as they are published (None before the first synced snapshot).
    pub fn serials(&self) -> watch::Receiver<Option<u32>> {
        self.serial.subscribe()
    }

    fn difference(&self, old: &Snapshot, new: &Snapshot) -> Step {
        let zones = self.zones(new);
        let mut diffs: Vec<ZoneDiff> = vec![ZoneDiff::default(); zones.len()];
        let cluster = zones
            .iter()
            .position(|z| z.as_ref().is_some_and(|z| z.kind == ZoneKind::Cluster));
        let reverse: Vec<(usize, &TransferZone)> = zones
            .iter()
            .enumerate()
            .filter_map(|(i, z)| {
                z.as_ref()
                    .filter(|z| z.kind == ZoneKind::Reverse)
                    .map(|z| (i, z))
            })
            .collect();
        let (mut was, mut is) = (Vec::new(), Vec::new());
        let mut addresses: Vec<IpAddr> = Vec::new();
        old.services.changed(&new.services, &mut |a, b| {
            if let Some(c) = cluster {
                was.clear();
                is.clear();
                if let Some(a) = a {
                    records::service(old, a, &mut was);
                }
                if let Some(b) = b {
                    records::service(new, b, &mut is);
                }
                add_difference(&mut diffs[c], &mut was, &mut is);
            }
            if !reverse.is_empty() {
                for s in a.into_iter().chain(b) {
                    addresses.extend(s.reverse_ips());
                }
            }
        });
        if let Some(c) = cluster {
            if old.ns_addrs != new.ns_addrs {
                was.clear();
                is.clear();
                records::ns_addresses(old, &mut was);
                records::ns_addresses(new, &mut is);
                add_difference(&mut diffs[c], &mut was, &mut is);
            }
            let mut pods: Vec<(Box<[u8]>, IpAddr)> = Vec::new();
            old.pods
                .changed(&new.pods, &mut |ns, ip| pods.push((ns.into(), ip)));
            pods.sort_unstable();
            pods.dedup();
            for (ns, ip) in pods {
                was.clear();
                is.clear();
                if old.pods.contains(&ns, &ip) {
                    records::pod(old, &ns, ip, &mut was);
                }
                if new.pods.contains(&ns, &ip) {
                    records::pod(new, &ns, ip, &mut is);
                }
                add_difference(&mut diffs[c], &mut was, &mut is);
            }
        }
        addresses.sort_unstable();
        addresses.dedup();
        for ip in addresses {
            for (i, z) in &reverse {
                was.clear();
                is.clear();
                records::ptr(old, z, ip, &mut was);
                records::ptr(new, z, ip, &mut is);
                add_difference(&mut diffs[*i], &mut was, &mut is);
            }
        }
        let bytes = diffs
            .iter()
            .flat_map(|d| d.removed.iter().chain(&d.added))
            .map(Rr::size)
            .sum::<usize>()
            + std::mem::size_of::<Step>();
        Step {
            from: old.serial,
            to: new.serial,
            zones: diffs,
            bytes,
        }
    }
}

/// Whether two snapshots write their records alike (same zones, TTL and pod records): then a
/// difference of records is the difference of the zones.
fn same_settings(a: &Snapshot, b: &Snapshot) -> bool {
    a.zone == b.zone
        && a.reverse_zones == b.reverse_zones
        && a.ttl == b.ttl
        && a.pods_mode == b.pods_mode
}

/// Add what is in `old` and not in `new` to the removed records, and the reverse to the added
/// ones (both sorted and distinct, as the generators make them).
fn add_difference(d: &mut ZoneDiff, old: &mut Vec<Rr>, new: &mut Vec<Rr>) {
    old.sort_unstable();
    old.dedup();
    new.sort_unstable();
    new.dedup();
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        match (old.get(i), new.get(j)) {
            (Some(a), Some(b)) if a == b => {
                i += 1;
                j += 1;
            }
            (Some(a), Some(b)) if a < b => {
                d.removed.push(a.clone());
                i += 1;
            }
            (Some(_), Some(b)) => {
                d.added.push(b.clone());
                j += 1;
            }
            (Some(a), None) => {
                d.removed.push(a.clone());
                i += 1;
            }
            (None, Some(b)) => {
                d.added.push(b.clone());
                j += 1;
            }
            (None, None) => break,
        }
    }
}
