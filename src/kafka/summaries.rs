//! The tier-summaries topic of percentile tiers: at each month close every
//! task publishes its value summary (SPEC §3) in the same exactly-once
//! transaction as the state that says it did, and every instance reads
//! the whole topic (read_committed) to merge the summaries of each month.
//!
//! One partition, compacted, named after the consumer group like the state
//! changelog. A record per task and month: key `<task>@<month-close ms>`,
//! a JSON value `{"task", "month", "summary"}` — small (a few hundred
//! buckets at most) and readable with any console consumer. Each key is
//! written once, so compaction never drops a summary a restarted task may
//! still need.

use super::records::OutRecord;
use crate::config::KafkaConfig;
use crate::domain::ranking::ValueHistogram;
use crate::domain::time::Millis;
use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, OwnedHeaders};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The summaries topic of the pipeline's consumer group.
pub fn topic(cfg: &KafkaConfig) -> String {
    format!("{}-tier-summaries", cfg.group_id)
}

/// One task's summary of one month close, as written on the topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSummary {
    /// The task (partition number).
    pub task: u32,
    /// The month-close instant, epoch milliseconds.
    pub month: Millis,
    /// Its customers by value_12m at that month close.
    pub summary: ValueHistogram,
}

/// The record publishing a task's summary.
pub fn record(topic: &str, s: &TaskSummary) -> OutRecord {
    OutRecord {
        topic: topic.to_owned(),
        key: Some(format!("{}@{}", s.task, s.month).into_bytes()),
        payload: Some(serde_json::to_vec(s).expect("a summary serializes")),
        headers: OwnedHeaders::new(),
    }
}

/// Reads the summaries topic from its start, committed records only.
pub struct SummaryReader {
    consumer: BaseConsumer,
}

impl SummaryReader {
    /// A reader of `cfg`'s summaries topic (no group: it always reads all).
    pub fn new(cfg: &KafkaConfig) -> anyhow::Result<Self> {
        let consumer: BaseConsumer = super::client_config(cfg)
            .set(
                "group.id",
                format!("{}-tier-summaries-reader", cfg.group_id),
            )
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .create()
            .context("creating the tier-summaries consumer")?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic(cfg), 0, Offset::Beginning)
            .context("addressing the tier-summaries topic")?;
        consumer
            .assign(&tpl)
            .context("assigning the tier-summaries topic")?;
        Ok(SummaryReader { consumer })
    }

    /// The summaries that arrived since the last call (without waiting).
    /// A record that cannot be read is reported and skipped: a task whose
    /// summary is unreadable is waited for until the wait bound.
    pub fn poll(&self) -> Vec<TaskSummary> {
        let mut got = Vec::new();
        while let Some(m) = self.consumer.poll(Duration::ZERO) {
            match m {
                Ok(m) => match m.payload().map(serde_json::from_slice::<TaskSummary>) {
                    Some(Ok(s)) => got.push(s),
                    other => tracing::warn!(
                        offset = m.offset(),
                        error = ?other.map(|r| r.err()),
                        "unreadable tier summary skipped"
                    ),
                },
                Err(e) => {
                    tracing::warn!(error = %e, "reading the tier-summaries topic");
                    break;
                }
            }
        }
        got
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_round_trips_through_its_record() {
        let mut summary = ValueHistogram::default();
        summary.add(-3);
        summary.add(12_345);
        let s = TaskSummary {
            task: 2,
            month: Millis::from_ms(1_706_745_600_000),
            summary,
        };
        let r = record("g-tier-summaries", &s);
        assert_eq!(r.key.as_deref(), Some(&b"2@1706745600000"[..]));
        let back: TaskSummary = serde_json::from_slice(r.payload.as_deref().unwrap()).unwrap();
        assert_eq!(back, s);
    }
}
