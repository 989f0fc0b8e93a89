//! Admission of TCP connections: the one place that decides whether a connection is served.
//!
//! Caps on open connections in total and per client (`limits.tcp`); clients in
//! `limits.exempt` (node addresses: node-local caches' `force_tcp` connections, zone-transfer
//! secondaries) are held to the total only. Past a cap the connection that has waited longest
//! for its client (no query under way: idle, or stalled part-way through a message) is asked to
//! close, and the new one is served once it has — so open connections, and the file
//! descriptors they hold, never exceed the cap by more than the one just accepted. When every
//! connection is busy answering, the new one is closed at once.
//!
//! The total cap is also held under the process's file-descriptor limit: what `RLIMIT_NOFILE`
//! leaves after forwarding's sockets (one per query waiting for an upstream, at most
//! its routes' `max_concurrent` together) and a reserve for listeners, workers and files.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::config::{IpPrefix, LimitsConfig};

/// File descriptors kept for everything that is not a client connection or a forwarding
/// socket: listeners, UDP sockets, the metrics and probe endpoints, upstream TCP pools, files.
const RESERVED_FDS: u64 = 256;
/// The fewest connections the descriptor budget leaves (a tiny limit still serves TCP).
const MIN_CONNECTIONS: usize = 16;

/// What TCP admission and connections enforce; part of the engine, so it reloads with it.
#[derive(Debug, Clone)]
pub struct TcpLimits {
    pub max_connections: usize,
    pub max_per_client: usize,
    /// A message begun must be complete within this long (slowloris).
    pub message_timeout: Duration,
    pub exempt: Vec<IpPrefix>,
}

impl TcpLimits {
    pub fn new(c: &LimitsConfig) -> TcpLimits {
        TcpLimits {
            max_connections: c.tcp.max_connections,
            max_per_client: c.tcp.max_connections_per_client,
            message_timeout: c.tcp.message_timeout,
            exempt: c.exempt.clone(),
        }
    }
}

/// Raise the soft `RLIMIT_NOFILE` to the hard limit (as Go's runtime does for CoreDNS) and
/// return the connections it leaves room for when `forwards` sockets may be open for
/// forwarding at the same time.
pub fn fd_budget(forwards: usize) -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write/read the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return usize::MAX;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    if lim.rlim_cur == libc::RLIM_INFINITY {
        return usize::MAX;
    }
    let left = lim
        .rlim_cur
        .saturating_sub(RESERVED_FDS)
        .saturating_sub(forwards as u64);
    usize::try_from(left)
        .unwrap_or(usize::MAX)
        .max(MIN_CONNECTIONS)
}

/// One open connection as the gate sees it; the connection updates it as it works.
#[derive(Debug)]
pub struct Tracked {
    id: u64,
    client: IpAddr,
    exempt: bool,
    /// When the connection last received or sent a message (ns since the gate's epoch).
    active: AtomicU64,
    /// Queries read and not yet answered: a connection with any is not closed to make room.
    busy: AtomicU32,
    /// Asked to close (to make room); the connection closes once it has nothing in flight.
    pub evict: Notify,
    evicting: std::sync::atomic::AtomicBool,
    epoch: Instant,
}

impl Tracked {
    /// A message came in or went out.
    pub fn touch(&self) {
        self.active
            .store(self.epoch.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }

    /// Queries under way now.
    pub fn set_busy(&self, queries: usize) {
        self.busy.store(
            u32::try_from(queries).unwrap_or(u32::MAX),
            Ordering::Release,
        );
    }
}

#[derive(Debug, Default)]
struct Open {
    conns: HashMap<u64, Arc<Tracked>>,
    per_client: HashMap<IpAddr, usize>,
    next_id: u64,
}

/// Admission of new connections. One per listener, for its lifetime.
#[derive(Debug)]
pub struct Gate {
    open: Mutex<Open>,
    /// Notified whenever a connection closes.
    closed: Notify,
    /// Connections the file-descriptor limit leaves room for.
    fd_budget: usize,
    epoch: Instant,
}

/// An admitted connection; dropping it gives its place back.
#[derive(Debug)]
pub struct Admitted {
    gate: Arc<Gate>,
    pub tracked: Arc<Tracked>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self.gate.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.conns.remove(&self.tracked.id).is_some()
            && let Some(n) = open.per_client.get_mut(&self.tracked.client)
        {
            *n -= 1;
            if *n == 0 {
                open.per_client.remove(&self.tracked.client);
            }
        }
        drop(open);
        self.gate.closed.notify_waiters();
    }
}

/// The gate's answer for one new connection.
#[derive(Debug)]
pub enum Decision {
    Serve(Admitted),
    /// A cap is reached and an idle connection was asked to close: wait for a close (see
    /// [`Gate::wait_closed`]), then ask again.
    Wait,
    /// A cap is reached and every connection under it is busy: close the new one.
    Refuse(Refusal),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Total,
    PerClient,
}

impl Gate {
    /// A gate holding connections under `fd_budget` besides the configured caps.
    pub fn new(fd_budget: usize) -> Gate {
        Gate {
            open: Mutex::new(Open::default()),
            closed: Notify::new(),
            fd_budget,
            epoch: Instant::now(),
        }
    }

