//! Churn risk (SPEC §4 "Churn risk"): the probability that a customer
//! stops buying within the risk horizon, from an explicit logistic model
//! over features of the customer's own history.
//!
//! A warning that opens for every spurious customer is not believed; what
//! precedes a churn is a *change* — negative evidence surging against the
//! customer's own baseline, answers dropping, purchase gaps lengthening,
//! baskets shrinking — so the features measure change, not level alone.
//!
//! Every feature is kept in O(1) per event and changes only at events,
//! month starts, or the midnights at which a day of negative evidence
//! leaves the recent or the baseline period — except the purchase gap,
//! which grows with time. With a non-negative gap coefficient the risk can
//! therefore only rise between those instants, which is what lets the
//! engine compute the first midnight at which it crosses a threshold
//! instead of visiting every customer every day.

use super::event::{Complaint, Minor, Purchase, Service, Severity, Signal};
use super::lifetime::StakePolicy;
use super::loyalty::{
    answer_bytes, satisfaction_score, survey_score, Answer, Scores, Survey, SurveySource,
};
use super::profile::vec_bytes;
use super::tier::Tier;
use super::time::{Millis, MonthIndex, DAY_MS};
use super::value::Buckets;
use serde::{Deserialize, Serialize};

/// Days of negative evidence that make the recent period.
pub const RECENT_DAYS: i32 = 60;
/// Days before the recent period that make the customer's own baseline.
pub const BASELINE_DAYS: i32 = 180;
/// Whole months a customer must have been seen before its surges count:
/// the recent and the baseline periods (240 days) fit in 8 months. A
/// customer seen for two months has no baseline, and against an empty one
/// any busy customer's ordinary complaints look like a surge (on the
/// generator, a tenth of the loyal customers were warned in their first
/// months for it); so until then the three surge features are 0. It moves
/// only at a month start, an instant the engine evaluates anyway.
pub const SURGE_WARMUP_MONTHS: i32 = 8;
/// The purchase-gap feature stops growing at this many gaps past the
/// expected one (and is this much when nothing was bought in the window).
const GAP_CAP: f64 = 3.0;
/// Spend trend is clamped to this many e-folds either way.
const TREND_CAP: f64 = 3.0;
/// How many contributions a warning names.
const TOP_FACTORS: usize = 3;

wire_enum! {
    /// When a churn warning opens (SPEC §4).
    pub enum OpenOn {
        /// Spurious and the churn risk at or above `open_risk`.
        Risk,
        /// Spurious alone (the plain rule).
        Quadrant,
    }
}

wire_enum! {
    /// The model's features, in coefficient order; the snake_case names
    /// are the config keys of `[warnings.risk_coefficients]` and the
    /// `factor` names of `risk_factors`.
    pub enum Feature {
        /// Complaints (medium or worse) in the last 60 days against the
        /// customer's own rate before: `ln(1 + recent) - ln(1 + baseline / 3)`
        /// (0 until the customer has been seen for [`SURGE_WARMUP_MONTHS`],
        /// like every surge).
        ComplaintSurge,
        /// The same for competitor, cancellation and price-match signals.
        SignalSurge,
        /// `(100 - survey part) / 100`: how low the latest answers are.
        LowAttitude,
        /// How far the latest answers fell from the ones before, / 100.
        AttitudeDrop,
        /// Negative evidence per purchase over the recent and the baseline
        /// periods: `ln(1 + 100 · (complaints + signals) / (1 + purchases))`.
        /// The penalties behind the spurious quadrant are sums, so a
        /// customer who buys a hundred times a day is spurious on the
        /// odd complaint per hundred purchases; what it says about the
        /// customer is the share, not the sum.
        NegativeRate,
        /// How far the last two answers both fell below the one before
        /// them, / 100. One bad answer from a customer who likes us is
        /// common; the answers of a customer about to leave stay low.
        LastingDrop,
        /// Expected purchase gaps overdue: `days since purchase / expected
        /// gap - 1`, in 0..=3.
        PurchaseGap,
        /// Purchases in the last 60 days against the customer's own rate
        /// before: `ln(1 + baseline / 3) - ln(1 + recent)`, positive when
        /// it buys less than it used to.
        PurchaseSlowdown,
        /// Revenue of the last three months against the three-month
        /// average of the six before, `-ln` of the ratio, in -3..=3.
        SpendDecline,
        /// `ln(1 + months since the customer was first seen)`.
        Tenure,
        /// 1 for a platinum customer.
        TierPlatinum,
        /// 1 for a gold customer.
        TierGold,
        /// 1 for an iron customer (lead is the baseline).
        TierIron,
    }
}

