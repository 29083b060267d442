//! Percentile tiers (SPEC §3, policy `percentile`): the pyramid's cut
//! points are the value_12m of given ranks among all customers of the
//! consumer group, recomputed at each month close.
//!
//! Every task keeps a [`ValueHistogram`] of what each of its customers'
//! value_12m will be at the task's next month close. It is exact in counts
//! and O(1) to change: an event removes the customer's old projection and
//! adds the new one, a month close starts the next month's histogram as it
//! visits every customer. At the month close the tasks' histograms (the
//! *summaries*) are merged — addition, so the order of merging cannot
//! matter — and every task derives the same cut points from the same
//! merge.
//!
//! **Buckets and the error bound.** Values are bucketed log-linearly with
//! [`SUB_BUCKET_BITS`] bits of mantissa (the scheme of HdrHistogram): values
//! below 256 minor units have a bucket each, larger ones share a bucket with
//! neighbours less than 1/128 (0.79%) of their value away. A cut point is the
//! lower edge of the bucket that holds the customer of its rank, so for the
//! exact value `v` of that customer (a sort of every customer) it satisfies
//! `v x (1 - 1/128) < cut <= v`; a customer whose value lies in the same
//! bucket as the cut ranks with the tier above (ties go up). A quantile
//! sketch from a crate was the other candidate; it cannot remove a value,
//! so it would have to be rebuilt from every profile at every month close
//! and would not be exact in counts.

use super::event::Minor;
use super::tier::Pyramid;
use super::time::Millis;
use rust_decimal::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Mantissa bits per bucket: 2^7 = 128 buckets per power of two.
pub const SUB_BUCKET_BITS: u32 = 7;
/// Values below this have a bucket of their own.
const EXACT_BELOW: Minor = 1 << (SUB_BUCKET_BITS + 1);
/// A cut point is below the exact value of its rank by less than this
/// fraction of it.
pub const RELATIVE_ERROR: f64 = 1.0 / (1u32 << SUB_BUCKET_BITS) as f64;

/// The bucket of a value >= 0.
fn bucket(v: Minor) -> u16 {
    debug_assert!(v >= 0);
    if v < EXACT_BELOW {
        return v as u16;
    }
    let shift = (63 - v.leading_zeros()) - SUB_BUCKET_BITS;
    let mantissa = (v >> shift) as u32; // in [128, 256)
    ((shift << SUB_BUCKET_BITS) + mantissa) as u16
}

/// The smallest value of a bucket.
fn lower_edge(b: u16) -> Minor {
    let b = Minor::from(b);
    if b < EXACT_BELOW {
        return b;
    }
    let shift = (b >> SUB_BUCKET_BITS) - 1;
    let mantissa = b - (shift << SUB_BUCKET_BITS);
    mantissa << shift
}

/// Customers by value_12m: exact counts per log-linear bucket, and the
/// count of negative values (lead whatever their rank, and below every
/// other value in it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValueHistogram {
    /// Customers with a negative value.
    pub negative: u64,
    /// Customers per bucket of a value >= 0 (only non-empty buckets).
    pub buckets: BTreeMap<u16, u64>,
}

impl ValueHistogram {
    /// Counts one customer of value `v`.
    pub fn add(&mut self, v: Minor) {
        if v < 0 {
            self.negative += 1;
        } else {
            *self.buckets.entry(bucket(v)).or_default() += 1;
        }
    }

    /// Uncounts one customer of value `v`, counted before by `add`.
    pub fn remove(&mut self, v: Minor) {
        if v < 0 {
            self.negative = self.negative.saturating_sub(1);
            return;
        }
        let b = bucket(v);
        if let Some(n) = self.buckets.get_mut(&b) {
            *n -= 1;
            if *n == 0 {
                self.buckets.remove(&b);
            }
        }
    }

    /// Moves one customer from value `old` to `new`.
    pub fn replace(&mut self, old: Minor, new: Minor) {
        if old != new {
            self.remove(old);
            self.add(new);
        }
    }

    /// Adds every count of `other` (merging tasks' summaries).
    pub fn merge(&mut self, other: &ValueHistogram) {
        self.negative += other.negative;
        for (b, n) in &other.buckets {
            *self.buckets.entry(*b).or_default() += n;
        }
    }

    /// How many customers are counted in a higher bucket than `v` (values
    /// within the bucket width of `v` count as ties).
    pub fn above(&self, v: Minor) -> u64 {
        if v < 0 {
            return self.buckets.values().sum::<u64>();
        }
        self.buckets.range(bucket(v) + 1..).map(|(_, n)| n).sum()
    }

