//! `tierstream backtest`: how well the churn warnings of a rule would have
//! worked on a workload whose truth is known (from `generate --truth`): of
//! the customers who stopped buying, how many were warned and how many days
//! ahead, how many of the warned customers really churned soon after, how
//! noisy the rule is, and — for a risk model — how well calibrated its
//! risks are.
//!
//! Everything here is a pure function of truth records, output documents
//! and input events; the CLI (`src/cli/backtest.rs`) runs the replays and
//! [`plots`](super::plots) draws the charts.

use crate::domain::time::{format_rfc3339, Millis, DAY_MS};
use crate::workload::generate::{Archetype, Truth};
use crate::workload::stake::StakeReport;
use anyhow::{Context, Result};
use serde::{Serialize, Serializer};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};

/// The output schema of churn warnings.
pub const WARNING_SCHEMA: &str = "tierstream.churn_warning.v1";

/// An average calendar month, in days (365.25 / 12).
const MONTH_DAYS: f64 = 30.4375;

/// How the warnings are scored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Params {
    /// Precision horizon H: a warning is right when the customer churns
    /// within H days of its first opening.
    pub horizon_days: f64,
    /// Lead L: a churner counts as warned in time when its first opening is
    /// at least L days before its churn date.
    pub lead_days: f64,
    /// The archetypes whose churners are reported apart (the issue's
    /// target is `spurious_churner`); empty for none.
    pub target: Vec<Archetype>,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            horizon_days: 180.0,
            lead_days: 30.0,
            target: Vec::new(),
        }
    }
}

/// A time range, epoch milliseconds (serialized as RFC 3339).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// First instant.
    pub start: Millis,
    /// Last instant.
    pub end: Millis,
}

impl Span {
    /// The span of one instant.
    pub fn at(t: Millis) -> Span {
        Span { start: t, end: t }
    }

    /// The smallest span holding both.
    pub fn union(self, other: Span) -> Span {
        Span {
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }

    /// Widens `span` to hold `t`.
    pub fn include(span: &mut Option<Span>, t: Millis) {
        *span = Some(span.map_or(Span::at(t), |s| s.union(Span::at(t))));
    }

    /// Its length in average calendar months.
    pub fn months(&self) -> f64 {
        (self.end - self.start) as f64 / DAY_MS as f64 / MONTH_DAYS
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        json!({"start": format_rfc3339(self.start), "end": format_rfc3339(self.end)}).serialize(s)
    }
}

/// Figures about a group of churners.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ChurnerStats {
    /// Churners (truth `churn_date` set) in the group.
    pub churners: usize,
    /// Churners whose first warning opened at or before their churn date.
    pub warned_before_churn: usize,
    /// Churners whose first warning opened at least L days before their
    /// churn date.
    pub warned_ahead: usize,
    /// `warned_before_churn / churners` (the old "recall").
    pub recall: Option<f64>,
    /// `warned_ahead / churners`: the recall the issue asks for.
    pub warned_ahead_share: Option<f64>,
    /// Median days from the first opening to the churn date, over the
    /// churners warned before churning.
    pub median_lead_days: Option<f64>,
    /// Lower quartile of those lead times.
    pub p25_lead_days: Option<f64>,
    /// Upper quartile of those lead times.
    pub p75_lead_days: Option<f64>,
    /// The lead times themselves (not serialized).
    #[serde(skip)]
    pub lead_days: Vec<f64>,
}

impl ChurnerStats {
    fn add(&mut self, churn: Millis, first_opened: Option<Millis>, lead_ms: i64) {
        self.churners += 1;
        if let Some(at) = first_opened.filter(|at| *at <= churn) {
            self.warned_before_churn += 1;
            self.lead_days.push((churn - at) as f64 / DAY_MS as f64);
            if at <= churn - lead_ms {
                self.warned_ahead += 1;
            }
        }
    }

    fn finish(&mut self) {
        self.lead_days.sort_by(f64::total_cmp);
        self.recall = ratio(self.warned_before_churn, self.churners);
        self.warned_ahead_share = ratio(self.warned_ahead, self.churners);
        self.median_lead_days = quantile(&self.lead_days, 0.5);
        self.p25_lead_days = quantile(&self.lead_days, 0.25);
        self.p75_lead_days = quantile(&self.lead_days, 0.75);
    }
}

/// The churners of the target archetypes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetStats {
    /// Which archetypes.
    pub archetypes: Vec<Archetype>,
    /// Their churners.
    #[serde(flatten)]
    pub stats: ChurnerStats,
}

/// One line of the by-archetype table.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ArchetypeRow {
    /// Customers of the archetype.
    pub customers: usize,
    /// Of them, customers with at least one warning opened.
    pub warned: usize,
    /// Its churners.
    #[serde(flatten)]
    pub churners: ChurnerStats,
}

