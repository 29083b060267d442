//! The records we write: outputs with their schema header, and dead-letter
//! records with the original bytes and the error headers of SPEC §1.

use crate::codec::input::Rejection;
use crate::codec::output::to_bytes;
use crate::config::KafkaConfig;
use crate::domain::output::{Output, OutputBody};
use rdkafka::message::{Header, OwnedHeaders};

/// Header naming an output's schema.
pub const SCHEMA_HEADER: &str = "tierstream.schema";

/// An output ready to produce: key, payload and headers.
pub struct OutRecord {
    /// Destination topic.
    pub topic: String,
    /// Message key (`None` for a keyless input sent to the DLQ).
    pub key: Option<Vec<u8>>,
    /// Message value (`None`: a tombstone).
    pub payload: Option<Vec<u8>>,
    /// Message headers.
    pub headers: OwnedHeaders,
}

/// The topic an output goes to.
pub fn topic_for<'a>(cfg: &'a KafkaConfig, o: &Output) -> &'a str {
    match o.body {
        OutputBody::TierChanged { .. } | OutputBody::TierAtRisk { .. } => &cfg.tier_topic,
        OutputBody::ChurnWarning(_) => &cfg.warning_topic,
        OutputBody::Profile(_) | OutputBody::ProfileErased => &cfg.profile_topic,
    }
}

/// An output for its topic, keyed by customer id, with the schema header.
pub fn output_record(cfg: &KafkaConfig, o: &Output) -> OutRecord {
    OutRecord {
        topic: topic_for(cfg, o).to_owned(),
        key: Some(o.customer_id.as_bytes().to_vec()),
        payload: to_bytes(o),
        headers: OwnedHeaders::new().insert(Header {
            key: SCHEMA_HEADER,
            value: Some(o.schema()),
        }),
    }
}

/// Where a rejected record came from.
pub struct Source<'a> {
    /// Input topic.
    pub topic: &'a str,
    /// Input partition.
    pub partition: i32,
    /// Input offset.
    pub offset: i64,
    /// Original key, kept so the DLQ stays partitioned like the input.
    pub key: Option<&'a [u8]>,
}

/// A dead-letter record: the original bytes, untouched, plus error headers.
pub fn dlq_record(topic: &str, payload: &[u8], r: &Rejection, src: &Source) -> OutRecord {
    let partition = src.partition.to_string();
    let offset = src.offset.to_string();
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "tierstream.error.code",
            value: Some(r.code.as_str()),
        })
        .insert(Header {
            key: "tierstream.error.message",
            value: Some(r.message.as_str()),
        })
        .insert(Header {
            key: "tierstream.source.topic",
            value: Some(src.topic),
        })
        .insert(Header {
            key: "tierstream.source.partition",
            value: Some(partition.as_str()),
        })
        .insert(Header {
            key: "tierstream.source.offset",
            value: Some(offset.as_str()),
        });
    OutRecord {
        topic: topic.to_owned(),
        key: src.key.map(<[u8]>::to_vec),
        payload: Some(payload.to_vec()),
        headers,
    }
}
