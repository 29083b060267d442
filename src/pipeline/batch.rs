//! One batch through the engine: records in the order they were taken, routed to the
//! task of their partition number; out come the outputs and dead letters
//! to produce, the state writes of every touched task, and the input
//! offsets to commit. Nothing here talks to Kafka: the batch is committed
//! (or thrown away) by the sink.

use crate::config::KafkaConfig;
use crate::domain::output::Output;
use crate::domain::time::Millis;
use crate::kafka::records::{dlq_record, output_record, Source};
use crate::pipeline::ports::Batch;
use crate::pipeline::processor::{Processed, Processor};
use crate::store::checkpoint::{input_offset_name, write_i64};
use crate::store::session::TaskState;
use crate::store::{KvStore, StoreError, TaskId};
use rdkafka::message::{BorrowedMessage, Message};
use std::collections::{BTreeMap, HashMap};

/// One consumed record, copied out of librdkafka's buffer.
pub struct InRecord {
    /// Input topic.
    pub topic: String,
    /// Input partition (= task).
    pub partition: i32,
    /// Offset in the partition.
    pub offset: i64,
    /// Message key.
    pub key: Option<Vec<u8>>,
    /// Message value (empty when null: it is then rejected as invalid).
    pub payload: Vec<u8>,
    /// The record's Kafka timestamp (for the event-to-output latency).
    pub timestamp: Option<i64>,
}

impl InRecord {
    /// Copies a polled message.
    pub fn from_message(m: &BorrowedMessage<'_>) -> Self {
        InRecord {
            topic: m.topic().to_owned(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            timestamp: m.timestamp().to_millis(),
        }
    }
}

/// Runs the engine over `records`; `now` is the wall clock used for the
/// timestamp range check.
pub fn process(
    cfg: &KafkaConfig,
    processor: &Processor,
    store: &dyn KvStore,
    tasks: &mut HashMap<TaskId, TaskState>,
    records: &[InRecord],
    now: Millis,
) -> Result<Batch, StoreError> {
    let mut batch = Batch::default();
    let mut outs: Vec<Output> = Vec::new();
    for r in records {
        let task_id = TaskId::of_partition(r.partition);
        let task = match tasks.entry(task_id) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            // Restore opens every task before its records are taken; one
            // opened here (uncached) is a task taken without a restore.
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(TaskState::open(task_id, store, 0)?)
            }
        };
        outs.clear();
        if let Processed::Rejected(rej) =
            processor.process(task, store, &r.payload, now, &mut outs)?
        {
            tracing::debug!(code = rej.code.as_str(), topic = %r.topic, partition = r.partition, offset = r.offset, "rejected input");
            let src = Source {
                topic: &r.topic,
                partition: r.partition,
                offset: r.offset,
                key: r.key.as_deref(),
            };
            batch
                .records
                .push(dlq_record(&cfg.dlq_topic, &r.payload, &rej, &src));
        }
        batch
            .records
            .extend(outs.iter().map(|o| output_record(cfg, o)));
        batch
            .offsets
            .insert((r.topic.clone(), r.partition), r.offset + 1);
    }
    // The tasks touched are exactly those with input offsets to commit.
    let mut offsets_by_task: BTreeMap<TaskId, Vec<(&str, i64)>> = BTreeMap::new();
    for ((topic, partition), next) in &batch.offsets {
        offsets_by_task
            .entry(TaskId::of_partition(*partition))
            .or_default()
            .push((topic, *next));
    }
    for (task_id, offsets) in offsets_by_task {
        let mut writes = tasks
            .get_mut(&task_id)
            .expect("every touched task was opened above")
            .drain();
        // The input position travels with the state (and its changelog), so
        // a restored store can be checked against the committed offsets.
        for (topic, next) in offsets {
            writes.push(write_i64(task_id, &input_offset_name(topic), next));
        }
        batch.state.push((task_id, writes));
    }
    Ok(batch)
}
