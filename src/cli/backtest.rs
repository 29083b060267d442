//! `tierstream backtest`: score churn warnings against a generated
//! workload's ground truth, rule by rule (the risk model at its threshold
//! and over a sweep, the quadrant rule, the first-alarm baseline), and
//! write the comparison as text, JSON and charts.

use super::replay::{replay, ReplayIo, ReplayShape};
use super::train::samples_of;
use super::{processor, progress, read_jsonl, Unit};
use crate::config::{Config, ConfigError};
use crate::store::memory::MemoryStore;
use crate::workload::backtest::{
    calibration, first_alarm, is_warning, millis, score, time_span, Comparison, Params, RuleKind,
    RuleReport, Setting, Skipped, Span,
};
use crate::workload::generate::{Archetype, Truth};
use crate::workload::plots::write_plots;
use crate::workload::stake::money_at_stake;
use anyhow::{bail, Context, Result};
use clap::Args;
use figment::value::{Dict, Map, Value as FigValue};
use figment::{Figment, Metadata, Profile, Provider};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

/// `backtest` flags.
#[derive(Debug, Args)]
pub struct BacktestArgs {
    /// Ground truth from `generate --truth`.
    #[arg(long)]
    pub truth: PathBuf,
    /// Events to replay, once per rule, with the config's policy.
    #[arg(long, conflicts_with = "outputs")]
    pub input: Option<PathBuf>,
    /// Or: outputs of an earlier replay (scored as one rule, `outputs`).
    #[arg(long)]
    pub outputs: Option<PathBuf>,
    /// TOML config file (the policy to test).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Write the whole comparison as one JSON document to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the charts (precision_recall.svg, reliability.svg) into this
    /// directory.
    #[arg(long)]
    pub plots: Option<PathBuf>,
    /// Thresholds of `warnings.open_risk` to sweep, comma-separated (`""`
    /// for no sweep).
    #[arg(long, default_value = "0.2,0.3,0.4,0.5,0.6,0.7,0.8")]
    pub sweep: String,
    /// Precision horizon: a warning is right when the customer churns
    /// within this many days of its first opening.
    #[arg(long, default_value_t = 180.0)]
    pub horizon_days: f64,
    /// Lead: a churner counts as warned in time when warned at least this
    /// many days before its churn date.
    #[arg(long, default_value_t = 30.0)]
    pub lead_days: f64,
    /// Archetypes whose churners are reported apart, comma-separated
    /// (names as in the truth file; unknown ones are ignored with a note).
    #[arg(long, value_delimiter = ',', default_value = "spurious_churner")]
    pub target: Vec<String>,
    /// Call capacities the money at stake is reported at: a retention team
    /// calling the top this many opened warnings a month, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10,25,50,100")]
    pub calls_per_month: Vec<usize>,
}

/// A rule to replay: its name, kind and config overrides.
#[derive(Debug, Clone)]
struct Rule {
    name: String,
    kind: RuleKind,
    threshold: Option<f64>,
    overrides: BTreeMap<String, Setting>,
}

fn text(s: &str) -> Setting {
    Setting::Text(s.into())
}

/// The replayed rules. Every config key a rule changes is here; a swept
/// threshold keeps the config's hysteresis band in proportion
/// (`clear_ratio` = clear_risk / open_risk).
fn rules(sweep: &[f64], clear_ratio: f64) -> Vec<Rule> {
    let rule = |name: String, kind, threshold, overrides: &[(&str, Setting)]| Rule {
        name,
        kind,
        threshold,
        overrides: overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    };
    let mut rules = vec![rule(
        "risk".into(),
        RuleKind::Risk,
        None,
        &[("warnings.open_on", text("risk"))],
    )];
    for &t in sweep {
        rules.push(rule(
            format!("risk@{t:.2}"),
            RuleKind::RiskSweep,
            Some(t),
            &[
                ("warnings.open_on", text("risk")),
                ("warnings.open_risk", Setting::Number(t)),
                // The config's hysteresis band, in proportion.
                ("warnings.clear_risk", Setting::Number(t * clear_ratio)),
            ],
        ));
    }
    rules.push(rule(
        "quadrant".into(),
        RuleKind::Quadrant,
        None,
        &[("warnings.open_on", text("quadrant"))],
    ));
    rules
}

/// A rule's config overrides as one figment provider (named, so the
/// config's errors say where a refused key came from).
struct Overrides<'a>(&'a BTreeMap<String, Setting>);

