//! `POST /channels/sms/{provider}`: upstream SMS from Aliyun (SmsUp HTTP batch push) and Tencent
//! Cloud (reply callback).
//!
//! Providers redeliver a callback they consider failed, so every answer follows the commit and
//! every message is stored under an idempotency claim keyed by its stable id. Each provider gets
//! answers in its own shape (`{"code":0,"msg":"成功"}`, `{"result":0,"errmsg":"OK"}`), errors
//! included. Long messages split by the carrier arrive as parts in any order: each part is
//! stored durably before it is acknowledged, and the order is created when the last part
//! arrives (or, after `channels.sms.part_wait_s`, from the parts that came). Replies to citizens
//! would go out through the provider's sending API, which this gateway does not call: the text
//! is logged (masked) and counted.

use std::collections::HashMap;

use adapters::normalize::mask::{Masked, mask_phone};
use adapters::sms::{self, Query, SmsMessage};
use adapters::wechat::reply;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query as QueryParams, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{Peer, SmsProvider};
use crate::api::AppState;
use crate::api::error::ApiError;
use crate::intake::{self, Accepted, Idempotency, Intake, IntakeError, Via};
use crate::store::{IdempotencyClaim, SmsPart, SmsPartState};

type Params =
    Result<QueryParams<HashMap<String, String>>, axum::extract::rejection::QueryRejection>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Provider {
    Aliyun,
    Tencent,
}

impl Provider {
    fn name(self) -> &'static str {
        match self {
            Provider::Aliyun => "aliyun",
            Provider::Tencent => "tencent",
        }
    }

    fn ok(self) -> Response {
        match self {
            Provider::Aliyun => Json(json!({"code": 0, "msg": "成功"})).into_response(),
            Provider::Tencent => Json(json!({"result": 0, "errmsg": "OK"})).into_response(),
        }
    }

    /// An error in the provider's own answer shape (non-zero code), with a fitting status.
    fn error(self, status: StatusCode, message: &str) -> Response {
        metrics::counter!("gateway_channel_refused_total", "channel" => "sms", "reason" => status.as_str().to_owned()).increment(1);
        let code = status.as_u16();
        let body = match self {
            Provider::Aliyun => json!({"code": code, "msg": message}),
            Provider::Tencent => json!({"result": code, "errmsg": message}),
        };
        (status, Json(body)).into_response()
    }
}

pub async fn receive(
    State(state): State<AppState>,
    Path(name): Path<String>,
    q: Params,
    peer: Peer,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let provider = match name.as_str() {
        "aliyun" => Provider::Aliyun,
        "tencent" => Provider::Tencent,
        _ => return ApiError::not_found(format!("no SMS provider {name:?}")).into_response(),
    };
    let Some(conf) = state
        .channels
        .sms_provider(provider.name())
        .filter(|p| p.enabled)
    else {
        return ApiError::not_found(format!(
            "the SMS provider {name} is not enabled (channels.sms.{name}.enabled)"
        ))
        .into_response();
    };
    if let Err((status, message)) = authorize(provider, conf, &q, &peer) {
        return provider.error(status, message);
    }
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            return provider.error(e.status(), "the request body is too large or unreadable");
        }
    };
    let messages = match provider {
        Provider::Aliyun => sms::parse_aliyun(&body),
        Provider::Tencent => sms::parse_tencent(&body).map(|m| vec![m]),
    };
    let messages = match messages {
        Ok(m) => m,
        Err(e) => {
            let msg = match &e.field {
                Some(f) => format!("{f}: {}", e.message),
                None => e.message.clone(),
            };
            return provider.error(StatusCode::BAD_REQUEST, &msg);
        }
    };
    let work = async {
        for m in &messages {
            handle(&state.intake, provider.name(), m).await?;
        }
        Ok::<(), IntakeError>(())
    };
    match tokio::time::timeout(state.request_timeout, work).await {
        Ok(Ok(())) => provider.ok(),
        Ok(Err(e)) => {
            tracing::error!(error = %e, provider = provider.name(), "sms: store error");
            provider.error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the order store is unavailable; retry later",
            )
        }
        Err(_) => provider.error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the order store did not confirm in time; retry later",
        ),
    }
}

fn authorize(
    provider: Provider,
    conf: &SmsProvider,
    q: &Params,
    peer: &Peer,
) -> Result<(), (StatusCode, &'static str)> {
    if !conf.allow.is_empty() {
        let ip = peer.as_ref().map(|p| p.0.0.ip());
        if !ip.is_some_and(|ip| crate::config::ip_nets::contains(&conf.allow, ip)) {
            tracing::warn!(provider = provider.name(), peer = ?ip, "sms callback from an address not in allow_ips");
            return Err((StatusCode::FORBIDDEN, "this address may not post callbacks"));
        }
    }
    if let Some(token) = &conf.token {
        let given = q
            .as_ref()
            .ok()
            .and_then(|QueryParams(q)| q.get("token"))
            .map(String::as_str)
            .unwrap_or("");
        if !bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
            return Err((StatusCode::UNAUTHORIZED, "missing or wrong token"));
        }
    }
    Ok(())
}