/// Number of features.
pub const FEATURES: usize = <Feature as strum::EnumCount>::COUNT;

impl Feature {
    /// Every feature in coefficient order.
    pub fn all() -> impl Iterator<Item = Feature> {
        <Feature as strum::IntoEnumIterator>::iter()
    }

    /// The wire / config name.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A feature's contribution to the logit as a piecewise-linear function
/// of its value: straight between the points, flat beyond the first and
/// the last.
///
/// A straight line is the wrong shape for most evidence: on the generator
/// the first complaint above a customer's usual rate says more than each
/// one after it, and very content answers in the spurious quadrant say
/// something different from middling ones. A few points per feature keep
/// the model additive — every feature still has one contribution a
/// warning can name — while letting each bend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shape {
    /// `(value, contribution)`, values strictly increasing, at least two.
    pub points: Vec<(f64, f64)>,
}

impl Shape {
    /// The contribution at `x`.
    pub fn at(&self, x: f64) -> f64 {
        let p = &self.points;
        let i = p.partition_point(|(px, _)| *px <= x);
        match (i.checked_sub(1).map(|j| p[j]), p.get(i).copied()) {
            (Some((x0, y0)), Some((x1, y1))) => y0 + (y1 - y0) * (x - x0) / (x1 - x0),
            (Some((_, y)), None) | (None, Some((_, y))) => y,
            (None, None) => 0.0,
        }
    }

    /// Whether the contribution never falls as the value grows.
    pub fn is_non_decreasing(&self) -> bool {
        self.points.windows(2).all(|w| w[1].1 >= w[0].1)
    }
}

/// The logistic model: `risk = 1 / (1 + e^-(intercept + Σ contribution))`,
/// where a feature's contribution is its [`Shape`] at its value when it
/// has one, else its coefficient times its value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RiskModel {
    /// The intercept.
    pub intercept: f64,
    /// One coefficient per feature, in [`Feature`] order (0 for a feature
    /// with a shape).
    pub weights: [f64; FEATURES],
    /// The shaped features' contributions, in [`Feature`] order.
    pub shapes: [Option<Shape>; FEATURES],
    /// A non-decreasing map of the summed logit to the one the
    /// probability is taken of (none: the sum itself). An additive model
    /// fitted by maximum likelihood is right on average but can be too
    /// sure at both ends and not sure enough in the middle; a monotone
    /// map mends that without changing which customer ranks above which,
    /// and keeps the risk monotone in the purchase gap.
    pub calibration: Option<Shape>,
}

/// Churn-risk and warning-opening settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RiskPolicy {
    /// Which rule opens a warning.
    pub open_on: OpenOn,
    /// A spurious customer's warning opens at this risk.
    pub open_risk: f64,
    /// An open warning clears when the risk falls below this.
    pub clear_risk: f64,
    /// At this risk a warning's severity is one step higher.
    pub escalate_risk: f64,
    /// The model.
    pub model: RiskModel,
    /// How the money at stake on a warning is figured.
    pub stake: StakePolicy,
}

/// One day's counts of the evidence rates are measured on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayCounts {
    /// Day number (days since 1970-01-01, UTC).
    pub day: i32,
    /// Complaints of medium severity or worse.
    pub complaints: u16,
    /// Competitor, cancellation and price-match signals.
    pub signals: u16,
    /// Purchases (not refunds).
    pub purchases: u16,
}

