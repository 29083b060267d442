//! Churn-risk samples: every customer with an attitude, at every month
//! start of a labelled history, with the model's feature values and
//! whether the customer stopped buying within the risk horizon after.
//! `train` fits the model on them; `backtest` calibrates it with them.
//!
//! The features come from the engine itself, replayed over the history as
//! one task, so what is fitted is exactly what the engine computes when it
//! decides; a month start is a midnight whose ticks have run, the instant
//! the engine re-evaluates customers at anyway.

use super::backtest::millis;
use super::generate::Truth;
use crate::codec::input::{decode, DecodeRules};
use crate::domain::engine::{Engine, StreamClock};
use crate::domain::loyalty::Quadrant;
use crate::domain::map_profiles::MapProfiles;
use crate::domain::risk::FEATURES;
use crate::domain::time::{month_of, month_start, Millis};
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::io::BufRead;

/// One customer at one month start.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The month start.
    pub at: Millis,
    /// Feature values, in `Feature` order.
    pub x: [f64; FEATURES],
    /// Whether the customer was in the spurious quadrant (where a warning
    /// can open).
    pub spurious: bool,
    /// Whether it stopped buying in `(at, at + horizon]`.
    pub churned: bool,
    /// The customer, so a sample can be joined to the user's own data.
    pub customer_id: String,
    /// A hash of the customer id: a held-out split by customer keeps one
    /// customer's months on one side.
    pub customer_hash: u64,
}

/// The samples of one history, and what was left out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Samples {
    /// Labelled samples, in time then customer order.
    pub samples: Vec<Sample>,
    /// Lines the decoder rejected (they reach no customer, as in `replay`).
    pub rejected: u64,
    /// Samples of customers the truth does not name: no label.
    pub unlabelled: usize,
    /// Samples whose horizon runs past the end of the history: whether
    /// the customer churned in it is not known yet.
    pub censored: usize,
    /// Samples of customers that had already churned at the month start.
    pub gone: usize,
}

/// The churn instant of every labelled customer (`None`: never churned).
fn churn_dates(truth: &[Truth]) -> Result<HashMap<&str, Option<Millis>>> {
    truth
        .iter()
        .map(|t| {
            let churn = t
                .churn_date
                .as_deref()
                .map(|d| millis(d).with_context(|| format!("truth: bad churn_date {d:?}")))
                .transpose()?;
            Ok((t.customer_id.as_str(), churn))
        })
        .collect()
}

