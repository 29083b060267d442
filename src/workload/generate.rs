//! `tierstream generate`: a deterministic synthetic workload that looks like
//! a real customer base — heavy-tailed profit (a few percent platinum, a
//! minority of loss-making lead customers), purchases, refunds, service
//! costs, complaints, surveys and competitor signals — for demos, tests,
//! benchmarks and backtests.
//!
//! Every customer is planted with a labelled loyalty archetype, and the
//! ground truth (archetype, and the day a churner stopped buying) can be
//! written out, so `tierstream backtest` can measure how early and how
//! precisely churn warnings fire.

use crate::domain::time::{format_rfc3339, Millis, DAY_MS};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, LogNormal, Pareto};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

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
    /// How activity is spread over the customers.
    pub activity: Activity,
}

/// How many of the events each customer gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Activity {
    /// Pareto-distributed activity, capped: the busiest customer has a few
    /// hundred times the events of the least active.
    #[default]
    Standard,
    /// Zipf-distributed activity (the customer of rank r gets a share
    /// proportional to r^-0.8), what a real customer base with a few
    /// resellers and businesses looks like: with 100k customers and 1M
    /// events the busiest has ~20k events and the top 100 a fifth of all.
    /// The worst case for per-event cost that grows with a history.
    HeavyTailed,
}

/// Zipf exponent of [`Activity::HeavyTailed`].
const HEAVY_TAIL_EXPONENT: f64 = 0.8;

impl Default for GenerateSpec {
    /// A small year of events, starting 2025-01-01.
    fn default() -> Self {
        GenerateSpec {
            customers: 1_000,
            events: 10_000,
            seed: 1,
            start: 1_735_689_600_000,
            days: 365,
            activity: Activity::Standard,
        }
    }
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

impl Generated {
    /// The input topic its type goes to, as a rank in `kafka.input_topics`
    /// (purchases, complaints, the rest), wrapped to the topics there are.
    /// It is also the generated order's last tie-break, so a replay of the
    /// file orders a customer's simultaneous events as event-time alignment
    /// through Kafka does (ties go by topic rank).
    pub fn topic_rank(&self, topics: usize) -> usize {
        let rank = match self.kind {
            "purchase" => 0,
            "complaint" => 1,
            _ => 2,
        };
        rank % topics.max(1)
    }
}

/// The loyalty archetype planted in a synthetic customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Archetype {
    /// Buys often and likes us.
    TrueLoyal,
    /// Likes us but buys rarely.
    Latent,
    /// Buys often but does not like us — and stops buying at its churn date.
    Spurious,
    /// Neither buys much nor likes us.
    Disloyal,
    /// Bought for a while early on, then went quiet.
    Dormant,
}

impl Archetype {
    /// Population mix: (archetype, share).
    const MIX: [(Archetype, f64); 5] = [
        (Archetype::TrueLoyal, 0.30),
        (Archetype::Latent, 0.15),
        (Archetype::Spurious, 0.20),
        (Archetype::Disloyal, 0.20),
        (Archetype::Dormant, 0.15),
    ];

    /// Relative number of events.
    fn activity(self) -> f64 {
        match self {
            Archetype::TrueLoyal | Archetype::Spurious => 1.6,
            Archetype::Latent | Archetype::Disloyal => 0.35,
            Archetype::Dormant => 0.5,
        }
    }

    /// Typical survey answer, 1..5.
    fn mood(self) -> f64 {
        match self {
            Archetype::TrueLoyal => 4.6,
            Archetype::Latent => 4.3,
            Archetype::Spurious | Archetype::Disloyal => 2.0,
            Archetype::Dormant => 3.4,
        }
    }

    /// Share of events that are complaints.
    fn complaint_rate(self) -> f64 {
        match self {
            Archetype::Spurious => 0.07,
            Archetype::Disloyal => 0.05,
            _ => 0.015,
        }
    }

    /// Share of events that are surveys / contacts with answers.
    fn survey_rate(self) -> f64 {
        match self {
            Archetype::Latent | Archetype::Disloyal => 0.25,
            _ => 0.07,
        }
    }
}

/// Ground truth for one synthetic customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Truth {
    /// The customer.
    pub customer_id: String,
    /// Its planted archetype.
    pub archetype: Archetype,
    /// When it stopped buying for good (churners only), RFC 3339.
    pub churn_date: Option<String>,
    /// When its behaviour started to deteriorate, RFC 3339 (absent in
    /// truth files written before the field existed).
    #[serde(default)]
    pub deterioration_from: Option<String>,
}

/// How one synthetic customer behaves.
struct Persona {
    id: String,
    archetype: Archetype,
    /// Relative activity: how many of the events are this customer's.
    activity: f64,
    /// Typical purchase amount.
    basket: f64,
    /// Margin rate of its purchases.
    margin_rate: f64,
    /// Probability that an event is a service cost, and its typical size.
    service_share: f64,
    service_cost: f64,
    /// Active period; a churner's ends at its churn date.
    from: Millis,
    until: Millis,
    churns: bool,
}

