//! Event-time alignment of a task's input partitions, after Kafka
//! Streams' `PartitionGroup` and `RecordQueue`.
//!
//! A task reads the same partition number of every input topic. Fetched
//! from a backlog, those partitions arrive one topic at a time: processed
//! in arrival order, one topic's events would push the task's stream time
//! weeks ahead and make the other topics' events late (they would update
//! state but emit nothing, and month closes would run before the purchases
//! they should count). So every input partition gets its own queue, kept
//! across polls and batches, and a task's next record is always the head
//! with the smallest event time — `(ts, Kafka timestamp, topic rank)`, each
//! partition keeping its own order — and a task waits while one of its
//! partitions has nothing buffered but more to fetch.
//!
//! A partition with nothing buffered is skipped only when librdkafka has
//! reported its end (the last stable offset under `read_committed`) after
//! the last record buffered from it — and, with a positive
//! `kafka.max_task_idle_ms`, only once it has been empty that long (time
//! for a late producer). Records taken while a partition is skipped are
//! "enforced processing": a later record on the skipped partition may be
//! older than what was taken.
//!
//! A partition whose queue is full simply stops being drained from
//! librdkafka, whose own per-partition prefetch limit then stops its
//! fetches. Only when a task has waited for one partition for
//! [`PAUSE_AFTER`] are its full partitions paused in the consumer (so they
//! stop competing with the late one for fetch bandwidth), and resumed once
//! drained to half: librdkafka drops a paused partition's prefetched
//! records and fetches them again on resume, so pausing on every brief
//! wait of a catch-up would cost a round trip each time.
//!
//! Nothing here talks to Kafka: the run loop feeds records and
//! end-of-partition notices in, and pauses or resumes the partitions this
//! module names, so the ordering rules are unit-tested without a broker.

use super::batch::InRecord;
use crate::codec::input::peek_ts;
use crate::domain::time::Millis;
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// An input partition by the rank of its topic in `kafka.input_topics`
/// (the last tie-break of the order) and its partition number (the task).
pub type RankedPartition = (usize, i32);

/// Order of records across a task's partitions: event `ts`, then Kafka
/// timestamp, then topic rank.
type OrderKey = (Millis, i64, usize);

/// How long a task waits for one of its partitions before its full
/// partitions are paused.
pub const PAUSE_AFTER: Duration = Duration::from_secs(1);

/// How long a task may wait for a partition before the wait is reported
/// (and again every so long while it lasts): a leader that stays away holds
/// the task, and the operator needs to know which partition.
pub const REPORT_WAIT_EVERY: Duration = Duration::from_secs(60);

struct Queued {
    key: OrderKey,
    record: InRecord,
}

/// One input partition's buffered records.
struct RecordQueue {
    records: VecDeque<Queued>,
    /// `ts` of the last record buffered: a record whose `ts` cannot be
    /// read (it will be rejected) keeps its place behind it.
    last_ts: Millis,
    /// Offset of the last record buffered, to ignore a stale redelivery.
    last_offset: i64,
    /// librdkafka reported the end of the partition after the last record
    /// buffered: nothing more is there to fetch right now.
    caught_up: bool,
    /// When the queue last became empty (for `max_task_idle_ms`).
    empty_since: Instant,
    /// Paused in the consumer because the queue is full.
    paused: bool,
}

impl RecordQueue {
    fn new(now: Instant) -> Self {
        RecordQueue {
            records: VecDeque::new(),
            last_ts: Millis::MIN,
            last_offset: -1,
            caught_up: false,
            empty_since: now,
            paused: false,
        }
    }
}

/// What taking a task's next record gave.
pub struct Taken {
    /// The record, next in event-time order.
    pub record: InRecord,
    /// Whether a partition of the task was skipped (empty but caught up).
    pub enforced: bool,
    /// A paused partition that has drained enough to be resumed.
    pub resume: Option<RankedPartition>,
}

/// One task's partitions.
#[derive(Default)]
struct TaskQueues {
    /// Topic rank -> queue.
    queues: BTreeMap<usize, RecordQueue>,
    /// Since when the task has been waiting for one of its partitions.
    waiting_since: Option<Instant>,
    /// When the current wait was last reported.
    reported: Option<Instant>,
}

/// The per-partition queues of every owned task.
pub struct PartitionGroups {
    /// Task (partition number) -> its queues.
    tasks: BTreeMap<i32, TaskQueues>,
    /// Records a partition buffers before it is paused.
    capacity: usize,
    /// How long a caught-up, empty partition is waited for.
    idle: Duration,
}