impl Provider for Overrides<'_> {
    fn metadata(&self) -> Metadata {
        Metadata::named("backtest rule override")
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut root = Dict::new();
        for (key, setting) in self.0 {
            let value = match setting {
                Setting::Text(s) => FigValue::from(s.clone()),
                Setting::Number(x) => FigValue::from(*x),
            };
            let mut path: Vec<&str> = key.split('.').collect();
            let last = path.pop().unwrap_or_default();
            let mut dict = &mut root;
            for part in path {
                let entry = dict
                    .entry(part.to_string())
                    .or_insert_with(|| FigValue::from(Dict::new()));
                if !matches!(entry, FigValue::Dict(..)) {
                    *entry = FigValue::from(Dict::new());
                }
                let FigValue::Dict(_, inner) = entry else {
                    unreachable!("made a dict above")
                };
                dict = inner;
            }
            dict.insert(last.to_string(), value);
        }
        Ok(Profile::Default.collect(root))
    }
}

/// The config of `base` (defaults, file, environment) with `overrides`
/// merged on top, validated.
fn config_with(
    base: &Figment,
    overrides: &BTreeMap<String, Setting>,
) -> Result<Config, ConfigError> {
    Config::from_figment(base.clone().merge(Overrides(overrides)))
}

/// What became of one rule.
enum RuleRun {
    /// It ran: the churn warnings among its outputs, and the span of all
    /// its outputs.
    Ran(Vec<Value>, Option<Span>),
    /// The config refused the overrides (the error text).
    Refused(String),
}

/// Keeps the churn warnings of JSONL outputs written to it, line by line
/// (a replay's outputs are never held whole: the quadrant rule's are
/// gigabytes on a large workload), trimmed to the fields scoring reads,
/// and the span of every output's `at`.
#[derive(Default)]
struct WarningSink {
    partial: Vec<u8>,
    warnings: Vec<Value>,
    span: Option<Span>,
}

impl WarningSink {
    fn line(&mut self, line: &[u8]) -> Result<()> {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let v: Value = serde_json::from_slice(line).context("output line")?;
        if let Some(at) = v["at"].as_str() {
            Span::include(&mut self.span, millis(at)?);
        }
        if is_warning(&v) {
            let keep = [
                "schema",
                "action",
                "customer_id",
                "at",
                "severity",
                "priority",
                "value_at_risk",
                "projected_value",
            ];
            let trimmed: serde_json::Map<String, Value> = keep
                .iter()
                .filter_map(|k| Some((k.to_string(), v.get(*k)?.clone())))
                .collect();
            self.warnings.push(Value::Object(trimmed));
        }
        Ok(())
    }

    /// The warnings and the span, once the last line was written.
    fn finish(mut self) -> Result<(Vec<Value>, Option<Span>)> {
        let rest = std::mem::take(&mut self.partial);
        self.line(&rest)?;
        Ok((self.warnings, self.span))
    }
}

impl Write for WarningSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut rest = buf;
        while let Some(end) = rest.iter().position(|b| *b == b'\n') {
            self.partial.extend_from_slice(&rest[..end]);
            let line = std::mem::take(&mut self.partial);
            self.line(&line)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            rest = &rest[end + 1..];
        }
        self.partial.extend_from_slice(rest);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Replays `input` with the config of `base` plus `overrides`.
fn run_rule(
    base: &Figment,
    input: &Path,
    overrides: &BTreeMap<String, Setting>,
) -> Result<RuleRun> {
    let cfg = match config_with(base, overrides) {
        Ok(cfg) => cfg,
        Err(e) => return Ok(RuleRun::Refused(e.to_string())),
    };
    let processor = processor(&cfg);
    let f = File::open(input).with_context(|| format!("opening {}", input.display()))?;
    let bar = progress(f.metadata().map(|m| m.len()).unwrap_or(0), Unit::Bytes);
    let mut reader = BufReader::with_capacity(1 << 20, f);
    let mut sink = WarningSink::default();
    let io = ReplayIo {
        input: &mut reader,
        output: &mut sink,
        dlq: None,
        on_bytes: &|n| bar.inc(n),
    };
    let now = crate::pipeline::wall_clock();
    replay(
        &processor,
        &MemoryStore::new(),
        ReplayShape::sequential(1, 0),
        io,
        now,
    )?;
    bar.finish_and_clear();
    let (warnings, span) = sink.finish()?;
    Ok(RuleRun::Ran(warnings, span))
}