/// Counts over a period: (complaints, signals, purchases).
type Counts = (u32, u32, u32);

/// What the risk features need beyond the loyalty evidence: bounded by
/// the recent and baseline periods (at most 240 days plus the allowed
/// lateness of day counts, two earlier answers per source), whatever the
/// customer's activity.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RiskEvidence {
    /// Evidence counts per day, by day.
    pub days: Vec<DayCounts>,
    /// The two surveys answered before the latest one, newest first.
    pub prior_surveys: [Answer<Survey>; 2],
    /// The two satisfaction answers before the latest one, newest first.
    pub prior_satisfactions: [Answer<f64>; 2],
}

fn day_of(t: Millis) -> i32 {
    // Days of valid instants fit an i32 (decode checks the range).
    t.ms().div_euclid(DAY_MS) as i32
}

impl RiskEvidence {
    /// Bytes held on the heap (see `Profile::heap_bytes`).
    pub fn heap_bytes(&self) -> usize {
        vec_bytes(&self.days)
            + self.prior_surveys.iter().map(answer_bytes).sum::<usize>()
            + self
                .prior_satisfactions
                .iter()
                .map(answer_bytes)
                .sum::<usize>()
    }

    fn day_mut(&mut self, ts: Millis) -> &mut DayCounts {
        let day = day_of(ts);
        let at = self.days.partition_point(|d| d.day < day);
        if self.days.get(at).is_none_or(|d| d.day != day) {
            self.days.insert(
                at,
                DayCounts {
                    day,
                    complaints: 0,
                    signals: 0,
                    purchases: 0,
                },
            );
        }
        &mut self.days[at]
    }

    /// Counts a complaint (not a resolution) as negative evidence.
    pub fn record_complaint(&mut self, ts: Millis, c: &Complaint) {
        if c.reference.is_none() && c.severity >= Severity::Medium {
            let d = self.day_mut(ts);
            d.complaints = d.complaints.saturating_add(1);
        }
    }

    /// Counts a purchase (not a refund): the customer's own buying rate.
    pub fn record_purchase(&mut self, ts: Millis, p: &Purchase) {
        if !p.refund {
            let d = self.day_mut(ts);
            d.purchases = d.purchases.saturating_add(1);
        }
    }

    /// Counts a service event's churn-related signals.
    pub fn record_service(&mut self, ts: Millis, s: &Service) {
        let n = s
            .signals
            .iter()
            .filter(|sig| {
                matches!(
                    sig,
                    Signal::CompetitorOffer
                        | Signal::CancellationInquiry
                        | Signal::PriceMatchRequest
                )
            })
            .count();
        if n > 0 {
            let d = self.day_mut(ts);
            d.signals = d.signals.saturating_add(n as u16);
        }
    }

    /// Drops days no evaluation can count again: before the baseline of
    /// the earliest instant that can still be evaluated.
    pub fn prune_before(&mut self, earliest: Millis) {
        let from = day_of(earliest) - RECENT_DAYS - BASELINE_DAYS;
        let n = self.days.partition_point(|d| d.day <= from);
        if n > 0 {
            self.days.drain(..n);
        }
    }

    /// The counts of the days in `(lo, hi]`.
    fn counts(&self, lo: i32, hi: i32) -> Counts {
        let a = self.days.partition_point(|d| d.day <= lo);
        let b = self.days.partition_point(|d| d.day <= hi);
        self.days[a..b.max(a)]
            .iter()
            .fold((0, 0, 0), |(c, s, p), d| {
                (
                    c + u32::from(d.complaints),
                    s + u32::from(d.signals),
                    p + u32::from(d.purchases),
                )
            })
    }

