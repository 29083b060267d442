//! The published JSON Schemas (`schemas/`) and the AsyncAPI document are a
//! contract with the teams that produce tierstream's input and consume its
//! output. A schema that drifts from what the code really accepts and emits
//! is worse than none, so this test pins them to the code:
//!
//! * every schema file is JSON, a valid draft 2020-12 schema with the
//!   expected `$id`, title and description, compiles (with every `$ref`
//!   resolved offline), and its own `examples` validate;
//! * every event of a generated workload validates against
//!   `schemas/input/event.json`, and a table of good and bad inputs is
//!   judged the same way by the schema and by the real decoder;
//! * every output of in-process replays of that workload (with the
//!   profiles topic enabled and `forget` events appended, so tombstones and
//!   forget-clears appear; once under the absolute tier policy and once
//!   under `percentile`, so cut points appear) validates against the schema
//!   its `schema` field names, each of the five output schemas is
//!   exercised, and money and scores carry at most 2 decimals (SPEC
//!   section 7);
//! * mutations of valid documents that break the spec (a purchase without
//!   `customer_id`, an unknown warning severity, a downgrade that skips a
//!   tier, ...) fail validation;
//! * `schemas/asyncapi.yaml` references exactly the schema files that exist.

use jsonschema::{Registry, Resource, Validator};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::path::{Path, PathBuf};
use tierstream::cli::replay::{replay, ReplayIo, ReplayShape};
use tierstream::codec::input::decode;
use tierstream::config::Config;
use tierstream::domain::engine::Engine;
use tierstream::domain::output::{output_id, CUTPOINTS_SCHEMA};
use tierstream::domain::time::Millis;
use tierstream::ops::metrics::Metrics;
use tierstream::pipeline::processor::Processor;
use tierstream::store::memory::MemoryStore;
use tierstream::workload::generate::{generate, GenerateSpec};

const BASE_ID: &str = "https://tierstream.dev/schemas/";

const OUTPUT_SCHEMAS: [(&str, &str); 5] = [
    ("tierstream.tier_changed.v1", "output/tier_changed.json"),
    ("tierstream.tier_at_risk.v1", "output/tier_at_risk.json"),
    ("tierstream.tier_cutpoints.v1", "output/tier_cutpoints.json"),
    ("tierstream.churn_warning.v1", "output/churn_warning.json"),
    ("tierstream.profile.v1", "output/profile.json"),
];

fn schemas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas")
}

/// Every `*.json` file under `schemas/`, by path relative to it.
fn schema_files() -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![schemas_dir()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "json") {
                let rel = path
                    .strip_prefix(schemas_dir())
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/");
                let text = std::fs::read_to_string(&path).unwrap();
                let value: Value = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("{rel} is not valid JSON: {e}"));
                out.insert(rel, value);
            }
        }
    }
    out
}

/// All schema documents, registered under their `$id`s.
fn registry(files: &BTreeMap<String, Value>) -> Registry<'static> {
    let pairs: Vec<(String, Resource)> = files
        .values()
        .map(|v| {
            (
                v["$id"].as_str().unwrap().to_owned(),
                Resource::from_contents(v.clone()),
            )
        })
        .collect();
    Registry::new().extend(pairs).unwrap().prepare().unwrap()
}

/// Compiled validators for every schema file, formats asserted, no network.
struct Schemas {
    validators: BTreeMap<String, Validator>,
}

/// Every property name the output schemas declare, anywhere.
fn declared_names() -> BTreeSet<String> {
    fn walk(v: &Value, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::Object(props)) = m.get("properties") {
                    out.extend(props.keys().cloned());
                }
                m.values().for_each(|v| walk(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    for (rel, schema) in schema_files() {
        if rel.starts_with("output/") {
            walk(&schema, &mut out);
        }
    }
    out
}

/// The paths of the fields of `doc` whose names no output schema
/// declares. The published schemas are open for additive change, so they
/// cannot catch a field the code emits without documenting it; this does.
fn undeclared(doc: &Value, names: &BTreeSet<String>) -> Vec<String> {
    fn walk(v: &Value, path: &str, names: &BTreeSet<String>, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    let p = format!("{path}/{k}");
                    if !names.contains(k) {
                        out.push(p.clone());
                    }
                    walk(v, &p, names, out);
                }
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, path, names, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(doc, "", names, &mut out);
    out
}

impl Schemas {
    fn load() -> Self {
        let files = schema_files();
        let registry = registry(&files);
        let validators = files
            .iter()
            .map(|(rel, schema)| {
                let v = jsonschema::options()
                    .with_draft(jsonschema::Draft::Draft202012)
                    .with_registry(&registry)
                    .should_validate_formats(true)
                    .offline()
                    .build(schema)
                    .unwrap_or_else(|e| panic!("{rel} does not compile: {e}"));
                (rel.clone(), v)
            })
            .collect();
        Schemas { validators }
    }

    fn get(&self, rel: &str) -> &Validator {
        self.validators
            .get(rel)
            .unwrap_or_else(|| panic!("no schema {rel}"))
    }

    /// The validation errors of `doc` against `rel`, as text.
    fn errors(&self, rel: &str, doc: &Value) -> Vec<String> {
        self.get(rel)
            .iter_errors(doc)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect()
    }

    fn assert_valid(&self, rel: &str, doc: &Value) {
        let errors = self.errors(rel, doc);
        assert!(
            errors.is_empty(),
            "{doc} should be valid against {rel}:\n{}",
            errors.join("\n")
        );
    }

    fn assert_invalid(&self, rel: &str, doc: &Value, what: &str) {
        assert!(
            !self.get(rel).is_valid(doc),
            "{what}: {doc} should be invalid against {rel}"
        );
    }
}

fn output_schema_of(name: &str) -> &'static str {
    OUTPUT_SCHEMAS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("output with unknown schema {name:?}"))
        .1
}

