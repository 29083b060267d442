//! `tierstream run`: the Kafka consume-process-produce loop.
//!
//! Records are taken in batches (up to `batch_max_records` or
//! `commit_interval_ms`), each routed to the task of its partition number,
//! processed by the pure engine, and then, in this order: every output and
//! dead-letter record is produced and acknowledged, the batch's state is
//! written to RocksDB in one atomic write, and only then are the input
//! offsets committed. A crash anywhere before the commit replays the batch
//! (at-least-once); duplicate input is then skipped by the engine's event-id
//! check, which also keeps the replayed batch from changing state twice.

use crate::config::Config;
use crate::domain::output::Output;
use crate::domain::time::Millis;
use crate::kafka::records::{dlq_record, output_record, OutRecord, Source};
use crate::kafka::{admin, client_config};
use crate::processor::{Processed, Processor};
use crate::store::session::TaskState;
use crate::store::KvStore;
use anyhow::{Context, Result};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long to wait for output acknowledgements before failing the batch.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);

/// A running pipeline's pieces.
pub struct Pipeline {
    cfg: Config,
    processor: Arc<Processor>,
    store: Arc<dyn KvStore>,
    stop_when_idle: Option<Duration>,
}

/// Records processed between the first record and the last commit.
#[derive(Default)]
struct Throughput {
    records: u64,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Throughput {
    fn report(&self) {
        if let (Some(first), Some(last)) = (self.first, self.last) {
            let secs = (last - first).as_secs_f64().max(1e-3);
            tracing::info!(
                records = self.records,
                seconds = format!("{secs:.2}"),
                records_per_second = format!("{:.0}", self.records as f64 / secs),
                "throughput from the first record to the last commit"
            );
        }
    }
}

/// One consumed record, copied out of librdkafka's buffer.
struct InRecord {
    topic: String,
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
}

impl InRecord {
    fn from_message(m: &BorrowedMessage<'_>) -> Self {
        InRecord {
            topic: m.topic().to_owned(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        }
    }
}

/// What processing one batch produced.
struct BatchResult {
    records: Vec<OutRecord>,
    /// Next offset to consume per (topic, partition).
    offsets: BTreeMap<(String, i32), i64>,
}

fn wall_clock() -> Millis {
    chrono::Utc::now().timestamp_millis()
}

impl Pipeline {
    /// A pipeline over a store.
    pub fn new(cfg: Config, processor: Arc<Processor>, store: Arc<dyn KvStore>) -> Self {
        Pipeline {
            cfg,
            processor,
            store,
            stop_when_idle: None,
        }
    }

    /// Stops by itself once no record arrived for `idle` (catch-up jobs,
    /// benchmarks).
    pub fn stop_when_idle(mut self, idle: Option<Duration>) -> Self {
        self.stop_when_idle = idle;
        self
    }

