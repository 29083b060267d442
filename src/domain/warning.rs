//! Churn warnings for spurious-loyalty customers (SPEC §4, §7): severity by
//! value with escalation, reason codes with their evidence, the recommended
//! action, and the open/update/clear lifecycle with its cooldown.

use super::event::{Severity, Signals};
use super::loyalty::{Scores, SurveySource};
use super::profile::vec_bytes;
use super::risk::Feature;
use super::tier::Tier;
use super::time::Millis;
use serde::{Deserialize, Serialize};
use strum::EnumCount;

wire_enum! {
    /// Reason codes of a warning.
    pub enum ReasonCode {
        /// Complaint penalties still weigh at least one point.
        Complaint,
        /// The latest satisfaction alone would make the attitude low.
        LowSatisfaction,
        /// The latest recommend answer alone would make the attitude low.
        LowRecommend,
        /// The latest repurchase intent alone would make the attitude low.
        LowRepurchaseIntent,
        /// Competitor or price signals still weigh at least one point.
        CompetitorSignal,
        /// Past the customer's own expected purchase gap.
        PurchaseGap,
    }
}

impl ReasonCode {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// A reason with the evidence behind it.
#[derive(Debug, Clone, PartialEq)]
pub enum Reason {
    /// Complaints: decayed penalty and how many.
    Complaint {
        /// Decayed penalty points.
        penalty: f64,
        /// Complaints in the window.
        count: u32,
        /// Whether a high/critical one is still open.
        open_high: bool,
    },
    /// Satisfaction answer.
    LowSatisfaction {
        /// 1..5
        satisfaction: f64,
    },
    /// Recommend answer.
    LowRecommend {
        /// 1..5
        recommend: f64,
    },
    /// Repurchase-intent answer.
    LowRepurchaseIntent {
        /// 1..5
        repurchase_intent: f64,
    },
    /// Signals and their decayed penalty.
    CompetitorSignal {
        /// Which signals.
        signals: Signals,
        /// Decayed penalty points.
        penalty: f64,
    },
    /// The purchase gap.
    PurchaseGap {
        /// Days since the last purchase.
        days_since_purchase: f64,
        /// The customer's expected gap.
        expected_gap_days: f64,
    },
}

impl Reason {
    /// Its code.
    pub fn code(&self) -> ReasonCode {
        match self {
            Reason::Complaint { .. } => ReasonCode::Complaint,
            Reason::LowSatisfaction { .. } => ReasonCode::LowSatisfaction,
            Reason::LowRecommend { .. } => ReasonCode::LowRecommend,
            Reason::LowRepurchaseIntent { .. } => ReasonCode::LowRepurchaseIntent,
            Reason::CompetitorSignal { .. } => ReasonCode::CompetitorSignal,
            Reason::PurchaseGap { .. } => ReasonCode::PurchaseGap,
        }
    }
}

wire_enum! {
    /// What the retention team should do.
    pub enum Action {
        /// Fix what went wrong: complaints or low satisfaction dominate.
        ServiceRecovery,
        /// Benefits, targeted offers: competitor or price signals.
        RaiseSwitchingCost,
        /// Win back a customer who stopped buying.
        ReactivationOffer,
        /// Ask and listen.
        SatisfactionOutreach,
    }
}

impl Action {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// The lifecycle step of a warning output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::EnumCount)]
#[strum(serialize_all = "snake_case")]
pub enum WarningAction {
    /// The customer entered spurious.
    Opened,
    /// Severity or reasons changed while open.
    Updated,
    /// The customer left spurious, or was forgotten.
    Cleared,
}

impl WarningAction {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// The open warning as last emitted, kept in the profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenWarning {
    /// Stable id for the warning's whole life.
    pub warning_id: String,
    /// Severity last emitted.
    pub severity: Severity,
    /// Reason codes last emitted, sorted.
    pub reasons: Vec<ReasonCode>,
}

impl OpenWarning {
    /// Bytes held on the heap (see `Profile::heap_bytes`).
    pub fn heap_bytes(&self) -> usize {
        self.warning_id.capacity() + vec_bytes(&self.reasons)
    }
}

/// Severity by tier (platinum critical ... lead low), one step higher when
/// `escalated`: with the plain rule, past the expected gap or an open
/// high/critical complaint; with the risk rule, a risk at or above
/// `escalate_risk`.
pub fn severity(tier: Option<Tier>, escalated: bool) -> Severity {
    let base = match tier {
        Some(Tier::Platinum) => Severity::Critical,
        Some(Tier::Gold) => Severity::High,
        Some(Tier::Iron) => Severity::Medium,
        Some(Tier::Lead) | None => Severity::Low,
    };
    if escalated {
        match base {
            Severity::Low => Severity::Medium,
            Severity::Medium => Severity::High,
            Severity::High | Severity::Critical => Severity::Critical,
        }
    } else {
        base
    }
}

/// A penalty counts as a reason while it weighs at least this much.
const MIN_PENALTY: f64 = 1.0;

/// A satisfaction answer at or below this is `low_satisfaction` (SPEC §7):
/// the same line `recommended_action` draws for service recovery, so a
/// warning never cites low satisfaction without recommending it.
const LOW_SATISFACTION_MAX: f64 = 2.0;
/// A recommend (or mapped nps) or repurchase-intent answer below this is
/// low (SPEC §7).
const LOW_ANSWER_BELOW: f64 = 3.0;

/// A warning's reasons: at most one of each code, so inline (the engine
/// looks at the reasons of an open warning each time it evaluates it).
pub type Reasons = arrayvec::ArrayVec<Reason, { ReasonCode::COUNT }>;

/// The sorted codes of a warning's reasons (see [`Reasons`]).
pub type Codes = arrayvec::ArrayVec<ReasonCode, { ReasonCode::COUNT }>;

/// The reasons present at the scored instant, by SPEC §7's fixed lines:
/// they are in answer units, not derived from the quadrant threshold, so
/// tuning the quadrant does not silently change what a warning cites.
pub fn reasons(s: &Scores) -> Reasons {
    let mut r = Reasons::new();
    if s.complaint_penalty >= MIN_PENALTY {
        r.push(Reason::Complaint {
            penalty: s.complaint_penalty,
            count: s.complaints,
            open_high: s.open_complaint,
        });
    }
    if let Some(v) = s.satisfaction.filter(|v| *v <= LOW_SATISFACTION_MAX) {
        r.push(Reason::LowSatisfaction { satisfaction: v });
    }
    if let SurveySource::Survey(sv) = s.survey_source {
        if let Some(v) = sv.recommend.filter(|v| *v < LOW_ANSWER_BELOW) {
            r.push(Reason::LowRecommend { recommend: v });
        }
        if let Some(v) = sv.repurchase_intent.filter(|v| *v < LOW_ANSWER_BELOW) {
            r.push(Reason::LowRepurchaseIntent {
                repurchase_intent: v,
            });
        }
    }
    if s.signal_penalty >= MIN_PENALTY {
        r.push(Reason::CompetitorSignal {
            signals: s.signals.clone(),
            penalty: s.signal_penalty,
        });
    }
    if s.past_gap {
        r.push(Reason::PurchaseGap {
            days_since_purchase: s.days_since_purchase.unwrap_or(0.0),
            expected_gap_days: s.expected_gap_days,
        });
    }
    r
}

/// The recommended action under the risk rule: what the feature pulling
/// the risk up the most calls for; the plain rule when nothing pulls.
pub fn action_for(dominant: Option<Feature>, s: &Scores) -> Action {
    match dominant {
        Some(
            Feature::ComplaintSurge
            | Feature::LowAttitude
            | Feature::AttitudeDrop
            | Feature::NegativeRate
            | Feature::LastingDrop,
        ) => Action::ServiceRecovery,
        Some(Feature::SignalSurge) => Action::RaiseSwitchingCost,
        Some(Feature::PurchaseGap | Feature::PurchaseSlowdown | Feature::SpendDecline) => {
            Action::ReactivationOffer
        }
        Some(Feature::Tenure | Feature::TierPlatinum | Feature::TierGold | Feature::TierIron) => {
            Action::SatisfactionOutreach
        }
        None => recommended_action(s),
    }
}

/// The recommended action, first rule that applies (SPEC §7).
pub fn recommended_action(s: &Scores) -> Action {
    if s.signal_penalty >= MIN_PENALTY {
        Action::RaiseSwitchingCost
    } else if s.complaint_penalty >= MIN_PENALTY
        || s.satisfaction.is_some_and(|v| v <= LOW_SATISFACTION_MAX)
    {
        Action::ServiceRecovery
    } else if s.past_gap {
        Action::ReactivationOffer
    } else {
        Action::SatisfactionOutreach
    }
}

/// What the lifecycle decides at one evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Emit `opened`.
    Open,
    /// Emit `updated`.
    Update,
    /// Emit `cleared`.
    Clear,
    /// Nothing to emit (possibly a change waiting for the cooldown).
    None,
}

/// The lifecycle rule: open when the customer should be warned (spurious,
/// and with the risk rule its risk on the warning side), clear when no
/// longer, update on a change of severity or reason codes — escalations at
/// once, other changes only once the cooldown since the last warning
/// output has passed.
pub fn transition(
    warn: bool,
    open: Option<&OpenWarning>,
    severity: Severity,
    codes: &[ReasonCode],
    at: Millis,
    last_output_at: Option<Millis>,
    cooldown: i64,
) -> Transition {
    match (warn, open) {
        (true, None) => Transition::Open,
        (false, Some(_)) => Transition::Clear,
        (false, None) => Transition::None,
        (true, Some(w)) => {
            if w.severity == severity && w.reasons == codes {
                Transition::None
            } else if severity > w.severity || last_output_at.is_none_or(|l| at - l >= cooldown) {
                Transition::Update
            } else {
                Transition::None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::loyalty::Survey;

    fn scores(satisfaction: Option<f64>, survey: Option<Survey>) -> Scores {
        Scores {
            behaviour: 80.0,
            attitude: 40.0,
            frequency: 1.0,
            wallet: 0.0,
            recency: 1.0,
            expected_gap_days: 10.0,
            days_since_purchase: Some(1.0),
            survey_part: 40.0,
            survey_source: survey.map_or(SurveySource::Prior, SurveySource::Survey),
            satisfaction,
            complaint_penalty: 0.0,
            complaints: 0,
            signal_penalty: 0.0,
            signals: Signals::new(),
            past_gap: false,
            open_complaint: false,
        }
    }

    fn codes_of(s: &Scores) -> Vec<&'static str> {
        reasons(s).iter().map(|r| r.code().into()).collect()
    }

    /// SPEC §7: `low_satisfaction` while the latest satisfaction is <= 2 —
    /// the line service recovery is recommended at, so the two agree.
    #[test]
    fn low_satisfaction_is_two_or_less() {
        for (v, low) in [
            (1.0, true),
            (2.0, true),
            (2.5, false),
            (3.0, false),
            (5.0, false),
        ] {
            let s = scores(Some(v), None);
            assert_eq!(
                codes_of(&s) == ["low_satisfaction"],
                low,
                "satisfaction {v}"
            );
            assert_eq!(
                recommended_action(&s) == Action::ServiceRecovery,
                low,
                "satisfaction {v}"
            );
        }
    }

    /// SPEC §7: recommend (nps mapped) and repurchase intent are low below 3.
    #[test]
    fn low_answers_are_below_three() {
        let survey = |r: f64, p: f64| Survey {
            recommend: Some(r),
            repurchase_intent: Some(p),
        };
        assert_eq!(
            codes_of(&scores(None, Some(survey(2.6, 2.0)))),
            ["low_recommend", "low_repurchase_intent"],
            "nps 4 maps to 2.6"
        );
        assert!(codes_of(&scores(None, Some(survey(3.0, 3.0)))).is_empty());
        assert_eq!(
            codes_of(&scores(None, Some(survey(3.0, 2.99)))),
            ["low_repurchase_intent"]
        );
    }
}
