//! Output events as JSON (SPEC §5), encoded straight from typed wire
//! structs: one struct per schema, so the replay file, the Kafka topics and
//! the HTTP endpoint carry the same fields, and no `Value` tree is built
//! per output.
//!
//! Field order is the byte order of the names (the order the earlier
//! `serde_json::Map` encoding had), so the bytes of every output are stable
//! across versions; a test checks each struct is declared sorted. Money is
//! written exactly from minor units, never through an `f64`.

use crate::domain::event::{Minor, Signal};
use crate::domain::loyalty::{Scores, SurveySource};
use crate::domain::output::{Cause, ChurnWarning, Output, OutputBody, ProfileView, TierInputs};
use crate::domain::risk::{Factor, FactorEvidence};
use crate::domain::time::{format_rfc3339, rfc3339_bytes, Millis};
use crate::domain::warning::{OpenWarning, Reason};
use serde::{Serialize, Serializer};
use serde_json::Value;

/// Money in minor units, written as a JSON number with up to 2 decimals
/// (`239.79`, `239.7`, `100.0`): the digits of the amount itself.
#[derive(Debug, Clone, Copy)]
pub struct Money(pub Minor);

impl Money {
    /// The digits, written into `buf` (an `i64` of minor units takes at
    /// most 22 bytes): no allocation per amount, as `format!` and a
    /// `Number` parsed from its `String` took a quarter of output encoding.
    fn digits(self, buf: &mut [u8; 24]) -> &str {
        let abs = self.0.unsigned_abs();
        let (mut units, cents) = (abs / 100, abs % 100);
        let mut at = buf.len();
        let mut push = |byte: u8| {
            at -= 1;
            buf[at] = byte;
        };
        match cents {
            0 => push(b'0'),
            c if c % 10 == 0 => push(b'0' + (c / 10) as u8),
            c => {
                push(b'0' + (c % 10) as u8);
                push(b'0' + (c / 10) as u8);
            }
        }
        push(b'.');
        loop {
            push(b'0' + (units % 10) as u8);
            units /= 10;
            if units == 0 {
                break;
            }
        }
        if self.0 < 0 {
            push(b'-');
        }
        std::str::from_utf8(&buf[at..]).expect("ASCII digits")
    }
}

/// The struct name by which serde_json's serializers recognise a raw value
/// (what `RawValue` serializes as): its one field's text is written as it
/// is, or parsed by `to_value`. serde_json does not export it; a test
/// holds Money to it, to bytes and to a `Value`.
const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Raw digits keep the amount as it is (an `f64` would not), and,
        // made here, need no check: going through a `RawValue` parsed them
        // back, 7% of output encoding's instructions.
        use serde::ser::SerializeStruct;
        let mut buf = [0; 24];
        let mut raw = s.serialize_struct(RAW_VALUE_TOKEN, 1)?;
        raw.serialize_field(RAW_VALUE_TOKEN, self.digits(&mut buf))?;
        raw.end()
    }
}

/// A score or rate rounded to 2 decimals.
#[derive(Debug, Clone, Copy)]
pub struct Rounded(pub f64);

impl Serialize for Rounded {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64((self.0 * 100.0).round() / 100.0)
    }
}

/// An instant, written as RFC 3339 (UTC, milliseconds, `Z`).
#[derive(Debug, Clone, Copy)]
pub struct Rfc3339(pub Millis);

impl Serialize for Rfc3339 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match rfc3339_bytes(self.0) {
            Some(b) => s.serialize_str(std::str::from_utf8(&b).expect("ASCII")),
            None => s.serialize_str(&format_rfc3339(self.0)),
        }
    }
}

/// An instant as a JSON value (the HTTP endpoint's `as_of`).
pub fn time(t: Millis) -> Value {
    Value::String(format_rfc3339(t))
}

/// `cause`: the input event or the timer behind an output.
#[derive(Serialize)]
#[serde(untagged)]
enum CauseWire<'a> {
    Event { event_id: &'a str },
    Timer { timer: &'static str },
}

fn cause(c: &Cause) -> CauseWire<'_> {
    match c {
        Cause::Event(id) => CauseWire::Event { event_id: id },
        Cause::Timer(kind) => CauseWire::Timer {
            timer: kind.as_str(),
        },
    }
}

