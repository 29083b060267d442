//! The deadline-index writes of one task's open batch that are not a
//! moved timer's own.
//!
//! A batch moves a customer's daily deadline with most of its events and
//! visits, often several times, and what reaches the store is only where
//! each timer was when the batch found it and where it is at the drain.
//! The session keeps both in the customer's cache entry, which a save has
//! at hand anyway. Keeping every write by instant, then customer, cost two
//! ordered-map searches and up to four probes of per-instant maps at each
//! move, mostly cache misses (6.6% of a replay of 1M events; 3M events
//! over 1M customers ran 14% faster and peaked 11-32 MB lower without).
//!
//! What is left here is what a tick needs in order: where the batch put
//! timers. An entry whose customer has moved on since is stale, so a move
//! is an append, and a reader asks the session which entries still stand.
//! Stale entries stay until a tick or the drain passes them, so the index
//! holds up to one entry per move of the batch (24 bytes each), which
//! `state.cache_mb` does not count.

use super::session::Id;
use crate::domain::output::TimerKind;
use crate::domain::profile::Timers;
use crate::domain::time::Millis;
use foldhash::fast::RandomState;
use std::collections::{BTreeMap, HashSet};
use std::ops::{ControlFlow, RangeBounds};

/// Where an open batch put timers, and the index entries it dropped.
#[derive(Debug, Default)]
pub struct TimerWrites {
    /// Per kind (`kind_slot`), the instants timers were put at, each with
    /// its customers; stale entries are pruned where they are read.
    puts: [BTreeMap<Millis, Vec<Id>>; 2],
    /// Index entries no profile names (`Profiles::drop_timer`: a restore
    /// may leave such behind), deleted at the drain.
    dropped: HashSet<(usize, Millis, Id), RandomState>,
}

/// Where a timer kind's writes are kept apart.
pub fn kind_slot(kind: TimerKind) -> usize {
    match kind {
        TimerKind::MonthClose => 0,
        TimerKind::Daily => 1,
    }
}

impl TimerWrites {
    /// `id`'s `kind` timer is put at `at`.
    pub fn put(&mut self, kind: TimerKind, at: Millis, id: &str) {
        self.puts[kind_slot(kind)]
            .entry(at)
            .or_default()
            .push(Id::from(id));
    }

    /// The index entry (`kind`, `at`, `id`), which no profile names, goes.
    pub fn drop_entry(&mut self, kind: TimerKind, at: Millis, id: &str) {
        self.dropped.insert((kind_slot(kind), at, Id::from(id)));
    }

    /// Whether the entry (`kind`, `at`, `id`) was dropped.
    pub fn dropped(&self, kind: TimerKind, at: Millis, id: &str) -> bool {
        !self.dropped.is_empty() && self.dropped.contains(&(kind_slot(kind), at, Id::from(id)))
    }

    /// Calls `f` with each timer of `kind` put in `from..=to` that still
    /// `stands`, in order of instant.
    pub fn puts_in(
        &mut self,
        kind: TimerKind,
        from: Millis,
        to: Millis,
        stands: impl Fn(Millis, &str) -> bool,
        mut f: impl FnMut(Millis, &Id),
    ) {
        self.scan(kind, from..=to, stands, |at, ids| {
            ids.iter().for_each(|id| f(at, id));
            ControlFlow::Continue(())
        });
    }

    /// The earliest instant at or after `from` with a put timer of `kind`
    /// that still `stands`.
    pub fn earliest_put(
        &mut self,
        kind: TimerKind,
        from: Millis,
        stands: impl Fn(Millis, &str) -> bool,
    ) -> Option<Millis> {
        let mut found = None;
        self.scan(kind, from.., stands, |at, _| {
            found = Some(at);
            ControlFlow::Break(())
        });
        found
    }

    /// Walks the instants of `kind` in `range` in order, pruning the
    /// entries that no longer `stand` (and the instants left with none),
    /// and hands `visit` each instant's standing customers until it breaks.
    fn scan(
        &mut self,
        kind: TimerKind,
        range: impl RangeBounds<Millis>,
        stands: impl Fn(Millis, &str) -> bool,
        mut visit: impl FnMut(Millis, &[Id]) -> ControlFlow<()>,
    ) {
        let puts = &mut self.puts[kind_slot(kind)];
        let mut emptied = Vec::new();
        for (&at, ids) in puts.range_mut(range) {
            ids.retain(|id| stands(at, id));
            if ids.is_empty() {
                emptied.push(at);
            } else if visit(at, ids).is_break() {
                break;
            }
        }
        for at in emptied {
            puts.remove(&at);
        }
    }

    /// The dropped entries, as (kind, instant, customer); the batch's
    /// writes start again empty.
    pub fn take(&mut self) -> impl Iterator<Item = (TimerKind, Millis, Id)> {
        self.puts = Default::default();
        std::mem::take(&mut self.dropped)
            .into_iter()
            .map(|(slot, at, id)| (TimerKind::ALL[slot], at, id))
    }
}

/// A customer's timers as a cache entry keeps them: 16 bytes where
/// `Timers` takes 32, and every cached customer carries two of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines([Millis; 2]);

/// What stands for no timer: no deadline is that early.
const NONE: Millis = Millis::MIN;

impl From<Timers> for Deadlines {
    fn from(t: Timers) -> Self {
        let mut d = [NONE; 2];
        for kind in TimerKind::ALL {
            d[kind_slot(kind)] = t.of(kind).unwrap_or(NONE);
        }
        Deadlines(d)
    }
}

impl Deadlines {
    /// The deadline of `kind`.
    pub fn of(self, kind: TimerKind) -> Option<Millis> {
        Some(self.0[kind_slot(kind)]).filter(|&at| at != NONE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_keep_what_timers_name() {
        for (month_close, daily) in [
            (None, None),
            (Some(0), None),
            (None, Some(-5)),
            (Some(7), Some(9)),
        ] {
            let t = Timers {
                month_close: month_close.map(Millis::from_ms),
                daily: daily.map(Millis::from_ms),
            };
            let d = Deadlines::from(t);
            for kind in TimerKind::ALL {
                assert_eq!(d.of(kind), t.of(kind));
                assert_eq!(kind, TimerKind::ALL[kind_slot(kind)]);
            }
        }
    }
}
