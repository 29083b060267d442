//! The month-close gate of percentile tiers in `run`.
//!
//! A task closes month M only with every task's summary of M (SPEC §3), so
//! that every task — on any instance — installs the same cut points and
//! `run` equals `replay --partitions N`. The gate decides, record by
//! record, whether a task's next record may be taken into the batch:
//!
//! * a record before the task's coming month close is taken;
//! * a record that passes it is taken once that month's cut points are
//!   known (every summary is in) and it passes no second month close —
//!   the second needs the task's own summary after the first, which only
//!   the batch computes;
//! * otherwise the task is *held* there, and the batch gets a step for
//!   it instead: publish the task's summary of the month (once, in the
//!   batch's transaction), or — the cut points known, the record passing
//!   more than one month close — run the month close without the record.
//!
//! What a lagging task costs the others: every task stops at each month
//! close until the slowest has reached it (its records stay in the
//! alignment queues; the partitions are paused when the queues fill). The
//! wait is bounded by `tiers.percentile.summary_wait_seconds`: past it the
//! month is closed with each missing task's latest earlier summary, which
//! is logged and counted — outputs may then differ from a replay's.
//!
//! Nothing here talks to Kafka; the run loop feeds summaries in and
//! publishes what the steps say.

use crate::domain::ranking::{Shares, Summaries};
use crate::domain::time::{month_of, month_start, Millis};
use crate::kafka::summaries::TaskSummary;
use crate::store::session::TaskState;
use crate::store::TaskId;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// What the batch does for a held task before its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Publish the task's summary of the month close at this instant.
    Publish(Millis),
    /// Run the month close at this instant (its cut points are known).
    Close(Millis),
}

/// The gate's memory between polls.
pub struct MonthGate {
    /// Every task's summaries, as read from the topic.
    pub summaries: Summaries,
    /// Per task with records taken into the open batch, its coming month
    /// close as those records leave it.
    ahead: HashMap<TaskId, Millis>,
    /// Tasks held at a month close, and since when.
    held: BTreeMap<TaskId, (Millis, Instant)>,
    wait: Duration,
    /// How long each task released since the last look was held.
    waits: Vec<Duration>,
}

fn next_month_start(t: Millis) -> Millis {
    month_start(month_of(t) + 1)
}

impl MonthGate {
    /// A gate for `tasks` tasks cut at `shares`, waiting at most `wait` for
    /// a month's summaries.
    pub fn new(tasks: u32, shares: Shares, wait: Duration) -> Self {
        MonthGate {
            summaries: Summaries::new(tasks, shares),
            ahead: HashMap::new(),
            held: BTreeMap::new(),
            wait,
            waits: Vec::new(),
        }
    }

    /// Takes in summaries read from the topic.
    pub fn hand_in(&mut self, got: Vec<TaskSummary>) {
        for s in got {
            self.summaries.hand_in(s.task, s.month, s.summary);
        }
    }

    /// Whether `task`'s next record, of event time `ts`, may be taken now;
    /// if not, the task is held.
    pub fn admit(&mut self, id: TaskId, task: &TaskState, ts: Millis, now: Instant) -> bool {
        let coming = self.ahead.get(&id).copied().or(task.ranking.pending_month);
        let after = match coming {
            None => next_month_start(ts),
            Some(month) if ts < month => month,
            Some(month) => {
                let next = next_month_start(month);
                if !(ts < next && self.cut_points_known(month, now, id)) {
                    self.held.entry(id).or_insert((month, now));
                    return false;
                }
                self.release(id, now);
                next
            }
        };
        // Every task with a record in the open batch is here: its state
        // is only current again once the batch has run, so its summary
        // must not be published before then.
        self.ahead.insert(id, after);
        true
    }

    /// Whether the cut points of `month` are known; past the wait bound
    /// they are made known from what is in.
    fn cut_points_known(&mut self, month: Millis, now: Instant, id: TaskId) -> bool {
        if self.summaries.cut_points(month).is_some() {
            return true;
        }
        let Some(&(held_at, since)) = self.held.get(&id) else {
            return false;
        };
        if held_at != month || now.duration_since(since) < self.wait {
            return false;
        }
        let missing = self.summaries.complete_without_missing(month);
        tracing::warn!(
            task = %id,
            month = month.ms(),
            ?missing,
            waited_seconds = self.wait.as_secs(),
            "month close without every task's summary: the wait bound passed (outputs of this month may differ from a replay's)"
        );
        true
    }

    /// The steps of the held tasks whose records are not in the open batch
    /// (a held task with records taken is looked at again after it).
    pub fn steps(
        &mut self,
        tasks: &HashMap<TaskId, TaskState>,
        now: Instant,
    ) -> Vec<(TaskId, Step)> {
        let held: Vec<(TaskId, Millis)> = self
            .held
            .iter()
            .filter(|(id, _)| !self.ahead.contains_key(id))
            .map(|(id, (m, _))| (*id, *m))
            .collect();
        let mut steps = Vec::new();
        for (id, month) in held {
            let Some(task) = tasks.get(&id) else {
                self.held.remove(&id);
                continue;
            };
            if task.ranking.pending_month != Some(month) {
                // The state moved on (a restore); decided afresh.
                self.held.remove(&id);
            } else if self.cut_points_known(month, now, id) {
                self.release(id, now);
                steps.push((id, Step::Close(month)));
            } else if task.ranking.published != Some(month) {
                steps.push((id, Step::Publish(month)));
            }
        }
        steps
    }

