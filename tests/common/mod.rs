//! Helpers shared by the integration tests: a real local broker (started by
//! `scripts/kafka.sh`), unique topics per test, the `tierstream` binary as a
//! child process, and an in-process replay to compute expected outputs.

#![allow(dead_code)] // each test binary uses a different subset

use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tierstream::config::Config;
use tierstream::kafka::tail::{tail, TailRecord};

/// The broker the tests use.
pub fn bootstrap() -> String {
    std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// A test's private topics, group and state directory.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub prefix: String,
    pub config_path: PathBuf,
    pub config: Config,
}

impl TestEnv {
    /// A config with topics named after the test, `inputs` input topics.
    pub fn new(name: &str, inputs: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let prefix = format!("it-{name}-{}-{nanos}", std::process::id());
        let topics: Vec<String> = ["purchases", "complaints", "service-events"][..inputs]
            .iter()
            .map(|t| format!("\"{prefix}-{t}\""))
            .collect();
        let toml = format!(
            "[kafka]\nbootstrap_servers = \"{}\"\ngroup_id = \"{prefix}\"\ninput_topics = [{}]\n\
             tier_topic = \"{prefix}-tier-changes\"\nwarning_topic = \"{prefix}-churn-warnings\"\nprofile_topic = \"{prefix}-profiles\"\ndlq_topic = \"{prefix}-dlq\"\ntopic_partitions = 3\n\
             [state]\ndir = \"{}\"\nblock_cache_mb = 16\nwrite_buffer_mb = 16\n",
            bootstrap(),
            topics.join(", "),
            dir.path().join("state").display()
        );
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, toml).unwrap();
        let config = Config::load(Some(&config_path)).unwrap();
        TestEnv {
            dir,
            prefix,
            config_path,
            config,
        }
    }

    pub fn input(&self, i: usize) -> String {
        self.config.kafka.input_topics[i].clone()
    }

    /// Starts `tierstream run` with this config.
    pub fn start_pipeline(&self) -> Child {
        Command::new(env!("CARGO_BIN_EXE_tierstream"))
            .args(["run", "--config"])
            .arg(&self.config_path)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("starting tierstream run")
    }

    /// Reads `topic` until `n` records arrived (or 90 s without news).
    pub fn consume(&self, topic: &str, n: usize) -> Vec<TailRecord> {
        self.consume_topics(&[topic], n)
    }

    /// Reads several topics until `n` records arrived in all (or 90 s without news).
    pub fn consume_topics(&self, topics: &[&str], n: usize) -> Vec<TailRecord> {
        let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        rt().block_on(tail(
            &self.config.kafka,
            &topics,
            Some(n),
            Duration::from_secs(90),
        ))
        .unwrap()
    }

    /// Reads `topic` until nothing new arrives for `idle`.
    pub fn consume_all(&self, topic: &str, idle: Duration) -> Vec<TailRecord> {
        rt().block_on(tail(&self.config.kafka, &[topic.to_owned()], None, idle))
            .unwrap()
    }

    /// Creates the topics up front so producing never races auto-creation.
    pub fn create_topics(&self) {
        rt().block_on(tierstream::kafka::admin::ensure_topics(&self.config.kafka))
            .unwrap();
    }
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Produces `(topic, key, payload)` records in order, keyed like Java
/// clients (murmur2), waiting for every acknowledgement.
pub fn produce(records: &[(String, Option<String>, Vec<u8>)]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("partitioner", "murmur2_random")
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    rt().block_on(async {
        let mut pending = Vec::new();
        for (topic, key, payload) in records {
            let mut r = FutureRecord::to(topic).payload(payload);
            if let Some(k) = key {
                r = r.key(k);
            }
            pending.push(producer.send(r, Duration::from_secs(30)));
            if pending.len() > 5000 {
                for p in pending.drain(..) {
                    p.await.unwrap();
                }
            }
        }
        for p in pending {
            p.await.unwrap();
        }
    });
}

/// Sends SIGTERM and waits for a clean exit.
pub fn stop_gracefully(mut child: Child) {
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "tierstream run exited with {status}");
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "tierstream run did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Output JSON documents grouped by customer, in `seq` order (outputs of
/// one customer may come from several topics).
pub fn by_customer<'a>(
    values: impl IntoIterator<Item = &'a Value>,
) -> BTreeMap<String, Vec<Value>> {
    let mut m: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for v in values {
        m.entry(v["customer_id"].as_str().unwrap().to_owned())
            .or_default()
            .push(v.clone());
    }
    for vs in m.values_mut() {
        vs.sort_by_key(|v| v["seq"].as_u64());
    }
    m
}

/// Asserts two output sets are equal per customer, reporting the first
/// customer that differs (the full sets are too large to print).
pub fn assert_same_outputs(got: &[Value], expected: &[Value]) {
    let mut ids: Vec<&str> = got
        .iter()
        .map(|v| v["event_id"].as_str().unwrap())
        .collect();
    ids.sort();
    let total = ids.len();
    ids.dedup();
    assert_eq!(
        ids.len(),
        total,
        "duplicate outputs: {} of {total} are repeats",
        total - ids.len()
    );
    let (g, e) = (by_customer(got), by_customer(expected));
    for (customer, want) in &e {
        let have = g.get(customer).cloned().unwrap_or_default();
        if &have != want {
            let brief = |vs: &[Value]| -> Vec<String> {
                vs.iter()
                    .map(|v| {
                        format!(
                            "seq {} {} {} {}",
                            v["seq"], v["schema"], v["at"], v["action"]
                        )
                    })
                    .collect()
            };
            panic!(
                "outputs of {customer} differ ({} got, {} expected)\ngot:      {:#?}\nexpected: {:#?}",
                have.len(),
                want.len(),
                brief(&have),
                brief(want)
            );
        }
    }
    let extra: Vec<&String> = g.keys().filter(|k| !e.contains_key(*k)).collect();
    assert!(extra.is_empty(), "unexpected outputs for {extra:?}");
    assert_eq!(got.len(), expected.len());
}
