//! Loyalty = behaviour x attitude (SPEC §4): the evidence a customer's
//! events leave behind, the two scores computed from it at any instant, and
//! the quadrant with its hysteresis.
//!
//! Scores are pure functions of (evidence, instant). Between two month
//! starts the behaviour score can only fall and the attitude score can only
//! rise (recency decays, penalties decay), which is what lets the engine
//! find the next instant anything can change without visiting every
//! customer every day.

use super::event::{Complaint, Service, Severity, Signal, Signals};
use super::penalties::{penalties, PenaltyCache};
use super::profile::vec_bytes;
use super::risk::RiskEvidence;
use super::time::{month_start, Millis, DAY_MS};
use super::value::{window_start, WindowTotals};
use serde::{Deserialize, Serialize};

/// Behaviour score settings.
#[derive(Debug, Clone, PartialEq)]
pub struct BehaviourPolicy {
    /// Purchases in 12 months that count as fully frequent.
    pub repeat_target: f64,
    /// Share of wallet that counts as fully loyal (0.5).
    pub full_share_of_wallet: f64,
    /// Recency reaches 0 at this many expected gaps.
    pub dormancy_factor: f64,
    /// Expected gap when a customer has fewer than 3 purchases.
    pub default_gap_days: f64,
}

/// Attitude score settings.
#[derive(Debug, Clone, PartialEq)]
pub struct AttitudePolicy {
    /// Weight of `recommend` in the survey formula.
    pub w_recommend: f64,
    /// Weight of `repurchase_intent`.
    pub w_repurchase: f64,
    /// The source formula's constant k.
    pub k: f64,
    /// Top of the answer scale.
    pub scale_max: f64,
    /// Survey part when there is no survey and no satisfaction.
    pub neutral_prior: f64,
    /// Half-life of every penalty, in days.
    pub penalty_half_life_days: f64,
    /// Penalty points per complaint severity (low, medium, high, critical).
    pub complaint_penalty: [f64; 4],
    /// Factor applied to a resolved complaint's penalty.
    pub resolved_factor: f64,
    /// Penalty points per known signal.
    pub signal_penalty: f64,
    /// How long a high/critical complaint counts as open, in days.
    pub open_complaint_days: f64,
}

/// Quadrant settings.
#[derive(Debug, Clone, PartialEq)]
pub struct QuadrantPolicy {
    /// A score is high at or above this.
    pub threshold: f64,
    /// To change side a score must cross the threshold by this much.
    pub hysteresis: f64,
}

/// A dated answer, ordered by time then event id so "latest" does not
/// depend on arrival order.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Dated<T> {
    /// Event time of the answer.
    pub ts: Millis,
    /// Hash of the event id, to break ties deterministically.
    pub tie: u64,
    /// The answer.
    pub value: T,
}

/// An answer slot, boxed: most customers never answer a survey, and the
/// seven slots a profile has (latest survey, satisfaction and share of
/// wallet, two earlier surveys and satisfactions) took 272 of its 688
/// bytes inline, 56 boxed. A profile cache of the same size holds more
/// customers (a 10M-event replay over 1M customers ran 13% faster). A
/// box serializes as what it holds, so the stored format is unchanged.
pub type Answer<T> = Option<Box<Dated<T>>>;

/// Bytes an answer slot holds on the heap.
pub fn answer_bytes<T>(slot: &Answer<T>) -> usize {
    slot.as_ref().map_or(0, |_| size_of::<Dated<T>>())
}

impl<T> Dated<T> {
    fn newer_than(&self, other: Option<&Dated<T>>) -> bool {
        other.is_none_or(|o| (self.ts, self.tie) > (o.ts, o.tie))
    }
}

/// Keeps the newest answer in `latest` and the ones before it in `older`
/// (second newest first), whatever order the answers arrive in: the answer
/// slides in at its place and the oldest falls off the end. Answers move
/// through the boxes already there, so a full chain takes a new answer
/// without allocating (a box per answer was most of a service event's
/// allocations).
fn newest_first<T>(latest: &mut Answer<T>, older: &mut [Answer<T>], d: Dated<T>) {
    let mut carry = d;
    for slot in std::iter::once(latest).chain(older.iter_mut()) {
        if !carry.newer_than(slot.as_deref()) {
            continue;
        }
        match slot {
            Some(held) => carry = std::mem::replace(&mut **held, carry),
            None => {
                *slot = Some(Box::new(carry));
                return;
            }
        }
    }
}

