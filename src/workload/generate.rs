//! `tierstream generate`: a deterministic synthetic workload that looks like
//! a real customer base — heavy-tailed profit (a few percent platinum, a
//! minority of loss-making lead customers), purchases, refunds, service
//! costs, complaints, surveys and competitor signals — for demos, tests,
//! benchmarks and backtests.
//!
//! Every customer is planted with a labelled loyalty archetype (see
//! [`Archetype`] and `docs/workload.md`), and the ground truth (archetype,
//! the instant a churner stopped buying, the start of a spurious churner's
//! deterioration) can be written out, so `tierstream backtest` can measure
//! how early and how precisely churn warnings fire. The population is
//! deliberately noisy — loyal customers complain, stayers send competitor
//! signals for years, lapsers leave silently — because a warning judged on
//! a population where only churners ever complain proves nothing.
//!
//! A customer's events are an inhomogeneous process: each event channel
//! (purchase, service cost, survey, complaint, signal, and a churner's
//! surge) has a weight that may change over time, event times are drawn
//! with a density proportional to the weights' sum (by thinning, so every
//! customer still gets exactly its assigned count) and each event's kind in
//! proportion to the weights at its time.

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
    /// Multiplier of every noise rate: complaints of customers who do not
    /// churn, stayers' (and others') steady signals, random low answers.
    /// 1.0 is the standard mix; 2.0 doubles the evidence a churn warning
    /// must not be fooled by, so a backtest can show how it copes.
    pub noise: f64,
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
            start: Millis::from_ms(1_735_689_600_000),
            days: 365,
            activity: Activity::Standard,
            noise: 1.0,
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
///
/// The mix is meant to be hard in the ways a real base is: behaviour and
/// attitude disagree for whole groups (stayers who complain for years,
/// lapsers who leave without a word), so a churn warning is only good if
/// it reacts to a *change* in a customer's evidence, not to its level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Archetype {
    /// Buys often and likes us; now and then a complaint, rarely a
    /// competitor signal.
    TrueLoyal,
    /// Likes us but buys rarely.
    Latent,
    /// Buys often, does not like us, complains and sends competitor /
    /// price / contract signals at a steady rate for the whole span (habit
    /// or contract) — and never leaves.
    SpuriousStayer,
    /// Buys often, does not like us, and leaves at its churn date after a
    /// deterioration of weeks to months: a surge of complaints and signals,
    /// lower answers, longer purchase gaps, smaller baskets.
    SpuriousChurner,
    /// Average answers; its purchase gaps lengthen over months until it
    /// stops buying, with no attitudinal evidence at all.
    NaturalLapser,
    /// Neither buys much nor likes us.
    Disloyal,
}

impl Archetype {
    /// Population mix: (archetype, share).
    pub const MIX: [(Archetype, f64); 6] = [
        (Archetype::TrueLoyal, 0.28),
        (Archetype::Latent, 0.14),
        (Archetype::SpuriousStayer, 0.14),
        (Archetype::SpuriousChurner, 0.10),
        (Archetype::NaturalLapser, 0.14),
        (Archetype::Disloyal, 0.20),
    ];

    /// Relative number of events.
    fn activity(self) -> f64 {
        match self {
            Archetype::TrueLoyal | Archetype::SpuriousStayer | Archetype::SpuriousChurner => 1.6,
            Archetype::Latent | Archetype::Disloyal => 0.08,
            Archetype::NaturalLapser => 0.8,
        }
    }

    /// Whether it stops buying for good at a churn date.
    pub fn churns(self) -> bool {
        matches!(self, Archetype::SpuriousChurner | Archetype::NaturalLapser)
    }

    /// Share of events that are surveys / contacts with answers.
    fn survey_rate(self) -> f64 {
        match self {
            Archetype::Latent | Archetype::Disloyal => 0.25,
            _ => 0.07,
        }
    }

