//! Committing a processed batch: its outputs, its state changelog and its
//! input offsets, under the configured guarantee — and only then its state
//! in the local store.
//!
//! * `exactly_once`: one Kafka transaction per batch (outputs, dead
//!   letters, changelog records, and the input offsets through
//!   `send_offsets_to_transaction` with the consumer's group metadata, so
//!   a fenced zombie cannot commit). RocksDB is written after the commit
//!   succeeds, in one atomic batch with the changelog position; after a
//!   crash the store is at the committed point or behind it, and the
//!   changelog fills the gap.
//! * `at_least_once`: outputs are acknowledged, then the changelog, then
//!   the store is written and the input offsets committed. A crash repeats
//!   at most the uncommitted batch's outputs.

use crate::config::{KafkaConfig, ProcessingGuarantee};
use crate::kafka::rebalance::RebalanceContext;
use crate::kafka::records::OutRecord;
use crate::kafka::{any_broker_up, changelog, client_config, log_client_error, set_default};
use crate::ops::metrics::Metrics;
use crate::ops::status::BrokerLink;
use crate::pipeline::ports::{Batch, CommitError, Sink, TopicPartition};
use crate::store::checkpoint::{write_i64, CHANGELOG_NEXT};
use crate::store::{KvStore, TaskId, Write};
use anyhow::{anyhow, Context};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Timeout of each transactional call (they block).
const TXN_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Calls of `commit_transaction` after a retriable error before the
/// outcome counts as unknown (the producer is rebuilt and every task
/// restored, which settles it either way).
const COMMIT_ATTEMPTS: u32 = 5;

/// The producer's context: logs client errors and reports broker
/// reachability from the producer's statistics (served by its own polling
/// thread, so they arrive while a transactional call blocks).
pub struct ProducerContext(BrokerLink);

impl ClientContext for ProducerContext {
    fn error(&self, error: KafkaError, reason: &str) {
        log_client_error("producer", &error, reason);
    }

    fn stats(&self, statistics: Statistics) {
        self.0.set(any_broker_up(&statistics));
    }
}

/// The producer side of the pipeline.
pub struct KafkaSink {
    cfg: KafkaConfig,
    guarantee: ProcessingGuarantee,
    transactional_id: String,
    changelog_topic: String,
    producer: FutureProducer<ProducerContext>,
    metrics: Metrics,
    /// The run's stop signal: a stop ends commit retries.
    stop: watch::Receiver<bool>,
    /// The group consumer: a transaction commits the input offsets with
    /// its group metadata, at-least-once commits them through it.
    consumer: Arc<BaseConsumer<RebalanceContext>>,
}

/// The id of this instance: `kafka.instance_id`, or host name + a hash of
/// the state directory. Its transactional id is `<group_id>-<instance_id>`:
/// a stable id lets a restarted instance fence its own previous incarnation
/// and abort its open transaction at once, instead of every reader of the
/// outputs waiting for the transaction to time out.
pub fn instance_id(cfg: &KafkaConfig, state_dir: &Path) -> String {
    if cfg.instance_id.is_empty() {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "localhost".into());
        let dir = std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
        let hash = xxhash_rust::xxh3::xxh3_64(dir.to_string_lossy().as_bytes());
        format!("{host}-{:08x}", hash as u32)
    } else {
        cfg.instance_id.clone()
    }
}

/// Whether a transactional call failed in a way that leaves the producer
/// unusable (fencing, fatal errors).
fn is_fatal(e: &KafkaError) -> bool {
    match e {
        KafkaError::Transaction(t) => t.is_fatal(),
        _ => false,
    }
}

fn is_retriable(e: &KafkaError) -> bool {
    matches!(e, KafkaError::Transaction(t) if t.is_retriable())
}

impl KafkaSink {
    /// Creates the producer (and, for exactly-once, initialises its
    /// transactions, which fences any older producer with the same id).
    pub fn new(
        cfg: &KafkaConfig,
        guarantee: ProcessingGuarantee,
        transactional_id: String,
        changelog_topic: String,
        metrics: Metrics,
        stop: watch::Receiver<bool>,
        consumer: Arc<BaseConsumer<RebalanceContext>>,
    ) -> anyhow::Result<Self> {
        // The producer reports broker reachability where the consumer does.
        let link = consumer.context().broker_link();
        let producer = create_producer(cfg, guarantee, &transactional_id, link)?;
        Ok(KafkaSink {
            cfg: cfg.clone(),
            guarantee,
            transactional_id,
            changelog_topic,
            producer,
            metrics,
            stop,
            consumer,
        })
    }

