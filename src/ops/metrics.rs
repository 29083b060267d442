//! Prometheus metrics. Every counter the pipeline and replay report lives
//! here, registered once, so the `/metrics` page and replay's summary can
//! never disagree about what was counted.

use crate::codec::input::ErrorCode;
use crate::domain::engine::Outcome;
use crate::domain::event::{EventType, Severity};
use crate::domain::lifetime::PRIORITIES;
use crate::domain::output::{Output, OutputBody};
use crate::domain::tier::Tier;
use crate::domain::warning::WarningAction;
use prometheus::{
    Counter, CounterVec, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};
use std::sync::OnceLock;
use strum::{EnumCount, IntoEnumIterator};

/// Prefix of every metric name.
const PREFIX: &str = "tierstream";

/// Buckets of the event-to-output latency: from 10 ms to 5 minutes, since
/// a catch-up makes old events' latency large; fine between 50 ms and
/// 500 ms, where a steady stream's latency lies (a few commit intervals of
/// 100 ms), so its p99 can be told against twice the interval.
const LATENCY_BUCKETS: [f64; 18] = [
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0,
];

/// Buckets of the churn risk, a probability: tenths.
const RISK_BUCKETS: [f64; 9] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];

/// A metric type that can be built from its name, help, labels and (for
/// histograms) buckets.
trait Declare: prometheus::core::Collector + Clone + 'static {
    fn declare(name: &str, help: &str, labels: &[&str], buckets: Option<&[f64]>) -> Self;
}

impl Declare for IntCounter {
    fn declare(name: &str, help: &str, _: &[&str], _: Option<&[f64]>) -> Self {
        IntCounter::new(name, help).expect("valid metric")
    }
}

impl Declare for IntGauge {
    fn declare(name: &str, help: &str, _: &[&str], _: Option<&[f64]>) -> Self {
        IntGauge::new(name, help).expect("valid metric")
    }
}

impl Declare for IntCounterVec {
    fn declare(name: &str, help: &str, labels: &[&str], _: Option<&[f64]>) -> Self {
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
    }
}

impl Declare for IntGaugeVec {
    fn declare(name: &str, help: &str, labels: &[&str], _: Option<&[f64]>) -> Self {
        IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric")
    }
}

impl Declare for CounterVec {
    fn declare(name: &str, help: &str, labels: &[&str], _: Option<&[f64]>) -> Self {
        CounterVec::new(Opts::new(name, help), labels).expect("valid metric")
    }
}

impl Declare for GaugeVec {
    fn declare(name: &str, help: &str, labels: &[&str], _: Option<&[f64]>) -> Self {
        GaugeVec::new(Opts::new(name, help), labels).expect("valid metric")
    }
}

impl Declare for Histogram {
    fn declare(name: &str, help: &str, _: &[&str], buckets: Option<&[f64]>) -> Self {
        let mut opts = HistogramOpts::new(name, help);
        if let Some(b) = buckets {
            opts = opts.buckets(b.to_vec());
        }
        Histogram::with_opts(opts).expect("valid metric")
    }
}

