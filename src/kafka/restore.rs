//! Restoring tasks from the state changelog before they process anything.
//!
//! The local store knows, per task, the next changelog offset it has not
//! applied (written atomically with the state). A restore reads each
//! task's changelog partition from there to its end — with
//! `isolation.level=read_committed`, so aborted batches never come back —
//! applying records in large batches with the RocksDB WAL off, then
//! flushes once and records the new positions. A local store that is
//! missing entirely restores from the beginning; one that is current reads
//! nothing. A crash mid-restore loses nothing: positions are written only
//! after the flush, so the next restore redoes the same records (applying a
//! changelog prefix again is idempotent).

use crate::config::KafkaConfig;
use crate::kafka::{changelog, client_config, log_client_error, set_default};
use crate::ops::metrics::Metrics;
use crate::pipeline::ports::Restore;
use crate::store::checkpoint::{read_i64, write_i64, CHANGELOG_NEXT};
use crate::store::keys::index_entries;
use crate::store::{Cf, KvStore, StoreError, TaskId, Write};
use anyhow::{bail, Context, Result};
use indicatif::ProgressBar;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::ClientContext;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Records gathered for one unlogged RocksDB write, at most; a chunk also
/// ends at `CHUNK_BYTES` of keys and values. Large chunks are what make
/// `last_writes` pay: an uncompacted changelog holds a busy profile once
/// per batch that wrote it, and only its last version in a chunk is
/// written.
const CHUNK: usize = 250_000;
const CHUNK_BYTES: usize = 64 << 20;
/// How long the progress bar's size may take to learn.
const WATERMARK_TIMEOUT: Duration = Duration::from_secs(5);
/// A restore that makes no progress for this long has failed.
const STALL_TIMEOUT: Duration = Duration::from_secs(120);

/// The restore consumer's context: reaching the end of a partition is how a
/// restore knows it is done, not an error worth logging.
pub struct RestoreContext;

impl ClientContext for RestoreContext {
    fn error(&self, error: KafkaError, reason: &str) {
        log_client_error("restore consumer", &error, reason);
    }
}

impl ConsumerContext for RestoreContext {}

/// Reads changelog partitions into the local store.
pub struct Restorer {
    consumer: BaseConsumer<RestoreContext>,
    topic: String,
    metrics: Metrics,
    /// Records restored of those to restore (drawn only on a terminal).
    progress: ProgressBar,
}

impl Restorer {
    /// A restorer with its own (group-less, never committing) consumer.
    pub fn new(
        cfg: &KafkaConfig,
        topic: String,
        metrics: Metrics,
        progress: ProgressBar,
    ) -> Result<Self> {
        let mut c = client_config(cfg);
        c.set("group.id", format!("{}-restore", cfg.group_id))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("isolation.level", "read_committed")
            .set("auto.offset.reset", "earliest");
        // A restore that finds nothing new should take a round trip, not
        // the default half-second fetch wait per step.
        set_default(&mut c, "fetch.wait.max.ms", "20");
        set_default(&mut c, "fetch.max.bytes", "104857600");
        // A restore reads a few partitions from start to end as fast as it
        // can: large fetches per partition and a deep prefetch queue keep
        // the broker streaming while records are applied.
        set_default(&mut c, "max.partition.fetch.bytes", "16777216");
        set_default(&mut c, "queued.max.messages.kbytes", "65536");
        // A full prefetch queue postpones the next fetch by this long
        // (librdkafka's default is a second): a restore drains 100 000
        // records, the `queued.min.messages` default, in a fraction of that,
        // and with the default waited about 3 s of every 4 (1M records).
        set_default(&mut c, "fetch.queue.backoff.ms", "10");
        let consumer = c
            .create_with_context(RestoreContext)
            .context("creating the restore consumer")?;
        Ok(Restorer {
            consumer,
            topic,
            metrics,
            progress,
        })
    }

