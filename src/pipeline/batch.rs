//! One batch through the engine: records in the order they were taken, routed to the
//! task of their partition number; out come the outputs and dead letters
//! to produce, the state writes of every touched task, and the input
//! offsets to commit. Nothing here talks to Kafka: the batch is committed
//! (or thrown away) by the sink.

use crate::config::KafkaConfig;
use crate::domain::output::Output;
use crate::domain::time::Millis;
use crate::kafka::records::{dlq_record, output_record, OutRecord, Source};
use crate::kafka::summaries::{self, TaskSummary};
use crate::pipeline::month_gate::Step;
use crate::pipeline::ports::Batch;
use crate::pipeline::processor::{CutPointsOf, Processed, Processor, RawRecord};
use crate::store::checkpoint::{input_offset_name, write_i64};
use crate::store::session::TaskState;
use crate::store::{KvStore, TaskId};
use rdkafka::message::{BorrowedMessage, Message};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

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

/// The month-close part of a batch under percentile tiers: the cut points
/// known so far, and what held tasks do before their records.
pub struct MonthSteps<'a> {
    /// Cut points of the month closes whose summaries are all in.
    pub cuts: CutPointsOf<'a>,
    /// Steps of held tasks, run before the records.
    pub steps: Vec<(TaskId, Step)>,
    /// The summaries topic.
    pub topic: &'a str,
}

/// What every record and step of a batch runs with.
#[derive(Clone, Copy)]
pub struct BatchContext<'a> {
    /// Topics and threads.
    pub cfg: &'a KafkaConfig,
    /// The engine.
    pub processor: &'a Processor,
    /// The state store read through.
    pub store: &'a dyn KvStore,
    /// The wall clock for the timestamp range check.
    pub now: Millis,
}

/// Runs a held task's step; returns its records to produce.
fn run_step(
    cx: BatchContext<'_>,
    months: &MonthSteps<'_>,
    (id, step): (TaskId, Step),
    task: &mut TaskState,
    outs: &mut Vec<Output>,
) -> anyhow::Result<Vec<OutRecord>> {
    outs.clear();
    match step {
        Step::Publish(month) => {
            task.ranking.published = Some(month);
            let s = TaskSummary {
                task: u32::try_from(id.partition())?,
                month,
                summary: task.ranking.pending.clone(),
            };
            tracing::debug!(task = %id, month = month.ms(), "publishing the month's tier summary");
            Ok(vec![summaries::record(months.topic, &s)])
        }
        Step::Close(month) => {
            if !cx
                .processor
                .close_month(task, cx.store, month, months.cuts, outs)?
            {
                anyhow::bail!(
                    "task {id}: the month close at {month} was stepped into without its cut points"
                );
            }
            Ok(outs.iter().map(|o| output_record(cx.cfg, o)).collect())
        }
    }
}