/// Declares every metric once: its field, type, name, help and labels.
/// The struct, the registration and the list of exported names all come
/// from this one table, so they cannot drift apart.
macro_rules! metrics {
    ($( $(#[$doc:meta])* $field:ident: $ty:ident = $name:literal, $help:literal
        $(, [$($label:literal),*])? $(, buckets = $buckets:expr)?; )*) => {
        /// All metrics of one process.
        #[derive(Clone)]
        pub struct Metrics {
            /// The registry `/metrics` renders.
            pub registry: Registry,
            $( $(#[$doc])* pub $field: $ty, )*
        }

        impl Metrics {
            /// Creates and registers every metric.
            pub fn new() -> Self {
                let registry =
                    Registry::new_custom(Some(PREFIX.into()), None).expect("valid prefix");
                let m = Metrics {
                    $( $field: {
                        let buckets: Option<&[f64]> = None $(.or(Some(&$buckets[..])))?;
                        let c = <$ty as Declare>::declare($name, $help, &[$($($label),*)?], buckets);
                        registry.register(Box::new(c.clone())).expect("unique metric names");
                        c
                    }, )*
                    registry,
                };
                m.seed();
                m
            }

            /// The name of every metric family this process exports, whether
            /// or not it has samples yet: deploy artifacts (alert rules,
            /// dashboards) are checked against it so they never reference a
            /// metric that does not exist.
            pub fn family_names(&self) -> Vec<String> {
                let mut names = vec![$( format!("{PREFIX}_{}", $name) ),*];
                names.sort();
                names
            }
        }
    };
}

metrics! {
    /// Valid events by type and outcome.
    events: IntCounterVec = "events_total", "Valid input events by type and outcome", ["type", "outcome"];
    /// Rejected records by error code.
    rejected: IntCounterVec = "events_rejected_total", "Input records sent to the dead-letter queue, by error code", ["code"];
    /// Unknown signal names ignored.
    unknown_signals: IntCounter = "unknown_signals_total", "Unknown signal names ignored";
    /// Outputs by schema.
    outputs: IntCounterVec = "outputs_total", "Output events by schema", ["schema"];
    /// Tier changes by from/to.
    tier_changes: IntCounterVec = "tier_changes_total", "Tier changes by previous and new tier", ["from", "to"];
    /// Time to process and commit one batch.
    batch_seconds: Histogram = "batch_duration_seconds", "Time to process, produce and commit one batch";
    /// Batches committed.
    commits: IntCounter = "commits_total", "Batches committed";
    /// Kafka transactions by result (committed, aborted).
    transactions: IntCounterVec = "transactions_total", "Kafka transactions by result", ["result"];
    /// Time from `begin_transaction` to the end of the commit.
    transaction_seconds: Histogram = "transaction_duration_seconds", "Time from beginning a Kafka transaction to the end of its commit";
    /// Transactional producers dropped and rebuilt after a fatal error.
    producer_rebuilds: IntCounter = "producer_rebuilds_total", "Transactional producers rebuilt after a fatal error or fencing";
    /// Changelog records applied to the local store by restores.
    restored_records: IntCounter = "restored_records_total", "Changelog records applied to the local store by restores";
    /// Tasks assigned but not yet restored (not processing).
    restoring_tasks: IntGauge = "restoring_tasks", "Assigned tasks whose state is still being restored";
    /// Partition moves by kind (assign, revoke).
    rebalances: IntCounterVec = "rebalances_total", "Partition assignments and revocations", ["kind"];
    /// Churn-warning outputs by action and severity.
    churn_warnings: IntCounterVec = "churn_warnings_total", "Churn-warning outputs by action and severity", ["action", "severity"];
    /// The churn risk warnings carry: how far past the opening threshold
    /// the warned customers are (a dashboard's risk distribution).
    churn_warning_risk: Histogram = "churn_warning_risk", "Churn risk carried by churn-warning outputs, opened and updated (cleared ones excluded)", buckets = RISK_BUCKETS;
    /// Warnings opened, by priority: how many calls of each priority the
    /// retention team gets.
    churn_warning_openings: IntCounterVec = "churn_warnings_opened_total", "Churn warnings opened, by priority (1: call first)", ["priority"];
    /// The money those openings put at stake.
    churn_warning_value_at_risk: CounterVec = "churn_warning_value_at_risk_total", "Value at risk (currency units) of opened churn warnings, by priority; a negative value at risk counts as 0", ["priority"];
    /// The percentile cut points in force (value_12m per tier).
    tier_cutpoints: GaugeVec = "tier_cutpoint", "value_12m needed for each tier under the percentile cut points in force", ["tier"];
    /// Customers of the consumer group counted by the last month close.
    ranked_customers: IntGauge = "ranked_customers", "Customers of the consumer group ranked at the last month close (percentile tiers)";
    /// How long tasks waited at month closes for the others' summaries.
    month_close_wait_seconds: Histogram = "month_close_wait_seconds", "Time a task waited at a month close for every task's tier summary (percentile tiers)", buckets = LATENCY_BUCKETS;
    /// Customers of the owned tasks by tier (refreshed periodically).
    customers: IntGaugeVec = "customers", "Customers of the owned tasks by tier", ["tier"];
    /// Customers of the owned tasks by quadrant (refreshed periodically).
    customers_by_quadrant: IntGaugeVec = "customers_by_quadrant", "Customers of the owned tasks by loyalty quadrant (none: no attitudinal evidence)", ["quadrant"];
    /// Records behind the end of each owned input partition.
    consumer_lag: IntGaugeVec = "consumer_lag_records", "Records between the consumer position and the end of each owned input partition", ["topic", "partition"];
    /// From an input record's Kafka timestamp to the commit of its batch.
    event_to_output_seconds: Histogram = "event_to_output_latency_seconds", "From an input record's Kafka timestamp to the commit of its outputs", buckets = LATENCY_BUCKETS;
    /// Time to commit one batch (transaction or acknowledgements + state).
    commit_seconds: Histogram = "commit_duration_seconds", "Time to commit one batch: outputs, changelog, offsets and local state";
    /// 1 once every owned task is restored and the loop is consuming.
    ready: IntGauge = "ready", "1 once every owned task is restored and the loop is consuming";
    /// 1 while the Kafka clients reach a broker (from the producer's and
    /// the consumer's librdkafka statistics, whichever reported last).
    brokers_reachable: IntGauge = "brokers_reachable", "1 while the Kafka clients have a connection up to at least one broker";
    /// Records taken while an empty, caught-up partition of their task was
    /// skipped (event-time alignment could not wait for it).
    enforced_processing: IntCounter = "enforced_processing_total", "Records processed while an empty, caught-up input partition of their task was skipped";
    /// Records fetched into the alignment queues, not yet taken.
    buffered_records: IntGauge = "buffered_records", "Input records fetched into the event-time alignment queues, not yet processed";
    /// Input partitions paused because their alignment queue is full.
    paused_partitions: IntGauge = "paused_partitions", "Input partitions paused because their alignment queue is full";
    /// RocksDB block cache in use.
    rocksdb_block_cache_bytes: IntGauge = "rocksdb_block_cache_usage_bytes", "RocksDB shared block cache in use";
    /// RocksDB memtables, all column families.
    rocksdb_memtable_bytes: IntGauge = "rocksdb_memtable_bytes", "RocksDB memtables of all column families";
    /// Bytes RocksDB estimates compaction still has to rewrite.
    rocksdb_pending_compaction_bytes: IntGauge = "rocksdb_pending_compaction_bytes", "Bytes RocksDB estimates compaction still has to rewrite";
    /// 1 while RocksDB delays or stops writes.
    rocksdb_write_stalled: IntGauge = "rocksdb_write_stalled", "1 while RocksDB delays or stops writes";
}

/// `events_total` of every (type, outcome), resolved once: a
/// `with_label_values` per event would hash its labels every time.
#[derive(Clone)]
pub struct EventCounters([[IntCounter; Outcome::COUNT]; EventType::COUNT]);

impl EventCounters {
    /// The counters of `metrics`, every series created (at zero).
    pub fn new(metrics: &Metrics) -> Self {
        let types: Vec<EventType> = EventType::iter().collect();
        let outcomes: Vec<Outcome> = Outcome::iter().collect();
        EventCounters(std::array::from_fn(|t| {
            std::array::from_fn(|o| {
                let outcome: &'static str = outcomes[o].into();
                metrics
                    .events
                    .with_label_values(&[types[t].as_str(), outcome])
            })
        }))
    }

    /// Counts one valid event.
    pub fn inc(&self, t: EventType, outcome: Outcome) {
        self.0[t as usize][outcome as usize].inc();
    }
}

/// The output counters (`outputs_total`, `tier_changes_total`,
/// `churn_warnings_total`), each series resolved on its first use and kept:
/// the `/metrics` page shows only series that happened, as before, but an
/// output costs an array index instead of hashing its labels.
pub struct OutputCounters {
    metrics: Metrics,
    /// Per output kind, in the order of [`kind_slot`].
    outputs: [OnceLock<IntCounter>; 5],
    /// Per previous tier (none first) and new tier.
    tier_changes: [[OnceLock<IntCounter>; Tier::COUNT]; Tier::COUNT + 1],
    /// Per warning action and severity.
    churn_warnings: [[OnceLock<IntCounter>; Severity::COUNT]; WarningAction::COUNT],
    /// Openings and their value at risk, per priority (1 first).
    openings: [OnceLock<(IntCounter, Counter)>; PRIORITIES as usize],
}

/// The slot of an output's kind (its schema) in [`OutputCounters`].
fn kind_slot(body: &OutputBody) -> usize {
    match body {
        OutputBody::TierChanged { .. } => 0,
        OutputBody::TierAtRisk { .. } => 1,
        OutputBody::ChurnWarning(_) => 2,
        OutputBody::Profile(_) | OutputBody::ProfileErased => 3,
        OutputBody::TierCutpoints(_) => 4,
    }
}

impl OutputCounters {
    /// Counters over `metrics`' output vectors.
    pub fn new(metrics: &Metrics) -> Self {
        OutputCounters {
            metrics: metrics.clone(),
            outputs: Default::default(),
            tier_changes: Default::default(),
            churn_warnings: Default::default(),
            openings: Default::default(),
        }
    }

    /// Counts one output.
    pub fn inc(&self, o: &Output) {
        let m = &self.metrics;
        self.outputs[kind_slot(&o.body)]
            .get_or_init(|| m.outputs.with_label_values(&[o.schema()]))
            .inc();
        match &o.body {
            OutputBody::TierChanged { from, to, .. } => {
                let from_slot = from.map_or(0, |t| t as usize + 1);
                self.tier_changes[from_slot][*to as usize]
                    .get_or_init(|| {
                        let from = from.map_or("none", |t| t.as_str());
                        m.tier_changes.with_label_values(&[from, to.as_str()])
                    })
                    .inc();
            }
            OutputBody::TierCutpoints(c) => {
                for (tier, cut) in [
                    (Tier::Platinum, c.platinum),
                    (Tier::Gold, c.gold),
                    (Tier::Iron, c.iron),
                ] {
                    m.tier_cutpoints
                        .with_label_values(&[tier.as_str()])
                        .set(cut as f64 / 100.0);
                }
                m.ranked_customers.set(c.customers as i64);
            }
            OutputBody::ChurnWarning(w) => {
                self.churn_warnings[w.action as usize][w.severity as usize]
                    .get_or_init(|| {
                        m.churn_warnings
                            .with_label_values(&[w.action.as_str(), w.severity.as_str()])
                    })
                    .inc();
                if w.action != WarningAction::Cleared {
                    if let Some(r) = &w.risk {
                        m.churn_warning_risk.observe(r.value);
                    }
                }
                if let (WarningAction::Opened, Some(stake)) = (w.action, w.stake) {
                    let (count, money) = self.openings[usize::from(stake.priority) - 1]
                        .get_or_init(|| {
                            let label = stake.priority.to_string();
                            (
                                m.churn_warning_openings.with_label_values(&[&label]),
                                m.churn_warning_value_at_risk.with_label_values(&[&label]),
                            )
                        });
                    count.inc();
                    money.inc_by(stake.value_at_risk.max(0) as f64 / 100.0);
                }
            }
            _ => {}
        }
    }
}

impl Metrics {
    /// Series that exist from the start (at zero), so dashboards and
    /// alerts see them before the first event of their kind.
    fn seed(&self) {
        for r in ["committed", "aborted"] {
            self.transactions.with_label_values(&[r]);
        }
        for c in ErrorCode::ALL {
            self.rejected.with_label_values(&[c.as_str()]);
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

    /// The upper bound of the bucket the `q` quantile of a histogram's
    /// samples falls in (`f64::INFINITY` past the last bucket; `None`
    /// without samples): a bound, as exact as the buckets are fine.
    pub fn quantile_bound(h: &Histogram, q: f64) -> Option<f64> {
        use prometheus::core::Collector;
        let families = h.collect();
        let hist = families.first()?.get_metric().first()?.get_histogram();
        let count = hist.get_sample_count();
        if count == 0 {
            return None;
        }
        let rank = (q * count as f64).ceil().max(1.0) as u64;
        Some(
            hist.get_bucket()
                .iter()
                .find(|b| b.cumulative_count() >= rank)
                .map_or(f64::INFINITY, |b| b.upper_bound()),
        )
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::time::Millis;

    /// Outputs counted through the pre-resolved handles land in the same
    /// series `with_label_values` gives, and only series that happened
    /// exist.
    #[test]
    fn output_counters_count_into_the_labelled_series() {
        use crate::config::Config;
        use crate::domain::engine::Engine;
        use crate::pipeline::processor::Processor;
        use crate::store::memory::MemoryStore;
        use crate::store::session::TaskState;
        use crate::store::TaskId;
        let cfg = Config::defaults();
        let m = Metrics::new();
        let p = Processor::new(Engine::new(cfg.policy()), cfg.decode_rules(), m.clone());
        let store = MemoryStore::new();
        let mut task = TaskState::open(TaskId::new(0), &store, 1 << 20).unwrap();
        let mut out = Vec::new();
        for (i, amount) in [(1, "10.00"), (2, "900000.00")] {
            let line = format!(
                r#"{{"event_id":"e{i}","type":"purchase","customer_id":"c1","ts":"2025-01-0{i}T10:00:00Z","amount":{amount},"margin":{amount}}}"#
            );
            p.process(
                &mut task,
                &store,
                line.as_bytes(),
                Millis::from_ms(i64::MAX / 2),
                &mut out,
            )
            .unwrap();
        }
        let mut changes = Metrics::series(&m.tier_changes);
        changes.sort();
        assert_eq!(
            changes,
            vec![
                (vec!["iron".to_owned(), "platinum".to_owned()], 1),
                (vec!["none".to_owned(), "iron".to_owned()], 1),
            ]
        );
        assert_eq!(
            Metrics::series(&m.outputs),
            vec![(vec!["tierstream.tier_changed.v1".to_owned()], 2)]
        );
    }

    #[test]
    fn a_quantile_is_bounded_by_the_bucket_it_falls_in() {
        let m = Metrics::new();
        let h = &m.event_to_output_seconds;
        assert_eq!(Metrics::quantile_bound(h, 0.99), None, "no samples");
        for _ in 0..99 {
            h.observe(0.06);
        }
        h.observe(0.12);
        assert_eq!(Metrics::quantile_bound(h, 0.99), Some(0.075));
        h.observe(0.12);
        assert_eq!(Metrics::quantile_bound(h, 0.99), Some(0.15));
        assert_eq!(Metrics::quantile_bound(h, 0.5), Some(0.075));
        h.observe(400.0);
        assert_eq!(Metrics::quantile_bound(h, 1.0), Some(f64::INFINITY));
    }

    #[test]
    fn every_declared_metric_is_registered_once_and_exported() {
        let m = Metrics::new();
        m.event_to_output_seconds.observe(120.0);
        m.enforced_processing.inc();
        let gathered: Vec<String> = m
            .registry
            .gather()
            .iter()
            .map(|f| f.name().to_owned())
            .collect();
        let names = m.family_names();
        assert_eq!(names.len(), 34);
        for g in &gathered {
            assert!(names.contains(g), "{g} is exported but not declared");
        }
        let latency = m.event_to_output_seconds.get_sample_count();
        assert_eq!(latency, 1);
        let upper: Vec<f64> = m
            .registry
            .gather()
            .iter()
            .find(|f| f.name() == "tierstream_event_to_output_latency_seconds")
            .unwrap()
            .get_metric()[0]
            .get_histogram()
            .get_bucket()
            .iter()
            .map(|b| b.upper_bound())
            .collect();
        assert_eq!(upper, LATENCY_BUCKETS, "the declared buckets");
    }
}
