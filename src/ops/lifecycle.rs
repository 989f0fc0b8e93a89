//! Readiness and the shutdown sequence. (SIGHUP belongs to the config reload, `crate::reload`.)
//!
//! # Readiness
//!
//! [`Readiness`] is the state behind `GET /ready`: a list of names that are not ready yet
//! (`kubernetes` until the first list of every watched kind is in the snapshot), latched once
//! empty, as CoreDNS's `ready` plugin. From the moment shutdown starts it fails at once.
//!
//! # Shutdown
//!
//! [`Lifecycle`] runs the sequence a kube-dns pod goes through on SIGTERM (or SIGINT, or
//! [`Lifecycle::request_shutdown`]), as CoreDNS's `health { lameduck 5s }` does:
//!
//! | phase | what happens |
//! |---|---|
//! | [`Phase::Running`] | serving; `/ready` says what it says |
//! | [`Phase::LameDuck`] | `/ready` answers 503 at once, so the endpoint leaves the Service; DNS keeps answering, `/health` keeps answering 200, for `health.lameduck` (a second signal cuts it short) |
//! | [`Phase::Draining`] | DNS servers stop accepting and finish what they hold; [`Lifecycle::run`] waits until every [`DrainGuard`] is dropped, at most `health.drain_timeout` |
//! | [`Phase::Stopped`] | the HTTP endpoints close; [`Lifecycle::run`] returns and `main` exits 0 |
//!
//! The phase is a `tokio::sync::watch` channel (the mini-redis pattern): each server holds a
//! [`ShutdownSignal`] (`draining().await` = stop accepting), and a [`DrainGuard`] per piece of
//! work it must finish (a UDP worker answering what its socket queued, a forwarded UDP query, a
//! TCP connection); dropping the last one tells [`Lifecycle::run`] the drain is complete. This
//! is the one drain mechanism: nothing else polls counters or waits fixed times, and the whole
//! drain is bounded by `health.drain_timeout`.
//!
//! ```no_run
//! # async fn demo(cfg: clusterdns::config::Config) -> std::io::Result<()> {
//! use clusterdns::ops::lifecycle::{Lifecycle, Readiness};
//! let readiness = Readiness::new(["kubernetes"]);
//! let lc = Lifecycle::new(readiness.clone(), &cfg.health);
//! let mut signal = lc.signal();
//! let guard = lc.drain_guard();
//! tokio::spawn(async move {
//!     // serve until told to stop accepting, finish in-flight work, then:
//!     signal.draining().await;
//!     drop(guard);
//! });
//! // on the first sync: readiness.set_ready("kubernetes");
//! lc.run()?.await;
//! # Ok(()) }
//! ```

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::config::HealthConfig;

// ---------------------------------------------------------------------------------------------
// Readiness.

/// What `/ready` reports. Cheap to clone (shared state).
#[derive(Clone, Debug)]
pub struct Readiness {
    inner: Arc<ReadyInner>,
}

#[derive(Debug)]
struct ReadyInner {
    pending: Mutex<Vec<String>>,
    ready: AtomicBool,
    shutting_down: AtomicBool,
    changed: Notify,
}

impl Readiness {
    /// Not ready until each of `pending` (e.g. `["kubernetes"]`) is [`set_ready`](Self::set_ready).
    pub fn new<I, S>(pending: I) -> Readiness
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let pending: Vec<String> = pending.into_iter().map(Into::into).collect();
        let ready = pending.is_empty();
        Readiness {
            inner: Arc::new(ReadyInner {
                pending: Mutex::new(pending),
                ready: AtomicBool::new(ready),
                shutting_down: AtomicBool::new(false),
                changed: Notify::new(),
            }),
        }
    }

    /// `name` is ready. Once nothing is pending the process is ready for good (latched), until
    /// shutdown starts.
    pub fn set_ready(&self, name: &str) {
        let mut p = self.inner.pending.lock().unwrap_or_else(|e| e.into_inner());
        let before = p.len();
        p.retain(|n| n != name);
        if p.is_empty() && !self.inner.ready.swap(true, Ordering::AcqRel) {
            tracing::info!("ready");
        } else if p.len() != before {
            tracing::info!(ready = name, still_waiting_on = %p.join(","), "partly ready");
        }
        drop(p);
        self.inner.changed.notify_waiters();
    }

    /// A callback that marks `name` ready (for sources that take a `Box<dyn Fn()>`).
    pub fn setter(&self, name: &str) -> Box<dyn Fn() + Send + Sync> {
        let r = self.clone();
        let name = name.to_string();
        Box::new(move || r.set_ready(&name))
    }

    /// Names not ready yet.
    pub fn pending(&self) -> Vec<String> {
        self.inner
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Ready and not shutting down.
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire) && !self.is_shutting_down()
    }

    /// Readiness fails from now on (the first step of shutdown).
    pub fn start_shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::Release);
        self.inner.changed.notify_waiters();
    }

    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::Acquire)
    }

    /// `Ok(())`: answer 200 `OK`. `Err(body)`: answer 503 with `body`, the comma-joined names
    /// not ready yet (`kubernetes`), or `shutting down`.
    pub fn status(&self) -> Result<(), String> {
        if self.is_shutting_down() {
            return Err("shutting down".into());
        }
        if self.inner.ready.load(Ordering::Acquire) {
            return Ok(());
        }
        Err(self.pending().join(","))
    }

    /// Wait until ready, at most `timeout` (CoreDNS's `startup_timeout`). Returns whether ready.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.inner.changed.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.inner.ready.load(Ordering::Acquire) {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }
}

