//! The group consumer as the run loop's [`Source`]: one librdkafka queue
//! per owned input partition (split from the consumer's queue so that the
//! end of a partition names its topic), the consumer's own queue for
//! rebalances and statistics, and a doorbell every queue rings when it
//! turns non-empty.

use super::doorbell::Doorbell;
use super::rebalance::RebalanceContext;
use super::summaries::{SummaryReader, TaskSummary};
use crate::pipeline::align::{PartitionGroups, RankedPartition};
use crate::pipeline::batch::InRecord;
use crate::pipeline::ports::{ConsumerFailed, Moves, Position, Source, TopicPartition};
use anyhow::Context;
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// Timeout of committed-offset lookups and seeks.
const OFFSETS_TIMEOUT: Duration = Duration::from_secs(30);

/// The consumer, its partition queues and their doorbell.
pub struct KafkaSource {
    /// librdkafka's queue of each owned input partition. (Declared before
    /// the consumer: queues go before the client does.)
    queues: HashMap<RankedPartition, PartitionQueue<RebalanceContext>>,
    consumer: Arc<BaseConsumer<RebalanceContext>>,
    doorbell: Arc<Doorbell>,
    /// `kafka.input_topics`: a topic's place is its rank.
    topics: Vec<String>,
    /// The tier-summaries reader, under percentile tiers.
    summaries: Option<SummaryReader>,
}

impl KafkaSource {
    /// Wraps a subscribed consumer; every queue of it rings one doorbell.
    pub fn new(mut consumer: BaseConsumer<RebalanceContext>, topics: Vec<String>) -> Self {
        let doorbell = Arc::new(Doorbell::default());
        let bell = doorbell.clone();
        consumer.set_nonempty_callback(move || bell.ring());
        KafkaSource {
            queues: HashMap::new(),
            consumer: Arc::new(consumer),
            doorbell,
            topics,
            summaries: None,
        }
    }

    /// Also reads the tier summaries of percentile tiers.
    pub fn with_summaries(mut self, reader: SummaryReader) -> Self {
        self.summaries = Some(reader);
        self
    }

    /// The consumer (the transactional sink commits offsets with its group
    /// metadata).
    pub fn consumer(&self) -> Arc<BaseConsumer<RebalanceContext>> {
        self.consumer.clone()
    }

    fn rank(&self, topic: &str) -> Option<usize> {
        self.topics.iter().position(|t| t == topic)
    }

    /// Gives `tp` its own librdkafka queue, ringing the doorbell.
    fn split(&mut self, (topic, partition): &TopicPartition) {
        let Some(rank) = self.rank(topic) else {
            return;
        };
        match self.consumer.split_partition_queue(topic, *partition) {
            Some(mut queue) => {
                let bell = self.doorbell.clone();
                queue.set_nonempty_callback(move || bell.ring());
                self.queues.insert((rank, *partition), queue);
            }
            None => tracing::warn!(topic, partition, "could not split a partition queue"),
        }
    }
}

fn list(partitions: &[TopicPartition]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for (topic, p) in partitions {
        tpl.add_partition(topic, *p);
    }
    tpl
}

impl Drop for KafkaSource {
    /// Partition queues hold the client: release them before it closes.
    fn drop(&mut self) {
        self.queues.clear();
    }
}

impl Source for KafkaSource {
    fn take_moves(&mut self) -> Moves {
        self.consumer.context().take()
    }

    fn rebalance_pending(&self) -> bool {
        self.consumer.context().pending()
    }

    fn track(&mut self, owned: &BTreeSet<TopicPartition>, assigned: bool) {
        let ranked: BTreeSet<RankedPartition> = owned
            .iter()
            .filter_map(|(t, p)| Some((self.rank(t)?, *p)))
            .collect();
        self.queues.retain(|tp, _| ranked.contains(tp));
        if assigned {
            // An assignment re-attaches every partition to the consumer's
            // queue: split them all again.
            for tp in owned {
                self.split(tp);
            }
        }
    }

