//! `tierstream tail`: read topics from the beginning as a `read_committed`
//! consumer and print every record. For demos, smoke tests and operators
//! who want to see what the pipeline emitted without extra tools.

use super::client_config;
use crate::config::KafkaConfig;
use anyhow::{Context, Result};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};
use std::time::Duration;

/// One consumed record, as `tail` prints it.
#[derive(Debug, Clone, PartialEq)]
pub struct TailRecord {
    /// Topic it came from.
    pub topic: String,
    /// Partition it came from.
    pub partition: i32,
    /// Its key as text (lossy).
    pub key: Option<String>,
    /// Its headers as text (lossy).
    pub headers: Vec<(String, String)>,
    /// Its payload bytes.
    pub payload: Vec<u8>,
}

impl TailRecord {
    /// The record as one JSON object: metadata plus the payload, parsed
    /// when it is JSON and as a string otherwise.
    pub fn to_json(&self) -> Value {
        let value = serde_json::from_slice::<Value>(&self.payload)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&self.payload).into_owned()));
        let headers: serde_json::Map<String, Value> = self
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        json!({"topic": self.topic, "partition": self.partition, "key": self.key, "headers": headers, "value": value})
    }
}

/// Reads `topics` from the beginning until `max` records were read or no
/// record arrived for `idle`. Partitions are assigned directly, not through
/// a consumer group, so concurrent tails never rebalance each other into
/// reading a record twice.
pub async fn tail(
    cfg: &KafkaConfig,
    topics: &[String],
    max: Option<usize>,
    idle: Duration,
) -> Result<Vec<TailRecord>> {
    let consumer: StreamConsumer = client_config(cfg)
        .set("group.id", "tierstream-tail")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .context("creating the tail consumer")?;
    let mut assignment = TopicPartitionList::new();
    for topic in topics {
        let md = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(30))
            .with_context(|| format!("fetching metadata of {topic}"))?;
        for t in md.topics() {
            for p in t.partitions() {
                assignment.add_partition_offset(topic, p.id(), Offset::Beginning)?;
            }
        }
    }
    consumer
        .assign(&assignment)
        .context("assigning partitions")?;
    let mut out = Vec::new();
    while max.is_none_or(|m| out.len() < m) {
        match tokio::time::timeout(idle, consumer.recv()).await {
            Err(_) => break,
            Ok(Err(e)) => tracing::warn!(error = %e, "consumer error"),
            Ok(Ok(m)) => out.push(TailRecord {
                topic: m.topic().to_owned(),
                partition: m.partition(),
                key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                headers: m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                (
                                    h.key.to_owned(),
                                    h.value
                                        .map(|v| String::from_utf8_lossy(v).into_owned())
                                        .unwrap_or_default(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                payload: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            }),
        }
    }
    Ok(out)
}
