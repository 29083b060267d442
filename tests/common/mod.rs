//! Helpers shared by the integration tests: a real local broker (started by
//! `scripts/kafka.sh`), unique topics per test, the `tierstream` binary as a
//! child process, and an in-process replay to compute expected outputs.

#![allow(dead_code)] // each test binary uses a different subset

use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{Cursor, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tierstream::cli::replay::{replay, ReplayIo, ReplayShape};
use tierstream::config::Config;
use tierstream::domain::engine::Engine;
use tierstream::domain::time::Millis;
use tierstream::kafka::tail::{tail, TailRecord};
use tierstream::ops::metrics::Metrics;
use tierstream::pipeline::processor::Processor;
use tierstream::store::memory::MemoryStore;
use tierstream::workload::generate::{generate, GenerateSpec};

/// 2025-01-01T00:00:00Z, where the tests' workloads start.
pub const JAN_2025: Millis = Millis::from_ms(1_735_689_600_000);

/// A standard workload of `customers` over 420 days from 2025-01-01.
pub fn spec(customers: u64, events: u64, seed: u64) -> GenerateSpec {
    GenerateSpec {
        customers,
        events,
        seed,
        start: JAN_2025,
        days: 420,
        ..GenerateSpec::default()
    }
}

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
    /// A config with topics named after the test, `inputs` input topics,
    /// and a short group session (6 s) so crashed members time out fast.
    pub fn new(name: &str, inputs: usize) -> Self {
        Self::with_kafka_properties(
            name,
            inputs,
            "\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"1000\"\n",
        )
    }

    /// Like `new`, with `properties` (TOML lines) as the librdkafka
    /// properties: "" keeps the product's defaults.
    pub fn with_kafka_properties(name: &str, inputs: usize, properties: &str) -> Self {
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
             [kafka.properties]\n{properties}\
             [state]\ndir = \"{}\"\nblock_cache_mb = 16\nwrite_buffer_mb = 16\n\
             [http]\nlisten = \"\"\n",
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

    /// Starts `run` on the test's config with extra environment overrides.
    pub fn start_pipeline(&self, envs: &[(&str, &str)]) -> Child {
        Command::new(env!("CARGO_BIN_EXE_tierstream"))
            .args(["run", "--config"])
            .arg(&self.config_path)
            .envs(envs.iter().copied())
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

/// When a test fails, its instances' logs are worth more than the
/// temporary directory they die with: the warnings and errors of each, and
/// its last lines, go to the test's output (which CI keeps).
impl Drop for TestEnv {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let Ok(entries) = std::fs::read_dir(self.dir.path()) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "log") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let notable: Vec<&str> = lines
                .iter()
                .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                .copied()
                .collect();
            eprintln!(
                "--- {}: {} warnings/errors (last 40), then its last 20 lines",
                path.display(),
                notable.len()
            );
            for l in notable.iter().rev().take(40).rev() {
                eprintln!("{l}");
            }
            eprintln!("...");
            for l in lines.iter().rev().take(20).rev() {
                eprintln!("{l}");
            }
        }
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
pub fn produce(records: &[InputRecord]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("partitioner", "murmur2_random")
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    // send_result enqueues at once (librdkafka batches); the deliveries are
    // awaited afterwards, in bounded groups.
    let mut pending = Vec::new();
    for (topic, key, payload) in records {
        let mut r = FutureRecord::to(topic).payload(payload);
        if let Some(k) = key {
            r = r.key(k);
        }
        loop {
            match producer.send_result(r) {
                Ok(d) => break pending.push(d),
                Err((_, back)) => {
                    r = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
        if pending.len() >= 20_000 {
            await_all(&mut pending);
        }
    }
    await_all(&mut pending);
}

fn await_all(pending: &mut Vec<rdkafka::producer::DeliveryFuture>) {
    for d in pending.drain(..) {
        futures::executor::block_on(d).unwrap().unwrap();
    }
}

/// Sends SIGTERM and waits for a clean exit.
pub fn stop_gracefully(mut child: Child) {
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "tierstream run exited with {status}");
            return;
        }
        assert!(
            Instant::now() < deadline,
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
            let differing = e.iter().filter(|&(c, w)| g.get(c) != Some(w)).count();
            panic!(
                "outputs of {customer} differ ({} got, {} expected); {differing} of {} customers differ, {} outputs got of {} expected\ngot:      {:#?}\nexpected: {:#?}",
                have.len(),
                want.len(),
                e.len(),
                got.len(),
                expected.len(),
                brief(&have),
                brief(want)
            );
        }
    }
    let extra: Vec<&String> = g.keys().filter(|k| !e.contains_key(*k)).collect();
    assert!(extra.is_empty(), "unexpected outputs for {extra:?}");
    assert_eq!(got.len(), expected.len());
}

/// One input record: topic, key, payload.
pub type InputRecord = (String, Option<String>, Vec<u8>);

/// A generated workload on the test's input topics (by type, as
/// `generate --to-kafka` does), with what an uninterrupted replay (3 tasks,
/// customers hashed like Kafka) outputs for it.
pub struct Workload {
    /// Input records in order.
    pub records: Vec<InputRecord>,
    /// Expected tier and warning outputs.
    pub expected: Vec<Value>,
    /// Records that must end up in the DLQ.
    pub poison: usize,
}

/// Generates `spec` onto the input topics, purchases on the first,
/// complaints on the second, the rest on the third (wrapped to the topics
/// there are); every `poison_every`-th record is replaced by a malformed
/// one (a poison pill for the DLQ).
pub fn workload(env: &TestEnv, spec: &GenerateSpec, poison_every: Option<usize>) -> Workload {
    let poisoned = |i: usize| poison_every.is_some_and(|n| i % n == n - 1);
    let mut w = workload_rewritten(env, spec, |i, bytes| {
        if poisoned(i) {
            format!("{{\"event_id\": \"poison-{i}\", \"type\": ").into_bytes()
        } else {
            bytes
        }
    });
    w.poison = (0..w.records.len()).filter(|&i| poisoned(i)).count();
    w
}

/// `workload` with each record's JSON passed through `rewrite` (with its
/// index) before it is produced and replayed.
pub fn workload_rewritten(
    env: &TestEnv,
    spec: &GenerateSpec,
    rewrite: impl Fn(usize, Vec<u8>) -> Vec<u8>,
) -> Workload {
    let events = generate(spec).events;
    let topics = env.config.kafka.input_topics.len();
    let mut jsonl = Vec::new();
    let mut records = Vec::new();
    for (i, g) in events.iter().enumerate() {
        let bytes = rewrite(i, serde_json::to_vec(&g.json).unwrap());
        jsonl.extend_from_slice(&bytes);
        jsonl.push(b'\n');
        records.push((
            env.input(g.topic_rank(topics)),
            Some(g.customer_id.clone()),
            bytes,
        ));
    }
    Workload {
        records,
        expected: replay_expected(&env.config_path, jsonl),
        poison: 0,
    }
}

impl TestEnv {
    /// The records regrouped by input topic, each topic's in their order:
    /// every purchase, then every complaint, then every service event —
    /// the worst backlog for event-time alignment.
    pub fn in_topic_blocks(&self, records: &[InputRecord]) -> Vec<InputRecord> {
        let topics = &self.config.kafka.input_topics;
        let mut blocks = records.to_vec();
        blocks.sort_by_key(|r| topics.iter().position(|t| *t == r.0));
        blocks
    }
}

/// Tier and warning outputs of replaying `jsonl` with 3 tasks.
pub fn replay_expected(config_path: &Path, jsonl: Vec<u8>) -> Vec<Value> {
    let cfg = Config::load(Some(config_path)).unwrap();
    let processor = Processor::new(
        Engine::new(cfg.policy()),
        cfg.decode_rules(),
        Metrics::new(),
    );
    let mut out = Vec::new();
    let now = tierstream::pipeline::wall_clock();
    let mut input = Cursor::new(jsonl);
    let io = ReplayIo {
        input: &mut input,
        output: &mut out,
        dlq: None,
        on_bytes: &|_| {},
    };
    replay(
        &processor,
        &MemoryStore::new(),
        ReplayShape::sequential(3, 64 << 20),
        io,
        now,
    )
    .unwrap();
    // profile snapshots go to the profiles topic, compared separately
    out.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice::<Value>(l).unwrap())
        .filter(|v| v["schema"] != "tierstream.profile.v1")
        .collect()
}

/// One `tierstream run` process with its own instance id and state
/// directory, logging at info level to a file the test can watch.
pub struct Instance {
    pub child: Child,
    pub log: PathBuf,
}

impl TestEnv {
    /// Starts an instance named `name` (state under the test's directory),
    /// with extra environment overrides and arguments.
    pub fn spawn(&self, name: &str, envs: &[(&str, &str)], args: &[&str]) -> Instance {
        let log = self.dir.path().join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_tierstream"))
            .args(["run", "--config"])
            .arg(&self.config_path)
            .args(args)
            .env("RUST_LOG", "info")
            .env("TIERSTREAM_KAFKA__INSTANCE_ID", name)
            .env("TIERSTREAM_STATE__DIR", self.state_dir(name))
            .envs(envs.iter().copied())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("starting tierstream run");
        Instance { child, log }
    }

    /// The state directory of instance `name`.
    pub fn state_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("state-{name}"))
    }

    /// Runs instance `name` until it has been idle for 3 s, and asserts it
    /// exited cleanly.
    pub fn run_until_idle(&self, name: &str, envs: &[(&str, &str)]) {
        // A crashed or stopped instance (a static member never leaves)
        // stays a member until its session times out, and the group hands
        // it partitions meanwhile: a catch-up started then would go idle on
        // its share and leave the rest unread. A member with this
        // instance's own id is no obstacle: the new process takes its
        // place (static membership).
        self.wait_for_group_without_others(name, Duration::from_secs(60));
        let mut inst = self.spawn(name, envs, &["--stop-when-idle-ms", "3000"]);
        let status = inst.wait_exit(Duration::from_secs(300));
        assert!(
            status.success(),
            "{name} exited with {status}; log: {}",
            inst.log_text()
        );
        let lag = self.lag();
        assert_eq!(
            lag, 0,
            "{name} went idle with {lag} input records not committed"
        );
    }

    /// Every committed tier and warning output (read_committed), once
    /// nothing new arrived for 5 s.
    pub fn committed_outputs(&self) -> Vec<Value> {
        let k = &self.config.kafka;
        self.all_values(&[&k.tier_topic, &k.warning_topic])
    }

    /// Every committed record of `topics` as JSON documents (key, value,
    /// headers), once nothing new arrived for 5 s.
    pub fn all_records(&self, topics: &[&str]) -> Vec<Value> {
        let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        rt().block_on(tail(
            &self.config.kafka,
            &topics,
            None,
            Duration::from_secs(5),
        ))
        .unwrap()
        .iter()
        .map(TailRecord::to_json)
        .collect()
    }

    fn all_values(&self, topics: &[&str]) -> Vec<Value> {
        self.all_records(topics)
            .into_iter()
            .map(|r| r["value"].clone())
            .collect()
    }
}

