//! What the engine emits (SPEC §5). Outputs are plain data; the codec turns
//! them into JSON and the adapters decide which topic each goes to.

use super::event::{Id, Minor, Severity};
use super::lifetime::Stake;
use super::loyalty::{Quadrant, Scores};
use super::profile::ValueFigures;
use super::ranking::CutPoints;
use super::risk::Risk;
use super::tier::Tier;
use super::time::Millis;
use super::warning::{Action, OpenWarning, Reasons, WarningAction};

/// The schema name of the cut-points output.
pub const CUTPOINTS_SCHEMA: &str = "tierstream.tier_cutpoints.v1";

/// A timer that can cause outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum TimerKind {
    /// Stream time entered a new month.
    MonthClose,
    /// Stream time passed a midnight.
    Daily,
}

impl TimerKind {
    /// Every kind, month closes first (the order a midnight runs them in).
    pub const ALL: [TimerKind; 2] = [TimerKind::MonthClose, TimerKind::Daily];

    /// The wire name used in `cause`.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Why an output was emitted: an input event or a timer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// The input event with this `event_id`.
    Event(Id),
    /// A stream-time timer.
    Timer(TimerKind),
}

/// Direction of a tier change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Direction {
    /// The customer's first tier.
    Initial,
    /// To a higher tier (immediate, may skip tiers).
    Upgrade,
    /// One tier down, at month close.
    Downgrade,
}

impl Direction {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// The figures a tier decision used, reported as `inputs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TierInputs {
    /// Window totals at the decision instant.
    pub figures: ValueFigures,
    /// Threshold of the tier the decision is about (`None` for lead).
    pub threshold: Option<Minor>,
    /// Line below which the tier is downgraded.
    pub downgrade_below: Option<Minor>,
    /// Line below which the tier is at risk.
    pub at_risk_below: Option<Minor>,
    /// When the customer entered its tier before this decision.
    pub tier_since: Option<Millis>,
}

/// The payload of an output.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputBody {
    /// `tierstream.tier_changed.v1`
    TierChanged {
        /// Previous tier; `None` for the initial assignment.
        from: Option<Tier>,
        /// New tier.
        to: Tier,
        /// initial / upgrade / downgrade.
        direction: Direction,
        /// Short machine-readable reason code.
        reason: &'static str,
        /// The fake-big-customer flag at the decision.
        fake_big_customer: bool,
        /// Figures the decision used.
        inputs: TierInputs,
    },
    /// `tierstream.tier_at_risk.v1`
    TierAtRisk {
        /// The tier at risk.
        tier: Tier,
        /// Value needed to be safe again.
        shortfall: Minor,
        /// First month close that downgrades if nothing changes (`None`: never).
        downgrade_at: Option<Millis>,
        /// Figures the decision used.
        inputs: TierInputs,
    },
    /// `tierstream.churn_warning.v1`
    ChurnWarning(Box<ChurnWarning>),
    /// `tierstream.profile.v1`: the latest profile (compacted topic only;
    /// does not take a `seq`, it carries the customer's current one).
    Profile(Box<ProfileView>),
    /// The customer was forgotten: a tombstone on the profiles topic.
    ProfileErased,
    /// `tierstream.tier_cutpoints.v1`: the percentile cut points changed at
    /// a month close. Not about a customer: `customer_id` is empty, no
    /// `seq` is taken, and of several tasks only task 0 emits it.
    TierCutpoints(CutPoints),
}

/// A customer's profile as reported outside: on the profiles topic and by
/// the HTTP customer endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileView {
    /// Current tier.
    pub tier: Option<Tier>,
    /// Since when.
    pub tier_since: Option<Millis>,
    /// Current quadrant (`None`: no attitudinal evidence yet).
    pub quadrant: Option<Quadrant>,
    /// Scores at the instant of the view (`None`: no attitude).
    pub scores: Option<Scores>,
    /// Value figures over the window.
    pub figures: ValueFigures,
    /// The fake-big-customer flag.
    pub fake_big_customer: bool,
    /// The open churn warning, if any.
    pub warning: Option<OpenWarning>,
}

