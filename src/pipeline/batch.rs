//! One batch through the engine: records in arrival order, routed to the
//! task of their partition number; out come the outputs and dead letters
//! to produce, the state writes of every touched task, and the input
//! offsets to commit. Nothing here talks to Kafka: the batch is committed
//! (or thrown away) by the sink.

use super::sink::Batch;
use crate::codec::input::peek_ts;
use crate::config::KafkaConfig;
use crate::domain::output::Output;
use crate::domain::time::Millis;
use crate::kafka::records::{dlq_record, output_record, Source};
use crate::processor::{Processed, Processor};
use crate::store::checkpoint::{input_offset_name, write_i64};
use crate::store::session::TaskState;
use crate::store::{KvStore, StoreError};
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

/// Interleaves records from several partitions (one task reads the same
/// partition number of every input topic) in event-time order, keeping
/// each partition's own order: a k-way merge on (event `ts`, Kafka
/// timestamp, partition of arrival). A batch fetched from a backlog holds
/// each topic's records in blocks; processing them in that order would
/// apply, say, all of a customer's purchases before the complaint between
/// them, and differ from `replay` (SPEC §7) for input that was in order.
/// Records without a readable `ts` (they will be rejected) keep their place
/// behind their partition's previous record.
pub fn in_time_order(records: Vec<InRecord>) -> Vec<InRecord> {
    use std::cmp::Reverse;
    use std::collections::{BinaryHeap, VecDeque};
    let mut queues: Vec<VecDeque<(i64, InRecord)>> = Vec::new();
    let mut index: HashMap<(String, i32), usize> = HashMap::new();
    for r in records {
        let q = *index
            .entry((r.topic.clone(), r.partition))
            .or_insert_with(|| {
                queues.push(VecDeque::new());
                queues.len() - 1
            });
        let previous = queues[q].back().map_or(i64::MIN, |(key, _)| *key);
        let key = peek_ts(&r.payload).unwrap_or(previous);
        queues[q].push_back((key, r));
    }
    let total = queues.iter().map(VecDeque::len).sum();
    let head = |q: &VecDeque<(i64, InRecord)>, i: usize| {
        q.front()
            .map(|(key, r)| Reverse((*key, r.timestamp.unwrap_or(i64::MIN), i)))
    };
    let mut heap: BinaryHeap<_> = queues
        .iter()
        .enumerate()
        .filter_map(|(i, q)| head(q, i))
        .collect();
    let mut out = Vec::with_capacity(total);
    while let Some(Reverse((_, _, i))) = heap.pop() {
        let (_, r) = queues[i]
            .pop_front()
            .expect("a queue in the heap has a head");
        out.push(r);
        if let Some(h) = head(&queues[i], i) {
            heap.push(h);
        }
    }
    out
}

/// Runs the engine over `records`; `now` is the wall clock used for the
/// timestamp range check.
pub fn process(
    cfg: &KafkaConfig,
    processor: &Processor,
    store: &dyn KvStore,
    tasks: &mut HashMap<u32, TaskState>,
    records: &[InRecord],
    now: Millis,
) -> Result<Batch, StoreError> {
    let mut batch = Batch::default();
    let mut outs: Vec<Output> = Vec::new();
    for r in records {
        let task_id = r.partition as u32;
        let task = match tasks.entry(task_id) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(TaskState::open(task_id, store)?)
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
    let mut offsets_by_task: BTreeMap<u32, Vec<(&str, i64)>> = BTreeMap::new();
    for ((topic, partition), next) in &batch.offsets {
        offsets_by_task
            .entry(*partition as u32)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(topic: &str, partition: i32, offset: i64, ts: Option<i64>) -> InRecord {
        let payload = match ts {
            Some(ts) => format!(r#"{{"event_id":"{topic}{offset}","ts":{ts}}}"#),
            None => "not json".to_owned(),
        };
        InRecord {
            topic: topic.into(),
            partition,
            offset,
            key: None,
            payload: payload.into_bytes(),
            timestamp: Some(0),
        }
    }

    fn order(records: Vec<InRecord>) -> Vec<String> {
        in_time_order(records)
            .iter()
            .map(|r| format!("{}{}", r.topic, r.offset))
            .collect()
    }

    #[test]
    fn topics_interleave_by_event_time_and_partitions_keep_their_order() {
        let batch = vec![
            rec("p", 0, 1, Some(10)),
            rec("p", 0, 2, Some(30)),
            rec("p", 0, 3, Some(20)), // late within its partition: stays after 30
            rec("c", 0, 1, Some(15)),
            rec("c", 0, 2, None), // unreadable: keeps its place after c1
            rec("c", 0, 3, Some(25)),
        ];
        assert_eq!(order(batch), ["p1", "c1", "c2", "c3", "p2", "p3"]);
    }

    #[test]
    fn one_partition_is_left_as_it_came() {
        let batch = vec![rec("p", 0, 1, Some(30)), rec("p", 0, 2, Some(10))];
        assert_eq!(order(batch), ["p1", "p2"]);
    }
}
