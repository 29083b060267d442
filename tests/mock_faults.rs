//! Faults the real broker cannot be told to produce on cue, injected with
//! librdkafka's in-process `MockCluster`: request errors on `EndTxn`,
//! `AddOffsetsToTxn` and `Produce`, a fenced producer, a broker going down
//! mid-commit, and the transaction coordinator moving. Each case drives
//! the transactional sink the way the run loop does — a failed batch is
//! committed again, after rebuilding the producer when the error says so —
//! and checks how each fault is classified (retried inside the commit,
//! aborted, or fatal with a producer rebuild), that local state is written
//! only for committed batches, that every batch finally commits (counted
//! transactions) and that its output reached the topic. Seconds per case,
//! no broker needed.
//!
//! What the mock cannot show: librdkafka 2.12's mock reports the last
//! stable offset as the end offset (aborted records stay visible to
//! `read_committed` readers) and does not store offsets sent with
//! `TxnOffsetCommit`. Exactly-once visibility and committed offsets are
//! therefore checked against the real broker (`tests/exactly_once.rs`,
//! SIGKILLs and a zombie, output by output).

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, OwnedHeaders};
use rdkafka::mocking::{MockCluster, MockCoordinator};
use rdkafka::producer::DefaultProducerContext;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tierstream::config::{Config, KafkaConfig, ProcessingGuarantee};
use tierstream::kafka::rebalance::RebalanceContext;
use tierstream::kafka::records::OutRecord;
use tierstream::kafka::sink::KafkaSink;
use tierstream::ops::metrics::Metrics;
use tierstream::ops::BrokerLink;
use tierstream::pipeline::ports::{Batch, CommitError, Sink};
use tierstream::store::checkpoint::{read_i64, write_i64};
use tierstream::store::memory::MemoryStore;
use tierstream::store::TaskId;
use tokio::sync::watch;

const INPUT: &str = "in";
const OUTPUT: &str = "out";
const CHANGELOG: &str = "state-changelog";
const TXN_ID: &str = "mock-tierstream-a";
/// The state key each batch writes (its number), to see which were saved.
const MARK: &str = "test.batch";

/// A mock cluster of three brokers, the sink (holding the group
/// consumer whose metadata its transactions commit with), a store.
struct Harness {
    mock: MockCluster<'static, DefaultProducerContext>,
    cfg: KafkaConfig,
    sink: KafkaSink,
    store: MemoryStore,
    metrics: Metrics,
    _stop: watch::Sender<bool>,
}

impl Harness {
    fn new() -> Self {
        let mock = MockCluster::new(3).unwrap();
        for t in [INPUT, OUTPUT, CHANGELOG] {
            mock.create_topic(t, 1, 3).unwrap();
        }
        let mut cfg = Config::defaults().kafka.clone();
        cfg.bootstrap_servers = mock.bootstrap_servers();
        cfg.group_id = "mock-group".into();
        cfg.input_topics = vec![INPUT.into()];
        cfg.tier_topic = OUTPUT.into();
        let (stop_tx, stop) = watch::channel(false);
        let metrics = Metrics::new();
        let sink_metrics = metrics.clone();
        let consumer: BaseConsumer<RebalanceContext> = ClientConfig::new()
            .set("bootstrap.servers", &cfg.bootstrap_servers)
            .set("group.id", &cfg.group_id)
            .set("enable.auto.commit", "false")
            .set("session.timeout.ms", "6000")
            .create_with_context(RebalanceContext::new(metrics, BrokerLink::default()))
            .unwrap();
        let consumer = Arc::new(consumer);
        consumer.subscribe(&[INPUT]).unwrap();
        // Join the group: the commit needs the consumer's group metadata.
        let deadline = Instant::now() + Duration::from_secs(20);
        while consumer.assignment().unwrap().count() == 0 {
            assert!(Instant::now() < deadline, "the mock group never assigned");
            consumer.poll(Duration::from_millis(100));
        }
        let sink = KafkaSink::new(
            &cfg,
            ProcessingGuarantee::ExactlyOnce,
            TXN_ID.into(),
            CHANGELOG.into(),
            sink_metrics.clone(),
            stop,
            consumer,
        )
        .unwrap();
        Harness {
            mock,
            cfg,
            sink,
            store: MemoryStore::new(),
            metrics: sink_metrics,
            _stop: stop_tx,
        }
    }