    /// The first midnight after `t` at which a day enters or leaves the
    /// recent or the baseline period (`Millis::MAX`: none).
    ///
    /// The days are sorted, so for each period edge the first day past `t`
    /// is found by bisection: O(log days) per call, not a scan (the engine
    /// asks at every event, and purchase days fill up to 240 entries).
    pub fn next_change_after(&self, t: Millis) -> Millis {
        [0, RECENT_DAYS, RECENT_DAYS + BASELINE_DAYS]
            .into_iter()
            .filter_map(|k| {
                let edge = |d: &DayCounts| Millis::from_ms(i64::from(d.day + k) * DAY_MS);
                let first = self.days.partition_point(|d| edge(d) <= t);
                self.days.get(first).map(edge)
            })
            .min()
            .unwrap_or(Millis::MAX)
    }
}

/// The facts the risk of one customer at one instant is computed from.
#[derive(Debug, Clone, PartialEq)]
pub struct RiskInputs<'a> {
    /// Its scores at the instant.
    pub scores: &'a Scores,
    /// Its risk evidence.
    pub evidence: &'a RiskEvidence,
    /// Its value buckets.
    pub buckets: &'a Buckets,
    /// Its tier.
    pub tier: Option<Tier>,
    /// The month it was first seen.
    pub first_month: Option<MonthIndex>,
    /// The month of the instant.
    pub month: MonthIndex,
    /// The instant.
    pub at: Millis,
}

/// The evidence behind one feature, as a warning names it.
#[derive(Debug, Clone, PartialEq)]
pub enum FactorEvidence {
    /// Events in the last 60 days (negative ones, or purchases) and the
    /// customer's own rate per 60 days over the 180 before.
    Surge {
        /// In the last 60 days.
        recent: u32,
        /// Per 60 days before.
        baseline_per_60_days: f64,
    },
    /// Negative events and purchases over the last 240 days.
    Rate {
        /// Complaints (medium or worse) and churn-related signals.
        negatives: u32,
        /// Purchases (not refunds).
        purchases: u32,
    },
    /// The survey part of the attitude.
    Attitude {
        /// 0..100
        survey_part: f64,
    },
    /// The survey part before and now.
    Drop {
        /// The previous answers' part.
        from: f64,
        /// The latest answers' part.
        to: f64,
    },
    /// Days since the last purchase against the expected gap.
    Gap {
        /// Days since the last purchase (`None`: none in the window).
        days_since_purchase: Option<f64>,
        /// Expected gap.
        expected_gap_days: f64,
    },
    /// Revenue of the last three months and the three-month average before.
    Spend {
        /// Minor units.
        recent_3m: Minor,
        /// Minor units.
        prior_3m_average: Minor,
    },
    /// Months since first seen.
    Tenure {
        /// Whole months.
        months: i32,
    },
    /// The customer's tier.
    Tier {
        /// The tier.
        tier: Tier,
    },
}

/// One feature's pull on the risk.
#[derive(Debug, Clone, PartialEq)]
pub struct Factor {
    /// Which feature.
    pub feature: Feature,
    /// Its share of the positive contributions, 0..1.
    pub share: f64,
    /// The evidence behind it.
    pub evidence: FactorEvidence,
}

/// A customer's churn risk and where it comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct Risk {
    /// 0..1
    pub value: f64,
    /// Feature values, in [`Feature`] order.
    pub features: [f64; FEATURES],
    /// The largest positive contributions, largest first.
    pub factors: Vec<Factor>,
}

impl Risk {
    /// The feature pulling the risk up the most, if any does.
    pub fn dominant(&self) -> Option<Feature> {
        self.factors.first().map(|f| f.feature)
    }
}

/// A period's count against the customer's own rate over the baseline
/// (three periods long), on a log scale: > 0 when above its usual rate.
fn surge(recent: u32, baseline: u32) -> f64 {
    f64::from(recent).ln_1p() - (f64::from(baseline) / 3.0).ln_1p()
}

/// Revenue of months `from ..= to`.
fn revenue(b: &Buckets, from: MonthIndex, to: MonthIndex) -> Minor {
    b.months(from, to).iter().map(|m| m.revenue).sum()
}