// ---------------------------------------------------------------- (a) files

#[test]
fn every_schema_file_is_a_valid_2020_12_schema_with_id_title_and_description() {
    let files = schema_files();
    let expected: BTreeSet<&str> = [
        "input/common.json",
        "input/event.json",
        "input/purchase.json",
        "input/complaint.json",
        "input/service.json",
        "input/forget.json",
        "output/common.json",
        "output/tier_changed.json",
        "output/tier_at_risk.json",
        "output/tier_cutpoints.json",
        "output/churn_warning.json",
        "output/profile.json",
    ]
    .into_iter()
    .collect();
    let found: BTreeSet<&str> = files.keys().map(String::as_str).collect();
    assert!(
        expected.is_subset(&found),
        "missing schema files: {:?}",
        expected.difference(&found).collect::<Vec<_>>()
    );
    for (rel, schema) in &files {
        assert_eq!(
            schema["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "{rel}: $schema"
        );
        assert_eq!(schema["$id"], format!("{BASE_ID}{rel}"), "{rel}: $id");
        for key in ["title", "description"] {
            assert!(
                schema[key].as_str().is_some_and(|s| !s.trim().is_empty()),
                "{rel}: {key} missing"
            );
        }
        if let Err(e) = jsonschema::meta::validate(schema) {
            panic!("{rel} is not a valid JSON Schema: {e}");
        }
    }
    // Compiles every file, resolving every $ref from the registry only.
    let schemas = Schemas::load();
    assert_eq!(schemas.validators.len(), files.len());
    // Output titles are the wire schema names.
    for (name, rel) in OUTPUT_SCHEMAS {
        assert_eq!(files[rel]["title"], name, "{rel}: title");
        assert_eq!(
            files[rel]["properties"]["schema"]["const"], name,
            "{rel}: schema const"
        );
    }
}

#[test]
fn schema_examples_validate_and_example_inputs_decode() {
    let files = schema_files();
    let schemas = Schemas::load();
    let rules = Config::defaults().decode_rules();
    let mut n = 0;
    for (rel, schema) in &files {
        for example in schema["examples"].as_array().into_iter().flatten() {
            schemas.assert_valid(rel, example);
            if rel.starts_with("input/") && example.is_object() {
                schemas.assert_valid("input/event.json", example);
                let bytes = serde_json::to_vec(example).unwrap();
                decode(&bytes, &rules, now())
                    .unwrap_or_else(|r| panic!("example of {rel} is rejected by the decoder: {r}"));
            }
            n += 1;
        }
    }
    assert!(n >= 8, "only {n} examples");
}

#[test]
fn asyncapi_references_every_schema_file_and_documents_headers() {
    let text = std::fs::read_to_string(schemas_dir().join("asyncapi.yaml")).unwrap();
    assert!(
        text.starts_with("asyncapi: 3.0.0"),
        "not an AsyncAPI 3.0 document"
    );
    let mut referenced = BTreeSet::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(r) = line.strip_prefix("$ref: ") {
            let r = r.trim_matches(|c| c == '\'' || c == '"');
            if let Some(file) = r.strip_prefix("./") {
                assert!(
                    schemas_dir().join(file).is_file(),
                    "asyncapi.yaml references missing {file}"
                );
                referenced.insert(file.to_owned());
            }
        }
    }
    for rel in schema_files().keys() {
        if !rel.ends_with("common.json") {
            assert!(
                referenced.contains(rel),
                "asyncapi.yaml does not reference {rel}"
            );
        }
    }
    for needle in [
        "tierstream.schema",
        "tierstream.error.code",
        "tierstream.error.message",
        "tierstream.source.topic",
        "tierstream.source.partition",
        "tierstream.source.offset",
        "isolation.level=read_committed",
        "address: purchases",
        "address: complaints",
        "address: service-events",
        "address: customer-tier-changes",
        "address: churn-warnings",
        "address: customer-profiles",
        "address: tierstream-dlq",
        "'{group_id}-state-changelog'",
        "'{group_id}-tier-summaries'",
        "tierstream.tier_cutpoints.v1",
        "- compact",
    ] {
        assert!(
            text.contains(needle),
            "asyncapi.yaml does not mention {needle}"
        );
    }
}

// ---------------------------------------------------------------- (b) inputs

fn now() -> Millis {
    tierstream::pipeline::wall_clock()
}

/// 2025-01-01T00:00:00Z, the CLI's default start.
const START: Millis = Millis::from_ms(1_735_689_600_000);

