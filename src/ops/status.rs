//! What this instance is doing right now, written by the run loop and read
//! by the HTTP server and the gauge refresher: which tasks it owns, which
//! are still restoring, and whether the loop is alive. Readiness is
//! derived here once, so `/health/ready` and the `ready` metric agree.

use crate::store::TaskId;
use std::collections::BTreeSet;
use std::sync::Mutex;
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

/// Shared status of the run loop.
#[derive(Debug, Default)]
pub struct Status {
    inner: Mutex<Inner>,
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
    /// is restored, and the loop polled recently.
    pub fn view(&self) -> StatusView {
        let s = self.lock();
        let ready = s.assigned
            && s.restoring.is_empty()
            && !s.stopped
            && s.last_poll.is_some_and(|t| t.elapsed() < POLL_STALE);
        StatusView {
            ready,
            owned: s.owned.iter().copied().collect(),
            restoring: s.restoring.iter().copied().collect(),
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
        s.stopped();
        assert!(!s.view().ready);
    }
}