impl PartitionGroups {
    /// Queues holding up to `capacity` records per partition; a caught-up
    /// empty partition is waited for `idle`.
    pub fn new(capacity: usize, idle: Duration) -> Self {
        PartitionGroups {
            tasks: BTreeMap::new(),
            capacity: capacity.max(1),
            idle,
        }
    }

    /// Starts buffering `tp` (nothing known about it yet: not caught up).
    pub fn add(&mut self, tp: RankedPartition, now: Instant) {
        self.tasks
            .entry(tp.1)
            .or_default()
            .queues
            .entry(tp.0)
            .or_insert_with(|| RecordQueue::new(now));
    }

    /// Keeps only the partitions `keep` accepts, dropping the others'
    /// buffered records (revoked: their new owner re-reads them from the
    /// committed offsets).
    pub fn retain(&mut self, mut keep: impl FnMut(RankedPartition) -> bool) {
        for (&task, t) in self.tasks.iter_mut() {
            t.queues.retain(|&rank, _| keep((rank, task)));
        }
        self.tasks.retain(|_, t| !t.queues.is_empty());
    }

    /// Drops every buffered record and what is known about partition ends
    /// (after a rewind to the committed offsets: the records are read
    /// again, and librdkafka reports the ends again).
    pub fn reset(&mut self, now: Instant) {
        for t in self.tasks.values_mut() {
            t.waiting_since = None;
            for queue in t.queues.values_mut() {
                *queue = RecordQueue::new(now);
            }
        }
    }

    fn queue(&mut self, tp: RankedPartition) -> Option<&mut RecordQueue> {
        self.tasks.get_mut(&tp.1)?.queues.get_mut(&tp.0)
    }

    /// Whether `tp` is buffered here and has room for another record.
    pub fn has_room(&self, tp: RankedPartition) -> bool {
        self.tasks
            .get(&tp.1)
            .and_then(|t| t.queues.get(&tp.0))
            .is_some_and(|q| q.records.len() < self.capacity)
    }

    /// Buffers a fetched record of `tp`; false when `tp` is not buffered
    /// here (not owned any more) or the record is older than the last one
    /// buffered (a stale redelivery).
    pub fn push(&mut self, tp: RankedPartition, record: InRecord) -> bool {
        let Some(q) = self.queue(tp) else {
            return false;
        };
        if record.offset <= q.last_offset {
            return false;
        }
        let ts = peek_ts(&record.payload).unwrap_or(q.last_ts);
        q.last_ts = ts;
        q.last_offset = record.offset;
        q.caught_up = false;
        let key = (ts, record.timestamp.unwrap_or(i64::MIN), tp.0);
        q.records.push_back(Queued { key, record });
        true
    }

    /// librdkafka reached the end of `tp`: every record before it was
    /// pushed.
    pub fn caught_up(&mut self, tp: RankedPartition) {
        if let Some(q) = self.queue(tp) {
            q.caught_up = true;
        }
    }

    /// Owned tasks, in order.
    pub fn task_ids(&self) -> Vec<i32> {
        self.tasks.keys().copied().collect()
    }

    fn all_queues(&self) -> impl Iterator<Item = &RecordQueue> {
        self.tasks.values().flat_map(|t| t.queues.values())
    }

    /// Whether nothing is buffered anywhere.
    pub fn is_empty(&self) -> bool {
        self.all_queues().all(|q| q.records.is_empty())
    }

    /// Records buffered in all queues.
    pub fn buffered(&self) -> usize {
        self.all_queues().map(|q| q.records.len()).sum()
    }

    /// The next record of `task` in event-time order, or `None` while the
    /// task must wait: one of its partitions is empty and either not
    /// caught up, or caught up for less than the idle time.
    #[cfg(test)]
    pub fn next(&mut self, task: i32, now: Instant) -> Option<Taken> {
        self.next_if(task, now, |_| true)
    }

    /// [`Self::next`], taken only if `admit` accepts its event time (the
    /// month-close gate of percentile tiers); refused, it stays the head.
    pub fn next_if(
        &mut self,
        task: i32,
        now: Instant,
        admit: impl FnOnce(Millis) -> bool,
    ) -> Option<Taken> {
        let t = self.tasks.get_mut(&task)?;
        let mut best: Option<(OrderKey, usize)> = None;
        let mut enforced = false;
        for (&rank, q) in t.queues.iter() {
            match q.records.front() {
                Some(head) => {
                    if best.is_none_or(|(key, _)| head.key < key) {
                        best = Some((head.key, rank));
                    }
                }
                None if q.caught_up && now.duration_since(q.empty_since) >= self.idle => {
                    enforced = true;
                }
                None => {
                    t.waiting_since.get_or_insert(now);
                    return None;
                }
            }
        }
        let (key, rank) = best?;
        t.waiting_since = None;
        if !admit(key.0) {
            return None;
        }
        t.reported = None;
        let q = t.queues.get_mut(&rank).expect("the best queue exists");
        let record = q
            .records
            .pop_front()
            .expect("the best queue has a head")
            .record;
        if q.records.is_empty() {
            q.empty_since = now;
        }
        let resume = (q.paused && q.records.len() <= self.capacity / 2).then(|| {
            q.paused = false;
            (rank, task)
        });
        Some(Taken {
            record,
            enforced,
            resume,
        })
    }

