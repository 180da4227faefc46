//! Orders: read them, page through them, take status events from the dispatch backend, and
//! manage dead letters.

use adapters::OrderNumber;
use adapters::work_order::Status;
use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::auth::ApiClient;
use super::error::ApiError;
use crate::dispatch::signature;
use crate::store::StatusEvent;

fn order_number(raw: &str, field: &str) -> Result<OrderNumber, ApiError> {
    OrderNumber::parse(raw).map_err(|e| {
        ApiError::bad_request(
            "invalid_order_id",
            format!("{raw:?} is not an order number: {e}"),
        )
        .field(field)
    })
}

pub async fn get_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = order_number(&id, "id")?;
    match state.store.order(&id).await? {
        Some(order) => Ok(Json(order).into_response()),
        None => Err(ApiError::not_found(format!("there is no order {id}"))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    since: Option<String>,
    after: Option<String>,
    limit: Option<String>,
}

pub const MAX_PAGE: u32 = 500;

pub async fn list(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let since = q
        .since
        .as_deref()
        .map(|s| {
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.to_utc())
                .map_err(|_| {
                    ApiError::bad_request(
                        "invalid_query",
                        "since is an RFC 3339 time such as 2026-11-23T08:00:00+08:00",
                    )
                    .field("since")
                })
        })
        .transpose()?;
    let after = q
        .after
        .as_deref()
        .map(|a| order_number(a, "after"))
        .transpose()?;
    let limit = match q.limit.as_deref() {
        None => 100,
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request("invalid_query", format!("limit is 1 to {MAX_PAGE}"))
                    .field("limit")
            })?,
    };
    let orders = state.store.orders(since, after, limit).await?;
    let next_after = (orders.len() as u32 == limit)
        .then(|| orders.last().map(|o| o.id.clone()))
        .flatten();
    Ok(Json(json!({ "orders": orders, "next_after": next_after })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventBody {
    status: String,
    #[serde(default)]
    note: Option<String>,
    /// Who in the backend made the change (department, agent); shown in the history.
    #[serde(default)]
    by: Option<String>,
}

/// `POST /v1/orders/{id}/events`, signed by the dispatch backend like our deliveries.
pub async fn event(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body?;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    signature::verify(
        &state.dispatch_secret,
        header(signature::TIMESTAMP_HEADER),
        header(signature::SIGNATURE_HEADER),
        &body,
        Utc::now().timestamp(),
        state.event_max_skew_s,
    )
    .map_err(|e| {
        metrics::counter!("gateway_auth_failures_total").increment(1);
        ApiError::new(StatusCode::UNAUTHORIZED, "bad_signature", e.to_string())
            .field("X-Gateway-Signature")
    })?;
    let id = order_number(&id, "id")?;
    let parsed: EventBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request("invalid_json", format!("the event body is not valid: {e}"))
    })?;
    let status = Status::parse(&parsed.status)
        .filter(|s| s.is_backend_status())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_field",
                "status is one of assigned, in_progress, resolved, closed, rejected",
            )
            .field("status")
        })?;
    let note = parsed.note.filter(|n| !n.trim().is_empty());
    if note.as_ref().is_some_and(|n| n.chars().count() > 2000) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "at most 2000 characters",
        )
        .field("note"));
    }
    let by = parsed
        .by
        .filter(|b| !b.trim().is_empty())
        .unwrap_or_else(|| "dispatch".into());
    let event = StatusEvent {
        status,
        note,
        by: by.chars().take(128).collect(),
        at: Utc::now(),
    };
    match state.store.apply_event(&id, event).await? {
        Some(order) => {
            tracing::info!(order_id = %id, status = status.as_str(), "status event");
            Ok(Json(order).into_response())
        }
        None => Err(ApiError::not_found(format!("there is no order {id}"))),
    }
}

pub(super) fn require_admin(client: &ApiClient) -> Result<(), ApiError> {
    if client.admin {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this needs an admin API key",
        ))
    }
}

pub async fn dead_letters(
    State(state): State<AppState>,
    Extension(client): Extension<ApiClient>,
) -> Result<Response, ApiError> {
    require_admin(&client)?;
    let dead = state.store.dead_letters(MAX_PAGE).await?;
    Ok(Json(json!({ "dead_letters": dead })).into_response())
}

pub async fn replay(
    State(state): State<AppState>,
    Extension(client): Extension<ApiClient>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    require_admin(&client)?;
    let id = order_number(&id, "id")?;
    if state.store.replay(&id, Utc::now()).await? {
        tracing::info!(order_id = %id, by = %client.name, "dead letter replayed");
        Ok((
            StatusCode::ACCEPTED,
            Json(json!({ "order_id": id, "status": "requeued" })),
        )
            .into_response())
    } else {
        Err(ApiError::not_found(format!(
            "order {id} is not a dead letter"
        )))
    }
}
