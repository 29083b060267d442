//! The run loop over in-memory fakes of its ports: a broker with input
//! logs, committed offsets, committed outputs and a changelog, whose
//! commits can be made to abort, to fail fatally before or after the
//! commit took effect (a fenced producer; an unknown outcome), and which
//! hands out rebalances in the middle of collecting a batch. Every faulty
//! run must commit exactly the outputs of a clean run — each customer's in
//! the same order, nothing lost, nothing twice. The real-broker tests
//! (`tests/exactly_once.rs`, `tests/alignment.rs`) cover what only librdkafka
//! can show; these cover the loop's own decisions, in milliseconds.

use super::align::PartitionGroups;
use super::batch::InRecord;
use super::ports::{
    Batch, CommitError, ConsumerFailed, Moves, Position, Restore, Sink, Source, TopicPartition,
};
use super::processor::Processor;
use super::{open_for, Pipeline, Runner};
use crate::config::{Config, DEFAULT_TOML};
use crate::domain::engine::Engine;
use crate::domain::time::Millis;
use crate::kafka::partitioner::partition_for;
use crate::ops::metrics::Metrics;
use crate::ops::status::Status;
use crate::store::checkpoint::{read_i64, write_i64, CHANGELOG_NEXT};
use crate::store::memory::MemoryStore;
use crate::store::{KvStore, TaskId, Write};
use crate::workload::generate::{generate, GenerateSpec};
use figment::providers::{Format, Toml};
use figment::Figment;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

const PARTITIONS: i32 = 3;

/// What a commit attempt does instead of succeeding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Aborted: nothing visible, the producer usable.
    Abort,
    /// Fenced before the commit: nothing visible, the producer unusable.
    FatalLost,
    /// The commit took effect but its outcome was lost (the producer then
    /// failed): outputs, offsets and changelog are visible, the local
    /// store was not written.
    FatalCommitted,
}

/// An input record on the fake broker: key, payload, Kafka timestamp.
type Stored = (Vec<u8>, Vec<u8>, i64);

/// A committed output: topic, key, payload.
type Committed = (String, Option<Vec<u8>>, Option<Vec<u8>>);

/// The fake broker every fake port shares.
#[derive(Default)]
struct Broker {
    topics: Vec<String>,
    /// Input records per partition.
    logs: BTreeMap<TopicPartition, Vec<Stored>>,
    committed: BTreeMap<TopicPartition, i64>,
    outputs: Vec<Committed>,
    changelog: BTreeMap<TaskId, Vec<Write>>,
    /// Fault of the n-th commit attempt.
    faults: BTreeMap<usize, Fault>,
    attempts: usize,
    rebuilds: usize,
    /// Moves handed out after the n-th refill of the last task: in the
    /// middle of taking records into a batch, after the other tasks' were
    /// taken (tasks are taken in order).
    moves_at_refill: BTreeMap<usize, Moves>,
    refills: usize,
    moves: Moves,
    // The consumer's view: fetch positions and paused partitions.
    positions: BTreeMap<TopicPartition, i64>,
    paused: BTreeSet<TopicPartition>,
    assigned: BTreeSet<TopicPartition>,
}

impl Broker {
    /// Hands out `moves` as librdkafka would: revoked partitions stop
    /// fetching, assigned ones start paused at their committed offset.
    fn hand_out(&mut self, moves: Moves) {
        for tp in &moves.revoked {
            self.assigned.remove(tp);
            self.positions.remove(tp);
        }
        for tp in &moves.assigned {
            self.assigned.insert(tp.clone());
            self.paused.insert(tp.clone());
            let at = self.committed.get(tp).copied().unwrap_or(0);
            self.positions.insert(tp.clone(), at);
        }
        self.moves.revoked.extend(moves.revoked);
        self.moves.assigned.extend(moves.assigned);
    }

    fn all_partitions(&self) -> Vec<TopicPartition> {
        self.logs.keys().cloned().collect()
    }
}

type Shared = Arc<Mutex<Broker>>;

struct FakeSource(Shared);
struct FakeSink(Shared);
struct FakeRestore(Shared);

impl Source for FakeSource {
    fn take_moves(&mut self) -> Moves {
        std::mem::take(&mut self.0.lock().unwrap().moves)
    }

    fn rebalance_pending(&self) -> bool {
        !self.0.lock().unwrap().moves.is_empty()
    }