    /// Batch `n`: one output, one state write, input offset `n`.
    fn batch(&self, n: i64) -> Batch {
        let mut offsets = BTreeMap::new();
        offsets.insert((INPUT.to_owned(), 0), n);
        Batch {
            records: vec![OutRecord {
                topic: self.cfg.tier_topic.clone(),
                key: Some(b"c1".to_vec()),
                payload: Some(format!("batch-{n}").into_bytes()),
                headers: OwnedHeaders::new(),
            }],
            state: vec![(
                TaskId::new(0),
                vec![write_i64(TaskId::new(0), MARK, n)].into(),
            )],
            offsets,
        }
    }

    /// Commits batch `n` as the run loop would: a failed batch is built
    /// again and committed again, after a producer rebuild when the error
    /// is fatal; before each retry, nothing of the failed attempt may be
    /// visible or saved. Returns the outcomes of the attempts.
    /// `heal` runs after the first failed attempt (the fault goes away).
    fn commit_until_done(&mut self, n: i64, mut heal: Option<Heal>) -> Vec<&'static str> {
        let mut outcomes = Vec::new();
        for _ in 0..6 {
            match self.sink.commit(&self.store, self.batch(n)) {
                Ok(()) => {
                    outcomes.push("committed");
                    return outcomes;
                }
                Err(CommitError::Aborted(e)) => {
                    eprintln!("batch {n} aborted: {e:#}");
                    outcomes.push("aborted");
                }
                Err(CommitError::Fatal(e)) => {
                    eprintln!("batch {n}: producer failed: {e:#}");
                    outcomes.push("fatal");
                    // A new producer with the same transactional id fences
                    // the old one and aborts its open transaction.
                    let deadline = Instant::now() + Duration::from_secs(30);
                    while let Err(e) = self.sink.rebuild() {
                        assert!(Instant::now() < deadline, "no new producer: {e:#}");
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
                Err(CommitError::Store(e)) => panic!("the memory store failed: {e:#}"),
            }
            if let Some(heal) = heal.take() {
                heal(self);
            }
            assert_eq!(
                read_i64(&self.store, TaskId::new(0), MARK).unwrap(),
                (n > 1).then_some(n - 1),
                "a failed attempt of batch {n} saved its state"
            );
        }
        panic!("batch {n} never committed: {outcomes:?}");
    }

    /// Output payloads on the topic, in order (with the mock, aborted ones
    /// too: see the module comment).
    fn visible(&self) -> Vec<String> {
        let reader: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.cfg.bootstrap_servers)
            .set("group.id", "mock-reader")
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "true")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(OUTPUT, 0, Offset::Beginning)
            .unwrap();
        reader.assign(&tpl).unwrap();
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            assert!(
                Instant::now() < deadline,
                "the output partition never ended"
            );
            match reader.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => out.push(String::from_utf8_lossy(m.payload().unwrap()).into_owned()),
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => return out,
                _ => {}
            }
        }
    }

    /// Transactions counted by the sink, by result.
    fn transactions(&self, result: &str) -> u64 {
        self.metrics.transactions.with_label_values(&[result]).get()
    }

    /// Batch 1 commits cleanly, `fault` is injected, batch 2 is committed
    /// until done (`heal` runs after its first failed attempt), the faults
    /// are cleared and batch 3 commits: every batch is visible exactly
    /// once, the offsets and the state are batch 3's.
    fn run(
        mut self,
        name: &str,
        fault: impl FnOnce(&Self),
        heal: Option<Heal>,
    ) -> Vec<&'static str> {
        assert_eq!(self.commit_until_done(1, None), ["committed"]);
        fault(&self);
        let outcomes = self.commit_until_done(2, heal);
        for key in [
            RDKafkaApiKey::EndTxn,
            RDKafkaApiKey::AddOffsetsToTxn,
            RDKafkaApiKey::Produce,
        ] {
            self.mock.clear_request_errors(key);
        }
        self.commit_until_done(3, None);
        assert_eq!(
            self.transactions("committed"),
            3,
            "{name}: one commit per batch"
        );
        let aborted = outcomes.iter().filter(|o| **o == "aborted").count() as u64;
        assert!(
            self.transactions("aborted") >= aborted,
            "{name}: every aborted batch was aborted in Kafka"
        );
        let visible = self.visible();
        for n in 1..=3 {
            let b = format!("batch-{n}");
            assert!(visible.contains(&b), "{name}: {b} never reached the topic");
        }
        assert_eq!(
            read_i64(&self.store, TaskId::new(0), MARK).unwrap(),
            Some(3)
        );
        eprintln!("{name}: batch 2 {outcomes:?}");
        outcomes
    }
}