/// The backtest figures of one rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BacktestReport {
    /// H, days.
    pub horizon_days: f64,
    /// L, days.
    pub lead_days: f64,
    /// Customers in the truth.
    pub customers: usize,
    /// All churners.
    pub all_churners: ChurnerStats,
    /// The churners of the target archetypes, when some were chosen.
    pub target: Option<TargetStats>,
    /// Customers with at least one warning opened.
    pub warned: usize,
    /// Of them, customers whose churn date falls within
    /// [first opening, first opening + H].
    pub warned_churned_within_horizon: usize,
    /// `warned_churned_within_horizon / warned`.
    pub precision: Option<f64>,
    /// Warnings opened (re-openings included).
    pub openings: usize,
    /// The time range the rate is taken over.
    pub span: Option<Span>,
    /// Its length in months.
    pub months: Option<f64>,
    /// `openings / customers / months * 1000`.
    pub warnings_per_1000_customers_per_month: Option<f64>,
    /// Per archetype (whatever archetypes the truth holds).
    pub by_archetype: BTreeMap<Archetype, ArchetypeRow>,
}

fn ratio(a: usize, b: usize) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

/// Linear-interpolated quantile of sorted values.
fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let pos = (sorted.len() - 1) as f64 * q;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64))
}

/// An RFC 3339 instant of a truth record or an output, in epoch millis.
pub fn millis(rfc3339: &str) -> Result<Millis> {
    Ok(Millis::from_ms(
        chrono::DateTime::parse_from_rfc3339(rfc3339)
            .with_context(|| format!("bad time {rfc3339}"))?
            .timestamp_millis(),
    ))
}

/// An archetype's name as in the truth file.
pub fn archetype_name(a: Archetype) -> String {
    serde_json::to_value(a)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{a:?}"))
}

/// Whether an output document is an opened churn warning.
pub fn is_opening(v: &Value) -> bool {
    v["schema"] == WARNING_SCHEMA && v["action"] == "opened"
}

/// Whether an output document is a churn warning (any action).
pub fn is_warning(v: &Value) -> bool {
    v["schema"] == WARNING_SCHEMA
}

/// The time range of the truth (churn and deterioration dates) and of the
/// outputs' `at`.
pub fn time_span<'a>(
    truth: &[Truth],
    outputs: impl IntoIterator<Item = &'a Value>,
) -> Result<Option<Span>> {
    let mut span = None;
    for t in truth {
        for d in [&t.churn_date, &t.deterioration_from].into_iter().flatten() {
            Span::include(&mut span, millis(d)?);
        }
    }
    for v in outputs {
        if let Some(at) = v["at"].as_str() {
            Span::include(&mut span, millis(at)?);
        }
    }
    Ok(span)
}

/// Scores the churn warnings among `outputs` (output JSON documents; other
/// schemas are ignored) against `truth`. The warning rate is taken over
/// `span`, or when `None` over [`time_span`] of these truth and outputs
/// (rules compared side by side should share one span).
pub fn score<'a>(
    truth: &[Truth],
    outputs: impl IntoIterator<Item = &'a Value>,
    params: &Params,
    span: Option<Span>,
) -> Result<BacktestReport> {
    let outputs: Vec<&Value> = outputs.into_iter().collect();
    let span = match span {
        Some(s) => Some(s),
        None => time_span(truth, outputs.iter().copied())?,
    };
    let mut first_opened: HashMap<&str, Millis> = HashMap::new();
    let mut openings = 0;
    for v in outputs.iter().filter(|v| is_opening(v)) {
        let id = v["customer_id"]
            .as_str()
            .context("churn warning without customer_id")?;
        let at = millis(v["at"].as_str().context("churn warning without at")?)?;
        openings += 1;
        first_opened
            .entry(id)
            .and_modify(|t| *t = (*t).min(at))
            .or_insert(at);
    }
    let lead_ms = (params.lead_days * DAY_MS as f64).round() as i64;
    let horizon_ms = (params.horizon_days * DAY_MS as f64).round() as i64;
    let target: HashSet<Archetype> = params.target.iter().copied().collect();
    let mut all = ChurnerStats::default();
    let mut target_stats = ChurnerStats::default();
    let mut by_archetype: BTreeMap<Archetype, ArchetypeRow> = BTreeMap::new();
    let mut warned = 0;
    let mut right = 0;
    for t in truth {
        let opened = first_opened.get(t.customer_id.as_str()).copied();
        let churn = t.churn_date.as_deref().map(millis).transpose()?;
        let row = by_archetype.entry(t.archetype).or_default();
        row.customers += 1;
        if let Some(at) = opened {
            row.warned += 1;
            warned += 1;
            right += usize::from(churn.is_some_and(|c| at <= c && c <= at + horizon_ms));
        }
        if let Some(c) = churn {
            all.add(c, opened, lead_ms);
            row.churners.add(c, opened, lead_ms);
            if target.contains(&t.archetype) {
                target_stats.add(c, opened, lead_ms);
            }
        }
    }
    all.finish();
    target_stats.finish();
    for row in by_archetype.values_mut() {
        row.churners.finish();
    }
    let months = span.map(|s| s.months()).filter(|m| *m > 0.0);
    Ok(BacktestReport {
        horizon_days: params.horizon_days,
        lead_days: params.lead_days,
        customers: truth.len(),
        all_churners: all,
        target: (!params.target.is_empty()).then(|| TargetStats {
            archetypes: params.target.clone(),
            stats: target_stats,
        }),
        warned,
        warned_churned_within_horizon: right,
        precision: ratio(right, warned),
        openings,
        span,
        months,
        warnings_per_1000_customers_per_month: months
            .filter(|_| !truth.is_empty())
            .map(|m| openings as f64 / truth.len() as f64 / m * 1000.0),
        by_archetype,
    })
}