/// A survey with recommend and/or repurchase intent (1..5).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Survey {
    /// 1..5
    pub recommend: Option<f64>,
    /// 1..5
    pub repurchase_intent: Option<f64>,
}

/// A complaint as remembered for penalties and escalation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComplaintRecord {
    /// When it was made.
    pub ts: Millis,
    /// Hash of its event id (what a resolution's `ref` names).
    pub id: u64,
    /// Severity.
    pub severity: Severity,
    /// Reported as already resolved.
    pub resolved: bool,
}

/// Known signals from one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalRecord {
    /// When they were seen.
    pub ts: Millis,
    /// Which.
    pub signals: Vec<Signal>,
}

/// Everything attitudinal and behavioural a customer's events left behind,
/// beyond the value buckets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// Set by the first attitudinal evidence and never cleared: from then
    /// on the customer has an attitude (SPEC §4).
    pub any: bool,
    /// Latest survey with recommend/nps or repurchase intent.
    pub survey: Answer<Survey>,
    /// Latest satisfaction answer.
    pub satisfaction: Answer<f64>,
    /// Latest share-of-wallet answer.
    pub share_of_wallet: Answer<f64>,
    /// Complaints in the window.
    pub complaints: Vec<ComplaintRecord>,
    /// Event-id hashes of complaints named by a resolution (`ref`).
    pub resolved_refs: Vec<(Millis, u64)>,
    /// Known signals in the window.
    pub signals: Vec<SignalRecord>,
    /// What the churn-risk features need beyond the above.
    pub risk: RiskEvidence,
    /// Per-month penalty sums derived from the records (not stored).
    #[serde(skip)]
    pub(super) penalty_cache: PenaltyCache,
}

impl Evidence {
    /// Bytes held on the heap (see `Profile::heap_bytes`).
    pub fn heap_bytes(&self) -> usize {
        vec_bytes(&self.complaints)
            + vec_bytes(&self.resolved_refs)
            + vec_bytes(&self.signals)
            + self
                .signals
                .iter()
                .map(|s| vec_bytes(&s.signals))
                .sum::<usize>()
            + answer_bytes(&self.survey)
            + answer_bytes(&self.satisfaction)
            + answer_bytes(&self.share_of_wallet)
            + self.risk.heap_bytes()
            + self.penalty_cache.heap_bytes()
    }

    /// The earliest instant at or after `from` of the evidence the scores
    /// read besides the value buckets (the latest answers, complaints and
    /// signals): where a moving window next drops some of it.
    pub fn first_scored_from(&self, from: Millis) -> Option<Millis> {
        let answers = [
            self.survey.as_deref().map(|d| d.ts),
            self.satisfaction.as_deref().map(|d| d.ts),
            self.share_of_wallet.as_deref().map(|d| d.ts),
        ];
        let complaint = self.complaints[self.complaints.partition_point(|c| c.ts < from)..]
            .first()
            .map(|c| c.ts);
        let signal = self.signals[self.signals.partition_point(|s| s.ts < from)..]
            .first()
            .map(|s| s.ts);
        answers
            .into_iter()
            .chain([complaint, signal])
            .flatten()
            .filter(|&ts| ts >= from)
            .min()
    }

    /// Records a service event's answers and signals.
    pub fn record_service(&mut self, ts: Millis, tie: u64, s: &Service) {
        if s.recommend.is_some() || s.repurchase_intent.is_some() {
            let d = Dated {
                ts,
                tie,
                value: Survey {
                    recommend: s.recommend,
                    repurchase_intent: s.repurchase_intent,
                },
            };
            newest_first(&mut self.survey, &mut self.risk.prior_surveys, d);
        }
        if let Some(v) = s.satisfaction {
            let d = Dated { ts, tie, value: v };
            newest_first(
                &mut self.satisfaction,
                &mut self.risk.prior_satisfactions,
                d,
            );
        }
        self.risk.record_service(ts, s);
        if let Some(v) = s.share_of_wallet {
            let d = Dated { ts, tie, value: v };
            newest_first(&mut self.share_of_wallet, &mut [], d);
        }
        if !s.signals.is_empty() {
            // Kept in time order (after any of the same instant, as a
            // stable sort of the pushed record would put it): the window
            // is then a range found by bisection.
            let at = self.signals.partition_point(|r| r.ts <= ts);
            self.signals.insert(
                at,
                SignalRecord {
                    ts,
                    signals: s.signals.clone(),
                },
            );
            self.penalty_cache.record_added(ts);
        }
        if s.satisfaction.is_some()
            || s.recommend.is_some()
            || s.repurchase_intent.is_some()
            || !s.signals.is_empty()
        {
            self.any = true;
        }
    }

