//! `tierstream replay` as a user runs it: files in and out, rejected lines
//! in the DLQ file, exit status 0 even with bad lines, a summary on stderr.

use serde_json::Value;
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tierstream"))
}

fn lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn replay_writes_outputs_and_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let out = dir.path().join("out.jsonl");
    let dlq = dir.path().join("dlq.jsonl");
    std::fs::write(
        &input,
        concat!(
            r#"{"event_id":"e1","type":"purchase","customer_id":"a","ts":"2026-01-05T10:00:00Z","amount":100,"margin":30}"#, "\n",
            "not json\n",
            "\n",
            r#"{"event_id":"e2","type":"purchase","customer_id":"a","ts":"2026-01-06T10:00:00Z","amount":9000,"margin":2500}"#, "\n",
            r#"{"event_id":"e3","type":"teleport","customer_id":"a","ts":"2026-01-06T10:00:00Z"}"#, "\n",
            r#"{"event_id":"e2","type":"purchase","customer_id":"a","ts":"2026-01-06T10:00:00Z","amount":9000,"margin":2500}"#, "\n",
        ),
    )
    .unwrap();
    let res = bin()
        .args(["replay", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&out)
        .arg("--dlq")
        .arg(&dlq)
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(stderr.contains("5 records"), "{stderr}");
    assert!(stderr.contains("2 rejected"), "{stderr}");
    assert!(stderr.contains("duplicate"), "{stderr}");

    let outs = lines(&out);
    assert_eq!(outs.len(), 2);
    assert_eq!(outs[0]["direction"], "initial");
    assert_eq!(outs[0]["to"], "iron");
    assert_eq!(outs[1]["direction"], "upgrade");
    assert_eq!(outs[1]["to"], "gold");
    assert_eq!(outs[1]["seq"], 2);
    assert_eq!(outs[1]["at"], "2026-01-06T10:00:00.000Z");
    assert_eq!(outs[1]["cause"]["event_id"], "e2");
    assert_eq!(outs[1]["inputs"]["value_12m"], 2530.0);

    let dead = lines(&dlq);
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0]["code"], "invalid_json");
    assert_eq!(dead[0]["line"], 2);
    assert_eq!(dead[0]["raw"], "not json");
    assert_eq!(dead[1]["code"], "unknown_type");
    assert_eq!(dead[1]["line"], 5);
    assert!(dead[1]["message"].as_str().unwrap().contains("type"));
}

#[test]
fn replay_is_deterministic_across_runs_and_stores() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("gen.jsonl");
    let st = bin()
        .args([
            "generate",
            "--customers",
            "200",
            "--events",
            "4000",
            "--seed",
            "5",
            "--output",
        ])
        .arg(&input)
        .status()
        .unwrap();
    assert!(st.success());
    let run = |extra: &[&str], name: &str| {
        let out = dir.path().join(name);
        let st = bin()
            .args(["replay", "--partitions", "3", "--input"])
            .arg(&input)
            .arg("--output")
            .arg(&out)
            .args(extra)
            .status()
            .unwrap();
        assert!(st.success());
        std::fs::read(out).unwrap()
    };
    let rocks = run(&["--threads", "1"], "a.jsonl");
    assert!(!rocks.is_empty());
    assert_eq!(rocks, run(&["--threads", "1"], "b.jsonl"));
    assert_eq!(rocks, run(&["--memory", "--threads", "1"], "c.jsonl"));
    // Tasks on parallel threads: the same bytes, in the same order.
    assert_eq!(rocks, run(&["--threads", "2"], "d.jsonl"));
    assert_eq!(rocks, run(&["--threads", "3", "--memory"], "e.jsonl"));
}