    fn release(&mut self, id: TaskId, now: Instant) {
        if let Some((_, since)) = self.held.remove(&id) {
            self.waits.push(now.duration_since(since));
        }
    }

    /// How long each task released since the last call waited at its
    /// month close (what the slowest task cost it).
    pub fn take_waits(&mut self) -> Vec<Duration> {
        std::mem::take(&mut self.waits)
    }

    /// The open batch was processed or thrown away: the tasks' state says
    /// where they are again.
    pub fn batch_done(&mut self) {
        self.ahead.clear();
    }

    /// Whether a task waits at a month close (its step may be due).
    pub fn holds_any(&self) -> bool {
        !self.held.is_empty()
    }

    /// Whether `id` waits at a month close.
    pub fn is_held(&self, id: TaskId) -> bool {
        self.held.contains_key(&id)
    }

    /// Forgets the tasks this instance no longer owns.
    pub fn forget_all_but(&mut self, owned: &std::collections::BTreeSet<TaskId>) {
        self.ahead.retain(|id, _| owned.contains(id));
        self.held.retain(|id, _| owned.contains(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ranking::ValueHistogram;
    use crate::store::memory::MemoryStore;
    use rust_decimal::Decimal;

    const FEB: Millis = Millis::from_ms(1_738_368_000_000); // 2025-02-01
    const MAR: Millis = Millis::from_ms(1_740_787_200_000); // 2025-03-01

    fn gate() -> MonthGate {
        let shares = Shares {
            platinum: Decimal::new(1, 2),
            gold: Decimal::new(20, 2),
            iron: Decimal::new(80, 2),
        };
        MonthGate::new(2, shares, Duration::from_secs(300))
    }

    fn task(n: u32) -> (TaskId, HashMap<TaskId, TaskState>) {
        let id = TaskId::new(n);
        let mut t = TaskState::open(id, &MemoryStore::new(), 0).unwrap();
        t.ranking.pending_month = Some(FEB);
        (id, HashMap::from([(id, t)]))
    }

    fn summary(task: u32, month: Millis) -> TaskSummary {
        let mut summary = ValueHistogram::default();
        summary.add(100);
        TaskSummary {
            task,
            month,
            summary,
        }
    }

    #[test]
    fn a_task_with_records_in_the_batch_publishes_only_after_it() {
        let (id, tasks) = task(0);
        let mut g = gate();
        let now = Instant::now();
        assert!(
            g.admit(id, &tasks[&id], FEB - 1, now),
            "before the month close"
        );
        assert!(!g.admit(id, &tasks[&id], FEB + 1, now), "held at it");
        assert!(
            g.steps(&tasks, now).is_empty(),
            "its batch has records of it"
        );
        g.batch_done();
        assert_eq!(g.steps(&tasks, now), vec![(id, Step::Publish(FEB))]);
    }

    #[test]
    fn a_held_task_goes_on_once_every_summary_is_in() {
        let (id, tasks) = task(0);
        let mut g = gate();
        let now = Instant::now();
        assert!(!g.admit(id, &tasks[&id], FEB + 1, now));
        g.hand_in(vec![summary(0, FEB)]);
        assert!(!g.admit(id, &tasks[&id], FEB + 1, now), "task 1 is missing");
        g.hand_in(vec![summary(1, FEB)]);
        assert!(g.admit(id, &tasks[&id], FEB + 1, now));
        assert!(
            !g.admit(id, &tasks[&id], MAR, now),
            "the next month close waits again"
        );
        g.batch_done();
        // A record passing two month closes: the first is stepped into.
        let (id2, tasks2) = task(0);
        let mut g2 = gate();
        g2.hand_in(vec![summary(0, FEB), summary(1, FEB)]);
        assert!(!g2.admit(id2, &tasks2[&id2], MAR + 1, now));
        assert_eq!(g2.steps(&tasks2, now), vec![(id2, Step::Close(FEB))]);
        assert_eq!(g2.take_waits().len(), 1);
    }

    #[test]
    fn past_the_wait_bound_the_month_closes_with_what_is_in() {
        let (id, tasks) = task(0);
        let mut g = gate();
        let start = Instant::now();
        g.hand_in(vec![summary(0, FEB)]);
        assert!(!g.admit(id, &tasks[&id], FEB + 1, start));
        let later = start + Duration::from_secs(301);
        assert!(g.admit(id, &tasks[&id], FEB + 1, later));
        assert_eq!(g.summaries.cut_points(FEB).unwrap().customers, 1);
    }
}
