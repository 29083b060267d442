//! One task's view of the store: reads fall through to the store, writes
//! stay in memory until `drain`, which hands back one atomic batch of
//! writes. This is what lets the pipeline commit state only after its
//! outputs are safe, and throw away a batch that failed (by reopening the
//! task).
//!
//! Two things make the per-event cost independent of the store's size:
//!
//! * **A profile cache across batches** (like Kafka Streams' record cache):
//!   profiles read or written stay in memory after their batch, least
//!   recently used first out (as a CLOCK tells, see `clock_cache`) once
//!   the task's share of `state.cache_mb` is spent; RocksDB is read only
//!   on a miss. Entries are written through at every `drain`, so the store
//!   is always current for other readers (the HTTP customer lookup) and an
//!   evicted entry is never dirty.
//! * **A floor under each deadline index** (month closes, daily
//!   re-evaluations): no timer of the task is earlier. A tick before the
//!   floor has nothing due and touches no storage; a tick at or after it
//!   reads only `floor ..= tick`, never the deleted timers below the floor
//!   (a time-ordered index that is consumed from the front is a graveyard
//!   of tombstones there, which every scan from the start would walk).

use super::checkpoint::{read_ranking, read_stream_time, write_ranking, write_stream_time};
use super::clock_cache::ClockCache;
use super::keys::{
    decode_profile, encode_profile_with, profile_key, timer_customer, timer_instant, timer_key,
    timers_due_range, timers_from_range,
};
use super::timer_writes::{kind_slot, Deadlines, TimerWrites};
use super::{Cf, KvStore, StoreError, TaskId, Write};
use crate::domain::engine::{Profiles, StreamClock};
use crate::domain::output::TimerKind;
use crate::domain::profile::{Profile, Timers};
use crate::domain::ranking::Ranking;
use crate::domain::time::Millis;
use std::collections::BTreeSet;
use std::sync::Arc;

/// Customer ids up to this long are held inline in an `Id`.
const INLINE_ID: usize = 24;
/// The least a task may gather in writes before `dirty_over_budget`, so
/// that a cache of 0 (every read from RocksDB) does not mean a write per
/// record.
const MIN_DIRTY_BUDGET: usize = 16 << 20;

/// One cached profile.
#[derive(Debug)]
struct Cached {
    /// `None`: erased, or lent out by `load` until handed back. Boxed:
    /// lending moves a pointer, not the profile.
    profile: Option<Box<Profile>>,
    lent: bool,
    /// Written in this batch, not yet drained.
    dirty: bool,
    /// What the entry is charged against the budget.
    bytes: usize,
    /// While `dirty`: the customer's timers as the store has them (where
    /// its last drained profile put them), so the drain writes only where
    /// the batch moved them from and to.
    stored: Deadlines,
    /// The timers its profile names (none erased), kept beside it: a tick
    /// asks this of every timer the batch put, and the profile itself is
    /// one more cache miss away.
    now: Deadlines,
}

impl Cached {
    /// An entry written in the open batch, found with `stored` timers.
    /// An erased profile names no timers.
    fn written(profile: Option<Box<Profile>>, stored: Deadlines) -> Self {
        Cached {
            now: profile
                .as_deref()
                .map_or(Timers::default(), |p| p.timers)
                .into(),
            profile,
            lent: false,
            dirty: true,
            bytes: 0,
            stored,
        }
    }
}

/// Whether the profile in `profiles` names `id`'s `kind` timer at `at`: a
/// put entry of the open batch stands (its customer is written, so cached).
fn names(profiles: &ClockCache<Id, Cached>, kind: TimerKind, at: Millis, id: &str) -> bool {
    profiles
        .peek(id)
        .is_some_and(|c| c.now.of(kind) == Some(at))
}

/// The index write of (`kind`, `at`, `id`): a put or a delete.
fn timer_write(task: TaskId, kind: TimerKind, at: Millis, id: &str, put: bool) -> Write {
    Write {
        cf: Cf::Timers,
        key: timer_key(task, kind, at, id),
        value: put.then(Vec::new),
    }
}

/// Writes gathered into parts for `TaskState::drain_in_parts`.
struct Parts<'a> {
    writes: Vec<Write>,
    bytes: usize,
    max: usize,
    write: &'a mut dyn FnMut(Vec<Write>) -> Result<(), StoreError>,
}