impl TestEnv {
    /// Waits until the group has no members but (a predecessor of)
    /// instance `name`: every other instance stopped and its session timed
    /// out.
    pub fn wait_for_group_without_others(&self, name: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let members = self.group_members();
            let others = members.iter().filter(|m| *m != name).count();
            if others == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the group still has members {members:?} after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The client ids (= instance ids) of the group's members now.
    pub fn group_members(&self) -> Vec<String> {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap())
            .create()
            .unwrap();
        let groups = c
            .fetch_group_list(Some(&self.config.kafka.group_id), Duration::from_secs(10))
            .unwrap();
        groups
            .groups()
            .iter()
            .flat_map(|g| g.members())
            .map(|m| m.client_id().to_owned())
            .collect()
    }

    /// Input records not yet committed by the group (end offset minus
    /// committed offset, summed over the input partitions).
    pub fn lag(&self) -> i64 {
        self.committed_offsets()
            .iter()
            .map(|(_, _, committed, high)| high - committed)
            .sum()
    }

    /// Per input partition: topic, partition, the group's committed offset
    /// (0 when none) and the end offset.
    pub fn committed_offsets(&self) -> Vec<(String, i32, i64, i64)> {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        use rdkafka::TopicPartitionList;
        let k = &self.config.kafka;
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap())
            .set("group.id", &k.group_id)
            .set("isolation.level", "read_committed")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for t in &k.input_topics {
            for p in 0..k.topic_partitions {
                tpl.add_partition(t, p);
            }
        }
        let committed = c.committed_offsets(tpl, Duration::from_secs(30)).unwrap();
        committed
            .elements()
            .iter()
            .map(|e| {
                let (_, high) = c
                    .fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(10))
                    .unwrap();
                let offset = e.offset().to_raw().filter(|o| *o >= 0).unwrap_or(0);
                (e.topic().to_owned(), e.partition(), offset, high)
            })
            .collect()
    }
}

