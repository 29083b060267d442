//! Bad input at volume, through the real broker: a corpus of more than
//! thirty kinds of bad record — every error code, and within them every
//! field of every type wrong — interleaved with a generated workload. Every
//! bad record must reach the DLQ exactly once, with its code and its source
//! coordinates (topic, partition, offset) and its original bytes; every good
//! record must be processed (the outputs equal the replay of the good
//! records alone); and `/metrics` must count each code.
//!
//! The classification of the hard cases (null value, BOM, duplicate keys,
//! NaN, 1e400, deep nesting, the message key) is documented in
//! `docs/spec.md` §1.

mod common;

use common::*;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// A bad record: what it is, its key, its value (`None`: a null value) and
/// the code it must be rejected with.
struct Bad {
    kind: &'static str,
    key: Option<&'static str>,
    value: Option<Vec<u8>>,
    code: &'static str,
}

/// A valid event's fields with `patch` applied: `"field": null` removes a
/// field, anything else replaces or adds it (raw JSON text, so that
/// invalid numbers can be written).
fn event(ty: &str, patch: &[(&str, &str)]) -> Vec<u8> {
    let mut fields: Vec<(String, String)> = vec![
        ("event_id".into(), "\"bad-e\"".into()),
        ("type".into(), format!("\"{ty}\"")),
        ("customer_id".into(), "\"bad-c\"".into()),
        ("ts".into(), "\"2025-03-01T10:00:00Z\"".into()),
    ];
    match ty {
        "purchase" => fields.push(("amount".into(), "10".into())),
        "complaint" => fields.push(("severity".into(), "\"low\"".into())),
        _ => {}
    }
    for (k, v) in patch {
        fields.retain(|(f, _)| f != k);
        if *v != "null" {
            fields.push(((*k).into(), (*v).into()));
        }
    }
    let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
    format!("{{{}}}", body.join(",")).into_bytes()
}

fn bad(kind: &'static str, value: Vec<u8>, code: &'static str) -> Bad {
    Bad {
        kind,
        key: Some("bad-c"),
        value: Some(value),
        code,
    }
}

