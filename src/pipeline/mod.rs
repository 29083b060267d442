//! `tierstream run`: the Kafka consume-process-produce loop.
//!
//! The loop sees Kafka only through the ports of [`ports`] (a `Source`, a
//! `Sink`, a `Restore`): `Pipeline::run` plugs in the librdkafka adapters,
//! the tests in `tests.rs` in-memory fakes. One thread runs the loop (every
//! Kafka and RocksDB call in it blocks, so it stays off the async executor):
//!
//! 1. **Rebalances** are recorded by the consumer's callbacks; the loop
//!    drops the uncommitted records and in-memory state of revoked tasks
//!    and queues assigned tasks for restore (their partitions stay paused).
//! 2. **Restore** brings every queued task up to the end of its changelog
//!    partition, checks that the restored input position has caught up with
//!    the group's committed offsets, and only then resumes the task.
//! 3. **Collect** fetches records into one queue per input partition
//!    (kept across polls and batches, see [`align`]) and takes each task's
//!    records from them in event-time order, until the batch is full, the
//!    commit interval has passed since its first record, or a rebalance
//!    arrives.
//! 4. **Process and commit**: the engine runs over the batch, and the sink
//!    commits outputs, changelog and the offsets of the records taken —
//!    not of those merely fetched — (one transaction under exactly-once)
//!    before the state is written to RocksDB. In a backlog a batch's
//!    commit runs while the next batch is processed (see `commit_batch`).
//!
//! A failed commit never kills the process and never commits past unsaved
//! state: the batch is dropped, a fenced or broken producer is rebuilt,
//! every partition is rewound to its committed offset, and every task is
//! restored again (which also picks up a commit whose outcome was unknown).
//!
//! Backpressure is structural: the loop takes no new input while a batch is
//! being committed, so the output path can never fall behind by more than
//! two batches (one committing, one processed meanwhile). Input memory is
//! bounded per owned input partition: at most
//! `kafka.buffered_records_per_partition` records in its alignment queue
//! (a full queue is not read further, and paused when its task waits long
//! for another partition) plus
//! librdkafka's prefetch of `queued.max.messages.kbytes` (per partition,
//! since every partition has its own queue).

pub(crate) mod align;
pub(crate) mod batch;
pub(crate) mod month_gate;
pub mod ports;
pub mod processor;
#[cfg(test)]
mod tests;

use crate::config::Config;
use crate::domain::time::Millis;
use crate::kafka::rebalance::RebalanceContext;
use crate::kafka::restore::Restorer;
use crate::kafka::sink::{self, KafkaSink};
use crate::kafka::source::KafkaSource;
use crate::kafka::summaries::SummaryReader;
use crate::kafka::{admin, client_config, set_default};
use crate::ops::metrics::Metrics;
use crate::ops::status::Status;
use crate::pipeline::processor::Processor;
use crate::store::checkpoint::{input_offset_name, read_i64};
use crate::store::session::TaskState;
use crate::store::{KvStore, TaskId};
use align::{PartitionGroups, RankedPartition};
use anyhow::{Context, Result};
use batch::InRecord;
use indicatif::ProgressBar;
use month_gate::MonthGate;
use ports::{Batch, CommitError, ConsumerFailed, Position, Restore, Sink, Source, TopicPartition};
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The consumer property naming where a partition without a committed
/// offset starts; ours starts at the beginning unless told otherwise.
const AUTO_OFFSET_RESET: &str = "auto.offset.reset";
const DEFAULT_OFFSET_RESET: &str = "earliest";
/// The group session timeout unless `kafka.properties` sets one.
const DEFAULT_SESSION_TIMEOUT_MS: &str = "45000";
/// Fenced rejoins in a row after which a static member gives up (another
/// live process has its id), and how long a run must last to reset the
/// count.
const FENCED_REJOINS: u32 = 3;
const FENCE_WINDOW: Duration = Duration::from_secs(300);
/// Consecutive failed restores after which the run gives up.
const RESTORE_ATTEMPTS: u32 = 10;
/// Longest single poll, so a stop request is noticed quickly.
const MAX_POLL: Duration = Duration::from_millis(100);
/// A record older than this many commit intervals when its batch opens
/// is part of a backlog: its latency is lost already, so the batch stays
/// open the whole interval and may grow to `batch_max_records`.
const BACKLOG_INTERVALS: u32 = 10;
/// How long a restored task may wait for the changelog to catch up with
/// the committed offsets (a crashed instance's open transaction resolves
/// within the transaction timeout).
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);

/// A running pipeline's pieces.
#[derive(Clone)]
pub struct Pipeline {
    cfg: Config,
    processor: Arc<Processor>,
    store: Arc<dyn KvStore>,
    status: Arc<Status>,
    stop_when_idle: Option<Duration>,
    /// Drawn while tasks restore (hidden unless stderr is a terminal).
    restore_progress: ProgressBar,
}