    /// Records a complaint, or a resolution of an earlier one.
    pub fn record_complaint(
        &mut self,
        ts: Millis,
        id: u64,
        c: &Complaint,
        hash: impl Fn(&str) -> u64,
    ) {
        self.any = true;
        self.risk.record_complaint(ts, c);
        match (&c.reference, c.resolved) {
            (Some(r), true) => {
                let target = hash(r);
                if !self.resolved_refs.iter().any(|(_, h)| *h == target) {
                    self.resolved_refs.push((ts, target));
                    self.penalty_cache.resolutions_changed();
                }
            }
            _ => {
                let at = self
                    .complaints
                    .partition_point(|r| (r.ts, r.id) <= (ts, id));
                self.complaints.insert(
                    at,
                    ComplaintRecord {
                        ts,
                        id,
                        severity: c.severity,
                        resolved: c.resolved,
                    },
                );
                self.penalty_cache.record_added(ts);
            }
        }
    }

    /// Drops evidence older than `first_kept` (a month no evaluation can
    /// look at again). Called per event, so it only bisects until a month
    /// actually leaves.
    pub fn prune_before(&mut self, first_kept: i32) {
        let from = month_start(first_kept);
        let complaints = self.complaints.partition_point(|c| c.ts < from);
        let signals = self.signals.partition_point(|s| s.ts < from);
        if complaints > 0 || signals > 0 {
            self.complaints.drain(..complaints);
            self.signals.drain(..signals);
            self.penalty_cache.pruned_before(from);
        }
        if self.resolved_refs.iter().any(|(ts, _)| *ts < from) {
            self.resolved_refs.retain(|(ts, _)| *ts >= from);
            self.penalty_cache.resolutions_changed();
        }
    }
}

/// Where the survey part of the attitude came from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SurveySource {
    /// A recommend / repurchase survey.
    Survey(Survey),
    /// A satisfaction answer.
    Satisfaction(f64),
    /// Neither: the neutral prior.
    Prior,
}

/// The scores and the facts behind them at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    /// 0..100
    pub behaviour: f64,
    /// 0..100
    pub attitude: f64,
    /// Frequency part.
    pub frequency: f64,
    /// Share-of-wallet part.
    pub wallet: f64,
    /// Recency factor.
    pub recency: f64,
    /// Expected purchase gap, days.
    pub expected_gap_days: f64,
    /// Days since the last purchase in the window, if any.
    pub days_since_purchase: Option<f64>,
    /// Survey part of the attitude.
    pub survey_part: f64,
    /// Its source.
    pub survey_source: SurveySource,
    /// Latest satisfaction in the window.
    pub satisfaction: Option<f64>,
    /// Decayed complaint penalty.
    pub complaint_penalty: f64,
    /// Complaints in the window up to the instant.
    pub complaints: u32,
    /// Decayed signal penalty.
    pub signal_penalty: f64,
    /// Known signals in the window up to the instant.
    pub signals: Signals,
    /// Past the expected purchase gap.
    pub past_gap: bool,
    /// A high/critical complaint in the last 90 days, unresolved.
    pub open_complaint: bool,
}

/// The survey part of a satisfaction answer (1..5) when no survey counts:
/// its place on the scale, 0..100.
pub fn satisfaction_score(v: f64) -> f64 {
    (v - 1.0) / 4.0 * 100.0
}

/// The survey score of the source formula: `raw / raw_max x 100`, where
/// `raw = (recommend x w_r + repurchase x w_p) x k x 100 / scale_max` over
/// the answers present and `raw_max` is the same with every present answer
/// at `scale_max`.
pub fn survey_score(p: &AttitudePolicy, s: &Survey) -> f64 {
    let (raw, raw_max) = survey_raw(p, s);
    if raw_max > 0.0 {
        raw / raw_max * 100.0
    } else {
        p.neutral_prior
    }
}