    /// Customers counted.
    pub fn customers(&self) -> u64 {
        self.negative + self.buckets.values().sum::<u64>()
    }

    /// The cut for the `k` most valuable customers (k >= 1): the lower edge
    /// of the bucket holding the k-th highest value, never below 0 (a rank
    /// among the negative values puts the cut at 0: value_12m < 0 is lead
    /// whatever the rank).
    fn cut_at_rank(&self, k: u64) -> Minor {
        let mut seen = 0;
        for (b, n) in self.buckets.iter().rev() {
            seen += n;
            if seen >= k {
                return lower_edge(*b);
            }
        }
        0
    }
}

/// The shares of the pyramid, as cumulative fractions of the customer base
/// from the top: platinum is the top `platinum`, gold down to `gold`, iron
/// down to `iron`, the rest lead.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shares {
    /// Share of platinum (0.01).
    pub platinum: Decimal,
    /// Share of platinum and gold together (0.20).
    pub gold: Decimal,
    /// Share of platinum, gold and iron together (0.80).
    pub iron: Decimal,
}

/// The thresholds in force from one month close on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CutPoints {
    /// The month-close instant they were computed at.
    pub month: Millis,
    /// value_12m needed for platinum.
    pub platinum: Minor,
    /// value_12m needed for gold.
    pub gold: Minor,
    /// value_12m needed for iron.
    pub iron: Minor,
    /// Customers counted in the merged summaries.
    pub customers: u64,
}

/// The rank that a cumulative share reaches among `n` customers:
/// ceil(share x n), at least 1.
fn rank_of(share: Decimal, n: u64) -> u64 {
    (share * Decimal::from(n))
        .ceil()
        .to_u64()
        .unwrap_or(n)
        .clamp(1, n.max(1))
}

impl CutPoints {
    /// The cut points of a merged summary at the month close `month`. A
    /// summary that counts nobody gives cut points of nobody, which leave
    /// the ones in force in force.
    pub fn of(summary: &ValueHistogram, shares: &Shares, month: Millis) -> CutPoints {
        let n = summary.customers();
        CutPoints {
            month,
            platinum: summary.cut_at_rank(rank_of(shares.platinum, n)),
            gold: summary.cut_at_rank(rank_of(shares.gold, n)),
            iron: summary.cut_at_rank(rank_of(shares.iron, n)),
            customers: n,
        }
    }
}

/// A month close of percentile tiers: the cut points, and the summary of
/// every customer of the group they were cut from (which ranks a
/// customer, for the customer endpoint).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonthClose {
    /// The cut points.
    pub cut: CutPoints,
    /// Every customer of the group by value_12m at the month close.
    pub population: ValueHistogram,
}

/// Every task's summary of each month close, as a driver collects them
/// (`replay` in memory, `run` from the summaries topic), and the cut
/// points once a month's set is complete.
#[derive(Debug, Clone)]
pub struct Summaries {
    tasks: u32,
    shares: Shares,
    by_month: BTreeMap<Millis, BTreeMap<u32, ValueHistogram>>,
    /// Tasks whose input has ended (replay): their last summary stands for
    /// every later month close, since nothing will change it.
    finished: BTreeMap<u32, ValueHistogram>,
}

impl Summaries {
    /// Summaries of `tasks` tasks, cut at `shares`.
    pub fn new(tasks: u32, shares: Shares) -> Self {
        Summaries {
            tasks,
            shares,
            by_month: BTreeMap::new(),
            finished: BTreeMap::new(),
        }
    }

    /// Records `task`'s summary for the month close at `month`; the first
    /// one a task hands in for a month is the one that counts.
    ///
    /// Once every task has handed in a month, every task is past the
    /// earlier ones (they close months in step), so those are dropped: what
    /// is kept stays bounded by how many months the tasks are apart.
    pub fn hand_in(&mut self, task: u32, month: Millis, summary: ValueHistogram) {
        let handed = self.by_month.entry(month).or_default();
        handed.entry(task).or_insert(summary);
        if handed.len() == self.tasks as usize {
            self.by_month = self.by_month.split_off(&month);
        }
    }

    /// Records that `task` will get no more input, with its last summary.
    pub fn finish(&mut self, task: u32, summary: ValueHistogram) {
        self.finished.insert(task, summary);
    }

