//! Checks of the production deploy artifacts under `deploy/`.
//!
//! Alert rules, dashboards and manifests are not compiled, so nothing else
//! notices when they rot: a metric renamed in `src/ops/metrics.rs` leaves an
//! alert that never fires and a dashboard panel that stays empty, a typo in
//! PromQL makes Prometheus refuse the whole rule file at reload, and a
//! manifest that lost its readiness probe deploys without complaint. These
//! tests fail instead:
//!
//! * `promtool` (unpacked by `scripts/setup.sh` from the Debian package
//!   `prometheus`) checks the Prometheus config, the alert rules, their unit
//!   tests and every PromQL expression of the Grafana dashboard;
//! * every `tierstream_*` metric the alerts and the dashboard use must be a
//!   family the process exports (`Metrics::family_names`);
//! * the dashboard, Compose file, Dockerfile and Kubernetes manifests keep
//!   the structure the deployment relies on (probes, instance id, state
//!   volume, the ConfigMap's config accepted by the real config loader).
//!
//! Docker and Kubernetes are not needed: only files are read.

mod common;

use common::{deploy, promtool};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn read(rel: &str) -> String {
    let path = deploy(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn dashboard() -> Value {
    serde_json::from_str(&read("grafana/dashboards/tierstream.json"))
        .expect("deploy/grafana/dashboards/tierstream.json is valid JSON")
}

/// Every panel of the dashboard, including those nested in collapsed rows.
fn panels(dash: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            if let Some(nested) = p.get("panels") {
                walk(nested, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&dash["panels"], &mut out);
    out
}

/// `(panel title, target expression)` of every query of the dashboard.
fn dashboard_exprs(dash: &Value) -> Vec<(String, String)> {
    panels(dash)
        .into_iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or("?").to_owned();
            p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(move |t| Some((title.clone(), t["expr"].as_str()?.to_owned())))
        })
        .collect()
}

/// Every `tierstream_[a-z0-9_]+` word of `text`, with a histogram's
/// `_bucket`, `_sum` or `_count` suffix removed (the family name).
fn metric_families(text: &str) -> BTreeSet<String> {
    const PREFIX: &str = "tierstream_";
    let mut found = BTreeSet::new();
    for (at, _) in text.match_indices(PREFIX) {
        let word_start = text[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'));
        if !word_start {
            continue;
        }
        let rest = &text[at + PREFIX.len()..];
        let len = rest
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(rest.len());
        if len == 0 {
            continue;
        }
        let name = &text[at..at + PREFIX.len() + len];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        found.insert(family.to_owned());
    }
    found
}

/// A scratch file that is removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str, contents: &str) -> Scratch {
        let path =
            std::env::temp_dir().join(format!("tierstream-deploy-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).expect("write scratch file");
        Scratch(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn promtool_accepts_alert_rules() {
    let out = promtool(&["check", "rules"], &deploy("prometheus/alerts.yml"));
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn promtool_accepts_prometheus_config_and_its_rule_files() {
    // Resolves rule_files relative to the config file, so this also loads
    // alerts.yml the way Prometheus in docker-compose does.
    let out = promtool(&["check", "config"], &deploy("prometheus/prometheus.yml"));
    assert!(out.contains("1 rule files found"), "{out}");
}

#[test]
fn alert_rules_pass_their_promtool_unit_tests() {
    promtool(&["test", "rules"], &deploy("prometheus/alerts.test.yml"));
}

#[test]
fn every_alert_has_severity_summary_and_description() {
    let rules = read("prometheus/alerts.yml");
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(str::trim)
        .collect();
    for expected in [
        "TierstreamDown",
        "TierstreamConsumerLagGrowing",
        "TierstreamDeadLetterRateHigh",
        "TierstreamTransactionsAborting",
        "TierstreamNotReady",
    ] {
        assert!(alerts.contains(&expected), "alert {expected} missing");
    }
    // Split the file at each alert and check each one's block.
    let blocks: Vec<&str> = rules.split("- alert:").skip(1).collect();
    assert_eq!(blocks.len(), alerts.len());
    for (name, block) in alerts.iter().zip(blocks) {
        for key in ["severity:", "summary:", "description:", "expr:"] {
            assert!(block.contains(key), "alert {name} has no `{key}`");
        }
    }
}

#[test]
fn grafana_dashboard_has_panels_with_prometheus_targets() {
    let dash = dashboard();
    assert_eq!(dash["uid"], "tierstream");
    assert!(dash["schemaVersion"].as_u64().unwrap_or(0) >= 36);
    let provisioned = read("grafana/provisioning/datasources/prometheus.yaml");
    let ds_uid = provisioned
        .lines()
        .find_map(|l| l.trim().strip_prefix("uid:"))
        .map(|u| u.trim().trim_matches('"'))
        .expect("the provisioned datasource has a uid");

    // A datasource variable, so the dashboard imports into any Grafana;
    // its default is the provisioned Prometheus.
    let vars = dash["templating"]["list"].as_array().unwrap();
    let ds_var = vars
        .iter()
        .find(|v| v["name"] == "datasource")
        .expect("a datasource variable");
    assert_eq!(ds_var["type"], "datasource");
    assert_eq!(ds_var["query"], "prometheus");
    assert_eq!(ds_var["current"]["value"], ds_uid);
    let graphs: Vec<&Value> = panels(&dash)
        .into_iter()
        .filter(|p| p["type"] != "row")
        .collect();
    assert!(graphs.len() >= 15, "only {} panels", graphs.len());
    let mut ids = BTreeSet::new();
    for p in &graphs {
        let title = p["title"].as_str().expect("every panel has a title");
        assert!(ids.insert(p["id"].as_u64()), "panel id repeated: {title}");
        assert!(p["gridPos"]["w"].as_u64().is_some(), "{title}: no gridPos");
        let targets = p["targets"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        assert!(!targets.is_empty(), "panel {title} has no targets");
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or("");
            assert!(!expr.trim().is_empty(), "panel {title}: empty expr");
            let ds = if t["datasource"].is_object() {
                &t["datasource"]
            } else {
                &p["datasource"]
            };
            assert_eq!(ds["type"], "prometheus", "panel {title}");
            assert_eq!(
                ds["uid"], "${datasource}",
                "panel {title}: the datasource variable"
            );
        }
    }
    let titles: Vec<&str> = graphs.iter().filter_map(|p| p["title"].as_str()).collect();
    for wanted in [
        "Events/s by type and outcome",
        "Consumer lag per partition",
        "Event-to-output latency",
        "Transactions/s: committed vs aborted",
        "Restore progress",
        "RocksDB memory",
        "Churn risk of warnings",
        "Tier cut points over time",
        "Month-close wait",
    ] {
        assert!(titles.contains(&wanted), "no panel {wanted:?}");
    }
}

#[test]
fn dashboard_queries_are_valid_promql() {
    // promtool has no offline query parser, so each query becomes a
    // recording rule of a scratch rule file, with Grafana's variables
    // replaced by values.
    let exprs = dashboard_exprs(&dashboard());
    assert!(!exprs.is_empty());
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (_, expr)) in exprs.iter().enumerate() {
        let expr = expr
            .replace("$__rate_interval", "5m")
            .replace("$__range", "1h")
            .replace("$__interval", "1m")
            .replace("$instance", ".*");
        // A JSON string is a valid YAML double-quoted scalar.
        let quoted = serde_json::to_string(&expr).unwrap();
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {quoted}\n"
        ));
    }
    let scratch = Scratch::new("dashboard-rules.yml", &rules);
    let out = promtool(&["check", "rules"], &scratch.0);
    assert!(
        out.contains(&format!("{} rules found", exprs.len())),
        "{out}\n(queries: {exprs:#?})"
    );
}

#[test]
fn alerts_and_dashboard_use_only_exported_metrics() {
    let exported: BTreeSet<String> = tierstream::ops::metrics::Metrics::new()
        .family_names()
        .into_iter()
        .collect();
    assert!(
        exported.contains("tierstream_events_total"),
        "family_names gives full names: {exported:?}"
    );
    let mut checked = 0;
    for rel in [
        "prometheus/alerts.yml",
        "prometheus/alerts.test.yml",
        "grafana/dashboards/tierstream.json",
    ] {
        let used = metric_families(&read(rel));
        assert!(!used.is_empty(), "{rel} uses no tierstream metric");
        let unknown: Vec<&String> = used.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "deploy/{rel} uses metrics tierstream does not export: {unknown:?}\n\
             exported: {exported:?}"
        );
        checked += used.len();
    }
    assert!(checked > 20);
}

#[test]
fn metric_name_extraction_strips_histogram_suffixes() {
    let found = metric_families(
        "rate(tierstream_batch_duration_seconds_bucket[5m]) tierstream_ready == 0 \
         {{ $labels.x }} TIERSTREAM_STATE__DIR tierstream.error.code xtierstream_no",
    );
    let expected: BTreeSet<String> = ["tierstream_batch_duration_seconds", "tierstream_ready"]
        .map(String::from)
        .into();
    assert_eq!(found, expected);
}

#[test]
fn kubernetes_manifests_declare_the_expected_kinds() {
    for (file, kind) in [
        ("statefulset.yaml", "StatefulSet"),
        ("service.yaml", "Service"),
        ("configmap.yaml", "ConfigMap"),
        ("pdb.yaml", "PodDisruptionBudget"),
    ] {
        let text = read(&format!("k8s/{file}"));
        let line = format!("kind: {kind}");
        assert!(
            text.lines().any(|l| l.trim() == line),
            "deploy/k8s/{file} has no `{line}`"
        );
    }
    let service = read("k8s/service.yaml");
    assert!(service.contains("clusterIP: None"), "no headless service");
    assert_eq!(service.matches("kind: Service").count(), 2);
    assert!(read("k8s/pdb.yaml").contains("maxUnavailable: 1"));

    let kustomization = read("k8s/kustomization.yaml");
    for file in [
        "configmap.yaml",
        "service.yaml",
        "statefulset.yaml",
        "pdb.yaml",
    ] {
        assert!(
            kustomization.contains(&format!("- {file}")),
            "kustomization.yaml does not list {file}"
        );
    }
}

#[test]
fn statefulset_probes_health_and_gives_each_pod_its_instance_id() {
    let sts = read("k8s/statefulset.yaml");
    for needle in [
        "path: /health/ready",
        "path: /health/live",
        "readinessProbe:",
        "livenessProbe:",
        "startupProbe:",
        "name: TIERSTREAM_KAFKA__INSTANCE_ID",
        "fieldPath: metadata.name",
        "terminationGracePeriodSeconds: 60",
        "volumeClaimTemplates:",
        "mountPath: /var/lib/tierstream",
        "runAsNonRoot: true",
        "prometheus.io/scrape: \"true\"",
        "replicas: 3",
        r#"command: ["tierstream", "run", "--config", "/etc/tierstream/tierstream.toml"]"#,
    ] {
        assert!(sts.contains(needle), "statefulset.yaml lacks `{needle}`");
    }
    // The readiness probe, not liveness, must carry /health/ready: a pod
    // restoring its state is alive and must not be restarted.
    let liveness = sts
        .split("livenessProbe:")
        .nth(1)
        .and_then(|s| s.split("Probe:").next())
        .unwrap();
    assert!(liveness.contains("/health/live"), "{liveness}");
    assert!(!liveness.contains("/health/ready"), "{liveness}");
}

/// The `tierstream.toml` block of the ConfigMap, unindented.
fn configmap_toml() -> String {
    let cm = read("k8s/configmap.yaml");
    let mut lines = cm.lines().skip_while(|l| l.trim() != "tierstream.toml: |");
    assert!(lines.next().is_some(), "configmap has no tierstream.toml");
    let mut toml = String::new();
    for l in lines {
        if l.trim().is_empty() {
            toml.push('\n');
        } else if let Some(body) = l.strip_prefix("    ") {
            toml.push_str(body);
            toml.push('\n');
        } else {
            break;
        }
    }
    toml
}

#[test]
fn configmap_config_is_accepted_by_the_config_loader() {
    let toml = configmap_toml();
    let scratch = Scratch::new("tierstream.toml", &toml);
    let cfg = tierstream::config::Config::load(Some(scratch.0.as_path()))
        .unwrap_or_else(|e| panic!("{e}\n--- tierstream.toml ---\n{toml}"));
    // The environment may override these (TIERSTREAM_STATE__DIR, ...); the
    // file itself must have them right.
    if std::env::var_os("TIERSTREAM_HTTP__LISTEN").is_none() {
        assert_eq!(cfg.http.listen, "0.0.0.0:9898");
        assert_eq!(cfg.http.addr().map(|a| a.port()), Some(9898));
    }
    if std::env::var_os("TIERSTREAM_STATE__DIR").is_none() {
        assert_eq!(cfg.state.dir, Path::new("/var/lib/tierstream/state"));
    }
}

#[test]
fn compose_and_dockerfile_wire_up_the_stack() {
    let compose = read("docker-compose.yaml");
    for needle in [
        "image: apache/kafka:3.9.1",
        "dockerfile: deploy/Dockerfile",
        "TIERSTREAM_KAFKA__BOOTSTRAP_SERVERS: kafka:9092",
        "TIERSTREAM_HTTP__LISTEN: 0.0.0.0:9898",
        "tierstream-state:/var/lib/tierstream",
        "\"9898:9898\"",
        "image: prom/prometheus",
        "image: grafana/grafana",
    ] {
        assert!(
            compose.contains(needle),
            "docker-compose.yaml lacks `{needle}`"
        );
    }
    // Every file the compose file mounts exists (paths are relative to it).
    let mounts: Vec<&str> = compose
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- ./"))
        .map(|m| m.split(':').next().unwrap())
        .collect();
    assert!(mounts.len() >= 4, "{mounts:?}");
    for m in mounts {
        assert!(
            deploy(m).exists(),
            "docker-compose.yaml mounts missing ./{m}"
        );
    }
    let prometheus = read("prometheus/prometheus.yml");
    assert!(prometheus.contains("tierstream:9898"));
    let dashboards = read("grafana/provisioning/dashboards/tierstream.yaml");
    assert!(dashboards.contains("path: /etc/grafana/dashboards"));
    assert!(compose.contains("./grafana/dashboards:/etc/grafana/dashboards"));

    let dockerfile = read("Dockerfile");
    let froms: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(froms.len(), 2, "multi-stage build: {froms:?}");
    assert!(froms[0].starts_with("FROM rust:") && froms[0].ends_with(" AS build"));
    assert_eq!(froms[1], "FROM debian:bookworm-slim");
    for needle in ["EXPOSE 9898", "USER 10001", "ENTRYPOINT [\"tierstream\"]"] {
        assert!(dockerfile.contains(needle), "Dockerfile lacks `{needle}`");
    }
    // What the build stage copies exists and is let through the
    // Dockerfile-specific .dockerignore.
    let ignore = read("Dockerfile.dockerignore");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for line in dockerfile.lines().filter(|l| l.starts_with("COPY ")) {
        if line.starts_with("COPY --from") {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        for src in &words[1..words.len() - 1] {
            assert!(root.join(src).exists(), "Dockerfile copies missing {src}");
            let keep = format!("!{src}");
            assert!(
                ignore.lines().any(|l| l.trim() == keep),
                "Dockerfile.dockerignore excludes {src}"
            );
        }
    }
}
