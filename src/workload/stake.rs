//! Money at stake in a backtest: a retention team that can make `k` calls
//! a month calls the top `k` of the month's opened warnings; how much of
//! the profit its churners were projected to bring does it reach, when the
//! warnings are ranked by `priority` (then `value_at_risk`) and when they
//! are ranked by severity alone?
//!
//! The money of a called customer who churns within the horizon of the
//! call is its `projected_value` at that warning (what a successful call
//! keeps; a loss-making customer counts as 0). A customer is called once:
//! the first time one of its warnings makes a month's top `k`. The total
//! is the ceiling no ranking can pass: every churner with a warning the
//! churn follows within the horizon, at the largest projected value among
//! those warnings (a customer passed over in one month can be called at a
//! later, closer warning, so "every churner at its first warning" is not a
//! ceiling).

use crate::domain::event::Severity;
use crate::domain::time::{month_of, Millis, MonthIndex, DAY_MS};
use crate::workload::backtest::{is_opening, millis};
use crate::workload::generate::Truth;
use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::Value;
use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, HashMap, HashSet};

/// One opened warning, as the ranking needs it.
#[derive(Debug, Clone)]
struct Opening<'a> {
    customer_id: &'a str,
    at: Millis,
    severity: Severity,
    priority: u64,
    value_at_risk: i64,
    projected_value: i64,
}

/// Minor units of a money field (major units, 2 decimals, on the wire).
fn minor(v: &Value, key: &str) -> Option<i64> {
    v[key].as_f64().map(|x| (x * 100.0).round() as i64)
}

impl<'a> Opening<'a> {
    /// `None` for an opening without the money fields (a rule that does
    /// not figure them, such as the first-alarm baseline).
    fn of(v: &'a Value) -> Result<Option<Self>> {
        let (Some(priority), Some(value_at_risk), Some(projected_value)) = (
            v["priority"].as_u64(),
            minor(v, "value_at_risk"),
            minor(v, "projected_value"),
        ) else {
            return Ok(None);
        };
        let severity: Severity = v["severity"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .context("churn warning without a severity")?;
        Ok(Some(Opening {
            customer_id: v["customer_id"]
                .as_str()
                .context("churn warning without customer_id")?,
            at: millis(v["at"].as_str().context("churn warning without at")?)?,
            severity,
            priority,
            value_at_risk,
            projected_value,
        }))
    }
}

/// What the calls of one ranking reached.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reached {
    /// Customers called.
    pub called: usize,
    /// Of them, customers who churned within the horizon of the call.
    pub churners: usize,
    /// Their projected value, currency units.
    pub money: f64,
    /// `money` / the money at stake of every warned churner.
    pub share: Option<f64>,
}

/// Both rankings at one call capacity.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StakeRow {
    /// Calls a month.
    pub calls_per_month: usize,
    /// Ranked by priority, then value at risk.
    pub by_priority: Reached,
    /// Ranked by severity, then first come first served.
    pub by_severity: Reached,
}

/// The money-at-stake figures of one rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StakeReport {
    /// Warned customers who churned within the horizon of one of their
    /// warnings.
    pub warned_churners: usize,
    /// The ceiling: the sum of each one's largest projected value among
    /// those warnings, currency units.
    pub money_at_stake: f64,
    /// One row per call capacity.
    pub rows: Vec<StakeRow>,
}

/// How one ranking orders two openings of a month: the first call first.
type Ranking = fn(&Opening, &Opening) -> Ordering;

fn by_priority(a: &Opening, b: &Opening) -> Ordering {
    (a.priority, Reverse(a.value_at_risk), a.at, a.customer_id).cmp(&(
        b.priority,
        Reverse(b.value_at_risk),
        b.at,
        b.customer_id,
    ))
}

fn by_severity(a: &Opening, b: &Opening) -> Ordering {
    (Reverse(a.severity), a.at, a.customer_id).cmp(&(Reverse(b.severity), b.at, b.customer_id))
}

/// The churn instants of the truth's churners.
fn churn_dates(truth: &[Truth]) -> Result<HashMap<&str, Millis>> {
    truth
        .iter()
        .filter_map(|t| Some((t.customer_id.as_str(), t.churn_date.as_deref()?)))
        .map(|(id, d)| Ok((id, millis(d)?)))
        .collect()
}