fn pct(x: Option<f64>) -> String {
    x.map_or("-".into(), |x| format!("{:.1}%", 100.0 * x))
}

fn num(x: Option<f64>, decimals: usize) -> String {
    x.map_or("-".into(), |x| format!("{x:.decimals$}"))
}

fn count_share(n: usize, share: Option<f64>) -> String {
    format!("{n} ({})", pct(share))
}

impl BacktestReport {
    /// The report as a text table.
    pub fn render(&self) -> String {
        let l = self.lead_days;
        let mut s = format!(
            "customers {}, churners {}; precision horizon {} days, lead {} days\n\n",
            self.customers, self.all_churners.churners, self.horizon_days, l
        );
        s.push_str(&format!(
            "{:<24} {:>8} {:>16} {:>18} {:>11} {:>7} {:>7}\n",
            "churners",
            "n",
            "warned <= churn",
            format!("warned >= {l}d ahead"),
            "median lead",
            "p25",
            "p75"
        ));
        let mut line = |name: &str, c: &ChurnerStats| {
            s.push_str(&format!(
                "{:<24} {:>8} {:>16} {:>18} {:>11} {:>7} {:>7}\n",
                name,
                c.churners,
                count_share(c.warned_before_churn, c.recall),
                count_share(c.warned_ahead, c.warned_ahead_share),
                num(c.median_lead_days, 1),
                num(c.p25_lead_days, 1),
                num(c.p75_lead_days, 1),
            ));
        };
        line("all", &self.all_churners);
        if let Some(t) = &self.target {
            let names: Vec<String> = t.archetypes.iter().map(|a| archetype_name(*a)).collect();
            line(&format!("target ({})", names.join(", ")), &t.stats);
        }
        s.push_str(&format!(
            "\nwarned customers {}, of them churned within {} days of the first warning {} \
             (precision {})\n",
            self.warned,
            self.horizon_days,
            self.warned_churned_within_horizon,
            pct(self.precision)
        ));
        s.push_str(&format!(
            "warnings opened {} over {} months: {} per 1000 customers per month\n\n",
            self.openings,
            num(self.months, 1),
            num(self.warnings_per_1000_customers_per_month, 1)
        ));
        s.push_str(&format!(
            "{:<18} {:>9} {:>16} {:>9} {:>18} {:>11}\n",
            "archetype",
            "customers",
            "warned",
            "churners",
            format!("warned >= {l}d ahead"),
            "median lead"
        ));
        for (a, r) in &self.by_archetype {
            s.push_str(&format!(
                "{:<18} {:>9} {:>16} {:>9} {:>18} {:>11}\n",
                archetype_name(*a),
                r.customers,
                count_share(r.warned, ratio(r.warned, r.customers)),
                r.churners.churners,
                count_share(r.churners.warned_ahead, r.churners.warned_ahead_share),
                num(r.churners.median_lead_days, 1),
            ));
        }
        s
    }
}

// ---------------------------------------------------------------- calibration

/// One risk decile of a reliability table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decile {
    /// Lower bound (inclusive).
    pub lower: f64,
    /// Upper bound (exclusive, inclusive for the last decile).
    pub upper: f64,
    /// Samples in it.
    pub n: usize,
    /// Mean predicted risk of those samples.
    pub mean_predicted: Option<f64>,
    /// Share of those samples that were observed to churn.
    pub observed: Option<f64>,
}

/// How well predicted risks match what happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Calibration {
    /// Samples scored (non-finite predictions are dropped).
    pub samples: usize,
    /// The reliability table: [0, 0.1), [0.1, 0.2), …, [0.9, 1.0].
    pub deciles: Vec<Decile>,
    /// Mean squared error of the predictions against 0/1 outcomes.
    pub brier: Option<f64>,
    /// Mean over the non-empty deciles of |mean predicted − observed|.
    pub calibration_error: Option<f64>,
    /// The same, weighted by decile counts (expected calibration error).
    pub ece: Option<f64>,
}

