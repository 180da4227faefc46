//! `GET/POST /channels/wechat/{account}`: WeChat official accounts and mini-programs.
//!
//! Every request is authenticated before anything else: `signature` over the account's token,
//! `timestamp` and `nonce`, and in safe/compatible mode (`encrypt_type=aes`) `msg_signature`
//! over the same and the `Encrypt` payload, whose decrypted appid must be the account's. Only
//! then is the message read and acted on (new order, 查询, photo or location added to the
//! citizen's latest order, welcome on subscribe).
//!
//! A push whose signed `timestamp` is further from now than `channels.wechat_max_skew_s`
//! (default 300 s) is refused with 401 `stale_timestamp` once its signature is checked and
//! before the message is acted on: a valid signature proves who sent the push, not when, so a
//! captured push could otherwise be replayed at any later time. WeChat's own retries (5 s apart)
//! fall well inside the window. URL verification (`GET`) is not dated: it stores nothing, and
//! the administrator's console must not fail on a skewed clock.
//!
//! WeChat waits five seconds for the answer and otherwise retries the same message (same
//! MsgId) up to three times. Answering `success` would stop the retries, so a slow commit is
//! simply waited for: if WeChat gives up first, its retry meets the idempotency claim of the
//! first attempt and gets the same order number. Nothing is acknowledged before the commit.

use std::collections::HashMap;

use adapters::normalize::mask::Masked;
use adapters::wechat::message::json_fields;
use adapters::wechat::{self, Body, Inbound, Query, reply, xml};
use adapters::work_order::{Attachment, Channel, Location};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query as QueryParams, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use sha2::{Digest, Sha256};

use super::WechatKind;
use super::{WechatAccount, short_user};
use crate::api::AppState;
use crate::api::error::ApiError;
use crate::intake::{self, Accepted, Idempotency, IntakeError, Via};
use crate::store::{Addition, IdempotencyClaim};

type Params =
    Result<QueryParams<HashMap<String, String>>, axum::extract::rejection::QueryRejection>;

fn account<'a>(state: &'a AppState, name: &str) -> Result<&'a WechatAccount, ApiError> {
    state
        .channels
        .wechat
        .get(name)
        .ok_or_else(|| ApiError::not_found(format!("no WeChat account {name:?} is configured")))
}

fn params(p: Params) -> Result<HashMap<String, String>, ApiError> {
    p.map(|QueryParams(q)| q)
        .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
}

fn unauthorized(message: &str) -> ApiError {
    metrics::counter!("gateway_channel_refused_total", "channel" => "wechat", "reason" => "signature").increment(1);
    ApiError::new(StatusCode::UNAUTHORIZED, "bad_signature", message)
}

fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
    metrics::counter!("gateway_channel_refused_total", "channel" => "wechat", "reason" => "malformed").increment(1);
    ApiError::bad_request(code, message)
}

/// The query's timestamp and nonce, bounded.
fn ts_nonce(q: &HashMap<String, String>) -> Result<(&str, &str), ApiError> {
    let get = |k: &'static str| {
        q.get(k)
            .map(String::as_str)
            .filter(|v| !v.is_empty() && v.len() <= 64)
            .ok_or_else(|| unauthorized(&format!("the query needs {k}")))
    };
    Ok((get("timestamp")?, get("nonce")?))
}

fn check_signature(acct: &WechatAccount, q: &HashMap<String, String>) -> Result<(), ApiError> {
    let (ts, nonce) = ts_nonce(q)?;
    let given = q
        .get("signature")
        .ok_or_else(|| unauthorized("the query needs signature"))?;
    let expected = wechat::signature(&[&acct.token, ts, nonce]);
    if !wechat::signature_matches(&expected, given) {
        return Err(unauthorized(
            "signature does not match this account's token",
        ));
    }
    Ok(())
}

