//! The HTTP server (SPEC §6, default 127.0.0.1:9898): Prometheus metrics,
//! liveness and readiness probes, and the customer query.
//!
//! `/customers/{id}` answers from the local store when this instance owns
//! the customer's task (hashed like Kafka's default partitioner) and has
//! restored it; otherwise it says which instance owns it (HTTP 421, with the
//! owner's instance id and host from the consumer group), or that the task
//! is still restoring (503).
//!
//! Hardening, since the customer endpoint returns personal data: an
//! optional bearer token for it (`http.auth_token_file`, compared in
//! constant time), and for every request a path length limit, no bodies
//! (every endpoint is a GET) and a time limit.

use crate::codec::output::{time, Money, ProfileFields, Rounded};
use crate::config::KafkaConfig;
use crate::domain::engine::Engine;
use crate::domain::event::Minor;
use crate::domain::ranking::Ranking;
use crate::kafka::group;
use crate::kafka::partitioner::partition_for;
use crate::ops::status::Status;
use crate::store::checkpoint::{read_ranking, read_stream_time};
use crate::store::keys::{decode_profile, profile_key};
use crate::store::{Cf, KvStore, TaskId};
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus::{Encoder, Registry, TextEncoder};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// Longest request path: a customer id is at most 128 characters, 3 bytes
/// each when percent-encoded, behind `/customers/`.
const MAX_PATH_BYTES: usize = 512;
/// Largest request body accepted: none of the endpoints reads one.
const MAX_BODY_BYTES: u64 = 1024;
/// Longest a request may take (a customer lookup may ask the broker who
/// owns a task, which must not hold a connection open for long).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// What the handlers read.
pub struct HttpState {
    /// Metrics to render.
    pub registry: Registry,
    /// The run loop's status.
    pub status: Arc<Status>,
    /// The local state.
    pub store: Arc<dyn KvStore>,
    /// For the profile view (scores at the task's stream time).
    pub engine: Arc<Engine>,
    /// The input topic names.
    pub kafka: KafkaConfig,
    /// Who owns a task this instance does not serve.
    pub owners: group::Owners,
    /// The bearer token `/customers/{id}` requires, if any.
    pub auth_token: Option<String>,
}

/// The routes.
pub fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route(
            "/customers/{id}",
            get(customer).route_layer(middleware::from_fn_with_state(state.clone(), authorize)),
        )
        .layer(middleware::from_fn(limits))
        .with_state(state)
}

/// Path, body and time limits of every request.
async fn limits(req: Request, next: Next) -> Response {
    if req.uri().path().len() > MAX_PATH_BYTES {
        return (StatusCode::URI_TOO_LONG, "path too long").into_response();
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES)
        || req.headers().contains_key(header::TRANSFER_ENCODING)
    {
        return (StatusCode::PAYLOAD_TOO_LARGE, "no request body is accepted").into_response();
    }
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(response) => response,
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "request timed out").into_response(),
    }
}

/// 401 unless the request carries the configured bearer token.
async fn authorize(State(s): State<Arc<HttpState>>, req: Request, next: Next) -> Response {
    if let Some(want) = &s.auth_token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| same_secret(g.as_bytes(), want.as_bytes())) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "a bearer token is required",
            )
                .into_response();
        }
    }
    next.run(req).await
}

/// Equality that takes as long wherever the first difference is, so the
/// time of a 401 does not reveal how much of a guess was right.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn metrics(State(s): State<Arc<HttpState>>) -> Response {
    let mut body = Vec::new();
    let encoder = TextEncoder::new();
    match encoder.encode(&s.registry.gather(), &mut body) {
        Ok(()) => (
            [(header::CONTENT_TYPE, encoder.format_type().to_owned())],
            body,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn live() -> Json<Value> {
    Json(json!({"live": true}))
}

async fn ready(State(s): State<Arc<HttpState>>) -> Response {
    let v = s.status.view();
    let code = if v.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "ready": v.ready,
        "owned_tasks": v.owned,
        "restoring_tasks": v.restoring,
        "brokers_reachable": v.brokers_reachable,
    });
    (code, Json(body)).into_response()
}