/// The corpus: one record per kind of badness.
fn corpus() -> Vec<Bad> {
    let p = |patch: &[(&str, &str)]| event("purchase", patch);
    let c = |patch: &[(&str, &str)]| event("complaint", patch);
    let s = |patch: &[(&str, &str)]| event("service", patch);
    let deep = format!("{}1{}", "[".repeat(5000), "]".repeat(5000));
    let mut bom = vec![0xEF, 0xBB, 0xBF];
    bom.extend(p(&[]));
    let mut oversize = p(&[("note", "\"")]);
    oversize.truncate(oversize.len() - 2);
    oversize.extend(std::iter::repeat_n(b'x', 70_000));
    oversize.extend(b"\"}");
    vec![
        Bad {
            kind: "null value",
            key: Some("bad-c"),
            value: None,
            code: "invalid_json",
        },
        Bad {
            kind: "null value and null key",
            key: None,
            value: None,
            code: "invalid_json",
        },
        bad("empty value", Vec::new(), "invalid_json"),
        bad(
            "invalid UTF-8",
            b"{\"event_id\":\"\xff\xfe\"}".to_vec(),
            "invalid_utf8",
        ),
        bad("byte-order mark", bom, "invalid_json"),
        bad("oversize", oversize, "too_large"),
        bad("not JSON", b"hello".to_vec(), "invalid_json"),
        bad("a JSON array", b"[1,2]".to_vec(), "invalid_json"),
        bad("a JSON string", b"\"purchase\"".to_vec(), "invalid_json"),
        bad("truncated", p(&[])[..30].to_vec(), "invalid_json"),
        bad(
            "trailing garbage",
            [p(&[]), b" }".to_vec()].concat(),
            "invalid_json",
        ),
        bad("NaN", p(&[("amount", "NaN")]), "invalid_json"),
        bad("deep nesting", p(&[("amount", &deep)]), "invalid_field"),
        bad("1e400 amount", p(&[("amount", "1e400")]), "invalid_field"),
        bad("huge amount", p(&[("amount", "1e13")]), "invalid_field"),
        bad("negative amount", p(&[("amount", "-5")]), "invalid_field"),
        bad(
            "amount as string",
            p(&[("amount", "\"10\"")]),
            "invalid_field",
        ),
        bad("no amount", p(&[("amount", "null")]), "missing_field"),
        bad("margin as bool", p(&[("margin", "true")]), "invalid_field"),
        bad(
            "refund as string",
            p(&[("refund", "\"yes\"")]),
            "invalid_field",
        ),
        bad(
            "other currency",
            p(&[("currency", "\"EUR\"")]),
            "currency_mismatch",
        ),
        bad(
            "currency as number",
            p(&[("currency", "840")]),
            "invalid_field",
        ),
        bad("no event_id", p(&[("event_id", "null")]), "missing_field"),
        bad(
            "empty event_id",
            p(&[("event_id", "\"\"")]),
            "invalid_field",
        ),
        bad(
            "event_id as number",
            p(&[("event_id", "7")]),
            "invalid_field",
        ),
        bad(
            "event_id of 129 chars",
            p(&[("event_id", &format!("\"{}\"", "e".repeat(129)))]),
            "invalid_field",
        ),
        bad("no type", p(&[("type", "null")]), "missing_field"),
        bad("unknown type", p(&[("type", "\"refund\"")]), "unknown_type"),
        bad("type as number", p(&[("type", "1")]), "invalid_field"),
        bad(
            "no customer_id",
            p(&[("customer_id", "null")]),
            "missing_field",
        ),
        bad(
            "customer_id as object",
            p(&[("customer_id", "{}")]),
            "invalid_field",
        ),
        bad("no ts", p(&[("ts", "null")]), "missing_field"),
        bad("ts as bool", p(&[("ts", "false")]), "invalid_field"),
        bad(
            "ts not a date",
            p(&[("ts", "\"yesterday\"")]),
            "invalid_field",
        ),
        bad("ts beyond i64", p(&[("ts", "1e400")]), "invalid_field"),
        bad(
            "ts before 1970",
            p(&[("ts", "-1")]),
            "timestamp_out_of_range",
        ),
        bad(
            "ts far in the future",
            p(&[("ts", "\"2999-01-01T00:00:00Z\"")]),
            "timestamp_out_of_range",
        ),
        bad("no severity", c(&[("severity", "null")]), "missing_field"),
        bad(
            "unknown severity",
            c(&[("severity", "\"huge\"")]),
            "invalid_field",
        ),
        bad(
            "unknown status",
            c(&[("status", "\"closed\"")]),
            "invalid_field",
        ),
        bad("ref as number", c(&[("ref", "3")]), "invalid_field"),
        bad(
            "satisfaction 6",
            s(&[("satisfaction", "6")]),
            "invalid_field",
        ),
        bad("nps 11", s(&[("nps", "11")]), "invalid_field"),
        bad("recommend 0", s(&[("recommend", "0")]), "invalid_field"),
        bad(
            "repurchase_intent as string",
            s(&[("repurchase_intent", "\"4\"")]),
            "invalid_field",
        ),
        bad(
            "share_of_wallet 1.5",
            s(&[("share_of_wallet", "1.5")]),
            "invalid_field",
        ),
        bad("negative cost", s(&[("cost", "-1")]), "invalid_field"),
        bad(
            "signals not an array",
            s(&[("signals", "\"competitor_offer\"")]),
            "invalid_field",
        ),
        Bad {
            kind: "key differs from customer_id",
            key: Some("someone-else"),
            value: Some(p(&[])),
            code: "key_mismatch",
        },
    ]
}