/// Replay writes its state without RocksDB's write-ahead log and makes it
/// durable once at the end: a second replay over the same `--state-dir`
/// goes on from where the first stopped, as one replay of both files.
#[test]
fn a_replay_goes_on_from_the_state_a_previous_one_left() {
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole.jsonl");
    let st = bin()
        .args(["generate", "--customers", "150", "--events", "3000"])
        .args(["--seed", "11", "--output"])
        .arg(&whole)
        .status()
        .unwrap();
    assert!(st.success());
    let text = std::fs::read_to_string(&whole).unwrap();
    let all: Vec<&str> = text.lines().collect();
    let (first, second) = all.split_at(all.len() / 2);
    let (a, b) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
    std::fs::write(&a, first.join("\n") + "\n").unwrap();
    std::fs::write(&b, second.join("\n") + "\n").unwrap();
    let replay = |input: &std::path::Path, state: &str, name: &str| {
        let out = dir.path().join(name);
        let st = bin()
            .args(["replay", "--partitions", "3", "--threads", "1", "--input"])
            .arg(input)
            .arg("--output")
            .arg(&out)
            .arg("--state-dir")
            .arg(dir.path().join(state))
            .status()
            .unwrap();
        assert!(st.success());
        std::fs::read_to_string(out).unwrap()
    };
    let at_once = replay(&whole, "one", "once.jsonl");
    let in_two = replay(&a, "two", "first.jsonl") + &replay(&b, "two", "second.jsonl");
    assert!(at_once.lines().count() > 100, "a workload with outputs");
    assert_eq!(in_two, at_once);
}

#[test]
fn parallel_replay_keeps_dead_letters_and_outputs_in_input_order() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let mut text = String::new();
    for i in 0..300 {
        let c = format!("c{}", i % 17);
        text.push_str(&format!(
            "{{\"type\":\"purchase\",\"event_id\":\"e{i}\",\"customer_id\":\"{c}\",\"ts\":\"2026-01-{:02}T10:00:00Z\",\"amount\":{}.5,\"margin\":{}.25}}\n",
            1 + i % 28,
            100 + i,
            40 + i
        ));
        if i % 7 == 0 {
            text.push_str(&format!(
                "{{\"type\":\"nonsense\",\"customer_id\":\"{c}\"}}\n"
            ));
        }
        if i % 11 == 0 {
            text.push_str("not json\n");
        }
    }
    std::fs::write(&input, text).unwrap();
    let run = |threads: &str| {
        let out = dir.path().join(format!("out-{threads}.jsonl"));
        let dlq = dir.path().join(format!("dlq-{threads}.jsonl"));
        let st = bin()
            .args([
                "replay",
                "--memory",
                "--partitions",
                "4",
                "--threads",
                threads,
            ])
            .arg("--input")
            .arg(&input)
            .arg("--output")
            .arg(&out)
            .arg("--dlq")
            .arg(&dlq)
            .status()
            .unwrap();
        assert!(st.success());
        (std::fs::read(out).unwrap(), lines(&dlq))
    };
    let (out1, dlq1) = run("1");
    let (out4, dlq4) = run("4");
    assert!(!out1.is_empty());
    assert_eq!(dlq1.len(), 43 + 28, "every bad line in the DLQ");
    let numbers: Vec<u64> = dlq1.iter().map(|d| d["line"].as_u64().unwrap()).collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "in input order");
    assert_eq!(out1, out4);
    assert_eq!(dlq1, dlq4);
}