/// The first-alarm baseline's warnings, from the input events.
fn first_alarm_of(input: &Path) -> Result<Vec<Value>> {
    let f = File::open(input).with_context(|| format!("opening {}", input.display()))?;
    let events = BufReader::with_capacity(1 << 20, f)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str::<Value>(&l).ok());
    Ok(first_alarm(events))
}

/// The archetypes named by `--target`; unknown names make notes.
fn target_archetypes(names: &[String], notes: &mut Vec<String>) -> Vec<Archetype> {
    let mut out = Vec::new();
    for name in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        match serde_json::from_value::<Archetype>(Value::String(name.into())) {
            Ok(a) => out.push(a),
            Err(_) => notes.push(format!(
                "target archetype {name} is unknown to this build: not reported apart"
            )),
        }
    }
    out
}

/// The `--sweep` thresholds.
fn parse_sweep(list: &str) -> Result<Vec<f64>> {
    list.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.parse::<f64>()
                .ok()
                .filter(|x| (0.0..=1.0).contains(x))
                .with_context(|| format!("--sweep: {t} is not a risk threshold in [0, 1]"))
        })
        .collect()
}

/// Runs every rule and scores them side by side.
fn compare(a: &BacktestArgs) -> Result<Comparison> {
    let truth: Vec<Truth> = read_jsonl(&a.truth)?;
    let mut notes = Vec::new();
    let params = Params {
        horizon_days: a.horizon_days,
        lead_days: a.lead_days,
        target: target_archetypes(&a.target, &mut notes),
    };
    // (rule, its warnings); the span over the truth and all rules' outputs
    let mut ran: Vec<(Rule, Vec<Value>)> = Vec::new();
    let mut skipped = Vec::new();
    // the config whose risk model is calibrated, when events are replayed
    let mut sampled: Option<(Config, &Path)> = None;
    let mut span = time_span(&truth, [])?;
    let mut widen = |s: Option<Span>| {
        if let Some(s) = s {
            span = Some(span.map_or(s, |x| x.union(s)));
        }
    };
    match (&a.outputs, &a.input) {
        (Some(path), _) => {
            let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
            let mut sink = WarningSink::default();
            std::io::copy(&mut f, &mut sink)
                .with_context(|| format!("reading {}", path.display()))?;
            let (warnings, s) = sink
                .finish()
                .with_context(|| format!("reading {}", path.display()))?;
            widen(s);
            let rule = Rule {
                name: "outputs".into(),
                kind: RuleKind::Given,
                threshold: None,
                overrides: BTreeMap::new(),
            };
            ran.push((rule, warnings));
        }
        (None, Some(input)) => {
            let base = Config::figment(a.config.as_deref())?;
            // the config as given must load: only the rules' keys may be refused
            let cfg = Config::from_figment(base.clone())?;
            let w = &cfg.warnings;
            let clear_ratio = if w.open_risk > 0.0 {
                w.clear_risk / w.open_risk
            } else {
                0.0
            };
            sampled = Some((cfg.clone(), input.as_path()));
            for rule in rules(&parse_sweep(&a.sweep)?, clear_ratio) {
                eprintln!("backtest: replaying rule {}", rule.name);
                match run_rule(&base, input, &rule.overrides)? {
                    RuleRun::Ran(w, s) => {
                        widen(s);
                        ran.push((rule, w));
                    }
                    RuleRun::Refused(reason) => skipped.push(Skipped {
                        name: rule.name,
                        reason,
                    }),
                }
            }
            let alarms = first_alarm_of(input)?;
            widen(time_span(&[], &alarms)?);
            let rule = Rule {
                name: "first_alarm".into(),
                kind: RuleKind::FirstAlarm,
                threshold: None,
                overrides: BTreeMap::new(),
            };
            ran.push((rule, alarms));
        }
        (None, None) => {
            bail!("backtest needs --input (events to replay) or --outputs (a replay's output)")
        }
    }
    let mut reports = Vec::new();
    for (rule, warnings) in &ran {
        reports.push(RuleReport {
            name: rule.name.clone(),
            kind: rule.kind,
            threshold: rule.threshold,
            overrides: rule.overrides.clone(),
            report: score(&truth, warnings, &params, span)?,
            // the sweep's thresholds would repeat the table for each
            stake: match rule.kind {
                RuleKind::RiskSweep => None,
                _ => money_at_stake(&truth, warnings, a.horizon_days, &a.calls_per_month)?,
            },
        });
    }
    let calibration = match sampled {
        Some((cfg, input)) => {
            eprintln!("backtest: sampling the churn risk at every month start");
            let model = &cfg.policy().loyalty.risk.model;
            let samples = samples_of(&cfg, input, &truth)?;
            // The customers a warning can open for: what a warning's
            // churn_risk is read as the probability of.
            let scored: Vec<(f64, bool)> = samples
                .samples
                .iter()
                .filter(|s| s.spurious)
                .map(|s| (model.probability(&s.x), s.churned))
                .collect();
            notes.push(
                "calibration: spurious customers at every month start (those a warning can open for)"
                    .into(),
            );
            Some(calibration(&scored))
        }
        None => {
            notes.push(
                "calibration needs --input: the risk is sampled from the events, not the outputs"
                    .into(),
            );
            None
        }
    };
    Ok(Comparison {
        params,
        rules: reports,
        skipped,
        calibration,
        notes,
    })
}