    /// When `task` has been waiting for [`REPORT_WAIT_EVERY`] since it was
    /// last reported: how long, and the topic ranks of the empty partitions
    /// it waits for (not caught up). Marks the wait reported.
    pub fn long_wait(&mut self, task: i32, now: Instant) -> Option<(Duration, Vec<usize>)> {
        let t = self.tasks.get_mut(&task)?;
        let since = t.waiting_since?;
        let last = t.reported.unwrap_or(since);
        if now.duration_since(last) < REPORT_WAIT_EVERY {
            return None;
        }
        t.reported = Some(now);
        let waiting_for = t
            .queues
            .iter()
            .filter(|(_, q)| q.records.is_empty() && !q.caught_up)
            .map(|(&rank, _)| rank)
            .collect();
        Some((now.duration_since(since), waiting_for))
    }

    /// The full partitions of a `task` that has waited for another one for
    /// [`PAUSE_AFTER`], to pause: they can take no more records until the
    /// partition the task waits for delivers, and paused they stop
    /// competing with it for fetch bandwidth. Marked paused here;
    /// [`next`](Self::next) names them again once drained.
    pub fn take_full_to_pause(&mut self, task: i32, now: Instant) -> Vec<RankedPartition> {
        let capacity = self.capacity;
        let Some(t) = self.tasks.get_mut(&task) else {
            return Vec::new();
        };
        if t.waiting_since
            .is_none_or(|since| now.duration_since(since) < PAUSE_AFTER)
        {
            return Vec::new();
        }
        t.queues
            .iter_mut()
            .filter(|(_, q)| !q.paused && q.records.len() >= capacity)
            .map(|(&rank, q)| {
                q.paused = true;
                (rank, task)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(offset: i64, ts: Option<i64>, kafka_ts: i64) -> InRecord {
        let payload = match ts {
            Some(ts) => format!(r#"{{"event_id":"e{offset}","ts":{ts}}}"#),
            None => "not json".to_owned(),
        };
        InRecord {
            topic: String::new(),
            partition: 0,
            offset,
            key: None,
            payload: payload.into_bytes(),
            timestamp: Some(kafka_ts),
        }
    }

    /// Drains task 0, naming records `rank:offset`.
    fn drain(g: &mut PartitionGroups, now: Instant) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(t) = g.next(0, now) {
            out.push(format!("{}", t.record.offset));
        }
        out
    }

    fn group(ranks: usize, capacity: usize) -> (PartitionGroups, Instant) {
        let now = Instant::now();
        let mut g = PartitionGroups::new(capacity, Duration::ZERO);
        for r in 0..ranks {
            g.add((r, 0), now);
        }
        (g, now)
    }

    #[test]
    fn smallest_event_time_first_each_partition_in_its_own_order() {
        let (mut g, now) = group(2, 100);
        g.push((0, 0), rec(1, Some(10), 0));
        g.push((0, 0), rec(2, Some(30), 0));
        g.push((0, 0), rec(3, Some(20), 0)); // late within its partition: stays after 30
        g.push((1, 0), rec(11, Some(15), 0));
        g.push((1, 0), rec(12, None, 0)); // unreadable: keeps its place after 15
        g.push((1, 0), rec(13, Some(25), 0));
        g.caught_up((0, 0));
        g.caught_up((1, 0));
        assert_eq!(drain(&mut g, now), ["1", "11", "12", "13", "2", "3"]);
    }

    #[test]
    fn ties_go_by_kafka_timestamp_then_topic_rank() {
        let (mut g, now) = group(3, 100);
        g.push((2, 0), rec(21, Some(10), 5));
        g.push((1, 0), rec(11, Some(10), 7));
        g.push((0, 0), rec(1, Some(10), 7));
        for r in 0..3 {
            g.caught_up((r, 0));
        }
        assert_eq!(drain(&mut g, now), ["21", "1", "11"]);
    }

    #[test]
    fn a_task_waits_for_an_empty_partition_that_is_not_caught_up() {
        let (mut g, now) = group(2, 100);
        g.push((0, 0), rec(1, Some(50), 0));
        assert!(
            g.next(0, now).is_none(),
            "partition 1 may hold older records"
        );
        // The older record arrives: it goes first.
        g.push((1, 0), rec(11, Some(10), 0));
        let t = g.next(0, now).unwrap();
        assert_eq!(t.record.offset, 11);
        assert!(!t.enforced);
        // Partition 1 is empty again and not known to be at its end.
        assert!(g.next(0, now).is_none());
        g.caught_up((1, 0));
        let t = g.next(0, now).unwrap();
        assert_eq!(t.record.offset, 1);
        assert!(t.enforced, "taken while partition 1 was skipped");
    }

    #[test]
    fn a_positive_idle_time_waits_for_a_caught_up_partition() {
        let now = Instant::now();
        let mut g = PartitionGroups::new(100, Duration::from_millis(500));
        g.add((0, 0), now);
        g.add((1, 0), now);
        g.push((0, 0), rec(1, Some(50), 0));
        g.caught_up((1, 0));
        assert!(g.next(0, now + Duration::from_millis(100)).is_none());
        assert!(
            g.next(0, now + Duration::from_millis(600))
                .unwrap()
                .enforced
        );
    }

    #[test]
    fn a_long_wait_is_reported_once_a_minute_naming_the_partition() {
        let (mut g, now) = group(2, 100);
        g.push((0, 0), rec(1, Some(50), 0));
        assert!(g.next(0, now).is_none());
        assert!(g.long_wait(0, now + Duration::from_secs(30)).is_none());
        let later = now + REPORT_WAIT_EVERY;
        let (waited, ranks) = g.long_wait(0, later).unwrap();
        assert_eq!((waited, ranks), (REPORT_WAIT_EVERY, vec![1]));
        assert!(
            g.long_wait(0, later + Duration::from_secs(1)).is_none(),
            "once a minute"
        );
        assert!(g.long_wait(0, later + REPORT_WAIT_EVERY).is_some());
        g.caught_up((1, 0));
        assert!(g.next(0, later).is_some());
        assert!(
            g.long_wait(0, later + 3 * REPORT_WAIT_EVERY).is_none(),
            "not waiting"
        );
    }

    #[test]
    fn records_arriving_after_the_end_clear_it() {
        let (mut g, now) = group(2, 100);
        g.caught_up((1, 0));
        g.push((1, 0), rec(11, Some(5), 0));
        g.push((0, 0), rec(1, Some(50), 0));
        assert_eq!(g.next(0, now).unwrap().record.offset, 11);
        assert!(
            g.next(0, now).is_none(),
            "partition 1 delivered after its end"
        );
    }

    #[test]
    fn full_partitions_of_a_waiting_task_pause_and_resume_when_drained() {
        let (mut g, now) = group(2, 4);
        for o in 0..4 {
            assert!(g.has_room((0, 0)));
            g.push((0, 0), rec(o, Some(100 + o), 0));
        }
        assert!(!g.has_room((0, 0)));
        assert!(g.next(0, now).is_none());
        assert!(
            g.take_full_to_pause(0, now).is_empty(),
            "a brief wait pauses nothing"
        );
        let later = now + PAUSE_AFTER;
        assert!(g.next(0, later).is_none());
        assert_eq!(g.take_full_to_pause(0, later), [(0, 0)]);
        assert!(g.take_full_to_pause(0, later).is_empty(), "paused once");
        g.caught_up((1, 0));
        assert_eq!(g.next(0, now).unwrap().resume, None); // 3 left
        assert_eq!(g.next(0, now).unwrap().resume, Some((0, 0))); // 2 left
        assert_eq!(g.next(0, now).unwrap().resume, None);
    }

    #[test]
    fn stale_redeliveries_are_ignored_and_reset_forgets_everything() {
        let (mut g, now) = group(1, 10);
        assert!(g.push((0, 0), rec(5, Some(1), 0)));
        assert!(!g.push((0, 0), rec(5, Some(1), 0)));
        assert!(!g.push((0, 0), rec(3, Some(1), 0)));
        assert!(!g.push((1, 0), rec(6, Some(1), 0)), "not owned");
        g.caught_up((0, 0));
        g.reset(now);
        assert!(g.is_empty());
        assert!(
            g.next(0, now).is_none(),
            "the end is not known after a rewind"
        );
        assert!(
            g.push((0, 0), rec(5, Some(1), 0)),
            "re-read after the rewind"
        );
    }

    #[test]
    fn revoked_partitions_drop_their_records() {
        let (mut g, _) = group(2, 10);
        g.push((0, 0), rec(1, Some(1), 0));
        g.push((1, 0), rec(2, Some(1), 0));
        g.retain(|(rank, _)| rank == 1);
        assert_eq!(g.buffered(), 1);
        g.retain(|_| false);
        assert!(g.task_ids().is_empty());
    }
}
