//! Output events as JSON (SPEC §5). One function per schema piece, so the
//! replay file and the Kafka topics carry byte-identical records.

use crate::domain::event::Minor;
use crate::domain::loyalty::{Scores, SurveySource};
use crate::domain::output::{Cause, ChurnWarning, Output, OutputBody, ProfileView, TierInputs};
use crate::domain::time::{format_rfc3339, Millis};
use crate::domain::warning::Reason;
use serde_json::{json, Map, Value};

/// Money as a JSON number with 2 decimals (minor units / 100).
pub fn money(minor: Minor) -> Value {
    json!(minor as f64 / 100.0)
}

/// A score or rate as a JSON number rounded to 2 decimals.
pub fn rounded(x: f64) -> Value {
    json!((x * 100.0).round() / 100.0)
}

/// An instant as an RFC 3339 JSON string.
pub fn time(t: Millis) -> Value {
    Value::String(format_rfc3339(t))
}

fn cause(c: &Cause) -> Value {
    match c {
        Cause::Event(id) => json!({ "event_id": id }),
        Cause::Timer(kind) => json!({ "timer": kind.as_str() }),
    }
}

fn tier_inputs(i: &TierInputs) -> Value {
    let mut m = Map::new();
    m.insert("value_12m".into(), money(i.figures.value_12m));
    m.insert("revenue_12m".into(), money(i.figures.revenue_12m));
    m.insert("purchases_12m".into(), json!(i.figures.purchases_12m));
    if let Some(t) = i.threshold {
        m.insert("threshold".into(), money(t));
    }
    if let Some(t) = i.downgrade_below {
        m.insert("downgrade_below".into(), money(t));
    }
    if let Some(t) = i.at_risk_below {
        m.insert("at_risk_below".into(), money(t));
    }
    if let Some(t) = i.tier_since {
        m.insert("tier_since".into(), time(t));
    }
    Value::Object(m)
}

/// The JSON document of one output, with the envelope every schema shares.
pub fn to_json(o: &Output) -> Value {
    let mut m = Map::new();
    m.insert("schema".into(), json!(o.schema()));
    m.insert("event_id".into(), json!(o.event_id()));
    m.insert("customer_id".into(), json!(o.customer_id));
    m.insert("seq".into(), json!(o.seq));
    m.insert("at".into(), time(o.at));
    m.insert("cause".into(), cause(&o.cause));
    match &o.body {
        OutputBody::TierChanged {
            from,
            to,
            direction,
            reason,
            fake_big_customer,
            inputs,
        } => {
            m.insert("from".into(), json!(from.map(|t| t.as_str())));
            m.insert("to".into(), json!(to.as_str()));
            m.insert("direction".into(), json!(direction.as_str()));
            m.insert("reason".into(), json!(reason));
            m.insert("fake_big_customer".into(), json!(fake_big_customer));
            m.insert("inputs".into(), tier_inputs(inputs));
        }
        OutputBody::TierAtRisk {
            tier,
            shortfall,
            downgrade_at,
            inputs,
        } => {
            m.insert("tier".into(), json!(tier.as_str()));
            m.insert("shortfall".into(), money(*shortfall));
            m.insert(
                "downgrade_at".into(),
                downgrade_at.map_or(Value::Null, time),
            );
            m.insert("inputs".into(), tier_inputs(inputs));
        }
        OutputBody::ChurnWarning(w) => churn_warning(&mut m, w),
        OutputBody::Profile(p) => profile(&mut m, p),
        OutputBody::ProfileErased => return Value::Null,
    }
    Value::Object(m)
}

/// The profile fields, as on the profiles topic and the HTTP endpoint.
pub fn profile(m: &mut Map<String, Value>, p: &ProfileView) {
    m.insert("tier".into(), json!(p.tier.map(|t| t.as_str())));
    m.insert("tier_since".into(), p.tier_since.map_or(Value::Null, time));
    m.insert("quadrant".into(), json!(p.quadrant.map(|q| q.as_str())));
    m.insert(
        "behaviour".into(),
        p.scores
            .as_ref()
            .map_or(Value::Null, |s| rounded(s.behaviour)),
    );
    m.insert(
        "attitude".into(),
        p.scores
            .as_ref()
            .map_or(Value::Null, |s| rounded(s.attitude)),
    );
    m.insert("value_12m".into(), money(p.figures.value_12m));
    m.insert("revenue_12m".into(), money(p.figures.revenue_12m));
    m.insert("purchases_12m".into(), json!(p.figures.purchases_12m));
    m.insert("fake_big_customer".into(), json!(p.fake_big_customer));
    m.insert(
        "warning".into(),
        p.warning.as_ref().map_or(Value::Null, |w| {
            json!({
                "warning_id": w.warning_id,
                "severity": w.severity.as_str(),
                "reasons": w.reasons.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
            })
        }),
    );
    if let Some(s) = &p.scores {
        m.insert("inputs".into(), Value::Object(score_inputs(s)));
    }
}

