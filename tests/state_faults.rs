//! A state directory that cannot be trusted, against the real broker and
//! real RocksDB: damaged files, a directory another consumer group wrote,
//! one a second process holds open. Each is refused at start with an error
//! naming the problem and the fix — never silent wrong output — and
//! `--reset-state` rebuilds the state from the changelog, after which the
//! committed outputs equal an uninterrupted replay's.

mod common;

use common::*;
use std::path::Path;
use std::time::Duration;

fn workload_of(env: &TestEnv, seed: u64) -> Workload {
    workload(env, &spec(500, 8000, seed), Some(997))
}

/// Runs instance `name` expecting it to refuse to start: its log.
fn refused(env: &TestEnv, name: &str, envs: &[(&str, &str)], args: &[&str]) -> String {
    let mut args = args.to_vec();
    args.extend(["--stop-when-idle-ms", "3000"]);
    let mut inst = env.spawn(name, envs, &args);
    let status = inst.wait_exit(Duration::from_secs(60));
    let log = inst.log_text();
    assert!(!status.success(), "{name} started on bad state: {log}");
    log
}

/// Flips one bit in the middle of the state directory's manifest.
fn flip_a_bit_of_the_manifest(dir: &Path) {
    let manifest = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("MANIFEST-")
        })
        .expect("a RocksDB manifest");
    let mut bytes = std::fs::read(&manifest).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&manifest, bytes).unwrap();
}

#[test]
fn a_damaged_state_dir_is_refused_and_reset_state_rebuilds_it() {
    let env = TestEnv::new("state-damaged", 1);
    env.create_topics();
    let w = workload_of(&env, 41);
    let (first, rest) = w.records.split_at(w.records.len() / 2);
    produce(first);
    env.run_until_idle("a", &[]);
    flip_a_bit_of_the_manifest(&env.state_dir("a"));
    produce(rest);
    let log = refused(&env, "a", &[], &[]);
    assert!(
        log.contains("state store damaged") && log.contains("--reset-state"),
        "the error names the damage and the fix: {log}"
    );
    // Nothing was committed past the damage: the reset run does it all.
    assert!(env.lag() > 0);
    let mut inst = env.spawn("a", &[], &["--reset-state", "--stop-when-idle-ms", "3000"]);
    let status = inst.wait_exit(Duration::from_secs(300));
    assert!(status.success(), "{}", inst.log_text());
    let log = inst.log_text();
    assert!(
        log.lines()
            .filter(|l| l.contains("restored state from the changelog"))
            .any(|l| !l.contains("records=0")),
        "the reset state was rebuilt from the changelog: {log}"
    );
    assert_eq!(env.lag(), 0);
    assert_same_outputs(&env.committed_outputs(), &w.expected);
}

#[test]
fn a_state_dir_of_another_group_is_refused() {
    let env = TestEnv::new("state-foreign", 1);
    env.create_topics();
    let w = workload_of(&env, 42);
    produce(&w.records);
    env.run_until_idle("a", &[]);
    // Another group's instance pointed at a's directory.
    let dir = env.state_dir("a");
    let foreign = [
        ("TIERSTREAM_KAFKA__GROUP_ID", "another-group"),
        ("TIERSTREAM_STATE__DIR", dir.to_str().unwrap()),
    ];
    let log = refused(&env, "b", &foreign, &[]);
    assert!(
        log.contains(&format!("consumer group '{}'", env.config.kafka.group_id))
            && log.contains("'another-group'")
            && log.contains("--reset-state"),
        "the error names both groups and the fix: {log}"
    );
    assert_same_outputs(&env.committed_outputs(), &w.expected);
}

#[test]
fn a_state_dir_in_use_by_another_process_is_refused_even_to_reset_state() {
    let env = TestEnv::new("state-locked", 1);
    env.create_topics();
    let w = workload_of(&env, 43);
    produce(&w.records);
    let a = env.spawn("a", &[], &[]);
    assert!(a.wait_for_log("consuming", Duration::from_secs(60)));
    let dir = env.state_dir("a");
    let same_dir = [("TIERSTREAM_STATE__DIR", dir.to_str().unwrap())];
    for args in [&[][..], &["--reset-state"][..]] {
        let log = refused(&env, "b", &same_dir, args);
        assert!(
            log.contains("locked") && log.contains("give every instance its own"),
            "{args:?}: the error names the lock and the fix: {log}"
        );
    }
    a.stop();
    env.run_until_idle("a", &[]);
    assert_same_outputs(&env.committed_outputs(), &w.expected);
}
