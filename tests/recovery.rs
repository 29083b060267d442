//! Recovery after a crash, against the real broker with the product's
//! default group settings (no test-only session timeout): an instance
//! SIGKILLed mid-stream and restarted at once takes its partitions back as
//! the same static member, and one that stays dead is taken over by the
//! others. Either way the committed outputs equal the uninterrupted
//! replay's.
//!
//! Each recovery time (restart to the first newly committed output, kill
//! to the last partition's first output after it) is printed, not
//! asserted: these machines are shared. `scripts/recovery_trials.sh` runs
//! the kill loop 20 times and prints the distribution.

mod common;

use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Small transactions, so a kill lands inside one.
const SMALL_BATCHES: [(&str, &str); 2] = [
    ("TIERSTREAM_KAFKA__BATCH_MAX_RECORDS", "100"),
    ("TIERSTREAM_KAFKA__COMMIT_INTERVAL_MS", "50"),
];

/// The product's default `session.timeout.ms`.
const SESSION_TIMEOUT: Duration = Duration::from_secs(45);

/// When each committed output arrived, and on which partition: a
/// read_committed reader of the output topics on a thread of its own.
struct Arrivals {
    seen: Arc<Mutex<Vec<(i32, Instant)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Arrivals {
    fn start(env: &TestEnv) -> Self {
        let k = &env.config.kafka;
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap())
            .set("group.id", format!("{}-arrivals", k.group_id))
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for t in [&k.tier_topic, &k.warning_topic] {
            for p in 0..k.topic_partitions {
                tpl.add_partition_offset(t, p, Offset::Beginning).unwrap();
            }
        }
        c.assign(&tpl).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, halt) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !halt.load(Ordering::Relaxed) {
                if let Some(Ok(m)) = c.poll(Duration::from_millis(20)) {
                    s.lock()
                        .unwrap()
                        .push((rdkafka::Message::partition(&m), Instant::now()));
                }
            }
        });
        Arrivals {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Once outputs stop arriving for `quiet`: how many there are.
    fn settle(&self, quiet: Duration) -> usize {
        let mut n = self.count();
        loop {
            std::thread::sleep(quiet);
            let m = self.count();
            if m == n {
                return n;
            }
            n = m;
        }
    }

    /// Waits until every partition in `partitions` has an output past the
    /// first `from`; the arrival of each partition's first one.
    fn first_per_partition(
        &self,
        from: usize,
        partitions: &[i32],
        timeout: Duration,
    ) -> Vec<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            let firsts: Vec<Option<Instant>> = {
                let seen = self.seen.lock().unwrap();
                partitions
                    .iter()
                    .map(|p| seen[from..].iter().find(|(q, _)| q == p).map(|(_, t)| *t))
                    .collect()
            };
            if let Some(all) = firsts.iter().copied().collect::<Option<Vec<_>>>() {
                return all;
            }
            assert!(
                Instant::now() < deadline,
                "no new output on some of {partitions:?} within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Arrivals {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}

/// min / median / p90 / max of `xs`, in seconds.
fn distribution(xs: &mut [Duration]) -> String {
    xs.sort();
    let at = |q: f64| xs[((xs.len() - 1) as f64 * q).round() as usize];
    format!(
        "n={} min {} median {} p90 {} max {} s",
        xs.len(),
        secs(xs[0]),
        secs(at(0.5)),
        secs(at(0.9)),
        secs(xs[xs.len() - 1])
    )
}

fn workload_of(env: &TestEnv, parts: usize, seed: u64) -> Workload {
    workload(env, &spec(600, 3000 * parts as u64, seed), Some(997))
}

#[test]
fn a_killed_instance_restarted_at_once_takes_its_partitions_back_as_the_same_member() {
    let env = TestEnv::with_kafka_properties("recovery", 1, "");
    env.create_topics();
    let kills: usize = std::env::var("TIERSTREAM_RECOVERY_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(3);
    let w = workload_of(&env, kills + 1, 31);
    let parts: Vec<&[InputRecord]> = w
        .records
        .chunks(w.records.len().div_ceil(kills + 1))
        .collect();
    let arrivals = Arrivals::start(&env);
    let all: Vec<i32> = (0..env.config.kafka.topic_partitions).collect();
    let mut a = env.spawn("a", &SMALL_BATCHES, &[]);
    produce(parts[0]);
    arrivals.first_per_partition(0, &all[..1], Duration::from_secs(120));
    let mut recoveries = Vec::new();
    for (i, part) in parts[1..].iter().enumerate() {
        // Killed as soon as it has committed its first outputs of the last
        // part: the rest of the part is not committed yet.
        a.kill9();
        let before = arrivals.settle(Duration::from_millis(500));
        // New input is waiting before the restart, so the time measured is
        // the instance's own: join, restore, process, commit.
        produce(part);
        let restart = Instant::now();
        a = env.spawn("a", &SMALL_BATCHES, &[]);
        let first = arrivals.first_per_partition(before, &all, Duration::from_secs(120));
        let first = first.into_iter().min().unwrap();
        // Not a speed check: a restart either waits for the dead member's
        // session (45 s here, the default) to expire or it does not.
        assert!(
            first - restart < SESSION_TIMEOUT,
            "kill {}: the restart waited for the dead member's session ({:?})",
            i + 1,
            first - restart
        );
        recoveries.push(first - restart);
        eprintln!(
            "kill {}: first new committed output after {} s",
            i + 1,
            secs(first - restart)
        );
        // The restarted process replaced its dead predecessor in the group
        // (a dynamic member would sit beside it until its session expired).
        let members = env.group_members();
        assert_eq!(
            members,
            vec!["a".to_owned()],
            "kill {}: the dead member is still in the group",
            i + 1
        );
    }
    eprintln!(
        "restart to first new committed output over {kills} kills: {}",
        distribution(&mut recoveries)
    );
    a.stop();
    env.run_until_idle("a", &[]);
    assert_same_outputs(&env.committed_outputs(), &w.expected);
}

#[test]
fn a_dead_instance_is_taken_over_within_the_session_timeout() {
    let env = TestEnv::new("takeover", 1);
    env.create_topics();
    let w = workload_of(&env, 3, 32);
    let parts: Vec<&[InputRecord]> = w.records.chunks(w.records.len().div_ceil(3)).collect();
    let a = env.spawn("a", &SMALL_BATCHES, &[]);
    let b = env.spawn("b", &SMALL_BATCHES, &[]);
    produce(parts[0]);
    while env.lag() > 0 {
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut members = env.group_members();
    members.sort();
    assert_eq!(members, ["a", "b"], "both instances joined");
    let at_kill: Vec<i64> = env.committed_offsets().iter().map(|o| o.2).collect();
    b.kill9();
    let killed = Instant::now();
    produce(parts[1]);
    // Every partition commits new input again: b's ones once its session
    // expired and a restored them.
    let mut moved: Vec<Option<Duration>> = vec![None; at_kill.len()];
    let deadline = killed + Duration::from_secs(120);
    while moved.iter().any(Option::is_none) {
        assert!(
            Instant::now() < deadline,
            "partitions not taken over: {moved:?}"
        );
        for (i, o) in env.committed_offsets().iter().enumerate() {
            if o.2 > at_kill[i] && moved[i].is_none() {
                moved[i] = Some(killed.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let moved: Vec<String> = moved.into_iter().flatten().map(secs).collect();
    eprintln!("kill to first commit of new input per partition: {moved:?} s (session timeout 6 s)");
    assert_eq!(env.group_members(), ["a"], "the dead member left the group");
    produce(parts[2]);
    a.stop();
    env.run_until_idle("a", &[]);
    assert_same_outputs(&env.committed_outputs(), &w.expected);
}
