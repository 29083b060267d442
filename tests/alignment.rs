//! Event-time alignment through a real broker: a task's three input
//! topics arrive as a backlog one topic at a time (every purchase, then
//! every complaint, then every service event), and the committed outputs
//! of `run` must still equal those of `replay --partitions 3` of the
//! time-ordered file, output by output (schema, ids, seq, every field).

mod common;

use common::*;
use std::time::{Duration, Instant};
use tierstream::workload::generate::GenerateSpec;

/// The demo's workload (`scripts/demo.sh`: 2000 customers, 40000 events,
/// seed 42, the CLI's default start and span).
fn demo_spec() -> GenerateSpec {
    GenerateSpec {
        customers: 2000,
        events: 40_000,
        seed: 42,
        start: JAN_2025,
        days: 365,
        ..GenerateSpec::default()
    }
}

#[test]
fn a_backlog_produced_topic_by_topic_gives_the_replay_outputs() {
    let env = TestEnv::new("align-demo", 3);
    env.create_topics();
    let w = workload(&env, &demo_spec(), None);
    let churn = w
        .expected
        .iter()
        .filter(|v| v["schema"] == "tierstream.churn_warning.v1")
        .count();
    // The default risk rule warns few (it is meant to be believed): the
    // comparison below still covers these warnings output by output.
    assert!(churn > 20, "the demo workload warns ({churn})");
    produce(&env.in_topic_blocks(&w.records));
    env.run_until_idle("a", &[]);
    assert_same_outputs(&env.committed_outputs(), &w.expected);
}

#[test]
fn a_long_backlog_with_an_instance_joining_mid_run_gives_the_replay_outputs() {
    let env = TestEnv::new("align-long", 3);
    env.create_topics();
    let spec = GenerateSpec {
        customers: 10_000,
        events: 200_000,
        seed: 43,
        start: JAN_2025,
        days: 365,
        ..GenerateSpec::default()
    };
    let w = workload(&env, &spec, Some(4999));
    produce(&env.in_topic_blocks(&w.records));
    // Smaller batches than the default, so the backlog spans many polls
    // and commits and the second instance joins while the first is busy.
    let batches = [("TIERSTREAM_KAFKA__BATCH_MAX_RECORDS", "2000")];
    let a = env.spawn("a", &batches, &[]);
    let total = w.records.len() as i64;
    let deadline = Instant::now() + Duration::from_secs(120);
    while env.lag() > total * 3 / 4 {
        assert!(
            Instant::now() < deadline,
            "a made no progress: {}",
            a.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let left = env.lag();
    let b = env.spawn("b", &batches, &[]);
    assert!(
        b.wait_for_log("restored state from the changelog", Duration::from_secs(90)),
        "b never got partitions: {}",
        b.log_text()
    );
    eprintln!("b joined with {left} of {total} input records uncommitted");
    assert!(left > 0, "b must join mid-run");
    let deadline = Instant::now() + Duration::from_secs(300);
    while env.lag() > 0 {
        assert!(Instant::now() < deadline, "the backlog was not drained");
        std::thread::sleep(Duration::from_millis(200));
    }
    a.stop();
    b.stop();
    let got = env.committed_outputs();
    assert_same_outputs(&got, &w.expected);
    let dlq = env.all_records(&[&env.config.kafka.dlq_topic]);
    assert_eq!(dlq.len(), w.poison, "each poison pill reaches the DLQ once");
    eprintln!("{} outputs equal the replay's", got.len());
}