/// Refuse a push signed too far from now: the signature is replayable, the timestamp is what
/// dates it.
fn check_fresh(state: &AppState, ts: &str, now: i64) -> Result<(), ApiError> {
    let Some(max) = state.channels.wechat_max_skew_s else {
        return Ok(());
    };
    let stale = |message: String| {
        metrics::counter!("gateway_channel_refused_total", "channel" => "wechat", "reason" => "stale").increment(1);
        ApiError::new(StatusCode::UNAUTHORIZED, "stale_timestamp", message).field("timestamp")
    };
    let Ok(at) = ts.parse::<i64>() else {
        return Err(stale(format!(
            "timestamp {:?} is not Unix seconds",
            ts.chars().take(16).collect::<String>()
        )));
    };
    let skew = now.saturating_sub(at);
    if skew.unsigned_abs() > max.unsigned_abs() {
        let when = if skew > 0 { "old" } else { "in the future" };
        return Err(stale(format!(
            "the push was signed {} s {when}; pushes are accepted within {max} s of now \
             (channels.wechat_max_skew_s)",
            skew.unsigned_abs()
        )));
    }
    Ok(())
}

/// URL verification: echo `echostr` when the signature is right.
pub async fn verify(
    State(state): State<AppState>,
    Path(name): Path<String>,
    q: Params,
) -> Result<Response, ApiError> {
    let acct = account(&state, &name)?;
    let q = params(q)?;
    check_signature(acct, &q)?;
    let echo = q
        .get("echostr")
        .filter(|e| !e.is_empty() && e.len() <= 256)
        .ok_or_else(|| bad("invalid_query", "echostr is required (1 to 256 characters)"))?;
    tracing::info!(account = %acct.name, "wechat URL verified");
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        echo.clone(),
    )
        .into_response())
}

fn is_json(body: &[u8]) -> bool {
    body.iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{')
}

fn fields(body: &[u8]) -> Result<xml::Fields, ApiError> {
    if is_json(body) {
        json_fields(body).map_err(|e| bad("invalid_json", e.to_string()))
    } else {
        xml::parse(body).map_err(|e| {
            let code = match e {
                wechat::XmlError::Doctype => "xml_doctype_refused",
                wechat::XmlError::TooLarge => "payload_too_large",
                _ => "invalid_xml",
            };
            if code == "payload_too_large" {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, code, e.to_string())
            } else {
                bad(code, e.to_string())
            }
        })
    }
}

/// How the answer is wrapped: in the clear, or encrypted for safe/compatible mode.
struct Envelope {
    encrypted: bool,
    nonce: String,
}

pub async fn receive(
    State(state): State<AppState>,
    Path(name): Path<String>,
    q: Params,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let acct = account(&state, &name)?.clone();
    let q = params(q)?;
    let (ts, nonce) = ts_nonce(&q)?;
    let encrypted = q.get("encrypt_type").is_some_and(|t| t == "aes");
    if !encrypted || q.contains_key("signature") {
        check_signature(&acct, &q)?;
    }
    let body = body?;
    if body.len() > xml::MAX_XML_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the message is larger than WeChat sends",
        ));
    }
    let outer = fields(&body)?;
    let inner = if encrypted {
        let enc = outer
            .get("Encrypt")
            .filter(|e| !e.is_empty())
            .ok_or_else(|| bad("invalid_message", "encrypt_type=aes but no Encrypt field"))?;
        let given = q
            .get("msg_signature")
            .ok_or_else(|| unauthorized("the query needs msg_signature"))?;
        let expected = wechat::signature(&[&acct.token, ts, nonce, enc]);
        if !wechat::signature_matches(&expected, given) {
            return Err(unauthorized("msg_signature does not match"));
        }
        let cipher = acct.cipher.as_ref().ok_or_else(|| {
            bad(
                "not_configured",
                "this account has no encoding_aes_key: encrypted messages cannot be read",
            )
        })?;
        let plain = cipher.decrypt(enc).map_err(|e| match e {
            wechat::CryptoError::AppId => {
                metrics::counter!("gateway_channel_refused_total", "channel" => "wechat", "reason" => "appid").increment(1);
                ApiError::new(StatusCode::UNAUTHORIZED, "wrong_appid", e.to_string())
            }
            other => bad("invalid_encrypt", other.to_string()),
        })?;
        fields(plain.as_bytes())?
    } else {
        outer
    };
    // Authenticated by now (signature, or msg_signature in safe mode): only then date it.
    check_fresh(&state, ts, Utc::now().timestamp())?;
    let msg = Inbound::from_fields(&inner).map_err(|e| bad("invalid_message", e.to_string()))?;
    let envelope = Envelope {
        encrypted,
        nonce: nonce.to_owned(),
    };

    let outcome = tokio::time::timeout(state.request_timeout, handle(&state, &acct, &msg))
        .await
        .map_err(|_| ApiError::unavailable("the order store did not confirm in time"))??;
    Ok(respond(&acct, &msg, &envelope, outcome))
}

