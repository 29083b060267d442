//! Who in the consumer group owns a partition: read from the group
//! coordinator's member list (each member's assignment, in the consumer
//! protocol's wire format). Lets an instance answer a query for a customer
//! it does not own with the instance that does.

use super::client_config;
use crate::config::KafkaConfig;
use anyhow::{Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::time::Duration;

/// A group member, as the coordinator reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its `client.id`: the pipeline sets it to the instance id.
    pub client_id: String,
    /// The host it connects from.
    pub host: String,
}

/// Looks up partition owners in the pipeline's group through one client,
/// created once and reused by every query (a client per query would pay a
/// connection and a metadata round trip each time). Its calls block: call
/// them from a blocking thread.
pub struct Owners {
    client: BaseConsumer,
    group_id: String,
}

impl Owners {
    /// A lookup client for `cfg`'s broker and group.
    pub fn new(cfg: &KafkaConfig) -> Result<Self> {
        let client = client_config(cfg)
            .create()
            .context("creating a group lookup client")?;
        Ok(Owners {
            client,
            group_id: cfg.group_id.clone(),
        })
    }

    /// The member of the group that owns `partition` of `topic`.
    pub fn owner(&self, topic: &str, partition: i32) -> Result<Option<Member>> {
        let groups = self
            .client
            .fetch_group_list(Some(&self.group_id), Duration::from_secs(10))
            .context("describing the consumer group")?;
        for group in groups.groups() {
            for m in group.members() {
                let owns = m
                    .assignment()
                    .and_then(parse_assignment)
                    .is_some_and(|a| a.iter().any(|(t, p)| t == topic && *p == partition));
                if owns {
                    return Ok(Some(Member {
                        client_id: m.client_id().to_owned(),
                        host: m.client_host().trim_start_matches('/').to_owned(),
                    }));
                }
            }
        }
        Ok(None)
    }
}

/// Decodes a consumer-protocol assignment: version (i16), then topics
/// (i32 count) each with a name (i16 length + bytes) and partitions (i32
/// count of i32). User data after that is ignored.
pub fn parse_assignment(bytes: &[u8]) -> Option<Vec<(String, i32)>> {
    let mut r = Reader(bytes);
    r.i16()?;
    let topics = r.i32()?;
    let mut out = Vec::new();
    for _ in 0..topics.max(0) {
        let len = usize::try_from(r.i16()?).ok()?;
        let topic = std::str::from_utf8(r.take(len)?).ok()?.to_owned();
        for _ in 0..r.i32()?.max(0) {
            out.push((topic.clone(), r.i32()?));
        }
    }
    Some(out)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(topics: &[(&str, &[i32])]) -> Vec<u8> {
        let mut b = 1i16.to_be_bytes().to_vec();
        b.extend((topics.len() as i32).to_be_bytes());
        for (t, ps) in topics {
            b.extend((t.len() as i16).to_be_bytes());
            b.extend(t.as_bytes());
            b.extend((ps.len() as i32).to_be_bytes());
            for p in *ps {
                b.extend(p.to_be_bytes());
            }
        }
        b.extend((-1i32).to_be_bytes()); // no user data
        b
    }

    #[test]
    fn assignments_decode_and_truncation_is_refused() {
        let bytes = encode(&[("purchases", &[0, 2]), ("complaints", &[1])]);
        assert_eq!(
            parse_assignment(&bytes).unwrap(),
            vec![
                ("purchases".to_owned(), 0),
                ("purchases".to_owned(), 2),
                ("complaints".to_owned(), 1)
            ]
        );
        assert_eq!(parse_assignment(&bytes[..12]), None);
        assert_eq!(parse_assignment(&encode(&[])).unwrap(), vec![]);
    }
}