    fn track(&mut self, owned: &BTreeSet<TopicPartition>, _assigned: bool) {
        assert_eq!(
            owned,
            &self.0.lock().unwrap().assigned,
            "the loop tracks exactly what the group assigned"
        );
    }

    fn serve(&mut self, _groups: &mut PartitionGroups) -> usize {
        0
    }

    fn fatal(&self) -> Option<ConsumerFailed> {
        None
    }

    fn fill(&mut self, groups: &mut PartitionGroups, task: Option<i32>) -> usize {
        let mut b = self.0.lock().unwrap();
        let last_task = task == Some(PARTITIONS - 1);
        b.refills += usize::from(last_task);
        let n = b.refills;
        let mut fetched = 0;
        let partitions: Vec<TopicPartition> = b.assigned.iter().cloned().collect();
        for tp in partitions {
            if b.paused.contains(&tp) || task.is_some_and(|t| t != tp.1) {
                continue;
            }
            let rank = b.topics.iter().position(|t| *t == tp.0).unwrap();
            let ranked = (rank, tp.1);
            let log = &b.logs[&tp];
            let mut at = b.positions[&tp];
            while groups.has_room(ranked) && (at as usize) < log.len() {
                let (key, payload, ts) = &log[at as usize];
                let record = InRecord {
                    topic: tp.0.clone(),
                    partition: tp.1,
                    offset: at,
                    key: Some(key.clone()),
                    payload: payload.clone(),
                    timestamp: Some(*ts),
                };
                fetched += usize::from(groups.push(ranked, record));
                at += 1;
            }
            if at as usize == log.len() {
                groups.caught_up(ranked);
            }
            b.positions.insert(tp, at);
        }
        if last_task {
            if let Some(moves) = b.moves_at_refill.remove(&n) {
                b.hand_out(moves);
            }
        }
        fetched
    }

    fn pause(&self, partitions: &[TopicPartition]) -> anyhow::Result<()> {
        self.0
            .lock()
            .unwrap()
            .paused
            .extend(partitions.iter().cloned());
        Ok(())
    }

    fn resume(&self, partitions: &[TopicPartition]) -> anyhow::Result<()> {
        let mut b = self.0.lock().unwrap();
        for tp in partitions {
            b.paused.remove(tp);
        }
        Ok(())
    }

    fn committed(
        &self,
        partitions: &[TopicPartition],
    ) -> anyhow::Result<Vec<(TopicPartition, Option<i64>)>> {
        let b = self.0.lock().unwrap();
        Ok(partitions
            .iter()
            .map(|tp| (tp.clone(), b.committed.get(tp).copied()))
            .collect())
    }

    fn seek(&self, to: &[(TopicPartition, Position)]) -> anyhow::Result<()> {
        let mut b = self.0.lock().unwrap();
        for (tp, position) in to {
            let at = match position {
                Position::Offset(o) => *o,
                Position::Beginning => 0,
                Position::End => b.logs[tp].len() as i64,
            };
            b.positions.insert(tp.clone(), at);
        }
        Ok(())
    }

    fn arm(&self) {}

    fn wait(&self, max: Duration) {
        std::thread::sleep(max.min(Duration::from_millis(1)));
    }
}

/// Makes a batch visible: outputs, offsets, changelog.
fn publish(b: &mut Broker, batch: &Batch) {
    for r in &batch.records {
        b.outputs
            .push((r.topic.clone(), r.key.clone(), r.payload.clone()));
    }
    for (tp, next) in &batch.offsets {
        b.committed.insert(tp.clone(), *next);
    }
    for (task, writes) in &batch.state {
        b.changelog
            .entry(*task)
            .or_default()
            .extend(writes.iter().cloned());
    }
}

impl Sink for FakeSink {
    fn commit(&mut self, store: &dyn KvStore, batch: Batch) -> Result<(), CommitError> {
        let mut b = self.0.lock().unwrap();
        b.attempts += 1;
        let n = b.attempts;
        match b.faults.remove(&n) {
            Some(Fault::Abort) => Err(CommitError::Aborted(anyhow::anyhow!("injected abort"))),
            Some(Fault::FatalLost) => Err(CommitError::Fatal(anyhow::anyhow!("injected fencing"))),
            Some(Fault::FatalCommitted) => {
                publish(&mut b, &batch);
                Err(CommitError::Fatal(anyhow::anyhow!(
                    "injected failure after the commit"
                )))
            }
            None => {
                publish(&mut b, &batch);
                let mut writes: Vec<Write> = Vec::new();
                for (task, w) in batch.state {
                    let next = b.changelog[&task].len() as i64;
                    writes.extend(w.iter().cloned());
                    writes.push(write_i64(task, CHANGELOG_NEXT, next));
                }
                store
                    .write(writes)
                    .map_err(|e| CommitError::Store(e.into()))
            }
        }
    }

