//! The broker goes away mid-run and comes back: the pipeline rides it out
//! (aborting, rebuilding its producer, rewinding) without exiting, and the
//! committed outputs are still exactly those of an uninterrupted replay.
//! A test binary of its own, because it restarts the shared local broker.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

fn restart_broker() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka.sh");
    let status = Command::new(script).arg("restart").status().unwrap();
    assert!(status.success(), "kafka.sh restart failed");
}

#[test]
fn a_broker_restart_mid_run_loses_and_duplicates_nothing() {
    let env = TestEnv::new("eos-broker", 1);
    env.create_topics();
    let w = workload(&env, &spec(800, 16_000, 25), Some(1999));
    let (first, second) = w.records.split_at(w.records.len() / 2);
    produce(first);
    let small = [
        ("TIERSTREAM_KAFKA__BATCH_MAX_RECORDS", "100"),
        ("TIERSTREAM_KAFKA__COMMIT_INTERVAL_MS", "50"),
    ];
    let mut a = env.spawn("a", &small, &[]);
    assert!(a.wait_for_log("restored state from the changelog", Duration::from_secs(60)));
    std::thread::sleep(Duration::from_millis(500));
    restart_broker();
    assert!(
        a.child.try_wait().unwrap().is_none(),
        "the pipeline must survive a broker restart: {}",
        a.log_text()
    );
    produce(second);
    std::thread::sleep(Duration::from_secs(5));
    let log = a.log_text();
    eprintln!(
        "batches rewound during the outage: {}",
        log.matches("rewinding").count()
    );
    a.stop();
    env.run_until_idle("a", &[]);
    let got = env.committed_outputs();
    assert_same_outputs(&got, &w.expected);
    let dlq = env.all_records(&[&env.config.kafka.dlq_topic]);
    assert_eq!(dlq.len(), w.poison);
}
