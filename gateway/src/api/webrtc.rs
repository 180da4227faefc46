//! Browser and app calls over HTTP, WHIP-shaped (RFC 9725): call tokens, the offer, the
//! hang-up, the call's state for its page, and the `/call` page itself.
//!
//! - `POST /v1/call-tokens` (API key; the mini-program's or app's backend) and `POST
//!   /call/token` (no key; the `/call` page for itself, rate limited per client address like
//!   the web form) answer `201 {"token", "expires_at", "ice_servers"}`.
//! - `POST /v1/calls/webrtc` with `Authorization: Bearer <token>`, `Content-Type:
//!   application/sdp` and the whole offer answers `201` with the whole answer
//!   (`application/sdp`; ICE-lite, no trickle) and a `Location` naming the call.
//! - `GET` on the call's `Location` is its state for the page (what the gateway says, the
//!   orders filed, how it ended); `DELETE` hangs up. Both take the same token; `PATCH`
//!   (trickle ICE) is 405: the answer carries our only candidate.
//!
//! A token is `<expires unix s>.<user hex>.<nonce hex>.<HMAC-SHA256 hex>`, signed with the web
//! form's secret (`web.secret`, shared by every node), so any node can check it without a
//! lookup. It may name the app user (the orders' citizen reference). It places calls until it
//! expires; its nonce ties the call to it, so one browser cannot end another's call.

use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use rand::Rng;
use serde_json::json;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::AppState;
use super::auth::ApiClient;
use super::error::ApiError;
use crate::call::webrtc::{HangUpError, PlaceError, WebCalls};
use media::webrtc::OfferError;

/// The longest app user id a token carries.
const MAX_USER_CHARS: usize = 64;

/// Signs and checks call tokens (see the module doc).
pub struct CallTokens {
    secret: Vec<u8>,
}

impl std::fmt::Debug for CallTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallTokens { secret: <hidden> }")
    }
}

/// A token that checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallToken {
    pub expires: i64,
    pub user: Option<String>,
    pub nonce: String,
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallTokenError {
    Invalid,
    Expired,
}

impl CallTokens {
    pub fn new(secret: &[u8]) -> Self {
        Self {
            secret: secret.to_vec(),
        }
    }

    fn mac(&self, expires: i64, user_hex: &str, nonce: &str) -> Vec<u8> {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.secret).expect("HMAC takes any key length");
        for part in ["call-token", &expires.to_string(), user_hex, nonce] {
            mac.update(part.as_bytes());
            mac.update(b"\0");
        }
        mac.finalize().into_bytes().to_vec()
    }

    /// A token good until `expires` (unix seconds), naming `user` when given.
    pub fn issue(&self, expires: i64, user: Option<&str>) -> String {
        let nonce = hex::encode(rand::rng().random::<[u8; 12]>());
        let user_hex = hex::encode(user.unwrap_or_default());
        let sig = hex::encode(self.mac(expires, &user_hex, &nonce));
        format!("{expires}.{user_hex}.{nonce}.{sig}")
    }

    /// Check a token at `now` (unix seconds).
    pub fn verify(&self, token: &str, now: i64) -> Result<CallToken, CallTokenError> {
        let parts: Vec<&str> = token.trim().split('.').collect();
        let [expires, user_hex, nonce, sig] = parts[..] else {
            return Err(CallTokenError::Invalid);
        };
        let expires: i64 = expires.parse().map_err(|_| CallTokenError::Invalid)?;
        let sig = hex::decode(sig).map_err(|_| CallTokenError::Invalid)?;
        if nonce.len() != 24 || user_hex.len() > MAX_USER_CHARS * 8 {
            return Err(CallTokenError::Invalid);
        }
        if !bool::from(self.mac(expires, user_hex, nonce).ct_eq(&sig)) {
            return Err(CallTokenError::Invalid);
        }
        if now > expires {
            return Err(CallTokenError::Expired);
        }
        let user = hex::decode(user_hex)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or(CallTokenError::Invalid)?;
        Ok(CallToken {
            expires,
            user: (!user.is_empty()).then_some(user),
            nonce: nonce.to_owned(),
        })
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/call", get(page))
        .route("/call/token", post(page_token))
        .route("/v1/calls/webrtc", post(offer))
        .route("/v1/calls/webrtc/{id}", get(view).delete(hang_up))
}

fn calls(state: &AppState) -> Result<&WebCalls, ApiError> {
    state.webrtc.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "webrtc_off",
            "browser calls are off here: [webrtc] enabled = false, or calls are not taken",
        )
    })
}

/// `{"token", "expires_at", "ice_servers", "ice_transport_policy"}` for `user`.
fn token_reply(state: &AppState, calls: &WebCalls, user: Option<&str>) -> Response {
    let ttl = i64::try_from(calls.config.token_ttl_s.max(1)).unwrap_or(300);
    let expires = Utc::now().timestamp() + ttl;
    let token = state.web.call_tokens.issue(expires, user);
    let expires_at = DateTime::from_timestamp(expires, 0).unwrap_or_default();
    let mut body = calls.ice_for(expires);
    body["token"] = token.into();
    body["expires_at"] = json!(expires_at);
    (StatusCode::CREATED, Json(body)).into_response()
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    /// The app user placing the call (the orders' citizen reference).
    #[serde(default)]
    user: Option<String>,
}