struct Scorer<'a> {
    months: BTreeMap<MonthIndex, Vec<Opening<'a>>>,
    churn: HashMap<&'a str, Millis>,
    horizon_ms: i64,
}

impl Scorer<'_> {
    /// Whether the customer of `o` churns within the horizon of it.
    fn churns_after(&self, o: &Opening) -> bool {
        self.churn
            .get(o.customer_id)
            .is_some_and(|c| o.at <= *c && *c <= o.at + self.horizon_ms)
    }

    /// The ceiling: churners a call could reach, and the most money each
    /// could bring.
    fn ceiling(&self) -> (usize, i64) {
        let mut best: HashMap<&str, i64> = HashMap::new();
        for o in self.months.values().flatten() {
            if self.churns_after(o) {
                let b = best.entry(o.customer_id).or_insert(0);
                *b = (*b).max(o.projected_value.max(0));
            }
        }
        (best.len(), best.values().sum())
    }

    /// Calls the top `calls` of each month under `rank`.
    fn reach(&self, calls: usize, rank: Ranking) -> (usize, usize, i64) {
        let mut called: HashSet<&str> = HashSet::new();
        let (mut churners, mut money) = (0, 0);
        for openings in self.months.values() {
            let mut ranked: Vec<&Opening> = openings.iter().collect();
            ranked.sort_by(|a, b| rank(a, b));
            let mut left = calls;
            for o in ranked {
                if left == 0 {
                    break;
                }
                if !called.insert(o.customer_id) {
                    continue;
                }
                left -= 1;
                if self.churns_after(o) {
                    churners += 1;
                    money += o.projected_value.max(0);
                }
            }
        }
        (called.len(), churners, money)
    }
}

/// The money-at-stake report of one rule's warnings (`None` when its
/// openings carry no money fields), at each capacity of `calls_per_month`.
pub fn money_at_stake<'a>(
    truth: &'a [Truth],
    warnings: impl IntoIterator<Item = &'a Value>,
    horizon_days: f64,
    calls_per_month: &[usize],
) -> Result<Option<StakeReport>> {
    let mut months: BTreeMap<MonthIndex, Vec<Opening>> = BTreeMap::new();
    for v in warnings.into_iter().filter(|v| is_opening(v)) {
        match Opening::of(v)? {
            Some(o) => months.entry(month_of(o.at)).or_default().push(o),
            None => return Ok(None),
        }
    }
    if months.is_empty() {
        return Ok(None);
    }
    let scorer = Scorer {
        months,
        churn: churn_dates(truth)?,
        horizon_ms: (horizon_days * DAY_MS as f64).round() as i64,
    };
    let (warned_churners, total) = scorer.ceiling();
    let reached = |calls: usize, rank: Ranking| {
        let (called, churners, money) = scorer.reach(calls, rank);
        Reached {
            called,
            churners,
            money: money as f64 / 100.0,
            share: (total > 0).then(|| money as f64 / total as f64),
        }
    };
    Ok(Some(StakeReport {
        warned_churners,
        money_at_stake: total as f64 / 100.0,
        rows: calls_per_month
            .iter()
            .map(|&k| StakeRow {
                calls_per_month: k,
                by_priority: reached(k, by_priority),
                by_severity: reached(k, by_severity),
            })
            .collect(),
    }))
}