/// Store one message (or one part of a long one); `Ok` means it is durable.
async fn handle(intake: &Intake, provider: &str, m: &SmsMessage) -> Result<(), IntakeError> {
    let store = intake.store();
    let phone = mask_phone(&m.phone);
    if let Some(query) = sms::parse_query(&m.text) {
        metrics::counter!("gateway_channel_queries_total", "channel" => "sms").increment(1);
        let answer = match query {
            Query::Usage => reply::USAGE.to_owned(),
            Query::Invalid(e) => reply::query_invalid(&e.to_string()),
            Query::Order(id) => match store.order(&id).await? {
                None => reply::query_not_found(id.as_str()),
                Some(order) => {
                    let owner = order.citizen.phone.as_deref() == Some(m.phone.as_str());
                    reply::query_answer(&order, owner)
                }
            },
        };
        unsent(provider, &phone, &answer);
        return Ok(());
    }
    if m.text.trim().is_empty() {
        tracing::info!(provider, phone = %phone, "sms: empty message ignored");
        return Ok(());
    }
    if let Some(marker) = sms::part_marker(&m.text) {
        let part = SmsPart {
            provider: provider.to_owned(),
            part_id: m.id.clone(),
            phone: m.phone.clone(),
            index: marker.index,
            total: marker.total,
            text: m.text.clone(),
            received_at: Utc::now(),
        };
        match store.sms_part(part).await? {
            SmsPartState::Waiting { have, total } => {
                tracing::info!(provider, phone = %phone, have, total, "sms: part stored, waiting for the rest");
            }
            SmsPartState::Done => {
                tracing::info!(provider, phone = %phone, "sms: part redelivered after its order was made");
            }
            SmsPartState::Complete(parts) => create_long(intake, parts).await?,
        }
        return Ok(());
    }
    let claim = claim(provider, &m.id, &[&m.phone, &m.text]);
    create(intake, provider, &m.phone, &m.text, &m.id, claim).await
}

fn claim(provider: &str, key: &str, content: &[&str]) -> IdempotencyClaim {
    let mut h = Sha256::new();
    for c in content {
        h.update(c.as_bytes());
        h.update([0]);
    }
    IdempotencyClaim {
        client: format!("sms:{provider}"),
        key: key.to_owned(),
        body_sha256: h.finalize().into(),
    }
}

async fn create(
    intake: &Intake,
    provider: &str,
    phone: &str,
    text: &str,
    sms_id: &str,
    claim: IdempotencyClaim,
) -> Result<(), IntakeError> {
    let submission = sms::submission(phone, text, sms_id);
    let via = Via::Sms { provider, phone };
    let accepted = intake::accept(intake, via, submission, Idempotency::Redelivery(claim)).await?;
    if let Accepted::Created(order) = accepted {
        unsent(
            provider,
            &mask_phone(phone),
            &reply::accepted(order.id.as_str(), order.emergency_referral),
        );
    }
    Ok(())
}

/// Make the order of a long message from its parts, then mark the parts used.
async fn create_long(intake: &Intake, parts: Vec<SmsPart>) -> Result<(), IntakeError> {
    let Some(first) = parts.first() else {
        return Ok(());
    };
    let provider = first.provider.clone();
    let phone = first.phone.clone();
    let text = sms::reassemble(parts.iter().map(|p| (p.index, p.text.as_str())));
    let mut ids: Vec<String> = parts.iter().map(|p| p.part_id.clone()).collect();
    ids.sort();
    let key = format!(
        "long:{}",
        &hex::encode(Sha256::digest(ids.join("\n").as_bytes()))[..32]
    );
    let sms_id: String = ids.join("+").chars().take(128).collect();
    let claim = claim(&provider, &key, &[&phone, &text]);
    tracing::info!(provider = %provider, phone = %mask_phone(&phone), parts = parts.len(), total = first.total, "sms: long message reassembled");
    create(intake, &provider, &phone, &text, &sms_id, claim).await?;
    Ok(intake
        .store()
        .sms_parts_done(&provider, ids, Utc::now())
        .await?)
}

/// Create orders from long messages whose first part arrived before `older_than`.
pub(super) async fn flush_stale(intake: &Intake, older_than: chrono::DateTime<Utc>) {
    let groups = match intake.store().sms_stale_groups(older_than).await {
        Ok(g) => g,
        Err(e) => {
            tracing::warn!(error = %e, "sms: cannot read waiting parts");
            return;
        }
    };
    for g in groups {
        metrics::counter!("gateway_sms_incomplete_total").increment(1);
        if let Err(e) = create_long(intake, g).await {
            tracing::warn!(error = %e, "sms: cannot create the order of an incomplete long message");
        }
    }
}

fn unsent(provider: &str, masked_phone: &str, text: &str) {
    metrics::counter!("gateway_channel_replies_unsent_total", "channel" => "sms").increment(1);
    tracing::info!(provider, phone = %masked_phone, reply = %Masked(text), "sms reply not sent (no sending API configured)");
}