    /// Share of events that are complaints (any severity), at noise 1, and
    /// whether that rate is noise (every archetype but the spurious
    /// churner, whose baseline complaints are part of its story).
    fn complaint_rate(self) -> (f64, bool) {
        match self {
            Archetype::SpuriousChurner => (SPURIOUS_COMPLAINTS, false),
            Archetype::SpuriousStayer => (SPURIOUS_COMPLAINTS, true),
            Archetype::Disloyal => (0.02, true),
            _ => (0.003, true),
        }
    }

    /// Share of events that are contacts carrying a signal, at noise 1,
    /// and whether that rate is noise.
    fn signal_rate(self) -> (f64, bool) {
        match self {
            Archetype::SpuriousChurner => (SPURIOUS_SIGNALS, false),
            Archetype::SpuriousStayer | Archetype::Disloyal => (SPURIOUS_SIGNALS, true),
            Archetype::TrueLoyal | Archetype::NaturalLapser => (0.001, true),
            Archetype::Latent => (0.0, true),
        }
    }

    /// The signals of its steady (non-surge) contacts, with their weights:
    /// loyal customers and lapsers only ever mention a competitor's offer;
    /// a stayer is held by a contract and asks mostly about its end, which
    /// is the signal that keeps its attitude low without meaning it leaves.
    fn steady_signals(self) -> &'static [(&'static str, u32)] {
        match self {
            Archetype::TrueLoyal | Archetype::NaturalLapser => &[("competitor_offer", 1)],
            Archetype::SpuriousStayer => &[
                ("competitor_offer", 1),
                ("price_match_request", 1),
                ("contract_end_inquiry", 6),
            ],
            _ => &[
                ("competitor_offer", 1),
                ("price_match_request", 1),
                ("contract_end_inquiry", 1),
            ],
        }
    }
}

/// Complaint share of spurious customers' events (churners' baseline and
/// stayers alike, so the two differ by the surge only).
const SPURIOUS_COMPLAINTS: f64 = 0.012;
/// Signal-carrying contacts among spurious (and disloyal) customers' events.
const SPURIOUS_SIGNALS: f64 = 0.02;
/// Chance, at noise 1, that a survey's answers come out low — a bad
/// day, a bad agent —, and by how much below the customer's mood.
const LOW_ANSWER_RATE: f64 = 0.02;
const LOW_ANSWER_DROP: f64 = 1.5;
/// Complaint severities and their weights.
const SEVERITIES: [(&str, u32); 4] = [("low", 5), ("medium", 3), ("high", 2), ("critical", 1)];
/// The signals of a spurious churner's surge.
const SURGE_SIGNALS: [(&str, u32); 3] = [
    ("competitor_offer", 1),
    ("cancellation_inquiry", 1),
    ("price_match_request", 1),
];
/// A spurious churner's surge, as shares of its events at the start of
/// its deterioration and at its churn date: complaints of medium severity
/// or worse, and surge signals. Its own baseline of such evidence is about
/// 2% of its events (medium+ complaints and two of its three steady
/// signals), so the surge runs at 6 to 11 times it.
const SURGE_COMPLAINTS: (f64, f64) = (0.075, 0.15);
const SURGE_SIGNAL_SHARE: (f64, f64) = (0.025, 0.05);
/// Deterioration lead: log-normal, median in days, sigma, clamp in days.
/// Weeks to months, so no fixed look-back window catches every churner.
const LEAD_MEDIAN_DAYS: f64 = 75.0;
const LEAD_SIGMA: f64 = 0.6;
const LEAD_DAYS: (f64, f64) = (14.0, 240.0);
/// Drop of a churner's answers: at the start of its deterioration, and
/// at its churn date: from a content 3.9..4.5 to where stayers are.
const MOOD_DROP: (f64, f64) = (1.0, 1.8);
/// Purchase intensity at the churn date, relative to before: a spurious
/// churner's falls to a third over its deterioration, a lapser's to a
/// fifth over its whole active life.
const CHURNER_PURCHASES_AT_CHURN: f64 = 1.0 / 3.0;
const LAPSER_PURCHASES_AT_CHURN: f64 = 0.2;
/// A churner's basket at its churn date, relative to before.
const CHURNER_BASKET_AT_CHURN: f64 = 0.6;
/// Intensity of a churned customer's remaining (non-purchase) events,
/// relative to before: a few late service contacts or complaints.
const AFTER_CHURN: f64 = 0.02;

