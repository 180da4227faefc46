//! `POST /v1/submissions`: app and integrator submissions.
//!
//! The answer 202 is sent only after the order and its outbox row are durably committed. With an
//! `Idempotency-Key`, a retried request (same key, same body) gets the same order number; the same
//! key with another body is refused with 409, so a client bug cannot silently merge two citizens'
//! reports.

use adapters::Submission;
use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::AppState;
use super::auth::ApiClient;
use super::error::ApiError;
use crate::intake::{self, Accepted, Idempotency, IntakeError, Via};
use crate::store::IdempotencyClaim;

const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// The request's `Idempotency-Key` (1-255 visible ASCII), if any.
pub(super) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
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
    mut request: Request,
) -> Result<Response, ApiError> {
    // Taken out of the request, not copied as the `HeaderMap` extractor does (a map and its
    // values allocated again for every submission); the body is read as the `Bytes` extractor
    // reads it, under the same limit.
    let headers = std::mem::take(request.headers_mut());
    let key = idempotency_key(&headers)?;
    check_content_type(&headers)?;
    let body = Bytes::from_request(request, &state).await?;
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
    let idempotency = match key {
        Some(key) => Idempotency::Key(IdempotencyClaim {
            client: client.name.clone(),
            key,
            body_sha256: Sha256::digest(&body).into(),
        }),
        None => Idempotency::None,
    };
    let via = Via::App {
        client: &client.name,
    };
    match intake::accept(&state.intake, via, submission, idempotency).await {
        Ok(Accepted::Created(order)) => {
            let Some(referral) = order.emergency_referral else {
                // The common answer written directly: the same bytes `Json(json!(..))` gives
                // (keys in order, an order number is digits only), without building a map.
                return Ok((
                    StatusCode::ACCEPTED,
                    [(header::CONTENT_TYPE, "application/json")],
                    format!(r#"{{"order_id":"{}","status":"accepted"}}"#, order.id),
                )
                    .into_response());
            };
            let mut answer = json!({ "order_id": order.id, "status": "accepted" });
            answer["emergency_referral"] = json!(referral.number());
            answer["notice"] = json!(format!(
                "如遇紧急情况，请立即拨打{}。In an emergency call {} now.",
                referral.number(),
                referral.number()
            ));
            Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
        }
        Ok(Accepted::Replayed(id)) => Ok((
            StatusCode::ACCEPTED,
            [("idempotent-replayed", "true")],
            Json(json!({ "order_id": id, "status": "accepted" })),
        )
            .into_response()),
        Err(IntakeError::Timeout) => Err(ApiError::unavailable(
            "the order store did not confirm in time; retry with the same Idempotency-Key",
        )),
        Err(IntakeError::Store(e)) => Err(e.into()),
        Err(IntakeError::Conflict(id)) => {
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
