//! The HTTP API (axum on hyper): submissions, orders, status events, dead letters, health and
//! metrics. Routes and shapes are the contract in `ARCHITECTURE.md`; `docs/api.md` documents
//! them for integrators.

pub mod auth;
mod calls;
pub mod channels;
mod config;
pub mod error;
mod open311;
mod ops;
mod orders;
mod queues;
mod submissions;
mod web;
pub mod webrtc;

pub use web::WebState;

pub use config::{ApiConfig, ApiKeyConfig, HttpConfig};
pub use web::WebConfig;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware;
use axum::routing::{get, post, put};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::intake::Intake;
use crate::store::Store;
use auth::ApiKeys;
use error::ApiError;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Store,
    /// The intake stage every channel's new orders pass (this store, `request_timeout`).
    pub intake: Intake,
    pub keys: Arc<ApiKeys>,
    /// Shared with the dispatch backend: signs deliveries, authenticates its status events.
    pub dispatch_secret: Arc<Vec<u8>>,
    pub dispatch_configured: bool,
    pub event_max_skew_s: i64,
    pub request_timeout: Duration,
    pub metrics: PrometheusHandle,
    /// The live IVR flows, when the flows directory was found.
    pub flows: Option<Arc<crate::ivr::LiveFlows>>,
    /// WeChat accounts and SMS providers.
    pub channels: Arc<channels::Channels>,
    /// The web form and Open311 settings, form tokens and rate limits.
    pub web: Arc<WebState>,
    /// The agent queues, when calls are taken.
    pub queues: Option<crate::call::queues::Queues>,
    /// Outbound calls, when calls are taken.
    pub outbound: Option<crate::call::outbound::Outbound>,
    /// Browser and app calls, when calls are taken and `[webrtc] enabled`.
    pub webrtc: Option<crate::call::webrtc::WebCalls>,
}

pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    let with_key = Router::new()
        .route("/v1/submissions", post(submissions::submit))
        .route("/v1/orders", get(orders::list))
        .route("/v1/orders/{id}", get(orders::get_one))
        .route("/v1/dead-letters", get(orders::dead_letters))
        .route("/v1/dead-letters/{id}/replay", post(orders::replay))
        .route("/v1/queues", get(queues::list))
        .route("/v1/queues/{queue}/agents/{agent}", put(queues::set_agent))
        .route("/v1/calls", post(calls::create).get(calls::list))
        .route("/v1/calls/{id}", get(calls::get_one).delete(calls::cancel))
        .route("/v1/call-tokens", post(webrtc::issue_token))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_key,
        ));
    let open = Router::new()
        .route("/v1/orders/{id}/events", post(orders::event))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/admin", get(ops::console));
    let public = web::routes(&state)
        .merge(open311::routes())
        .merge(webrtc::routes());
    with_key
        .merge(open)
        .merge(channels::routes())
        .merge(public)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint; see docs/api.md")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method; see docs/api.md",
    )
}