/// Ground truth for one synthetic customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Truth {
    /// The customer.
    pub customer_id: String,
    /// Its planted archetype.
    pub archetype: Archetype,
    /// When it stopped buying for good (churners only), RFC 3339: it has
    /// no purchase at or after this instant.
    pub churn_date: Option<String>,
    /// When a spurious churner's deterioration began, RFC 3339 (null for
    /// every other archetype): a warning before it is a lucky guess, the
    /// lead a backtest can hope for is measured from it.
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
    /// Share of events that are service costs, and their typical size.
    service_share: f64,
    service_cost: f64,
    /// Typical survey answer, 1..5.
    mood: f64,
    /// Range of its share-of-wallet answers.
    wallet: (f64, f64),
    /// Weights (relative to one another) of its event channels before any
    /// deterioration, noise applied.
    purchase: f64,
    survey: f64,
    complaint: f64,
    signal: f64,
    /// Chance that a survey's answers come out low.
    low_answers: f64,
    /// Span of event time.
    from: Millis,
    until: Millis,
    /// Churners: when it stops buying for good.
    churn: Option<Millis>,
    /// Spurious churners: when its deterioration starts.
    deterioration: Option<Millis>,
}

/// The weights of a customer's event channels at one instant; the events
/// of a customer are drawn with a density proportional to their sum, and
/// each event's kind in proportion to them.
#[derive(Debug, Clone, Copy)]
struct Rates {
    service: f64,
    survey: f64,
    signal: f64,
    complaint: f64,
    surge_signal: f64,
    surge_complaint: f64,
    purchase: f64,
}

impl Rates {
    fn total(&self) -> f64 {
        self.service
            + self.survey
            + self.signal
            + self.complaint
            + self.surge_signal
            + self.surge_complaint
            + self.purchase
    }
}

/// What an event drawn at an instant is.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Channel {
    Service,
    Survey,
    Signal,
    Complaint,
    SurgeSignal,
    SurgeComplaint,
    Purchase,
}

impl Persona {
    /// Progress (0..1) through a spurious churner's deterioration at `t`,
    /// None outside it.
    fn deteriorating(&self, t: Millis) -> Option<f64> {
        let (from, churn) = (self.deterioration?, self.churn?);
        (t >= from && t < churn).then(|| (t - from) as f64 / (churn - from).max(1) as f64)
    }

    fn churned(&self, t: Millis) -> bool {
        self.churn.is_some_and(|c| t >= c)
    }

    fn rates(&self, t: Millis) -> Rates {
        let mut r = Rates {
            service: self.service_share,
            survey: self.survey,
            signal: self.signal,
            complaint: self.complaint,
            surge_signal: 0.0,
            surge_complaint: 0.0,
            purchase: self.purchase,
        };
        if self.churned(t) {
            // Gone: no purchase ever again, other contact all but stops.
            r.purchase = 0.0;
            for w in [
                &mut r.service,
                &mut r.survey,
                &mut r.signal,
                &mut r.complaint,
            ] {
                *w *= AFTER_CHURN;
            }
        } else if let Some(q) = self.deteriorating(t) {
            let along = |(from, to): (f64, f64)| from + (to - from) * q;
            r.surge_complaint = along(SURGE_COMPLAINTS);
            r.surge_signal = along(SURGE_SIGNAL_SHARE);
            r.purchase *= 1.0 - (1.0 - CHURNER_PURCHASES_AT_CHURN) * q;
        } else if let (Archetype::NaturalLapser, Some(churn)) = (self.archetype, self.churn) {
            let q = (t - self.from) as f64 / (churn - self.from).max(1) as f64;
            r.purchase *= 1.0 - (1.0 - LAPSER_PURCHASES_AT_CHURN) * q;
        }
        r
    }