    fn rebuild(&mut self) -> anyhow::Result<()> {
        self.0.lock().unwrap().rebuilds += 1;
        Ok(())
    }
}

impl Restore for FakeRestore {
    /// Applies each task's changelog from the store's position on.
    fn restore(
        &mut self,
        store: &dyn KvStore,
        tasks: &BTreeSet<TaskId>,
        keepalive: &mut dyn FnMut(),
    ) -> anyhow::Result<()> {
        keepalive();
        let b = self.0.lock().unwrap();
        for &task in tasks {
            let from = read_i64(store, task, CHANGELOG_NEXT)?.unwrap_or(0) as usize;
            let log = b.changelog.get(&task).map_or(&[][..], Vec::as_slice);
            let mut writes: Vec<Write> = log[from.min(log.len())..].to_vec();
            writes.push(write_i64(task, CHANGELOG_NEXT, log.len() as i64));
            store.write(writes)?;
        }
        Ok(())
    }
}

fn config() -> Config {
    config_with_threads(0)
}

fn config_with_threads(threads: usize) -> Config {
    // Small batches, so a run has many commits to break.
    let overrides = format!("[kafka]\nbatch_max_records = 100\ncommit_interval_ms = 5\nbuffered_records_per_partition = 16\nstream_threads = {threads}\n");
    Config::from_figment(Figment::from(Toml::string(DEFAULT_TOML)).merge(Toml::string(&overrides)))
        .unwrap()
}

/// A broker holding a generated workload on the input topics, each record
/// on its customer's partition of its type's topic.
fn broker(cfg: &Config) -> Broker {
    let topics = cfg.kafka.input_topics.clone();
    let workload = generate(&GenerateSpec {
        customers: 80,
        events: 4_000,
        seed: 11,
        start: Millis::from_ms(1_700_000_000_000),
        days: 120,
        ..GenerateSpec::default()
    });
    let mut b = Broker {
        topics: topics.clone(),
        ..Broker::default()
    };
    for t in &topics {
        for p in 0..PARTITIONS {
            b.logs.insert((t.clone(), p), Vec::new());
        }
    }
    for g in &workload.events {
        let topic = topics[g.topic_rank(topics.len())].clone();
        let p = partition_for(g.customer_id.as_bytes(), PARTITIONS as u32) as i32;
        let payload = serde_json::to_vec(&g.json).unwrap();
        b.logs.get_mut(&(topic, p)).unwrap().push((
            g.customer_id.clone().into_bytes(),
            payload,
            g.ts.ms(),
        ));
    }
    b
}

/// Runs the loop until the input is drained; returns the broker after.
fn run(b: Broker) -> Broker {
    run_with(b, config())
}

fn run_with(mut b: Broker, cfg: Config) -> Broker {
    let all = b.all_partitions();
    b.hand_out(Moves {
        revoked: vec![],
        assigned: all,
    });
    let shared: Shared = Arc::new(Mutex::new(b));
    let processor = Arc::new(Processor::new(
        Engine::new(cfg.policy()),
        cfg.decode_rules(),
        Metrics::new(),
    ));
    let store: Arc<dyn KvStore> = Arc::new(MemoryStore::new());
    let pipeline = Pipeline::new(cfg, processor, store, Arc::new(Status::default()))
        .stop_when_idle(Some(Duration::from_millis(30)));
    let (_stop_tx, stop) = watch::channel(false);
    let runner = Runner::new(
        pipeline,
        stop,
        FakeSource(shared.clone()),
        FakeSink(shared.clone()),
        FakeRestore(shared.clone()),
    );
    runner.run().unwrap();
    Arc::try_unwrap(shared).ok().unwrap().into_inner().unwrap()
}

/// Committed outputs per key, in commit order (a customer's outputs must
/// keep their order; customers of different tasks interleave by batch).
fn by_key(outputs: &[Committed]) -> BTreeMap<Option<Vec<u8>>, Vec<Committed>> {
    let mut m: BTreeMap<_, Vec<Committed>> = BTreeMap::new();
    for o in outputs {
        m.entry(o.1.clone()).or_default().push(o.clone());
    }
    m
}

