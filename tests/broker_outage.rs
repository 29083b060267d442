//! A broker outage of two minutes mid-run, against the real local broker
//! (stopped and started again, so this is a test binary of its own) and a
//! real instance with input still waiting: the instance neither crashes
//! nor exits, `/health/ready` turns false while no broker is reachable, it
//! resumes by itself once the broker is back, and its committed outputs are
//! exactly those of an uninterrupted replay (nothing lost, nothing
//! duplicated; each poison pill in the DLQ once).
//!
//! The metrics the alert rules read are scraped every few seconds for the
//! whole run, as Prometheus would, and the recorded series are fed to
//! `promtool test rules` with `deploy/prometheus/alerts.yml`: the "not
//! ready" and "input stalled" alerts must fire by the end of the outage and
//! be resolved once the instance has caught up.
//!
//! `TIERSTREAM_TEST_OUTAGE_SECS` shortens or lengthens the outage (default
//! 120; the alerts need at least 100 s to fire).

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Scrape interval of the recorded series (and the rules' evaluation
/// interval in the generated promtool test).
const SCRAPE: Duration = Duration::from_secs(5);

/// The metric families the availability alerts read.
const RECORDED: [&str; 6] = [
    "tierstream_ready",
    "tierstream_brokers_reachable",
    "tierstream_restoring_tasks",
    "tierstream_consumer_lag_records",
    "tierstream_buffered_records",
    "tierstream_commits_total",
];

fn kafka(command: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka.sh");
    let status = Command::new(script).arg(command).status().unwrap();
    assert!(status.success(), "kafka.sh {command} failed");
}

/// One scrape's samples of the recorded families, by series name with the
/// labels Prometheus would add (`job`, `instance`).
fn scrape(port: u16, instance: &str) -> BTreeMap<String, f64> {
    let Some((200, text)) = get(port, "/metrics") else {
        return BTreeMap::new();
    };
    let mut samples = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, format!(",{}", rest.trim_end_matches('}'))),
            None => (series, String::new()),
        };
        if RECORDED.contains(&name) {
            let key = format!("{name}{{job=\"tierstream\",instance=\"{instance}\"{labels}}}");
            samples.insert(key, value.parse().unwrap());
        }
    }
    samples
}

/// Scrapes an instance's `/metrics` every `SCRAPE` until stopped.
struct Recorder {
    scrapes: Arc<Mutex<Vec<BTreeMap<String, f64>>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Recorder {
    fn start(port: u16, instance: &'static str) -> Self {
        let scrapes = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (scrapes.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut next = Instant::now();
            while !st.load(Ordering::Relaxed) {
                s.lock().unwrap().push(scrape(port, instance));
                next += SCRAPE;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
        });
        Recorder {
            scrapes,
            stop,
            thread: Some(thread),
        }
    }

    /// Index of the scrape under way now (the next to be taken).
    fn now(&self) -> usize {
        self.scrapes.lock().unwrap().len()
    }

    fn finish(mut self) -> Vec<BTreeMap<String, f64>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        std::mem::take(&mut *self.scrapes.lock().unwrap())
    }
}

/// promtool's `input_series`: every recorded series, one value per scrape
/// (`_` where it was absent).
fn input_series(scrapes: &[BTreeMap<String, f64>]) -> Vec<Value> {
    let mut names: Vec<&String> = scrapes.iter().flat_map(|s| s.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|name| {
            let values: Vec<String> = scrapes
                .iter()
                .map(|s| s.get(name).map_or("_".to_owned(), |v| v.to_string()))
                .collect();
            json!({"series": name, "values": values.join(" ")})
        })
        .collect()
}

/// A promtool check that exactly `alerts` fire at scrape `index`.
fn firing_at(index: usize, alerts: &[&str]) -> Value {
    let samples: Vec<Value> = alerts
        .iter()
        .map(|a| json!({"labels": format!("{{alertname=\"{a}\"}}"), "value": 1}))
        .collect();
    json!({
        "expr": "count by (alertname) (ALERTS{alertstate=\"firing\"})",
        "eval_time": format!("{}s", index as u64 * SCRAPE.as_secs()),
        "exp_samples": samples,
    })
}

