//! Percentile tiers through Kafka: three instances of `run`, each task
//! publishing its month summaries to the summaries topic and closing a
//! month only with every task's, give exactly the outputs of
//! `replay --partitions 3` — customer by customer, and the same cut
//! points month by month.

mod common;

use common::*;
use serde_json::Value;
use std::time::Duration;
use tierstream::config::Config;
use tierstream::workload::generate::GenerateSpec;

const CUTPOINTS: &str = "tierstream.tier_cutpoints.v1";

/// The test's config with `policy = "percentile"`.
fn percentile_env(name: &str) -> TestEnv {
    let mut env = TestEnv::new(name, 3);
    let mut toml = std::fs::read_to_string(&env.config_path).unwrap();
    toml.push_str("[tiers]\npolicy = \"percentile\"\n");
    std::fs::write(&env.config_path, toml).unwrap();
    env.config = Config::load(Some(&env.config_path)).unwrap();
    env
}

/// Cut-point outputs (in month order) and the customers' outputs.
fn split(values: Vec<Value>) -> (Vec<Value>, Vec<Value>) {
    let (mut cuts, customers): (Vec<Value>, Vec<Value>) =
        values.into_iter().partition(|v| v["schema"] == CUTPOINTS);
    cuts.sort_by(|a, b| a["at"].as_str().cmp(&b["at"].as_str()));
    (cuts, customers)
}

#[test]
fn three_instances_give_the_replay_outputs_and_cut_points() {
    let env = percentile_env("pct3");
    env.create_topics();
    let w = workload(
        &env,
        &GenerateSpec {
            customers: 300,
            events: 6000,
            seed: 5,
            start: JAN_2025,
            days: 200,
            ..GenerateSpec::default()
        },
        None,
    );
    let (want_cuts, want) = split(w.expected);
    assert!(
        want_cuts.len() >= 5,
        "the cut points should move at most month closes: {want_cuts:?}"
    );
    assert!(want
        .iter()
        .any(|v| v["cause"]["timer"] == "month_close" && v["direction"] == "downgrade"));
    produce(&w.records);
    let instances: Vec<Instance> = ["a", "b", "c"]
        .iter()
        .map(|n| env.spawn(n, &[], &[]))
        .collect();
    let k = &env.config.kafka;
    let total = want.len() + want_cuts.len();
    let got = env.consume_topics(&[&k.tier_topic, &k.warning_topic], total);
    for i in instances {
        i.stop();
    }
    let got: Vec<Value> = got.iter().map(|r| r.to_json()["value"].clone()).collect();
    let (got_cuts, got) = split(got);
    assert_eq!(got_cuts, want_cuts, "the cut points month by month");
    assert_same_outputs(&got, &want);
}

/// One instance stays up, the other is SIGKILLed mid-stream again and
/// again while input keeps arriving topic by topic (a backlog to align
/// each time): tasks held at month closes move between instances with
/// their published summaries, and the committed outputs still equal the
/// uninterrupted replay, cut points included.
#[test]
fn sigkill_mid_stream_keeps_the_replay_outputs_and_cut_points() {
    let env = percentile_env("pct-kill");
    env.create_topics();
    let w = workload(&env, &spec(600, 16_000, 9), Some(991));
    let (want_cuts, want) = split(w.expected.clone());
    assert!(
        want_cuts.len() >= 10,
        "{} month closes moved",
        want_cuts.len()
    );
    // The survivor reads while each part is produced topic by topic: it
    // waits a little for a topic that has reached its end (otherwise the
    // other topics' events would run ahead of it and make it late, which
    // no replay can reproduce).
    let small = [
        ("TIERSTREAM_KAFKA__BATCH_MAX_RECORDS", "50"),
        ("TIERSTREAM_KAFKA__COMMIT_INTERVAL_MS", "50"),
        ("TIERSTREAM_KAFKA__MAX_TASK_IDLE_MS", "3000"),
    ];
    let parts: Vec<&[InputRecord]> = w.records.chunks(w.records.len().div_ceil(5)).collect();
    produce(&env.in_topic_blocks(parts[0]));
    let survivor = env.spawn("a", &small, &[]);
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            produce(&env.in_topic_blocks(part));
        }
        let victim = env.spawn("b", &small, &[]);
        assert!(
            victim.wait_for_log("restored state from the changelog", Duration::from_secs(60)),
            "incarnation {i} of b never became ready: {}",
            victim.log_text()
        );
        std::thread::sleep(Duration::from_millis(300 + 150 * i as u64));
        victim.kill9();
    }
    survivor.stop();
    env.run_until_idle("a", &[]);
    let (got_cuts, got) = split(env.committed_outputs());
    assert_same_outputs(&got, &want);
    assert_eq!(got_cuts, want_cuts, "the cut points month by month");
    let dlq = env.all_records(&[&env.config.kafka.dlq_topic]);
    assert_eq!(dlq.len(), w.poison, "each poison pill reaches the DLQ once");
}
