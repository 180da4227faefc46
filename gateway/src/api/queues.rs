//! `GET /v1/queues` (admin keys): every agent queue's callers waiting, longest wait, agents
//! logged in, busy and idle, and today's answered, abandoned and given-up calls.
//! `PUT /v1/queues/{queue}/agents/{agent}` logs an agent in or out (a break, a shift's end).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use super::auth::ApiClient;
use super::error::ApiError;
use super::orders::require_admin;
use crate::call::acd::AcdError;

pub async fn list(
    State(state): State<AppState>,
    Extension(client): Extension<ApiClient>,
) -> Result<Response, ApiError> {
    require_admin(&client)?;
    let queues = match &state.queues {
        Some(q) => q.status().await,
        None => Vec::new(),
    };
    Ok(Json(json!({ "queues": queues })).into_response())
}

pub async fn set_agent(
    State(state): State<AppState>,
    Extension(client): Extension<ApiClient>,
    Path((queue, agent)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_admin(&client)?;
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        logged_in: bool,
    }
    let b: Body = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "invalid_body",
            format!("expected {{\"logged_in\": true|false}}: {e}"),
        )
    })?;
    let Some(queues) = &state.queues else {
        return Err(ApiError::not_found("calls are off: there are no queues"));
    };
    match queues.set_logged_in(&queue, &agent, b.logged_in).await {
        Ok(()) => {
            tracing::info!(%queue, %agent, logged_in = b.logged_in, by = %client.name, "agent login set");
            Ok(
                Json(json!({ "queue": queue, "agent": agent, "logged_in": b.logged_in }))
                    .into_response(),
            )
        }
        Err(e @ AcdError::UnknownQueue(_)) => Err(ApiError::not_found(e.to_string())),
        Err(e) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_an_agent",
            e.to_string(),
        )),
    }
}
