//! The agent's read-only HTTP API.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use time::OffsetDateTime;

use crate::health::{Offenders, PartitionSummary, RackReport};
use crate::service::Agent;

/// `/v1/ready/{namespace}/{pod}`, `/v1/brokers/{id}/restart-safety`, `/v1/cluster`,
/// `/v1/overhead`, `/metrics`, `/healthz`.
pub fn router(agent: Arc<Agent>) -> Router {
    Router::new()
        .route("/v1/ready/{namespace}/{pod}", get(ready))
        .route("/v1/brokers/{id}/restart-safety", get(restart_safety))
        .route("/v1/cluster", get(cluster))
        .route("/v1/overhead", get(overhead))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(agent)
}

fn json(status: StatusCode, body: &impl Serialize) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

#[derive(Serialize)]
struct ApiError {
    error: String,
}

async fn ready(
    State(agent): State<Arc<Agent>>,
    Path((namespace, pod)): Path<(String, String)>,
) -> Response {
    match agent.ready(&namespace, &pod, OffsetDateTime::now_utc()) {
        Ok(answer) => {
            let status = if answer.verdict.ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            json(status, &answer)
        }
        Err(e) => json(
            StatusCode::NOT_FOUND,
            &ApiError {
                error: e.to_string(),
            },
        ),
    }
}

#[derive(Serialize)]
struct RestartSafety {
    broker_id: i32,
    registered: bool,
    safe: bool,
    /// Partitions a restart would push below min ISR.
    blocking: Offenders,
    replicas: usize,
    leaders: usize,
    poll_age_ms: u64,
}

async fn restart_safety(State(agent): State<Arc<Agent>>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<i32>() else {
        return json(
            StatusCode::BAD_REQUEST,
            &ApiError {
                error: format!("broker id: expected an integer, found {id:?}"),
            },
        );
    };
    let Some(latest) = agent.latest() else {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            &ApiError {
                error: no_poll(&agent),
            },
        );
    };
    let b = latest.health.broker(id);
    json(
        StatusCode::OK,
        &RestartSafety {
            broker_id: id,
            registered: b.registered,
            safe: b.restart_safe,
            blocking: b.restart_blockers,
            replicas: b.replicas,
            leaders: b.leaders,
            poll_age_ms: u64::try_from(latest.polled_at.elapsed().as_millis()).unwrap_or(u64::MAX),
        },
    )
}

#[derive(Serialize)]
struct ClusterView<'a> {
    cluster_id: Option<&'a str>,
    controller_id: Option<i32>,
    brokers: Vec<i32>,
    topics: usize,
    partitions: &'a PartitionSummary,
    racks: &'a RackReport,
    unsafe_to_restart: Vec<i32>,
    polled_at_unix: i64,
    poll_age_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
}

async fn cluster(State(agent): State<Arc<Agent>>) -> Response {
    let Some(latest) = agent.latest() else {
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            &ApiError {
                error: no_poll(&agent),
            },
        );
    };
    let h = &latest.health;
    json(
        StatusCode::OK,
        &ClusterView {
            cluster_id: h.cluster_id.as_deref(),
            controller_id: h.controller_id,
            brokers: h
                .brokers
                .values()
                .filter(|b| b.registered)
                .map(|b| b.id)
                .collect(),
            topics: h.topics,
            partitions: &h.summary,
            racks: &h.racks,
            unsafe_to_restart: h
                .brokers
                .values()
                .filter(|b| !b.restart_safe)
                .map(|b| b.id)
                .collect(),
            polled_at_unix: latest.polled_unix,
            poll_age_ms: u64::try_from(latest.polled_at.elapsed().as_millis()).unwrap_or(u64::MAX),
            last_error: agent.last_error(),
        },
    )
}

#[derive(Serialize)]
struct OverheadView<'a> {
    #[serde(flatten)]
    sample: &'a crate::overhead::Overhead,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
}

/// The last overhead sample; 503 until the first one.
async fn overhead(State(agent): State<Arc<Agent>>) -> Response {
    match agent.overhead() {
        (Some(sample), last_error) => json(
            StatusCode::OK,
            &OverheadView {
                sample: &sample,
                last_error,
            },
        ),
        (None, e) => json(
            StatusCode::SERVICE_UNAVAILABLE,
            &ApiError {
                error: match e {
                    Some(e) => format!("no overhead sample yet; last error: {e}"),
                    None => "no overhead sample yet".to_owned(),
                },
            },
        ),
    }
}

fn no_poll(agent: &Agent) -> String {
    match agent.last_error() {
        Some(e) => format!("no successful Kafka poll yet; last error: {e}"),
        None => "no successful Kafka poll yet".to_owned(),
    }
}

async fn metrics(State(agent): State<Arc<Agent>>) -> Response {
    agent.refresh_scrape_gauges();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        agent.metrics().encode(),
    )
        .into_response()
}