fn churn_warning(m: &mut Map<String, Value>, w: &ChurnWarning) {
    m.insert("action".into(), json!(w.action.as_str()));
    m.insert("warning_id".into(), json!(w.warning_id));
    m.insert("severity".into(), json!(w.severity.as_str()));
    m.insert("tier".into(), json!(w.tier.map(|t| t.as_str())));
    m.insert("quadrant".into(), json!(w.quadrant.map(|q| q.as_str())));
    m.insert(
        "behaviour".into(),
        w.scores
            .as_ref()
            .map_or(Value::Null, |s| rounded(s.behaviour)),
    );
    m.insert(
        "attitude".into(),
        w.scores
            .as_ref()
            .map_or(Value::Null, |s| rounded(s.attitude)),
    );
    m.insert("value_12m".into(), money(w.value_12m));
    m.insert(
        "reasons".into(),
        Value::Array(w.reasons.iter().map(reason).collect()),
    );
    m.insert(
        "recommended_action".into(),
        json!(w.recommended_action.map(|a| a.as_str())),
    );
    let mut inputs = w.scores.as_ref().map(score_inputs).unwrap_or_default();
    inputs.insert("value_12m".into(), money(w.value_12m));
    m.insert("inputs".into(), Value::Object(inputs));
}

fn score_inputs(s: &Scores) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("behaviour".into(), rounded(s.behaviour));
    m.insert("attitude".into(), rounded(s.attitude));
    m.insert("frequency".into(), rounded(s.frequency));
    m.insert("share_of_wallet_factor".into(), rounded(s.wallet));
    m.insert("recency".into(), rounded(s.recency));
    m.insert("expected_gap_days".into(), rounded(s.expected_gap_days));
    m.insert(
        "days_since_purchase".into(),
        s.days_since_purchase.map_or(Value::Null, rounded),
    );
    m.insert("survey_part".into(), rounded(s.survey_part));
    m.insert(
        "survey_source".into(),
        json!(match s.survey_source {
            SurveySource::Survey(_) => "survey",
            SurveySource::Satisfaction(_) => "satisfaction",
            SurveySource::Prior => "neutral_prior",
        }),
    );
    m.insert("complaint_penalty".into(), rounded(s.complaint_penalty));
    m.insert("signal_penalty".into(), rounded(s.signal_penalty));
    m
}

fn reason(r: &Reason) -> Value {
    let evidence = match r {
        Reason::Complaint {
            penalty,
            count,
            open_high,
        } => {
            json!({"penalty": rounded(*penalty), "complaints": count, "open_high_or_critical": open_high})
        }
        Reason::LowSatisfaction { satisfaction } => {
            json!({ "satisfaction": rounded(*satisfaction) })
        }
        Reason::LowRecommend { recommend } => json!({ "recommend": rounded(*recommend) }),
        Reason::LowRepurchaseIntent { repurchase_intent } => {
            json!({ "repurchase_intent": rounded(*repurchase_intent) })
        }
        Reason::CompetitorSignal { signals, penalty } => json!({
            "signals": signals.iter().map(|s| serde_json::to_value(s).expect("enum serializes")).collect::<Vec<_>>(),
            "penalty": rounded(*penalty),
        }),
        Reason::PurchaseGap {
            days_since_purchase,
            expected_gap_days,
        } => json!({
            "days_since_purchase": rounded(*days_since_purchase),
            "expected_gap_days": rounded(*expected_gap_days),
        }),
    };
    json!({"code": r.code().as_str(), "evidence": evidence})
}

/// The output as a CloudEvent in structured JSON mode (CloudEvents 1.0):
/// the plain output is the `data`, its event id, schema, customer and
/// instant become `id`, `type`, `subject` and `time`, so event routers and
/// schema registries that speak CloudEvents need no tierstream knowledge.
/// `None` for a tombstone (it stays a tombstone).
pub fn to_cloudevent_bytes(o: &Output, source: &str) -> Option<Vec<u8>> {
    if matches!(o.body, OutputBody::ProfileErased) {
        return None;
    }
    let event = json!({
        "specversion": "1.0",
        "id": o.event_id(),
        "source": source,
        "type": o.schema(),
        "subject": o.customer_id,
        "time": time(o.at),
        "datacontenttype": "application/json",
        "data": to_json(o),
    });
    Some(serde_json::to_vec(&event).expect("a JSON value always serializes"))
}

/// The serialized bytes of one output; `None` for a tombstone.
pub fn to_bytes(o: &Output) -> Option<Vec<u8>> {
    match o.body {
        OutputBody::ProfileErased => None,
        _ => Some(serde_json::to_vec(&to_json(o)).expect("a JSON value always serializes")),
    }
}