    /// An upper bound of the total rate over the span: the rates are
    /// linear in time within each phase (before, during deterioration or
    /// lapse, after the churn date), so the largest is at a phase's ends.
    fn max_rate(&self) -> f64 {
        let mut at = vec![self.from, self.until - 1];
        at.extend(self.deterioration);
        if let Some(c) = self.churn {
            at.extend([c - 1, c]);
        }
        at.into_iter()
            .filter(|t| (self.from..self.until).contains(t))
            .map(|t| self.rates(t).total())
            .fold(0.0, f64::max)
    }

    /// Draws an event time by thinning: uniform candidates kept with
    /// probability rate(t) / max_rate, so the customer's events follow its
    /// intensity and their count stays what it was assigned.
    fn draw_time(&self, rng: &mut ChaCha8Rng, max_rate: f64) -> (Millis, Rates) {
        loop {
            let t = Millis::from_ms(rng.gen_range(self.from.ms()..self.until.ms()));
            let r = self.rates(t);
            if rng.gen::<f64>() * max_rate < r.total() {
                return (t, r);
            }
        }
    }

    /// Survey answers' centre at `t`: lower during a deterioration.
    fn mood_at(&self, t: Millis) -> f64 {
        match self.deteriorating(t) {
            Some(q) => self.mood - (MOOD_DROP.0 + (MOOD_DROP.1 - MOOD_DROP.0) * q),
            None => self.mood,
        }
    }

    /// Basket size factor at `t`: smaller during a deterioration.
    fn basket_at(&self, t: Millis) -> f64 {
        match self.deteriorating(t) {
            Some(q) => 1.0 - (1.0 - CHURNER_BASKET_AT_CHURN) * q,
            None => 1.0,
        }
    }
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
    let from = spec.start;
    let until = spec.start + span;
    let mood = match archetype {
        Archetype::TrueLoyal => 4.6,
        Archetype::Latent => 4.3,
        Archetype::SpuriousStayer => rng.gen_range(2.0..2.6),
        // Churners were content before their deterioration: they become
        // spurious through it (their answers fall with the surge), which
        // is what a warning can see coming.
        Archetype::SpuriousChurner => rng.gen_range(3.9..4.5),
        Archetype::NaturalLapser => 3.4,
        Archetype::Disloyal => 2.0,
    };
    let (churn, deterioration) = match archetype {
        Archetype::SpuriousChurner => {
            let churn = from + (span as f64 * rng.gen_range(0.4..0.9)) as i64;
            let lead_days: f64 = LogNormal::new(LEAD_MEDIAN_DAYS.ln(), LEAD_SIGMA)
                .expect("valid")
                .sample(rng);
            let lead = (lead_days.clamp(LEAD_DAYS.0, LEAD_DAYS.1) * DAY_MS as f64) as i64;
            (Some(churn), Some((churn - lead).max(from)))
        }
        Archetype::NaturalLapser => (
            Some(from + (span as f64 * rng.gen_range(0.3..0.9)) as i64),
            None,
        ),
        _ => (None, None),
    };
    let service_share = if costly { 0.35 } else { 0.06 };
    let noise = |(rate, is_noise): (f64, bool)| if is_noise { rate * spec.noise } else { rate };
    let survey = archetype.survey_rate();
    // Purchases take what the other channels leave at noise 1; more noise
    // adds complaints and signals on top, so the rest keeps its rates.
    let purchase =
        1.0 - service_share - survey - archetype.complaint_rate().0 - archetype.signal_rate().0;
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
        service_share,
        service_cost: if costly { basket * 0.9 } else { basket * 0.05 },
        mood,
        wallet: match archetype {
            Archetype::TrueLoyal | Archetype::SpuriousStayer | Archetype::SpuriousChurner => {
                (0.4, 0.9)
            }
            _ => (0.05, 0.4),
        },
        purchase,
        survey,
        complaint: noise(archetype.complaint_rate()),
        signal: noise(archetype.signal_rate()),
        low_answers: (LOW_ANSWER_RATE * spec.noise).min(1.0),
        from,
        until,
        churn,
        deterioration,
    }
}

fn money(x: f64) -> Value {
    json!((x * 100.0).round() / 100.0)
}