#[test]
fn a_two_minute_broker_outage_loses_and_duplicates_nothing_and_fires_the_alerts() {
    let outage = Duration::from_secs(
        std::env::var("TIERSTREAM_TEST_OUTAGE_SECS")
            .map(|s| s.parse().expect("TIERSTREAM_TEST_OUTAGE_SECS: seconds"))
            .unwrap_or(120),
    );
    let env = TestEnv::new("outage", 3);
    env.create_topics();
    let w = workload(&env, &spec(1500, 40_000, 61), Some(1999));
    produce(&w.records);
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    // Small batches, so that input still waits when the broker goes.
    let small = [
        ("TIERSTREAM_KAFKA__BATCH_MAX_RECORDS", "50"),
        ("TIERSTREAM_KAFKA__COMMIT_INTERVAL_MS", "100"),
        ("TIERSTREAM_HTTP__LISTEN", listen.as_str()),
    ];
    let mut a = env.spawn("a", &small, &[]);
    let recorder = Recorder::start(port, "a");
    wait_for(port, "/health/ready", 200);
    std::thread::sleep(Duration::from_secs(3));
    let before = recorder.now().saturating_sub(1);

    kafka("stop");
    let stopped = Instant::now();
    // What /health/ready said, each time it changed.
    let mut answers: Vec<(f64, Option<(u16, String)>)> = Vec::new();
    while stopped.elapsed() < outage {
        assert!(
            a.child.try_wait().unwrap().is_none(),
            "the instance must ride out a broker outage: {}",
            a.log_text()
        );
        let answer = get(port, "/health/ready");
        if answers.last().map(|(_, a)| a) != Some(&answer) {
            answers.push((stopped.elapsed().as_secs_f64(), answer));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let end_of_outage = recorder.now().saturating_sub(1);
    kafka("start");
    eprintln!("/health/ready during the outage: {answers:?}");
    let unready = answers
        .iter()
        .find(|(_, a)| {
            a.as_ref().is_some_and(|(status, body)| {
                *status == 503 && json(body)["brokers_reachable"] == false
            })
        })
        .map(|(t, _)| *t)
        .expect("/health/ready never said no broker is reachable");
    eprintln!("not ready {unready:.1} s into the outage");

    let started = Instant::now();
    wait_for(port, "/health/ready", 200);
    let ready_again = started.elapsed();
    while env.lag() > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "the instance did not catch up after the outage: {}",
            a.log_text()
        );
        assert!(a.child.try_wait().unwrap().is_none(), "{}", a.log_text());
        std::thread::sleep(Duration::from_secs(1));
    }
    eprintln!(
        "ready again {:.1} s after the broker came back, caught up after {:.1} s",
        ready_again.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    // Long enough for the rules to see commits resume and resolve.
    std::thread::sleep(Duration::from_secs(75));
    let scrapes = recorder.finish();
    a.stop();

    assert_same_outputs(&env.committed_outputs(), &w.expected);
    let dlq = env.all_records(&[&env.config.kafka.dlq_topic]);
    assert_eq!(dlq.len(), w.poison, "each poison pill in the DLQ once");

    // The alerts, on the series as they were recorded.
    let mut checks = vec![firing_at(before, &[]), firing_at(scrapes.len() - 1, &[])];
    if outage >= Duration::from_secs(100) {
        checks.push(firing_at(
            end_of_outage,
            &["TierstreamInputStalled", "TierstreamNotReady"],
        ));
    }
    let test = json!({
        "rule_files": [deploy("prometheus/alerts.yml")],
        "evaluation_interval": format!("{}s", SCRAPE.as_secs()),
        "tests": [{
            "interval": format!("{}s", SCRAPE.as_secs()),
            "input_series": input_series(&scrapes),
            "promql_expr_test": checks,
        }],
    });
    eprintln!(
        "recorded series (one value per {} s; the outage is scrapes {before}..={end_of_outage}):",
        SCRAPE.as_secs()
    );
    for s in input_series(&scrapes) {
        eprintln!("  {} {}", s["series"], s["values"]);
    }
    let file = env.dir.path().join("outage.alerts.test.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&test).unwrap()).unwrap();
    promtool(&["test", "rules"], &file);
}
