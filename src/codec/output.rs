//! Output events as JSON (SPEC §5). One function per schema piece, so the
//! replay file and the Kafka topics carry byte-identical records.

use crate::domain::event::Minor;
use crate::domain::output::{Cause, Output, OutputBody, TierInputs};
use crate::domain::time::{format_rfc3339, Millis};
use serde_json::{json, Map, Value};

/// Money as a JSON number with 2 decimals (minor units / 100).
pub fn money(minor: Minor) -> Value {
    json!(minor as f64 / 100.0)
}

/// A score or rate as a JSON number rounded to 2 decimals.
pub fn rounded(x: f64) -> Value {
    json!((x * 100.0).round() / 100.0)
}

fn time(t: Millis) -> Value {
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
    }
    Value::Object(m)
}

/// The serialized bytes of one output.
pub fn to_bytes(o: &Output) -> Vec<u8> {
    serde_json::to_vec(&to_json(o)).expect("a JSON value always serializes")
}
