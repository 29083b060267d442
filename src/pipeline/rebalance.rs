//! What the consumer group did to this instance's partitions, recorded by
//! the consumer's rebalance callbacks for the run loop to act on.
//!
//! The callbacks run inside `poll`, on the loop's own thread, and only
//! record: the loop never has a Kafka transaction open while it polls (a
//! batch's transaction begins after the batch is collected and ends before
//! the next poll), so on revoke there is nothing to finish — the records
//! of revoked partitions that were polled but not yet committed are simply
//! dropped, and their new owner reads them from the committed offsets.
//! Newly assigned partitions are paused right away, so no record of a task
//! is handed out before the task's state is restored.

use crate::metrics::Metrics;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::{ClientContext, TopicPartitionList};
use std::sync::Mutex;

/// A partition of an input topic.
pub type TopicPartition = (String, i32);

/// Partition moves since the loop last looked.
#[derive(Debug, Default)]
pub struct Moves {
    /// Partitions taken away.
    pub revoked: Vec<TopicPartition>,
    /// Partitions given (paused until their task is restored).
    pub assigned: Vec<TopicPartition>,
}

impl Moves {
    /// Whether nothing moved.
    pub fn is_empty(&self) -> bool {
        self.revoked.is_empty() && self.assigned.is_empty()
    }
}

/// The consumer context: records rebalances and counts them.
pub struct RebalanceContext {
    moves: Mutex<Moves>,
    metrics: Metrics,
}

impl RebalanceContext {
    /// A context counting into `metrics`.
    pub fn new(metrics: Metrics) -> Self {
        RebalanceContext {
            moves: Mutex::new(Moves::default()),
            metrics,
        }
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

impl ClientContext for RebalanceContext {}

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