/// The reliability table, Brier score and calibration errors of
/// `(predicted risk, churned)` samples. Predictions are clamped to [0, 1].
pub fn calibration(samples: &[(f64, bool)]) -> Calibration {
    let edges: Vec<f64> = (0..=10).map(|i| f64::from(i) / 10.0).collect();
    let mut sums = [(0usize, 0.0f64, 0usize); 10];
    let mut brier = 0.0;
    let mut n = 0;
    for &(p, y) in samples.iter().filter(|(p, _)| p.is_finite()) {
        let p = p.clamp(0.0, 1.0);
        // by comparison with the edges, so 0.3 falls in [0.3, 0.4)
        let bin = edges[1..10].iter().filter(|e| p >= **e).count();
        let o = if y { 1.0 } else { 0.0 };
        sums[bin].0 += 1;
        sums[bin].1 += p;
        sums[bin].2 += usize::from(y);
        brier += (p - o) * (p - o);
        n += 1;
    }
    let deciles: Vec<Decile> = sums
        .iter()
        .enumerate()
        .map(|(i, &(k, sum_p, pos))| Decile {
            lower: edges[i],
            upper: edges[i + 1],
            n: k,
            mean_predicted: (k > 0).then(|| sum_p / k as f64),
            observed: ratio(pos, k),
        })
        .collect();
    let gaps: Vec<(usize, f64)> = deciles
        .iter()
        .filter_map(|d| Some((d.n, (d.mean_predicted? - d.observed?).abs())))
        .collect();
    Calibration {
        samples: n,
        brier: (n > 0).then(|| brier / n as f64),
        calibration_error: (!gaps.is_empty())
            .then(|| gaps.iter().map(|(_, g)| g).sum::<f64>() / gaps.len() as f64),
        ece: (n > 0).then(|| gaps.iter().map(|(k, g)| *k as f64 * g).sum::<f64>() / n as f64),
        deciles,
    }
}

impl Calibration {
    /// The reliability table and scores as text.
    pub fn render(&self) -> String {
        let mut s = format!(
            "calibration: {} samples, Brier {}, calibration error {} (count-weighted ECE {})\n",
            self.samples,
            num(self.brier, 4),
            num(self.calibration_error, 4),
            num(self.ece, 4)
        );
        s.push_str(&format!(
            "{:<12} {:>8} {:>15} {:>9}\n",
            "risk", "n", "mean predicted", "observed"
        ));
        for d in &self.deciles {
            let close = if d.upper >= 1.0 { ']' } else { ')' };
            s.push_str(&format!(
                "{:<12} {:>8} {:>15} {:>9}\n",
                format!("[{:.1}, {:.1}{close}", d.lower, d.upper),
                d.n,
                num(d.mean_predicted, 3),
                num(d.observed, 3)
            ));
        }
        s
    }
}

// ---------------------------------------------------------------- first alarm

/// Two negative events at most this many days apart raise the first alarm.
pub const FIRST_ALARM_PAIR_DAYS: f64 = 60.0;
/// ... while the customer bought within this many days before the second.
pub const FIRST_ALARM_BUYING_DAYS: f64 = 90.0;
/// Signals of a service event that make it negative.
pub const FIRST_ALARM_SIGNALS: [&str; 3] = [
    "competitor_offer",
    "cancellation_inquiry",
    "price_match_request",
];

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Purchase,
    Negative,
}

/// Event time of an input event: RFC 3339 or epoch milliseconds (SPEC §1).
fn event_ts(v: &Value) -> Option<Millis> {
    match &v["ts"] {
        Value::String(s) => millis(s).ok(),
        n @ Value::Number(_) => n.as_i64().map(Millis::from_ms),
        _ => None,
    }
}

fn classify(v: &Value) -> Option<Kind> {
    match v["type"].as_str()? {
        "purchase" if v["refund"] != true => Some(Kind::Purchase),
        "complaint"
            if v["status"] != "resolved"
                && matches!(v["severity"].as_str(), Some("medium" | "high" | "critical")) =>
        {
            Some(Kind::Negative)
        }
        "service"
            if v["signals"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|s| s.as_str().is_some_and(|s| FIRST_ALARM_SIGNALS.contains(&s)))
            }) =>
        {
            Some(Kind::Negative)
        }
        _ => None,
    }
}

/// The baseline rule of the churn-risk issue, from input events (SPEC §1):
/// a customer is alarmed at the first instant it has two negative events —
/// an opened complaint of severity medium or worse, or a service event with
/// a `competitor_offer`, `cancellation_inquiry` or `price_match_request`
/// signal — at most 60 days apart, while still buying (a purchase, not a
/// refund, in the 90 days up to the second one). Returns the alarms as
/// opened churn warnings (`"rule": "first_alarm"`), one per customer, for
/// [`score`]. Events it cannot read are skipped (the replay would
/// dead-letter them).
pub fn first_alarm(events: impl IntoIterator<Item = Value>) -> Vec<Value> {
    let mut per_customer: HashMap<String, Vec<(Millis, usize, Kind)>> = HashMap::new();
    for (seq, v) in events.into_iter().enumerate() {
        let (Some(kind), Some(ts), Some(id)) =
            (classify(&v), event_ts(&v), v["customer_id"].as_str())
        else {
            continue;
        };
        per_customer
            .entry(id.to_owned())
            .or_default()
            .push((ts, seq, kind));
    }
    let pair_ms = (FIRST_ALARM_PAIR_DAYS * DAY_MS as f64) as i64;
    let buying_ms = (FIRST_ALARM_BUYING_DAYS * DAY_MS as f64) as i64;
    let mut alarms: Vec<(Millis, String)> = Vec::new();
    for (id, mut evs) in per_customer {
        evs.sort_unstable_by_key(|(ts, seq, _)| (*ts, *seq));
        let (mut last_purchase, mut last_negative) = (None::<Millis>, None::<Millis>);
        for (ts, _, kind) in evs {
            match kind {
                Kind::Purchase => last_purchase = Some(ts),
                Kind::Negative => {
                    let paired = last_negative.is_some_and(|n| ts - n <= pair_ms);
                    let buying = last_purchase.is_some_and(|p| ts - p <= buying_ms);
                    if paired && buying {
                        alarms.push((ts, id));
                        break;
                    }
                    last_negative = Some(ts);
                }
            }
        }
    }
    alarms.sort();
    alarms
        .into_iter()
        .map(|(ts, id)| {
            json!({
                "schema": WARNING_SCHEMA,
                "action": "opened",
                "customer_id": id,
                "at": format_rfc3339(ts),
                "rule": "first_alarm",
            })
        })
        .collect()
}