/// A churn-warning output (boxed in `OutputBody`: it is the largest).
#[derive(Debug, Clone, PartialEq)]
pub struct ChurnWarning {
    /// opened / updated / cleared.
    pub action: WarningAction,
    /// Stable id of the warning across its lifecycle.
    pub warning_id: String,
    /// Severity (for `cleared`: the severity of the warning being cleared).
    pub severity: Severity,
    /// Tier at the decision.
    pub tier: Option<Tier>,
    /// Quadrant at the decision (`None` when cleared by `forget`).
    pub quadrant: Option<Quadrant>,
    /// Reasons with their evidence (empty when cleared).
    pub reasons: Reasons,
    /// What to do (`None` when cleared by `forget`).
    pub recommended_action: Option<Action>,
    /// Scores and value at the decision (`None` when cleared by `forget`).
    pub scores: Option<Scores>,
    /// Churn risk at the decision (`None` when cleared by `forget`).
    pub risk: Option<Risk>,
    /// The money at stake at the decision (`None` when cleared by `forget`).
    pub stake: Option<Stake>,
    /// value_12m at the decision.
    pub value_12m: Minor,
}

/// One output event for one customer.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// The customer (also the Kafka key).
    pub customer_id: Id,
    /// Per-customer sequence number, shared by all outputs.
    pub seq: u64,
    /// Event time that caused it.
    pub at: Millis,
    /// The input event or timer behind it.
    pub cause: Cause,
    /// What happened.
    pub body: OutputBody,
}

/// Namespace for output ids, so they never collide with other UUIDv5 users.
const OUTPUT_ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x5d1e_7c1e_a2f4_4b7e_9c55_7e25_7ea3_0001);

/// The id of output `seq` of a customer (also used as the id of a warning
/// opened by that output): the UUIDv5 of the name `customer_id`, a zero
/// byte, the decimal `seq`. Hashed with the `sha1` crate, which uses the
/// CPU's SHA instructions where it has them (`Uuid::new_v5`'s portable
/// SHA-1 took a sixth of output encoding's instructions), with no
/// allocation but the id.
pub fn output_id(customer_id: &str, seq: u64) -> String {
    use sha1::{Digest, Sha1};
    let hash = Sha1::new()
        .chain_update(OUTPUT_ID_NAMESPACE.as_bytes())
        .chain_update(customer_id.as_bytes())
        .chain_update([0])
        .chain_update(itoa::Buffer::new().format(seq).as_bytes())
        .finalize();
    let mut bytes = [0; 16];
    bytes.copy_from_slice(&hash[..16]);
    let id = uuid::Builder::from_sha1_bytes(bytes).into_uuid();
    id.hyphenated()
        .encode_lower(&mut uuid::Uuid::encode_buffer())
        .to_owned()
}

impl Output {
    /// Whether this output is an event with its own `seq` (tier change,
    /// at-risk, churn warning), as opposed to a profile snapshot.
    pub fn is_event(&self) -> bool {
        !matches!(
            self.body,
            OutputBody::Profile(_) | OutputBody::ProfileErased
        )
    }

    /// The deterministic output id: derived from `customer_id` and `seq`
    /// only (SPEC §7), so a replay or a retried transaction reproduces it and
    /// consumers can de-duplicate. Cut points have no customer: theirs is
    /// derived from the schema and the month-close instant.
    pub fn event_id(&self) -> String {
        match &self.body {
            OutputBody::TierCutpoints(c) => output_id(CUTPOINTS_SCHEMA, c.month.ms() as u64),
            _ => output_id(&self.customer_id, self.seq),
        }
    }

    /// The schema name written in the body and the `tierstream.schema` header.
    pub fn schema(&self) -> &'static str {
        match self.body {
            OutputBody::TierChanged { .. } => "tierstream.tier_changed.v1",
            OutputBody::TierAtRisk { .. } => "tierstream.tier_at_risk.v1",
            OutputBody::ChurnWarning(_) => "tierstream.churn_warning.v1",
            OutputBody::Profile(_) | OutputBody::ProfileErased => "tierstream.profile.v1",
            OutputBody::TierCutpoints(_) => CUTPOINTS_SCHEMA,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_output_id_is_the_uuid_v5_of_customer_and_seq() {
        let long = "x".repeat(128);
        for (customer, seq) in [
            ("c0040678", 1),
            ("", 0),
            ("ü-ñ 名前", u64::MAX),
            (long.as_str(), 42),
        ] {
            let name = format!("{customer}\0{seq}");
            assert_eq!(
                output_id(customer, seq),
                uuid::Uuid::new_v5(&OUTPUT_ID_NAMESPACE, name.as_bytes()).to_string()
            );
        }
        // One an earlier version wrote, so the namespace cannot drift.
        assert_eq!(
            output_id("c0040678", 1),
            "0f8cb389-d86f-5c45-8258-e605ad4d3237"
        );
    }
}