/// What to tell the citizen.
enum Outcome {
    Text(String),
    /// Nothing to say (`success`).
    Nothing,
}

async fn handle(
    state: &AppState,
    acct: &WechatAccount,
    msg: &Inbound,
) -> Result<Outcome, ApiError> {
    let user = short_user(&msg.from_user);
    if let Some(text) = msg.order_text()
        && let Some(query) = wechat::parse_query(text)
    {
        metrics::counter!("gateway_channel_queries_total", "channel" => "wechat").increment(1);
        return Ok(Outcome::Text(match query {
            Query::Usage => reply::USAGE.to_owned(),
            Query::Invalid(e) => reply::query_invalid(&e.to_string()),
            Query::Order(id) => match state.store.order(&id).await? {
                None => reply::query_not_found(id.as_str()),
                Some(order) => {
                    let owner = order.channel == Channel::Wechat
                        && order.citizen.channel_user.as_deref() == Some(msg.from_user.as_str());
                    tracing::info!(account = %acct.name, user = %user, order_id = %id, owner, "wechat status query");
                    reply::query_answer(&order, owner)
                }
            },
        }));
    }
    match &msg.body {
        Body::Text { .. } | Body::Voice { .. } => match msg.submission() {
            Some(submission) => create(state, acct, msg, submission).await,
            None => Ok(Outcome::Text(reply::VOICE_UNRECOGNIZED.to_owned())),
        },
        Body::Image { pic_url, .. } => {
            let addition = Addition::Attachment(Attachment {
                url: pic_url.chars().take(2048).collect(),
                mime: "image/jpeg".into(),
                sha256: None,
            });
            attach(state, acct, msg, addition, "图片").await
        }
        Body::Link { url, .. } if url.starts_with("http") => {
            let addition = Addition::Attachment(Attachment {
                url: url.chars().take(2048).collect(),
                mime: "text/html".into(),
                sha256: None,
            });
            attach(state, acct, msg, addition, "链接").await
        }
        Body::Location {
            lat, lng, label, ..
        } => {
            let addition = Addition::Location(Location {
                lat: Some(*lat),
                lng: Some(*lng),
                address: label.as_ref().map(|l| l.chars().take(256).collect()),
                ..Location::default()
            });
            attach(state, acct, msg, addition, "位置").await
        }
        Body::Event { event, .. } => {
            metrics::counter!("gateway_channel_events_total", "channel" => "wechat").increment(1);
            tracing::info!(account = %acct.name, user = %user, event = %event.chars().take(32).collect::<String>(), "wechat event");
            // Events change nothing stored; answering a redelivered one again is harmless.
            Ok(if event == "subscribe" {
                Outcome::Text(reply::WELCOME.to_owned())
            } else {
                Outcome::Nothing
            })
        }
        Body::Link { .. } | Body::Other { .. } => Ok(Outcome::Text(reply::UNSUPPORTED.to_owned())),
    }
}