/// A record whose JSON names `customer_id` twice decodes to the event of
/// the last (as any JSON object's duplicate member reads), and `replay`
/// must run it in that customer's task, as the Kafka pipeline does with a
/// record keyed by its customer: the outputs equal those of the same
/// events written plainly.
#[test]
fn a_record_naming_its_customer_twice_runs_in_that_customers_task() {
    use tierstream::kafka::partitioner::partition_for;
    let dir = tempfile::tempdir().unwrap();
    // A customer outside task 0, where a line whose customer could not be
    // read used to go.
    let b = (0..)
        .map(|i| format!("b{i}"))
        .find(|b| partition_for(b.as_bytes(), 4) != 0)
        .unwrap();
    let purchase = |id: &str, day: u32, customer: &str| {
        format!(
            "{{\"type\":\"purchase\",\"event_id\":\"{id}\",{customer},\"ts\":\"2026-01-{day:02}T10:00:00Z\",\"amount\":900,\"margin\":300}}\n"
        )
    };
    let plain = format!("\"customer_id\":\"{b}\"");
    let twice = format!("\"customer_id\":\"someone else\",\"customer_id\":\"{b}\"");
    let run = |name: &str, first: &str| {
        let input = dir.path().join(format!("{name}.jsonl"));
        let out = dir.path().join(format!("{name}-out.jsonl"));
        let text = [
            purchase("e1", 5, first),
            purchase("e2", 6, &plain),
            purchase("e3", 9, &plain),
        ]
        .concat();
        std::fs::write(&input, text).unwrap();
        let st = bin()
            .args(["replay", "--memory", "--partitions", "4", "--input"])
            .arg(&input)
            .arg("--output")
            .arg(&out)
            .status()
            .unwrap();
        assert!(st.success());
        std::fs::read_to_string(out).unwrap()
    };
    let expected = run("plain", &plain);
    assert!(!expected.is_empty());
    assert_eq!(run("twice", &twice), expected);
}

#[test]
fn bad_config_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[tiers]\ngold = -5\n").unwrap();
    let res = bin()
        .args(["replay", "--input", "-", "--output", "-", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!res.status.success());
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(
        stderr.contains("tiers.iron") || stderr.contains("tiers.gold"),
        "{stderr}"
    );
    let res = bin()
        .args(["replay", "--input", "-", "--output", "-"])
        .env("TIERSTREAM_TIME__ALLOWED_LATENESS_DAYS", "soon")
        .output()
        .unwrap();
    assert!(!res.status.success());
    assert!(String::from_utf8_lossy(&res.stderr).contains("allowed_lateness_days"));
}

/// A generated labelled workload of 2000 customers in `dir`, of `n`
/// events over `d` days from 2024-01-01: (events, truth).
fn labelled(
    dir: &std::path::Path,
    seed: &str,
    n: &str,
    d: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let events = dir.join("events.jsonl");
    let truth = dir.join("truth.jsonl");
    let st = bin()
        .args([
            "generate",
            "--customers",
            "2000",
            "--events",
            n,
            "--days",
            d,
            "--start",
            "2024-01-01",
            "--seed",
            seed,
            "--output",
        ])
        .arg(&events)
        .arg("--truth")
        .arg(&truth)
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(lines(&truth).len(), 2000);
    (events, truth)
}