/// `POST /v1/call-tokens` (API key).
pub async fn issue_token(
    State(state): State<AppState>,
    Extension(_client): Extension<ApiClient>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let calls = calls(&state)?;
    let req: TokenRequest = if body.iter().all(u8::is_ascii_whitespace) {
        TokenRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request("invalid_json", e.to_string()))?
    };
    let user = req
        .user
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty());
    if let Some(u) = &user
        && (u.chars().count() > MAX_USER_CHARS || u.chars().any(char::is_control))
    {
        return Err(ApiError::bad_request(
            "invalid_user",
            format!("user: at most {MAX_USER_CHARS} characters, no control characters"),
        )
        .field("user"));
    }
    Ok(token_reply(&state, calls, user.as_deref()))
}

/// `POST /call/token`: the call page's own token, rate limited per client address.
async fn page_token(
    State(state): State<AppState>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    let calls = calls(&state)?;
    let ip = super::web::client_ip(
        request.headers(),
        request.extensions(),
        state.web.trust_forwarded_for,
    );
    if let Err(wait) = state.web.call_limiter.check(ip, Instant::now()) {
        let mut r = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many calls from this address; try again shortly",
        )
        .into_response();
        if let Ok(v) = header::HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return Ok(r);
    }
    Ok(token_reply(&state, calls, None))
}

/// The bearer token of a request, checked.
fn bearer(state: &AppState, headers: &HeaderMap) -> Result<CallToken, ApiError> {
    let unauthorized = |code: &'static str, msg: &str| {
        ApiError::new(StatusCode::UNAUTHORIZED, code, msg).field("Authorization")
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .ok_or_else(|| {
            unauthorized(
                "missing_token",
                "send Authorization: Bearer <call token> (POST /v1/call-tokens or /call/token)",
            )
        })?;
    state
        .web
        .call_tokens
        .verify(token, Utc::now().timestamp())
        .map_err(|e| match e {
            CallTokenError::Invalid => unauthorized("invalid_token", "the call token is not valid"),
            CallTokenError::Expired => {
                unauthorized("expired_token", "the call token has expired; get a new one")
            }
        })
}

/// `POST /v1/calls/webrtc`: the offer in, the answer out.
async fn offer(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let calls = calls(&state)?;
    let token = bearer(&state, &headers)?;
    let sdp_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/sdp"));
    if !sdp_type {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the offer as Content-Type: application/sdp",
        )
        .field("Content-Type"));
    }
    if body.len() > media::webrtc::MAX_OFFER_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "the offer is larger than {} bytes",
                media::webrtc::MAX_OFFER_BYTES
            ),
        ));
    }
    let sdp = String::from_utf8(body.to_vec())
        .map_err(|_| ApiError::bad_request("invalid_sdp", "the offer is not UTF-8"))?;
    let placed = calls
        .place(sdp, token.user, token.nonce)
        .await
        .map_err(|e| match e {
            PlaceError::Offer(OfferError::NoCommonCodec) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "no_common_codec",
                "the offer has no audio with a codec the hotline takes (PCMA or PCMU)",
            ),
            PlaceError::Offer(OfferError::TooLarge) => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                e.to_string(),
            ),
            PlaceError::Offer(e) => ApiError::bad_request("invalid_sdp", e.to_string()),
            PlaceError::Busy => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "all lines are busy; try again shortly",
            ),
            PlaceError::NoPort(_) | PlaceError::Stopped => {
                tracing::warn!(error = %e, "WebRTC call not placed");
                ApiError::unavailable("the call could not be set up; try again")
            }
        })?;
    let location = format!("/v1/calls/webrtc/{}", placed.id);
    Ok((
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, "application/sdp".to_owned()),
            (header::LOCATION, location),
        ],
        placed.answer,
    )
        .into_response())
}

fn hang_up_error(e: HangUpError) -> ApiError {
    match e {
        HangUpError::NotFound => ApiError::not_found("no such call (it may have ended)"),
        HangUpError::NotYours => ApiError::new(
            StatusCode::FORBIDDEN,
            "not_your_call",
            "this call was placed with another token",
        ),
    }
}

/// `GET /v1/calls/webrtc/{id}`: the call's state for its page.
async fn view(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let calls = calls(&state)?;
    let token = bearer(&state, &headers)?;
    let v = calls.view(&id, &token.nonce).map_err(hang_up_error)?;
    Ok(Json(v).into_response())
}

/// `DELETE /v1/calls/webrtc/{id}`: hang up.
async fn hang_up(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let calls = calls(&state)?;
    let token = bearer(&state, &headers)?;
    calls.hang_up(&id, &token.nonce).map_err(hang_up_error)?;
    Ok(StatusCode::OK.into_response())
}

/// `GET /call`: the call page.
async fn page() -> Html<&'static str> {
    Html(include_str!("call.html"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_check_signature_expiry_and_carry_the_user() {
        let t = CallTokens::new(b"secret");
        let tok = t.issue(1000, Some("微信用户-42"));
        let ok = t.verify(&tok, 999).expect("valid");
        assert_eq!(ok.user.as_deref(), Some("微信用户-42"));
        assert_eq!(t.verify(&tok, 1001), Err(CallTokenError::Expired));
        assert_eq!(
            CallTokens::new(b"other").verify(&tok, 999),
            Err(CallTokenError::Invalid)
        );
        let anonymous = t.issue(1000, None);
        assert_eq!(t.verify(&anonymous, 5).expect("valid").user, None);
        // Tampering with the expiry breaks the signature.
        let forged = tok.replacen("1000", "9999", 1);
        assert_eq!(t.verify(&forged, 999), Err(CallTokenError::Invalid));
        for junk in ["", "a.b.c", "1.2.3.4.5", "x.y.z.w", "1000..aa.bb"] {
            assert_eq!(t.verify(junk, 0), Err(CallTokenError::Invalid), "{junk}");
        }
    }
}