    /// Applies records until every partition reached its end, then makes
    /// them durable and records the positions.
    fn drain(
        &self,
        store: &dyn KvStore,
        tasks: &BTreeSet<TaskId>,
        keepalive: &mut dyn FnMut(),
    ) -> Result<u64> {
        let mut at_end: BTreeSet<TaskId> = BTreeSet::new();
        let mut chunk: Vec<Write> = Vec::new();
        let mut chunk_bytes = 0;
        let mut records = 0u64;
        // Progress is looked at when a poll comes back empty, not per
        // record: reading the clock per record (and the progress bar's
        // `inc`, which reads it too) was 2.8% of a restore's CPU.
        let (mut last_progress, mut records_then) = (Instant::now(), 0);
        while at_end.len() < tasks.len() {
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    let write = changelog::decode(m.key().unwrap_or_default(), m.payload())
                        .with_context(|| {
                            format!(
                                "changelog record {}/{} at offset {}",
                                self.topic,
                                m.partition(),
                                m.offset()
                            )
                        })?;
                    chunk_bytes += write.bytes();
                    chunk.push(write);
                    records += 1;
                    if chunk.len() >= CHUNK || chunk_bytes >= CHUNK_BYTES {
                        self.apply(store, &mut chunk)?;
                        chunk_bytes = 0;
                        keepalive();
                    }
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    at_end.insert(TaskId::of_partition(p));
                    last_progress = Instant::now();
                }
                Some(Err(e)) => tracing::warn!(error = %e, "changelog read error; retrying"),
                None => {
                    keepalive();
                    if records > records_then {
                        (last_progress, records_then) = (Instant::now(), records);
                    } else if last_progress.elapsed() > STALL_TIMEOUT {
                        bail!(
                            "restoring from {} made no progress for {STALL_TIMEOUT:?}",
                            self.topic
                        );
                    }
                }
            }
        }
        self.apply(store, &mut chunk)?;
        store.flush().context("flushing restored state")?;
        let positions = self.consumer.position()?;
        let marks: Vec<Write> = positions
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(next) => Some(write_i64(
                    TaskId::of_partition(e.partition()),
                    CHANGELOG_NEXT,
                    next,
                )),
                _ => None,
            })
            .collect();
        store
            .write(marks)
            .context("recording changelog positions")?;
        Ok(records)
    }

    /// Changelog records of `task` after `next` (an upper bound: aborted
    /// batches and transaction markers are counted too), for the progress
    /// bar; 0 when the broker does not say.
    fn remaining(&self, task: TaskId, next: Option<i64>) -> u64 {
        match self
            .consumer
            .fetch_watermarks(&self.topic, task.partition(), WATERMARK_TIMEOUT)
        {
            Ok((low, high)) => u64::try_from(high - next.unwrap_or(low).max(low)).unwrap_or(0),
            Err(_) => 0,
        }
    }

    fn apply(&self, store: &dyn KvStore, chunk: &mut Vec<Write>) -> Result<()> {
        let n = chunk.len() as u64;
        let writes =
            restored_writes(std::mem::take(chunk)).context("rebuilding the deadline index")?;
        store
            .write_unlogged(writes)
            .context("writing restored state")?;
        self.metrics.restored_records.inc_by(n);
        self.progress.inc(n);
        Ok(())
    }
}

/// What a chunk of changelog records leaves in the store: the last write
/// of each logged key, and the deadline-index entries of the profiles
/// among them (the index is not logged, see `changelog::is_logged`),
/// sorted by family and key. An entry a profile's older version put stays
/// behind; the engine drops such an entry when it comes due.
fn restored_writes(chunk: Vec<Write>) -> Result<Vec<Write>, StoreError> {
    let mut writes = last_writes(chunk);
    writes.retain(|w| changelog::is_logged(w.cf));
    let mut index = Vec::new();
    for w in &writes {
        if let (Cf::Profiles, Some(value)) = (w.cf, &w.value) {
            index.extend(index_entries(&w.key, value)?);
        }
    }
    index.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    // Families sort as profiles, the index, metadata.
    let at = writes.partition_point(|w| w.cf < Cf::Timers);
    writes.splice(at..at, index);
    Ok(writes)
}

/// The last write of each key in `chunk`, sorted by key: what the chunk
/// leaves in the store, applied in order. (RocksDB's memtable also inserts
/// a sorted batch faster: neighbouring inserts share their search path.)
fn last_writes(mut chunk: Vec<Write>) -> Vec<Write> {
    // Latest first, a stable sort keeps that order within a key, and
    // `dedup_by` keeps the first of each run.
    chunk.reverse();
    chunk.sort_by(|a, b| (a.cf, &a.key).cmp(&(b.cf, &b.key)));
    chunk.dedup_by(|later, kept| later.cf == kept.cf && later.key == kept.key);
    chunk
}