/// Records processed between the first record and the last commit.
#[derive(Default)]
struct Throughput {
    records: u64,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Throughput {
    /// Logs the throughput and, from the latency histogram, the bucket
    /// bounds of the median and 99th percentile event-to-commit latency
    /// (what `scripts/bench.sh` reports for a paced stream).
    fn report(&self, metrics: &Metrics) {
        if let (Some(first), Some(last)) = (self.first, self.last) {
            let secs = (last - first).as_secs_f64().max(1e-3);
            let bound = |q| {
                Metrics::quantile_bound(&metrics.event_to_output_seconds, q)
                    .map_or_else(|| "-".to_owned(), |b| format!("{b}"))
            };
            tracing::info!(
                records = self.records,
                seconds = format!("{secs:.2}"),
                records_per_second = format!("{:.0}", self.records as f64 / secs),
                latency_p50_at_most_seconds = bound(0.5),
                latency_p99_at_most_seconds = bound(0.99),
                "throughput from the first record to the last commit"
            );
        }
    }
}

/// The wall clock as an instant: what "now" is for the checks against the
/// future (SPEC §1) and for batch deadlines. The one place that reads it,
/// so the domain never does.
pub fn wall_clock() -> Millis {
    Millis::from_ms(chrono::Utc::now().timestamp_millis())
}

/// How long a batch stays open, given the oldest Kafka timestamp of its
/// first records and the wall clock: the commit interval from that
/// timestamp, not from now. Records that arrived while the last batch was
/// being processed and committed have waited already; counting from now,
/// a steady stream's records waited that time plus a full interval before
/// their batch even closed (p99 0.4 s at 30 000 events/s with an interval
/// of 100 ms; 0.2 s counting from the timestamp). A backlog (see
/// [`BACKLOG_INTERVALS`]) keeps the whole interval, so catch-up batches
/// stay large. A producer clock ahead of ours reads as age 0 (the whole
/// interval), one far behind as a backlog: skew costs latency, never data.
fn open_for(oldest: Option<Millis>, wall: Millis, interval: Duration) -> Duration {
    let Some(oldest) = oldest else {
        return interval;
    };
    let age = Duration::from_millis(u64::try_from(wall - oldest).unwrap_or(0));
    if age >= interval * BACKLOG_INTERVALS {
        interval
    } else {
        interval.saturating_sub(age)
    }
}

impl Pipeline {
    /// A pipeline over a store, reporting what it does to `status`.
    pub fn new(
        cfg: Config,
        processor: Arc<Processor>,
        store: Arc<dyn KvStore>,
        status: Arc<Status>,
    ) -> Self {
        Pipeline {
            cfg,
            processor,
            store,
            status,
            stop_when_idle: None,
            restore_progress: ProgressBar::hidden(),
        }
    }

    /// Stops by itself once no record arrived for `idle` (catch-up jobs,
    /// benchmarks).
    pub fn stop_when_idle(mut self, idle: Option<Duration>) -> Self {
        self.stop_when_idle = idle;
        self
    }

    /// Shows restores on `bar` (the CLI's, when stderr is a terminal).
    pub fn restore_progress(mut self, bar: ProgressBar) -> Self {
        self.restore_progress = bar;
        self
    }

    /// Runs until `stop` turns true (SIGTERM / Ctrl-C), finishing the
    /// current batch before returning. A stop during start-up (topics,
    /// metadata — which can hang on an unreachable or refusing broker) ends
    /// the run at once.
    pub async fn run(self, stop: watch::Receiver<bool>) -> Result<()> {
        let status = self.status.clone();
        let result = self.run_rejoining(stop).await;
        // Only here is the pipeline done for good: a loop that ends in a
        // fenced rejoin is followed by another one, and must not leave
        // readiness false behind it.
        status.stopped();
        result
    }

