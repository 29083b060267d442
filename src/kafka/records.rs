//! The records we write: outputs with their schema header, and dead-letter
//! records with the original bytes and the error headers of SPEC §1.

use crate::codec::input::Rejection;
use crate::codec::output::{to_bytes, to_cloudevent_bytes};
use crate::config::KafkaConfig;
use crate::domain::output::{Output, OutputBody};
use rdkafka::message::{Header, OwnedHeaders};

/// Header naming an output's schema.
pub const SCHEMA_HEADER: &str = "tierstream.schema";
/// Header of a dead letter naming its error code.
pub const ERROR_CODE_HEADER: &str = "tierstream.error.code";

/// An output ready to produce: key, payload and headers.
#[derive(Debug)]
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
        OutputBody::TierChanged { .. }
        | OutputBody::TierAtRisk { .. }
        | OutputBody::TierCutpoints(_) => &cfg.tier_topic,
        OutputBody::ChurnWarning(_) => &cfg.warning_topic,
        OutputBody::Profile(_) | OutputBody::ProfileErased => &cfg.profile_topic,
    }
}

/// An output for its topic, keyed by customer id, with the schema header
/// (and, with `kafka.cloudevents`, as a structured-mode CloudEvent with
/// the `content-type: application/cloudevents+json` header).
pub fn output_record(cfg: &KafkaConfig, o: &Output) -> OutRecord {
    let headers = OwnedHeaders::new().insert(Header {
        key: SCHEMA_HEADER,
        value: Some(o.schema()),
    });
    let (payload, headers) = if cfg.cloudevents {
        let source = format!("tierstream/{}", cfg.group_id);
        (
            to_cloudevent_bytes(o, &source),
            headers.insert(Header {
                key: "content-type",
                value: Some("application/cloudevents+json"),
            }),
        )
    } else {
        (to_bytes(o), headers)
    };
    OutRecord {
        topic: topic_for(cfg, o).to_owned(),
        key: Some(o.customer_id.as_bytes().to_vec()),
        payload,
        headers,
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
            key: ERROR_CODE_HEADER,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::output::to_json;
    use crate::config::Config;
    use crate::domain::engine::Engine;
    use crate::domain::time::Millis;
    use crate::ops::metrics::Metrics;
    use crate::pipeline::processor::Processor;
    use crate::store::memory::MemoryStore;
    use crate::store::session::TaskState;
    use crate::store::TaskId;
    use rdkafka::message::Headers;
    use serde_json::Value;

    /// The initial tier change of a customer's first purchase.
    fn an_output() -> Output {
        let cfg = Config::defaults();
        let p = Processor::new(
            Engine::new(cfg.policy()),
            cfg.decode_rules(),
            Metrics::new(),
        );
        let store = MemoryStore::new();
        let mut task = TaskState::open(TaskId::new(0), &store, 0).unwrap();
        let mut out = Vec::new();
        let event = br#"{"event_id":"e1","customer_id":"c1","ts":"2025-03-01T10:00:00Z","type":"purchase","amount":5000,"margin":0.3}"#;
        p.process(
            &mut task,
            &store,
            event,
            Millis::from_ms(1_750_000_000_000),
            &mut out,
        )
        .unwrap();
        out.into_iter()
            .find(|o| o.schema() == "tierstream.tier_changed.v1")
            .expect("a first purchase assigns a tier")
    }

    #[test]
    fn cloudevents_wrap_the_plain_output_in_structured_mode() {
        let o = an_output();
        let mut cfg = Config::defaults().kafka.clone();
        let plain = output_record(&cfg, &o);
        assert_eq!(plain.headers.count(), 1);
        cfg.cloudevents = true;
        let r = output_record(&cfg, &o);
        let ce: Value = serde_json::from_slice(r.payload.as_ref().unwrap()).unwrap();
        assert_eq!(ce["specversion"], "1.0");
        assert_eq!(ce["id"], o.event_id());
        assert_eq!(ce["type"], "tierstream.tier_changed.v1");
        assert_eq!(ce["subject"], "c1");
        assert_eq!(ce["source"], "tierstream/tierstream");
        assert_eq!(ce["time"], to_json(&o)["at"]);
        assert_eq!(ce["data"], to_json(&o));
        let ct = r.headers.iter().find(|h| h.key == "content-type").unwrap();
        assert_eq!(ct.value, Some(&b"application/cloudevents+json"[..]));
        assert_eq!(r.key, plain.key);
    }
}
