//! Per-task numbers kept in the `Meta` family beside the state they
//! describe: stream time, the next input offset of each input topic, and
//! how far the changelog has been applied. Because they are written in the
//! same atomic batch as the state, the store always knows exactly which
//! point of the input and of the changelog it reflects — so an unclean
//! shutdown never forces a wipe, only a catch-up from the changelog.

use super::keys::meta_key;
use super::{Cf, KvStore, StoreError, TaskId, Write};
use crate::domain::ranking::Ranking;
use crate::domain::time::Millis;

/// Meta name of the task's stream time.
pub const STREAM_TIME: &str = "stream_time";
/// Meta name of the task's part in percentile tiers (its value summary and
/// the cut points in force).
pub const RANKING: &str = "ranking";
/// Meta name of the next changelog offset to apply (local only: it is a
/// position in the changelog itself, so it is never written to it).
pub const CHANGELOG_NEXT: &str = "changelog_next";

/// Meta name of the next offset to consume from `topic`.
pub fn input_offset_name(topic: &str) -> String {
    format!("offset/{topic}")
}

/// Reads the task's stream time (`None`: it has seen no event yet).
pub fn read_stream_time(store: &dyn KvStore, task: TaskId) -> Result<Option<Millis>, StoreError> {
    Ok(read_i64(store, task, STREAM_TIME)?.map(Millis::from_ms))
}

/// The write of the task's stream time.
pub fn write_stream_time(task: TaskId, at: Millis) -> Write {
    write_i64(task, STREAM_TIME, at.ms())
}

/// Reads a big-endian i64 meta entry of `task`.
pub fn read_i64(store: &dyn KvStore, task: TaskId, name: &str) -> Result<Option<i64>, StoreError> {
    match store.get(Cf::Meta, &meta_key(task, name))? {
        Some(bytes) => Ok(Some(i64::from_be_bytes(
            bytes
                .as_slice()
                .try_into()
                .map_err(|_| StoreError::Corrupt(format!("meta entry {name}")))?,
        ))),
        None => Ok(None),
    }
}

/// A write setting a big-endian i64 meta entry of `task`.
pub fn write_i64(task: TaskId, name: &str, value: i64) -> Write {
    Write {
        cf: Cf::Meta,
        key: meta_key(task, name),
        value: Some(value.to_be_bytes().to_vec()),
    }
}

/// Reads the task's percentile-tier state (the default when none was kept).
pub fn read_ranking(store: &dyn KvStore, task: TaskId) -> Result<Ranking, StoreError> {
    match store.get(Cf::Meta, &meta_key(task, RANKING))? {
        Some(bytes) => postcard::from_bytes(&bytes)
            .map_err(|e| StoreError::Corrupt(format!("meta entry {RANKING}: {e}"))),
        None => Ok(Ranking::default()),
    }
}

/// A write keeping the task's percentile-tier state.
pub fn write_ranking(task: TaskId, ranking: &Ranking) -> Write {
    Write {
        cf: Cf::Meta,
        key: meta_key(task, RANKING),
        value: Some(postcard::to_allocvec(ranking).expect("the ranking state serializes")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    #[test]
    fn numbers_round_trip_per_task() {
        let store = MemoryStore::new();
        store
            .write(vec![
                write_i64(TaskId::new(1), CHANGELOG_NEXT, 42),
                write_i64(TaskId::new(2), CHANGELOG_NEXT, -7),
            ])
            .unwrap();
        assert_eq!(
            read_i64(&store, TaskId::new(1), CHANGELOG_NEXT).unwrap(),
            Some(42)
        );
        assert_eq!(
            read_i64(&store, TaskId::new(2), CHANGELOG_NEXT).unwrap(),
            Some(-7)
        );
        assert_eq!(
            read_i64(&store, TaskId::new(3), CHANGELOG_NEXT).unwrap(),
            None
        );
        let name = input_offset_name("purchases");
        assert_eq!(read_i64(&store, TaskId::new(1), &name).unwrap(), None);
    }

    #[test]
    fn a_malformed_entry_is_reported_as_corrupt() {
        let store = MemoryStore::new();
        store
            .write(vec![Write {
                cf: Cf::Meta,
                key: meta_key(TaskId::new(1), STREAM_TIME),
                value: Some(vec![1, 2, 3]),
            }])
            .unwrap();
        assert!(matches!(
            read_i64(&store, TaskId::new(1), STREAM_TIME),
            Err(StoreError::Corrupt(_))
        ));
    }
}