impl Restore for Restorer {
    /// Brings `tasks` up to the end of their changelog partitions.
    /// `keepalive` is called between chunks so the caller can keep serving
    /// its group consumer (a long restore must not look like a dead member).
    fn restore(
        &mut self,
        store: &dyn KvStore,
        tasks: &BTreeSet<TaskId>,
        keepalive: &mut dyn FnMut(),
    ) -> Result<()> {
        let started = Instant::now();
        let mut tpl = TopicPartitionList::new();
        let mut to_restore = 0;
        for &task in tasks {
            let next = read_i64(store, task, CHANGELOG_NEXT)?;
            let from = next.map_or(Offset::Beginning, Offset::Offset);
            tpl.add_partition_offset(&self.topic, task.partition(), from)?;
            if !self.progress.is_hidden() {
                to_restore += self.remaining(task, next);
            }
        }
        self.progress.reset();
        self.progress.set_length(to_restore);
        self.consumer
            .assign(&tpl)
            .context("assigning changelog partitions")?;
        let result = self.drain(store, tasks, keepalive);
        if let Err(e) = self.consumer.unassign() {
            tracing::warn!(error = %e, "could not unassign changelog partitions");
        }
        self.progress.finish_and_clear();
        let records = result?;
        let seconds = started.elapsed().as_secs_f64();
        tracing::info!(
            tasks = ?tasks,
            records,
            seconds = format!("{seconds:.2}"),
            records_per_second = format!("{:.0}", records as f64 / seconds.max(1e-3)),
            "restored state from the changelog"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::time::Millis;

    fn w(cf: Cf, key: &str, value: Option<&str>) -> Write {
        Write {
            cf,
            key: key.into(),
            value: value.map(Into::into),
        }
    }

    #[test]
    fn a_chunk_rebuilds_the_index_entries_of_its_profiles() {
        use crate::domain::output::TimerKind;
        use crate::domain::profile::{Profile, Timers};
        use crate::store::checkpoint::{write_i64, STREAM_TIME};
        use crate::store::keys::{encode_profile, profile_key, timer_key};
        let task = TaskId::new(3);
        let profile = |id: &str, daily: Option<i64>, month_close: Option<i64>| {
            let mut p = Profile::new(id);
            p.timers = Timers {
                month_close: month_close.map(Millis::from_ms),
                daily: daily.map(Millis::from_ms),
            };
            Write {
                cf: Cf::Profiles,
                key: profile_key(task, id),
                value: Some(encode_profile(&p)),
            }
        };
        let entry = |kind, at, id: &str| Write {
            cf: Cf::Timers,
            key: timer_key(task, kind, Millis::from_ms(at), id),
            value: Some(Vec::new()),
        };
        let chunk = vec![
            // An index record of an older changelog: skipped.
            entry(TimerKind::Daily, 5, "z"),
            profile("b", Some(20), None),
            profile("a", Some(10), Some(30)),
            // b's later version names another deadline; c is forgotten.
            profile("b", Some(40), None),
            profile("c", Some(50), None),
            Write {
                cf: Cf::Profiles,
                key: profile_key(task, "c"),
                value: None,
            },
            write_i64(task, STREAM_TIME, 7),
        ];
        let expected = vec![
            profile("a", Some(10), Some(30)),
            profile("b", Some(40), None),
            Write {
                cf: Cf::Profiles,
                key: profile_key(task, "c"),
                value: None,
            },
            entry(TimerKind::MonthClose, 30, "a"),
            entry(TimerKind::Daily, 10, "a"),
            entry(TimerKind::Daily, 40, "b"),
            write_i64(task, STREAM_TIME, 7),
        ];
        assert_eq!(restored_writes(chunk).unwrap(), expected);
        let damaged = Write {
            value: Some(vec![0xff]),
            ..profile("d", None, None)
        };
        assert!(restored_writes(vec![damaged]).is_err());
    }

    #[test]
    fn a_chunk_leaves_the_last_write_of_each_key_sorted() {
        let chunk = vec![
            w(Cf::Profiles, "b", Some("1")),
            w(Cf::Timers, "a", Some("")),
            w(Cf::Profiles, "a", Some("1")),
            w(Cf::Profiles, "b", Some("2")),
            w(Cf::Timers, "a", None),
            w(Cf::Profiles, "a", None),
            w(Cf::Profiles, "a", Some("3")),
        ];
        assert_eq!(
            last_writes(chunk),
            vec![
                w(Cf::Profiles, "a", Some("3")),
                w(Cf::Profiles, "b", Some("2")),
                w(Cf::Timers, "a", None),
            ]
        );
    }
}
