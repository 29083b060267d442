//! `tierstream tail`: read topics from the beginning as a `read_committed`
//! consumer and print every record. For demos, smoke tests and operators
//! who want to see what the pipeline emitted without extra tools.

use super::client_config;
use crate::config::KafkaConfig;
use anyhow::{bail, Context, Result};
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

/// Where `tail` starts reading each partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TailFrom {
    /// The first record.
    Beginning,
    /// The first record with a timestamp at or after these epoch ms.
    Time(i64),
}

/// When `tail` stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TailUntil {
    /// After this many records.
    pub max: Option<usize>,
    /// When no record arrived for this long; `None`: follow forever.
    pub idle: Option<Duration>,
}

/// Reads `topics` from the beginning until `max` records were read or no
/// record arrived for `idle`, and returns them.
pub async fn tail(
    cfg: &KafkaConfig,
    topics: &[String],
    max: Option<usize>,
    idle: Duration,
) -> Result<Vec<TailRecord>> {
    let mut out = Vec::new();
    let until = TailUntil {
        max,
        idle: Some(idle),
    };
    tail_each(cfg, topics, TailFrom::Beginning, until, |r| {
        out.push(r);
        Ok(())
    })
    .await?;
    Ok(out)
}

/// Streams the records of `topics` to `each` as they arrive, from `from`
/// until `until`. Partitions are assigned directly, not through a consumer
/// group, so concurrent tails never rebalance each other into reading a
/// record twice. A topic that does not exist is an error naming it.
pub async fn tail_each(
    cfg: &KafkaConfig,
    topics: &[String],
    from: TailFrom,
    until: TailUntil,
    mut each: impl FnMut(TailRecord) -> Result<()>,
) -> Result<()> {
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
        let found = md
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty());
        let Some(t) = found else {
            bail!("topic {topic} does not exist on {} (check the name, or the kafka section of the config)", cfg.bootstrap_servers);
        };
        let offset = match from {
            TailFrom::Beginning => Offset::Beginning,
            TailFrom::Time(ms) => Offset::Offset(ms),
        };
        for p in t.partitions() {
            assignment.add_partition_offset(topic, p.id(), offset)?;
        }
    }
    if let TailFrom::Time(_) = from {
        // The offsets hold timestamps: look up the first offset at or after
        // each (the end where there is none).
        assignment = consumer
            .offsets_for_times(assignment, Duration::from_secs(30))
            .context("looking up offsets for --from-time")?;
    }
    consumer
        .assign(&assignment)
        .context("assigning partitions")?;
    let mut read = 0usize;
    while until.max.is_none_or(|m| read < m) {
        let received = match until.idle {
            Some(idle) => match tokio::time::timeout(idle, consumer.recv()).await {
                Err(_) => break,
                Ok(r) => r,
            },
            None => consumer.recv().await,
        };
        match received {
            Err(e) => tracing::warn!(error = %e, "consumer error"),
            Ok(m) => {
                read += 1;
                each(TailRecord {
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
                })?;
            }
        }
    }
    Ok(())
}