fn workload() -> Vec<Value> {
    generate(&GenerateSpec {
        customers: 300,
        events: 6000,
        seed: 3,
        start: START,
        days: 365,
        ..GenerateSpec::default()
    })
    .events
    .into_iter()
    .map(|g| g.json)
    .collect()
}

#[test]
fn every_generated_event_validates_against_the_input_union() {
    let schemas = Schemas::load();
    let events = workload();
    assert_eq!(events.len(), 6000);
    let mut types = BTreeMap::<String, usize>::new();
    for e in &events {
        schemas.assert_valid("input/event.json", e);
        let t = e["type"].as_str().unwrap().to_owned();
        // ... and against its own type's schema, but no other one.
        for other in ["purchase", "complaint", "service", "forget"] {
            let ok = schemas.get(&format!("input/{other}.json")).is_valid(e);
            assert_eq!(ok, other == t, "{e} against input/{other}.json");
        }
        *types.entry(t).or_default() += 1;
    }
    for t in ["purchase", "complaint", "service"] {
        assert!(types.get(t).copied().unwrap_or(0) > 0, "no {t} generated");
    }
}

/// Good and bad inputs, judged alike by the schema and by the decoder.
#[test]
fn schema_and_decoder_agree_on_good_and_bad_inputs() {
    let schemas = Schemas::load();
    let rules = Config::defaults().decode_rules();
    let base = |body: Value| {
        let mut v = json!({"event_id": "e1", "customer_id": "c1", "ts": "2026-01-05T10:00:00Z"});
        v.as_object_mut()
            .unwrap()
            .extend(body.as_object().unwrap().clone());
        v
    };
    let good = [
        base(json!({"type": "purchase", "amount": 10.005})),
        base(
            json!({"type": "purchase", "amount": 0, "margin": -3.5, "refund": true, "currency": "USD", "order_id": "o", "category": "k", "channel": "web"}),
        ),
        base(json!({"type": "purchase", "amount": 12, "margin": null, "extra": {"ignored": true}})),
        base(json!({"type": "complaint", "severity": "critical"})),
        base(
            json!({"type": "complaint", "severity": "high", "status": "resolved", "ref": "e0", "category": "delivery"}),
        ),
        base(json!({"type": "service"})),
        base(
            json!({"type": "service", "cost": 2.5, "nps": 10, "satisfaction": 4, "repurchase_intent": 3, "share_of_wallet": 0.4, "signals": ["competitor_offer", "unknown_is_ignored"]}),
        ),
        base(json!({"type": "service", "satisfaction": 1, "recommend": 5, "share_of_wallet": 0})),
        base(json!({"type": "forget"})),
        json!({"event_id": "e", "customer_id": "c", "ts": 1_767_607_200_000_i64, "type": "forget"}),
        json!({"event_id": "e", "customer_id": "c", "ts": "2026-01-05T12:00:00+02:00", "type": "forget"}),
        json!({"event_id": "x".repeat(128), "customer_id": "ü".repeat(128), "ts": 0, "type": "forget"}),
    ];
    for doc in &good {
        schemas.assert_valid("input/event.json", doc);
        let bytes = serde_json::to_vec(doc).unwrap();
        if let Err(r) = decode(&bytes, &rules, now()) {
            panic!("decoder rejects {doc}: {r}");
        }
    }
    let bad = [
        (
            "purchase without customer_id",
            json!({"event_id": "e1", "type": "purchase", "ts": "2026-01-05T10:00:00Z", "amount": 1}),
        ),
        (
            "customer_id null",
            base(json!({"type": "forget", "customer_id": null})),
        ),
        (
            "event_id empty",
            base(json!({"type": "forget", "event_id": ""})),
        ),
        (
            "event_id of 129 characters",
            base(json!({"type": "forget", "event_id": "x".repeat(129)})),
        ),
        (
            "no type",
            json!({"event_id": "e1", "customer_id": "c1", "ts": 1}),
        ),
        ("unknown type", base(json!({"type": "refund"}))),
        (
            "ts missing",
            json!({"event_id": "e1", "customer_id": "c1", "type": "forget"}),
        ),
        (
            "ts not a date",
            base(json!({"type": "forget", "ts": "yesterday"})),
        ),
        (
            "ts without an offset",
            base(json!({"type": "forget", "ts": "2026-01-05T10:00:00"})),
        ),
        (
            "ts fractional millis",
            base(json!({"type": "forget", "ts": 1.5})),
        ),
        ("ts before 1970", base(json!({"type": "forget", "ts": -1}))),
        (
            "ts string before 1970",
            base(json!({"type": "forget", "ts": "1969-12-31T23:59:59Z"})),
        ),
        ("purchase without amount", base(json!({"type": "purchase"}))),
        (
            "negative amount",
            base(json!({"type": "purchase", "amount": -1})),
        ),
        (
            "amount as a string",
            base(json!({"type": "purchase", "amount": "12"})),
        ),
        (
            "amount too large",
            base(json!({"type": "purchase", "amount": 1.0e13})),
        ),
        (
            "refund not a bool",
            base(json!({"type": "purchase", "amount": 1, "refund": "yes"})),
        ),
        (
            "currency not a string",
            base(json!({"type": "purchase", "amount": 1, "currency": 840})),
        ),
        (
            "complaint without severity",
            base(json!({"type": "complaint"})),
        ),
        (
            "unknown severity",
            base(json!({"type": "complaint", "severity": "huge"})),
        ),
        (
            "unknown complaint status",
            base(json!({"type": "complaint", "severity": "low", "status": "closed"})),
        ),
        (
            "satisfaction 6",
            base(json!({"type": "service", "satisfaction": 6})),
        ),
        (
            "satisfaction 0",
            base(json!({"type": "service", "satisfaction": 0})),
        ),
        ("nps 11", base(json!({"type": "service", "nps": 11}))),
        (
            "repurchase_intent 5.5",
            base(json!({"type": "service", "repurchase_intent": 5.5})),
        ),
        (
            "share_of_wallet 1.5",
            base(json!({"type": "service", "share_of_wallet": 1.5})),
        ),
        (
            "negative cost",
            base(json!({"type": "service", "cost": -2})),
        ),
        (
            "signals not an array",
            base(json!({"type": "service", "signals": "competitor_offer"})),
        ),
        (
            "signals with a number",
            base(json!({"type": "service", "signals": ["competitor_offer", 3]})),
        ),
    ];
    for (what, doc) in &bad {
        schemas.assert_invalid("input/event.json", doc, what);
        let bytes = serde_json::to_vec(doc).unwrap();
        assert!(
            decode(&bytes, &rules, now()).is_err(),
            "{what}: the decoder accepts {doc}, the schema does not"
        );
    }
    // Not a JSON object at all.
    schemas.assert_invalid("input/event.json", &json!([1, 2]), "an array");
    schemas.assert_invalid("input/event.json", &json!("purchase"), "a string");
}