    /// An end of partition here carries no topic; the partition's own
    /// queue reports it. Stops at a rebalance so the loop can act on it.
    fn serve(&mut self, groups: &mut PartitionGroups) -> usize {
        let mut fetched = 0;
        while let Some(polled) = self.consumer.poll(Duration::ZERO) {
            match polled {
                Ok(m) => {
                    if let Some(rank) = self.rank(m.topic()) {
                        let tp = (rank, m.partition());
                        fetched += usize::from(groups.push(tp, InRecord::from_message(&m)));
                    }
                }
                Err(KafkaError::PartitionEOF(_)) => {}
                Err(e) => tracing::warn!(error = %e, "consumer error"),
            }
            if self.consumer.context().pending() {
                break;
            }
        }
        fetched
    }

    fn fatal(&self) -> Option<ConsumerFailed> {
        let (code, reason) = self.consumer.client().fatal_error()?;
        let fenced = code == RDKafkaErrorCode::FencedInstanceId;
        let reason = if fenced {
            format!(
                "{reason}: another process joined the consumer group with this instance's \
                 id (group.instance.id); give every instance its own kafka.instance_id"
            )
        } else {
            format!("{reason} ({code:?})")
        };
        Some(ConsumerFailed { fenced, reason })
    }

    fn fill(&mut self, groups: &mut PartitionGroups, task: Option<i32>) -> usize {
        let mut fetched = 0;
        for (&tp, queue) in &self.queues {
            if task.is_some_and(|t| t != tp.1) {
                continue;
            }
            while groups.has_room(tp) {
                match queue.poll(Duration::ZERO) {
                    None => break,
                    Some(Ok(m)) => {
                        fetched += usize::from(groups.push(tp, InRecord::from_message(&m)))
                    }
                    Some(Err(KafkaError::PartitionEOF(_))) => groups.caught_up(tp),
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "consumer error");
                        break;
                    }
                }
            }
        }
        fetched
    }

    fn pause(&self, partitions: &[TopicPartition]) -> anyhow::Result<()> {
        Ok(self.consumer.pause(&list(partitions))?)
    }

    fn resume(&self, partitions: &[TopicPartition]) -> anyhow::Result<()> {
        Ok(self.consumer.resume(&list(partitions))?)
    }

    fn committed(
        &self,
        partitions: &[TopicPartition],
    ) -> anyhow::Result<Vec<(TopicPartition, Option<i64>)>> {
        let committed = self
            .consumer
            .committed_offsets(list(partitions), OFFSETS_TIMEOUT)
            .context("reading committed offsets")?;
        Ok(committed
            .elements()
            .iter()
            .map(|e| {
                let offset = match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                };
                ((e.topic().to_owned(), e.partition()), offset)
            })
            .collect())
    }

    fn seek(&self, to: &[(TopicPartition, Position)]) -> anyhow::Result<()> {
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), position) in to {
            let offset = match position {
                Position::Offset(o) => Offset::Offset(*o),
                Position::Beginning => Offset::Beginning,
                Position::End => Offset::End,
            };
            tpl.add_partition_offset(topic, *partition, offset)?;
        }
        let result = self
            .consumer
            .seek_partitions(tpl, OFFSETS_TIMEOUT)
            .context("seeking")?;
        for e in result.elements() {
            if let Err(err) = e.error() {
                anyhow::bail!("seeking {}/{}: {err}", e.topic(), e.partition());
            }
        }
        Ok(())
    }

    fn arm(&self) {
        self.doorbell.clear();
    }

    fn summaries(&mut self) -> Vec<TaskSummary> {
        self.summaries
            .as_ref()
            .map_or_else(Vec::new, SummaryReader::poll)
    }

    fn wait(&self, max: Duration) {
        self.doorbell.wait(max);
    }
}