    fn commit_transaction(&self, store: &dyn KvStore, batch: Batch) -> Result<(), CommitError> {
        let started = Instant::now();
        self.producer
            .begin_transaction()
            .map_err(|e| self.classify(e))?;
        let produced = self.produce_all(&batch).and_then(|(outputs, changelog)| {
            wait(outputs)?;
            wait_changelog(changelog)
        });
        let positions = match produced {
            Ok(p) => p,
            Err(e) => return Err(self.abort(e)),
        };
        let cgm = self
            .consumer
            .group_metadata()
            .ok_or_else(|| self.abort(anyhow!("the consumer has no group metadata")))?;
        let tpl = offsets_list(&batch.offsets).map_err(|e| self.abort(e))?;
        if let Err(e) = self
            .producer
            .send_offsets_to_transaction(&tpl, &cgm, TXN_CALL_TIMEOUT)
        {
            return Err(self.fail(e));
        }
        let mut attempt = 1;
        loop {
            match self.producer.commit_transaction(TXN_CALL_TIMEOUT) {
                Ok(()) => break,
                Err(e) if is_retriable(&e) && attempt < COMMIT_ATTEMPTS && !*self.stop.borrow() => {
                    tracing::warn!(error = %e, attempt, "transaction commit still in progress; retrying");
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(100 << attempt));
                }
                Err(e) if is_retriable(&e) => {
                    return Err(CommitError::Fatal(anyhow!(e).context(format!(
                        "the commit was still in progress after {attempt} attempts"
                    ))))
                }
                Err(e) => return Err(self.fail(e)),
            }
        }
        self.metrics
            .transactions
            .with_label_values(&["committed"])
            .inc();
        self.metrics
            .transaction_seconds
            .observe(started.elapsed().as_secs_f64());
        write_state(store, batch.state, &positions).map_err(CommitError::Store)
    }

    fn commit_acknowledged(&self, store: &dyn KvStore, batch: Batch) -> Result<(), CommitError> {
        // Outputs before the changelog: a crash between them replays the
        // batch with the old state, so no output can be skipped.
        let outputs = self
            .produce_outputs(&batch.records)
            .map_err(CommitError::Aborted)?;
        wait(outputs).map_err(CommitError::Aborted)?;
        let changelog = self
            .produce_changelog(&batch.state)
            .map_err(CommitError::Aborted)?;
        let positions = wait_changelog(changelog).map_err(CommitError::Aborted)?;
        write_state(store, batch.state, &positions).map_err(CommitError::Store)?;
        let tpl = offsets_list(&batch.offsets).map_err(CommitError::Aborted)?;
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Sync) {
            // Typically a rebalance took the partitions: their next owner
            // re-reads from the last commit, and duplicates are skipped.
            tracing::warn!(error = %e, "offset commit failed; the batch will be re-read");
        }
        Ok(())
    }

    /// Aborts the open transaction after `e`; a failed abort means the
    /// producer must be rebuilt.
    fn abort(&self, e: anyhow::Error) -> CommitError {
        match self.producer.abort_transaction(TXN_CALL_TIMEOUT) {
            Ok(()) => {
                self.metrics
                    .transactions
                    .with_label_values(&["aborted"])
                    .inc();
                CommitError::Aborted(e)
            }
            Err(abort) => CommitError::Fatal(e.context(format!("abort failed too: {abort}"))),
        }
    }

    /// A failed transactional call: fatal errors need a new producer,
    /// anything else aborts the transaction.
    fn fail(&self, e: KafkaError) -> CommitError {
        if is_fatal(&e) {
            CommitError::Fatal(anyhow!(e))
        } else {
            self.abort(anyhow!(e))
        }
    }

    /// `begin_transaction` failed: nothing is open to abort.
    fn classify(&self, e: KafkaError) -> CommitError {
        if is_fatal(&e) {
            CommitError::Fatal(anyhow!(e))
        } else {
            CommitError::Aborted(anyhow!(e))
        }
    }

    fn produce_all(&self, batch: &Batch) -> anyhow::Result<(Vec<DeliveryFuture>, Changelog)> {
        Ok((
            self.produce_outputs(&batch.records)?,
            self.produce_changelog(&batch.state)?,
        ))
    }

    fn produce_outputs(&self, records: &[OutRecord]) -> anyhow::Result<Vec<DeliveryFuture>> {
        records
            .iter()
            .map(|r| {
                let mut fr: FutureRecord<'_, Vec<u8>, Vec<u8>> =
                    FutureRecord::to(&r.topic).headers(r.headers.clone());
                if let Some(payload) = &r.payload {
                    fr = fr.payload(payload);
                }
                if let Some(key) = &r.key {
                    fr = fr.key(key);
                }
                self.send(fr)
            })
            .collect()
    }

    fn produce_changelog(&self, state: &[(TaskId, Arc<Vec<Write>>)]) -> anyhow::Result<Changelog> {
        let mut out = Vec::new();
        for (task, writes) in state {
            for w in writes.iter().filter(|w| changelog::is_logged(w.cf)) {
                let (key, value) = changelog::encode(w);
                let mut fr: FutureRecord<'_, Vec<u8>, Vec<u8>> =
                    FutureRecord::to(&self.changelog_topic)
                        .partition(task.partition())
                        .key(&key);
                if let Some(v) = &value {
                    fr = fr.payload(v);
                }
                out.push((*task, self.send(fr)?));
            }
        }
        Ok(out)
    }

    /// Enqueues one record, waiting out a full local queue.
    fn send(&self, fr: FutureRecord<'_, Vec<u8>, Vec<u8>>) -> anyhow::Result<DeliveryFuture> {
        super::enqueue(&self.producer, fr)
    }
}