    /// Whether a connection from `client` is served under `limits`; evictions it asks for
    /// are counted by the caller through the decision.
    pub fn admit(self: &Arc<Self>, client: IpAddr, limits: &TcpLimits) -> (Decision, bool) {
        let exempt = limits.exempt.iter().any(|p| p.contains(client));
        let cap = limits.max_connections.min(self.fd_budget);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if !exempt && open.per_client.get(&client).copied().unwrap_or(0) >= limits.max_per_client {
            return match self.make_room(&open, Some(client)) {
                Room::Asked => (Decision::Wait, true),
                Room::Pending => (Decision::Wait, false),
                Room::None => (Decision::Refuse(Refusal::PerClient), false),
            };
        }
        if open.conns.len() >= cap {
            return match self.make_room(&open, None) {
                Room::Asked => (Decision::Wait, true),
                Room::Pending => (Decision::Wait, false),
                Room::None => (Decision::Refuse(Refusal::Total), false),
            };
        }
        let id = open.next_id;
        open.next_id += 1;
        let tracked = Arc::new(Tracked {
            id,
            client,
            exempt,
            active: AtomicU64::new(self.epoch.elapsed().as_nanos() as u64),
            busy: AtomicU32::new(0),
            evict: Notify::new(),
            evicting: false.into(),
            epoch: self.epoch,
        });
        open.conns.insert(id, tracked.clone());
        *open.per_client.entry(client).or_insert(0) += 1;
        (
            Decision::Serve(Admitted {
                gate: self.clone(),
                tracked,
            }),
            false,
        )
    }

    /// Ask the connection (of `client`, or any) that has waited longest for its client to
    /// close. One eviction at a time per scope: while one is under way, the caller waits.
    fn make_room(&self, open: &Open, client: Option<IpAddr>) -> Room {
        let mine = |t: &&Arc<Tracked>| client.is_none_or(|c| t.client == c && !t.exempt);
        if open
            .conns
            .values()
            .filter(mine)
            .any(|t| t.evicting.load(Ordering::Acquire))
        {
            return Room::Pending;
        }
        let oldest = open
            .conns
            .values()
            .filter(mine)
            .filter(|t| t.busy.load(Ordering::Acquire) == 0)
            .min_by_key(|t| t.active.load(Ordering::Relaxed));
        match oldest {
            Some(t) => {
                t.evicting.store(true, Ordering::Release);
                t.evict.notify_one();
                Room::Asked
            }
            None => Room::None,
        }
    }

    /// Resolves when a connection closes, or after `limit` (an evicted connection that is
    /// answering a query it read meanwhile may take a while).
    pub async fn wait_closed(&self, limit: Duration) {
        let _ = tokio::time::timeout(limit, self.closed.notified()).await;
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .conns
            .len()
    }
}

enum Room {
    Asked,
    Pending,
    None,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per_client: usize) -> TcpLimits {
        TcpLimits {
            max_connections: total,
            max_per_client: per_client,
            message_timeout: Duration::from_secs(1),
            exempt: vec![IpPrefix::parse("10.9.0.0/16").unwrap()],
        }
    }

    fn serve(d: (Decision, bool)) -> Admitted {
        match d.0 {
            Decision::Serve(a) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn per_client_cap_evicts_that_clients_oldest_idle() {
        let g = Arc::new(Gate::new(usize::MAX));
        let l = limits(100, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = serve(g.admit(a, &l));
        std::thread::sleep(Duration::from_millis(2));
        let second = serve(g.admit(a, &l));
        second.tracked.touch();
        let other = serve(g.admit(b, &l));
        // Third from `a`: its oldest idle one (the first) is asked to close.
        assert!(matches!(g.admit(a, &l), (Decision::Wait, true)));
        assert!(first.tracked.evicting.load(Ordering::Acquire));
        assert!(!second.tracked.evicting.load(Ordering::Acquire));
        // Asked again before it closed: wait, no second eviction.
        assert!(matches!(g.admit(a, &l), (Decision::Wait, false)));
        drop(first);
        let third = serve(g.admit(a, &l));
        // Both of `a`'s busy: the next is refused, `b` is not affected.
        second.tracked.set_busy(1);
        third.tracked.set_busy(1);
        assert!(matches!(
            g.admit(a, &l),
            (Decision::Refuse(Refusal::PerClient), false)
        ));
        let _b2 = serve(g.admit(b, &l));
        assert_eq!(g.open(), 4);
        drop(other);
        assert_eq!(g.open(), 3);
    }

    #[test]
    fn total_cap_and_exemption() {
        let g = Arc::new(Gate::new(usize::MAX));
        let l = limits(3, 1);
        let node: IpAddr = "10.9.1.1".parse().unwrap();
        // Exempt from the per-client cap...
        let n1 = serve(g.admit(node, &l));
        let n2 = serve(g.admit(node, &l));
        n1.tracked.set_busy(1);
        n2.tracked.set_busy(1);
        let p = serve(g.admit("10.0.0.5".parse().unwrap(), &l));
        // ...not from the total: the one idle connection makes room.
        assert!(matches!(
            g.admit("10.0.0.6".parse().unwrap(), &l),
            (Decision::Wait, true)
        ));
        assert!(p.tracked.evicting.load(Ordering::Acquire));
        drop(p);
        let q = serve(g.admit("10.0.0.6".parse().unwrap(), &l));
        q.tracked.set_busy(1);
        assert!(matches!(
            g.admit(node, &l),
            (Decision::Refuse(Refusal::Total), false)
        ));
    }

    #[test]
    fn fd_budget_caps_the_total() {
        let g = Arc::new(Gate::new(2));
        let l = limits(1000, 1000);
        let c: IpAddr = "10.0.0.1".parse().unwrap();
        let a = serve(g.admit(c, &l));
        let b = serve(g.admit(c, &l));
        a.tracked.set_busy(1);
        b.tracked.set_busy(1);
        assert!(matches!(g.admit(c, &l).0, Decision::Refuse(Refusal::Total)));
        assert!(fd_budget(1000) >= MIN_CONNECTIONS);
    }
}