fn answer(rng: &mut ChaCha8Rng, mood: f64) -> i64 {
    (mood + rng.gen_range(-1.0..1.0)).round().clamp(1.0, 5.0) as i64
}

fn service_answers(
    rng: &mut ChaCha8Rng,
    p: &Persona,
    ts: Millis,
    signal: Option<&str>,
    doc: &mut Map<String, Value>,
) {
    let mood = p.mood_at(ts)
        - if rng.gen_bool(p.low_answers) {
            LOW_ANSWER_DROP
        } else {
            0.0
        };
    doc.insert("satisfaction".into(), json!(answer(rng, mood)));
    doc.insert("recommend".into(), json!(answer(rng, mood)));
    doc.insert("repurchase_intent".into(), json!(answer(rng, mood)));
    let wallet = rng.gen_range(p.wallet.0..p.wallet.1);
    doc.insert("share_of_wallet".into(), money(wallet));
    if let Some(signal) = signal {
        doc.insert("signals".into(), json!([signal]));
    }
}

fn pick_channel(rng: &mut ChaCha8Rng, r: &Rates) -> Channel {
    let mut roll = rng.gen::<f64>() * r.total();
    for (weight, channel) in [
        (r.service, Channel::Service),
        (r.survey, Channel::Survey),
        (r.signal, Channel::Signal),
        (r.complaint, Channel::Complaint),
        (r.surge_signal, Channel::SurgeSignal),
        (r.surge_complaint, Channel::SurgeComplaint),
    ] {
        if roll < weight {
            return channel;
        }
        roll -= weight;
    }
    Channel::Purchase
}

