//! `POST /v1/submissions`: app and integrator submissions.
//!
//! The answer 202 is sent only after the order and its outbox row are durably committed. With an
//! `Idempotency-Key`, a retried request (same key, same body) gets the same order number; the same
//! key with another body is refused with 409, so a client bug cannot silently merge two citizens'
//! reports.

use adapters::Submission;
use adapters::normalize::normalize;
use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::AppState;
use super::auth::ApiClient;
use super::error::ApiError;
use crate::store::{IdempotencyClaim, NewOrder, SubmitOutcome};

const IDEMPOTENCY_HEADER: &str = "idempotency-key";

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get(IDEMPOTENCY_HEADER) else {
        return Ok(None);
    };
    let bad = || {
        ApiError::bad_request(
            "invalid_header",
            "Idempotency-Key is 1 to 255 visible ASCII characters",
        )
        .field("Idempotency-Key")
    };
    let s = v.to_str().map_err(|_| bad())?.trim();
    if s.is_empty() || s.len() > 255 || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad());
    }
    Ok(Some(s.to_owned()))
}

fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    match headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        None => Ok(()),
        Some(ct)
            if ct
                .trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json") =>
        {
            Ok(())
        }
        Some(_) => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the submission as application/json",
        )
        .field("Content-Type")),
    }
}

pub async fn submit(
    State(state): State<AppState>,
    Extension(client): Extension<ApiClient>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let started = std::time::Instant::now();
    let key = idempotency_key(&headers)?;
    check_content_type(&headers)?;
    let body = body?;
    let mut submission = Submission::from_app_json(&body).map_err(|e| {
        let (status, code) = match e.field {
            None => (StatusCode::BAD_REQUEST, "invalid_json"),
            Some(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_field"),
        };
        let mut err = ApiError::new(status, code, e.message);
        err.field = e.field;
        err
    })?;
    submission.source.api_client = Some(client.name.clone());
    let normalized = normalize(&submission);
    let idempotency = key.map(|key| IdempotencyClaim {
        client: client.name.clone(),
        key,
        body_sha256: Sha256::digest(&body).into(),
    });
    let new = NewOrder {
        submission,
        normalized,
        received_at: Utc::now(),
        idempotency,
    };
    let outcome = tokio::time::timeout(state.request_timeout, state.store.submit(new))
        .await
        .map_err(|_| {
            ApiError::unavailable(
                "the order store did not confirm in time; retry with the same Idempotency-Key",
            )
        })??;
    metrics::histogram!("gateway_submission_seconds").record(started.elapsed().as_secs_f64());
    match outcome {
        SubmitOutcome::Created(order) => {
            metrics::counter!("gateway_submissions_total", "channel" => "app", "outcome" => "created").increment(1);
            let _span = tracing::info_span!("order", order_id = %order.id).entered();
            tracing::info!(
                channel = order.channel.as_str(),
                kind = order.kind.as_str(),
                urgency = ?order.urgency,
                client = %client.name,
                "order accepted"
            );
            let mut answer = json!({ "order_id": order.id, "status": "accepted" });
            if let Some(referral) = order.emergency_referral {
                answer["emergency_referral"] = json!(referral.number());
                answer["notice"] = json!(format!(
                    "如遇紧急情况，请立即拨打{}。In an emergency call {} now.",
                    referral.number(),
                    referral.number()
                ));
            }
            Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
        }
        SubmitOutcome::Replayed(id) => {
            metrics::counter!("gateway_submissions_total", "channel" => "app", "outcome" => "replayed").increment(1);
            Ok((
                StatusCode::ACCEPTED,
                [("idempotent-replayed", "true")],
                Json(json!({ "order_id": id, "status": "accepted" })),
            )
                .into_response())
        }
        SubmitOutcome::Conflict(id) => {
            metrics::counter!("gateway_submissions_total", "channel" => "app", "outcome" => "conflict").increment(1);
            Err(ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_conflict",
                format!(
                    "this Idempotency-Key was used for order {id} with another body; use a new key for a new submission"
                ),
            )
            .field("Idempotency-Key"))
        }
    }
}