// ---------------------------------------------------------------- (c) outputs

/// The config of the output replays: profiles enabled, and a low opening
/// risk, so warnings are open when the customers are forgotten and every
/// churn-warning shape occurs.
const REPLAY_CONFIG: &str = "[kafka]\nprofile_topic = \"customer-profiles\"\n[warnings]\nopen_risk = 0.2\nclear_risk = 0.1\n";

/// Replays `events` in process (3 tasks, profiles enabled), returning every
/// output line as JSON, tombstones included.
fn replay_outputs(events: &[Value]) -> Vec<Value> {
    replay_outputs_with(events, REPLAY_CONFIG)
}

/// [`replay_outputs`] under `tiers.policy = "percentile"` (default shares):
/// the 3 tasks meet at every month close (`replay` ranks them together), so
/// `tierstream.tier_cutpoints.v1` outputs appear.
fn replay_percentile_outputs(events: &[Value]) -> Vec<Value> {
    let cfg = format!("{REPLAY_CONFIG}[tiers]\npolicy = \"percentile\"\n");
    replay_outputs_with(events, &cfg)
}

/// Replays `events` in process over 3 tasks with the config `toml`.
fn replay_outputs_with(events: &[Value], toml: &str) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, toml).unwrap();
    let cfg = Config::load(Some(&path)).unwrap();
    assert!(
        cfg.policy().emit_profiles,
        "setting kafka.profile_topic should enable profile outputs"
    );
    let processor = Processor::new(
        Engine::new(cfg.policy()),
        cfg.decode_rules(),
        Metrics::new(),
    );
    let mut jsonl = Vec::new();
    for e in events {
        jsonl.extend_from_slice(&serde_json::to_vec(e).unwrap());
        jsonl.push(b'\n');
    }
    let input_bytes = jsonl.len() as u64;
    let mut input = Cursor::new(jsonl);
    let mut out = Vec::new();
    let mut dlq = Vec::new();
    // Progress is reported in steps; every byte read is in one of them.
    let reported = std::cell::Cell::new(0);
    let io = ReplayIo {
        input: &mut input,
        output: &mut out,
        dlq: Some(&mut dlq),
        on_bytes: &|n| reported.set(reported.get() + n),
    };
    let summary = replay(
        &processor,
        &MemoryStore::new(),
        ReplayShape::sequential(3, 64 << 20),
        io,
        now(),
    )
    .unwrap();
    assert_eq!(reported.get(), input_bytes);
    assert_eq!(
        summary.rejected,
        0,
        "rejected: {}",
        String::from_utf8_lossy(&dlq)
    );
    out.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice::<Value>(l).unwrap())
        .collect()
}

/// The workload plus a `forget` for every customer after its last event,
/// with epoch-millisecond timestamps, so forget-clears and tombstones appear.
fn workload_with_forgets() -> Vec<Value> {
    let mut events = workload();
    let last_ts = START + 366 * 86_400_000;
    let customers: BTreeSet<String> = events
        .iter()
        .map(|e| e["customer_id"].as_str().unwrap().to_owned())
        .collect();
    for (i, c) in customers.iter().enumerate() {
        events.push(json!({
            "event_id": format!("forget-{c}"),
            "type": "forget",
            "customer_id": c,
            "ts": last_ts + i as i64,
        }));
    }
    events
}

