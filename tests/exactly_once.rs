//! Exactly-once under failure, against the real local broker: instances
//! are SIGKILLed at random moments, lose their state directory, join and
//! leave the group, and get fenced as zombies. In every case the committed
//! (read_committed) outputs must equal, per customer and in order, those of
//! an uninterrupted replay of the same input — nothing lost, nothing twice
//! — and every poison pill must reach the dead-letter topic exactly once.

mod common;

use common::*;
use rand::{Rng, SeedableRng};
use std::time::Duration;

/// Small, frequent transactions, so a kill lands mid-stream.
const SMALL_BATCHES: [(&str, &str); 2] = [
    ("TIERSTREAM_KAFKA__BATCH_MAX_RECORDS", "100"),
    ("TIERSTREAM_KAFKA__COMMIT_INTERVAL_MS", "50"),
];

/// Transactions of a few milliseconds, so a kill or a freeze almost
/// always lands inside one.
const TINY_BATCHES: [(&str, &str); 2] = [
    ("TIERSTREAM_KAFKA__BATCH_MAX_RECORDS", "50"),
    ("TIERSTREAM_KAFKA__COMMIT_INTERVAL_MS", "50"),
];

/// Everything committed equals the uninterrupted replay; the DLQ holds
/// each poison pill once.
fn assert_exactly_once(env: &TestEnv, w: &Workload) {
    let got = env.committed_outputs();
    assert_same_outputs(&got, &w.expected);
    let dlq = env.all_records(&[&env.config.kafka.dlq_topic]);
    assert_eq!(dlq.len(), w.poison, "each poison pill reaches the DLQ once");
    eprintln!(
        "{} committed outputs and {} dead letters equal the uninterrupted run",
        got.len(),
        dlq.len()
    );
}

fn chunks(w: &Workload, n: usize) -> Vec<&[InputRecord]> {
    w.records.chunks(w.records.len().div_ceil(n)).collect()
}

/// On the default three input topics, each part produced topic by topic,
/// so every restart also has to align a backlog.
#[test]
fn sigkill_at_random_moments_loses_and_duplicates_nothing() {
    let env = TestEnv::new("eos-kill", 3);
    env.create_topics();
    let kills: usize = std::env::var("TIERSTREAM_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let w = workload(&env, &spec(1500, 5000 * kills as u64, 21), Some(997));
    assert!(w.expected.len() > 1000 && w.poison > 30);
    let seed = std::env::var("TIERSTREAM_KILL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    // New input keeps arriving, so every incarnation has work when it dies.
    let parts = chunks(&w, kills);
    let mut mid_stream = 0;
    for (i, part) in parts.iter().enumerate() {
        produce(&env.in_topic_blocks(part));
        let inst = env.spawn("a", &TINY_BATCHES, &[]);
        assert!(
            inst.wait_for_log("restored state from the changelog", Duration::from_secs(60)),
            "incarnation {i} never became ready: {}",
            inst.log_text()
        );
        std::thread::sleep(Duration::from_millis(rng.gen_range(50..800)));
        inst.kill9();
        // Input left uncommitted at the kill: it died mid-stream.
        mid_stream += usize::from(env.lag() > 0);
    }
    eprintln!(
        "{} kills, {mid_stream} with input still uncommitted",
        parts.len()
    );
    assert!(parts.len() >= 10);
    assert!(
        mid_stream * 4 >= parts.len() * 3,
        "most kills must land mid-stream ({mid_stream} of {})",
        parts.len()
    );
    env.run_until_idle("a", &[]);
    assert_exactly_once(&env, &w);
}

#[test]
fn losing_the_state_directory_restores_from_the_changelog() {
    let env = TestEnv::new("eos-wipe", 1);
    env.create_topics();
    let w = workload(&env, &spec(800, 12_000, 22), Some(1999));
    let parts = chunks(&w, 3);
    for part in &parts {
        produce(part);
        env.run_until_idle("a", &[]);
        // The disk is gone: only the changelog knows the customers.
        std::fs::remove_dir_all(env.state_dir("a")).unwrap();
    }
    let log = std::fs::read_to_string(env.dir.path().join("a.log")).unwrap();
    assert!(
        log.lines()
            .filter(|l| l.contains("restored state from the changelog"))
            .any(|l| !l.contains("records=0")),
        "later runs restored records: {log}"
    );
    assert_exactly_once(&env, &w);
}

#[test]
fn instances_joining_and_leaving_give_identical_output() {
    let env = TestEnv::new("eos-scale", 1);
    env.create_topics();
    let w = workload(&env, &spec(1200, 24_000, 23), Some(1499));
    let parts = chunks(&w, 6);
    let a = env.spawn("a", &SMALL_BATCHES, &[]);
    produce(parts[0]);
    let b = env.spawn("b", &SMALL_BATCHES, &[]);
    produce(parts[1]);
    let c = env.spawn("c", &SMALL_BATCHES, &[]);
    produce(parts[2]);
    // Every instance got tasks and restored them before working.
    for (name, inst) in [("b", &b), ("c", &c)] {
        assert!(
            inst.wait_for_log("restored state", Duration::from_secs(60)),
            "{name} never got partitions: {}",
            inst.log_text()
        );
    }
    a.stop(); // a graceful leave
    produce(parts[3]);
    std::thread::sleep(Duration::from_secs(2));
    b.kill9(); // a crash: its partitions move after the session timeout
    produce(parts[4]);
    let b = env.spawn("b", &SMALL_BATCHES, &[]); // and it comes back
    produce(parts[5]);
    std::thread::sleep(Duration::from_secs(3));
    c.stop();
    b.stop();
    env.run_until_idle("a", &[]);
    assert_exactly_once(&env, &w);
}

#[test]
fn a_zombie_instance_is_fenced() {
    let env = TestEnv::new("eos-zombie", 1);
    env.create_topics();
    let w = workload(&env, &spec(1000, 24_000, 24), Some(1999));
    let parts = chunks(&w, 4);
    produce(parts[0]);
    let a = env.spawn("a", &TINY_BATCHES, &[]);
    assert!(a.wait_for_log("restored state", Duration::from_secs(60)));
    let b = env.spawn("b", &TINY_BATCHES, &[]);
    assert!(b.wait_for_log("restored state", Duration::from_secs(60)));
    // Freeze a in the middle of its work, past its session timeout and its
    // transaction timeout: b takes its partitions over while a still
    // believes it owns them, with a transaction open.
    produce(parts[1]);
    std::thread::sleep(Duration::from_millis(300));
    a.signal("STOP");
    produce(parts[2]);
    std::thread::sleep(Duration::from_secs(14));
    a.signal("CONT");
    produce(parts[3]);
    std::thread::sleep(Duration::from_secs(5));
    let log = a.log_text();
    let fenced = log.contains("batch not committed") || log.contains("producer failed");
    eprintln!("zombie fenced mid-transaction: {fenced}");
    a.stop();
    b.stop();
    env.run_until_idle("b", &[]);
    assert_exactly_once(&env, &w);
}
