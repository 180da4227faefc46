//! `GET /v1/queues` (admin keys): every agent queue's callers waiting, longest wait, agents
//! logged in, busy and idle, and today's answered, abandoned and given-up calls.

use axum::Json;
use axum::extract::{Extension, State};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use super::auth::ApiClient;
use super::error::ApiError;
use super::orders::require_admin;

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