    /// The run, rejoining with a fresh consumer after a self-fence.
    async fn run_rejoining(self, stop: watch::Receiver<bool>) -> Result<()> {
        let mut stopped = stop.clone();
        let (changelog, partitions) = tokio::select! {
            r = self.start_up() => r?,
            _ = stopped.wait_for(|s| *s) => {
                tracing::info!("stopped during start-up");
                return Ok(());
            }
        };
        let mut fenced = 0;
        loop {
            let p = self.clone();
            let (stop, changelog) = (stop.clone(), changelog.clone());
            let started = Instant::now();
            let result =
                tokio::task::spawn_blocking(move || p.connect(stop, changelog, partitions)?.run())
                    .await
                    .context("the pipeline thread panicked")?;
            let Err(e) = result else { return result };
            let is_fenced = e.downcast_ref::<ConsumerFailed>().is_some_and(|f| f.fenced);
            if started.elapsed() > FENCE_WINDOW {
                fenced = 0;
            }
            if is_fenced && *stopped.borrow() {
                // Stopping anyway: whatever was not committed is redone by
                // the partitions' next owner, as after a crash.
                tracing::warn!(error = format!("{e:#}"), "fenced as a static member while stopping; the uncommitted batch is left to the next owner");
                return Ok(());
            }
            if !is_fenced || fenced >= FENCED_REJOINS {
                return Err(e);
            }
            // A lone static member can be fenced by its own rejoin after a
            // broker restart (librdkafka/Kafka race on the member id). Join
            // again with a fresh consumer: everything uncommitted is
            // dropped and redone, as after any failed batch. A real
            // duplicate of this instance's id fences it again at once.
            fenced += 1;
            tracing::warn!(
                error = format!("{e:#}"),
                attempt = fenced,
                "fenced as a static member; rejoining with a new consumer"
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Creates missing topics, checks co-partitioning and the changelog;
    /// returns the changelog topic and the number of tasks.
    async fn start_up(&self) -> Result<(String, u32)> {
        let k = &self.cfg.kafka;
        if k.create_topics {
            admin::ensure_topics(k).await?;
        }
        let probe: admin::MetadataClient = Arc::new(
            client_config(k)
                .create()
                .context("creating a metadata client")?,
        );
        let partitions = admin::input_partitions(&probe, k).await?;
        tracing::info!(partitions, topics = ?k.input_topics, "input topics are co-partitioned");
        let changelog = admin::ensure_changelog(k, &probe, partitions).await?;
        if self.cfg.policy().tiers.percentile.is_some() {
            admin::ensure_summaries(k).await?;
        }
        self.status.set_partitions(partitions);
        Ok((changelog, partitions))
    }

    /// The Kafka adapters of the loop: the subscribed group consumer, the
    /// (transactional) producer and the changelog restorer.
    fn connect(
        self,
        stop: watch::Receiver<bool>,
        changelog: String,
        partitions: u32,
    ) -> Result<Runner<KafkaSource, KafkaSink, Restorer>> {
        let k = &self.cfg.kafka;
        let metrics = self.processor.metrics.clone();
        let instance = sink::instance_id(k, &self.cfg.state.dir);
        let mut source = KafkaSource::new(self.consumer(&instance)?, k.input_topics.clone());
        let shares = self.cfg.policy().tiers.percentile;
        if shares.is_some() {
            source = source.with_summaries(SummaryReader::new(k)?);
        }
        let wait = Duration::from_secs(self.cfg.tiers.percentile.summary_wait_seconds);
        let sink = KafkaSink::new(
            k,
            k.processing_guarantee,
            format!("{}-{instance}", k.group_id),
            changelog.clone(),
            metrics.clone(),
            stop.clone(),
            source.consumer(),
        )?;
        let restorer = Restorer::new(k, changelog, metrics, self.restore_progress.clone())?;
        let topics: Vec<&str> = k.input_topics.iter().map(String::as_str).collect();
        source
            .consumer()
            .subscribe(&topics)
            .context("subscribing to the input topics")?;
        tracing::info!(group = %k.group_id, guarantee = ?k.processing_guarantee, "consuming");
        let mut runner = Runner::new(self, stop, source, sink, restorer);
        runner.gate = shares.map(|s| MonthGate::new(partitions, s, wait));
        Ok(runner)
    }

    fn consumer(&self, instance: &str) -> Result<BaseConsumer<RebalanceContext>> {
        let k = &self.cfg.kafka;
        let mut c = client_config(k);
        c.set("group.id", &k.group_id)
            // Names this instance in the group, for customer queries.
            .set("client.id", instance)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            // The end of each input partition is how alignment knows that
            // an empty partition has nothing more to give (see `align`).
            .set("enable.partition.eof", "true");
        if k.static_membership {
            c.set("group.instance.id", instance);
        }
        // Stated rather than inherited: with static membership this is how
        // long a crashed instance may take to come back and still find its
        // partitions waiting (and how long a departed one holds them).
        set_default(&mut c, "session.timeout.ms", DEFAULT_SESSION_TIMEOUT_MS);
        set_default(&mut c, AUTO_OFFSET_RESET, DEFAULT_OFFSET_RESET);
        // Range keeps equal partition numbers of co-partitioned topics on
        // one instance, which is what a task needs (config validation
        // allows cooperative-sticky only with a single input topic).
        set_default(&mut c, "partition.assignment.strategy", "range");
        // Bound the prefetch: memory stays flat however far behind. Every
        // input partition has its own queue, so this is per partition.
        set_default(&mut c, "queued.max.messages.kbytes", "4096");
        // A partition whose queue is full is not fetched again for this
        // long (librdkafka's default is a second). A backlog drains a
        // 4 MB queue in about a second, and alignment waits for the
        // partition that ran dry.
        set_default(&mut c, "fetch.queue.backoff.ms", "100");
        // Statistics carry the per-partition consumer lag metric.
        set_default(&mut c, "statistics.interval.ms", "5000");
        c.create_with_context(RebalanceContext::new(
            self.processor.metrics.clone(),
            self.status.broker_link(),
        ))
        .context("creating the Kafka consumer")
    }
}

/// The loop's state, over its three ports.
struct Runner<S: Source, K: Sink, R: Restore> {
    p: Pipeline,
    stop: watch::Receiver<bool>,
    source: S,
    sink: K,
    restorer: R,
    /// Fetched records per input partition, taken in event-time order.
    groups: PartitionGroups,
    /// Tasks ready to process, with their in-memory state.
    tasks: HashMap<TaskId, TaskState>,
    /// Partitions this instance owns.
    owned: BTreeSet<TopicPartition>,
    /// Owned tasks still to restore before they process anything.
    restoring: BTreeSet<TaskId>,
    /// Records taken for the open batch, in processing order.
    pending: Vec<InRecord>,
    /// Under percentile tiers: which records may pass a month close.
    gate: Option<MonthGate>,
    /// A processed batch whose commit waits to run while the next batch
    /// is processed (see `commit_batch`).
    landing: Option<Landing>,
    /// When the last record was fetched (for `--stop-when-idle-ms`).
    last_input: Instant,
    stopping: bool,
    failures: u32,
    restore_failures: u32,
    throughput: Throughput,
}

/// A processed batch on its way to the sink, with what its commit
/// reports once it is done.
struct Landing {
    batch: Batch,
    report: BatchReport,
}

/// What a committed batch adds to the metrics.
struct BatchReport {
    /// When the batch began processing.
    started: Instant,
    /// The input records' timestamps (event-to-commit latency).
    timestamps: Vec<Millis>,
    records: u64,
}

impl BatchReport {
    fn of(records: &[InRecord], started: Instant) -> Self {
        BatchReport {
            started,
            timestamps: records
                .iter()
                .filter_map(|r| r.timestamp.map(Millis::from_ms))
                .collect(),
            records: records.len() as u64,
        }
    }
}

/// How a batch's commit went, and how long it took.
struct Commit {
    result: Result<(), CommitError>,
    took: Duration,
    report: BatchReport,
}

impl Landing {
    /// Commits the batch through `sink` (on whichever thread calls it).
    fn commit<K: Sink>(self, sink: &mut K, store: &dyn KvStore) -> Commit {
        let started = Instant::now();
        Commit {
            result: sink.commit(store, self.batch),
            took: started.elapsed(),
            report: self.report,
        }
    }
}

/// The task of a partition.
fn task_of((_, partition): &TopicPartition) -> TaskId {
    TaskId::of_partition(*partition)
}

impl<S: Source, K: Sink, R: Restore> Runner<S, K, R> {
    fn new(p: Pipeline, stop: watch::Receiver<bool>, source: S, sink: K, restorer: R) -> Self {
        let k = &p.cfg.kafka;
        let groups = PartitionGroups::new(
            k.buffered_records_per_partition,
            Duration::from_millis(k.max_task_idle_ms),
        );
        Runner {
            p,
            stop,
            source,
            sink,
            restorer,
            groups,
            tasks: HashMap::new(),
            owned: BTreeSet::new(),
            restoring: BTreeSet::new(),
            pending: Vec::new(),
            gate: None,
            landing: None,
            last_input: Instant::now(),
            stopping: false,
            failures: 0,
            restore_failures: 0,
            throughput: Throughput::default(),
        }
    }

    fn run(mut self) -> Result<()> {
        loop {
            if let Some(failed) = self.source.fatal() {
                return Err(failed.into());
            }
            self.p.status.polled();
            self.apply_moves()?;
            if !self.restoring.is_empty() && !self.stopping {
                // A restore that fails (a broker outage, a changelog read
                // error) is retried with the same backoff as a failed
                // commit; it is idempotent, positions move only after a
                // flush. The tasks stay unready meanwhile.
                if let Err(e) = self.restore() {
                    self.restore_failures += 1;
                    if *self.stop.borrow() || self.restore_failures >= RESTORE_ATTEMPTS {
                        return Err(e.context(format!(
                            "restoring failed {} times in a row",
                            self.restore_failures
                        )));
                    }
                    tracing::warn!(error = format!("{e:#}"), "restore failed; retrying");
                    self.backoff();
                } else {
                    self.restore_failures = 0;
                }
                continue;
            }
            self.collect();
            if self.source.rebalance_pending() {
                continue;
            }
            if !self.pending.is_empty() || self.gate.is_some() {
                self.commit_batch()?;
            } else {
                self.settle()?;
            }
            if self.stopping {
                self.throughput.report(&self.p.processor.metrics);
                tracing::info!("stopped after the last batch was committed");
                return Ok(());
            }
        }
    }

    /// Acts on recorded rebalances.
    fn apply_moves(&mut self) -> Result<()> {
        let moves = self.source.take_moves();
        if moves.is_empty() {
            return Ok(());
        }
        // Revocations first: a partition revoked and assigned again (eager
        // rebalancing) restarts from its committed offset, so whatever was
        // fetched from it before is dropped.
        let revoked: BTreeSet<TopicPartition> = moves.revoked.into_iter().collect();
        self.owned.retain(|tp| !revoked.contains(tp));
        self.pending
            .retain(|r| !revoked.contains(&(r.topic.clone(), r.partition)));
        let owned_ranked: BTreeSet<RankedPartition> =
            self.owned.iter().filter_map(|tp| self.ranked(tp)).collect();
        self.groups.retain(|tp| owned_ranked.contains(&tp));
        let owned_tasks: BTreeSet<TaskId> = self.owned.iter().map(task_of).collect();
        self.tasks.retain(|t, _| owned_tasks.contains(t));
        if let Some(gate) = &mut self.gate {
            gate.forget_all_but(&owned_tasks);
        }
        self.restoring.retain(|t| owned_tasks.contains(t));
        let assigned = !moves.assigned.is_empty();
        for tp in moves.assigned {
            self.restoring.insert(task_of(&tp));
            self.owned.insert(tp);
        }
        self.source.track(&self.owned, assigned);
        if assigned {
            let now = Instant::now();
            let owned: Vec<RankedPartition> =
                self.owned.iter().filter_map(|tp| self.ranked(tp)).collect();
            for tp in owned {
                self.groups.add(tp, now);
            }
        }
        self.publish_tasks();
        if self.landing.take().is_some() {
            // The batch in flight may not commit now: a revoked
            // partition's next owner, or this one for a partition given
            // back, starts from the committed offsets it is past. Every
            // task goes back to them.
            tracing::info!("a rebalance came while a batch was in flight; rewinding");
            self.recover()?;
        }
        Ok(())
    }

    /// `tp` by the rank of its topic (`None`: not an input topic).
    fn ranked(&self, (topic, partition): &TopicPartition) -> Option<RankedPartition> {
        let rank = self
            .p
            .cfg
            .kafka
            .input_topics
            .iter()
            .position(|t| t == topic)?;
        Some((rank, *partition))
    }

    /// Tells the status which tasks are owned and which still restore.
    fn publish_tasks(&self) {
        let owned: BTreeSet<TaskId> = self.owned.iter().map(task_of).collect();
        self.p.status.set_tasks(&owned, &self.restoring);
        self.p
            .processor
            .metrics
            .restoring_tasks
            .set(self.restoring.len() as i64);
    }

    /// Restores the queued tasks, then resumes them.
    fn restore(&mut self) -> Result<()> {
        let tasks = self.restoring.clone();
        let deadline = Instant::now() + CATCH_UP_TIMEOUT;
        loop {
            let source = &mut self.source;
            let groups = &mut self.groups;
            let status = &self.p.status;
            // Serve the group while restoring; a record of a running task
            // that arrives on the consumer's queue meanwhile is buffered.
            let mut keepalive = || {
                status.polled();
                source.serve(groups);
            };
            self.restorer
                .restore(self.p.store.as_ref(), &tasks, &mut keepalive)?;
            match self.behind_committed(&tasks) {
                Ok(behind) if behind.is_empty() => break,
                Ok(behind) if Instant::now() > deadline => {
                    tracing::warn!(?behind, "the changelog is behind the committed offsets; continuing (outputs of the missing batches may repeat)");
                    break;
                }
                Ok(behind) => tracing::info!(
                    ?behind,
                    "waiting for the changelog to catch up with the committed offsets"
                ),
                Err(e) => tracing::warn!(error = %e, "could not read committed offsets; retrying"),
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let cache = self
            .p
            .cfg
            .state
            .cache_bytes_per_task(self.restoring.len() + self.tasks.len());
        for &task in &tasks {
            let state = TaskState::open(task, self.p.store.as_ref(), cache)?;
            self.tasks.insert(task, state);
        }
        self.restoring.retain(|t| !tasks.contains(t));
        self.publish_tasks();
        self.apply_moves()?;
        let resume = self.partitions(|task| tasks.contains(&task));
        if let Err(e) = self.source.resume(&resume) {
            tracing::warn!(error = %e, "could not resume restored partitions");
        }
        self.last_input = Instant::now();
        Ok(())
    }

    /// Owned partitions whose task passes `select` and is not restoring.
    fn partitions(&self, select: impl Fn(TaskId) -> bool) -> Vec<TopicPartition> {
        self.owned
            .iter()
            .filter(|tp| select(task_of(tp)) && !self.restoring.contains(&task_of(tp)))
            .cloned()
            .collect()
    }

    /// Partitions of `tasks` whose committed offset is past the input
    /// position the restored state records: their last committed batch is
    /// not in the changelog yet.
    fn behind_committed(&self, tasks: &BTreeSet<TaskId>) -> Result<Vec<TopicPartition>> {
        let of_tasks: Vec<TopicPartition> = self
            .owned
            .iter()
            .filter(|tp| tasks.contains(&task_of(tp)))
            .cloned()
            .collect();
        let mut behind = Vec::new();
        for (tp, committed) in self.source.committed(&of_tasks)? {
            if let Some(c) = committed {
                let local = read_i64(
                    self.p.store.as_ref(),
                    task_of(&tp),
                    &input_offset_name(&tp.0),
                )?;
                if local.is_none_or(|l| l < c) {
                    behind.push(tp);
                }
            }
        }
        Ok(behind)
    }

    /// Fills the alignment queues and takes records from them into
    /// `pending` until the batch is full, the commit interval passed since
    /// its first record, a rebalance arrived, or a stop was requested.
    fn collect(&mut self) {
        let interval = Duration::from_millis(self.p.cfg.kafka.commit_interval_ms);
        let batch_max = self.p.cfg.kafka.batch_max_records;
        let mut deadline = (!self.pending.is_empty()).then(|| Instant::now() + interval);
        loop {
            self.p.status.polled();
            if *self.stop.borrow() {
                tracing::info!("shutdown requested; finishing the current batch");
                self.stopping = true;
                return;
            }
            if self.source.rebalance_pending() || self.pending.len() >= batch_max {
                return;
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| d <= now) {
                return;
            }
            // Armed before looking, so whatever arrives after the look
            // wakes the wait below at once.
            self.source.arm();
            let fetched =
                self.source.serve(&mut self.groups) + self.source.fill(&mut self.groups, None);
            let summaries = self.source.summaries();
            if let Some(gate) = &mut self.gate {
                gate.hand_in(summaries);
                // A held task's step (publish, or a month close) is work
                // of its own: the batch is committed without records too.
                if gate.holds_any() {
                    deadline.get_or_insert(now + interval);
                }
            }
            if self.source.rebalance_pending() {
                return;
            }
            let taken_from = self.pending.len();
            let taken = self.take(batch_max - taken_from);
            let now = Instant::now();
            if fetched > 0 {
                self.last_input = now;
            }
            if taken > 0 && deadline.is_none() {
                deadline = Some(now + self.open_for(taken_from, interval));
            }
            self.p
                .processor
                .metrics
                .buffered_records
                .set(self.groups.buffered() as i64);
            if fetched == 0 && taken == 0 {
                if self.landing.is_some() {
                    // The backlog ran out: the batch in flight commits
                    // now, not after another wait.
                    return;
                }
                // Idle only counts once partitions are owned and restored:
                // waiting for the group to hand some out is not idleness.
                let idle = self.pending.is_empty()
                    && self.groups.is_empty()
                    && !self.owned.is_empty()
                    && self.restoring.is_empty()
                    && self
                        .p
                        .stop_when_idle
                        .is_some_and(|d| now.duration_since(self.last_input) >= d);
                if idle {
                    tracing::info!("no input for the idle period; stopping");
                    self.stopping = true;
                    return;
                }
                let wait = deadline.map_or(MAX_POLL, |d| d.saturating_duration_since(now));
                self.source.wait(wait.min(MAX_POLL));
            }
        }
    }

    /// How long a batch whose first records are `pending[from..]` stays
    /// open (see [`open_for`]).
    fn open_for(&self, from: usize, interval: Duration) -> Duration {
        let oldest = self.pending[from..]
            .iter()
            .filter_map(|r| r.timestamp.map(Millis::from_ms))
            .min();
        open_for(oldest, wall_clock(), interval)
    }

    /// Takes up to `room` records, every task's in event-time order. A
    /// task that must wait for one of its partitions is refilled from
    /// the source first; if that brings nothing for long, its full
    /// partitions are paused until it can go on.
    fn take(&mut self, room: usize) -> usize {
        let mut taken = 0;
        let metrics = &self.p.processor.metrics;
        // One clock reading per call, not per record: the thresholds it
        // serves (idle time, pausing, wait reports) are far coarser than a
        // batch's millisecond or two.
        let now = Instant::now();
        for task in self.groups.task_ids() {
            if self.restoring.contains(&TaskId::of_partition(task)) {
                continue;
            }
            let id = TaskId::of_partition(task);
            while taken < room {
                let (gate, tasks) = (&mut self.gate, &self.tasks);
                let admit = |ts| match (gate.as_mut(), tasks.get(&id)) {
                    (Some(g), Some(state)) => g.admit(id, state, ts, now),
                    _ => true,
                };
                let next = self.groups.next_if(task, now, admit);
                if next.is_none() && self.gate.as_ref().is_some_and(|g| g.is_held(id)) {
                    break;
                }
                let Some(t) = next else {
                    if self.source.fill(&mut self.groups, Some(task)) > 0 {
                        self.last_input = now;
                        continue;
                    }
                    let full = self.groups.take_full_to_pause(task, now);
                    if !full.is_empty() {
                        self.pause_resume(&full, true);
                    }
                    let wait = self.groups.long_wait(task, now);
                    if let Some((waited, ranks)) = wait.filter(|(_, r)| !r.is_empty()) {
                        let topics = &self.p.cfg.kafka.input_topics;
                        let waiting_for: Vec<&str> =
                            ranks.iter().map(|&r| topics[r].as_str()).collect();
                        tracing::warn!(
                            task,
                            ?waiting_for,
                            seconds = waited.as_secs(),
                            "task waits for input partitions that have more to fetch but deliver nothing (broker or leader unavailable?)"
                        );
                    }
                    break;
                };
                if t.enforced {
                    metrics.enforced_processing.inc();
                    tracing::debug!(
                        task,
                        topic = %t.record.topic,
                        offset = t.record.offset,
                        "enforced processing: taken while an empty, caught-up partition of the task was skipped"
                    );
                }
                if let Some(tp) = t.resume {
                    self.pause_resume(&[tp], false);
                }
                self.pending.push(t.record);
                taken += 1;
            }
        }
        taken
    }

    /// Pauses (backpressure) or resumes input partitions.
    fn pause_resume(&self, partitions: &[RankedPartition], pause: bool) {
        let topics = &self.p.cfg.kafka.input_topics;
        let named: Vec<TopicPartition> = partitions
            .iter()
            .map(|&(rank, partition)| (topics[rank].clone(), partition))
            .collect();
        let result = if pause {
            self.source.pause(&named)
        } else {
            self.source.resume(&named)
        };
        let paused = &self.p.processor.metrics.paused_partitions;
        match result {
            Ok(()) if pause => paused.add(partitions.len() as i64),
            Ok(()) => paused.sub(partitions.len() as i64),
            Err(e) => {
                tracing::warn!(error = %e, pause, "could not pause or resume full partitions")
            }
        }
    }

    /// Processes the pending records and commits them.
    ///
    /// A batch that filled up, or that left the partition queues half full
    /// or more, was taken from a backlog, and the next one is already
    /// there. Its commit (produce, transaction, state write) is left in
    /// flight, to run on its own thread while the next batch is processed
    /// instead of leaving the processing threads idle meanwhile. Its tasks
    /// read its state writes until they land (`TaskState::land`); the next
    /// batch's commit starts only after it succeeded, and if it fails, the
    /// batch processed meanwhile is dropped with everything else
    /// uncommitted. A steady stream leaves the queues nearly empty, and
    /// its batches commit at once: waiting for the next collect would add
    /// to their latency. Not under percentile tiers (their month closes
    /// wait on other instances' summaries), nor when stopping.
    fn commit_batch(&mut self) -> Result<()> {
        let started = Instant::now();
        let steps = match &mut self.gate {
            Some(g) => g.steps(&self.tasks, started),
            None => Vec::new(),
        };
        if self.pending.is_empty() && steps.is_empty() {
            return self.settle();
        }
        let records = std::mem::take(&mut self.pending);
        let k = &self.p.cfg.kafka;
        let defer = self.gate.is_none()
            && !self.stopping
            && (records.len() >= k.batch_max_records
                || 2 * self.groups.buffered()
                    >= self.owned.len() * k.buffered_records_per_partition);
        self.throughput.first.get_or_insert(started);
        let p = &self.p;
        let summaries_topic = crate::kafka::summaries::topic(&p.cfg.kafka);
        let gate = self.gate.as_ref();
        let cuts = |m| gate.and_then(|g| g.summaries.month_close(m));
        let months = gate.map(|_| batch::MonthSteps {
            cuts: &cuts,
            steps,
            topic: &summaries_topic,
        });
        let cx = batch::BatchContext {
            cfg: &p.cfg.kafka,
            processor: &p.processor,
            store: p.store.as_ref(),
            now: wall_clock(),
        };
        let (tasks, sink, landing) = (&mut self.tasks, &mut self.sink, self.landing.take());
        let (processed, landed) = std::thread::scope(|scope| {
            let committing = landing.map(|l| scope.spawn(move || l.commit(sink, cx.store)));
            let processed =
                batch::process(cx, tasks, &records, p.cfg.kafka.threads(), months.as_ref());
            let landed = committing.map(|h| h.join().expect("the committing thread panicked"));
            (processed, landed)
        });
        if let Some(g) = &mut self.gate {
            g.batch_done();
            for w in g.take_waits() {
                p.processor
                    .metrics
                    .month_close_wait_seconds
                    .observe(w.as_secs_f64());
            }
        }
        if let Some(commit) = landed {
            if !self.committed(commit)? {
                // Rewound: the batch processed meanwhile is read again.
                return Ok(());
            }
        }
        let batch = processed.context("processing a batch")?;
        let landing = Landing {
            batch,
            report: BatchReport::of(&records, started),
        };
        if defer {
            for (id, writes) in &landing.batch.state {
                if let Some(t) = self.tasks.get_mut(id) {
                    t.land(Arc::clone(writes));
                }
            }
            self.landing = Some(landing);
            return Ok(());
        }
        let commit = landing.commit(&mut self.sink, self.p.store.as_ref());
        self.committed(commit).map(drop)
    }

    /// Commits the batch in flight, if any.
    fn settle(&mut self) -> Result<()> {
        let Some(landing) = self.landing.take() else {
            return Ok(());
        };
        let commit = landing.commit(&mut self.sink, self.p.store.as_ref());
        self.committed(commit).map(drop)
    }

    /// Acts on a commit's outcome: the tasks read the store again instead
    /// of a landing batch; a committed batch is counted, and after a
    /// failed one everything uncommitted is forgotten (`false`).
    fn committed(&mut self, commit: Commit) -> Result<bool> {
        for t in self.tasks.values_mut() {
            t.landed();
        }
        let Commit {
            result,
            took,
            report,
        } = commit;
        match result {
            Ok(()) => {
                let m = &self.p.processor.metrics;
                m.commits.inc();
                m.commit_seconds.observe(took.as_secs_f64());
                let now = wall_clock();
                for ts in report.timestamps {
                    m.event_to_output_seconds
                        .observe((now - ts).max(0) as f64 / 1000.0);
                }
                m.batch_seconds
                    .observe(report.started.elapsed().as_secs_f64());
                self.throughput.records += report.records;
                self.throughput.last = Some(Instant::now());
                self.failures = 0;
                Ok(true)
            }
            Err(CommitError::Store(e)) => Err(e),
            Err(CommitError::Aborted(e)) => {
                tracing::warn!(error = format!("{e:#}"), "batch not committed; rewinding");
                self.recover().map(|()| false)
            }
            Err(CommitError::Fatal(e)) => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "producer failed; rebuilding it and rewinding"
                );
                self.rebuild_producer()?;
                self.recover().map(|()| false)
            }
        }
    }

    /// Waits a little longer after each consecutive failure (at most 5 s),
    /// so a broker outage is ridden out without a hot loop.
    fn backoff(&mut self) {
        self.failures = (self.failures + 1).min(6);
        std::thread::sleep(Duration::from_millis(100 << self.failures).min(Duration::from_secs(5)));
    }

    fn rebuild_producer(&mut self) -> Result<()> {
        loop {
            self.backoff();
            match self.sink.rebuild() {
                Ok(()) => return Ok(()),
                Err(e) if *self.stop.borrow() => return Err(e),
                Err(e) => tracing::warn!(
                    error = format!("{e:#}"),
                    "could not rebuild the producer; retrying"
                ),
            }
        }
    }

    /// Forgets everything uncommitted: in-memory task state and polled
    /// records; rewinds every owned partition to its committed offset and
    /// queues every task for restore.
    fn recover(&mut self) -> Result<()> {
        self.backoff();
        self.landing = None;
        self.tasks.clear();
        self.pending.clear();
        self.groups.reset(Instant::now());
        self.p.processor.metrics.paused_partitions.set(0);
        let all = self.partitions(|_| true);
        self.restoring.extend(self.owned.iter().map(task_of));
        self.publish_tasks();
        if all.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.source.pause(&all) {
            tracing::warn!(error = %e, "could not pause partitions for the rewind");
        }
        loop {
            match self.rewind(&all) {
                Ok(()) => return Ok(()),
                Err(e) if *self.stop.borrow() => return Err(e),
                Err(e) => {
                    tracing::warn!(
                        error = format!("{e:#}"),
                        "could not rewind to the committed offsets; retrying"
                    );
                    self.backoff();
                }
            }
        }
    }

    /// The start of a partition without a committed offset, from the
    /// consumer's `auto.offset.reset` (`error` refuses to guess).
    fn reset_position(&self) -> Result<Position> {
        let policy = self
            .p
            .cfg
            .kafka
            .properties
            .get(AUTO_OFFSET_RESET)
            .map_or(DEFAULT_OFFSET_RESET, String::as_str);
        match policy {
            "earliest" | "smallest" | "beginning" => Ok(Position::Beginning),
            "latest" | "largest" | "end" => Ok(Position::End),
            other => anyhow::bail!(
                "a partition has no committed offset and {AUTO_OFFSET_RESET} is {other:?}: nowhere to rewind to"
            ),
        }
    }

    fn rewind(&self, partitions: &[TopicPartition]) -> Result<()> {
        let committed = self.source.committed(partitions)?;
        // Where the group has committed nothing, go where the consumer
        // would start: `auto.offset.reset`.
        let reset = self.reset_position()?;
        let seek: Vec<(TopicPartition, Position)> = committed
            .into_iter()
            .map(|(tp, c)| (tp, c.map_or(reset, Position::Offset)))
            .collect();
        self.source.seek(&seek)
    }
}