impl Instance {
    /// Waits until the log contains `needle`; false after `timeout`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log_text().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to exit by itself; panics after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "did not exit within {timeout:?}; log: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILL, then reap.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Sends a signal by name (STOP, CONT, TERM).
    pub fn signal(&self, sig: &str) {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args([&format!("-{sig}"), &pid])
            .status()
            .unwrap();
    }

    /// SIGTERM and a clean exit.
    pub fn stop(self) {
        stop_gracefully(self.child);
    }
}

// HTTP helpers for an instance's own server (health, metrics, customers).

/// A free local port (bound, then released for the child to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET over plain HTTP/1.1: (status, body).
pub fn get(port: u16, path: &str) -> Option<(u16, String)> {
    get_with(port, path, "")
}

/// GET with extra header lines (each ending in \r\n).
pub fn get_with(port: u16, path: &str, headers: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{headers}\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// Parses a response body, naming it when it is not JSON.
pub fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// Waits until `path` answers `status`; returns the body.
pub fn wait_for(port: u16, path: &str, status: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some((s, body)) = get(port, path) {
            if s == status {
                return body;
            }
        }
        assert!(Instant::now() < deadline, "{path} never answered {status}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

// The deploy artifacts and promtool, which checks them.

/// `deploy/<rel>` in this repository.
pub fn deploy(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(rel)
}

/// Runs `promtool <args>` and panics with its output unless it succeeds.
pub fn promtool(args: &[&str], file: &Path) -> String {
    let out = Command::new("promtool")
        .args(args)
        .arg(file)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run promtool ({e}); scripts/setup.sh installs it \
                 (Debian package `prometheus`)"
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool {} {} failed:\n{text}",
        args.join(" "),
        file.display()
    );
    text
}