/// Every number in `v` written with at most 2 decimals (SPEC section 7).
fn assert_two_decimals(v: &Value, path: &str, doc: &Value) {
    match v {
        Value::Number(n) => {
            let s = n.to_string();
            let decimals = s.split_once('.').map_or(0, |(_, f)| f.len());
            assert!(
                decimals <= 2 && !s.contains(['e', 'E']),
                "{path} = {s} has more than 2 decimals in {doc}"
            );
        }
        Value::Array(items) => {
            for (i, x) in items.iter().enumerate() {
                assert_two_decimals(x, &format!("{path}/{i}"), doc);
            }
        }
        Value::Object(m) => {
            for (k, x) in m {
                assert_two_decimals(x, &format!("{path}/{k}"), doc);
            }
        }
        _ => {}
    }
}

/// What the outputs of one replay exercised.
#[derive(Default)]
struct Exercised {
    /// Outputs per schema file.
    counts: BTreeMap<&'static str, usize>,
    tombstones: usize,
    forget_clears: usize,
    timer_outputs: usize,
}

/// Checks every output of one replay against its schema and the drift
/// check, and that the event ids of the replay are unique.
fn check_outputs(schemas: &Schemas, names: &BTreeSet<String>, outputs: &[Value]) -> Exercised {
    let mut seen = Exercised::default();
    let mut ids = BTreeSet::new();
    for o in outputs {
        let name = o["schema"]
            .as_str()
            .unwrap_or_else(|| panic!("output without schema: {o}"));
        if o.get("tombstone").is_some() {
            // The JSONL rendering of a Kafka tombstone on the profiles topic.
            assert_eq!(name, "tierstream.profile.v1", "tombstone of {name}");
            assert_eq!(
                o,
                &json!({"schema": name, "customer_id": o["customer_id"], "tombstone": true})
            );
            seen.tombstones += 1;
            continue;
        }
        let rel = output_schema_of(name);
        schemas.assert_valid(rel, o);
        // Every field it carries is declared.
        assert_eq!(undeclared(o, names), Vec::<String>::new(), "in {o}");
        // Other output schemas reject it: the `schema` field discriminates.
        for (other, other_rel) in OUTPUT_SCHEMAS {
            if other != name {
                assert!(!schemas.get(other_rel).is_valid(o), "{o} valid as {other}");
            }
        }
        assert_two_decimals(o, "", o);
        *seen.counts.entry(rel).or_default() += 1;
        if name == "tierstream.churn_warning.v1" && o["quadrant"].is_null() {
            seen.forget_clears += 1;
        }
        if o["cause"].get("timer").is_some() {
            seen.timer_outputs += 1;
        }
        if name != "tierstream.profile.v1" {
            let id = o["event_id"].as_str().unwrap().to_owned();
            assert!(ids.insert(id), "duplicate output event_id in {o}");
        }
    }
    seen
}

/// Epoch milliseconds of an output timestamp.
fn millis(at: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(at.as_str().unwrap())
        .unwrap()
        .timestamp_millis()
}

#[test]
fn every_replayed_output_validates_against_its_schema() {
    let schemas = Schemas::load();
    let names = declared_names();
    let events = workload_with_forgets();
    for e in &events {
        schemas.assert_valid("input/event.json", e);
    }
    let forgotten = events.iter().filter(|e| e["type"] == "forget").count();
    assert!(forgotten > 250, "{forgotten} customers with events");
    let absolute = replay_outputs(&events);
    let percentile = replay_percentile_outputs(&events);
    let mut counts = BTreeMap::<&str, usize>::new();
    for (policy, outputs) in [("absolute", &absolute), ("percentile", &percentile)] {
        let seen = check_outputs(&schemas, &names, outputs);
        assert_eq!(
            seen.tombstones, forgotten,
            "{policy}: one profile tombstone per forgotten customer"
        );
        assert!(
            seen.forget_clears > 0,
            "{policy}: no warning was cleared by forget"
        );
        assert!(
            seen.timer_outputs > 0,
            "{policy}: no output caused by a timer"
        );
        for (rel, n) in seen.counts {
            *counts.entry(rel).or_default() += n;
        }
    }
    for (name, rel) in OUTPUT_SCHEMAS {
        assert!(
            counts.get(rel).copied().unwrap_or(0) > 0,
            "no {name} output exercised its schema"
        );
    }
    assert!(
        !absolute.iter().any(|o| o["schema"] == CUTPOINTS_SCHEMA),
        "cut points under the absolute policy"
    );
    // The cut points: one per changed month close for the whole group
    // (only task 0 emits them), ordered, their id from the month instant.
    let cuts: Vec<&Value> = percentile
        .iter()
        .filter(|o| o["schema"] == CUTPOINTS_SCHEMA)
        .collect();
    assert!(
        cuts.len() >= 6,
        "only {} cut-point outputs in a year",
        cuts.len()
    );
    let customers = forgotten as u64;
    let mut months = BTreeSet::new();
    for c in &cuts {
        let month = millis(&c["at"]);
        assert!(months.insert(month), "two cut-point outputs at {}", c["at"]);
        assert_eq!(
            c["event_id"],
            output_id(CUTPOINTS_SCHEMA, month as u64),
            "event_id of {c}"
        );
        let (p, g, i) = (
            c["platinum"].as_f64().unwrap(),
            c["gold"].as_f64().unwrap(),
            c["iron"].as_f64().unwrap(),
        );
        assert!(p >= g && g >= i && i >= 0.0, "cut points out of order: {c}");
        let n = c["customers"].as_u64().unwrap();
        assert!((1..=customers).contains(&n), "{n} customers ranked in {c}");
    }
}

