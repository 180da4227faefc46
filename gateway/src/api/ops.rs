//! Health, readiness and metrics for operators and orchestrators.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::json;

use super::AppState;

/// Liveness: the process answers.
pub async fn healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

/// Readiness: the store answers within two seconds. The details also show the live flow
/// version and, after a refused edit, its diagnostics.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let store = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        state.store.stats(Utc::now()),
    )
    .await;
    let (ready, store_check) = match store {
        Ok(Ok(_)) => (true, json!("ok")),
        Ok(Err(e)) => (false, json!(format!("error: {e}"))),
        Err(_) => (false, json!("timeout")),
    };
    let flows = match &state.flows {
        Some(f) => json!(f.status()),
        None => json!("not loaded: the flows directory was not found (ivr.flows_dir)"),
    };
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "checks": {
            "store": store_check,
            "dispatch": if state.dispatch_configured { "configured" } else { "not configured: orders wait in the outbox" },
            "flows": flows,
        }
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Prometheus text format. Outbox gauges are read from the store at scrape time, so every node
/// reports the same backlog figures in a multi-node setup.
pub async fn metrics(State(state): State<AppState>) -> Response {
    match state.store.stats(Utc::now()).await {
        Ok(s) => {
            metrics::gauge!("gateway_outbox_queued").set(s.pending as f64);
            metrics::gauge!("gateway_outbox_dead").set(s.dead as f64);
            metrics::gauge!("gateway_outbox_delivered").set(s.delivered as f64);
            metrics::gauge!("gateway_outbox_oldest_undelivered_age_seconds")
                .set(s.oldest_pending_age_s);
        }
        Err(e) => tracing::warn!(error = %e, "cannot read outbox figures for metrics"),
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

/// The operators' console: one static page that uses the API with an admin key the operator
/// types in (kept in the tab's session storage only). It shows outbox figures, dead letters with
/// a replay button, and recent orders.
pub async fn console() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline' 'self'; style-src 'unsafe-inline'",
            ),
        ],
        include_str!("console.html"),
    )
        .into_response()
}
