//! One task's view of the store during a batch: reads fall through to the
//! store, writes stay in memory until `drain`, which hands back one atomic
//! batch of writes. This is what lets the pipeline commit state only after
//! its outputs are safe, and discard a batch that failed.

use super::checkpoint::{read_i64, write_i64, STREAM_TIME};
use super::keys::{
    decode_profile, encode_profile, profile_key, timer_customer, timer_key, timers_due_range,
};
use super::{Cf, KvStore, StoreError, TaskId, Write};
use crate::domain::engine::{Profiles, StreamClock};
use crate::domain::output::TimerKind;
use crate::domain::profile::{Profile, Timers};
use crate::domain::time::Millis;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The state of one task (a partition number across the input topics).
#[derive(Debug, Default)]
pub struct TaskState {
    /// Partition number.
    pub task: TaskId,
    /// The task's stream time.
    pub clock: StreamClock,
    profiles: HashMap<String, Option<Profile>>,
    timers: BTreeMap<Vec<u8>, bool>,
}

impl TaskState {
    /// Opens a task, reading its stream time from the store.
    pub fn open(task: TaskId, store: &dyn KvStore) -> Result<Self, StoreError> {
        Ok(TaskState {
            task,
            clock: StreamClock {
                stream_time: read_i64(store, task, STREAM_TIME)?,
            },
            ..TaskState::default()
        })
    }

    /// A `Profiles` view over `store` with this task's pending writes on top.
    pub fn session<'a>(&'a mut self, store: &'a dyn KvStore) -> Session<'a> {
        Session { state: self, store }
    }

    /// Whether there are writes waiting.
    pub fn is_dirty(&self) -> bool {
        !self.profiles.is_empty() || !self.timers.is_empty()
    }

    /// Takes the pending writes (profiles, timers, stream time) as one batch.
    pub fn drain(&mut self) -> Vec<Write> {
        let task = self.task;
        let mut writes: Vec<Write> = self
            .profiles
            .drain()
            .map(|(id, p)| Write {
                cf: Cf::Profiles,
                key: profile_key(task, &id),
                value: p.as_ref().map(encode_profile),
            })
            .collect();
        writes.extend(
            std::mem::take(&mut self.timers)
                .into_iter()
                .map(|(key, present)| Write {
                    cf: Cf::Timers,
                    key,
                    value: present.then(Vec::new),
                }),
        );
        if let Some(st) = self.clock.stream_time {
            writes.push(write_i64(task, STREAM_TIME, st));
        }
        writes
    }

    /// Forgets pending writes (after a failed batch); the clock is re-read.
    pub fn discard(&mut self, store: &dyn KvStore) -> Result<(), StoreError> {
        *self = TaskState::open(self.task, store)?;
        Ok(())
    }

    fn set_timer(&mut self, kind: TimerKind, id: &str, old: Option<Millis>, new: Option<Millis>) {
        if old == new {
            return;
        }
        if let Some(at) = old {
            self.timers
                .insert(timer_key(self.task, kind, at, id), false);
        }
        if let Some(at) = new {
            self.timers.insert(timer_key(self.task, kind, at, id), true);
        }
    }

    fn set_timers(&mut self, id: &str, old: Timers, new: Timers) {
        self.set_timer(TimerKind::MonthClose, id, old.month_close, new.month_close);
        self.set_timer(TimerKind::Daily, id, old.daily, new.daily);
    }
}

/// `TaskState` plus the store it reads through.
pub struct Session<'a> {
    state: &'a mut TaskState,
    store: &'a dyn KvStore,
}

impl Profiles for Session<'_> {
    type Error = StoreError;

    fn load(&mut self, customer_id: &str) -> Result<Option<Profile>, StoreError> {
        if let Some(pending) = self.state.profiles.get(customer_id) {
            return Ok(pending.clone());
        }
        self.store
            .get(Cf::Profiles, &profile_key(self.state.task, customer_id))?
            .map(|b| decode_profile(&b))
            .transpose()
    }

    fn save(&mut self, profile: Profile, previous: Timers) -> Result<(), StoreError> {
        self.state
            .set_timers(&profile.customer_id, previous, profile.timers);
        self.state
            .profiles
            .insert(profile.customer_id.clone(), Some(profile));
        Ok(())
    }

    fn erase(&mut self, customer_id: &str, previous: Timers) -> Result<(), StoreError> {
        self.state
            .set_timers(customer_id, previous, Timers::default());
        self.state.profiles.insert(customer_id.to_owned(), None);
        Ok(())
    }

    fn due(&mut self, kind: TimerKind, at: Millis) -> Result<Vec<String>, StoreError> {
        let (from, to) = timers_due_range(self.state.task, kind, at);
        let mut keys: BTreeSet<Vec<u8>> = self
            .store
            .range(Cf::Timers, &from, &to)?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        for (k, present) in self.state.timers.range(from..to) {
            if *present {
                keys.insert(k.clone());
            } else {
                keys.remove(k);
            }
        }
        keys.iter().map(|k| timer_customer(k)).collect()
    }
}