#[test]
fn every_kind_of_bad_record_reaches_the_dlq_once_and_the_good_ones_are_processed() {
    let env = TestEnv::new("bad-input", 1);
    env.create_topics();
    let topic = env.input(0);
    let w = workload(&env, &spec(150, 3000, 41), None);
    let corpus = corpus();
    assert!(corpus.len() >= 30, "at least thirty kinds");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("partitioner", "murmur2_random")
        .create()
        .unwrap();
    // Interleaved, one bad record after every 60 good ones; each send
    // awaited, so that the offsets are known. A good record's partition
    // follows its key; a bad one's is written down.
    let mut placed: BTreeMap<(i32, i64), &Bad> = BTreeMap::new();
    let send = |key: Option<&str>, value: Option<&[u8]>| {
        let mut r: FutureRecord<'_, str, [u8]> = FutureRecord::to(&topic);
        if let Some(k) = key {
            r = r.key(k);
        }
        if let Some(v) = value {
            r = r.payload(v);
        }
        let d = futures::executor::block_on(producer.send(r, Duration::from_secs(30)))
            .map_err(|(e, _)| e)
            .unwrap();
        (d.partition, d.offset)
    };
    let mut bad_iter = corpus.iter();
    for (i, (_, key, value)) in w.records.iter().enumerate() {
        send(key.as_deref(), Some(value));
        if i % 60 == 59 {
            if let Some(b) = bad_iter.next() {
                let at = send(b.key, b.value.as_deref());
                placed.insert(at, b);
            }
        }
    }
    for b in bad_iter {
        let at = send(b.key, b.value.as_deref());
        placed.insert(at, b);
    }
    assert_eq!(placed.len(), corpus.len());

    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let a = env.spawn("a", &[("TIERSTREAM_HTTP__LISTEN", listen.as_str())], &[]);
    let dlq = env.consume(&env.config.kafka.dlq_topic, corpus.len());
    let got = env.consume_topics(
        &[
            &env.config.kafka.tier_topic,
            &env.config.kafka.warning_topic,
        ],
        w.expected.len(),
    );
    let metrics = wait_for(port, "/metrics", 200);
    a.stop();

    // Every good record processed: the outputs are the replay's of the
    // good records alone.
    let got: Vec<Value> = got.iter().map(|r| r.to_json()["value"].clone()).collect();
    assert_same_outputs(&got, &w.expected);

    // Every bad record in the DLQ exactly once, by its coordinates, with
    // its code, a message, its key and its original bytes.
    let mut seen = BTreeMap::new();
    for r in &dlq {
        let h = |k: &str| {
            r.headers
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("a dead letter without {k}"))
        };
        assert_eq!(h("tierstream.source.topic"), topic);
        let at = (
            h("tierstream.source.partition").parse::<i32>().unwrap(),
            h("tierstream.source.offset").parse::<i64>().unwrap(),
        );
        let b = placed
            .get(&at)
            .unwrap_or_else(|| panic!("a dead letter for a good record at {at:?}"));
        assert_eq!(h("tierstream.error.code"), b.code, "{}", b.kind);
        assert!(!h("tierstream.error.message").is_empty(), "{}", b.kind);
        assert_eq!(r.key.as_deref(), b.key, "{}", b.kind);
        assert_eq!(r.payload, b.value.clone().unwrap_or_default(), "{}", b.kind);
        assert!(seen.insert(at, b.kind).is_none(), "{} twice", b.kind);
    }
    let missing: Vec<&str> = placed
        .iter()
        .filter(|(at, _)| !seen.contains_key(*at))
        .map(|(_, b)| b.kind)
        .collect();
    assert!(missing.is_empty(), "not in the DLQ: {missing:?}");
    let rest = env.consume_all(&env.config.kafka.dlq_topic, Duration::from_secs(3));
    assert_eq!(rest.len(), corpus.len(), "no dead letter more");

    // Each code counted.
    let mut by_code: BTreeMap<&str, usize> = BTreeMap::new();
    for b in &corpus {
        *by_code.entry(b.code).or_default() += 1;
    }
    for (code, n) in by_code {
        let line = format!("tierstream_events_rejected_total{{code=\"{code}\"}} {n}");
        assert!(metrics.lines().any(|l| l == line), "{line} in /metrics");
    }
    eprintln!("{} kinds of bad record, each in the DLQ once", corpus.len());
}
