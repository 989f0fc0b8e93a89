//! Time as the resolver and its cache see it, passed in rather than read from the wall.
//!
//! [`Clock::system`] is `Instant::now()`, `SystemTime::now()` and tokio's timer. [`ManualClock`]
//! is a clock a test moves by hand ([`ManualClock::advance`]): TTL countdowns, expiry,
//! serve-stale windows, prefetch windows, the critical names' last-good TTLs and the
//! health-check and refresh schedules then follow the test, and take no real seconds. A handle rather than tokio's paused time, because the UDP fast path reads
//! the cache on the workers' own threads, outside any runtime, where tokio's clock is not the
//! test's.
//!
//! What a clock decides: *when something is due* (an entry expires, a health check or refresh
//! runs). What it does not: how long to wait for a peer on a real socket (a try's timeout, the
//! slow-try loop suspicion), which stays on tokio's timer, since a test that moves the clock
//! does not move the network.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

/// A source of `Instant`s and of sleeps until one. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// None: the system clock.
    manual: Option<Arc<Manual>>,
}

#[derive(Debug)]
struct Manual {
    start: Instant,
    /// The wall clock at `start`.
    start_wall: SystemTime,
    /// How far the clock has been moved since `start`.
    offset: watch::Sender<Duration>,
}

impl Clock {
    /// The system clock: `Instant::now()`, tokio's timer.
    pub fn system() -> Clock {
        Clock { manual: None }
    }

    /// Now.
    #[inline]
    pub fn now(&self) -> Instant {
        match &self.manual {
            None => Instant::now(),
            Some(m) => m.start + *m.offset.borrow(),
        }
    }

    /// The wall clock now: for times that outlive the process (a state file's timestamps).
    pub fn wall(&self) -> SystemTime {
        match &self.manual {
            None => SystemTime::now(),
            Some(m) => m.start_wall + *m.offset.borrow(),
        }
    }

    /// Resolves once [`now`](Self::now) is at or past `deadline`.
    pub fn sleep_until(&self, deadline: Instant) -> impl Future<Output = ()> + Send + 'static {
        let manual = self.manual.clone();
        async move {
            match manual {
                None => tokio::time::sleep_until(deadline.into()).await,
                Some(m) => {
                    let mut rx = m.offset.subscribe();
                    // The sender lives as long as `m`, which this future holds.
                    let _ = rx.wait_for(|off| m.start + *off >= deadline).await;
                }
            }
        }
    }

    /// Resolves once `d` has passed on this clock.
    pub fn sleep(&self, d: Duration) -> impl Future<Output = ()> + Send + 'static {
        self.sleep_until(self.now() + d)
    }
}

/// A clock that moves only when told to (tests). Its [`Clock`] handles all see the same time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    inner: Arc<Manual>,
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock::new()
    }
}

impl ManualClock {
    /// A clock standing at the current instant.
    pub fn new() -> ManualClock {
        let (offset, _) = watch::channel(Duration::ZERO);
        ManualClock {
            inner: Arc::new(Manual {
                start: Instant::now(),
                start_wall: SystemTime::now(),
                offset,
            }),
        }
    }

    /// A handle to pass to the code under test.
    pub fn clock(&self) -> Clock {
        Clock {
            manual: Some(self.inner.clone()),
        }
    }

    /// Move the clock forward by `d`, waking the sleeps that are then due.
    pub fn advance(&self, d: Duration) {
        self.inner.offset.send_modify(|o| *o += d);
    }

    /// Now, on this clock.
    pub fn now(&self) -> Instant {
        self.clock().now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn manual_sleeps_wake_when_advanced_past_their_deadline() {
        let m = ManualClock::new();
        let c = m.clock();
        let t0 = c.now();
        let mut s = Box::pin(c.sleep(Duration::from_secs(30)));
        assert!(futures::FutureExt::now_or_never(s.as_mut()).is_none());
        m.advance(Duration::from_secs(29));
        assert!(futures::FutureExt::now_or_never(s.as_mut()).is_none());
        assert_eq!(c.now() - t0, Duration::from_secs(29));
        let w0 = m.clock().wall();
        m.advance(Duration::from_millis(500));
        assert_eq!(
            c.wall().duration_since(w0).unwrap(),
            Duration::from_millis(500)
        );
        m.advance(Duration::from_millis(500));
        tokio::time::timeout(Duration::from_secs(5), s)
            .await
            .expect("woken at its deadline");
        // A deadline already past resolves at once.
        tokio::time::timeout(Duration::from_secs(5), c.sleep_until(t0))
            .await
            .expect("past deadline");
    }

    #[test]
    fn system_clock_is_the_wall() {
        let before = Instant::now();
        let now = Clock::system().now();
        assert!(now >= before && now <= Instant::now());
    }
}
