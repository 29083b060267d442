//! `tierstream generate`: a deterministic synthetic workload that looks like
//! a real customer base — heavy-tailed profit (a few percent platinum, a
//! minority of loss-making lead customers), purchases, refunds, service
//! costs, complaints and surveys — for demos, tests and benchmarks.

use crate::domain::time::{format_rfc3339, Millis, DAY_MS};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, LogNormal, Pareto};
use serde_json::{json, Value};

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateSpec {
    /// Number of customers.
    pub customers: u64,
    /// Number of events in total.
    pub events: u64,
    /// Seed: the same seed gives the same workload, byte for byte.
    pub seed: u64,
    /// Event time of the first event.
    pub start: Millis,
    /// Days the events span.
    pub days: u32,
}

/// One generated event, with the input topic it belongs on.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// Event time (the output is sorted by it).
    pub ts: Millis,
    /// Customer id, also the Kafka key.
    pub customer_id: String,
    /// Event type, which picks the topic.
    pub kind: &'static str,
    /// The JSON document.
    pub json: Value,
}

/// How one synthetic customer behaves.
struct Persona {
    id: String,
    /// Relative activity: how many of the events are this customer's.
    activity: f64,
    /// Typical purchase amount.
    basket: f64,
    /// Margin rate of its purchases.
    margin_rate: f64,
    /// Probability that an event is a service cost, and its typical size.
    service_share: f64,
    service_cost: f64,
    /// Typical attitude, 1..5.
    mood: f64,
}

fn persona(rng: &mut ChaCha8Rng, index: u64) -> Persona {
    let activity: f64 = Pareto::new(1.0, 1.2).expect("valid").sample(rng);
    let basket: f64 = LogNormal::new(5.8, 1.2).expect("valid").sample(rng);
    let fake_big = rng.gen_bool(0.01);
    let costly = rng.gen_bool(0.12);
    Persona {
        id: format!("c{index:07}"),
        activity: activity.min(300.0),
        basket: if fake_big { basket * 20.0 } else { basket },
        margin_rate: if fake_big {
            rng.gen_range(0.0..0.015)
        } else {
            rng.gen_range(0.08..0.45)
        },
        service_share: if costly { 0.35 } else { 0.06 },
        service_cost: if costly { basket * 0.9 } else { basket * 0.05 },
        mood: rng.gen_range(1.5..5.0),
    }
}

fn money(x: f64) -> Value {
    json!((x * 100.0).round() / 100.0)
}

fn answer(rng: &mut ChaCha8Rng, mood: f64) -> i64 {
    (mood + rng.gen_range(-1.0..1.0)).round().clamp(1.0, 5.0) as i64
}

fn event_for(rng: &mut ChaCha8Rng, p: &Persona, n: u64, ts: Millis) -> (&'static str, Value) {
    let base = json!({
        "event_id": format!("{}-{n}", p.id),
        "customer_id": p.id,
        "ts": format_rfc3339(ts),
    });
    let mut doc = base.as_object().expect("object").clone();
    let roll: f64 = rng.gen();
    let kind = if roll < p.service_share {
        doc.insert("type".into(), json!("service"));
        let cost = p.service_cost * LogNormal::new(0.0, 0.5).expect("valid").sample(rng);
        doc.insert("cost".into(), money(cost));
        "service"
    } else if roll < p.service_share + 0.06 {
        doc.insert("type".into(), json!("service"));
        doc.insert("satisfaction".into(), json!(answer(rng, p.mood)));
        doc.insert("recommend".into(), json!(answer(rng, p.mood)));
        doc.insert("repurchase_intent".into(), json!(answer(rng, p.mood)));
        doc.insert("share_of_wallet".into(), money(rng.gen_range(0.05..0.9)));
        if p.mood < 2.5 && rng.gen_bool(0.3) {
            doc.insert("signals".into(), json!(["competitor_offer"]));
        }
        "service"
    } else if roll < p.service_share + 0.06 + 0.04 {
        doc.insert("type".into(), json!("complaint"));
        let severity = *["low", "medium", "high", "critical"]
            .choose_weighted(rng, |s| match *s {
                "low" => 5,
                "medium" => 3,
                "high" => 2,
                _ => 1,
            })
            .expect("weights are positive");
        doc.insert("severity".into(), json!(severity));
        "complaint"
    } else {
        doc.insert("type".into(), json!("purchase"));
        let amount = p.basket * LogNormal::new(0.0, 0.6).expect("valid").sample(rng);
        let refund = rng.gen_bool(0.04);
        doc.insert("amount".into(), money(amount));
        doc.insert("margin".into(), money(amount * p.margin_rate));
        if refund {
            doc.insert("refund".into(), json!(true));
        }
        doc.insert("currency".into(), json!("USD"));
        "purchase"
    };
    (kind, Value::Object(doc))
}

/// Generates the workload, sorted by event time (ties by customer id).
pub fn generate(spec: &GenerateSpec) -> Vec<Generated> {
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let personas: Vec<Persona> = (0..spec.customers).map(|i| persona(&mut rng, i)).collect();
    let total_activity: f64 = personas.iter().map(|p| p.activity).sum();
    let span = i64::from(spec.days.max(1)) * DAY_MS;
    let mut out = Vec::with_capacity(spec.events as usize);
    let mut assigned = 0u64;
    for (i, p) in personas.iter().enumerate() {
        let remaining_customers = personas.len() - i;
        let share = (spec.events as f64 * p.activity / total_activity).round() as u64;
        // Every customer gets at least one event while events last; the
        // last customer takes whatever rounding left over.
        let n = if remaining_customers == 1 {
            spec.events.saturating_sub(assigned)
        } else {
            share.max(1).min(spec.events.saturating_sub(assigned))
        };
        for k in 0..n {
            let ts = spec.start + rng.gen_range(0..span);
            let (kind, json) = event_for(&mut rng, p, k, ts);
            out.push(Generated {
                ts,
                customer_id: p.id.clone(),
                kind,
                json,
            });
        }
        assigned += n;
    }
    out.sort_by(|a, b| {
        a.ts.cmp(&b.ts)
            .then_with(|| a.customer_id.cmp(&b.customer_id))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(seed: u64) -> GenerateSpec {
        GenerateSpec {
            customers: 200,
            events: 3_000,
            seed,
            start: 1_735_689_600_000,
            days: 365,
        }
    }

    #[test]
    fn deterministic_for_a_seed_and_sorted() {
        let a = generate(&spec(7));
        let b = generate(&spec(7));
        assert_eq!(a, b);
        assert_ne!(a, generate(&spec(8)));
        assert_eq!(a.len(), 3_000);
        assert!(a.windows(2).all(|w| w[0].ts <= w[1].ts));
    }

    #[test]
    fn has_every_kind_of_event() {
        let a = generate(&spec(1));
        for kind in ["purchase", "complaint", "service"] {
            assert!(a.iter().any(|g| g.kind == kind), "{kind}");
        }
        assert!(a.iter().any(|g| g.json.get("refund").is_some()));
        assert!(a.iter().any(|g| g.json.get("cost").is_some()));
    }
}
