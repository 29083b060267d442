//! What the consumer group did to this instance's partitions, recorded by
//! the consumer's rebalance callbacks for the run loop to act on.
//!
//! The callbacks run inside `poll`, on the loop's own thread, and only
//! record: the loop never has a Kafka transaction open while it polls (a
//! batch's transaction begins after the batch is collected and ends before
//! the next poll), so on revoke there is nothing to finish — the records
//! of revoked partitions that were polled but not yet committed are simply
//! dropped, and their new owner reads them from the committed offsets. (A
//! batch processed but left to commit with the next one is dropped too,
//! and every task rewound, see `Runner::apply_moves`.)
//! Newly assigned partitions are paused right away, so no record of a task
//! is handed out before the task's state is restored.

use crate::kafka::{any_broker_up, log_client_error};
use crate::ops::metrics::Metrics;
use crate::ops::status::BrokerLink;
use crate::pipeline::ports::{Moves, TopicPartition};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, TopicPartitionList};
use std::sync::Mutex;

/// The consumer context: records rebalances and counts them, and notes
/// from the periodic statistics whether any broker is reachable.
pub struct RebalanceContext {
    moves: Mutex<Moves>,
    metrics: Metrics,
    /// Where broker reachability is reported.
    link: BrokerLink,
}

impl RebalanceContext {
    /// A context counting into `metrics`.
    pub fn new(metrics: Metrics, link: BrokerLink) -> Self {
        RebalanceContext {
            moves: Mutex::new(Moves::default()),
            metrics,
            link,
        }
    }

    /// Where this consumer reports broker reachability (the producer of
    /// the same pipeline reports there too).
    pub fn broker_link(&self) -> BrokerLink {
        self.link.clone()
    }

    /// Takes the moves recorded since the last call.
    pub fn take(&self) -> Moves {
        std::mem::take(&mut *self.moves.lock().expect("rebalance lock"))
    }

    /// Whether there are moves waiting (cheap check inside the poll loop).
    pub fn pending(&self) -> bool {
        !self.moves.lock().expect("rebalance lock").is_empty()
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

impl ClientContext for RebalanceContext {
    fn error(&self, error: KafkaError, reason: &str) {
        log_client_error("group consumer", &error, reason);
    }

    /// librdkafka's periodic statistics carry each partition's end offset
    /// and the position handed to us. (Its own `consumer_lag` is measured
    /// from offsets the consumer committed, and under exactly-once the
    /// offsets are committed by the producer's transaction instead.)
    fn stats(&self, statistics: Statistics) {
        self.link.set(any_broker_up(&statistics));
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                if *partition < 0 {
                    continue; // librdkafka's internal unassigned partition
                }
                let labels = [topic.as_str(), &partition.to_string()];
                // read_committed: the end we can read is the last stable offset.
                let end = if p.ls_offset >= 0 {
                    p.ls_offset
                } else {
                    p.hi_offset
                };
                let position = if p.app_offset >= 0 {
                    p.app_offset
                } else {
                    p.committed_offset
                };
                if p.desired && end >= 0 && position >= 0 {
                    self.metrics
                        .consumer_lag
                        .with_label_values(&labels)
                        .set((end - position).max(0));
                } else {
                    let _ = self.metrics.consumer_lag.remove_label_values(&labels);
                }
            }
        }
    }
}

impl ConsumerContext for RebalanceContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let revoked = partitions(tpl);
            tracing::info!(partitions = revoked.len(), "partitions revoked");
            self.metrics.rebalances.with_label_values(&["revoke"]).inc();
            self.moves
                .lock()
                .expect("rebalance lock")
                .revoked
                .extend(revoked);
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                if let Err(e) = consumer.pause(tpl) {
                    tracing::warn!(error = %e, "could not pause newly assigned partitions");
                }
                let assigned = partitions(tpl);
                tracing::info!(partitions = assigned.len(), "partitions assigned");
                self.metrics.rebalances.with_label_values(&["assign"]).inc();
                self.moves
                    .lock()
                    .expect("rebalance lock")
                    .assigned
                    .extend(assigned);
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }
}