/// The survey parts of the two answers before the latest (newest first),
/// from the same source as the latest, when they are still in the window.
fn prior_parts(
    a: &super::loyalty::AttitudePolicy,
    inputs: &RiskInputs,
    window_from: Millis,
) -> [Option<f64>; 2] {
    let in_window = |ts: Millis| ts >= window_from && ts <= inputs.at;
    let e = inputs.evidence;
    match inputs.scores.survey_source {
        SurveySource::Survey(_) => e.prior_surveys.each_ref().map(|p| {
            p.as_deref()
                .filter(|p| in_window(p.ts))
                .map(|p| survey_score(a, &p.value))
        }),
        SurveySource::Satisfaction(_) => e.prior_satisfactions.each_ref().map(|p| {
            p.as_deref()
                .filter(|p| in_window(p.ts))
                .map(|p| satisfaction_score(p.value))
        }),
        SurveySource::Prior => [None; 2],
    }
}

/// The feature values at `inputs.at` and the counts behind them.
struct Measured {
    x: [f64; FEATURES],
    recent: Counts,
    baseline: Counts,
    prior: Option<f64>,
    earlier: Option<f64>,
    recent_3m: Minor,
    prior_avg: Minor,
    tenure_months: i32,
}

fn measure(
    a: &super::loyalty::AttitudePolicy,
    inputs: &RiskInputs,
    window_from: Millis,
) -> Measured {
    let s = inputs.scores;
    let day = day_of(inputs.at);
    let (rc, rs, rp) = inputs.evidence.counts(day - RECENT_DAYS, day);
    let (bc, bs, bp) = inputs
        .evidence
        .counts(day - RECENT_DAYS - BASELINE_DAYS, day - RECENT_DAYS);
    let [prior, earlier] = prior_parts(a, inputs, window_from);
    let gap = s.days_since_purchase.map_or(GAP_CAP, |d| {
        (d / s.expected_gap_days - 1.0).clamp(0.0, GAP_CAP)
    });
    let recent_3m = revenue(inputs.buckets, inputs.month - 2, inputs.month);
    let prior_6m = revenue(inputs.buckets, inputs.month - 8, inputs.month - 3);
    let prior_avg = prior_6m / 2;
    // Money in major units for the trend, so a small basket's +1 does not
    // dominate; revenue net of refunds can be negative: floored at 0.
    let major = |m: Minor| (m.max(0) as f64) / 100.0;
    let decline =
        -((major(recent_3m)).ln_1p() - (major(prior_avg)).ln_1p()).clamp(-TREND_CAP, TREND_CAP);
    let tenure_months = inputs.first_month.map_or(0, |f| (inputs.month - f).max(0));
    let mut x = [0.0; FEATURES];
    let has_baseline = inputs.first_month.is_some() && tenure_months >= SURGE_WARMUP_MONTHS;
    let surge = |recent, baseline| {
        if has_baseline {
            surge(recent, baseline)
        } else {
            0.0
        }
    };
    x[Feature::ComplaintSurge as usize] = surge(rc, bc);
    x[Feature::SignalSurge as usize] = surge(rs, bs);
    x[Feature::LowAttitude as usize] = (100.0 - s.survey_part) / 100.0;
    x[Feature::AttitudeDrop as usize] = prior.map_or(0.0, |p| (p - s.survey_part).max(0.0) / 100.0);
    x[Feature::NegativeRate as usize] =
        (100.0 * f64::from(rc + rs + bc + bs) / f64::from(1 + rp + bp)).ln_1p();
    x[Feature::LastingDrop as usize] = match (prior, earlier) {
        (Some(p), Some(e)) => (e - p.max(s.survey_part)).max(0.0) / 100.0,
        _ => 0.0,
    };
    x[Feature::PurchaseGap as usize] = gap;
    x[Feature::PurchaseSlowdown as usize] = -surge(rp, bp);
    x[Feature::SpendDecline as usize] = decline;
    x[Feature::Tenure as usize] = f64::from(tenure_months).ln_1p();
    x[Feature::TierPlatinum as usize] = f64::from(u8::from(inputs.tier == Some(Tier::Platinum)));
    x[Feature::TierGold as usize] = f64::from(u8::from(inputs.tier == Some(Tier::Gold)));
    x[Feature::TierIron as usize] = f64::from(u8::from(inputs.tier == Some(Tier::Iron)));
    Measured {
        x,
        recent: (rc, rs, rp),
        baseline: (bc, bs, bp),
        prior,
        earlier,
        recent_3m,
        prior_avg,
        tenure_months,
    }
}