// ---------------------------------------------------------------- (d) negatives

/// `doc` with `pointer` set to `value` (the parent must exist).
fn with(doc: &Value, pointer: &str, value: Value) -> Value {
    let mut d = doc.clone();
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let target = if parent.is_empty() {
        &mut d
    } else {
        d.pointer_mut(parent).unwrap()
    };
    target
        .as_object_mut()
        .unwrap()
        .insert(key.to_owned(), value);
    d
}

/// `doc` without the field at `pointer`.
fn without(doc: &Value, pointer: &str) -> Value {
    let mut d = doc.clone();
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let target = if parent.is_empty() {
        &mut d
    } else {
        d.pointer_mut(parent).unwrap()
    };
    assert!(target.as_object_mut().unwrap().remove(key).is_some());
    d
}

#[test]
fn documents_that_break_the_spec_fail_validation() {
    let schemas = Schemas::load();
    let outputs = replay_outputs(&workload_with_forgets());
    let find = |what: &str, pred: &dyn Fn(&Value) -> bool| -> Value {
        outputs
            .iter()
            .find(|o| pred(o))
            .unwrap_or_else(|| panic!("no {what} output to mutate"))
            .clone()
    };
    let schema_is = |o: &Value, n: &str| o["schema"] == n;
    let initial = find("initial tier_changed", &|o| {
        schema_is(o, "tierstream.tier_changed.v1")
            && o["direction"] == "initial"
            && o["to"] == "iron"
    });
    // Fields nobody declared are not a schema violation (the schemas are
    // open) but the drift check names them.
    let names = declared_names();
    let surprise = with(&initial, "/surprise", json!(1));
    assert_eq!(undeclared(&surprise, &names), ["/surprise"]);
    let margin = with(&initial, "/inputs/margin_12m", json!(1.0));
    assert_eq!(undeclared(&margin, &names), ["/inputs/margin_12m"]);
    let upgrade = find("upgrade", &|o| {
        schema_is(o, "tierstream.tier_changed.v1") && o["direction"] == "upgrade"
    });
    let downgrade = find("downgrade", &|o| {
        schema_is(o, "tierstream.tier_changed.v1") && o["direction"] == "downgrade"
    });
    let at_risk = find("tier_at_risk", &|o| {
        schema_is(o, "tierstream.tier_at_risk.v1")
    });
    let opened = find("opened gold warning", &|o| {
        schema_is(o, "tierstream.churn_warning.v1")
            && o["action"] == "opened"
            && o["tier"] == "gold"
            && o["severity"] == "high"
    });
    let forget_clear = find("forget clear", &|o| {
        schema_is(o, "tierstream.churn_warning.v1") && o["quadrant"].is_null()
    });
    let daily_warning = find("daily warning", &|o| {
        schema_is(o, "tierstream.churn_warning.v1") && o["cause"]["timer"] == "daily"
    });
    let profile = find("profile with a warning", &|o| {
        schema_is(o, "tierstream.profile.v1") && o["warning"].is_object()
    });
    let profile_plain = find("profile without scores", &|o| {
        schema_is(o, "tierstream.profile.v1") && o["attitude"].is_null()
    });
    let tc = "output/tier_changed.json";
    let ar = "output/tier_at_risk.json";
    let cw = "output/churn_warning.json";
    let pr = "output/profile.json";
    // The unmutated documents are valid, so every failure below is due to
    // the mutation.
    for (rel, doc) in [
        (tc, &initial),
        (tc, &upgrade),
        (tc, &downgrade),
        (ar, &at_risk),
        (cw, &opened),
        (cw, &forget_clear),
        (cw, &daily_warning),
        (pr, &profile),
        (pr, &profile_plain),
    ] {
        schemas.assert_valid(rel, doc);
    }
    let cases: Vec<(&str, &str, Value)> = vec![
        // envelope
        (tc, "missing customer_id", without(&initial, "/customer_id")),
        (tc, "missing event_id", without(&initial, "/event_id")),
        (
            tc,
            "event_id not a UUID",
            with(&initial, "/event_id", json!("c1-1")),
        ),
        (tc, "seq 0", with(&initial, "/seq", json!(0))),
        (tc, "seq as a string", with(&initial, "/seq", json!("1"))),
        (
            tc,
            "at without milliseconds",
            with(&initial, "/at", json!("2025-03-04T10:00:00Z")),
        ),
        (
            tc,
            "at with an offset",
            with(&initial, "/at", json!("2025-03-04T10:00:00.000+01:00")),
        ),
        (
            tc,
            "at not a date",
            with(&initial, "/at", json!("2025-13-45T10:00:00.000Z")),
        ),
        (
            tc,
            "unknown timer",
            with(&initial, "/cause", json!({"timer": "hourly"})),
        ),
        (
            tc,
            "cause with both",
            with(
                &initial,
                "/cause",
                json!({"timer": "daily", "event_id": "e"}),
            ),
        ),
        (
            tc,
            "wrong schema name",
            with(&initial, "/schema", json!("tierstream.tier_changed.v2")),
        ),
        (
            cw,
            "daily output not at midnight",
            with(&daily_warning, "/at", json!("2025-03-04T10:00:00.000Z")),
        ),
        // tier_changed
        (tc, "unknown tier", with(&initial, "/to", json!("diamond"))),
        (
            tc,
            "initial with a from",
            with(&initial, "/from", json!("lead")),
        ),
        (
            tc,
            "unknown direction",
            with(&initial, "/direction", json!("sideways")),
        ),
        (
            tc,
            "unknown reason",
            with(&initial, "/reason", json!("because")),
        ),
        (
            tc,
            "fake_big_customer not a bool",
            with(&initial, "/fake_big_customer", json!("no")),
        ),
        (
            tc,
            "initial with tier_since",
            with(
                &initial,
                "/inputs/tier_since",
                json!("2025-01-01T00:00:00.000Z"),
            ),
        ),
        (
            tc,
            "iron without threshold",
            without(&initial, "/inputs/threshold"),
        ),
        (
            tc,
            "purchases_12m fractional",
            with(&initial, "/inputs/purchases_12m", json!(1.5)),
        ),
        (
            tc,
            "upgrade without from",
            with(&upgrade, "/from", Value::Null),
        ),
        (
            tc,
            "upgrade to a lower tier",
            with(
                &with(&upgrade, "/from", json!("platinum")),
                "/to",
                json!("gold"),
            ),
        ),
        (
            tc,
            "downgrade skipping a tier",
            with(
                &with(&downgrade, "/from", json!("platinum")),
                "/to",
                json!("iron"),
            ),
        ),
        (
            tc,
            "downgrade caused by an event",
            with(&downgrade, "/cause", json!({"event_id": "e1"})),
        ),
        // tier_at_risk
        (ar, "lead at risk", with(&at_risk, "/tier", json!("lead"))),
        (
            ar,
            "at risk caused by an event",
            with(&at_risk, "/cause", json!({"event_id": "e1"})),
        ),
        (
            ar,
            "at risk on a daily tick",
            with(&at_risk, "/cause", json!({"timer": "daily"})),
        ),
        (ar, "zero shortfall", with(&at_risk, "/shortfall", json!(0))),
        (
            ar,
            "missing downgrade_at",
            without(&at_risk, "/downgrade_at"),
        ),
        (
            ar,
            "downgrade_at not a month start",
            with(&at_risk, "/downgrade_at", json!("2025-05-02T00:00:00.000Z")),
        ),
        (
            ar,
            "at-risk inputs without threshold",
            without(&at_risk, "/inputs/threshold"),
        ),
        // churn_warning
        (
            cw,
            "unknown severity",
            with(&opened, "/severity", json!("urgent")),
        ),
        (
            cw,
            "unknown action",
            with(&opened, "/action", json!("closed")),
        ),
        (
            cw,
            "opened outside spurious",
            with(&opened, "/quadrant", json!("latent")),
        ),
        (
            cw,
            "unknown quadrant",
            with(&opened, "/quadrant", json!("loyal")),
        ),
        (
            cw,
            "gold warning with low severity",
            with(&opened, "/severity", json!("low")),
        ),
        (
            cw,
            "behaviour above 100",
            with(&opened, "/behaviour", json!(100.5)),
        ),
        (
            cw,
            "attitude negative",
            with(&opened, "/attitude", json!(-1)),
        ),
        (
            cw,
            "opened without scores",
            with(&opened, "/behaviour", Value::Null),
        ),
        (
            cw,
            "unknown recommended action",
            with(&opened, "/recommended_action", json!("discount")),
        ),
        (
            cw,
            "warning_id not a UUID",
            with(&opened, "/warning_id", json!("w-1")),
        ),
        (
            cw,
            "unknown reason code",
            with(
                &opened,
                "/reasons",
                json!([{"code": "bad_vibes", "evidence": {}}]),
            ),
        ),
        (
            cw,
            "reason without evidence",
            with(&opened, "/reasons", json!([{"code": "purchase_gap"}])),
        ),
        (
            cw,
            "wrong evidence",
            with(
                &opened,
                "/reasons",
                json!([{"code": "low_satisfaction", "evidence": {"recommend": 2.0}}]),
            ),
        ),
        (
            cw,
            "unknown signal in evidence",
            with(
                &opened,
                "/reasons",
                json!([{"code": "competitor_signal", "evidence": {"signals": ["gossip"], "penalty": 15.0}}]),
            ),
        ),
        (
            cw,
            "a reason code twice",
            with(
                &opened,
                "/reasons",
                json!([
                    {"code": "low_recommend", "evidence": {"recommend": 2.0}},
                    {"code": "low_recommend", "evidence": {"recommend": 1.0}}
                ]),
            ),
        ),
        (
            cw,
            "partial score inputs",
            without(&opened, "/inputs/recency"),
        ),
        (
            cw,
            "missing value_12m input",
            without(&opened, "/inputs/value_12m"),
        ),
        (cw, "missing reasons", without(&opened, "/reasons")),
        (
            cw,
            "cleared while spurious",
            with(
                &with(&forget_clear, "/quadrant", json!("spurious")),
                "/action",
                json!("cleared"),
            ),
        ),
        (
            cw,
            "forget clear with reasons",
            with(&forget_clear, "/reasons", opened["reasons"].clone()),
        ),
        (
            cw,
            "forget clear with an action",
            with(
                &forget_clear,
                "/recommended_action",
                json!("service_recovery"),
            ),
        ),
        (
            cw,
            "forget clear by a timer",
            with(&forget_clear, "/cause", json!({"timer": "daily"})),
        ),
        (
            cw,
            "null quadrant on an open warning",
            with(&forget_clear, "/action", json!("updated")),
        ),
        // profile
        (
            pr,
            "profile with a warning outside spurious",
            with(&profile, "/quadrant", json!("true_loyal")),
        ),
        (
            pr,
            "profile warning with unknown severity",
            with(&profile, "/warning/severity", json!("urgent")),
        ),
        (
            pr,
            "profile warning without id",
            without(&profile, "/warning/warning_id"),
        ),
        (
            pr,
            "profile with scores but no inputs",
            without(&profile, "/inputs"),
        ),
        (
            pr,
            "profile without scores but inputs",
            with(&profile_plain, "/inputs", profile["inputs"].clone()),
        ),
        (
            pr,
            "profile without tier_since",
            with(&profile, "/tier_since", Value::Null),
        ),
        (
            pr,
            "profile missing value_12m",
            without(&profile, "/value_12m"),
        ),
        (
            pr,
            "profile unknown survey source",
            with(&profile, "/inputs/survey_source", json!("gut_feeling")),
        ),
    ];
    for (rel, what, doc) in &cases {
        schemas.assert_invalid(rel, doc, what);
    }
    // A tombstone marker or a Kafka tombstone (null) is not a profile.
    schemas.assert_invalid(pr, &Value::Null, "null value");
    schemas.assert_invalid(
        pr,
        &json!({"schema": "tierstream.profile.v1", "customer_id": "c1", "tombstone": true}),
        "JSONL tombstone marker",
    );
}