/// The window totals and thresholds behind a tier decision.
#[derive(Serialize)]
struct TierInputsWire {
    #[serde(skip_serializing_if = "Option::is_none")]
    at_risk_below: Option<Money>,
    #[serde(skip_serializing_if = "Option::is_none")]
    downgrade_below: Option<Money>,
    purchases_12m: u32,
    revenue_12m: Money,
    #[serde(skip_serializing_if = "Option::is_none")]
    threshold: Option<Money>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tier_since: Option<Rfc3339>,
    value_12m: Money,
}

fn tier_inputs(i: &TierInputs) -> TierInputsWire {
    TierInputsWire {
        at_risk_below: i.at_risk_below.map(Money),
        downgrade_below: i.downgrade_below.map(Money),
        purchases_12m: i.figures.purchases_12m,
        revenue_12m: Money(i.figures.revenue_12m),
        threshold: i.threshold.map(Money),
        tier_since: i.tier_since.map(Rfc3339),
        value_12m: Money(i.figures.value_12m),
    }
}

/// The scores and the facts behind them (`value_12m` only on warnings).
#[derive(Serialize)]
struct ScoreInputsWire {
    attitude: Rounded,
    behaviour: Rounded,
    complaint_penalty: Rounded,
    days_since_purchase: Option<Rounded>,
    expected_gap_days: Rounded,
    frequency: Rounded,
    recency: Rounded,
    share_of_wallet_factor: Rounded,
    signal_penalty: Rounded,
    survey_part: Rounded,
    survey_source: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_12m: Option<Money>,
}

fn score_inputs(s: &Scores, value_12m: Option<Minor>) -> ScoreInputsWire {
    ScoreInputsWire {
        attitude: Rounded(s.attitude),
        behaviour: Rounded(s.behaviour),
        complaint_penalty: Rounded(s.complaint_penalty),
        days_since_purchase: s.days_since_purchase.map(Rounded),
        expected_gap_days: Rounded(s.expected_gap_days),
        frequency: Rounded(s.frequency),
        recency: Rounded(s.recency),
        share_of_wallet_factor: Rounded(s.wallet),
        signal_penalty: Rounded(s.signal_penalty),
        survey_part: Rounded(s.survey_part),
        survey_source: match s.survey_source {
            SurveySource::Survey(_) => "survey",
            SurveySource::Satisfaction(_) => "satisfaction",
            SurveySource::Prior => "neutral_prior",
        },
        value_12m: value_12m.map(Money),
    }
}

/// A churn warning's reason: its code and the evidence behind it.
#[derive(Serialize)]
struct ReasonWire<'a> {
    code: &'static str,
    evidence: Evidence<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Evidence<'a> {
    Complaint {
        complaints: u32,
        open_high_or_critical: bool,
        penalty: Rounded,
    },
    Satisfaction {
        satisfaction: Rounded,
    },
    Recommend {
        recommend: Rounded,
    },
    RepurchaseIntent {
        repurchase_intent: Rounded,
    },
    CompetitorSignal {
        penalty: Rounded,
        signals: &'a [Signal],
    },
    PurchaseGap {
        days_since_purchase: Rounded,
        expected_gap_days: Rounded,
    },
}

fn reason(r: &Reason) -> ReasonWire<'_> {
    let evidence = match r {
        Reason::Complaint {
            penalty,
            count,
            open_high,
        } => Evidence::Complaint {
            complaints: *count,
            open_high_or_critical: *open_high,
            penalty: Rounded(*penalty),
        },
        Reason::LowSatisfaction { satisfaction } => Evidence::Satisfaction {
            satisfaction: Rounded(*satisfaction),
        },
        Reason::LowRecommend { recommend } => Evidence::Recommend {
            recommend: Rounded(*recommend),
        },
        Reason::LowRepurchaseIntent { repurchase_intent } => Evidence::RepurchaseIntent {
            repurchase_intent: Rounded(*repurchase_intent),
        },
        Reason::CompetitorSignal { signals, penalty } => Evidence::CompetitorSignal {
            penalty: Rounded(*penalty),
            signals,
        },
        Reason::PurchaseGap {
            days_since_purchase,
            expected_gap_days,
        } => Evidence::PurchaseGap {
            days_since_purchase: Rounded(*days_since_purchase),
            expected_gap_days: Rounded(*expected_gap_days),
        },
    };
    ReasonWire {
        code: r.code().as_str(),
        evidence,
    }
}

