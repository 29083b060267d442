//! What the run loop needs from the outside world, as three small traits:
//! where records come from ([`Source`]), where a processed batch goes
//! ([`Sink`]) and how a task's state is brought back ([`Restore`]).
//!
//! The Kafka adapters (`kafka::source`, `kafka::sink`, `kafka::restore`)
//! implement them for production; the loop's tests implement them with
//! in-memory fakes, so that rebalances, aborted and fatal commits and
//! fencing are exercised record by record in milliseconds. Nothing here
//! names a librdkafka type.

use super::align::PartitionGroups;
use crate::kafka::records::OutRecord;
use crate::kafka::summaries::TaskSummary;
use crate::store::{KvStore, TaskId, Write};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

/// The consumer failed for good.
#[derive(Debug, thiserror::Error)]
#[error("the consumer failed for good: {reason}")]
pub struct ConsumerFailed {
    /// Fenced as a static member: either another process joined with this
    /// instance's `group.instance.id`, or — after a broker restart or a
    /// coordinator stall — this consumer's own earlier rejoin did. Only the
    /// first deserves an exit; a fresh consumer tells them apart.
    pub fenced: bool,
    /// What happened and what to do.
    pub reason: String,
}

/// A partition of an input topic.
pub type TopicPartition = (String, i32);

/// Partition moves since the loop last looked.
#[derive(Debug, Default)]
pub struct Moves {
    /// Partitions taken away.
    pub revoked: Vec<TopicPartition>,
    /// Partitions given; they deliver nothing until resumed (after their
    /// task is restored).
    pub assigned: Vec<TopicPartition>,
}

impl Moves {
    /// Whether nothing moved.
    pub fn is_empty(&self) -> bool {
        self.revoked.is_empty() && self.assigned.is_empty()
    }
}

/// Where a rewound partition continues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// At this offset (the committed one).
    Offset(i64),
    /// At the start of the partition.
    Beginning,
    /// At its end (only new records).
    End,
}

/// The group consumer as the loop sees it.
pub trait Source {
    /// Rebalance moves recorded since the last call.
    fn take_moves(&mut self) -> Moves;
    /// Whether moves are waiting (checked often inside collection).
    fn rebalance_pending(&self) -> bool;
    /// Makes the fetch side match `owned` after moves (`assigned`: some
    /// were just given): partitions no longer owned stop delivering.
    fn track(&mut self, owned: &BTreeSet<TopicPartition>, assigned: bool);
    /// Serves the group (heartbeats, rebalance callbacks) without reading
    /// partition queues; a record that still arrives here is buffered.
    fn serve(&mut self, groups: &mut PartitionGroups) -> usize;
    /// An error the consumer cannot recover from, with what to do about
    /// it; the loop stops on it rather than logging it forever.
    fn fatal(&self) -> Option<ConsumerFailed>;
    /// Moves fetched records into their alignment queues as far as they
    /// have room (of every partition, or of one task's); notes partition
    /// ends. Returns how many records moved.
    fn fill(&mut self, groups: &mut PartitionGroups, task: Option<i32>) -> usize;
    /// Stops fetching these partitions (backpressure, rewind).
    fn pause(&self, partitions: &[TopicPartition]) -> anyhow::Result<()>;
    /// Fetches these partitions again.
    fn resume(&self, partitions: &[TopicPartition]) -> anyhow::Result<()>;
    /// The group's committed offset of each partition (`None`: nothing
    /// committed yet).
    fn committed(
        &self,
        partitions: &[TopicPartition],
    ) -> anyhow::Result<Vec<(TopicPartition, Option<i64>)>>;
    /// Moves each partition's fetch position.
    fn seek(&self, to: &[(TopicPartition, Position)]) -> anyhow::Result<()>;
    /// Forgets that anything arrived, so [`Source::wait`] blocks until
    /// something new does.
    fn arm(&self);
    /// Blocks until something arrives after the last [`Source::arm`], at
    /// most `max`.
    fn wait(&self, max: Duration);
    /// Tier summaries published since the last call (percentile tiers;
    /// a source without the summaries topic has none).
    fn summaries(&mut self) -> Vec<TaskSummary> {
        Vec::new()
    }
}

/// A processed batch, ready to commit.
#[derive(Debug, Default)]
pub struct Batch {
    /// Outputs and dead letters, in the order they were produced.
    pub records: Vec<OutRecord>,
    /// State writes per task (the changelog partition is the task), each
    /// sorted by family and key. Shared: the task reads them until they
    /// are in the store (`TaskState::land`).
    pub state: Vec<(TaskId, Arc<Vec<Write>>)>,
    /// Next input offset per (topic, partition).
    pub offsets: BTreeMap<TopicPartition, i64>,
}

/// Why a batch did not commit.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The batch is not visible to read_committed consumers (aborted, or
    /// never produced); the producer is still usable.
    #[error("batch aborted: {0:#}")]
    Aborted(anyhow::Error),
    /// The producer is unusable (fenced or a fatal error); whether the
    /// batch committed is unknown. Rebuild the producer and restore.
    #[error("producer failed: {0:#}")]
    Fatal(anyhow::Error),
    /// The batch committed but the local store could not be written; the
    /// changelog still has it, so a restart restores it.
    #[error("state store write failed after commit: {0:#}")]
    Store(anyhow::Error),
}

/// The output side: commits a batch's outputs, changelog and input
/// offsets together, then its state to the local store. `Send`: a batch's
/// commit runs on its own thread while the next batch is processed.
pub trait Sink: Send {
    /// Commits `batch`, then writes its state to `store`.
    fn commit(&mut self, store: &dyn KvStore, batch: Batch) -> Result<(), CommitError>;
    /// Replaces an unusable producer (after [`CommitError::Fatal`]).
    fn rebuild(&mut self) -> anyhow::Result<()>;
}

/// Brings tasks' local state up to the end of their changelog.
pub trait Restore {
    /// Restores `tasks` into `store`; `keepalive` is called between chunks
    /// so the caller keeps serving its group.
    fn restore(
        &mut self,
        store: &dyn KvStore,
        tasks: &BTreeSet<TaskId>,
        keepalive: &mut dyn FnMut(),
    ) -> anyhow::Result<()>;
}