    /// The month close at `month` — its cut points and the merged summary
    /// of every customer — once every task's summary of it is in (or its
    /// input has ended).
    pub fn month_close(&self, month: Millis) -> Option<MonthClose> {
        let handed = self.by_month.get(&month);
        let mut merged = ValueHistogram::default();
        for task in 0..self.tasks {
            let summary = handed
                .and_then(|h| h.get(&task))
                .or_else(|| self.finished.get(&task))?;
            merged.merge(summary);
        }
        Some(MonthClose {
            cut: CutPoints::of(&merged, &self.shares, month),
            population: merged,
        })
    }

    /// The cut points of the month close at `month`, once known.
    pub fn cut_points(&self, month: Millis) -> Option<CutPoints> {
        self.month_close(month).map(|c| c.cut)
    }

    /// Makes the month close at `month` complete with what is in: a task
    /// missing from it counts with its latest earlier summary (or not at
    /// all). Returns the tasks that were missing. (`run`, once a task has
    /// waited the configured bound: the month's cut points may then differ
    /// from a replay's.)
    pub fn complete_without_missing(&mut self, month: Millis) -> Vec<u32> {
        let mut missing = Vec::new();
        for task in 0..self.tasks {
            let have = self
                .by_month
                .get(&month)
                .is_some_and(|h| h.contains_key(&task))
                || self.finished.contains_key(&task);
            if have {
                continue;
            }
            missing.push(task);
            let latest = self
                .by_month
                .range(..month)
                .rev()
                .find_map(|(_, h)| h.get(&task).cloned())
                .unwrap_or_default();
            // Not `hand_in`: a month completed this way must not drop the
            // earlier ones, which the missing task still has to pass.
            self.by_month
                .entry(month)
                .or_default()
                .entry(task)
                .or_insert(latest);
        }
        missing
    }
}

/// One task's part in percentile tiers, kept with its state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ranking {
    /// The cut points in force; `None` before the first month close (the
    /// configured absolute thresholds are in force then).
    pub in_force: Option<CutPoints>,
    /// Every customer of the group at the month close of `in_force`.
    pub population: ValueHistogram,
    /// The coming month close as the driver handed it in, merged from
    /// every task's summary.
    pub installed: Option<MonthClose>,
    /// The month close `pending` is for: the first after stream time.
    pub pending_month: Option<Millis>,
    /// Every customer of the task by its value_12m at `pending_month`.
    pub pending: ValueHistogram,
    /// The latest month whose summary this task has handed out (each is
    /// published once).
    pub published: Option<Millis>,
    /// The bounds of `in_force` under the policy's hysteresis and margin,
    /// derived once (not stored).
    #[serde(skip)]
    pub bounds: Option<Pyramid>,
}

impl Ranking {
    /// The month close an event at `ts` must wait for (its summary
    /// exchanged, its cut points installed) before it can be applied.
    pub fn due_before(&self, ts: Millis) -> Option<Millis> {
        self.pending_month
            .filter(|&m| ts >= m && self.installed.as_ref().is_none_or(|c| c.cut.month != m))
    }