#[test]
fn backtest_scores_warnings_against_the_planted_truth() {
    let dir = tempfile::tempdir().unwrap();
    let (events, truth) = labelled(dir.path(), "9", "30000", "365");
    let json = dir.path().join("backtest.json");
    let plots = dir.path().join("plots");
    let res = bin()
        .args(["backtest", "--sweep", "0.3,0.5", "--truth"])
        .arg(&truth)
        .arg("--input")
        .arg(&events)
        .arg("--json")
        .arg(&json)
        .arg("--plots")
        .arg(&plots)
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let report = String::from_utf8_lossy(&res.stdout);
    assert!(
        report.contains("precision (180d)") && report.contains("first_alarm"),
        "{report}"
    );
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let rule = |name: &str| -> &Value {
        doc["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("rule {name} in {doc}"))
    };
    // the quadrant policy must single out spurious customers: a far larger
    // share of them is warned than of true loyal or latent ones
    let quadrant = &rule("quadrant")["report"];
    let share = |name: &str| -> f64 {
        let row = &quadrant["by_archetype"][name];
        row["warned"].as_f64().unwrap() / row["customers"].as_f64().unwrap()
    };
    assert!(share("spurious_churner") > 0.30, "{report}");
    assert!(
        share("spurious_churner") > 4.0 * share("true_loyal"),
        "{report}"
    );
    assert!(share("latent") < 0.05, "{report}");
    assert!(quadrant["precision"].as_f64().unwrap() > 0.0, "{report}");
    let alarm = &rule("first_alarm")["report"];
    assert!(alarm["warned"].as_u64().unwrap() > 0, "{report}");
    // the risk rule at the default threshold and at each swept one
    for name in ["risk", "risk@0.30", "risk@0.50"] {
        assert!(
            rule(name)["report"]["warned"].as_u64().is_some(),
            "{name}: {doc}"
        );
    }
    let svg = std::fs::read_to_string(plots.join("precision_recall.svg")).unwrap();
    assert!(svg.contains("quadrant") && svg.contains("first_alarm"));
    // the shipped model is calibrated on month-start samples of the events
    // (of a population far sparser and shorter than the one the defaults
    // were fitted on, so only the table's shape is checked here)
    let cal = &doc["calibration"];
    let samples = cal["samples"].as_u64().unwrap();
    let in_deciles: u64 = cal["deciles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["n"].as_u64().unwrap())
        .sum();
    assert!(samples > 500 && in_deciles == samples, "{cal}");
    assert!(plots.join("reliability.svg").exists());
}

#[test]
fn train_fits_coefficients_the_config_accepts_and_measures_them_held_out() {
    let dir = tempfile::tempdir().unwrap();
    let (events, truth) = labelled(dir.path(), "11", "120000", "730");
    let fragment = dir.path().join("risk.toml");
    let json = dir.path().join("fit.json");
    let res = bin()
        .args(["train", "--input"])
        .arg(&events)
        .arg("--truth")
        .arg(&truth)
        .arg("--output")
        .arg(&fragment)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&res.stdout);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert!(report.contains("fitted, held out"), "{report}");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(doc["fitted"]["converged"], true, "{doc}");
    let held = &doc["held_out"];
    assert!(held["churned"].as_u64().unwrap() > 0, "{held}");
    assert!(
        held["samples"].as_u64().unwrap() < doc["train"]["samples"].as_u64().unwrap(),
        "a fifth of the customers is held out: {doc}"
    );
    // the planted churners must rank above the stayers on customers the
    // fit never saw (a coin is 0.5; half the positives of a 180-day label
    // are still months before their deterioration, which caps it near 0.7)
    assert!(held["auc"].as_f64().unwrap() > 0.6, "{held}");
    // and the fit predicts them at least as well as the shipped defaults
    let brier = |v: &Value| v["calibration"]["brier"].as_f64().unwrap();
    assert!(
        brier(held) <= brier(&doc["in_force_held_out"]) + 0.005,
        "{doc}"
    );
    // the fragment names every coefficient, and the product runs with it
    let text = std::fs::read_to_string(&fragment).unwrap();
    assert!(text.contains("[warnings.risk_coefficients]"), "{text}");
    for key in ["intercept", "complaint_surge", "purchase_gap", "tier_iron"] {
        assert!(text.contains(&format!("\n{key} = ")), "{key}: {text}");
    }
    // and the whole model: the calibration and every feature's shape, so
    // it replaces the shipped one ([] for a feature fitted straight)
    assert!(text.contains("\nrisk_calibration = [["), "{text}");
    assert!(text.contains("[warnings.risk_shapes]"), "{text}");
    assert!(text.contains("\npurchase_gap = []"), "never shaped: {text}");
    let out = dir.path().join("out.jsonl");
    let st = bin()
        .args(["replay", "--memory", "--config"])
        .arg(&fragment)
        .arg("--input")
        .arg(&events)
        .arg("--output")
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success());
    let bad = bin()
        .args(["train", "--held-out", "1.5", "--input"])
        .arg(&events)
        .arg("--truth")
        .arg(&truth)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--held-out"));
}

#[test]
fn generate_refuses_a_negative_or_non_finite_noise() {
    for bad in ["-0.5", "NaN", "inf"] {
        let res = bin()
            .args(["generate", "--customers", "10", "--events", "100"])
            .arg(format!("--noise={bad}"))
            .output()
            .unwrap();
        assert!(!res.status.success(), "--noise {bad} accepted");
        assert!(
            String::from_utf8_lossy(&res.stderr).contains("--noise"),
            "{}",
            String::from_utf8_lossy(&res.stderr)
        );
    }
}
