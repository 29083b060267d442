//! Prometheus metrics. Every counter the pipeline and replay report lives
//! here, registered once, so the `/metrics` page and replay's summary can
//! never disagree about what was counted.

use crate::codec::input::ErrorCode;
use crate::codec::output::severity_name;
use crate::domain::engine::Outcome;
use crate::domain::output::{Output, OutputBody};
use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// Prefix of every metric name.
const PREFIX: &str = "tierstream";

/// All metrics of one process.
#[derive(Clone)]
pub struct Metrics {
    /// The registry `/metrics` renders.
    pub registry: Registry,
    /// Valid events by type and outcome.
    pub events: IntCounterVec,
    /// Rejected records by error code.
    pub rejected: IntCounterVec,
    /// Unknown signal names ignored.
    pub unknown_signals: IntCounter,
    /// Outputs by schema.
    pub outputs: IntCounterVec,
    /// Tier changes by from/to.
    pub tier_changes: IntCounterVec,
    /// Time to process and commit one batch.
    pub batch_seconds: Histogram,
    /// Batches committed.
    pub commits: IntCounter,
    /// Kafka transactions by result (committed, aborted).
    pub transactions: IntCounterVec,
    /// Time from `begin_transaction` to the end of the commit.
    pub transaction_seconds: Histogram,
    /// Transactional producers dropped and rebuilt after a fatal error.
    pub producer_rebuilds: IntCounter,
    /// Changelog records applied to the local store by restores.
    pub restored_records: IntCounter,
    /// Tasks assigned but not yet restored (not processing).
    pub restoring_tasks: IntGauge,
    /// Partition moves by kind (assign, revoke).
    pub rebalances: IntCounterVec,
    /// Churn-warning outputs by action and severity.
    pub churn_warnings: IntCounterVec,
    /// Customers of the owned tasks by tier (refreshed periodically).
    pub customers: IntGaugeVec,
    /// Customers of the owned tasks by quadrant (refreshed periodically).
    pub customers_by_quadrant: IntGaugeVec,
    /// Records behind the end of each owned input partition.
    pub consumer_lag: IntGaugeVec,
    /// From an input record's Kafka timestamp to the commit of its batch.
    pub event_to_output_seconds: Histogram,
    /// Time to commit one batch (transaction or acknowledgements + state).
    pub commit_seconds: Histogram,
    /// 1 once every owned task is restored and the loop is consuming.
    pub ready: IntGauge,
    /// Records taken while an empty, caught-up partition of their task was
    /// skipped (event-time alignment could not wait for it).
    pub enforced_processing: IntCounter,
    /// Records fetched into the alignment queues, not yet taken.
    pub buffered_records: IntGauge,
    /// Input partitions paused because their alignment queue is full.
    pub paused_partitions: IntGauge,
    /// RocksDB block cache in use.
    pub rocksdb_block_cache_bytes: IntGauge,
    /// RocksDB memtables, all column families.
    pub rocksdb_memtable_bytes: IntGauge,
    /// Bytes RocksDB estimates compaction still has to rewrite.
    pub rocksdb_pending_compaction_bytes: IntGauge,
    /// 1 while RocksDB delays or stops writes.
    pub rocksdb_write_stalled: IntGauge,
}

fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Applied => "applied",
        Outcome::Late => "late",
        Outcome::Duplicate => "duplicate",
        Outcome::Forgotten => "forgotten",
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some(PREFIX.into()), None).expect("valid prefix");
        let events = IntCounterVec::new(
            Opts::new("events_total", "Valid input events by type and outcome"),
            &["type", "outcome"],
        )
        .expect("valid metric");
        let rejected = IntCounterVec::new(
            Opts::new(
                "events_rejected_total",
                "Input records sent to the dead-letter queue, by error code",
            ),
            &["code"],
        )
        .expect("valid metric");
        let unknown_signals =
            IntCounter::new("unknown_signals_total", "Unknown signal names ignored")
                .expect("valid metric");
        let outputs = IntCounterVec::new(
            Opts::new("outputs_total", "Output events by schema"),
            &["schema"],
        )
        .expect("valid metric");
        let tier_changes = IntCounterVec::new(
            Opts::new(
                "tier_changes_total",
                "Tier changes by previous and new tier",
            ),
            &["from", "to"],
        )
        .expect("valid metric");
        let batch_seconds = Histogram::with_opts(HistogramOpts::new(
            "batch_duration_seconds",
            "Time to process, produce and commit one batch",
        ))
        .expect("valid metric");
        let commits = IntCounter::new("commits_total", "Batches committed").expect("valid metric");
        let transactions = IntCounterVec::new(
            Opts::new("transactions_total", "Kafka transactions by result"),
            &["result"],
        )
        .expect("valid metric");
        for r in ["committed", "aborted"] {
            transactions.with_label_values(&[r]);
        }
        let transaction_seconds = Histogram::with_opts(HistogramOpts::new(
            "transaction_duration_seconds",
            "Time from beginning a Kafka transaction to the end of its commit",
        ))
        .expect("valid metric");
        let producer_rebuilds = IntCounter::new(
            "producer_rebuilds_total",
            "Transactional producers rebuilt after a fatal error or fencing",
        )
        .expect("valid metric");
        let restored_records = IntCounter::new(
            "restored_records_total",
            "Changelog records applied to the local store by restores",
        )
        .expect("valid metric");
        let restoring_tasks = IntGauge::new(
            "restoring_tasks",
            "Assigned tasks whose state is still being restored",
        )
        .expect("valid metric");
        let rebalances = IntCounterVec::new(
            Opts::new("rebalances_total", "Partition assignments and revocations"),
            &["kind"],
        )
        .expect("valid metric");
        for c in ErrorCode::ALL {
            rejected.with_label_values(&[c.as_str()]);
        }
        let churn_warnings = IntCounterVec::new(
            Opts::new(
                "churn_warnings_total",
                "Churn-warning outputs by action and severity",
            ),
            &["action", "severity"],
        )
        .expect("valid metric");
        let customers = IntGaugeVec::new(
            Opts::new("customers", "Customers of the owned tasks by tier"),
            &["tier"],
        )
        .expect("valid metric");
        let customers_by_quadrant = IntGaugeVec::new(
            Opts::new(
                "customers_by_quadrant",
                "Customers of the owned tasks by loyalty quadrant (none: no attitudinal evidence)",
            ),
            &["quadrant"],
        )
        .expect("valid metric");
        let consumer_lag = IntGaugeVec::new(
            Opts::new(
                "consumer_lag_records",
                "Records between the consumer position and the end of each owned input partition",
            ),
            &["topic", "partition"],
        )
        .expect("valid metric");
        let event_to_output_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "event_to_output_latency_seconds",
                "From an input record's Kafka timestamp to the commit of its outputs",
            )
            .buckets(vec![
                0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
            ]),
        )
        .expect("valid metric");
        let commit_seconds = Histogram::with_opts(HistogramOpts::new(
            "commit_duration_seconds",
            "Time to commit one batch: outputs, changelog, offsets and local state",
        ))
        .expect("valid metric");
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("valid metric");
        let ready = gauge(
            "ready",
            "1 once every owned task is restored and the loop is consuming",
        );
        let rocksdb_block_cache_bytes = gauge(
            "rocksdb_block_cache_usage_bytes",
            "RocksDB shared block cache in use",
        );
        let rocksdb_memtable_bytes = gauge(
            "rocksdb_memtable_bytes",
            "RocksDB memtables of all column families",
        );
        let rocksdb_pending_compaction_bytes = gauge(
            "rocksdb_pending_compaction_bytes",
            "Bytes RocksDB estimates compaction still has to rewrite",
        );
        let rocksdb_write_stalled = gauge(
            "rocksdb_write_stalled",
            "1 while RocksDB delays or stops writes",
        );
        let enforced_processing = IntCounter::new(
            "enforced_processing_total",
            "Records processed while an empty, caught-up input partition of their task was skipped",
        )
        .expect("valid metric");
        let buffered_records = gauge(
            "buffered_records",
            "Input records fetched into the event-time alignment queues, not yet processed",
        );
        let paused_partitions = gauge(
            "paused_partitions",
            "Input partitions paused because their alignment queue is full",
        );
        let m = Metrics {
            registry,
            events,
            rejected,
            unknown_signals,
            outputs,
            tier_changes,
            batch_seconds,
            commits,
            transactions,
            transaction_seconds,
            producer_rebuilds,
            restored_records,
            restoring_tasks,
            rebalances,
            churn_warnings,
            customers,
            customers_by_quadrant,
            consumer_lag,
            event_to_output_seconds,
            commit_seconds,
            ready,
            enforced_processing,
            buffered_records,
            paused_partitions,
            rocksdb_block_cache_bytes,
            rocksdb_memtable_bytes,
            rocksdb_pending_compaction_bytes,
            rocksdb_write_stalled,
        };
        for c in m.collectors() {
            m.registry.register(c).expect("unique metric names");
        }
        m
    }

    fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        let m = self;
        vec![
            Box::new(m.events.clone()),
            Box::new(m.rejected.clone()),
            Box::new(m.unknown_signals.clone()),
            Box::new(m.outputs.clone()),
            Box::new(m.tier_changes.clone()),
            Box::new(m.batch_seconds.clone()),
            Box::new(m.commits.clone()),
            Box::new(m.transactions.clone()),
            Box::new(m.transaction_seconds.clone()),
            Box::new(m.producer_rebuilds.clone()),
            Box::new(m.restored_records.clone()),
            Box::new(m.restoring_tasks.clone()),
            Box::new(m.rebalances.clone()),
            Box::new(m.churn_warnings.clone()),
            Box::new(m.customers.clone()),
            Box::new(m.customers_by_quadrant.clone()),
            Box::new(m.consumer_lag.clone()),
            Box::new(m.event_to_output_seconds.clone()),
            Box::new(m.commit_seconds.clone()),
            Box::new(m.ready.clone()),
            Box::new(m.enforced_processing.clone()),
            Box::new(m.buffered_records.clone()),
            Box::new(m.paused_partitions.clone()),
            Box::new(m.rocksdb_block_cache_bytes.clone()),
            Box::new(m.rocksdb_memtable_bytes.clone()),
            Box::new(m.rocksdb_pending_compaction_bytes.clone()),
            Box::new(m.rocksdb_write_stalled.clone()),
        ]
    }

    /// The name of every metric family this process exports, whether or
    /// not it has samples yet: deploy artifacts (alert rules, dashboards)
    /// are checked against it so they never reference a metric that does
    /// not exist.
    pub fn family_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .collectors()
            .iter()
            .flat_map(|c| {
                c.desc()
                    .into_iter()
                    .map(|d| format!("{PREFIX}_{}", d.fq_name))
                    .collect::<Vec<_>>()
            })
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Counts one valid event.
    pub fn event(&self, type_name: &str, outcome: Outcome) {
        self.events
            .with_label_values(&[type_name, outcome_name(outcome)])
            .inc();
    }

    /// Counts one output.
    pub fn output(&self, o: &Output) {
        self.outputs.with_label_values(&[o.schema()]).inc();
        match &o.body {
            OutputBody::TierChanged { from, to, .. } => {
                let from = from.map_or("none", |t| t.as_str());
                self.tier_changes
                    .with_label_values(&[from, to.as_str()])
                    .inc();
            }
            OutputBody::ChurnWarning(w) => {
                self.churn_warnings
                    .with_label_values(&[w.action.as_str(), severity_name(w.severity)])
                    .inc();
            }
            _ => {}
        }
    }

    /// Sum of a counter vector over all label values.
    pub fn total(vec: &IntCounterVec) -> u64 {
        use prometheus::core::Collector;
        vec.collect()
            .iter()
            .flat_map(|mf| mf.get_metric())
            .map(|m| m.get_counter().value() as u64)
            .sum()
    }

    /// `(label values, count)` of every non-zero series of a counter vector.
    pub fn series(vec: &IntCounterVec) -> Vec<(Vec<String>, u64)> {
        use prometheus::core::Collector;
        vec.collect()
            .iter()
            .flat_map(|mf| mf.get_metric())
            .filter(|m| m.get_counter().value() > 0.0)
            .map(|m| {
                (
                    m.get_label().iter().map(|l| l.value().to_owned()).collect(),
                    m.get_counter().value() as u64,
                )
            })
            .collect()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