/// One of a warning's `risk_factors`.
#[derive(Serialize)]
struct RiskFactorWire {
    evidence: FactorEvidenceWire,
    factor: &'static str,
    share: Rounded,
}

/// The evidence of a risk factor, by kind.
#[derive(Serialize)]
#[serde(untagged)]
enum FactorEvidenceWire {
    Surge {
        baseline_per_60_days: Rounded,
        recent: u32,
    },
    Rate {
        negatives_240_days: u32,
        purchases_240_days: u32,
    },
    Attitude {
        survey_part: Rounded,
    },
    Drop {
        from: Rounded,
        to: Rounded,
    },
    Gap {
        days_since_purchase: Option<Rounded>,
        expected_gap_days: Rounded,
    },
    Spend {
        prior_3m_average: Money,
        recent_3m: Money,
    },
    Tenure {
        months: i32,
    },
    Tier {
        tier: &'static str,
    },
}

fn risk_factor(f: &Factor) -> RiskFactorWire {
    let evidence = match &f.evidence {
        FactorEvidence::Surge {
            recent,
            baseline_per_60_days,
        } => FactorEvidenceWire::Surge {
            baseline_per_60_days: Rounded(*baseline_per_60_days),
            recent: *recent,
        },
        FactorEvidence::Rate {
            negatives,
            purchases,
        } => FactorEvidenceWire::Rate {
            negatives_240_days: *negatives,
            purchases_240_days: *purchases,
        },
        FactorEvidence::Attitude { survey_part } => FactorEvidenceWire::Attitude {
            survey_part: Rounded(*survey_part),
        },
        FactorEvidence::Drop { from, to } => FactorEvidenceWire::Drop {
            from: Rounded(*from),
            to: Rounded(*to),
        },
        FactorEvidence::Gap {
            days_since_purchase,
            expected_gap_days,
        } => FactorEvidenceWire::Gap {
            days_since_purchase: days_since_purchase.map(Rounded),
            expected_gap_days: Rounded(*expected_gap_days),
        },
        FactorEvidence::Spend {
            recent_3m,
            prior_3m_average,
        } => FactorEvidenceWire::Spend {
            prior_3m_average: Money(*prior_3m_average),
            recent_3m: Money(*recent_3m),
        },
        FactorEvidence::Tenure { months } => FactorEvidenceWire::Tenure { months: *months },
        FactorEvidence::Tier { tier } => FactorEvidenceWire::Tier {
            tier: tier.as_str(),
        },
    };
    RiskFactorWire {
        evidence,
        factor: f.feature.as_str(),
        share: Rounded(f.share),
    }
}

/// The fields every output shares.
struct Envelope<'a> {
    at: Rfc3339,
    cause: CauseWire<'a>,
    customer_id: &'a str,
    event_id: String,
    schema: &'static str,
    seq: u64,
}

fn envelope(o: &Output) -> Envelope<'_> {
    Envelope {
        at: Rfc3339(o.at),
        cause: cause(&o.cause),
        customer_id: &o.customer_id,
        event_id: o.event_id(),
        schema: o.schema(),
        seq: o.seq,
    }
}

/// `tierstream.tier_changed.v1`
#[derive(Serialize)]
struct TierChangedWire<'a> {
    at: Rfc3339,
    cause: CauseWire<'a>,
    customer_id: &'a str,
    direction: &'static str,
    event_id: String,
    fake_big_customer: bool,
    from: Option<&'static str>,
    inputs: TierInputsWire,
    reason: &'static str,
    schema: &'static str,
    seq: u64,
    to: &'static str,
}

/// `tierstream.tier_at_risk.v1`
#[derive(Serialize)]
struct TierAtRiskWire<'a> {
    at: Rfc3339,
    cause: CauseWire<'a>,
    customer_id: &'a str,
    downgrade_at: Option<Rfc3339>,
    event_id: String,
    inputs: TierInputsWire,
    schema: &'static str,
    seq: u64,
    shortfall: Money,
    tier: &'static str,
}

