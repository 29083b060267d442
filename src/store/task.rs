//! The task id: the unit of state, of work and of restore.

use std::fmt;

/// A task: one partition number across the co-partitioned input topics,
/// and the same partition of the changelog. Kafka numbers partitions with
/// `i32`, state keys are prefixed with the task as a big-endian `u32`; the
/// conversion between the two lives here, once, instead of casts at every
/// boundary.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct TaskId(u32);

impl TaskId {
    /// The task of a Kafka partition number. Partitions handed out by a
    /// broker are never negative; a negative number (librdkafka's
    /// "unassigned" marker) is a programming error.
    pub fn of_partition(partition: i32) -> TaskId {
        TaskId(u32::try_from(partition).expect("a Kafka partition number is never negative"))
    }

    /// The task numbered `n` (of `0..partitions`).
    pub const fn new(n: u32) -> TaskId {
        TaskId(n)
    }

    /// The partition number of this task in every input topic and in the
    /// changelog.
    pub fn partition(self) -> i32 {
        i32::try_from(self.0).expect("a task id comes from a partition number")
    }

    /// The key prefix of the task's state.
    pub fn key_prefix(self) -> [u8; 4] {
        self.0.to_be_bytes()
    }

    /// The task whose state `key` belongs to (`None`: too short a key).
    pub fn of_key(key: &[u8]) -> Option<TaskId> {
        let prefix = key.get(..4)?.try_into().ok()?;
        Some(TaskId(u32::from_be_bytes(prefix)))
    }

    /// The first key prefix after the task's: the exclusive end of its
    /// key range. (A task id is at most `i32::MAX`, so `+ 1` fits.)
    pub fn key_prefix_end(self) -> [u8; 4] {
        (self.0 + 1).to_be_bytes()
    }

    /// Every task of `partitions` partitions, in order.
    pub fn all(partitions: u32) -> impl Iterator<Item = TaskId> {
        (0..partitions).map(TaskId)
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
