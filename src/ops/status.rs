//! What this instance is doing right now, written by the run loop and read
//! by the HTTP server and the gauge refresher: which tasks it owns, which
//! are still restoring, whether the loop is alive and whether the Kafka
//! clients reach a broker. Readiness is derived here once, so
//! `/health/ready` and the `ready` metric agree.

use crate::store::TaskId;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The loop counts as consuming while it polled within this long.
const POLL_STALE: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
struct Inner {
    partitions: u32,
    assigned: bool,
    owned: BTreeSet<TaskId>,
    restoring: BTreeSet<TaskId>,
    last_poll: Option<Instant>,
    stopped: bool,
}

/// Whether this instance's Kafka clients reach a broker, as their
/// statistics callbacks last said. Written outside the run loop: the
/// producer's statistics come from its own polling thread, so they keep
/// arriving while the loop is blocked in a transactional call during an
/// outage — exactly when readiness must turn false.
#[derive(Debug, Clone)]
pub struct BrokerLink(Arc<AtomicBool>);

impl Default for BrokerLink {
    fn default() -> Self {
        BrokerLink(Arc::new(AtomicBool::new(true)))
    }
}

impl BrokerLink {
    /// Records whether any broker connection is up.
    pub fn set(&self, up: bool) {
        self.0.store(up, Ordering::Relaxed);
    }

    /// Whether a broker connection was up at the last report.
    pub fn up(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Shared status of the run loop.
#[derive(Debug, Default)]
pub struct Status {
    inner: Mutex<Inner>,
    link: BrokerLink,
}

/// A consistent copy of the status, for reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusView {
    /// Restored and consuming.
    pub ready: bool,
    /// Tasks owned.
    pub owned: Vec<TaskId>,
    /// Owned tasks still restoring.
    pub restoring: Vec<TaskId>,
    /// The Kafka clients have a connection up to at least one broker.
    pub brokers_reachable: bool,
}

impl Status {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("status lock")
    }

    /// Records the input partition count (tasks), known at start.
    pub fn set_partitions(&self, n: u32) {
        self.lock().partitions = n;
    }

    /// The input partition count (0 before the pipeline started).
    pub fn partitions(&self) -> u32 {
        self.lock().partitions
    }

    /// Records the tasks owned and those still restoring (after every
    /// rebalance and restore).
    pub fn set_tasks(&self, owned: &BTreeSet<TaskId>, restoring: &BTreeSet<TaskId>) {
        let mut s = self.lock();
        s.assigned = true;
        s.owned = owned.clone();
        s.restoring = restoring.clone();
    }

    /// The loop is alive and polling.
    pub fn polled(&self) {
        self.lock().last_poll = Some(Instant::now());
    }

    /// The handle the Kafka clients report broker reachability through.
    pub fn broker_link(&self) -> BrokerLink {
        self.link.clone()
    }

    /// The loop has stopped for good.
    pub fn stopped(&self) {
        self.lock().stopped = true;
    }

    /// Whether `task` is owned here and restored, so its state can be read.
    pub fn serves(&self, task: TaskId) -> bool {
        let s = self.lock();
        s.owned.contains(&task) && !s.restoring.contains(&task)
    }

    /// Whether `task` is owned here but still restoring.
    pub fn restoring(&self, task: TaskId) -> bool {
        self.lock().restoring.contains(&task)
    }

    /// Ready: the group assigned partitions (possibly none), every owned task
    /// is restored, the loop polled recently and a broker is reachable (a
    /// loop cut off from every broker rides the outage out, but makes no
    /// progress meanwhile).
    pub fn view(&self) -> StatusView {
        let s = self.lock();
        let reachable = self.link.up();
        let ready = s.assigned
            && s.restoring.is_empty()
            && !s.stopped
            && reachable
            && s.last_poll.is_some_and(|t| t.elapsed() < POLL_STALE);
        StatusView {
            ready,
            owned: s.owned.iter().copied().collect(),
            restoring: s.restoring.iter().copied().collect(),
            brokers_reachable: reachable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_after_assignment_and_restore_while_polling() {
        let s = Status::default();
        s.polled();
        assert!(!s.view().ready, "no assignment yet");
        let [t0, t1, t2] = [0, 1, 2].map(TaskId::new);
        let owned: BTreeSet<TaskId> = [t0, t2].into();
        s.set_tasks(&owned, &[t2].into());
        assert!(!s.view().ready, "task 2 is restoring");
        assert!(s.serves(t0) && !s.serves(t2) && s.restoring(t2) && !s.serves(t1));
        s.set_tasks(&owned, &BTreeSet::new());
        assert!(s.view().ready);
        let link = s.broker_link();
        link.set(false);
        assert!(!s.view().ready, "no broker reachable");
        assert!(!s.view().brokers_reachable);
        link.set(true);
        assert!(s.view().ready && s.view().brokers_reachable);
        s.stopped();
        assert!(!s.view().ready);
    }
}