impl StakeReport {
    /// The table `backtest` prints for rule `name`.
    pub fn render(&self, name: &str) -> String {
        let mut s = format!(
            "money at stake, {name}: {} warned churners, projected value {:.2}\n",
            self.warned_churners, self.money_at_stake
        );
        s.push_str(&format!(
            "{:>14} {:>26} {:>26}\n",
            "calls/month", "by priority", "by severity"
        ));
        let cell = |r: &Reached| {
            let share = r.share.map_or("-".into(), |x| format!("{:.1}%", 100.0 * x));
            format!("{:.2} ({share}, {})", r.money, r.churners)
        };
        for row in &self.rows {
            s.push_str(&format!(
                "{:>14} {:>26} {:>26}\n",
                row.calls_per_month,
                cell(&row.by_priority),
                cell(&row.by_severity)
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::generate::Archetype;
    use serde_json::json;

    fn opening(id: &str, at: &str, severity: &str, priority: u64, var: f64, pv: f64) -> Value {
        json!({
            "schema": crate::workload::backtest::WARNING_SCHEMA,
            "action": "opened",
            "customer_id": id,
            "at": at,
            "severity": severity,
            "priority": priority,
            "value_at_risk": var,
            "projected_value": pv,
        })
    }

    fn churner(id: &str, date: &str) -> Truth {
        Truth {
            customer_id: id.into(),
            archetype: Archetype::SpuriousChurner,
            churn_date: Some(date.into()),
            deterioration_from: None,
        }
    }

    #[test]
    fn the_priority_ranking_reaches_the_money_severity_misses() {
        // In March: a critical warning for a small churner, a medium one
        // for a big churner, a high one for a stayer.
        let warnings = vec![
            opening("small", "2025-03-01T00:00:00Z", "critical", 4, 10.0, 20.0),
            opening("big", "2025-03-05T00:00:00Z", "medium", 1, 3000.0, 5000.0),
            opening("stays", "2025-03-02T00:00:00Z", "high", 2, 900.0, 1000.0),
            // April: the small one again (already called when reached)
            opening("small", "2025-04-01T00:00:00Z", "critical", 4, 10.0, 20.0),
        ];
        let truth = vec![
            churner("small", "2025-05-01T00:00:00Z"),
            churner("big", "2025-06-01T00:00:00Z"),
        ];
        let r = money_at_stake(&truth, &warnings, 180.0, &[1, 2])
            .unwrap()
            .unwrap();
        assert_eq!(r.warned_churners, 2);
        assert_eq!(r.money_at_stake, 5020.0);
        // one call a month: priority calls big in March, small in April
        assert_eq!(r.rows[0].by_priority.money, 5020.0);
        assert_eq!(r.rows[0].by_priority.called, 2);
        // severity calls small in March, nobody new in April
        assert_eq!(r.rows[0].by_severity.money, 20.0);
        assert_eq!(r.rows[0].by_severity.called, 1);
        // two calls: severity reaches small and the stayer in March
        assert_eq!(r.rows[1].by_severity.churners, 1);
        assert_eq!(r.rows[1].by_priority.share, Some(1.0));
    }

    #[test]
    fn the_ceiling_counts_a_later_closer_warning_so_no_ranking_passes_it() {
        // January's warning is too early for the churn in October; the
        // August one is within the horizon, and worth more.
        let warnings = vec![
            opening("c", "2025-01-10T00:00:00Z", "high", 2, 100.0, 300.0),
            opening(
                "other",
                "2025-01-05T00:00:00Z",
                "critical",
                1,
                900.0,
                1000.0,
            ),
            opening("c", "2025-08-10T00:00:00Z", "high", 2, 200.0, 400.0),
        ];
        let truth = vec![churner("c", "2025-10-01T00:00:00Z")];
        let r = money_at_stake(&truth, &warnings, 180.0, &[1])
            .unwrap()
            .unwrap();
        assert_eq!((r.warned_churners, r.money_at_stake), (1, 400.0));
        // one call a month: "other" in January, c in August
        assert_eq!(r.rows[0].by_priority.money, 400.0);
        assert_eq!(r.rows[0].by_priority.share, Some(1.0));
    }

    #[test]
    fn a_churn_past_the_horizon_is_not_money_reached() {
        let warnings = vec![opening(
            "late",
            "2025-01-01T00:00:00Z",
            "high",
            1,
            100.0,
            200.0,
        )];
        let truth = vec![churner("late", "2025-12-01T00:00:00Z")];
        let r = money_at_stake(&truth, &warnings, 180.0, &[5])
            .unwrap()
            .unwrap();
        assert_eq!(r.warned_churners, 0);
        assert_eq!(r.rows[0].by_priority.share, None);
    }

    #[test]
    fn openings_without_money_make_no_report() {
        let w = vec![json!({
            "schema": crate::workload::backtest::WARNING_SCHEMA,
            "action": "opened",
            "customer_id": "a",
            "at": "2025-01-01T00:00:00Z",
        })];
        assert!(money_at_stake(&[], &w, 180.0, &[5]).unwrap().is_none());
    }
}
