//! The HTTP server of a running pipeline, against the real broker: the
//! metrics page passes `promtool check metrics`, the probes report
//! readiness only after restore, and `/customers/{id}` answers from the
//! local state — or names the instance that owns the customer.

mod common;

use common::*;
use serde_json::Value;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tierstream::kafka::partitioner::partition_for;

#[test]
fn metrics_health_and_customer_endpoints() {
    let env = TestEnv::new("http", 1);
    env.create_topics();
    let w = workload(&env, &spec(200, 3000, 31), Some(500));
    produce(&w.records);
    let (pa, pb) = (free_port(), free_port());
    let listen = |p: u16| format!("127.0.0.1:{p}");
    let la = listen(pa);
    let a = env.spawn("a", &[("TIERSTREAM_HTTP__LISTEN", la.as_str())], &[]);
    assert_eq!(wait_for(pa, "/health/live", 200), r#"{"live":true}"#);
    let ready = json(&wait_for(pa, "/health/ready", 200));
    assert_eq!(ready["owned_tasks"].as_array().unwrap().len(), 3);

    // The last tier of some customer, per the uninterrupted replay.
    let last_tier = |id: &str| {
        w.expected
            .iter()
            .rfind(|v| v["customer_id"] == id && v["schema"] == "tierstream.tier_changed.v1")
            .map(|v| v["to"].clone())
    };
    let customer = w.expected[0]["customer_id"].as_str().unwrap().to_owned();
    let want = last_tier(&customer).unwrap();
    // All input processed: the committed outputs are all there.
    let k = &env.config.kafka;
    env.consume_topics(&[&k.tier_topic, &k.warning_topic], w.expected.len());
    let (status, body) = get(pa, &format!("/customers/{customer}")).unwrap();
    assert_eq!(status, 200, "{body}");
    let profile = json(&body);
    assert_eq!(profile["customer_id"], customer.as_str());
    assert_eq!(profile["tier"], want);
    assert!(profile["value_12m"].is_number() && profile.get("quadrant").is_some());
    let (status, _) = get(pa, "/customers/nobody-like-this").unwrap();
    assert_eq!(status, 404);
    let (status, _) = get(pa, &format!("/customers/{}", "x".repeat(600))).unwrap();
    assert_eq!(status, 414, "an overlong path is refused");
    let (status, _) = get_with(pa, "/metrics", "Content-Length: 5000\r\n").unwrap();
    assert_eq!(status, 413, "a request body is refused");

    // The metrics page is valid Prometheus text and reports the work.
    let (status, metrics) = get(pa, "/metrics").unwrap();
    assert_eq!(status, 200);
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) is installed by scripts/setup.sh");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let sample = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from /metrics"))
    };
    assert!(sample("tierstream_transactions_total{result=\"committed\"}") >= 1.0);
    assert_eq!(
        sample("tierstream_events_rejected_total{code=\"invalid_json\"}") as usize,
        w.poison
    );
    assert!(sample("tierstream_event_to_output_latency_seconds_count") >= 3000.0 - w.poison as f64);
    assert_eq!(sample("tierstream_restoring_tasks"), 0.0);
    // Openings counted by priority: as many as the replay opened, with
    // the value at risk they carried (negative ones count as 0).
    let opened: Vec<&Value> = w
        .expected
        .iter()
        .filter(|v| v["schema"] == "tierstream.churn_warning.v1" && v["action"] == "opened")
        .collect();
    for priority in 1..=4u64 {
        let of: Vec<&&Value> = opened
            .iter()
            .filter(|v| v["priority"] == priority)
            .collect();
        if of.is_empty() {
            continue;
        }
        let count = sample(&format!(
            "tierstream_churn_warnings_opened_total{{priority=\"{priority}\"}}"
        ));
        assert_eq!(count as usize, of.len(), "priority {priority}");
        let money: f64 = of
            .iter()
            .map(|v| v["value_at_risk"].as_f64().unwrap().max(0.0))
            .sum();
        let counted = sample(&format!(
            "tierstream_churn_warning_value_at_risk_total{{priority=\"{priority}\"}}"
        ));
        assert!(
            (counted - money).abs() < 0.01 * of.len() as f64,
            "{counted} vs {money}"
        );
    }
    // A warned customer's endpoint shows its risk and money at stake now.
    if let Some(first) = opened.first() {
        let warned = first["customer_id"].as_str().unwrap();
        let (status, body) = get(pa, &format!("/customers/{warned}")).unwrap();
        assert_eq!(status, 200, "{body}");
        let stake = &json(&body)["value_at_risk"];
        let (risk, projected, at_risk) = (
            stake["churn_risk"].as_f64().unwrap(),
            stake["projected_value"].as_f64().unwrap(),
            stake["value_at_risk"].as_f64().unwrap(),
        );
        assert!(
            (at_risk - risk * projected).abs() <= 0.0051 + 1e-9 * projected.abs(),
            "{body}"
        );
        assert!(
            (1..=4).contains(&stake["priority"].as_u64().unwrap()),
            "{body}"
        );
    }

    // A second instance takes some tasks; a asks the group who owns them.
    // b's customer endpoint requires a bearer token; its probes do not.
    let lb = listen(pb);
    let token_file = env.dir.path().join("http-token");
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    let b = env.spawn(
        "b",
        &[
            ("TIERSTREAM_HTTP__LISTEN", lb.as_str()),
            (
                "TIERSTREAM_HTTP__AUTH_TOKEN_FILE",
                token_file.to_str().unwrap(),
            ),
        ],
        &[],
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    let b_tasks: Vec<u64> = loop {
        if let Some((200, body)) = get(pb, "/health/ready") {
            let owned: Vec<u64> = json(&body)["owned_tasks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_u64().unwrap())
                .collect();
            let a_ready = get(pa, "/health/ready").is_some_and(|(s, _)| s == 200);
            if !owned.is_empty() && a_ready {
                break owned;
            }
        }
        assert!(Instant::now() < deadline, "b never got tasks");
        std::thread::sleep(Duration::from_millis(300));
    };
    let elsewhere = w
        .expected
        .iter()
        .map(|v| v["customer_id"].as_str().unwrap())
        .find(|id| b_tasks.contains(&u64::from(partition_for(id.as_bytes(), 3))))
        .unwrap();
    let (status, body) = get(pa, &format!("/customers/{elsewhere}")).unwrap();
    assert_eq!(status, 421, "{body}");
    assert_eq!(json(&body)["owner"]["instance"], "b", "{body}");
    let path = format!("/customers/{elsewhere}");
    for (headers, want) in [
        ("", 401),
        ("Authorization: Bearer wrong-token\r\n", 401),
        ("Authorization: s3cret-token\r\n", 401),
        ("Authorization: Bearer s3cret-token\r\n", 200),
    ] {
        let (status, body) = get_with(pb, &path, headers).unwrap();
        assert_eq!(status, want, "{headers:?}: {body}");
    }
    let (status, _) = get(pb, "/metrics").unwrap();
    assert_eq!(status, 200, "metrics need no token");
    b.stop();
    a.stop();
    // No customer id in the logs at info level (personal data).
    let ids: std::collections::BTreeSet<&str> = w
        .expected
        .iter()
        .filter_map(|v| v["customer_id"].as_str())
        .collect();
    for name in ["a", "b"] {
        let log = std::fs::read_to_string(env.dir.path().join(format!("{name}.log"))).unwrap();
        assert!(log.contains("consuming"), "{name} logged at info level");
        let leaked: Vec<&&str> = ids.iter().filter(|id| log.contains(**id)).collect();
        assert!(leaked.is_empty(), "{name} logged customer ids {leaked:?}");
    }
}