fn pick_archetype(rng: &mut ChaCha8Rng) -> Archetype {
    Archetype::MIX
        .choose_weighted(rng, |(_, share)| *share)
        .expect("shares are positive")
        .0
}

fn persona(rng: &mut ChaCha8Rng, index: u64, spec: &GenerateSpec) -> Persona {
    let archetype = pick_archetype(rng);
    let activity: f64 = Pareto::new(1.0, 1.2).expect("valid").sample(rng);
    let basket: f64 = LogNormal::new(5.8, 1.2).expect("valid").sample(rng);
    let fake_big = rng.gen_bool(0.01);
    let costly = rng.gen_bool(0.12);
    let span = i64::from(spec.days.max(1)) * DAY_MS;
    let (until, churns) = match archetype {
        Archetype::Spurious => (
            spec.start + (span as f64 * rng.gen_range(0.45..0.9)) as i64,
            true,
        ),
        Archetype::Dormant => (
            spec.start + (span as f64 * rng.gen_range(0.1..0.3)) as i64,
            true,
        ),
        _ => (spec.start + span, false),
    };
    Persona {
        id: format!("c{index:07}"),
        archetype,
        activity: activity.min(300.0) * archetype.activity(),
        basket: if fake_big { basket * 20.0 } else { basket },
        margin_rate: if fake_big {
            rng.gen_range(0.0..0.015)
        } else {
            rng.gen_range(0.08..0.45)
        },
        service_share: if costly { 0.35 } else { 0.06 },
        service_cost: if costly { basket * 0.9 } else { basket * 0.05 },
        from: spec.start,
        until,
        churns,
    }
}

fn money(x: f64) -> Value {
    json!((x * 100.0).round() / 100.0)
}

fn answer(rng: &mut ChaCha8Rng, mood: f64) -> i64 {
    (mood + rng.gen_range(-1.0..1.0)).round().clamp(1.0, 5.0) as i64
}

fn service_answers(rng: &mut ChaCha8Rng, p: &Persona, doc: &mut Map<String, Value>) {
    let mood = p.archetype.mood();
    doc.insert("satisfaction".into(), json!(answer(rng, mood)));
    doc.insert("recommend".into(), json!(answer(rng, mood)));
    doc.insert("repurchase_intent".into(), json!(answer(rng, mood)));
    let wallet = match p.archetype {
        Archetype::TrueLoyal | Archetype::Spurious => rng.gen_range(0.4..0.9),
        _ => rng.gen_range(0.05..0.4),
    };
    doc.insert("share_of_wallet".into(), money(wallet));
    if mood < 2.5 && rng.gen_bool(0.3) {
        let signal = [
            "competitor_offer",
            "price_match_request",
            "contract_end_inquiry",
        ]
        .choose(rng)
        .expect("non-empty");
        doc.insert("signals".into(), json!([signal]));
    }
}

fn event_for(rng: &mut ChaCha8Rng, p: &Persona, n: u64, ts: Millis) -> (&'static str, Value) {
    let mut doc = Map::new();
    doc.insert("event_id".into(), json!(format!("{}-{n}", p.id)));
    doc.insert("customer_id".into(), json!(p.id));
    doc.insert("ts".into(), json!(format_rfc3339(ts)));
    let a = p.archetype;
    let roll: f64 = rng.gen();
    let kind = if roll < p.service_share {
        doc.insert("type".into(), json!("service"));
        let cost = p.service_cost * LogNormal::new(0.0, 0.5).expect("valid").sample(rng);
        doc.insert("cost".into(), money(cost));
        "service"
    } else if roll < p.service_share + a.survey_rate() {
        doc.insert("type".into(), json!("service"));
        service_answers(rng, p, &mut doc);
        "service"
    } else if roll < p.service_share + a.survey_rate() + a.complaint_rate() {
        doc.insert("type".into(), json!("complaint"));
        let severity = *[("low", 5), ("medium", 3), ("high", 2), ("critical", 1)]
            .choose_weighted(rng, |s| s.1)
            .expect("weights are positive");
        doc.insert("severity".into(), json!(severity.0));
        "complaint"
    } else {
        doc.insert("type".into(), json!("purchase"));
        let amount = p.basket * LogNormal::new(0.0, 0.6).expect("valid").sample(rng);
        doc.insert("amount".into(), money(amount));
        doc.insert("margin".into(), money(amount * p.margin_rate));
        if rng.gen_bool(0.04) {
            doc.insert("refund".into(), json!(true));
        }
        doc.insert("currency".into(), json!("USD"));
        "purchase"
    };
    (kind, Value::Object(doc))
}

/// The workload and its ground truth.
pub struct Workload {
    /// Events sorted by event time (ties by customer id).
    pub events: Vec<Generated>,
    /// One record per customer.
    pub truth: Vec<Truth>,
}

