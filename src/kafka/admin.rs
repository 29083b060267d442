//! Topic administration at start: create what is missing, and check that
//! the input topics are co-partitioned (SPEC §7: a task is one partition
//! number across all input topics).

use crate::config::KafkaConfig;
use anyhow::{bail, Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;
use std::sync::Arc;
use std::time::Duration;

/// A client for metadata lookups. They block (librdkafka has no async
/// metadata call), so every lookup runs on tokio's blocking pool: an
/// unreachable broker stalls a blocking thread, never the async workers
/// that serve HTTP and signals.
pub type MetadataClient = Arc<BaseConsumer>;

/// Every topic the pipeline reads or writes.
pub fn all_topics(cfg: &KafkaConfig) -> Vec<String> {
    let mut topics = cfg.input_topics.clone();
    topics.push(cfg.tier_topic.clone());
    topics.push(cfg.warning_topic.clone());
    topics.push(cfg.dlq_topic.clone());
    if !cfg.profile_topic.is_empty() {
        topics.push(cfg.profile_topic.clone());
    }
    topics
}

/// Creates the topics that do not exist yet; existing ones are left alone.
pub async fn ensure_topics(cfg: &KafkaConfig) -> Result<()> {
    let topics = all_topics(cfg);
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|t| {
            let topic = NewTopic::new(
                t,
                cfg.topic_partitions,
                TopicReplication::Fixed(cfg.replication_factor),
            );
            // The profiles topic keeps only the latest record per customer.
            if *t == cfg.profile_topic {
                topic.set("cleanup.policy", "compact")
            } else {
                topic
            }
        })
        .collect();
    create(cfg, &new).await
}

/// Creates the summaries topic of percentile tiers if it is missing: one
/// partition (a total order, and a few records a month), compacted.
pub async fn ensure_summaries(cfg: &KafkaConfig) -> Result<String> {
    let topic = super::summaries::topic(cfg);
    if cfg.create_topics {
        let new = NewTopic::new(&topic, 1, TopicReplication::Fixed(cfg.replication_factor))
            .set("cleanup.policy", "compact");
        create(cfg, &[new]).await?;
    }
    Ok(topic)
}

/// Creates the compacted state changelog with one partition per task if it
/// is missing, then checks that it has exactly `partitions` partitions: a
/// changelog partitioned differently from the input would restore tasks
/// from the wrong records.
pub async fn ensure_changelog(
    cfg: &KafkaConfig,
    probe: &MetadataClient,
    partitions: u32,
) -> Result<String> {
    let topic = super::changelog::topic(cfg);
    if cfg.create_topics {
        let new = NewTopic::new(
            &topic,
            partitions as i32,
            TopicReplication::Fixed(cfg.replication_factor),
        )
        .set("cleanup.policy", "compact");
        create(cfg, &[new]).await?;
    }
    match partition_count(probe, &topic).await? {
        0 => bail!("the state changelog topic {topic} does not exist (set kafka.create_topics = true or create it, compacted, with {partitions} partitions)"),
        n if n == partitions as usize => Ok(topic),
        n => bail!("the state changelog topic {topic} has {n} partitions but the input topics have {partitions}; they must match (one changelog partition per task)"),
    }
}

async fn create(cfg: &KafkaConfig, new: &[NewTopic<'_>]) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = super::client_config(cfg)
        .create()
        .context("creating the Kafka admin client")?;
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin
        .create_topics(new, &opts)
        .await
        .with_context(|| {
            format!(
                "creating topics on {} (is the broker reachable, and are the security settings in kafka.properties right?)",
                cfg.bootstrap_servers
            )
        })?
    {
        match result {
            Ok(topic) => tracing::info!(topic, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, e)) => bail!("could not create topic {topic}: {e}"),
        }
    }
    Ok(())
}

/// Partitions of `topic`, 0 when it does not exist.
async fn partition_count(probe: &MetadataClient, topic: &str) -> Result<usize> {
    let (probe, name) = (probe.clone(), topic.to_owned());
    let md = tokio::task::spawn_blocking(move || {
        probe.fetch_metadata(Some(&name), Duration::from_secs(30))
    })
    .await
    .context("the metadata lookup panicked")?
    .with_context(|| format!("fetching metadata of topic {topic}"))?;
    Ok(md
        .topics()
        .first()
        .filter(|t| t.error().is_none())
        .map(|t| t.partitions().len())
        .unwrap_or(0))
}

/// Returns the common partition count of the input topics, or an error
/// naming the topics that differ or are missing.
pub async fn input_partitions(probe: &MetadataClient, cfg: &KafkaConfig) -> Result<u32> {
    let mut counts = Vec::new();
    for topic in &cfg.input_topics {
        let n = partition_count(probe, topic).await?;
        if n == 0 {
            bail!(
                "input topic {topic} does not exist (set kafka.create_topics = true or create it)"
            );
        }
        counts.push((topic.clone(), n));
    }
    let first = counts[0].1;
    if counts.iter().any(|(_, n)| *n != first) {
        let list: Vec<String> = counts.iter().map(|(t, n)| format!("{t}={n}")).collect();
        bail!(
            "input topics must have the same partition count (one task per partition number): {}",
            list.join(", ")
        );
    }
    Ok(first as u32)
}