#[test]
fn cut_points_that_break_the_spec_fail_validation() {
    let schemas = Schemas::load();
    let cut = replay_percentile_outputs(&workload_with_forgets())
        .into_iter()
        .find(|o| o["schema"] == CUTPOINTS_SCHEMA)
        .expect("no tier_cutpoints output to mutate");
    let tc = "output/tier_cutpoints.json";
    schemas.assert_valid(tc, &cut);
    let cases: Vec<(&str, Value)> = vec![
        ("missing event_id", without(&cut, "/event_id")),
        (
            "event_id not a UUID",
            with(&cut, "/event_id", json!("cut-1")),
        ),
        ("missing at", without(&cut, "/at")),
        (
            "at not a month start",
            with(&cut, "/at", json!("2025-05-02T00:00:00.000Z")),
        ),
        (
            "caused by an event",
            with(&cut, "/cause", json!({"event_id": "e1"})),
        ),
        (
            "on a daily tick",
            with(&cut, "/cause", json!({"timer": "daily"})),
        ),
        ("missing platinum", without(&cut, "/platinum")),
        ("missing gold", without(&cut, "/gold")),
        ("missing iron", without(&cut, "/iron")),
        ("negative iron cut", with(&cut, "/iron", json!(-1.0))),
        ("gold cut as a string", with(&cut, "/gold", json!("2000"))),
        ("nobody ranked", with(&cut, "/customers", json!(0))),
        ("customers fractional", with(&cut, "/customers", json!(1.5))),
        (
            "wrong schema name",
            with(&cut, "/schema", json!("tierstream.tier_cutpoints.v2")),
        ),
    ];
    for (what, doc) in &cases {
        schemas.assert_invalid(tc, doc, what);
    }
}