/// A clean run's committed outputs, checked to be worth comparing with.
fn clean() -> Broker {
    let b = run(broker(&config()));
    assert!(b.attempts > 20, "only {} commits", b.attempts);
    assert!(b.outputs.len() > 100, "only {} outputs", b.outputs.len());
    let input: usize = b.logs.values().map(Vec::len).sum();
    let committed: i64 = b.committed.values().sum();
    assert_eq!(committed as usize, input, "every input record committed");
    b
}

/// Runs with `faults` and checks the result against a clean run.
fn assert_same_as_clean(faults: &[(usize, Fault)], moves: Vec<(usize, Moves)>) -> Broker {
    let reference = clean();
    let mut b = broker(&config());
    b.faults = faults.iter().copied().collect();
    b.moves_at_refill = moves.into_iter().collect();
    let after = run(b);
    assert!(after.faults.is_empty(), "every fault was hit");
    assert!(
        after.moves_at_refill.is_empty(),
        "every rebalance was handed out"
    );
    assert_eq!(after.committed, reference.committed);
    assert_eq!(
        after.outputs.len(),
        reference.outputs.len(),
        "as many outputs as a clean run"
    );
    assert_eq!(by_key(&after.outputs), by_key(&reference.outputs));
    after
}

#[test]
fn an_aborted_batch_is_rewound_and_committed_once() {
    let after = assert_same_as_clean(&[(3, Fault::Abort), (9, Fault::Abort)], vec![]);
    assert_eq!(after.rebuilds, 0, "an abort keeps the producer");
}

#[test]
fn a_fenced_producer_is_rebuilt_and_nothing_is_lost() {
    let after = assert_same_as_clean(&[(2, Fault::FatalLost)], vec![]);
    assert_eq!(after.rebuilds, 1);
}

#[test]
fn a_commit_whose_outcome_was_lost_is_restored_not_repeated() {
    // The batch is visible although the loop heard a failure: the restore
    // picks its state up from the changelog, the committed offsets skip
    // its input, and no output appears twice.
    let after = assert_same_as_clean(&[(4, Fault::FatalCommitted), (5, Fault::Abort)], vec![]);
    assert_eq!(after.rebuilds, 1);
}

#[test]
fn a_partition_revoked_mid_batch_drops_its_uncommitted_records() {
    let last: Vec<TopicPartition> = config()
        .kafka
        .input_topics
        .iter()
        .map(|t| (t.clone(), PARTITIONS - 1))
        .collect();
    // The last task is taken away while its records are being taken into
    // a batch and given back in the same rebalance (eager): its records in
    // the open batch and buffered must be re-read from the committed
    // offset.
    let revoke_and_reassign = || Moves {
        revoked: last.clone(),
        assigned: last.clone(),
    };
    assert_same_as_clean(
        &[],
        vec![(8, revoke_and_reassign()), (20, revoke_and_reassign())],
    );
}

#[test]
fn parallel_tasks_commit_the_outputs_of_one_thread_in_the_same_order() {
    let one = run_with(broker(&config()), config_with_threads(1));
    let three = run_with(broker(&config()), config_with_threads(3));
    assert!(one.outputs.len() > 100);
    assert_eq!(one.outputs, three.outputs, "output by output, in order");
    assert_eq!(one.committed, three.committed);
}

#[test]
fn a_batch_closes_an_interval_after_its_oldest_record_was_produced() {
    let interval = Duration::from_millis(100);
    let ms = Duration::from_millis;
    // Instants in ms: the oldest record's Kafka timestamp, the wall clock.
    let open = |oldest: Option<i64>, wall: i64| {
        open_for(oldest.map(Millis::from_ms), Millis::from_ms(wall), interval)
    };
    // A steady stream: what waited 30 ms already has 70 ms left.
    assert_eq!(open(Some(1_000), 1_030), ms(70));
    // Waited longer than the interval: the batch closes at once.
    assert_eq!(open(Some(1_000), 1_150), ms(0));
    // A backlog (ten intervals old and more) keeps the whole interval.
    assert_eq!(open(Some(1_000), 2_000), interval);
    // A producer clock ahead of ours, or no timestamp: the whole interval.
    assert_eq!(open(Some(1_000), 900), interval);
    assert_eq!(open(None, 900), interval);
}