impl Parts<'_> {
    fn push(&mut self, w: Write) -> Result<(), StoreError> {
        self.bytes += w.bytes();
        self.writes.push(w);
        if self.bytes >= self.max {
            self.hand_over()?;
        }
        Ok(())
    }

    /// Hands over what is gathered (the last part even when empty).
    fn hand_over(&mut self) -> Result<(), StoreError> {
        let mut writes = std::mem::take(&mut self.writes);
        self.bytes = 0;
        // Keys are unique here, and RocksDB's memtable inserts a sorted
        // batch faster (neighbouring inserts share their search path).
        writes.sort_unstable_by(|a, b| (a.cf, &a.key).cmp(&(b.cf, &b.key)));
        (self.write)(writes)
    }
}

/// The state of one task (a partition number across the input topics).
#[derive(Debug)]
pub struct TaskState {
    /// Partition number.
    pub task: TaskId,
    /// The task's stream time.
    pub clock: StreamClock,
    /// The task's part in percentile tiers, and what of it the store has.
    pub ranking: Ranking,
    ranking_stored: Ranking,
    profiles: ClockCache<Id, Cached>,
    /// Customers written since the last drain (each once).
    dirty: Vec<Id>,
    /// What the profiles written since the last drain are charged, as they
    /// were at their first write since (a profile growing in the batch is
    /// charged its growth at the drain).
    dirty_bytes: usize,
    /// What the clean entries of `profiles` (read or drained, not written
    /// since) are charged. With `dirty_bytes`, kept to `cache_budget`
    /// while clean entries are left to evict.
    cached_bytes: usize,
    cache_budget: usize,
    /// What the open batch does to the deadline index.
    timers: TimerWrites,
    /// Per timer kind: no timer of the task's index (store and pending) is
    /// earlier than this (`Millis::MAX`: none at all).
    floor: [Millis; 2],
    /// The task's part of a drained batch that is being committed while
    /// the next batch is processed (see `land`), sorted by family and key.
    landing: Option<Arc<Vec<Write>>>,
}

/// The task's maps key customers by the domain's inline `Id`: a lookup
/// compares the key where the entry is instead of following a second
/// pointer to its bytes (with 100 000 customers cached, every such pointer
/// is a cache miss: key comparisons were a twelfth of a replay), and a
/// timer write allocates nothing.
pub(super) use crate::domain::event::Id;

/// What an entry is charged against the cache budget beside its slot
/// (which the map's table is charged for, see `TaskState::cache_bytes`):
/// its id's bytes when they are not inline, and the profile as it is in
/// memory — its struct (376 bytes) and its heap parts, counted. (An
/// estimate from the encoded size charged a light profile's 1 KB or so as
/// about 300 bytes: a cache of 128 MB held 275 MB, and 10M events peaked
/// 200 MB above the configured bound.)
fn charge(profile: Option<&Profile>, id: &str) -> usize {
    let id_heap = if id.len() > INLINE_ID {
        2 * id.len()
    } else {
        0
    };
    id_heap + profile.map_or(0, |p| size_of::<Profile>() + p.heap_bytes())
}

impl TaskState {
    /// Opens a task, reading its stream time from the store; it caches
    /// profiles up to `cache_bytes` between batches.
    pub fn open(task: TaskId, store: &dyn KvStore, cache_bytes: usize) -> Result<Self, StoreError> {
        let ranking = read_ranking(store, task)?;
        Ok(TaskState {
            task,
            clock: StreamClock {
                stream_time: read_stream_time(store, task)?,
            },
            ranking_stored: ranking.clone(),
            ranking,
            profiles: ClockCache::new(),
            dirty: Vec::new(),
            dirty_bytes: 0,
            cached_bytes: 0,
            cache_budget: cache_bytes,
            timers: Default::default(),
            floor: [Millis::MIN; 2],
            landing: None,
        })
    }

    /// A `Profiles` view over `store` with this task's pending writes on top.
    pub fn session<'a>(&'a mut self, store: &'a dyn KvStore) -> Session<'a> {
        Session { state: self, store }
    }

    /// Whether the profiles written since the last drain, with the table
    /// that holds the cache's entries, take the task's cache budget: a
    /// driver that chooses when to drain (a replay) drains then, so
    /// waiting writes are bounded by config. (A profile is counted as it
    /// was at its first write since, not as it grows.)
    pub fn dirty_over_budget(&self) -> bool {
        self.dirty_bytes + self.profiles.table_bytes() >= self.cache_budget.max(MIN_DIRTY_BUDGET)
    }

    /// What the cache takes: its entries, clean and waiting, and the
    /// table and ring that hold them, by their room.
    fn cache_bytes(&self) -> usize {
        self.cached_bytes + self.dirty_bytes + self.profiles.table_bytes()
    }