/// Consumers are told to ignore unknown fields, so the published output
/// schemas must not forbid them: a new field in a later release must not
/// make today's consumers' validation fail.
#[test]
fn output_schemas_are_open_for_additive_change() {
    let files = schema_files();
    for (rel, schema) in &files {
        if rel.starts_with("output/") {
            let text = schema.to_string();
            assert!(
                !text.contains(r#"Properties":false"#),
                "{rel} forbids unknown fields"
            );
        }
    }
    let schemas = Schemas::load();
    let names = declared_names();
    for (_, rel) in OUTPUT_SCHEMAS {
        let example = files[rel]["examples"][0].clone();
        assert_eq!(undeclared(&example, &names), Vec::<String>::new());
        let mut grown = example.clone();
        grown["added_in_a_later_release"] = json!({"any": "shape"});
        let mut expected = vec!["/added_in_a_later_release", "/added_in_a_later_release/any"];
        if grown["inputs"].is_object() {
            grown["inputs"]["new_figure"] = json!(1.5);
            expected.insert(1, "/inputs/new_figure");
        }
        schemas.assert_valid(rel, &grown);
        let mut found = undeclared(&grown, &names);
        found.sort();
        expected.sort();
        assert_eq!(found, expected, "the drift check names new fields of {rel}");
    }
}