/// `tierstream.tier_cutpoints.v1`
#[derive(Serialize)]
struct TierCutpointsWire<'a> {
    at: Rfc3339,
    cause: CauseWire<'a>,
    customers: u64,
    event_id: String,
    gold: Money,
    iron: Money,
    platinum: Money,
    schema: &'static str,
}

/// `tierstream.churn_warning.v1`
#[derive(Serialize)]
struct ChurnWarningWire<'a> {
    action: &'static str,
    at: Rfc3339,
    attitude: Option<Rounded>,
    behaviour: Option<Rounded>,
    cause: CauseWire<'a>,
    churn_risk: Option<Rounded>,
    customer_id: &'a str,
    event_id: String,
    inputs: ChurnWarningInputs,
    priority: Option<u8>,
    projected_value: Option<Money>,
    quadrant: Option<&'static str>,
    reasons: Vec<ReasonWire<'a>>,
    recommended_action: Option<&'static str>,
    risk_factors: Vec<RiskFactorWire>,
    schema: &'static str,
    seq: u64,
    severity: &'static str,
    tier: Option<&'static str>,
    value_12m: Money,
    value_at_risk: Option<Money>,
    warning_id: &'a str,
}

/// A warning's inputs: the scores with `value_12m`, or only `value_12m`
/// when there are no scores (cleared by `forget`).
#[derive(Serialize)]
#[serde(untagged)]
enum ChurnWarningInputs {
    Scores(ScoreInputsWire),
    ValueOnly { value_12m: Money },
}

/// The open warning as a profile shows it.
#[derive(Serialize)]
struct OpenWarningWire<'a> {
    reasons: Vec<&'static str>,
    severity: &'static str,
    warning_id: &'a str,
}

/// The profile fields, as on the profiles topic (with the envelope) and
/// the HTTP endpoint (with its own).
#[derive(Serialize)]
pub struct ProfileFields<'a> {
    attitude: Option<Rounded>,
    behaviour: Option<Rounded>,
    fake_big_customer: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    inputs: Option<ScoreInputsWire>,
    purchases_12m: u32,
    quadrant: Option<&'static str>,
    revenue_12m: Money,
    tier: Option<&'static str>,
    tier_since: Option<Rfc3339>,
    value_12m: Money,
    warning: Option<OpenWarningWire<'a>>,
}

impl<'a> From<&'a ProfileView> for ProfileFields<'a> {
    fn from(p: &'a ProfileView) -> Self {
        ProfileFields {
            attitude: p.scores.as_ref().map(|s| Rounded(s.attitude)),
            behaviour: p.scores.as_ref().map(|s| Rounded(s.behaviour)),
            fake_big_customer: p.fake_big_customer,
            inputs: p.scores.as_ref().map(|s| score_inputs(s, None)),
            purchases_12m: p.figures.purchases_12m,
            quadrant: p.quadrant.map(|q| q.as_str()),
            revenue_12m: Money(p.figures.revenue_12m),
            tier: p.tier.map(|t| t.as_str()),
            tier_since: p.tier_since.map(Rfc3339),
            value_12m: Money(p.figures.value_12m),
            warning: p.warning.as_ref().map(open_warning),
        }
    }
}

fn open_warning(w: &OpenWarning) -> OpenWarningWire<'_> {
    OpenWarningWire {
        reasons: w.reasons.iter().map(|r| r.as_str()).collect(),
        severity: w.severity.as_str(),
        warning_id: &w.warning_id,
    }
}

/// `tierstream.profile.v1`: the envelope's fields merged in name order
/// with the profile's.
struct ProfileWire<'a> {
    envelope: Envelope<'a>,
    fields: ProfileFields<'a>,
}

