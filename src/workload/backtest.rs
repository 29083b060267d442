//! `tierstream backtest`: how well the churn warnings of a policy would
//! have worked on a workload whose truth is known (from `generate
//! --truth`): of the customers who stopped buying, how many were warned
//! before they stopped and how many days ahead, and how many of the
//! warned customers really were churners.

use crate::workload::generate::{Archetype, Truth};
use anyhow::{Context, Result};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

/// The backtest figures.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BacktestReport {
    /// Customers in the truth file.
    pub customers: usize,
    /// Customers with a churn date.
    pub churners: usize,
    /// Churners with a warning opened before (or on) their churn date.
    pub warned_churners: usize,
    /// Customers with at least one warning opened.
    pub warned: usize,
    /// Days between the first warning and the churn date, per warned churner.
    pub lead_days: Vec<f64>,
    /// Per archetype: (customers, customers warned).
    pub by_archetype: BTreeMap<Archetype, (usize, usize)>,
}

impl BacktestReport {
    /// Share of churners warned in time.
    pub fn recall(&self) -> f64 {
        ratio(self.warned_churners, self.churners)
    }

    /// Share of warned customers who were churners warned in time.
    pub fn precision(&self) -> f64 {
        ratio(self.warned_churners, self.warned)
    }

    /// A quantile (0..1) of the lead times, in days.
    pub fn lead_quantile(&self, q: f64) -> Option<f64> {
        if self.lead_days.is_empty() {
            return None;
        }
        let mut v = self.lead_days.clone();
        v.sort_by(f64::total_cmp);
        let idx = ((v.len() - 1) as f64 * q).round() as usize;
        Some(v[idx])
    }

    /// The report as text (also pasted in the README).
    pub fn render(&self) -> String {
        let q = |x: f64| {
            self.lead_quantile(x)
                .map_or("-".into(), |d| format!("{d:.1}"))
        };
        let mut s = format!(
            "customers {}, churners {}\n\
             churners warned before they stopped: {} (recall {:.1}%)\n\
             lead time, days: median {}, p25 {}, p75 {}\n\
             customers warned: {}, of them churners warned in time: {} (precision {:.1}%)\n\
             by archetype (customers / warned):\n",
            self.customers,
            self.churners,
            self.warned_churners,
            100.0 * self.recall(),
            q(0.5),
            q(0.25),
            q(0.75),
            self.warned,
            self.warned_churners,
            100.0 * self.precision(),
        );
        for (a, (n, w)) in &self.by_archetype {
            let name = serde_json::to_value(a).expect("serializes");
            s.push_str(&format!(
                "  {:<12} {n:>8} / {w:>8} ({:.1}%)\n",
                name.as_str().unwrap_or_default(),
                100.0 * ratio(*w, *n)
            ));
        }
        s
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

fn millis(rfc3339: &str) -> Result<i64> {
    Ok(chrono::DateTime::parse_from_rfc3339(rfc3339)
        .with_context(|| format!("bad time {rfc3339}"))?
        .timestamp_millis())
}

/// Scores the churn warnings among `outputs` (output JSON documents) against `truth`.
pub fn backtest<'a>(
    truth: &[Truth],
    outputs: impl IntoIterator<Item = &'a Value>,
) -> Result<BacktestReport> {
    // first warning opened per customer
    let mut first_opened: HashMap<&str, i64> = HashMap::new();
    for v in outputs {
        if v["schema"] == "tierstream.churn_warning.v1" && v["action"] == "opened" {
            let id = v["customer_id"]
                .as_str()
                .context("output without customer_id")?;
            let at = millis(v["at"].as_str().context("output without at")?)?;
            first_opened
                .entry(id)
                .and_modify(|t| *t = (*t).min(at))
                .or_insert(at);
        }
    }
    let mut r = BacktestReport {
        customers: truth.len(),
        warned: first_opened.len(),
        ..BacktestReport::default()
    };
    for t in truth {
        let warned_at = first_opened.get(t.customer_id.as_str()).copied();
        let entry = r.by_archetype.entry(t.archetype).or_default();
        entry.0 += 1;
        entry.1 += usize::from(warned_at.is_some());
        if let Some(churn) = &t.churn_date {
            r.churners += 1;
            let churn = millis(churn)?;
            if let Some(at) = warned_at.filter(|at| *at <= churn) {
                r.warned_churners += 1;
                r.lead_days.push((churn - at) as f64 / 86_400_000.0);
            }
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn truth(id: &str, a: Archetype, churn: Option<&str>) -> Truth {
        Truth {
            customer_id: id.into(),
            archetype: a,
            churn_date: churn.map(str::to_owned),
            deterioration_from: None,
        }
    }

    fn opened(id: &str, at: &str) -> Value {
        json!({"schema": "tierstream.churn_warning.v1", "action": "opened", "customer_id": id, "at": at})
    }

    #[test]
    fn recall_precision_and_lead_time() {
        let t = vec![
            truth(
                "a",
                Archetype::SpuriousChurner,
                Some("2025-03-11T00:00:00Z"),
            ),
            truth(
                "b",
                Archetype::SpuriousChurner,
                Some("2025-03-11T00:00:00Z"),
            ),
            truth("c", Archetype::TrueLoyal, None),
            truth("d", Archetype::NaturalLapser, Some("2025-02-01T00:00:00Z")),
        ];
        let outs = [
            opened("a", "2025-03-01T00:00:00.000Z"), // 10 days ahead
            opened("a", "2025-03-05T00:00:00.000Z"), // later re-open: first counts
            opened("c", "2025-03-01T00:00:00.000Z"), // false alarm
            opened("d", "2025-02-10T00:00:00.000Z"), // after it stopped: too late
            json!({"schema": "tierstream.tier_changed.v1", "customer_id": "b"}),
        ];
        let r = backtest(&t, &outs).unwrap();
        assert_eq!(r.churners, 3);
        assert_eq!(r.warned_churners, 1);
        assert_eq!(r.warned, 3);
        assert_eq!(r.lead_days, vec![10.0]);
        assert!((r.recall() - 1.0 / 3.0).abs() < 1e-9);
        assert!((r.precision() - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!(r.by_archetype[&Archetype::SpuriousChurner], (2, 1));
        assert!(r.render().contains("recall 33.3%"));
    }
}