fn error(code: StatusCode, body: Value) -> Response {
    (code, Json(body)).into_response()
}

async fn customer(State(s): State<Arc<HttpState>>, Path(id): Path<String>) -> Response {
    let partitions = s.status.partitions();
    if partitions == 0 {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "the pipeline has not started yet"}),
        );
    }
    let task = TaskId::new(partition_for(id.as_bytes(), partitions));
    if s.status.restoring(task) {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "this instance is restoring the customer's task", "customer_id": id, "task": task}),
        );
    }
    let state = s.clone();
    let result = tokio::task::spawn_blocking(move || lookup(&state, &id, task)).await;
    match result {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"error": format!("{e:#}")}),
        ),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"error": e.to_string()}),
        ),
    }
}

/// Under percentile tiers: the cut points in force and where the
/// customer's value_12m ranks among every customer of the group counted at
/// their month close (`above`: customers in a higher bucket, so values
/// within 1/128 of the customer's count as ties).
fn ranking(r: &Ranking, value: Minor) -> Value {
    let Some(cut) = &r.in_force else {
        return json!({"cut_points": null, "note": "the configured thresholds are in force until the first month close"});
    };
    let of = r.population.customers();
    let above = r.population.above(value);
    json!({
        "cut_points": {
            "at": time(cut.month),
            "platinum": Money(cut.platinum),
            "gold": Money(cut.gold),
            "iron": Money(cut.iron),
            "customers": cut.customers,
        },
        "rank": {"above": above, "of": of, "top_percent": (of > 0).then(|| Rounded((above + 1) as f64 / of as f64 * 100.0))},
    })
}

/// Blocking part of the customer query: the store read or the owner lookup.
fn lookup(s: &HttpState, id: &str, task: TaskId) -> anyhow::Result<Response> {
    if !s.status.serves(task) {
        let topic = &s.kafka.input_topics[0];
        let owner = s.owners.owner(topic, task.partition())?;
        let body = json!({
            "error": "another instance owns this customer",
            "customer_id": id,
            "task": task,
            "owner": owner.map(|m| json!({"instance": m.client_id, "host": m.host})),
        });
        return Ok(error(StatusCode::MISDIRECTED_REQUEST, body));
    }
    let Some(bytes) = s.store.get(Cf::Profiles, &profile_key(task, id))? else {
        return Ok(error(
            StatusCode::NOT_FOUND,
            json!({"error": "no such customer", "customer_id": id, "task": task}),
        ));
    };
    let p = decode_profile(&bytes)?;
    let as_of =
        read_stream_time(s.store.as_ref(), task)?.unwrap_or_else(crate::pipeline::wall_clock);
    let view = s.engine.view(&p, as_of);
    let mut m = serde_json::Map::new();
    m.insert("customer_id".into(), json!(id));
    m.insert("task".into(), json!(task));
    m.insert("seq".into(), json!(p.seq));
    m.insert("as_of".into(), time(as_of));
    if let Value::Object(fields) = serde_json::to_value(ProfileFields::from(&view))? {
        m.extend(fields);
    }
    if let Some((risk, stake)) = s.engine.stake(&p, as_of) {
        m.insert(
            "value_at_risk".into(),
            json!({
                "churn_risk": Rounded(risk),
                "projected_value": Money(stake.projected_value),
                "value_at_risk": Money(stake.value_at_risk),
                "priority": stake.priority,
            }),
        );
    }
    if s.engine.policy().tiers.percentile.is_some() {
        m.insert(
            "ranking".into(),
            ranking(
                &read_ranking(s.store.as_ref(), task)?,
                view.figures.value_12m,
            ),
        );
    }
    Ok((StatusCode::OK, Json(Value::Object(m))).into_response())
}

#[cfg(test)]
mod tests {
    use super::same_secret;

    #[test]
    fn secrets_are_equal_only_when_every_byte_is() {
        assert!(same_secret(b"token", b"token"));
        assert!(!same_secret(b"token", b"tokem"));
        assert!(!same_secret(b"token", b"token2"));
        assert!(!same_secret(b"", b"x"));
    }
}