/// Runs the engine over `records` (after the held tasks' month-close
/// steps), the tasks of the batch on up to `threads` threads (a task's
/// records stay on one, in order). The records to produce come out in the
/// order of the input records, whatever the threads.
pub fn process(
    cx: BatchContext<'_>,
    tasks: &mut HashMap<TaskId, TaskState>,
    records: &[InRecord],
    threads: usize,
    months: Option<&MonthSteps<'_>>,
) -> anyhow::Result<Batch> {
    let store = cx.store;
    let mut batch = Batch::default();
    let mut stepped = Vec::new();
    if let Some(m) = months {
        let mut outs = Vec::new();
        for &(id, step) in &m.steps {
            let Some(task) = tasks.get_mut(&id) else {
                continue;
            };
            let produced = run_step(cx, m, (id, step), task, &mut outs)?;
            batch.records.extend(produced);
            stepped.push(id);
        }
    }
    let cuts = months.map(|m| m.cuts);
    // Each task's records, by index into `records`.
    let mut by_task: BTreeMap<TaskId, Vec<usize>> = BTreeMap::new();
    for (i, r) in records.iter().enumerate() {
        let task = TaskId::of_partition(r.partition);
        by_task.entry(task).or_default().push(i);
        batch
            .offsets
            .insert((r.topic.clone(), r.partition), r.offset + 1);
    }
    for &task in by_task.keys() {
        if let std::collections::hash_map::Entry::Vacant(e) = tasks.entry(task) {
            // Restore opens every task before its records are taken; one
            // opened here (uncached) is a task taken without a restore.
            e.insert(TaskState::open(task, store, 0)?);
        }
    }
    let lanes = threads.clamp(1, by_task.len().max(1));
    let mut work: Vec<Vec<(&mut TaskState, &[usize])>> = (0..lanes).map(|_| Vec::new()).collect();
    for (n, (id, state)) in tasks
        .iter_mut()
        .filter(|(id, _)| by_task.contains_key(id))
        .enumerate()
    {
        work[n % lanes].push((state, by_task[id].as_slice()));
    }
    let run = |lane: Vec<(&mut TaskState, &[usize])>| {
        let mut produced = Vec::new();
        let mut outs = Vec::new();
        for (task, indices) in lane {
            for &i in indices {
                let records = to_produce(cx, task, &records[i], &mut outs, cuts)?;
                produced.push((i, records));
            }
        }
        Ok::<_, anyhow::Error>(produced)
    };
    let mut produced: Vec<(usize, Vec<OutRecord>)> = if lanes == 1 {
        work.into_iter().map(run).next().unwrap_or(Ok(Vec::new()))?
    } else {
        std::thread::scope(|scope| {
            let handles: Vec<_> = work
                .into_iter()
                .map(|lane| scope.spawn(move || run(lane)))
                .collect();
            let mut all = Vec::new();
            for h in handles {
                all.extend(h.join().expect("a processing thread panicked")?);
            }
            Ok::<_, anyhow::Error>(all)
        })?
    };
    produced.sort_by_key(|(i, _)| *i);
    batch
        .records
        .extend(produced.into_iter().flat_map(|(_, r)| r));
    // The tasks touched are exactly those with input offsets to commit.
    let mut offsets_by_task: BTreeMap<TaskId, Vec<(&str, i64)>> =
        stepped.into_iter().map(|id| (id, Vec::new())).collect();
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
        // Sorted again, as `drain` leaves them, so the task can look keys
        // up in them while they land (a stable sort merges the few
        // appended in one pass).
        writes.sort_by(|a, b| (a.cf, &a.key).cmp(&(b.cf, &b.key)));
        batch.state.push((task_id, Arc::new(writes)));
    }
    Ok(batch)
}

/// One record through its task: the dead letter or the outputs to produce.
fn to_produce(
    cx: BatchContext<'_>,
    task: &mut TaskState,
    r: &InRecord,
    outs: &mut Vec<Output>,
    cuts: Option<CutPointsOf<'_>>,
) -> anyhow::Result<Vec<OutRecord>> {
    let BatchContext { cfg, .. } = cx;
    outs.clear();
    let mut produced = Vec::new();
    let record = RawRecord {
        bytes: &r.payload,
        key: r.key.as_deref(),
    };
    let processed = cx
        .processor
        .process_ranked(task, cx.store, record, cx.now, outs, cuts)?;
    if let Processed::Waiting(month) = processed {
        // The month gate takes a record only once its month close can run.
        anyhow::bail!(
            "task {}: a record was taken before the cut points of the month close at {month}",
            task.task
        );
    }
    if let Processed::Rejected(rej) = processed {
        tracing::debug!(code = rej.code.as_str(), topic = %r.topic, partition = r.partition, offset = r.offset, "rejected input");
        let src = Source {
            topic: &r.topic,
            partition: r.partition,
            offset: r.offset,
            key: r.key.as_deref(),
        };
        produced.push(dlq_record(&cfg.dlq_topic, &r.payload, &rej, &src));
    }
    produced.extend(outs.iter().map(|o| output_record(cfg, o)));
    Ok(produced)
}