/// Replays `input` (JSONL events, in file order, as one task) and samples
/// every customer with an attitude at every month start, labelled from
/// `truth` over `horizon`. `now` is the wall clock for the decoder's
/// timestamp range check.
pub fn collect(
    engine: &Engine,
    rules: &DecodeRules,
    input: &mut dyn BufRead,
    truth: &[Truth],
    horizon: i64,
    now: Millis,
) -> Result<Samples> {
    let churn = churn_dates(truth)?;
    let mut store = MapProfiles::default();
    let mut clock = StreamClock::default();
    let mut out = Vec::new();
    let mut result = Samples::default();
    // (month start, unlabelled-yet samples with their churn instant)
    let mut pending: Vec<(Sample, Option<Millis>)> = Vec::new();
    let mut next_sample: Option<Millis> = None;
    let mut line = Vec::new();
    loop {
        line.clear();
        if input
            .read_until(b'\n', &mut line)
            .context("reading input")?
            == 0
        {
            break;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let record = line.strip_suffix(b"\n").unwrap_or(&line);
        let event = match decode(record, rules, now) {
            Ok(e) => e,
            Err(_) => {
                result.rejected += 1;
                continue;
            }
        };
        let first = *next_sample.get_or_insert_with(|| month_start(month_of(event.ts) + 1));
        let mut at = first;
        while at <= event.ts {
            let Ok(_) = engine.advance_clock(&mut clock, at, &mut store, &mut out);
            for (id, p) in &store.profiles {
                let Some(x) = engine.risk_features(p, at) else {
                    continue;
                };
                let Some(&churned_at) = churn.get(id.as_str()) else {
                    result.unlabelled += 1;
                    continue;
                };
                if churned_at.is_some_and(|c| c <= at) {
                    result.gone += 1;
                    continue;
                }
                let sample = Sample {
                    at,
                    x,
                    spurious: p.sides.map(|s| s.quadrant()) == Some(Quadrant::Spurious),
                    churned: false,
                    customer_id: id.clone(),
                    customer_hash: xxhash_rust::xxh3::xxh3_64(id.as_bytes()),
                };
                pending.push((sample, churned_at));
            }
            at = month_start(month_of(at) + 1);
        }
        next_sample = Some(at);
        let Ok(_) = engine.apply(&mut clock, &mut store, &event, &mut out);
        out.clear();
    }
    let end = clock.stream_time.unwrap_or(Millis::MIN);
    for (mut sample, churned_at) in pending {
        if sample.at.ms().saturating_add(horizon) > end.ms() {
            result.censored += 1;
            continue;
        }
        sample.churned = churned_at.is_some_and(|c| c <= sample.at + horizon);
        result.samples.push(sample);
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::domain::time::DAY_MS;
    use crate::workload::generate::Archetype;
    use std::io::Cursor;

    fn truth(id: &str, churn: Option<&str>) -> Truth {
        Truth {
            customer_id: id.into(),
            archetype: Archetype::TrueLoyal,
            churn_date: churn.map(str::to_owned),
            deterioration_from: None,
        }
    }

    fn purchase(id: &str, n: u32, day: &str) -> String {
        format!(
            r#"{{"event_id":"{id}-{n}","type":"purchase","customer_id":"{id}","ts":"{day}T10:00:00Z","amount":50.0,"margin":10.0}}"#
        )
    }

    fn survey(id: &str, n: u32, day: &str) -> String {
        format!(
            r#"{{"event_id":"{id}-s{n}","type":"service","customer_id":"{id}","ts":"{day}T11:00:00Z","satisfaction":2}}"#
        )
    }

    #[test]
    fn samples_customers_with_an_attitude_at_month_starts_and_labels_them() {
        let cfg = Config::from_figment(Config::figment(None).expect("defaults")).expect("valid");
        let engine = Engine::new(cfg.policy());
        let mut lines = Vec::new();
        for (m, day) in ["2025-01-10", "2025-02-10", "2025-03-10", "2025-04-10"]
            .iter()
            .enumerate()
        {
            let m = m as u32;
            lines.push(purchase("a", m, day));
            lines.push(purchase("b", m, day));
            lines.push(purchase("c", m, day));
            if m == 0 {
                lines.push(survey("a", 0, "2025-01-11"));
                lines.push(survey("c", 0, "2025-01-11"));
            }
        }
        lines.push("{not json".into());
        lines.push(purchase("a", 9, "2025-06-20"));
        let input = lines.join("\n");
        let truths = [truth("a", None), truth("b", None)];
        // c is not in the truth; b has no attitude; a churns never
        let horizon = 30 * DAY_MS;
        let s = collect(
            &engine,
            &cfg.decode_rules(),
            &mut Cursor::new(input),
            &truths,
            horizon,
            crate::pipeline::wall_clock(),
        )
        .expect("collects");
        assert_eq!(s.rejected, 1);
        let ats: Vec<String> = s
            .samples
            .iter()
            .map(|x| {
                chrono::DateTime::from_timestamp_millis(x.at.ms())
                    .expect("valid")
                    .format("%Y-%m-%d")
                    .to_string()
            })
            .collect();
        // a at Feb..May starts (June 1 + 30 days runs past June 20); c unlabelled
        assert_eq!(
            ats,
            ["2025-02-01", "2025-03-01", "2025-04-01", "2025-05-01"]
        );
        assert!(s.samples.iter().all(|x| !x.churned));
        assert_eq!(s.unlabelled, 5);
        assert_eq!(s.censored, 1);

        let churning = [truth("a", Some("2025-04-15T00:00:00Z")), truth("b", None)];
        let s = collect(
            &engine,
            &cfg.decode_rules(),
            &mut Cursor::new(lines.join("\n")),
            &churning,
            horizon,
            crate::pipeline::wall_clock(),
        )
        .expect("collects");
        let labels: Vec<bool> = s.samples.iter().map(|x| x.churned).collect();
        // Feb 1 and Mar 1 are more than 30 days before April 15; Apr 1 is not
        assert_eq!(labels, [false, false, true]);
        assert_eq!(s.gone, 2, "May 1 and June 1 come after the churn");
    }
}