    /// Lets clean entries leave, least recently used first (as the CLOCK
    /// tells), while they, the waiting writes and `incoming` bytes about
    /// to be cached are over the budget. What a batch wrote must stay until
    /// it is drained, but what the store has already may go at any time;
    /// evicting only at drains let the cache hold its budget in clean
    /// entries plus as much again in waiting ones (10M events peaked
    /// 200 MB above the configured bound).
    fn keep_to_budget(&mut self, incoming: usize) {
        // (Entries beyond the waiting ones are clean or lent: an erased
        // profile's entry is charged nothing but its slot.)
        while self.profiles.len() > self.dirty.len()
            && self.cache_bytes() + incoming > self.cache_budget
        {
            match self.profiles.evict_where(|c| !c.dirty && !c.lent) {
                Some((_, c)) => self.cached_bytes -= c.bytes,
                None => break,
            }
        }
    }

    /// Takes the pending writes (profiles, timers, stream time) as one
    /// batch, sorted by family and key; the profiles stay cached (clean),
    /// the least recently used (as a CLOCK tells) leave once the cache is
    /// over its budget.
    pub fn drain(&mut self) -> Vec<Write> {
        let mut batch = Vec::new();
        self.drain_in_parts(usize::MAX, &mut |part| {
            batch = part;
            Ok(())
        })
        .expect("keeping the one part cannot fail");
        batch
    }