// ---------------------------------------------------------------------------------------------
// Shutdown.

/// Where the process is in its shutdown sequence (ordered).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Running,
    LameDuck,
    Draining,
    Stopped,
}

/// A server's view of the shutdown sequence. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ShutdownSignal {
    rx: watch::Receiver<Phase>,
}

impl ShutdownSignal {
    /// A signal that never fires (tests, tools).
    pub fn never() -> ShutdownSignal {
        let (tx, rx) = watch::channel(Phase::Running);
        std::mem::forget(tx);
        ShutdownSignal { rx }
    }
    pub fn phase(&self) -> Phase {
        *self.rx.borrow()
    }
    /// True once servers must stop accepting new work.
    pub fn is_draining(&self) -> bool {
        self.phase() >= Phase::Draining
    }
    /// Resolves once `phase` is reached (at once if it already was, or if the [`Lifecycle`] is
    /// gone).
    pub async fn reached(&mut self, phase: Phase) {
        let _ = self.rx.wait_for(|p| *p >= phase).await;
    }
    /// Resolves when shutdown starts (readiness already failing; keep serving).
    pub async fn lameduck(&mut self) {
        self.reached(Phase::LameDuck).await
    }
    /// Resolves when DNS servers must stop accepting and finish in-flight work.
    pub async fn draining(&mut self) {
        self.reached(Phase::Draining).await
    }
    /// Resolves when everything must close (the HTTP endpoints).
    pub async fn stopped(&mut self) {
        self.reached(Phase::Stopped).await
    }
    /// A `watch::Receiver<bool>` that turns true at `phase`, for code that takes one.
    pub fn as_bool(&self, phase: Phase) -> watch::Receiver<bool> {
        let (tx, rx) = watch::channel(self.phase() >= phase);
        let mut me = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = me.reached(phase) => { let _ = tx.send(true); }
                _ = tx.closed() => {}
            }
        });
        rx
    }
}

/// Held while work must finish before the process exits; see [`Lifecycle::drain_guard`].
#[derive(Debug)]
pub struct DrainGuard {
    inner: Arc<Shared>,
}

impl Clone for DrainGuard {
    fn clone(&self) -> Self {
        self.inner.guards.fetch_add(1, Ordering::AcqRel);
        DrainGuard {
            inner: self.inner.clone(),
        }
    }
}

impl Drop for DrainGuard {
    fn drop(&mut self) {
        if self.inner.guards.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.inner.drained.notify_waiters();
        }
    }
}

#[derive(Debug)]
struct Shared {
    phase: watch::Sender<Phase>,
    guards: AtomicUsize,
    drained: Notify,
    requested: Notify,
    requested_flag: AtomicBool,
    /// `health.lameduck` and `health.drain_timeout`, as a reload may change them.
    timings: Mutex<(Duration, Duration)>,
}

/// The shutdown sequence and the signal handlers. Cheap to clone (shared state).
#[derive(Debug, Clone)]
pub struct Lifecycle {
    readiness: Readiness,
    shared: Arc<Shared>,
}

impl Lifecycle {
    /// `health.lameduck` and `health.drain_timeout` from the config.
    pub fn new(readiness: Readiness, health: &HealthConfig) -> Lifecycle {
        Self::with_timings(readiness, health.lameduck, health.drain_timeout)
    }