    /// Installs the coming month close.
    pub fn install(&mut self, close: MonthClose) {
        self.installed = Some(close);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::time::ms;
    use proptest::prelude::*;

    fn shares() -> Shares {
        Shares {
            platinum: Decimal::new(1, 2),
            gold: Decimal::new(20, 2),
            iron: Decimal::new(80, 2),
        }
    }

    #[test]
    fn buckets_are_contiguous_and_edges_are_their_smallest_values() {
        let mut previous = bucket(0);
        for v in 1..100_000 {
            let b = bucket(v);
            assert!(b == previous || b == previous + 1, "at {v}");
            if b != previous {
                assert_eq!(lower_edge(b), v);
            }
            previous = b;
        }
        assert_eq!(lower_edge(bucket(Minor::MAX)), 255 << 55);
    }

    #[test]
    fn a_bucket_is_narrower_than_the_relative_error() {
        for v in [256, 300, 1_000, 123_456, 99_999_999, 1 << 40, Minor::MAX] {
            let edge = lower_edge(bucket(v));
            assert!(edge <= v && (v - edge) as f64 <= v as f64 * RELATIVE_ERROR);
        }
    }

    /// The exact cut: the value of the customer at the share's rank in a
    /// sort of everyone, never below 0.
    fn exact(values: &[Minor], share: Decimal) -> Minor {
        let mut sorted = values.to_vec();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        sorted[rank_of(share, sorted.len() as u64) as usize - 1].max(0)
    }

    proptest! {
        /// Summaries of any split of the customers into tasks, merged in
        /// any order, give the cut points of an exact sort within the
        /// stated bound.
        #[test]
        fn merged_summaries_match_an_exact_sort(
            values in prop::collection::vec(
                prop_oneof![-50_000i64..0, 0i64..1_000, 0i64..100_000_000], 1..400),
            tasks in 1usize..5,
        ) {
            let mut per_task = vec![ValueHistogram::default(); tasks];
            for (i, v) in values.iter().enumerate() {
                per_task[i % tasks].add(*v);
            }
            let mut merged = ValueHistogram::default();
            for h in per_task.iter().rev() {
                merged.merge(h);
            }
            let cut = CutPoints::of(&merged, &shares(), ms(0));
            prop_assert_eq!(cut.customers, values.len() as u64);
            let s = shares();
            for (got, share) in [(cut.platinum, s.platinum), (cut.gold, s.gold), (cut.iron, s.iron)] {
                let want = exact(&values, share);
                prop_assert!(got <= want, "cut {} above the exact {}", got, want);
                prop_assert!(
                    (want - got) as f64 <= want as f64 * RELATIVE_ERROR,
                    "cut {} too far below the exact {}", got, want
                );
            }
        }

        /// Removing what was added leaves the histogram as it was.
        #[test]
        fn replace_is_exact(old in prop::collection::vec(-1_000i64..1_000_000, 1..50),
                            new in prop::collection::vec(-1_000i64..1_000_000, 1..50)) {
            let mut h = ValueHistogram::default();
            old.iter().for_each(|v| h.add(*v));
            for (o, n) in old.iter().zip(&new) {
                h.replace(*o, *n);
            }
            let mut want = ValueHistogram::default();
            for (i, o) in old.iter().enumerate() {
                want.add(*new.get(i).unwrap_or(o));
            }
            prop_assert_eq!(h, want);
        }
    }

    /// A summary of one customer worth `v`.
    fn one(v: Minor) -> ValueHistogram {
        let mut h = ValueHistogram::default();
        h.add(v);
        h
    }

    #[test]
    fn a_month_is_cut_once_every_task_handed_in_or_finished() {
        let mut s = Summaries::new(3, shares());
        s.hand_in(0, ms(10), one(100));
        s.hand_in(1, ms(10), one(200));
        assert_eq!(s.cut_points(ms(10)), None, "task 2 is missing");
        s.finish(2, one(300));
        let cut = s.cut_points(ms(10)).expect("complete");
        assert_eq!((cut.customers, cut.platinum), (3, 300));
        s.hand_in(0, ms(10), one(1_000));
        assert_eq!(s.cut_points(ms(10)), Some(cut), "the first hand-in counts");
    }

    #[test]
    fn months_every_task_is_past_are_dropped() {
        let mut s = Summaries::new(2, shares());
        s.hand_in(0, ms(10), one(100));
        s.hand_in(1, ms(10), one(200));
        s.hand_in(0, ms(20), one(300));
        assert!(
            s.cut_points(ms(10)).is_some(),
            "task 1 may still need month 10"
        );
        s.hand_in(1, ms(20), one(400));
        assert_eq!(s.by_month.keys().copied().collect::<Vec<_>>(), vec![ms(20)]);
        assert!(s.cut_points(ms(20)).is_some());
    }

    #[test]
    fn a_month_completed_without_a_task_uses_its_latest_summary() {
        let mut s = Summaries::new(2, shares());
        s.hand_in(0, ms(10), one(100));
        s.hand_in(1, ms(10), one(200));
        s.hand_in(0, ms(20), one(300));
        assert_eq!(s.cut_points(ms(20)), None);
        assert_eq!(s.complete_without_missing(ms(20)), vec![1]);
        let cut = s.cut_points(ms(20)).expect("complete now");
        assert_eq!((cut.customers, cut.platinum), (2, 300));
        assert!(
            s.cut_points(ms(10)).is_some(),
            "task 1 still has month 10 to pass"
        );
    }

    #[test]
    fn a_rank_among_negative_values_cuts_at_zero() {
        let mut h = ValueHistogram::default();
        for v in [-5, -4, -3, -2, 10] {
            h.add(v);
        }
        let cut = CutPoints::of(&h, &shares(), ms(0));
        assert_eq!((cut.platinum, cut.gold, cut.iron), (10, 10, 0));
    }
}