async fn create(
    state: &AppState,
    acct: &WechatAccount,
    msg: &Inbound,
    submission: adapters::Submission,
) -> Result<Outcome, ApiError> {
    // Retried deliveries carry the same MsgId but, in safe mode, different ciphertext: the claim
    // hashes what the message says, not its bytes.
    let mut h = Sha256::new();
    for part in [
        msg.from_user.as_str(),
        &msg.dedup_key(),
        submission.text.as_str(),
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let claim = IdempotencyClaim {
        client: format!("wechat:{}", acct.name),
        key: msg.dedup_key(),
        body_sha256: h.finalize().into(),
    };
    let user = short_user(&msg.from_user);
    let via = Via::Wechat {
        account: &acct.name,
        user: &user,
    };
    let accepted = intake::accept(
        &state.intake,
        via,
        submission,
        Idempotency::Redelivery(claim),
    )
    .await
    .map_err(|e| match e {
        IntakeError::Store(e) => ApiError::from(e),
        // A redelivery claim has no conflicts; the outer timeout is the request's.
        IntakeError::Timeout | IntakeError::Conflict(_) => {
            ApiError::unavailable("the order store did not confirm in time")
        }
    })?;
    let (id, referral) = match accepted {
        Accepted::Created(order) => (order.id.clone(), order.emergency_referral),
        Accepted::Replayed(id) => {
            let referral = state
                .store
                .order(&id)
                .await?
                .and_then(|o| o.emergency_referral);
            (id, referral)
        }
    };
    Ok(Outcome::Text(reply::accepted(id.as_str(), referral)))
}

async fn attach(
    state: &AppState,
    acct: &WechatAccount,
    msg: &Inbound,
    addition: Addition,
    what: &str,
) -> Result<Outcome, ApiError> {
    let now = Utc::now();
    let since = now - state.channels.attach_window;
    let Some(latest) = state
        .store
        .latest_order_of(Channel::Wechat, &msg.from_user, since)
        .await?
    else {
        return Ok(Outcome::Text(reply::NEED_TEXT_FIRST.to_owned()));
    };
    let by = format!("wechat:{}", acct.name);
    match state.store.attach(&latest.id, addition, &by, now).await? {
        Some(order) => {
            metrics::counter!("gateway_channel_additions_total", "channel" => "wechat")
                .increment(1);
            tracing::info!(order_id = %order.id, account = %acct.name, user = %short_user(&msg.from_user), what, "added to order");
            Ok(Outcome::Text(reply::attached(order.id.as_str(), what)))
        }
        None => Ok(Outcome::Text(reply::NEED_TEXT_FIRST.to_owned())),
    }
}

fn respond(acct: &WechatAccount, msg: &Inbound, envelope: &Envelope, outcome: Outcome) -> Response {
    let text = match outcome {
        Outcome::Nothing => return success(),
        Outcome::Text(t) => t,
    };
    if acct.kind == WechatKind::MiniProgram {
        // Mini-programs take no passive reply; answers go out through the customer-service
        // API, which this gateway does not call. Record that there was one.
        metrics::counter!("gateway_channel_replies_unsent_total", "channel" => "wechat")
            .increment(1);
        tracing::info!(account = %acct.name, reply = %Masked(&text), "mini-program reply not sent (customer-service API not configured)");
        return success();
    }
    let now = Utc::now().timestamp();
    let plain = reply::text_xml(&msg.from_user, &msg.to_user, now, &text);
    let body = match (&acct.cipher, envelope.encrypted) {
        (Some(cipher), true) => {
            let random: [u8; 16] = rand::random();
            reply::encrypted_xml(
                cipher,
                &acct.token,
                &plain,
                &now.to_string(),
                &envelope.nonce,
                random,
            )
        }
        _ => plain,
    };
    (
        [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
        body,
    )
        .into_response()
}

fn success() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "success",
    )
        .into_response()
}