    pub fn with_timings(
        readiness: Readiness,
        lameduck: Duration,
        drain_timeout: Duration,
    ) -> Lifecycle {
        let (phase, _) = watch::channel(Phase::Running);
        Lifecycle {
            readiness,
            shared: Arc::new(Shared {
                timings: Mutex::new((lameduck, drain_timeout)),
                phase,
                guards: AtomicUsize::new(0),
                drained: Notify::new(),
                requested: Notify::new(),
                requested_flag: AtomicBool::new(false),
            }),
        }
    }

    pub fn readiness(&self) -> &Readiness {
        &self.readiness
    }

    /// Take `health.lameduck` and `health.drain_timeout` from a reloaded config (a shutdown
    /// already under way keeps the ones it started with).
    pub fn set_timings(&self, health: &HealthConfig) {
        *self
            .shared
            .timings
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = (health.lameduck, health.drain_timeout);
    }

    fn timings(&self) -> (Duration, Duration) {
        *self
            .shared
            .timings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// For a server: when to stop accepting, when to close.
    pub fn signal(&self) -> ShutdownSignal {
        ShutdownSignal {
            rx: self.shared.phase.subscribe(),
        }
    }

    pub fn phase(&self) -> Phase {
        *self.shared.phase.borrow()
    }

    /// Work the drain waits for: hold it until the work is done.
    pub fn drain_guard(&self) -> DrainGuard {
        self.shared.guards.fetch_add(1, Ordering::AcqRel);
        DrainGuard {
            inner: self.shared.clone(),
        }
    }

    /// Start the shutdown sequence as if SIGTERM had arrived (a fatal error, tests). A second
    /// call while in lameduck cuts the lameduck short.
    pub fn request_shutdown(&self) {
        self.shared.requested_flag.store(true, Ordering::Release);
        self.shared.requested.notify_one();
    }

    /// Install the SIGTERM and SIGINT handlers now (so no signal is missed between this call
    /// and the first poll), and return the future that runs the process's lifetime: the first
    /// SIGTERM/SIGINT or [`request_shutdown`](Self::request_shutdown) runs the shutdown
    /// sequence, and the future completes when it is done. Must be called inside a tokio
    /// runtime. (SIGHUP is the config reload's: `crate::reload::Reloader::run`.)
    pub fn run(&self) -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate())?;
        let int = signal(SignalKind::interrupt())?;
        let me = self.clone();
        Ok(async move { me.lifetime(Signals { term, int }).await })
    }

    async fn lifetime(&self, mut sig: Signals) {
        tokio::select! {
            _ = sig.term.recv() => tracing::info!(signal = "SIGTERM", "shutdown requested"),
            _ = sig.int.recv() => tracing::info!(signal = "SIGINT", "shutdown requested"),
            _ = self.requested() => tracing::info!("shutdown requested"),
        }
        let again = async {
            tokio::select! {
                _ = sig.term.recv() => {}
                _ = sig.int.recv() => {}
                _ = self.requested() => {}
            }
        };
        self.shutdown_sequence(again).await;
    }

    /// Run the shutdown sequence now, without a signal (a fatal error, tests); completes at
    /// [`Phase::Stopped`]. A [`request_shutdown`](Self::request_shutdown) during the lameduck
    /// period cuts it short.
    pub async fn shutdown_now(&self) {
        self.shared.requested_flag.store(false, Ordering::Release);
        self.shutdown_sequence(self.requested()).await
    }

    async fn requested(&self) {
        loop {
            let n = self.shared.requested.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            if self.shared.requested_flag.swap(false, Ordering::AcqRel) {
                return;
            }
            n.await;
        }
    }

    /// The sequence itself: readiness off, lameduck (cut short when `cut_short` resolves),
    /// drain (bounded), stop.
    async fn shutdown_sequence(&self, cut_short: impl Future<Output = ()>) {
        let (lameduck, drain_timeout) = self.timings();
        self.readiness.start_shutdown();
        self.shared.phase.send_replace(Phase::LameDuck);
        tracing::info!(
            ?lameduck,
            "readiness off; serving through the lameduck period"
        );
        tokio::select! {
            _ = tokio::time::sleep(lameduck) => {}
            _ = cut_short => tracing::warn!("second signal: cutting the lameduck period short"),
        }
        self.shared.phase.send_replace(Phase::Draining);
        tracing::info!("draining: no new queries accepted");
        let drained = async {
            loop {
                let n = self.shared.drained.notified();
                tokio::pin!(n);
                n.as_mut().enable();
                if self.shared.guards.load(Ordering::Acquire) == 0 {
                    return;
                }
                n.await;
            }
        };
        if tokio::time::timeout(drain_timeout, drained).await.is_err() {
            tracing::warn!(
                left = self.shared.guards.load(Ordering::Acquire),
                timeout = ?drain_timeout,
                "drain timeout: stopping with work in flight"
            );
        }
        self.shared.phase.send_replace(Phase::Stopped);
        tracing::info!("stopped");
    }
}

struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readiness_latches_and_fails_on_shutdown() {
        let r = Readiness::new(["kubernetes", "hosts"]);
        assert_eq!(r.status(), Err("kubernetes,hosts".into()));
        r.set_ready("hosts");
        assert_eq!(r.status(), Err("kubernetes".into()));
        assert!(!r.wait_ready(Duration::from_millis(20)).await);
        let r2 = r.clone();
        let w = tokio::spawn(async move { r2.wait_ready(Duration::from_secs(5)).await });
        tokio::task::yield_now().await;
        (r.setter("kubernetes"))();
        assert!(w.await.unwrap());
        assert_eq!(r.status(), Ok(()));
        assert!(r.is_ready());
        r.set_ready("kubernetes");
        assert_eq!(r.status(), Ok(()));
        r.start_shutdown();
        assert_eq!(r.status(), Err("shutting down".into()));
        assert!(!r.is_ready());
        assert!(Readiness::new(Vec::<String>::new()).is_ready());
    }

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test]
    async fn sequence_lameduck_then_drain_then_stop() {
        let r = Readiness::new(Vec::<String>::new());
        let lc = Lifecycle::with_timings(r.clone(), 300 * MS, Duration::from_secs(10));
        let mut sig = lc.signal();
        let guard = lc.drain_guard();
        let g2 = guard.clone();
        let t0 = tokio::time::Instant::now();
        let done = {
            let lc = lc.clone();
            tokio::spawn(async move { lc.shutdown_sequence(std::future::pending()).await })
        };
        sig.lameduck().await;
        assert!(!r.is_ready());
        assert_eq!(r.status(), Err("shutting down".into()));
        assert_eq!(lc.phase(), Phase::LameDuck);
        sig.draining().await;
        assert!(t0.elapsed() >= 300 * MS, "{:?}", t0.elapsed());
        assert!(sig.is_draining());
        tokio::time::sleep(100 * MS).await;
        assert_eq!(lc.phase(), Phase::Draining, "waits for the guards");
        drop(guard);
        tokio::time::sleep(20 * MS).await;
        assert_eq!(lc.phase(), Phase::Draining, "one guard left");
        drop(g2);
        let t1 = tokio::time::Instant::now();
        sig.stopped().await;
        done.await.unwrap();
        assert!(t1.elapsed() < 200 * MS, "{:?}", t1.elapsed());
    }

    #[tokio::test]
    async fn drain_is_bounded() {
        let lc = Lifecycle::with_timings(Readiness::new(["x"]), 100 * MS, 300 * MS);
        let _stuck = lc.drain_guard();
        let t0 = tokio::time::Instant::now();
        lc.shutdown_sequence(std::future::pending()).await;
        assert_eq!(lc.phase(), Phase::Stopped);
        let e = t0.elapsed();
        assert!(e >= 400 * MS && e < 2000 * MS, "{e:?}");
    }

    #[tokio::test]
    async fn second_request_cuts_lameduck_short() {
        let lc = Lifecycle::with_timings(
            Readiness::new(["x"]),
            Duration::from_secs(30),
            Duration::from_secs(1),
        );
        let lc2 = lc.clone();
        let t0 = tokio::time::Instant::now();
        let run = tokio::spawn(async move {
            let again = async { lc2.requested().await };
            lc2.shutdown_sequence(again).await
        });
        tokio::time::sleep(100 * MS).await;
        assert_eq!(lc.phase(), Phase::LameDuck);
        lc.request_shutdown();
        run.await.unwrap();
        assert!(t0.elapsed() < Duration::from_secs(5));
        assert_eq!(lc.phase(), Phase::Stopped);
    }

    #[tokio::test]
    async fn as_bool_follows_the_phase() {
        let lc = Lifecycle::with_timings(
            Readiness::new(["x"]),
            Duration::ZERO,
            Duration::from_secs(1),
        );
        let mut b = lc.signal().as_bool(Phase::Draining);
        assert!(!*b.borrow());
        lc.shutdown_sequence(std::future::pending()).await;
        b.wait_for(|v| *v).await.unwrap();
        assert!(ShutdownSignal::never().phase() == Phase::Running);
    }
}