/// `(raw, raw_max)` of the source formula.
pub fn survey_raw(p: &AttitudePolicy, s: &Survey) -> (f64, f64) {
    let scale = p.k * 100.0 / p.scale_max;
    let mut raw = 0.0;
    let mut max = 0.0;
    if let Some(r) = s.recommend {
        raw += r * p.w_recommend;
        max += p.scale_max * p.w_recommend;
    }
    if let Some(r) = s.repurchase_intent {
        raw += r * p.w_repurchase;
        max += p.scale_max * p.w_repurchase;
    }
    (raw * scale, max * scale)
}

/// `d` when it lies in the window of `at`, which starts at `window_from`.
fn in_window<T>(d: &Answer<T>, window_from: Millis, at: Millis) -> Option<&Dated<T>> {
    d.as_deref().filter(|d| d.ts <= at && d.ts >= window_from)
}

/// Computes both scores at instant `at` from the evidence and the window
/// totals (which must be the window of `at`).
pub fn scores(
    b: &BehaviourPolicy,
    a: &AttitudePolicy,
    ev: &Evidence,
    totals: &WindowTotals,
    at: Millis,
) -> Scores {
    // "In the window" is a comparison with its first instant: no calendar
    // arithmetic per piece of evidence.
    let window_from = month_start(window_start(at));
    // behaviour
    let n = totals.purchases;
    let expected_gap_days = match (totals.first_purchase, totals.last_purchase) {
        (Some(f), Some(l)) if n >= 3 => (l - f) as f64 / DAY_MS as f64 / f64::from(n - 1),
        _ => b.default_gap_days,
    };
    let days_since_purchase = totals
        .last_purchase
        .map(|l| (at - l).max(0) as f64 / DAY_MS as f64);
    let recency = match days_since_purchase {
        None => 0.0,
        Some(d) if d <= expected_gap_days => 1.0,
        Some(d) => {
            let span = (b.dormancy_factor - 1.0) * expected_gap_days;
            if span <= 0.0 {
                0.0
            } else {
                (1.0 - (d - expected_gap_days) / span).max(0.0)
            }
        }
    };
    let frequency = (f64::from(n) / b.repeat_target).min(1.0);
    let wallet = in_window(&ev.share_of_wallet, window_from, at)
        .map_or(0.0, |d| (d.value / b.full_share_of_wallet).min(1.0));
    let behaviour = 100.0 * recency * frequency.max(wallet);
    let past_gap = days_since_purchase.is_some_and(|d| d > expected_gap_days);

    // attitude
    let satisfaction = in_window(&ev.satisfaction, window_from, at).map(|d| d.value);
    let (survey_part, survey_source) = match (in_window(&ev.survey, window_from, at), satisfaction)
    {
        (Some(s), _) => (survey_score(a, &s.value), SurveySource::Survey(s.value)),
        (None, Some(v)) => (satisfaction_score(v), SurveySource::Satisfaction(v)),
        (None, None) => (a.neutral_prior, SurveySource::Prior),
    };
    let p = penalties(ev, a, window_from, at);
    let attitude = (survey_part - p.complaint - p.signal).clamp(0.0, 100.0);
    Scores {
        behaviour,
        attitude,
        frequency,
        wallet,
        recency,
        expected_gap_days,
        days_since_purchase,
        survey_part,
        survey_source,
        satisfaction,
        complaint_penalty: p.complaint,
        complaints: p.complaints,
        signal_penalty: p.signal,
        signals: p.signals,
        past_gap,
        open_complaint: p.open_complaint,
    }
}

wire_enum! {
    /// The four loyalty quadrants.
    pub enum Quadrant {
        /// High behaviour, high attitude.
        TrueLoyal,
        /// Low behaviour, high attitude.
        Latent,
        /// High behaviour, low attitude: the churn risk.
        Spurious,
        /// Low behaviour, low attitude.
        Disloyal,
    }
}

impl Quadrant {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Which side of each threshold a customer is on; the quadrant's memory
/// for hysteresis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sides {
    /// Behaviour is high.
    pub behaviour_high: bool,
    /// Attitude is high.
    pub attitude_high: bool,
}