/// What makes an injected fault go away.
type Heal = Box<dyn FnOnce(&Harness)>;

fn errors(h: &Harness, key: RDKafkaApiKey, errs: &[RDKafkaRespErr]) {
    h.mock.request_errors(key, errs);
}

#[test]
fn end_txn_retriable_errors_are_retried_and_commit_once() {
    Harness::new().run(
        "EndTxn not coordinator",
        |h| {
            errors(
                h,
                RDKafkaApiKey::EndTxn,
                &[
                    RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_COORDINATOR,
                    RDKafkaRespErr::RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE,
                ],
            )
        },
        None,
    );
}

#[test]
fn a_fenced_producer_on_end_txn_is_rebuilt_and_the_batch_committed_once() {
    let outcomes = Harness::new().run(
        "EndTxn producer fenced",
        |h| {
            errors(
                h,
                RDKafkaApiKey::EndTxn,
                &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED],
            )
        },
        None,
    );
    assert_eq!(outcomes.first(), Some(&"fatal"), "fencing is fatal");
}

#[test]
fn add_offsets_to_txn_errors_abort_or_retry_and_commit_once() {
    Harness::new().run(
        "AddOffsetsToTxn",
        |h| {
            errors(
                h,
                RDKafkaApiKey::AddOffsetsToTxn,
                &[
                    RDKafkaRespErr::RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS,
                    RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_PRODUCER_EPOCH,
                ],
            )
        },
        None,
    );
}

#[test]
fn a_rejected_produce_aborts_the_batch_which_then_commits_once() {
    let outcomes = Harness::new().run(
        "Produce rejected",
        |h| {
            errors(
                h,
                RDKafkaApiKey::Produce,
                &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE; 4],
            )
        },
        None,
    );
    assert_ne!(outcomes, ["committed"], "a rejected record fails the batch");
}

/// The output partition's leader goes down: the batch's records cannot be
/// delivered within the transaction timeout, the batch fails, and once the
/// broker is back it commits — once.
#[test]
fn a_broker_down_during_a_commit_fails_the_batch_which_commits_once_it_is_back() {
    let heal: Heal = Box::new(|h: &Harness| h.mock.broker_up(1).unwrap());
    let outcomes = Harness::new().run(
        "broker down",
        |h| {
            h.mock
                .coordinator(MockCoordinator::Transaction(TXN_ID.into()), 2)
                .unwrap();
            h.mock.partition_leader(OUTPUT, 0, Some(1)).unwrap();
            h.mock.broker_down(1).unwrap();
        },
        Some(heal),
    );
    assert_ne!(
        outcomes,
        ["committed"],
        "nothing is delivered to a down leader"
    );
}

#[test]
fn the_transaction_coordinator_moving_between_batches_is_followed() {
    Harness::new().run(
        "coordinator moved",
        |h| {
            h.mock
                .coordinator(MockCoordinator::Transaction(TXN_ID.into()), 2)
                .unwrap();
            h.mock
                .coordinator(MockCoordinator::Group("mock-group".into()), 3)
                .unwrap();
        },
        None,
    );
}