    fn consumer(&self) -> Result<StreamConsumer> {
        let k = &self.cfg.kafka;
        let mut c = client_config(k);
        c.set("group.id", &k.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            // Range keeps equal partition numbers of co-partitioned topics on
            // one instance, which is what a task needs.
            .set("partition.assignment.strategy", "range");
        c.create().context("creating the Kafka consumer")
    }

    fn producer(&self) -> Result<FutureProducer> {
        let mut c = client_config(&self.cfg.kafka);
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("compression.type", "lz4");
        c.create().context("creating the Kafka producer")
    }

    /// Runs until `stop` turns true (SIGTERM / Ctrl-C), finishing the
    /// current batch before returning.
    pub async fn run(&self, mut stop: watch::Receiver<bool>) -> Result<()> {
        let k = &self.cfg.kafka;
        if k.create_topics {
            admin::ensure_topics(k).await?;
        }
        {
            let probe: BaseConsumer = client_config(k)
                .create()
                .context("creating a metadata client")?;
            let n = admin::input_partitions(&probe, k)?;
            tracing::info!(partitions = n, topics = ?k.input_topics, "input topics are co-partitioned");
        }
        let consumer = self.consumer()?;
        let producer = self.producer()?;
        let topics: Vec<&str> = k.input_topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .context("subscribing to the input topics")?;
        tracing::info!(group = %k.group_id, "consuming");

        let mut tasks: HashMap<u32, TaskState> = HashMap::new();
        let interval = Duration::from_millis(k.commit_interval_ms);
        let mut throughput = Throughput::default();
        loop {
            let (batch, stopping) = self.collect(&consumer, &mut stop, interval).await?;
            if !batch.is_empty() {
                throughput.first.get_or_insert_with(Instant::now);
                throughput.records += batch.len() as u64;
                let started = Instant::now();
                self.forget_revoked(&consumer, &mut tasks);
                let result = self.process(&batch, &mut tasks)?;
                self.deliver(&producer, result.records).await?;
                let writes: Vec<_> = tasks.values_mut().flat_map(TaskState::drain).collect();
                self.store.write(writes).context("writing state")?;
                commit(&consumer, &result.offsets);
                self.processor.metrics.commits.inc();
                self.processor
                    .metrics
                    .batch_seconds
                    .observe(started.elapsed().as_secs_f64());
                throughput.last = Some(Instant::now());
            }
            if stopping {
                throughput.report();
                tracing::info!("stopped after the last batch was committed");
                return Ok(());
            }
        }
    }

    /// Collects one batch: until it is full, the interval has passed since
    /// its first record, or a stop is requested.
    async fn collect(
        &self,
        consumer: &StreamConsumer,
        stop: &mut watch::Receiver<bool>,
        interval: Duration,
    ) -> Result<(Vec<InRecord>, bool)> {
        let max = self.cfg.kafka.batch_max_records;
        let mut batch = Vec::new();
        let mut deadline: Option<tokio::time::Instant> = None;
        let idle_deadline = self.stop_when_idle.map(|d| tokio::time::Instant::now() + d);
        loop {
            if *stop.borrow() {
                return Ok((batch, true));
            }
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            let idle = async {
                match idle_deadline {
                    Some(d) if batch.is_empty() => tokio::time::sleep_until(d).await,
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                msg = consumer.recv() => {
                    match msg {
                        Ok(m) => {
                            batch.push(InRecord::from_message(&m));
                            deadline.get_or_insert_with(|| tokio::time::Instant::now() + interval);
                            if batch.len() >= max {
                                return Ok((batch, false));
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "consumer error"),
                    }
                }
                _ = sleep => return Ok((batch, false)),
                _ = idle => {
                    tracing::info!("no input for the idle period; stopping");
                    return Ok((batch, true));
                }
                _ = stop.changed() => return Ok((batch, true)),
            }
        }
    }

    /// Drops the state of tasks whose partitions this instance no longer
    /// owns; their committed state stays in the store.
    fn forget_revoked(&self, consumer: &StreamConsumer, tasks: &mut HashMap<u32, TaskState>) {
        let Ok(assignment) = consumer.assignment() else {
            return;
        };
        let owned: std::collections::HashSet<u32> = assignment
            .elements()
            .iter()
            .map(|e| e.partition() as u32)
            .collect();
        tasks.retain(|task, state| owned.contains(task) || state.is_dirty());
    }

    /// Runs the engine over a batch, in arrival order per task.
    fn process(
        &self,
        batch: &[InRecord],
        tasks: &mut HashMap<u32, TaskState>,
    ) -> Result<BatchResult> {
        let k = &self.cfg.kafka;
        let store = self.store.as_ref();
        let mut records = Vec::new();
        let mut offsets = BTreeMap::new();
        let mut outs: Vec<Output> = Vec::new();
        let now = wall_clock();
        for r in batch {
            let task_id = r.partition as u32;
            let task = match tasks.entry(task_id) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(TaskState::open(task_id, store).context("opening task state")?)
                }
            };
            outs.clear();
            match self
                .processor
                .process(task, store, &r.payload, now, &mut outs)?
            {
                Processed::Event(_) => {}
                Processed::Rejected(rej) => {
                    tracing::debug!(code = rej.code.as_str(), topic = %r.topic, partition = r.partition, offset = r.offset, "rejected input");
                    let src = Source {
                        topic: &r.topic,
                        partition: r.partition,
                        offset: r.offset,
                        key: r.key.as_deref(),
                    };
                    records.push(dlq_record(&k.dlq_topic, &r.payload, &rej, &src));
                }
            }
            records.extend(outs.iter().map(|o| output_record(k, o)));
            offsets.insert((r.topic.clone(), r.partition), r.offset + 1);
        }
        Ok(BatchResult { records, offsets })
    }

    /// Produces every record and waits for all acknowledgements. Records are
    /// enqueued without waiting (librdkafka batches them); a full local
    /// queue is waited out rather than failing the batch.
    async fn deliver(&self, producer: &FutureProducer, records: Vec<OutRecord>) -> Result<()> {
        let mut pending = Vec::with_capacity(records.len());
        for r in &records {
            let mut fr: FutureRecord<'_, Vec<u8>, Vec<u8>> =
                FutureRecord::to(&r.topic).headers(r.headers.clone());
            if let Some(payload) = &r.payload {
                fr = fr.payload(payload);
            }
            if let Some(key) = &r.key {
                fr = fr.key(key);
            }
            loop {
                match producer.send_result(fr) {
                    Ok(delivery) => {
                        pending.push(delivery);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        fr = back;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((e, _)) => anyhow::bail!("producing to {} failed: {e}", r.topic),
                }
            }
        }
        let deadline = tokio::time::Instant::now() + DELIVERY_TIMEOUT;
        for delivery in pending {
            match tokio::time::timeout_at(deadline, delivery).await {
                Ok(Ok(Ok(_))) => {}
                Ok(Ok(Err((e, _)))) => anyhow::bail!("an output was not acknowledged: {e}"),
                Ok(Err(_)) => {
                    anyhow::bail!("the producer was closed before an output was acknowledged")
                }
                Err(_) => anyhow::bail!("outputs not acknowledged within {DELIVERY_TIMEOUT:?}"),
            }
        }
        Ok(())
    }
}

/// Commits the batch's input offsets. A failure (typically a rebalance that
/// took the partitions away) is logged, not fatal: the next owner re-reads
/// from the last commit, and the engine skips what it already applied.
fn commit(consumer: &StreamConsumer, offsets: &BTreeMap<(String, i32), i64>) {
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), offset) in offsets {
        if let Err(e) = tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset)) {
            tracing::warn!(error = %e, "could not add offset to commit");
        }
    }
    if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
        tracing::warn!(error = %e, "offset commit failed; the batch will be re-read and de-duplicated");
    }
}