/// The feature values at `inputs.at`, in [`Feature`] order: what a
/// model is fitted on, and all a decision needs (the daily deadline
/// search asks for the risk at several instants per event), so no
/// explanation is built.
pub fn features(
    a: &super::loyalty::AttitudePolicy,
    inputs: &RiskInputs,
    window_from: Millis,
) -> [f64; FEATURES] {
    measure(a, inputs, window_from).x
}

/// The risk at `inputs.at` with the factors behind it, for an output;
/// `window_from` is the first instant of its 12-month window.
pub fn risk(
    model: &RiskModel,
    a: &super::loyalty::AttitudePolicy,
    inputs: &RiskInputs,
    window_from: Millis,
) -> Risk {
    let Measured {
        x,
        recent: (rc, rs, rp),
        baseline: (bc, bs, bp),
        prior,
        earlier,
        recent_3m,
        prior_avg,
        tenure_months,
    } = measure(a, inputs, window_from);
    let s = inputs.scores;
    let value = model.probability(&x);
    let mut pulls: Vec<(Feature, f64)> = Feature::all()
        .map(|f| (f, model.contribution(f, x[f as usize])))
        .filter(|(_, c)| *c > 0.0)
        .collect();
    let total: f64 = pulls.iter().map(|(_, c)| c).sum();
    // Largest first; ties in feature order, so the list is deterministic.
    pulls.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let factors = pulls
        .into_iter()
        .take(TOP_FACTORS)
        .map(|(feature, c)| Factor {
            feature,
            share: c / total,
            evidence: match feature {
                Feature::ComplaintSurge => FactorEvidence::Surge {
                    recent: rc,
                    baseline_per_60_days: f64::from(bc) / 3.0,
                },
                Feature::SignalSurge => FactorEvidence::Surge {
                    recent: rs,
                    baseline_per_60_days: f64::from(bs) / 3.0,
                },
                Feature::LowAttitude => FactorEvidence::Attitude {
                    survey_part: s.survey_part,
                },
                Feature::AttitudeDrop => FactorEvidence::Drop {
                    from: prior.unwrap_or(s.survey_part),
                    to: s.survey_part,
                },
                Feature::NegativeRate => FactorEvidence::Rate {
                    negatives: rc + rs + bc + bs,
                    purchases: rp + bp,
                },
                Feature::LastingDrop => FactorEvidence::Drop {
                    from: earlier.unwrap_or(s.survey_part),
                    to: prior.map_or(s.survey_part, |p| p.max(s.survey_part)),
                },
                Feature::PurchaseGap => FactorEvidence::Gap {
                    days_since_purchase: s.days_since_purchase,
                    expected_gap_days: s.expected_gap_days,
                },
                Feature::PurchaseSlowdown => FactorEvidence::Surge {
                    recent: rp,
                    baseline_per_60_days: f64::from(bp) / 3.0,
                },
                Feature::SpendDecline => FactorEvidence::Spend {
                    recent_3m,
                    prior_3m_average: prior_avg,
                },
                Feature::Tenure => FactorEvidence::Tenure {
                    months: tenure_months,
                },
                Feature::TierPlatinum | Feature::TierGold | Feature::TierIron => {
                    FactorEvidence::Tier {
                        tier: inputs.tier.unwrap_or(Tier::Lead),
                    }
                }
            },
        })
        .collect();
    Risk {
        value,
        features: x,
        factors,
    }
}

impl RiskModel {
    /// A linear model (no shapes).
    pub fn linear(intercept: f64, weights: [f64; FEATURES]) -> RiskModel {
        RiskModel {
            intercept,
            weights,
            shapes: Default::default(),
            calibration: None,
        }
    }