    /// `drain`, handing the writes to `write` in parts of about
    /// `part_bytes` of keys and values, each sorted by family and key,
    /// as they are encoded: a driver that needs no atomicity (a replay)
    /// holds one part of encoded profiles at a time, not all of them (a
    /// task's flush of 10M events over 1M customers held 19 MB of writes
    /// at once). A failed `write` leaves the task neither drained nor
    /// pending: its driver stops.
    pub fn drain_in_parts(
        &mut self,
        part_bytes: usize,
        write: &mut dyn FnMut(Vec<Write>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let task = self.task;
        self.dirty_bytes = 0;
        let mut part = Parts {
            writes: Vec::with_capacity(self.dirty.len()),
            bytes: 0,
            max: part_bytes,
            write,
        };
        // Before the moves are forgotten: a moved timer's own writes say
        // what becomes of an entry it was or is at.
        for (kind, at, id) in self.timers.take() {
            let moved = self.moved(&id);
            if !moved.is_some_and(|(stored, now)| {
                stored.of(kind) == Some(at) || now.of(kind) == Some(at)
            }) {
                part.push(timer_write(task, kind, at, &id, false))?;
            }
        }
        let mut scratch = Vec::new();
        for id in std::mem::take(&mut self.dirty) {
            // `peek`: draining is not a use.
            let Some(c) = self.profiles.peek_mut(&id) else {
                continue;
            };
            let value = c
                .profile
                .as_deref()
                .map(|p| encode_profile_with(p, &mut scratch));
            c.bytes = charge(c.profile.as_deref(), &id);
            c.dirty = false;
            self.cached_bytes += c.bytes;
            let (stored, now) = (c.stored, c.now);
            part.push(Write {
                cf: Cf::Profiles,
                key: profile_key(task, &id),
                value,
            })?;
            for kind in TimerKind::ALL {
                let (from, to) = (stored.of(kind), now.of(kind));
                if from == to {
                    continue;
                }
                for (at, put) in [(from, false), (to, true)] {
                    if let Some(at) = at {
                        part.push(timer_write(task, kind, at, &id, put))?;
                    }
                }
            }
        }
        while self.cache_bytes() > self.cache_budget {
            match self.profiles.evict() {
                Some((_, c)) => self.cached_bytes -= c.bytes,
                None => break,
            }
        }
        self.profiles.shrink();
        if let Some(st) = self.clock.stream_time {
            part.push(write_stream_time(task, st))?;
        }
        // Only percentile tiers change it; under `absolute` it stays default.
        if self.ranking != self.ranking_stored {
            part.push(write_ranking(task, &self.ranking))?;
            self.ranking_stored = self.ranking.clone();
        }
        part.hand_over()
    }

    /// Lets reads see `writes` — what `drain` just took, sorted by family
    /// and key, maybe with more of the task's own keys — as if the store
    /// had them, until `landed`. A pipeline commits a batch while it
    /// processes the next one, and that one may miss a profile the cache
    /// let go, or look up deadlines, before the commit reaches the store.
    pub fn land(&mut self, writes: Arc<Vec<Write>>) {
        self.landing = Some(writes);
    }

    /// The writes `land` showed are in the store now (or were dropped
    /// with the batch that follows them).
    pub fn landed(&mut self) {
        self.landing = None;
    }

    /// What the landing batch does to `key`: `Some(None)` deletes it.
    fn landing_get(&self, cf: Cf, key: &[u8]) -> Option<&Option<Vec<u8>>> {
        let w = self.landing.as_deref()?;
        let i = w
            .binary_search_by(|x| (x.cf, x.key.as_slice()).cmp(&(cf, key)))
            .ok()?;
        Some(&w[i].value)
    }

    /// The landing batch's writes with `from <= key < to` in `cf`.
    fn landing_range(&self, cf: Cf, from: &[u8], to: &[u8]) -> &[Write] {
        let Some(w) = self.landing.as_deref() else {
            return &[];
        };
        let lo = w.partition_point(|x| (x.cf, x.key.as_slice()) < (cf, from));
        let hi = w.partition_point(|x| (x.cf, x.key.as_slice()) < (cf, to));
        &w[lo..hi.max(lo)]
    }

    /// The earliest `kind` timer at or after `from`, as far as a floor
    /// goes: the store's first entry (which a landing or pending delete
    /// may have removed — then the floor is merely early), and the
    /// landing and pending puts; `Millis::MAX` when there is none.
    fn earliest_from(
        &mut self,
        store: &dyn KvStore,
        kind: TimerKind,
        from: Millis,
    ) -> Result<Millis, StoreError> {
        let (lo, hi) = timers_from_range(self.task, kind, from);
        let stored = match store.first_key(Cf::Timers, &lo, &hi)? {
            Some(k) => Some(timer_instant(&k)?),
            None => None,
        };
        let landing = match self
            .landing_range(Cf::Timers, &lo, &hi)
            .iter()
            .find(|w| w.value.is_some())
        {
            Some(w) => Some(timer_instant(&w.key)?),
            None => None,
        };
        let pending = {
            let profiles = &self.profiles;
            self.timers
                .earliest_put(kind, from, |at, id| names(profiles, kind, at, id))
        };
        Ok([stored, landing, pending]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(Millis::MAX))
    }

    /// Indexes where `id`'s timers moved (`old`: where its profile had
    /// them); the drain writes the moves from the cache entry.
    fn set_timers(&mut self, id: &str, old: Timers, new: Timers) {
        for kind in TimerKind::ALL {
            match new.of(kind) {
                Some(at) if old.of(kind) != Some(at) => {
                    self.timers.put(kind, at, id);
                    let floor = &mut self.floor[kind_slot(kind)];
                    *floor = (*floor).min(at);
                }
                _ => {}
            }
        }
    }

    /// A customer the batch wrote: its timers as the store has them, and
    /// as its profile names them now.
    fn moved(&self, id: &str) -> Option<(Deadlines, Deadlines)> {
        let c = self.profiles.peek(id).filter(|c| c.dirty)?;
        Some((c.stored, c.now))
    }

    /// Whether an index entry the store (or the landing batch) has is
    /// still there: the batch neither moved that timer away nor dropped
    /// the entry.
    fn keeps(&self, kind: TimerKind, at: Millis, id: &str) -> bool {
        match self.moved(id) {
            Some((_, now)) if now.of(kind) == Some(at) => true,
            Some((stored, _)) if stored.of(kind) == Some(at) => false,
            _ => !self.timers.dropped(kind, at, id),
        }
    }
}

/// `TaskState` plus the store it reads through.
pub struct Session<'a> {
    state: &'a mut TaskState,
    store: &'a dyn KvStore,
}