impl Sink for KafkaSink {
    fn commit(&mut self, store: &dyn KvStore, batch: Batch) -> Result<(), CommitError> {
        match self.guarantee {
            ProcessingGuarantee::ExactlyOnce => self.commit_transaction(store, batch),
            ProcessingGuarantee::AtLeastOnce => self.commit_acknowledged(store, batch),
        }
    }

    /// Drops the producer and builds a new one (after fencing or a fatal
    /// error).
    fn rebuild(&mut self) -> anyhow::Result<()> {
        self.metrics.producer_rebuilds.inc();
        self.producer = create_producer(
            &self.cfg,
            self.guarantee,
            &self.transactional_id,
            self.consumer.context().broker_link(),
        )?;
        Ok(())
    }
}

/// Changelog deliveries, by task.
type Changelog = Vec<(TaskId, DeliveryFuture)>;

fn create_producer(
    cfg: &KafkaConfig,
    guarantee: ProcessingGuarantee,
    transactional_id: &str,
    link: BrokerLink,
) -> anyhow::Result<FutureProducer<ProducerContext>> {
    let mut c = client_config(cfg);
    set_default(&mut c, "statistics.interval.ms", "5000");
    set_default(&mut c, "acks", "all");
    set_default(&mut c, "linger.ms", "5");
    set_default(&mut c, "compression.type", "lz4");
    c.set("enable.idempotence", "true");
    if guarantee == ProcessingGuarantee::ExactlyOnce {
        c.set("transactional.id", transactional_id);
        // Like Kafka Streams: a crashed instance's open transaction blocks
        // read_committed readers until it times out, so keep that short.
        set_default(&mut c, "transaction.timeout.ms", "10000");
    } else {
        set_default(&mut c, "message.timeout.ms", "60000");
    }
    let producer: FutureProducer<ProducerContext> = c
        .create_with_context(ProducerContext(link))
        .context("creating the Kafka producer")?;
    if guarantee == ProcessingGuarantee::ExactlyOnce {
        producer
            .init_transactions(TXN_CALL_TIMEOUT)
            .with_context(|| format!("initialising transactions of {transactional_id}"))?;
        tracing::info!(transactional_id, "transactional producer ready");
    }
    Ok(producer)
}

fn wait(deliveries: Vec<DeliveryFuture>) -> anyhow::Result<()> {
    for d in deliveries {
        delivered(d)?;
    }
    Ok(())
}

/// Waits for the changelog records; returns the next changelog offset of
/// each task that wrote any.
fn wait_changelog(deliveries: Changelog) -> anyhow::Result<HashMap<TaskId, i64>> {
    let mut next = HashMap::new();
    for (task, d) in deliveries {
        let offset = delivered(d)?;
        let e = next.entry(task).or_insert(offset + 1);
        *e = (*e).max(offset + 1);
    }
    Ok(next)
}

/// The offset a record landed at, or why it did not.
fn delivered(d: DeliveryFuture) -> anyhow::Result<i64> {
    match futures::executor::block_on(d) {
        Ok(Ok(delivery)) => Ok(delivery.offset),
        Ok(Err((e, _))) => Err(anyhow!("a record was not acknowledged: {e}")),
        Err(_) => Err(anyhow!(
            "the producer closed before a record was acknowledged"
        )),
    }
}

fn offsets_list(offsets: &BTreeMap<TopicPartition, i64>) -> anyhow::Result<TopicPartitionList> {
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), offset) in offsets {
        tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
    }
    Ok(tpl)
}

/// Writes the batch's state and each task's new changelog position in one
/// atomic write.
fn write_state(
    store: &dyn KvStore,
    state: Vec<(TaskId, Arc<Vec<Write>>)>,
    positions: &HashMap<TaskId, i64>,
) -> anyhow::Result<()> {
    let positions: Vec<Write> = positions
        .iter()
        .map(|(task, next)| write_i64(*task, CHANGELOG_NEXT, *next))
        .collect();
    let mut parts: Vec<&[Write]> = state.iter().map(|(_, w)| w.as_slice()).collect();
    parts.push(&positions);
    store.write_parts(&parts).context("writing state")
}