impl Serialize for ProfileWire<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let e = &self.envelope;
        let f = &self.fields;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("at", &e.at)?;
        m.serialize_entry("attitude", &f.attitude)?;
        m.serialize_entry("behaviour", &f.behaviour)?;
        m.serialize_entry("cause", &e.cause)?;
        m.serialize_entry("customer_id", e.customer_id)?;
        m.serialize_entry("event_id", &e.event_id)?;
        m.serialize_entry("fake_big_customer", &f.fake_big_customer)?;
        if let Some(i) = &f.inputs {
            m.serialize_entry("inputs", i)?;
        }
        m.serialize_entry("purchases_12m", &f.purchases_12m)?;
        m.serialize_entry("quadrant", &f.quadrant)?;
        m.serialize_entry("revenue_12m", &f.revenue_12m)?;
        m.serialize_entry("schema", e.schema)?;
        m.serialize_entry("seq", &e.seq)?;
        m.serialize_entry("tier", &f.tier)?;
        m.serialize_entry("tier_since", &f.tier_since)?;
        m.serialize_entry("value_12m", &f.value_12m)?;
        m.serialize_entry("warning", &f.warning)?;
        m.end()
    }
}

/// Encodes one output with `encode` (to bytes or to a `Value`); `None`
/// for a tombstone.
fn encode<T>(o: &Output, encode: impl FnOnce(&dyn erased::Encode) -> T) -> Option<T> {
    let e = envelope(o);
    Some(match &o.body {
        OutputBody::TierChanged {
            from,
            to,
            direction,
            reason,
            fake_big_customer,
            inputs,
        } => encode(&TierChangedWire {
            at: e.at,
            cause: e.cause,
            customer_id: e.customer_id,
            direction: direction.as_str(),
            event_id: e.event_id,
            fake_big_customer: *fake_big_customer,
            from: from.map(|t| t.as_str()),
            inputs: tier_inputs(inputs),
            reason,
            schema: e.schema,
            seq: e.seq,
            to: to.as_str(),
        }),
        OutputBody::TierAtRisk {
            tier,
            shortfall,
            downgrade_at,
            inputs,
        } => encode(&TierAtRiskWire {
            at: e.at,
            cause: e.cause,
            customer_id: e.customer_id,
            downgrade_at: downgrade_at.map(Rfc3339),
            event_id: e.event_id,
            inputs: tier_inputs(inputs),
            schema: e.schema,
            seq: e.seq,
            shortfall: Money(*shortfall),
            tier: tier.as_str(),
        }),
        OutputBody::ChurnWarning(w) => encode(&churn_warning(e, w)),
        OutputBody::Profile(p) => encode(&ProfileWire {
            envelope: e,
            fields: ProfileFields::from(&**p),
        }),
        OutputBody::ProfileErased => return None,
        OutputBody::TierCutpoints(c) => encode(&TierCutpointsWire {
            at: e.at,
            cause: e.cause,
            customers: c.customers,
            event_id: e.event_id,
            gold: Money(c.gold),
            iron: Money(c.iron),
            platinum: Money(c.platinum),
            schema: e.schema,
        }),
    })
}

fn churn_warning<'a>(e: Envelope<'a>, w: &'a ChurnWarning) -> ChurnWarningWire<'a> {
    ChurnWarningWire {
        action: w.action.as_str(),
        at: e.at,
        attitude: w.scores.as_ref().map(|s| Rounded(s.attitude)),
        behaviour: w.scores.as_ref().map(|s| Rounded(s.behaviour)),
        cause: e.cause,
        churn_risk: w.risk.as_ref().map(|r| Rounded(r.value)),
        customer_id: e.customer_id,
        event_id: e.event_id,
        inputs: match &w.scores {
            Some(s) => ChurnWarningInputs::Scores(score_inputs(s, Some(w.value_12m))),
            None => ChurnWarningInputs::ValueOnly {
                value_12m: Money(w.value_12m),
            },
        },
        priority: w.stake.map(|s| s.priority),
        projected_value: w.stake.map(|s| Money(s.projected_value)),
        quadrant: w.quadrant.map(|q| q.as_str()),
        reasons: w.reasons.iter().map(reason).collect(),
        recommended_action: w.recommended_action.map(|a| a.as_str()),
        risk_factors: w
            .risk
            .as_ref()
            .map_or_else(Vec::new, |r| r.factors.iter().map(risk_factor).collect()),
        schema: e.schema,
        seq: e.seq,
        severity: w.severity.as_str(),
        tier: w.tier.map(|t| t.as_str()),
        value_12m: Money(w.value_12m),
        value_at_risk: w.stake.map(|s| Money(s.value_at_risk)),
        warning_id: &w.warning_id,
    }
}

