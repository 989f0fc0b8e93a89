//! Which list goes first when several kinds list at once.
//!
//! When every watch ends together (an API server restart: 410 Gone for every kind), every kind
//! relists at the same time, and their lists are decoded on the one source thread. The Pod list
//! is by far the largest (150,000 objects against 8,200 services at the 5,000-node profile) and
//! the least urgent: the answers for services come from Services and EndpointSlices, pods only
//! verify and name. Shared chunk by chunk, a Service list of a hundred objects finished only
//! with a Pod list of three hundred beside it, and a change made right after the expiry waited
//! for both (p99 9-12 ms at a few hundred objects, see `benches/README.md`).
//!
//! So the other kinds' lists are *urgent*: while one is under way, the Pod list reads no more of
//! its body ([`Precedence::give_way`]; the API server's response waits in the connection, which
//! TCP holds back). It gives way for at most [`GIVE_WAY`] per list in all, so that an urgent
//! list that hangs (a slow API server) delays the pods by that much and no more.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// How long a list that gives way may wait in all, over all its pages.
pub(crate) const GIVE_WAY: Duration = Duration::from_secs(2);

/// Shared by the kinds' loops of one source. See the module doc.
#[derive(Debug, Default)]
pub(crate) struct Precedence {
    /// Urgent lists under way.
    urgent: AtomicUsize,
    /// Woken when the last urgent list ends.
    quiet: Notify,
}

/// An urgent list under way, until dropped.
#[derive(Debug)]
pub(crate) struct Urgent(Arc<Precedence>);

impl Drop for Urgent {
    fn drop(&mut self) {
        if self.0.urgent.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.quiet.notify_waiters();
        }
    }
}

impl Precedence {
    /// Counts an urgent list as under way until the guard is dropped.
    pub(crate) fn urgent(self: &Arc<Self>) -> Urgent {
        self.urgent.fetch_add(1, Ordering::AcqRel);
        Urgent(self.clone())
    }

    /// Waits while an urgent list is under way, taking the time waited from `budget`; once the
    /// budget is spent, returns at once.
    pub(crate) async fn give_way(&self, budget: &mut Duration) {
        let began = tokio::time::Instant::now();
        while !budget.is_zero() {
            let quiet = self.quiet.notified();
            let mut quiet = std::pin::pin!(quiet);
            // Registered before the count is read: an urgent list ending in between still wakes us.
            quiet.as_mut().enable();
            if self.urgent.load(Ordering::Acquire) == 0 {
                break;
            }
            let left = budget.saturating_sub(began.elapsed());
            if left.is_zero() || tokio::time::timeout(left, quiet).await.is_err() {
                *budget = Duration::ZERO;
                return;
            }
        }
        *budget = budget.saturating_sub(began.elapsed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lets the other tasks of the test's runtime run for a while.
    async fn others_run() {
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn waits_while_an_urgent_list_is_under_way() {
        let p = Arc::new(Precedence::default());
        let mut budget = Duration::from_secs(600);
        // Nothing urgent: no wait.
        p.give_way(&mut budget).await;

        let (a, b) = (p.urgent(), p.urgent());
        let waiter = {
            let p = p.clone();
            tokio::spawn(async move {
                let mut budget = Duration::from_secs(600);
                p.give_way(&mut budget).await;
                budget
            })
        };
        others_run().await;
        assert!(!waiter.is_finished(), "two urgent lists under way");
        drop(a);
        others_run().await;
        assert!(!waiter.is_finished(), "one urgent list still under way");
        drop(b);
        let left = waiter.await.unwrap();
        assert!(left > Duration::ZERO && left < Duration::from_secs(600));
    }

    #[tokio::test]
    async fn an_urgent_list_that_hangs_holds_back_for_the_budget_only() {
        let p = Arc::new(Precedence::default());
        let _stuck = p.urgent();
        let mut budget = Duration::from_millis(20);
        p.give_way(&mut budget).await;
        assert_eq!(budget, Duration::ZERO, "spent");
        // Spent: the next pages of that list do not wait at all (a wait would never end here).
        p.give_way(&mut budget).await;
    }
}