impl Profiles for Session<'_> {
    type Error = StoreError;

    fn load(&mut self, customer_id: &str) -> Result<Option<Box<Profile>>, StoreError> {
        if let Some(c) = self.state.profiles.get_mut(customer_id) {
            assert!(!c.lent, "a profile is lent out once at a time");
            let lent = c.profile.take();
            c.lent = lent.is_some();
            return Ok(lent);
        }
        let key = profile_key(self.state.task, customer_id);
        let profile = match self.state.landing_get(Cf::Profiles, &key) {
            Some(Some(bytes)) => decode_profile(bytes)?,
            Some(None) => return Ok(None),
            None => match self.store.get(Cf::Profiles, &key)? {
                Some(bytes) => decode_profile(&bytes)?,
                None => return Ok(None),
            },
        };
        let profile = Box::new(profile);
        let cached = Cached {
            profile: None,
            lent: true,
            dirty: false,
            bytes: charge(Some(&profile), customer_id),
            stored: profile.timers.into(),
            now: profile.timers.into(),
        };
        // Before the entry is in: it is lent, and may not leave.
        self.state.keep_to_budget(cached.bytes);
        self.state.cached_bytes += cached.bytes;
        self.state.profiles.insert(Id::from(customer_id), cached);
        Ok(Some(profile))
    }

    fn save(&mut self, profile: Box<Profile>, previous: Timers) -> Result<(), StoreError> {
        self.state
            .set_timers(&profile.customer_id, previous, profile.timers);
        let id = profile.customer_id.clone();
        self.put(id, Some(profile), previous);
        Ok(())
    }

    fn release(&mut self, profile: Box<Profile>) {
        if let Some(c) = self.state.profiles.peek_mut(profile.customer_id.as_str()) {
            if c.lent {
                c.lent = false;
                c.profile = Some(profile);
            }
        }
    }

    fn erase(&mut self, customer_id: &str, previous: Timers) -> Result<(), StoreError> {
        self.state
            .set_timers(customer_id, previous, Timers::default());
        self.put(Id::from(customer_id), None, previous);
        Ok(())
    }

    fn due(&mut self, kind: TimerKind, at: Millis) -> Result<Vec<(Millis, String)>, StoreError> {
        let slot = kind_slot(kind);
        let floor = self.state.floor[slot];
        if at < floor {
            return Ok(Vec::new());
        }
        let (from, to) = timers_due_range(self.state.task, kind, floor, at);
        let mut due = BTreeSet::new();
        for (k, _) in self.store.range(Cf::Timers, &from, &to)? {
            due.insert((timer_instant(&k)?, timer_customer(&k)?));
        }
        for w in self.state.landing_range(Cf::Timers, &from, &to) {
            let entry = (timer_instant(&w.key)?, timer_customer(&w.key)?);
            if w.value.is_some() {
                due.insert(entry);
            } else {
                due.remove(&entry);
            }
        }
        // What the batch moved away from or dropped is gone; what it put
        // and its profile names is there.
        let state = &mut *self.state;
        due.retain(|(when, id)| state.keeps(kind, *when, id));
        let profiles = &state.profiles;
        state.timers.puts_in(
            kind,
            floor,
            at,
            |when, id| names(profiles, kind, when, id),
            |when, id| {
                due.insert((when, id.to_string()));
            },
        );
        // Nothing due: the index starts after `at`; one seek says where.
        // Something due: the caller moves those deadlines past `at`, so
        // the earliest of them is a floor (and the next tick reads only
        // from there).
        self.state.floor[slot] = match due.first() {
            None => self.state.earliest_from(self.store, kind, at + 1)?,
            Some((when, _)) => *when,
        };
        Ok(due.into_iter().collect())
    }

    fn drop_timer(&mut self, kind: TimerKind, at: Millis, id: &str) -> Result<(), StoreError> {
        self.state.timers.drop_entry(kind, at, id);
        Ok(())
    }

    fn ranking(&mut self) -> &mut Ranking {
        &mut self.state.ranking
    }
}