    /// Feature `f`'s pull on the logit at value `x`.
    pub fn contribution(&self, f: Feature, x: f64) -> f64 {
        match &self.shapes[f as usize] {
            Some(shape) => shape.at(x),
            None => self.weights[f as usize] * x,
        }
    }

    /// The linear predictor of feature values.
    pub fn logit(&self, x: &[f64; FEATURES]) -> f64 {
        self.intercept
            + Feature::all()
                .map(|f| self.contribution(f, x[f as usize]))
                .sum::<f64>()
    }

    /// The probability of feature values.
    pub fn probability(&self, x: &[f64; FEATURES]) -> f64 {
        let t = self.logit(x);
        let t = self.calibration.as_ref().map_or(t, |c| c.at(t));
        1.0 / (1.0 + (-t).exp())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complaint(sev: Severity) -> Complaint {
        Complaint {
            severity: sev,
            resolved: false,
            reference: None,
        }
    }

    #[test]
    fn days_count_by_period_and_say_when_they_move() {
        let mut e = RiskEvidence::default();
        let d0 = Millis::from_ms(20_000 * DAY_MS);
        let day = |n: i64| Millis::from_ms(n * DAY_MS);
        e.record_complaint(d0 + 5, &complaint(Severity::High));
        e.record_complaint(d0 + 6, &complaint(Severity::Low)); // not negative enough
        e.record_service(
            d0 + 7,
            &Service {
                signals: vec![Signal::CompetitorOffer, Signal::ContractEndInquiry],
                ..Service::default()
            },
        );
        assert_eq!(e.days.len(), 1);
        assert_eq!((e.days[0].complaints, e.days[0].signals), (1, 1));
        assert_eq!(e.counts(20_000 - 60, 20_000), (1, 1, 0));
        assert_eq!(e.counts(20_000 - 60 + 1, 20_000 + 60), (1, 1, 0));
        assert_eq!(e.counts(20_000, 20_000 + 60), (0, 0, 0));
        assert_eq!(e.next_change_after(d0 + 10), day(20_000 + 60));
        assert_eq!(e.next_change_after(day(20_000 + 60)), day(20_000 + 240));
        assert_eq!(e.next_change_after(day(20_000 + 240)), Millis::MAX);
        e.prune_before(day(20_000 + 241));
        assert!(e.days.is_empty());
    }

    #[test]
    fn a_shape_is_straight_between_its_points_and_flat_beyond() {
        let s = Shape {
            points: vec![(0.0, 0.0), (1.0, 2.0), (3.0, 1.0)],
        };
        assert_eq!(s.at(-5.0), 0.0);
        assert_eq!(s.at(0.0), 0.0);
        assert_eq!(s.at(0.5), 1.0);
        assert_eq!(s.at(1.0), 2.0);
        assert_eq!(s.at(2.0), 1.5);
        assert_eq!(s.at(3.0), 1.0);
        assert_eq!(s.at(9.0), 1.0);
        assert!(!s.is_non_decreasing());
        let mut m = RiskModel::linear(0.5, [0.0; FEATURES]);
        m.weights[Feature::TierGold as usize] = 1.0;
        m.shapes[Feature::ComplaintSurge as usize] = Some(s);
        let mut x = [0.0; FEATURES];
        x[Feature::ComplaintSurge as usize] = 2.0;
        x[Feature::TierGold as usize] = 1.0;
        assert_eq!(m.logit(&x), 0.5 + 1.5 + 1.0);
        m.calibration = Some(Shape {
            points: vec![(0.0, -1.0), (6.0, 2.0)],
        });
        assert_eq!(m.probability(&x), 1.0 / (1.0 + (-0.5f64).exp()));
    }

    #[test]
    fn surge_is_against_the_customers_own_rate() {
        assert_eq!(surge(0, 0), 0.0);
        assert!(surge(4, 0) > surge(4, 12));
        assert!(
            (surge(4, 12) - 0.0).abs() < 1e-12,
            "4 in 60 days is its usual rate"
        );
        assert!(surge(1, 30) < 0.0, "quieter than usual");
    }
}