pub(super) fn run_backtest(a: BacktestArgs) -> Result<()> {
    let comparison = compare(&a)?;
    print!("{}", comparison.render());
    if let Some(path) = &a.json {
        let mut out = BufWriter::new(
            File::create(path).with_context(|| format!("creating {}", path.display()))?,
        );
        serde_json::to_writer_pretty(&mut out, &comparison)?;
        out.write_all(b"\n")?;
        out.flush()?;
    }
    if let Some(dir) = &a.plots {
        for f in write_plots(&comparison, dir)? {
            eprintln!("backtest: wrote {}", f.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_TOML;
    use figment::providers::{Format, Toml};

    fn base() -> Figment {
        Figment::from(Toml::string(DEFAULT_TOML))
    }

    /// Whether a config error is the refusal of an unknown key.
    fn unknown_key(reason: &str, key: &str) -> bool {
        reason.contains("unknown field") && reason.contains(&format!("`{key}`"))
    }

    #[test]
    fn overrides_change_a_real_key_and_unknown_keys_are_refused() {
        let default = Config::from_figment(base()).unwrap();
        assert_eq!(default.warnings.cooldown_hours, 24.0);
        let o = BTreeMap::from([("warnings.cooldown_hours".to_string(), Setting::Number(5.0))]);
        let cfg = config_with(&base(), &o).unwrap();
        assert_eq!(cfg.warnings.cooldown_hours, 5.0);
        // several keys, in two sections, alongside what the file sets
        let o = BTreeMap::from([
            ("warnings.cooldown_hours".to_string(), Setting::Number(5.0)),
            (
                "loyalty.quadrant_threshold".to_string(),
                Setting::Number(70.0),
            ),
        ]);
        let cfg = config_with(&base(), &o).unwrap();
        assert_eq!(cfg.warnings.cooldown_hours, 5.0);
        assert_eq!(cfg.loyalty.quadrant_threshold, 70.0);
        assert_eq!(
            cfg.tiers.min_residence_days,
            default.tiers.min_residence_days
        );

        let o = BTreeMap::from([("warnings.no_such_key".to_string(), Setting::Number(0.4))]);
        let e = config_with(&base(), &o).unwrap_err().to_string();
        assert!(unknown_key(&e, "no_such_key"), "{e}");
        assert!(e.contains("backtest rule override"), "{e}");
    }

    #[test]
    fn sweep_list() {
        assert_eq!(parse_sweep("0.2, 0.5,").unwrap(), [0.2, 0.5]);
        assert!(parse_sweep("").unwrap().is_empty());
        assert!(parse_sweep("0.2,x").is_err());
        assert!(parse_sweep("1.5").is_err());
    }

    #[test]
    fn rules_carry_their_overrides() {
        let r = rules(&[0.3], 0.5);
        let names: Vec<&str> = r.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["risk", "risk@0.30", "quadrant"]);
        assert_eq!(r[1].overrides["warnings.open_risk"], Setting::Number(0.3));
        assert_eq!(r[1].overrides["warnings.clear_risk"], Setting::Number(0.15));
        assert_eq!(r[2].overrides["warnings.open_on"], text("quadrant"));
    }

    fn write(path: &Path, lines: &[Value]) {
        let mut s = String::new();
        for l in lines {
            s.push_str(&l.to_string());
            s.push('\n');
        }
        std::fs::write(path, s).unwrap();
    }

    #[test]
    fn compare_runs_what_the_config_accepts_and_says_what_it_skipped() {
        use serde_json::json;
        let dir = tempfile::tempdir().unwrap();
        let (truth, input) = (dir.path().join("truth.jsonl"), dir.path().join("in.jsonl"));
        write(
            &truth,
            &[
                json!({"customer_id": "a", "archetype": "disloyal",
                       "churn_date": "2025-05-01T00:00:00Z"}),
                json!({"customer_id": "b", "archetype": "true_loyal", "churn_date": null}),
            ],
        );
        let ev = |id: &str, n: u32, ts: &str, extra: Value| {
            let mut v = json!({"event_id": format!("{id}{n}"), "customer_id": id, "ts": ts});
            v.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            v
        };
        // b buys weekly and complains: spurious, so the quadrant rule
        // warns it (and its warnings carry their money)
        let mut events: Vec<Value> = (0..8)
            .map(|k| {
                ev(
                    "b",
                    10 + k,
                    &format!("2025-01-{:02}T00:00:00Z", 7 + 3 * k),
                    json!({"type": "purchase", "amount": 400}),
                )
            })
            .collect();
        events.push(ev(
            "b",
            30,
            "2025-02-01T00:00:00Z",
            json!({"type": "complaint", "severity": "critical"}),
        ));
        events.extend([
            ev(
                "a",
                1,
                "2025-01-05T00:00:00Z",
                json!({"type": "purchase", "amount": 50}),
            ),
            ev(
                "a",
                2,
                "2025-02-01T00:00:00Z",
                json!({"type": "complaint", "severity": "high"}),
            ),
            ev(
                "a",
                3,
                "2025-02-20T00:00:00Z",
                json!({"type": "service", "signals": ["competitor_offer"]}),
            ),
            ev(
                "b",
                1,
                "2025-01-06T00:00:00Z",
                json!({"type": "purchase", "amount": 70}),
            ),
        ]);
        events.sort_by(|x, y| x["ts"].as_str().cmp(&y["ts"].as_str()));
        write(&input, &events);
        let args = BacktestArgs {
            truth,
            input: Some(input),
            outputs: None,
            config: None,
            json: None,
            plots: None,
            sweep: "0.3, 0.6".into(),
            horizon_days: 180.0,
            lead_days: 30.0,
            target: vec!["disloyal".into(), "no_such_archetype".into()],
            calls_per_month: vec![1, 5],
        };
        let c = compare(&args).unwrap();
        let ran: Vec<&str> = c.rules.iter().map(|r| r.name.as_str()).collect();
        let skipped: Vec<&str> = c.skipped.iter().map(|r| r.name.as_str()).collect();
        assert!(skipped.is_empty(), "{:?}", c.skipped);
        assert_eq!(
            ran,
            ["risk", "risk@0.30", "risk@0.60", "quadrant", "first_alarm"]
        );
        assert!(c.notes.iter().any(|n| n.contains("no_such_archetype")));
        // the risk model is calibrated on month-start samples of the input
        let cal = c.calibration.as_ref().expect("calibrated from --input");
        assert_eq!(cal.samples, cal.deciles.iter().map(|d| d.n).sum::<usize>());
        assert!(c
            .notes
            .iter()
            .any(|n| n.starts_with("calibration: spurious")));
        let alarm = &c.rules.last().unwrap().report;
        assert_eq!(alarm.all_churners.warned_ahead, 1); // 2025-02-20, 70 days ahead
        assert_eq!(alarm.precision, Some(1.0));
        assert_eq!(c.params.target, [Archetype::Disloyal]);
        assert!(c.render().contains("skipped") || c.skipped.is_empty());
        // the engine's warnings carry their money, the baseline's do not
        let quadrant = c.rules.iter().find(|r| r.name == "quadrant").unwrap();
        assert!(quadrant.report.openings > 0);
        let stake = quadrant
            .stake
            .as_ref()
            .expect("quadrant warnings carry money");
        assert_eq!(stake.rows.len(), 2);
        assert!(stake.rows[0].by_priority.called <= stake.rows[1].by_priority.called);
        assert!(c.rules.last().unwrap().stake.is_none());
        assert!(c.render().contains("money at stake, quadrant"));
    }
}