impl Sides {
    /// The quadrant these sides make.
    pub fn quadrant(self) -> Quadrant {
        match (self.behaviour_high, self.attitude_high) {
            (true, true) => Quadrant::TrueLoyal,
            (false, true) => Quadrant::Latent,
            (true, false) => Quadrant::Spurious,
            (false, false) => Quadrant::Disloyal,
        }
    }
}

fn side(p: &QuadrantPolicy, previous: Option<bool>, score: f64) -> bool {
    match previous {
        None => score >= p.threshold,
        Some(true) => score >= p.threshold - p.hysteresis,
        Some(false) => score >= p.threshold + p.hysteresis,
    }
}

/// The sides after scoring: plain thresholds the first time, then a score
/// must cross its threshold by the hysteresis to change side.
pub fn next_sides(p: &QuadrantPolicy, previous: Option<Sides>, s: &Scores) -> Sides {
    Sides {
        behaviour_high: side(p, previous.map(|x| x.behaviour_high), s.behaviour),
        attitude_high: side(p, previous.map(|x| x.attitude_high), s.attitude),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::time::ms;

    fn attitude_policy() -> AttitudePolicy {
        crate::domain::tests::policy().loyalty.attitude
    }

    #[test]
    fn first_scored_from_is_the_earliest_answer_complaint_or_signal() {
        let mut ev = Evidence::default();
        assert_eq!(ev.first_scored_from(ms(0)), None);
        ev.signals.push(SignalRecord {
            ts: ms(50),
            signals: Vec::new(),
        });
        ev.complaints.push(ComplaintRecord {
            ts: ms(30),
            id: 1,
            severity: Severity::Low,
            resolved: false,
        });
        ev.satisfaction = Some(Box::new(Dated {
            ts: ms(40),
            tie: 0,
            value: 0.5,
        }));
        assert_eq!(ev.first_scored_from(ms(0)), Some(ms(30)));
        assert_eq!(ev.first_scored_from(ms(31)), Some(ms(40)));
        assert_eq!(ev.first_scored_from(ms(41)), Some(ms(50)));
        assert_eq!(ev.first_scored_from(ms(51)), None);
    }

    #[test]
    fn source_example_raw_33_6_and_score_68_57() {
        let p = attitude_policy();
        let s = Survey {
            recommend: Some(4.0),
            repurchase_intent: Some(3.0),
        };
        let (raw, _) = survey_raw(&p, &s);
        assert!((raw - 33.6).abs() < 1e-9, "{raw}");
        let score = survey_score(&p, &s);
        assert_eq!((score * 100.0).round() / 100.0, 68.57);
    }

    #[test]
    fn one_answer_is_scored_alone() {
        let p = attitude_policy();
        let only_rec = Survey {
            recommend: Some(3.0),
            repurchase_intent: None,
        };
        assert!((survey_score(&p, &only_rec) - 60.0).abs() < 1e-9);
        let only_rep = Survey {
            recommend: None,
            repurchase_intent: Some(5.0),
        };
        assert!((survey_score(&p, &only_rep) - 100.0).abs() < 1e-9);
    }

    #[test]
    fn older_answers_are_kept_newest_first_whatever_the_arrival_order() {
        let d = |t: i64| Dated {
            ts: ms(t),
            tie: 0,
            value: t as f64,
        };
        for order in [[1, 2, 3, 4], [4, 3, 2, 1], [2, 4, 1, 3], [1, 4, 3, 2]] {
            let (mut latest, mut older) = (None, [None, None]);
            for ts in order {
                newest_first(&mut latest, &mut older, d(ts));
            }
            assert_eq!(latest.map(|x| x.ts), Some(ms(4)), "{order:?}");
            assert_eq!(
                older.map(|o| o.map(|x| x.ts)),
                [Some(ms(3)), Some(ms(2))],
                "{order:?}"
            );
        }
    }

    #[test]
    fn hysteresis_sides() {
        let q = QuadrantPolicy {
            threshold: 60.0,
            hysteresis: 5.0,
        };
        assert!(side(&q, None, 60.0));
        assert!(!side(&q, None, 59.99));
        assert!(side(&q, Some(true), 55.0));
        assert!(!side(&q, Some(true), 54.99));
        assert!(!side(&q, Some(false), 64.99));
        assert!(side(&q, Some(false), 65.0));
    }
}