// ---------------------------------------------------------------- comparison

/// A config value a rule overrides.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Setting {
    /// A string value.
    Text(String),
    /// A number.
    Number(f64),
}

/// What kind of rule a report is about (the charts draw sweeps as a line,
/// the others as points).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// The risk model at the config's threshold.
    Risk,
    /// The risk model at one threshold of the sweep.
    RiskSweep,
    /// Warnings opened on the quadrant (the policy before the risk model).
    Quadrant,
    /// The first-alarm baseline.
    FirstAlarm,
    /// Outputs given on the command line, whatever rule made them.
    Given,
}

/// One rule, scored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleReport {
    /// Its name in tables and charts (`risk`, `risk@0.30`, `quadrant`, …).
    pub name: String,
    /// Its kind.
    pub kind: RuleKind,
    /// The `warnings.open_risk` threshold, for risk rules that set one.
    pub threshold: Option<f64>,
    /// The config overrides it ran with.
    pub overrides: BTreeMap<String, Setting>,
    /// Its figures.
    pub report: BacktestReport,
    /// The money at stake its warnings reach, when they carry it.
    pub stake: Option<StakeReport>,
}

/// A rule that could not run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Skipped {
    /// Its name.
    pub name: String,
    /// Why (the config's error).
    pub reason: String,
}

/// Rules side by side: the document `backtest --json` writes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// The scoring parameters.
    pub params: Params,
    /// The rules that ran.
    pub rules: Vec<RuleReport>,
    /// The rules that could not.
    pub skipped: Vec<Skipped>,
    /// Calibration of the risk model, when it provides risks.
    pub calibration: Option<Calibration>,
    /// Remarks about the run.
    pub notes: Vec<String>,
}

/// How a table cell is made from a figure.
type CellOf<T> = dyn Fn(&T) -> String;