/// `Serialize` is not object safe; this is the one thing `encode` needs of
/// a wire struct.
mod erased {
    /// A wire struct, encodable to bytes or to a JSON value.
    pub trait Encode {
        fn bytes(&self) -> Vec<u8>;
        fn value(&self) -> serde_json::Value;
    }

    impl<T: serde::Serialize> Encode for T {
        fn bytes(&self) -> Vec<u8> {
            // Room for a typical output (`to_vec` starts at 128 bytes and
            // grew twice for one).
            let mut out = Vec::with_capacity(512);
            serde_json::to_writer(&mut out, self).expect("wire structs serialize");
            out
        }
        fn value(&self) -> serde_json::Value {
            serde_json::to_value(self).expect("wire structs serialize")
        }
    }
}

/// The JSON document of one output (`Null` for a tombstone).
pub fn to_json(o: &Output) -> Value {
    encode(o, |w| w.value()).unwrap_or(Value::Null)
}

/// The serialized bytes of one output; `None` for a tombstone.
pub fn to_bytes(o: &Output) -> Option<Vec<u8>> {
    encode(o, |w| w.bytes())
}

/// The output as a CloudEvent in structured JSON mode (CloudEvents 1.0):
/// the plain output is the `data`, its event id, schema, customer and
/// instant become `id`, `type`, `subject` and `time`, so event routers and
/// schema registries that speak CloudEvents need no tierstream knowledge.
/// `None` for a tombstone (it stays a tombstone).
pub fn to_cloudevent_bytes(o: &Output, source: &str) -> Option<Vec<u8>> {
    let data = to_json(o);
    if data.is_null() {
        return None;
    }
    let event = serde_json::json!({
        "specversion": "1.0",
        "id": o.event_id(),
        "source": source,
        "type": o.schema(),
        "subject": o.customer_id.as_str(),
        "time": time(o.at),
        "datacontenttype": "application/json",
        "data": data,
    });
    Some(serde_json::to_vec(&event).expect("a JSON value always serializes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_written_from_its_minor_units() {
        let cases = [
            (23_979, "239.79"),
            (23_970, "239.7"),
            (10_000, "100.0"),
            (5, "0.05"),
            (-5, "-0.05"),
            (-120_050, "-1200.5"),
            (0, "0.0"),
        ];
        for (minor, text) in cases {
            assert_eq!(serde_json::to_string(&Money(minor)).unwrap(), text);
            assert_eq!(
                serde_json::to_value(Money(minor)).unwrap(),
                serde_json::from_str::<Value>(text).unwrap()
            );
            // The digits an f64 round trip used to give, for the same amount.
            assert_eq!(
                serde_json::to_string(&(minor as f64 / 100.0)).unwrap(),
                text,
                "{minor}"
            );
        }
        // Beyond the digits an f64 keeps, still exact.
        assert_eq!(
            serde_json::to_string(&Money(i64::MIN)).unwrap(),
            "-92233720368547758.08"
        );
    }

    /// Declared order is name order, so the bytes match a sorted map.
    #[test]
    fn wire_structs_write_their_fields_in_name_order() {
        use crate::domain::output::TimerKind;
        use crate::domain::profile::ValueFigures;
        let view = ProfileView {
            tier: None,
            tier_since: Some(Millis::from_ms(1)),
            quadrant: None,
            scores: None,
            figures: ValueFigures {
                value_12m: 1,
                revenue_12m: 2,
                purchases_12m: 3,
            },
            fake_big_customer: false,
            warning: None,
        };
        let o = Output {
            customer_id: "c".into(),
            seq: 1,
            at: Millis::from_ms(0),
            cause: Cause::Timer(TimerKind::Daily),
            body: OutputBody::Profile(Box::new(view)),
        };
        let text = String::from_utf8(to_bytes(&o).unwrap()).unwrap();
        let sorted: serde_json::Map<String, Value> = serde_json::from_str(&text).unwrap();
        assert_eq!(text, serde_json::to_string(&sorted).unwrap());
    }
}