/// Generates the workload.
pub fn generate(spec: &GenerateSpec) -> Workload {
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let mut personas: Vec<Persona> = (0..spec.customers)
        .map(|i| persona(&mut rng, i, spec))
        .collect();
    if spec.activity == Activity::HeavyTailed {
        // Ranks from a stream of their own, so everything else about the
        // customers is what the standard profile gives for the seed.
        let mut ranks: Vec<u64> = (1..=spec.customers).collect();
        ranks.shuffle(&mut ChaCha8Rng::seed_from_u64(spec.seed ^ 0x5a1f));
        for (p, rank) in personas.iter_mut().zip(ranks) {
            p.activity = (rank as f64).powf(-HEAVY_TAIL_EXPONENT) * p.archetype.activity();
        }
    }
    let total_activity: f64 = personas.iter().map(|p| p.activity).sum();
    let mut events = Vec::with_capacity(spec.events as usize);
    let mut assigned = 0u64;
    for (i, p) in personas.iter().enumerate() {
        let share = (spec.events as f64 * p.activity / total_activity).round() as u64;
        // Every customer gets at least one event while events last; the
        // last customer takes whatever rounding left over.
        let left = spec.events.saturating_sub(assigned);
        let n = if i + 1 == personas.len() {
            left
        } else {
            share.max(1).min(left)
        };
        for k in 0..n {
            let ts = rng.gen_range(p.from..p.until.max(p.from + 1));
            let (kind, json) = event_for(&mut rng, p, k, ts);
            events.push(Generated {
                ts,
                customer_id: p.id.clone(),
                kind,
                json,
            });
        }
        assigned += n;
    }
    events.sort_by(|a, b| {
        a.ts.cmp(&b.ts)
            .then_with(|| a.customer_id.cmp(&b.customer_id))
            .then_with(|| a.topic_rank(3).cmp(&b.topic_rank(3)))
    });
    let truth = personas
        .iter()
        .map(|p| Truth {
            customer_id: p.id.clone(),
            archetype: p.archetype,
            churn_date: p.churns.then(|| format_rfc3339(p.until)),
            deterioration_from: None,
        })
        .collect();
    Workload { events, truth }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(seed: u64) -> GenerateSpec {
        GenerateSpec {
            customers: 400,
            events: 6_000,
            seed,
            start: 1_735_689_600_000,
            days: 365,
            ..GenerateSpec::default()
        }
    }

    #[test]
    fn deterministic_for_a_seed_and_sorted() {
        let a = generate(&spec(7));
        let b = generate(&spec(7));
        assert_eq!(a.events, b.events);
        assert_eq!(a.truth, b.truth);
        assert_ne!(a.events, generate(&spec(8)).events);
        assert_eq!(a.events.len(), 6_000);
        assert!(a.events.windows(2).all(|w| w[0].ts <= w[1].ts));
    }

    #[test]
    fn has_every_kind_of_event_and_archetype() {
        let a = generate(&spec(1));
        for kind in ["purchase", "complaint", "service"] {
            assert!(a.events.iter().any(|g| g.kind == kind), "{kind}");
        }
        assert!(a.events.iter().any(|g| g.json.get("refund").is_some()));
        assert!(a.events.iter().any(|g| g.json.get("signals").is_some()));
        for (archetype, _) in Archetype::MIX {
            assert!(
                a.truth.iter().any(|t| t.archetype == archetype),
                "{archetype:?}"
            );
        }
    }

    #[test]
    fn heavy_tailed_activity_concentrates_events_on_a_few_customers() {
        let spec = GenerateSpec {
            customers: 10_000,
            events: 100_000,
            activity: Activity::HeavyTailed,
            ..GenerateSpec::default()
        };
        let a = generate(&spec);
        let mut per_customer: std::collections::HashMap<&str, u64> = Default::default();
        for g in &a.events {
            *per_customer.entry(&g.customer_id).or_default() += 1;
        }
        let mut counts: Vec<u64> = per_customer.into_values().collect();
        counts.sort_unstable_by(|x, y| y.cmp(x));
        let top10: u64 = counts[..10].iter().sum();
        // Zipf(0.8) over 10k customers: the busiest ~3%, the top 10 ~15%
        // (archetype activity moves it a little); the standard profile's
        // busiest has well under 1%.
        assert!(counts[0] > 1_000, "busiest has {}", counts[0]);
        assert!(top10 > 10_000, "top 10 have {top10}");
        assert_eq!(counts.iter().sum::<u64>(), 100_000);
        assert_eq!(generate(&spec).events, a.events, "deterministic");
    }

    #[test]
    fn churners_stop_buying_at_their_churn_date() {
        let a = generate(&spec(3));
        for t in a.truth.iter().filter(|t| t.churn_date.is_some()) {
            let churn = chrono::DateTime::parse_from_rfc3339(t.churn_date.as_deref().unwrap())
                .unwrap()
                .timestamp_millis();
            assert!(a
                .events
                .iter()
                .filter(|g| g.customer_id == t.customer_id)
                .all(|g| g.ts < churn));
        }
        let non_churners = a.truth.iter().filter(|t| t.churn_date.is_none());
        assert!(non_churners
            .clone()
            .all(|t| !matches!(t.archetype, Archetype::Spurious | Archetype::Dormant)));
    }
}