impl Session<'_> {
    /// Caches a written profile as dirty (charged to the cache at drain;
    /// to the waiting writes as it is at its first write in the batch).
    /// `previous`: the timers the profile had, which the store has when
    /// this is the batch's first write of it.
    fn put(&mut self, id: Id, profile: Option<Box<Profile>>, previous: Timers) {
        let state = &mut *self.state;
        if let Some(c) = state.profiles.get_mut(&id) {
            let stored = if c.dirty {
                c.stored
            } else {
                state.dirty_bytes += charge(profile.as_deref(), &id);
                state.dirty.push(id);
                previous.into()
            };
            state.cached_bytes -= c.bytes;
            *c = Cached::written(profile, stored);
            state.keep_to_budget(0);
            return;
        }
        state.dirty_bytes += charge(profile.as_deref(), &id);
        state.dirty.push(id.clone());
        state
            .profiles
            .insert(id, Cached::written(profile, previous.into()));
        state.keep_to_budget(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    /// Timers with a daily deadline at `daily` ms after the epoch (the
    /// tests count instants in small numbers).
    fn timers(daily: Option<i64>) -> Timers {
        Timers {
            month_close: None,
            daily: daily.map(Millis::from_ms),
        }
    }

    /// Task 0 over `store`, with room for every profile a test caches.
    fn roomy_task(store: &MemoryStore) -> TaskState {
        TaskState::open(TaskId::new(0), store, 1 << 20).unwrap()
    }

    /// The customers whose daily deadline is due at `at` ms.
    fn due_ids(s: &mut Session<'_>, at: i64) -> Vec<String> {
        let due = s.due(TimerKind::Daily, Millis::from_ms(at)).unwrap();
        due.into_iter().map(|(_, id)| id).collect()
    }

    /// Saves `id` with a daily timer at `at` (moving it from `from`).
    fn schedule(s: &mut Session<'_>, id: &str, from: Option<i64>, at: Option<i64>) {
        let mut p = Box::new(Profile::new(id));
        p.timers = timers(at);
        s.save(p, timers(from)).unwrap();
    }

    #[test]
    fn an_entry_is_charged_what_its_profile_holds_in_memory() {
        let mut p = Profile::new("c1");
        let fresh = charge(Some(&p), "c1");
        assert!(fresh >= size_of::<Profile>());
        for i in 0..32 {
            p.remember_event(i, 32);
        }
        let held = p.recent_events.capacity() * size_of::<u64>();
        assert!(held >= 32 * 8);
        assert_eq!(charge(Some(&p), "c1"), fresh + held);
        let long = "c".repeat(40);
        assert_eq!(charge(None, &long), 80, "a long id twice");
        assert_eq!(charge(None, "c1"), 0, "an inline id is in the slot");
    }

    /// What the cache's table and ring take with room for `n` entries.
    fn room(n: usize) -> usize {
        let mut c = ClockCache::new();
        for i in 0..n {
            c.insert(
                Id::from(format!("r{i}")),
                Cached::written(None, Timers::default().into()),
            );
        }
        c.table_bytes()
    }

    #[test]
    fn clean_entries_leave_as_waiting_writes_take_their_room() {
        let store = MemoryStore::new();
        let one = charge(Some(&Profile::new("c00")), "c00");
        // Four profiles, and a table with room for the six entries below.
        let mut task = TaskState::open(TaskId::new(0), &store, 4 * one + room(6)).unwrap();
        let save = |task: &mut TaskState, ids: std::ops::Range<usize>| {
            let mut s = task.session(&store);
            for i in ids {
                let p = Box::new(Profile::new(&format!("c{i:02}")));
                s.save(p, Timers::default()).unwrap();
            }
        };
        save(&mut task, 0..4);
        store.write(task.drain()).unwrap();
        assert_eq!(task.profiles.len(), 4, "four fit");
        // Two written in the next batch: two clean ones leave at once, not
        // at the drain, so clean and waiting stay within the budget.
        save(&mut task, 10..12);
        assert_eq!(task.profiles.len(), 4);
        assert_eq!(task.cached_bytes + task.dirty_bytes, 4 * one);
        // Waiting writes never leave: past the budget the cache holds them
        // alone, and reads of the others still find them in the store.
        save(&mut task, 20..24);
        assert_eq!(task.profiles.len(), 6);
        assert_eq!(task.cached_bytes, 0);
        let mut s = task.session(&store);
        assert_eq!(s.load("c01").unwrap().unwrap().customer_id, "c01");
    }

    #[test]
    fn the_cache_keeps_to_its_budget_and_misses_read_the_store() {
        let store = MemoryStore::new();
        let mut task = TaskState::open(
            TaskId::new(0),
            &store,
            3 * charge(Some(&Profile::new("c00")), "c00"),
        )
        .unwrap();
        {
            let mut s = task.session(&store);
            for i in 0..10 {
                s.save(
                    Box::new(Profile::new(&format!("c{i:02}"))),
                    Timers::default(),
                )
                .unwrap();
            }
        }
        store.write(task.drain()).unwrap();
        assert!(task.profiles.len() < 10, "evicted down to the budget");
        assert!(task.cached_bytes <= task.cache_budget);
        let mut s = task.session(&store);
        for i in 0..10 {
            let id = format!("c{i:02}");
            assert_eq!(s.load(&id).unwrap().unwrap().customer_id, id);
        }
        assert_eq!(s.load("nobody").unwrap(), None);
    }

    #[test]
    fn waiting_writes_count_against_the_budget_until_drained() {
        let store = MemoryStore::new();
        // A cache of 0: the floor applies.
        let mut task = TaskState::open(TaskId::new(0), &store, 0).unwrap();
        let one = charge(Some(&Profile::new("c000000")), "c000000");
        let save = |task: &mut TaskState, ids: std::ops::Range<usize>| {
            let mut s = task.session(&store);
            for i in ids {
                s.save(
                    Box::new(Profile::new(&format!("c{i:06}"))),
                    Timers::default(),
                )
                .unwrap();
            }
        };
        let mut n = 0;
        while !task.dirty_over_budget() {
            save(&mut task, n..n + 1);
            n += 1;
            if n == 100 {
                // Saving a waiting profile again adds nothing.
                save(&mut task, 0..10);
                assert_eq!(task.dirty_bytes, n * one);
            }
        }
        assert_eq!(task.dirty_bytes, n * one);
        // The table holding them counts too.
        assert!(n * one < MIN_DIRTY_BUDGET);
        assert!(n * one + task.profiles.table_bytes() >= MIN_DIRTY_BUDGET);
        store.write(task.drain()).unwrap();
        assert!(!task.dirty_over_budget());
    }

    #[test]
    fn a_drain_in_parts_writes_what_a_whole_drain_does() {
        let store = MemoryStore::new();
        let batch = |task: &mut TaskState| {
            let mut s = task.session(&store);
            for i in 0..50 {
                // Timers moved from where the store had them, and put.
                schedule(&mut s, &format!("c{i:02}"), Some(1000 + i), Some(2000 + i));
            }
            task.clock.stream_time = Some(Millis::from_ms(7));
        };
        let (mut whole, mut in_parts) = (roomy_task(&store), roomy_task(&store));
        batch(&mut whole);
        batch(&mut in_parts);
        let expected = whole.drain();
        let mut parts = Vec::new();
        in_parts
            .drain_in_parts(500, &mut |part| {
                parts.push(part);
                Ok(())
            })
            .unwrap();
        assert!(parts.len() > 3, "{} parts", parts.len());
        for part in &parts {
            let bytes: usize = part.iter().map(Write::bytes).sum();
            let largest = part.iter().map(Write::bytes).max().unwrap_or(0);
            assert!(bytes < 500 + largest, "a part ends at its bound");
            assert!(part.is_sorted_by(|a, b| (a.cf, &a.key) <= (b.cf, &b.key)));
        }
        let mut all: Vec<Write> = parts.into_iter().flatten().collect();
        all.sort_unstable_by(|a, b| (a.cf, &a.key).cmp(&(b.cf, &b.key)));
        assert_eq!(all, expected);
        assert!(!in_parts.dirty_over_budget() && in_parts.dirty.is_empty());
    }

    #[test]
    fn the_deadline_floor_skips_empty_ticks_and_never_hides_a_timer() {
        let store = MemoryStore::new();
        let mut task = roomy_task(&store);
        let mut s = task.session(&store);
        schedule(&mut s, "a", None, Some(100));
        schedule(&mut s, "b", None, Some(300));
        assert_eq!(due_ids(&mut s, 50), Vec::<&str>::new());
        assert_eq!(due_ids(&mut s, 100), vec!["a"]);
        // The caller moves a's deadline past the tick.
        schedule(&mut s, "a", Some(100), Some(500));
        assert!(due_ids(&mut s, 200).is_empty());
        assert_eq!(
            s.state.floor[kind_slot(TimerKind::Daily)],
            Millis::from_ms(300),
            "one seek found b"
        );
        // A timer put below the floor (a late event) is still found.
        schedule(&mut s, "c", None, Some(150));
        assert_eq!(due_ids(&mut s, 250), vec!["c"]);
        schedule(&mut s, "c", Some(150), None);
        store.write(task.drain()).unwrap();
        let mut s = task.session(&store);
        assert_eq!(due_ids(&mut s, 400), vec!["b"]);
        schedule(&mut s, "b", Some(300), None);
        assert_eq!(due_ids(&mut s, 600), vec!["a"]);
        schedule(&mut s, "a", Some(500), None);
        assert!(due_ids(&mut s, 10_000).is_empty());
        assert_eq!(s.state.floor[kind_slot(TimerKind::Daily)], Millis::MAX);
    }

    /// The timer writes a drain hands over: (instant in ms, customer, put?).
    fn timer_writes(writes: &[Write]) -> Vec<(i64, String, bool)> {
        writes
            .iter()
            .filter(|w| w.cf == Cf::Timers)
            .map(|w| {
                let at = timer_instant(&w.key).unwrap();
                (at.ms(), timer_customer(&w.key).unwrap(), w.value.is_some())
            })
            .collect()
    }

    #[test]
    fn a_dropped_index_entry_is_deleted_from_the_store() {
        let store = MemoryStore::new();
        let mut task = roomy_task(&store);
        // An entry no profile names, as a restore may leave behind.
        let key = timer_key(TaskId::new(0), TimerKind::Daily, Millis::from_ms(100), "a");
        store
            .write(vec![Write {
                cf: Cf::Timers,
                key,
                value: Some(Vec::new()),
            }])
            .unwrap();
        let mut s = task.session(&store);
        assert_eq!(
            s.due(TimerKind::Daily, Millis::from_ms(150)).unwrap(),
            vec![(Millis::from_ms(100), "a".to_string())]
        );
        s.drop_timer(TimerKind::Daily, Millis::from_ms(100), "a")
            .unwrap();
        assert!(due_ids(&mut s, 200).is_empty());
        let writes = task.drain();
        assert_eq!(timer_writes(&writes), vec![(100, "a".into(), false)]);
        store.write(writes).unwrap();
        let mut s = task.session(&store);
        assert!(due_ids(&mut s, 200).is_empty());
    }

    #[test]
    fn a_dropped_entry_the_profile_names_again_is_kept() {
        let store = MemoryStore::new();
        let mut task = roomy_task(&store);
        let key = |at| timer_key(TaskId::new(0), TimerKind::Daily, Millis::from_ms(at), "a");
        // The store has a's timer at 300, and a stale entry at 100.
        let mut s = task.session(&store);
        schedule(&mut s, "a", None, Some(300));
        store.write(task.drain()).unwrap();
        store
            .write(vec![Write {
                cf: Cf::Timers,
                key: key(100),
                value: Some(Vec::new()),
            }])
            .unwrap();
        let mut s = task.session(&store);
        assert_eq!(due_ids(&mut s, 150), vec!["a"]);
        s.drop_timer(TimerKind::Daily, Millis::from_ms(100), "a")
            .unwrap();
        // A late event brings a's deadline back to 100.
        schedule(&mut s, "a", Some(300), Some(100));
        assert_eq!(due_ids(&mut s, 150), vec!["a"]);
        let writes = task.drain();
        assert_eq!(
            timer_writes(&writes),
            vec![(100, "a".into(), true), (300, "a".into(), false)]
        );
    }

    #[test]
    fn a_timer_put_and_moved_in_one_batch_writes_nothing() {
        let store = MemoryStore::new();
        let mut task = roomy_task(&store);
        let mut s = task.session(&store);
        schedule(&mut s, "a", None, Some(100));
        schedule(&mut s, "a", Some(100), Some(200));
        schedule(&mut s, "a", Some(200), Some(300));
        let writes = task.drain();
        assert_eq!(timer_writes(&writes), vec![(300, "a".into(), true)]);
        store.write(writes).unwrap();
        // The stored timer is deleted, put back, moved again: its tombstone
        // must reach the store; the timers in between leave no trace.
        let mut s = task.session(&store);
        schedule(&mut s, "a", Some(300), Some(400));
        schedule(&mut s, "a", Some(400), Some(300));
        assert_eq!(due_ids(&mut s, 300), vec!["a"]);
        schedule(&mut s, "a", Some(300), Some(500));
        schedule(&mut s, "a", Some(500), Some(600));
        let writes = task.drain();
        assert_eq!(
            timer_writes(&writes),
            vec![(300, "a".into(), false), (600, "a".into(), true)]
        );
        store.write(writes).unwrap();
        let mut s = task.session(&store);
        assert!(due_ids(&mut s, 599).is_empty());
        assert_eq!(due_ids(&mut s, 600), vec!["a"]);
    }

    #[test]
    fn a_landing_batch_reads_as_stored_until_it_has_landed() {
        let store = MemoryStore::new();
        // A cache of 0: drained profiles leave at once, so reads miss.
        let mut task = TaskState::open(TaskId::new(0), &store, 0).unwrap();
        let mut s = task.session(&store);
        schedule(&mut s, "a", None, Some(100));
        schedule(&mut s, "b", None, Some(200));
        store.write(task.drain()).unwrap();
        // The next batch moves a's deadline, erases b and adds c; its
        // writes are committed while the batch after it is processed.
        let mut s = task.session(&store);
        schedule(&mut s, "a", Some(100), Some(300));
        s.erase("b", timers(Some(200))).unwrap();
        schedule(&mut s, "c", None, Some(150));
        let landing = Arc::new(task.drain());
        assert_eq!(task.profiles.len(), 0, "nothing left in the cache");
        task.land(Arc::clone(&landing));
        let expect = |task: &mut TaskState| {
            let mut s = task.session(&store);
            assert_eq!(s.load("a").unwrap().unwrap().timers, timers(Some(300)));
            assert_eq!(s.load("b").unwrap(), None, "erased");
            assert!(s.load("c").unwrap().is_some());
            // a's timer at 100 and b's are deleted, c's put, a's moved.
            assert!(due_ids(&mut s, 120).is_empty());
            assert_eq!(due_ids(&mut s, 300), vec!["c", "a"]);
        };
        expect(&mut task);
        store.write_parts(&[&landing]).unwrap();
        task.landed();
        // Reads (and the cache they fill) were put back: start again.
        let mut task = TaskState::open(TaskId::new(0), &store, 0).unwrap();
        expect(&mut task);
    }
}
