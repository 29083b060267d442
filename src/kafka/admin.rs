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
    match partition_count(probe, &topic, cfg.create_topics).await? {
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

/// How often, and how far apart, a topic is looked up before it counts as
/// missing (when it may have just been created) or as broken (when its
/// metadata still carries an error): a topic created a moment ago on a
/// broker started a moment ago can read as unknown, or without a leader,
/// for a second or two.
const LOOKUPS: u32 = 40;
const LOOKUP_STEP: Duration = Duration::from_millis(250);

/// What the metadata says of one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TopicLookup {
    Partitions(usize),
    /// The broker does not know the topic.
    Unknown,
    /// The topic exists but is not usable yet (no leader elected): why.
    NotReady(String),
}

/// Partitions of `topic`, 0 when it does not exist. With `just_created`
/// (the pipeline created what was missing) an unknown topic is looked up
/// again for a while before it counts as missing.
async fn partition_count(probe: &MetadataClient, topic: &str, just_created: bool) -> Result<usize> {
    let (probe, name) = (probe.clone(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let look = || -> Result<TopicLookup> {
            let md = probe
                .fetch_metadata(Some(&name), Duration::from_secs(30))
                .with_context(|| format!("fetching metadata of topic {name}"))?;
            Ok(match md.topics().first() {
                None => TopicLookup::Unknown,
                Some(t) => match t.error().map(RDKafkaErrorCode::from) {
                    Some(RDKafkaErrorCode::UnknownTopicOrPartition) => TopicLookup::Unknown,
                    Some(e) => TopicLookup::NotReady(e.to_string()),
                    None if t.partitions().is_empty() => {
                        TopicLookup::NotReady("no partitions".into())
                    }
                    None => TopicLookup::Partitions(t.partitions().len()),
                },
            })
        };
        settle(&name, look, just_created, LOOKUPS, LOOKUP_STEP)
    })
    .await
    .context("the metadata lookup panicked")?
}

/// Looks a topic up (`look`) until it has partitions, at most `lookups`
/// times `step` apart: its partition count, 0 when it is unknown (at once
/// unless `patient`), an error naming it when it never became usable.
fn settle(
    topic: &str,
    mut look: impl FnMut() -> Result<TopicLookup>,
    patient: bool,
    lookups: u32,
    step: Duration,
) -> Result<usize> {
    let mut attempt = 1;
    loop {
        let last = attempt >= lookups;
        match look()? {
            TopicLookup::Partitions(n) => return Ok(n),
            TopicLookup::Unknown if !patient || last => return Ok(0),
            TopicLookup::NotReady(why) if last => {
                bail!("topic {topic} exists but is not usable: {why}")
            }
            TopicLookup::Unknown | TopicLookup::NotReady(_) => {
                attempt += 1;
                std::thread::sleep(step);
            }
        }
    }
}

/// Returns the common partition count of the input topics, or an error
/// naming the topics that differ or are missing.
pub async fn input_partitions(probe: &MetadataClient, cfg: &KafkaConfig) -> Result<u32> {
    let mut counts = Vec::new();
    for topic in &cfg.input_topics {
        let n = partition_count(probe, topic, cfg.create_topics).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `settle` over a scripted sequence of lookups: its result and how
    /// many lookups it made.
    fn settle_over(script: &[TopicLookup], patient: bool) -> (Result<usize>, usize) {
        let mut made = 0;
        let look = || {
            made += 1;
            Ok(script[made - 1].clone())
        };
        let result = settle("t", look, patient, script.len() as u32, Duration::ZERO);
        (result, made)
    }

    #[test]
    fn a_topic_just_created_is_waited_for_until_it_has_a_leader() {
        use TopicLookup::*;
        let not_ready = || NotReady("Broker: Leader not available".into());
        let script = [Unknown, not_ready(), not_ready(), Partitions(3), Unknown];
        let (n, made) = settle_over(&script, true);
        assert_eq!((n.unwrap(), made), (3, 4));
        // Not created by us: an unknown topic is missing at once...
        let (n, made) = settle_over(&script, false);
        assert_eq!((n.unwrap(), made), (0, 1));
        // ...but one without a leader yet is still waited for.
        let (n, made) = settle_over(&script[1..], false);
        assert_eq!((n.unwrap(), made), (3, 3));
        // Unknown to the end: missing, whoever created it.
        assert_eq!(settle_over(&[Unknown, Unknown], true).0.unwrap(), 0);
        // Never usable: an error naming the topic and why.
        let e = settle_over(&[not_ready(), not_ready()], true)
            .0
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "topic t exists but is not usable: Broker: Leader not available"
        );
    }
}