impl Comparison {
    /// The rules side by side, then skipped rules, notes and calibration.
    pub fn render(&self) -> String {
        let p = &self.params;
        let mut s = format!(
            "backtest: precision horizon {} days, lead {} days\n\n",
            p.horizon_days, p.lead_days
        );
        let width = self
            .rules
            .iter()
            .map(|r| r.name.len())
            .max()
            .unwrap_or(0)
            .max(9);
        let mut rows: Vec<(String, Vec<String>)> = Vec::new();
        let mut row = |label: String, f: &dyn Fn(&BacktestReport) -> String| {
            rows.push((label, self.rules.iter().map(|r| f(&r.report)).collect()));
        };
        row("churners".into(), &|r| r.all_churners.churners.to_string());
        row(format!("warned >= {}d ahead", p.lead_days), &|r| {
            pct(r.all_churners.warned_ahead_share)
        });
        row("warned <= churn".into(), &|r| pct(r.all_churners.recall));
        row("median lead, days".into(), &|r| {
            num(r.all_churners.median_lead_days, 1)
        });
        if !p.target.is_empty() {
            let names: Vec<String> = p.target.iter().map(|a| archetype_name(*a)).collect();
            let names = names.join(",");
            row(format!("{names} churners"), &|r| {
                r.target
                    .as_ref()
                    .map_or("-".into(), |t| t.stats.churners.to_string())
            });
            row(format!("  warned >= {}d ahead", p.lead_days), &|r| {
                pct(r.target.as_ref().and_then(|t| t.stats.warned_ahead_share))
            });
            row("  median lead, days".into(), &|r| {
                num(r.target.as_ref().and_then(|t| t.stats.median_lead_days), 1)
            });
        }
        row("warned customers".into(), &|r| r.warned.to_string());
        row(format!("precision ({}d)", p.horizon_days), &|r| {
            pct(r.precision)
        });
        row("warnings /1000 cust/month".into(), &|r| {
            num(r.warnings_per_1000_customers_per_month, 1)
        });
        let archetypes: std::collections::BTreeSet<Archetype> = self
            .rules
            .iter()
            .flat_map(|r| r.report.by_archetype.keys().copied())
            .collect();
        // per archetype: churners warned >= L ahead, then customers warned
        let blocks: [(String, &CellOf<ArchetypeRow>); 2] = [
            (
                format!("churners warned >= {}d ahead, by archetype", p.lead_days),
                &|row| {
                    if row.churners.churners == 0 {
                        "-".into()
                    } else {
                        format!("{}/{}", row.churners.warned_ahead, row.churners.churners)
                    }
                },
            ),
            ("customers warned, by archetype".into(), &|row| {
                pct(ratio(row.warned, row.customers))
            }),
        ];
        for (title, cell) in blocks {
            if archetypes.is_empty() {
                break;
            }
            rows.push((title, vec![String::new(); self.rules.len()]));
            for a in &archetypes {
                let cells = self
                    .rules
                    .iter()
                    .map(|r| r.report.by_archetype.get(a).map_or("-".into(), cell))
                    .collect();
                rows.push((format!("  {}", archetype_name(*a)), cells));
            }
        }
        let label_width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
        s.push_str(&format!("{:<label_width$}", "rule"));
        for r in &self.rules {
            s.push_str(&format!(" {:>width$}", r.name));
        }
        s.push('\n');
        for (label, cells) in &rows {
            s.push_str(&format!("{label:<label_width$}"));
            for c in cells {
                s.push_str(&format!(" {c:>width$}"));
            }
            s.push('\n');
        }
        for k in &self.skipped {
            s.push_str(&format!("\nskipped {}: {}", k.name, k.reason));
        }
        if !self.skipped.is_empty() {
            s.push('\n');
        }
        for n in &self.notes {
            s.push_str(&format!("\nnote: {n}"));
        }
        if !self.notes.is_empty() {
            s.push('\n');
        }
        for r in &self.rules {
            if let Some(stake) = &r.stake {
                s.push('\n');
                s.push_str(&stake.render(&r.name));
            }
        }
        if let Some(c) = &self.calibration {
            s.push('\n');
            s.push_str(&c.render());
        }
        s
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn truth(id: &str, a: Archetype, churn: Option<&str>) -> Truth {
        Truth {
            customer_id: id.into(),
            archetype: a,
            churn_date: churn.map(str::to_owned),
            deterioration_from: None,
        }
    }

    fn opened(id: &str, at: &str) -> Value {
        json!({"schema": WARNING_SCHEMA, "action": "opened", "customer_id": id, "at": at})
    }

    fn t(s: &str) -> Millis {
        millis(s).unwrap()
    }

    // Archetypes whose names survive the planned renaming (true_loyal,
    // latent, disloyal), so the tests do not depend on the others.
    fn workload() -> (Vec<Truth>, Vec<Value>) {
        use Archetype::{Disloyal, Latent, TrueLoyal};
        let truth = vec![
            truth("a", Disloyal, Some("2025-06-30T00:00:00Z")),
            truth("b", Disloyal, Some("2025-06-30T00:00:00Z")),
            truth("c", Disloyal, Some("2025-03-01T00:00:00Z")),
            truth("d", TrueLoyal, None),
            truth("e", Latent, Some("2025-12-31T00:00:00Z")),
            truth("f", Latent, Some("2025-04-01T00:00:00Z")),
            truth("g", TrueLoyal, None),
        ];
        let outputs = vec![
            opened("a", "2025-05-01T00:00:00.000Z"), // 60 days ahead
            opened("a", "2025-06-20T00:00:00.000Z"), // re-opened: the first counts
            opened("b", "2025-06-20T00:00:00.000Z"), // 10 days ahead: too late for L
            opened("c", "2025-03-10T00:00:00.000Z"), // after it churned: a miss
            opened("d", "2025-02-01T00:00:00.000Z"), // false alarm
            opened("e", "2025-01-01T00:00:00.000Z"), // 364 days ahead: beyond H
            json!({"schema": WARNING_SCHEMA, "action": "cleared", "customer_id": "g",
                   "at": "2025-02-01T00:00:00.000Z"}),
            json!({"schema": "tierstream.tier_changed.v1", "customer_id": "f",
                   "at": "2025-01-05T00:00:00.000Z"}),
        ];
        (truth, outputs)
    }

    #[test]
    fn lead_precision_rate_and_archetypes() {
        let (truth, outputs) = workload();
        let params = Params {
            target: vec![Archetype::Disloyal],
            ..Params::default()
        };
        let start = t("2025-01-01T00:00:00Z");
        // 304.375 days: exactly 10 average months
        let span = Span {
            start,
            end: start + 26_298_000_000,
        };
        let r = score(&truth, &outputs, &params, Some(span)).unwrap();
        assert_eq!(r.customers, 7);
        let all = &r.all_churners;
        assert_eq!(all.churners, 5);
        assert_eq!(all.warned_before_churn, 3); // a, b, e
        assert_eq!(all.warned_ahead, 2); // a, e
        assert_eq!(all.warned_ahead_share, Some(0.4));
        assert_eq!(all.lead_days, vec![10.0, 60.0, 364.0]);
        assert_eq!(all.median_lead_days, Some(60.0));
        assert_eq!(all.p25_lead_days, Some(35.0));
        // warned a b c d e; churned within 180 days of the first: a, b
        assert_eq!(r.warned, 5);
        assert_eq!(r.warned_churned_within_horizon, 2);
        assert_eq!(r.precision, Some(0.4));
        assert_eq!(r.openings, 6);
        assert!((r.months.unwrap() - 10.0).abs() < 1e-9);
        let rate = r.warnings_per_1000_customers_per_month.unwrap();
        assert!((rate - 6.0 / 7.0 / 10.0 * 1000.0).abs() < 1e-9, "{rate}");

        let target = r.target.as_ref().unwrap();
        assert_eq!(target.stats.churners, 3);
        assert_eq!(target.stats.warned_ahead, 1);
        assert_eq!(target.stats.median_lead_days, Some(35.0)); // of 10 and 60

        let row = |a| &r.by_archetype[&a];
        assert_eq!(row(Archetype::Disloyal).customers, 3);
        assert_eq!(row(Archetype::Disloyal).warned, 3);
        assert_eq!(row(Archetype::Disloyal).churners.warned_ahead, 1);
        assert_eq!(row(Archetype::Latent).customers, 2);
        assert_eq!(row(Archetype::Latent).warned, 1);
        assert_eq!(row(Archetype::Latent).churners.churners, 2);
        assert_eq!(row(Archetype::Latent).churners.warned_ahead, 1);
        assert_eq!(row(Archetype::TrueLoyal).customers, 2);
        assert_eq!(row(Archetype::TrueLoyal).warned, 1);
        assert_eq!(row(Archetype::TrueLoyal).churners.churners, 0);
        assert_eq!(r.by_archetype.len(), 3);

        let text = r.render();
        assert!(text.contains("precision 40.0%"), "{text}");
        assert!(text.contains("target (disloyal)"), "{text}");
        assert!(text.contains("85.7 per 1000 customers per month"), "{text}");
    }

    #[test]
    fn horizon_and_lead_are_parameters() {
        let (truth, outputs) = workload();
        // with a year's horizon e's warning is right; with L = 5 b is in time
        let params = Params {
            horizon_days: 365.0,
            lead_days: 5.0,
            target: vec![],
        };
        let r = score(&truth, &outputs, &params, None).unwrap();
        assert_eq!(r.warned_churned_within_horizon, 3);
        assert_eq!(r.all_churners.warned_ahead, 3);
        assert!(r.target.is_none());
        // the span when none is given: truth dates and outputs' `at`
        assert_eq!(
            r.span,
            Some(Span {
                start: t("2025-01-01T00:00:00Z"),
                end: t("2025-12-31T00:00:00Z")
            })
        );
    }

    #[test]
    fn calibration_by_hand() {
        let c = calibration(&[
            (0.05, false),
            (0.15, true),
            (0.15, false),
            (0.95, true),
            (f64::NAN, true), // dropped
        ]);
        assert_eq!(c.samples, 4);
        // (0.05² + 0.85² + 0.15² + 0.05²) / 4
        assert!((c.brier.unwrap() - 0.1875).abs() < 1e-12);
        assert_eq!(c.deciles.len(), 10);
        assert_eq!(c.deciles[0].n, 1);
        assert_eq!(c.deciles[0].observed, Some(0.0));
        assert_eq!(c.deciles[1].n, 2);
        assert!((c.deciles[1].mean_predicted.unwrap() - 0.15).abs() < 1e-12);
        assert_eq!(c.deciles[1].observed, Some(0.5));
        assert_eq!(c.deciles[5].n, 0);
        assert_eq!(c.deciles[5].mean_predicted, None);
        assert_eq!(c.deciles[9].observed, Some(1.0));
        // gaps 0.05, 0.35, 0.05 over 3 deciles; weighted 1, 2, 1 over 4
        assert!((c.calibration_error.unwrap() - 0.15).abs() < 1e-12);
        assert!((c.ece.unwrap() - 0.2).abs() < 1e-12);
        assert!(c.render().contains("[0.9, 1.0]"));
    }

    #[test]
    fn calibration_bin_edges() {
        let c = calibration(&[
            (0.1, true),
            (0.3, false),
            (0.9, true),
            (1.0, true),
            (0.0, false),
        ]);
        let n: Vec<usize> = c.deciles.iter().map(|d| d.n).collect();
        assert_eq!(n, vec![1, 1, 0, 1, 0, 0, 0, 0, 0, 2]);
        assert_eq!(calibration(&[]).brier, None);
        assert_eq!(calibration(&[]).calibration_error, None);
    }

    fn ev(kind: &str, id: &str, ts: &str, extra: Value) -> Value {
        let mut v = json!({"event_id": format!("{id}-{ts}-{kind}"), "type": kind,
                           "customer_id": id, "ts": ts});
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        v
    }

    #[test]
    fn first_alarm_rule() {
        let complaint = |id, ts, sev| ev("complaint", id, ts, json!({"severity": sev}));
        let signal = |id, ts, s| ev("service", id, ts, json!({"signals": ["nps_survey", s]}));
        let buy = |id, ts| ev("purchase", id, ts, json!({"amount": 10}));
        let events = vec![
            // 61 days apart: no alarm
            buy("far", "2025-01-01T00:00:00Z"),
            complaint("far", "2025-01-10T00:00:00Z", "high"),
            signal("far", "2025-03-12T00:00:00Z", "competitor_offer"),
            // 59 days apart, bought 40 days before the second: alarm at the second
            buy("near", "2025-01-29T00:00:00Z"),
            signal("near", "2025-01-10T00:00:00Z", "price_match_request"),
            complaint("near", "2025-03-10T00:00:00Z", "medium"),
            complaint("near", "2025-03-11T00:00:00Z", "critical"), // later: ignored
            // 59 days apart but the last purchase 91 days before: no alarm
            buy("gone", "2024-12-09T00:00:00Z"),
            complaint("gone", "2025-01-10T00:00:00Z", "high"),
            signal("gone", "2025-03-10T00:00:00Z", "cancellation_inquiry"),
            // not negative: low severity, resolved, unknown signal, refund
            buy("mild", "2025-01-01T00:00:00Z"),
            complaint("mild", "2025-01-02T00:00:00Z", "low"),
            ev(
                "complaint",
                "mild",
                "2025-01-03T00:00:00Z",
                json!({"severity": "high", "status": "resolved"}),
            ),
            signal("mild", "2025-01-04T00:00:00Z", "contract_end_inquiry"),
            // epoch-millisecond times are read too; a refund is not buying
            ev(
                "purchase",
                "ms",
                "2025-01-01T00:00:00Z",
                json!({"amount": 5, "refund": true}),
            ),
            ev("complaint", "ms", "x", json!({"severity": "high"})), // unreadable ts: skipped
        ];
        let mut events = events;
        events.push(
            json!({"type": "complaint", "customer_id": "ms", "severity": "high",
                           "ts": t("2025-01-05T00:00:00Z")}),
        );
        events.push(
            json!({"type": "complaint", "customer_id": "ms", "severity": "high",
                           "ts": t("2025-01-06T00:00:00Z")}),
        );
        let alarms = first_alarm(events.clone());
        assert_eq!(alarms.len(), 1, "{alarms:?}");
        assert_eq!(alarms[0]["customer_id"], "near");
        assert_eq!(alarms[0]["at"], "2025-03-10T00:00:00.000Z");
        assert!(is_opening(&alarms[0]));

        // with a real purchase, the epoch-millisecond pair alarms at the second
        events.push(buy("ms", "2025-01-02T00:00:00Z"));
        let alarms = first_alarm(events);
        let ms: Vec<&Value> = alarms.iter().filter(|a| a["customer_id"] == "ms").collect();
        assert_eq!(ms.len(), 1);
        assert_eq!(ms[0]["at"], "2025-01-06T00:00:00.000Z");

        // and they score like any warning
        let truth = vec![truth(
            "near",
            Archetype::Disloyal,
            Some("2025-05-01T00:00:00Z"),
        )];
        let r = score(&truth, &alarms, &Params::default(), None).unwrap();
        assert_eq!(r.all_churners.warned_ahead, 1);
        assert_eq!(r.all_churners.median_lead_days, Some(52.0));
    }

    pub(crate) fn comparison() -> Comparison {
        let (truth, outputs) = workload();
        let params = Params {
            target: vec![Archetype::Disloyal],
            ..Params::default()
        };
        let span = time_span(&truth, &outputs).unwrap();
        let report = |outs: &[Value]| score(&truth, outs, &params, span).unwrap();
        let rule = |name: &str, kind, threshold, outs: &[Value]| RuleReport {
            name: name.into(),
            kind,
            threshold,
            overrides: BTreeMap::new(),
            report: report(outs),
            stake: None,
        };
        Comparison {
            params: params.clone(),
            rules: vec![
                rule("risk@0.20", RuleKind::RiskSweep, Some(0.2), &outputs),
                rule("risk@0.50", RuleKind::RiskSweep, Some(0.5), &outputs[..3]),
                rule("quadrant", RuleKind::Quadrant, None, &outputs[2..]),
                rule("first_alarm", RuleKind::FirstAlarm, None, &outputs[..1]),
            ],
            skipped: vec![Skipped {
                name: "risk".into(),
                reason: "unknown field `open_on`".into(),
            }],
            calibration: Some(calibration(&[(0.05, false), (0.15, true), (0.95, true)])),
            notes: vec!["calibration needs the risk model".into()],
        }
    }

    #[test]
    fn comparison_renders_and_serializes() {
        let c = comparison();
        let text = c.render();
        for needle in [
            "risk@0.20",
            "first_alarm",
            "skipped risk: unknown field",
            "precision (180d)",
            "  disloyal",
            "customers warned, by archetype",
            "Brier",
        ] {
            assert!(text.contains(needle), "{needle} in\n{text}");
        }
        let doc = serde_json::to_value(&c).unwrap();
        assert_eq!(doc["rules"][0]["name"], "risk@0.20");
        assert_eq!(doc["rules"][0]["kind"], "risk_sweep");
        assert_eq!(doc["rules"][3]["report"]["all_churners"]["warned_ahead"], 1);
        assert_eq!(
            doc["rules"][0]["report"]["by_archetype"]["disloyal"]["customers"],
            3
        );
        assert_eq!(
            doc["rules"][0]["report"]["span"]["start"],
            "2025-01-01T00:00:00.000Z"
        );
        assert_eq!(doc["skipped"][0]["name"], "risk");
        assert!(doc["calibration"]["brier"].is_number());
        assert_eq!(doc["params"]["target"][0], "disloyal");
    }
}