fn event_for(
    rng: &mut ChaCha8Rng,
    p: &Persona,
    n: u64,
    ts: Millis,
    rates: &Rates,
) -> (&'static str, Value) {
    let mut doc = Map::new();
    doc.insert("event_id".into(), json!(format!("{}-{n}", p.id)));
    doc.insert("customer_id".into(), json!(p.id));
    doc.insert("ts".into(), json!(format_rfc3339(ts)));
    let kind = match pick_channel(rng, rates) {
        Channel::Service => {
            doc.insert("type".into(), json!("service"));
            let cost = p.service_cost * LogNormal::new(0.0, 0.5).expect("valid").sample(rng);
            doc.insert("cost".into(), money(cost));
            "service"
        }
        Channel::Survey => {
            doc.insert("type".into(), json!("service"));
            service_answers(rng, p, ts, None, &mut doc);
            "service"
        }
        c @ (Channel::Signal | Channel::SurgeSignal) => {
            doc.insert("type".into(), json!("service"));
            let signals = if c == Channel::Signal {
                p.archetype.steady_signals()
            } else {
                &SURGE_SIGNALS[..]
            };
            let signal = signals
                .choose_weighted(rng, |s| s.1)
                .expect("weights are positive")
                .0;
            service_answers(rng, p, ts, Some(signal), &mut doc);
            "service"
        }
        c @ (Channel::Complaint | Channel::SurgeComplaint) => {
            doc.insert("type".into(), json!("complaint"));
            // A surge is of complaints that matter: medium or worse.
            let severities = if c == Channel::Complaint {
                &SEVERITIES[..]
            } else {
                &SEVERITIES[1..]
            };
            let severity = severities
                .choose_weighted(rng, |s| s.1)
                .expect("weights are positive");
            doc.insert("severity".into(), json!(severity.0));
            "complaint"
        }
        Channel::Purchase => {
            doc.insert("type".into(), json!("purchase"));
            let amount =
                p.basket * p.basket_at(ts) * LogNormal::new(0.0, 0.6).expect("valid").sample(rng);
            doc.insert("amount".into(), money(amount));
            doc.insert("margin".into(), money(amount * p.margin_rate));
            if rng.gen_bool(0.04) {
                doc.insert("refund".into(), json!(true));
            }
            doc.insert("currency".into(), json!("USD"));
            "purchase"
        }
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
///
/// # Panics
///
/// When `spec.noise` is negative or not finite (the CLI refuses those).
pub fn generate(spec: &GenerateSpec) -> Workload {
    assert!(
        spec.noise.is_finite() && spec.noise >= 0.0,
        "noise must be finite and >= 0, got {}",
        spec.noise
    );
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
        let max_rate = p.max_rate();
        for k in 0..n {
            let (ts, rates) = p.draw_time(&mut rng, max_rate);
            let (kind, json) = event_for(&mut rng, p, k, ts, &rates);
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
            churn_date: p.churn.map(format_rfc3339),
            deterioration_from: p.deterioration.map(format_rfc3339),
        })
        .collect();
    Workload { events, truth }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::OnceLock;

    fn spec(seed: u64) -> GenerateSpec {
        GenerateSpec {
            customers: 400,
            events: 6_000,
            seed,
            start: Millis::from_ms(1_735_689_600_000),
            days: 365,
            ..GenerateSpec::default()
        }
    }

    /// A realistic base: 20k customers over two years (the documented
    /// example), shared by the statistical tests.
    fn big_spec(noise: f64) -> GenerateSpec {
        GenerateSpec {
            customers: 20_000,
            events: 600_000,
            seed: 7,
            start: Millis::from_ms(1_735_689_600_000),
            days: 730,
            noise,
            ..GenerateSpec::default()
        }
    }

    fn big() -> &'static Workload {
        static W: OnceLock<Workload> = OnceLock::new();
        W.get_or_init(|| generate(&big_spec(1.0)))
    }

    fn millis(s: &str) -> Millis {
        crate::workload::backtest::millis(s).unwrap()
    }

    fn by_customer(w: &Workload) -> HashMap<&str, Vec<&Generated>> {
        let mut m: HashMap<&str, Vec<&Generated>> = HashMap::new();
        for g in &w.events {
            m.entry(g.customer_id.as_str()).or_default().push(g);
        }
        m
    }

    /// Evidence a churn model should read as negative: a complaint of
    /// medium or worse, or a competitor / cancellation / price-match signal.
    fn negative(g: &Generated) -> bool {
        match g.kind {
            "complaint" => g.json["severity"] != "low",
            "service" => g.json.get("signals").is_some_and(|s| {
                s.as_array()
                    .unwrap()
                    .iter()
                    .any(|x| SURGE_SIGNALS.iter().any(|(s, _)| x == s))
            }),
            _ => false,
        }
    }

    const DAY: f64 = DAY_MS as f64;

    #[test]
    fn deterministic_for_a_seed_and_sorted() {
        let a = generate(&spec(7));
        let b = generate(&spec(7));
        assert_eq!(a.events, b.events);
        assert_eq!(a.truth, b.truth);
        assert_ne!(a.events, generate(&spec(8)).events);
        assert_eq!(a.events.len(), 6_000);
        assert!(a.events.windows(2).all(|w| {
            (w[0].ts, &w[0].customer_id, w[0].topic_rank(3))
                <= (w[1].ts, &w[1].customer_id, w[1].topic_rank(3))
        }));
        let noisy = GenerateSpec {
            noise: 2.0,
            ..spec(7)
        };
        assert_eq!(generate(&noisy).events, generate(&noisy).events);
        assert_ne!(generate(&noisy).events, a.events);
        assert_eq!(generate(&noisy).events.len(), 6_000);
    }

    #[test]
    fn has_every_kind_of_event_and_archetype() {
        let a = generate(&spec(1));
        for kind in ["purchase", "complaint", "service"] {
            assert!(a.events.iter().any(|g| g.kind == kind), "{kind}");
        }
        assert!(a.events.iter().any(|g| g.json.get("refund").is_some()));
        assert!(a.events.iter().any(|g| g.json.get("signals").is_some()));
        assert!(a.events.iter().any(|g| g.json.get("cost").is_some()));
        for (archetype, _) in Archetype::MIX {
            assert!(
                a.truth.iter().any(|t| t.archetype == archetype),
                "{archetype:?}"
            );
        }
    }

    #[test]
    fn archetype_shares_follow_the_mix() {
        let w = big();
        assert_eq!(w.truth.len(), 20_000);
        assert_eq!(w.events.len(), 600_000);
        for (archetype, share) in Archetype::MIX {
            let n = w.truth.iter().filter(|t| t.archetype == archetype).count();
            let got = n as f64 / 20_000.0;
            // binomial sd at 20k is under 0.35 percentage points
            assert!((got - share).abs() < 0.015, "{archetype:?}: {got}");
        }
        assert!((Archetype::MIX.iter().map(|m| m.1).sum::<f64>() - 1.0).abs() < 1e-9);
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
        let mut per_customer: HashMap<&str, u64> = Default::default();
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
        let w = big();
        let events = by_customer(w);
        let start = big_spec(1.0).start;
        let mut after_churn = 0;
        for t in &w.truth {
            assert_eq!(t.churn_date.is_some(), t.archetype.churns(), "{t:?}");
            assert_eq!(
                t.deterioration_from.is_some(),
                t.archetype == Archetype::SpuriousChurner,
                "{t:?}"
            );
            let Some(churn) = t.churn_date.as_deref().map(millis) else {
                continue;
            };
            let own = events
                .get(t.customer_id.as_str())
                .cloned()
                .unwrap_or_default();
            assert!(
                own.iter().all(|g| g.kind != "purchase" || g.ts < churn),
                "{} buys after its churn date",
                t.customer_id
            );
            after_churn += own.iter().filter(|g| g.ts >= churn).count();
            if let Some(from) = t.deterioration_from.as_deref().map(millis) {
                let lead = (churn - from) as f64 / DAY;
                assert!(from >= start && from <= churn, "{t:?}");
                assert!(lead <= 240.0 + 1e-6, "{t:?}");
                assert!(lead >= 14.0 - 1e-6 || from == start, "{t:?}");
            }
        }
        // a few late contacts still arrive, rarely
        assert!(after_churn > 0 && after_churn < w.events.len() / 100);
    }

    #[test]
    fn spurious_churners_deteriorate_before_they_leave() {
        let w = big();
        let events = by_customer(w);
        let start = big_spec(1.0).start;
        let (mut late_n, mut late_days, mut base_n, mut base_days) = (0.0, 0.0, 0.0, 0.0);
        let (mut sat_before, mut sat_during) = (Vec::new(), Vec::new());
        let mut leads = Vec::new();
        for t in w
            .truth
            .iter()
            .filter(|t| t.archetype == Archetype::SpuriousChurner)
        {
            let churn = millis(t.churn_date.as_deref().unwrap());
            let from = millis(t.deterioration_from.as_deref().unwrap());
            leads.push((churn - from) as f64 / DAY);
            let own = events
                .get(t.customer_id.as_str())
                .cloned()
                .unwrap_or_default();
            let window = (churn - 60 * DAY_MS).max(start);
            late_days += (churn - window) as f64 / DAY;
            late_n += own
                .iter()
                .filter(|g| g.ts >= window && g.ts < churn && negative(g))
                .count() as f64;
            base_days += (from - start) as f64 / DAY;
            base_n += own.iter().filter(|g| g.ts < from && negative(g)).count() as f64;
            for g in own.iter().filter(|g| g.ts < churn) {
                if let Some(s) = g.json.get("satisfaction") {
                    let s = s.as_f64().unwrap();
                    if g.ts < from {
                        sat_before.push(s);
                    } else {
                        sat_during.push(s);
                    }
                }
            }
        }
        let (late, base) = (late_n / late_days, base_n / base_days);
        assert!(late > 2.0 * base, "late {late}/day vs baseline {base}/day");
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let drop = mean(&sat_before) - mean(&sat_during);
        assert!((0.5..1.5).contains(&drop), "satisfaction drop {drop}");
        // leads vary from weeks to months
        leads.sort_by(f64::total_cmp);
        let median = leads[leads.len() / 2];
        assert!((55.0..95.0).contains(&median), "median lead {median}");
        assert!(leads[leads.len() / 10] < 45.0 && leads[leads.len() * 9 / 10] > 120.0);
    }

    #[test]
    fn stayers_send_negative_evidence_for_the_whole_span() {
        let w = big();
        let s = big_spec(1.0);
        let stayers: std::collections::HashSet<&str> = w
            .truth
            .iter()
            .filter(|t| t.archetype == Archetype::SpuriousStayer)
            .map(|t| t.customer_id.as_str())
            .collect();
        let span = i64::from(s.days) * DAY_MS;
        let mut quarters = [0u64; 4];
        for g in w
            .events
            .iter()
            .filter(|g| stayers.contains(g.customer_id.as_str()) && negative(g))
        {
            quarters[((g.ts - s.start) * 4 / span) as usize] += 1;
        }
        let total: u64 = quarters.iter().sum();
        assert!(total > 1_000, "{quarters:?}");
        for q in quarters {
            let share = q as f64 / total as f64;
            assert!((0.2..0.3).contains(&share), "{quarters:?}");
        }
        // and they keep buying to the end
        assert!(w.events.iter().any(|g| {
            stayers.contains(g.customer_id.as_str())
                && g.kind == "purchase"
                && g.ts >= s.start + span * 3 / 4
        }));
    }

    #[test]
    fn natural_lapsers_fade_without_attitude_evidence() {
        let w = big();
        let events = by_customer(w);
        let s = big_spec(1.0);
        let end = s.start + i64::from(s.days) * DAY_MS;
        // negative evidence per customer-day while active
        let rate = |archetype: Archetype| {
            let (mut n, mut days) = (0.0, 0.0);
            for t in w.truth.iter().filter(|t| t.archetype == archetype) {
                let until = t.churn_date.as_deref().map_or(end, millis);
                days += (until - s.start) as f64 / DAY;
                n += events.get(t.customer_id.as_str()).map_or(0, |own| {
                    own.iter().filter(|g| g.ts < until && negative(g)).count()
                }) as f64;
            }
            n / days
        };
        let (lapser, loyal) = (rate(Archetype::NaturalLapser), rate(Archetype::TrueLoyal));
        assert!(
            lapser <= 1.5 * loyal,
            "lapser {lapser}/day, loyal {loyal}/day"
        );
        let stayer = rate(Archetype::SpuriousStayer);
        assert!(
            lapser < 0.4 * stayer,
            "lapser {lapser}/day, stayer {stayer}/day"
        );
        // Purchase gaps lengthen. The mean gap of a stretch is its days per
        // purchase in it (pairs of consecutive purchases would be censored
        // at the churn date: a long gap starting late never ends).
        let (mut first, mut last, mut days) = (0.0, 0.0, 0.0);
        for t in w
            .truth
            .iter()
            .filter(|t| t.archetype == Archetype::NaturalLapser)
        {
            let churn = millis(t.churn_date.as_deref().unwrap());
            let third = (churn - s.start) / 3;
            days += third as f64 / DAY;
            for g in events.get(t.customer_id.as_str()).into_iter().flatten() {
                if g.kind == "purchase" && g.ts < s.start + third {
                    first += 1.0;
                } else if g.kind == "purchase" && g.ts >= churn - third {
                    last += 1.0;
                }
            }
        }
        let (first, last) = (days / first, days / last);
        assert!(last > 1.8 * first, "gaps: first third {first}, last {last}");
    }

    #[test]
    fn noise_scales_loyal_complaints() {
        let complaints = |w: &Workload| {
            let loyal: std::collections::HashSet<&str> = w
                .truth
                .iter()
                .filter(|t| t.archetype == Archetype::TrueLoyal)
                .map(|t| t.customer_id.as_str())
                .collect();
            w.events
                .iter()
                .filter(|g| g.kind == "complaint" && loyal.contains(g.customer_id.as_str()))
                .count() as f64
        };
        let (once, twice) = (complaints(big()), complaints(&generate(&big_spec(2.0))));
        assert!(once > 500.0, "{once}");
        let ratio = twice / once;
        assert!((1.75..2.25).contains(&ratio), "{twice} / {once}");
        let none = complaints(&generate(&big_spec(0.0)));
        assert_eq!(none, 0.0);
    }
}
