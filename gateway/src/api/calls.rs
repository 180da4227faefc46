//! Outbound calls (admin keys): `POST /v1/calls` dials a number and runs a named flow with
//! variables; `GET /v1/calls/{id}` says where the call is and what came of it; `GET /v1/calls`
//! lists the newest; `DELETE /v1/calls/{id}` cancels one not yet ended.
//!
//! Everything that can be checked is checked before anything is stored or dialled: the number,
//! the flow (it must exist now), the variables against the flow's `inputs:`. A request that
//! fails any of them is a 4xx naming the field, and nothing is dialled. With an
//! `Idempotency-Key` a retried POST (a timeout, a lost answer) gets the call it placed, not a
//! second call to the citizen: the key (scoped to the API key) names the call.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::json;

use super::AppState;
use super::auth::ApiClient;
use super::error::ApiError;
use super::orders::require_admin;
use crate::call::dialer::{CancelError, Origin, OutboundCall};
use crate::call::outbound::{Outbound, OutboundError};
use ivr_flows::InputError;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewCall {
    to: String,
    flow: String,
    #[serde(default)]
    vars: BTreeMap<String, String>,
    /// Not before this instant (RFC 3339); calling hours still apply.
    #[serde(default)]
    not_before: Option<DateTime<Utc>>,
}

fn outbound(state: &AppState) -> Result<&Outbound, ApiError> {
    state
        .outbound
        .as_ref()
        .filter(|o| o.enabled())
        .ok_or_else(off)
}

fn off() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "outbound_off",
        "outbound calls are off: set [calls.outbound] trunk",
    )
}

fn store_error(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "outbound calls: store error");
    ApiError::unavailable("the store is not available; retry")
}

fn view(job: &OutboundCall) -> serde_json::Value {
    serde_json::to_value(job).unwrap_or_else(|_| json!({ "id": job.id }))
}

pub async fn create(
    State(state): State<AppState>,
    Extension(client): Extension<ApiClient>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_admin(&client)?;
    let key = super::submissions::idempotency_key(&headers)?;
    let req: NewCall = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "invalid_body",
            format!(
                "expected {{\"to\": \"<number>\", \"flow\": \"<flow>\", \"vars\": {{...}}}}: {e}"
            ),
        )
    })?;
    let out = outbound(&state)?;
    let to = adapters::submission::normalize_phone(&req.to).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_number",
            "`to` must be a phone number: 3 to 20 digits, an optional leading +",
        )
        .field("to")
    })?;
    let Some(flows) = &state.flows else {
        return Err(ApiError::unavailable("the flows are not loaded"));
    };
    flows
        .current()
        .check_inputs(&req.flow, &req.vars)
        .map_err(|e| match e {
            InputError::UnknownFlow(_) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown_flow",
                e.to_string(),
            )
            .field("flow"),
            _ => ApiError::bad_request("invalid_vars", e.to_string()).field("vars"),
        })?;
    let now = Utc::now();
    let id = match &key {
        Some(key) => {
            use sha2::Digest;
            let h = sha2::Sha256::digest(format!("{}\n{key}", client.name).as_bytes());
            format!("c-k-{}", hex::encode(&h[..10]))
        }
        None => OutboundCall::new_id("", now),
    };
    if key.is_some()
        && let Some(earlier) = out.get(&id).await.map_err(store_error)?
    {
        let same = earlier.to == to && earlier.flow == req.flow && earlier.vars == req.vars;
        if !same {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_conflict",
                "this Idempotency-Key placed another call",
            ));
        }
        return Ok((
            StatusCode::OK,
            [("idempotent-replayed", "true".to_owned())],
            Json(view(&earlier)),
        )
            .into_response());
    }
    let job = OutboundCall::new(
        id,
        to,
        req.flow,
        req.vars,
        Origin::Api,
        now,
        req.not_before.unwrap_or(now).max(now),
    );
    let job = out.submit(job).await.map_err(|e| match e {
        OutboundError::Off => off(),
        e => store_error(e),
    })?;
    tracing::info!(job = %job.id, flow = %job.flow, by = %client.name, "outbound call queued");
    let location = format!("/v1/calls/{}", job.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(view(&job)),
    )
        .into_response())
}

pub async fn get_one(
    State(state): State<AppState>,
    Extension(client): Extension<ApiClient>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    require_admin(&client)?;
    let out = outbound(&state)?;
    match out.get(&id).await.map_err(store_error)? {
        Some(job) => Ok(Json(view(&job)).into_response()),
        None => Err(ApiError::not_found(format!("no outbound call {id}"))),
    }
}

#[derive(serde::Deserialize)]
pub struct ListQuery {
    limit: Option<u32>,
}

pub async fn list(
    State(state): State<AppState>,
    Extension(client): Extension<ApiClient>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    require_admin(&client)?;
    let out = outbound(&state)?;
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let calls = out.recent(limit).await.map_err(store_error)?;
    let calls: Vec<_> = calls.iter().map(view).collect();
    Ok(Json(json!({ "calls": calls })).into_response())
}

pub async fn cancel(
    State(state): State<AppState>,
    Extension(client): Extension<ApiClient>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    require_admin(&client)?;
    let out = outbound(&state)?;
    match out.cancel(&id).await {
        Ok(Ok(job)) => {
            tracing::info!(job = %job.id, by = %client.name, "outbound call cancelled");
            Ok(Json(view(&job)).into_response())
        }
        Ok(Err(CancelError::NotFound)) => {
            // Not open here: ended already, or unknown.
            match out.get(&id).await.map_err(store_error)? {
                Some(job) => Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "already_ended",
                    format!(
                        "outbound call {id} has already ended: {}",
                        job.status.as_str()
                    ),
                )),
                None => Err(ApiError::not_found(format!("no outbound call {id}"))),
            }
        }
        Ok(Err(CancelError::Final(s))) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_ended",
            format!("outbound call {id} has already ended: {}", s.as_str()),
        )),
        Err(OutboundError::Off) => Err(off()),
        Err(e) => Err(store_error(e)),
    }
}
