//! Open311 GeoReport v2 (JSON): `GET services.json`, `POST`/`GET requests.json`,
//! `GET requests/{id}.json`.
//!
//! The wire format is the spec's, not ours: form-encoded POSTs, arrays in answers and errors as
//! `[{"code", "description"}]` with the same HTTP status, because Open311 clients are written
//! against the spec and would not understand `{"error": ...}`. The mapping lives in
//! [`adapters::open311`]; this module checks the API key (the spec's `api_key` parameter, looked
//! up among the gateway's API keys), rate-limits, stores and reads.
//!
//! Reading is public, as the spec intends, so answers carry no personal data, and by default only
//! orders filed through Open311 are listed (`web.open311_list_all_channels`): people who phoned
//! or used the web form did not ask for their reports to be published.

use adapters::open311::{
    ListQuery, Open311Error, SERVICES, parse_list_query, parse_post, service_request,
};
use adapters::work_order::Channel;
use adapters::{OrderNumber, WorkOrder};
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{Duration as ChronoDuration, Utc};
use serde_json::json;

use super::AppState;
use crate::intake::{self, Accepted, Idempotency, IntakeError, Via};

/// Most requests in one list answer, and most orders scanned to find them.
const MAX_RESULTS: usize = 1000;
const MAX_SCANNED: usize = 20_000;
const PAGE: u32 = 500;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/open311/v2/services.json", get(services))
        .route("/open311/v2/requests.json", get(list).post(create))
        .route("/open311/v2/requests/{file}", get(get_one))
}

struct Failure(Open311Error);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.code).unwrap_or(StatusCode::BAD_REQUEST);
        metrics::counter!("gateway_open311_errors_total", "code" => self.0.code.to_string())
            .increment(1);
        (status, Json(vec![self.0])).into_response()
    }
}

impl From<Open311Error> for Failure {
    fn from(e: Open311Error) -> Self {
        Failure(e)
    }
}

fn fail(code: u16, description: impl Into<String>) -> Failure {
    Failure(Open311Error::new(code, description))
}

fn unavailable(e: impl std::fmt::Display) -> Failure {
    tracing::error!(error = %e, "open311: store error");
    fail(503, "the order store is unavailable; retry later")
}

fn check_jurisdiction(state: &AppState, given: Option<&str>) -> Result<(), Failure> {
    match given {
        Some(j) if j != state.web.open311_jurisdiction_id => Err(fail(
            404,
            format!(
                "jurisdiction_id {j:?} is not served here; this endpoint serves {:?}",
                state.web.open311_jurisdiction_id
            ),
        )),
        _ => Ok(()),
    }
}

/// `GET /open311/v2/services.json`
async fn services(
    State(state): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Response, Failure> {
    let jurisdiction = q.as_deref().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "jurisdiction_id")
            .map(|(_, v)| v.into_owned())
    });
    check_jurisdiction(&state, jurisdiction.as_deref())?;
    Ok(Json(SERVICES.to_vec()).into_response())
}

/// `POST /open311/v2/requests.json`
async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, Failure> {
    let ip = super::web::client_ip(
        &headers,
        request.extensions(),
        state.web.trust_forwarded_for,
    );
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/x-www-form-urlencoded")
        .to_ascii_lowercase();
    if !content_type.starts_with("application/x-www-form-urlencoded") {
        return Err(fail(
            415,
            "send the request form-encoded (application/x-www-form-urlencoded), as GeoReport v2 specifies",
        ));
    }
    let body: Result<Bytes, BytesRejection> =
        <Bytes as axum::extract::FromRequest<AppState>>::from_request(request, &state).await;
    let body = body.map_err(|r| {
        let status = r.status().as_u16();
        fail(status, "the request body is too large or unreadable")
    })?;
    let post = parse_post(&body);
    let client = match post.api_key.as_deref() {
        Some(key) => match state.keys.lookup(key) {
            Some(c) => Some(c.clone()),
            None => {
                metrics::counter!("gateway_auth_failures_total").increment(1);
                return Err(fail(403, "api_key is not valid"));
            }
        },
        None if state.web.open311_require_api_key => {
            return Err(fail(403, "api_key is required to submit requests"));
        }
        None => None,
    };
    let bucket = client
        .as_ref()
        .map_or_else(|| format!("ip:{ip}"), |c| format!("key:{}", c.name));
    if let Err(wait) = state
        .web
        .open311_limiter
        .check(bucket, std::time::Instant::now())
    {
        let mut r = fail(429, "too many requests; slow down").into_response();
        if let Ok(v) = wait.as_secs().max(1).to_string().parse() {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return Ok(r);
    }
    check_jurisdiction(&state, post.jurisdiction_id.as_deref())?;
    let ignored = post.ignored_attributes;
    let mut submission = post.into_submission()?;
    submission.source.api_client = client.as_ref().map(|c| c.name.clone());
    let via = Via::Open311 {
        client: client.as_ref().map(|c| c.name.as_str()),
        ignored_attributes: ignored,
    };
    let order = match intake::accept(&state.intake, via, submission, Idempotency::None).await {
        Ok(Accepted::Created(order)) => order,
        Err(IntakeError::Timeout) => {
            return Err(fail(
                503,
                "the order store did not confirm in time; retry later",
            ));
        }
        Err(IntakeError::Store(e)) => return Err(unavailable(e)),
        // Without an idempotency claim the store always creates.
        Ok(Accepted::Replayed(_)) | Err(IntakeError::Conflict(_)) => {
            return Err(fail(500, "unexpected store answer"));
        }
    };
    let notice = match order.emergency_referral {
        Some(r) => format!(
            "如遇紧急情况请直接拨打{n}。In an emergency call {n} now. 诉求已受理，工单号{id}。",
            n = r.number(),
            id = order.id
        ),
        None => format!(
            "诉求已受理，工单号{}。可拨打12345热线查询办理进度。",
            order.id
        ),
    };
    Ok(Json(json!([{
        "service_request_id": order.id,
        "service_notice": notice,
        "account_id": null,
    }]))
    .into_response())
}

fn visible(state: &AppState, order: &WorkOrder) -> bool {
    state.web.open311_list_all_channels || order.channel == Channel::Open311
}

/// `GET /open311/v2/requests.json`
async fn list(State(state): State<AppState>, RawQuery(q): RawQuery) -> Result<Response, Failure> {
    let offset = state.web.utc_offset;
    let query: ListQuery = parse_list_query(q.as_deref().unwrap_or(""), offset)?;
    check_jurisdiction(&state, query.jurisdiction_id.as_deref())?;
    let mut found: Vec<WorkOrder> = Vec::new();
    if !query.ids.is_empty() {
        for id in &query.ids {
            if let Some(order) = state.store.order(id).await.map_err(unavailable)?
                && visible(&state, &order)
                && query.matches(&order)
            {
                found.push(order);
            }
        }
    } else {
        // The spec's default window: the last 90 days.
        let since = query
            .start
            .unwrap_or_else(|| Utc::now() - ChronoDuration::days(90));
        let mut after: Option<OrderNumber> = None;
        let mut scanned = 0;
        loop {
            let page = state
                .store
                .orders(Some(since), after.clone(), PAGE)
                .await
                .map_err(unavailable)?;
            scanned += page.len();
            let full = page.len() == PAGE as usize;
            after = page.last().map(|o| o.id.clone());
            found.extend(
                page.into_iter()
                    .filter(|o| visible(&state, o) && query.matches(o)),
            );
            if !full || found.len() >= MAX_RESULTS || scanned >= MAX_SCANNED {
                break;
            }
        }
        found.truncate(MAX_RESULTS);
        found.reverse();
    }
    let views: Vec<_> = found.iter().map(|o| service_request(o, offset)).collect();
    Ok(Json(views).into_response())
}

/// `GET /open311/v2/requests/{id}.json`
async fn get_one(
    State(state): State<AppState>,
    Path(file): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, Failure> {
    let Some(raw) = file.strip_suffix(".json") else {
        return Err(fail(
            400,
            "only the JSON format is served: request /open311/v2/requests/{id}.json",
        ));
    };
    let jurisdiction = q.as_deref().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "jurisdiction_id")
            .map(|(_, v)| v.into_owned())
    });
    check_jurisdiction(&state, jurisdiction.as_deref())?;
    let id = OrderNumber::parse(raw)
        .map_err(|e| fail(400, format!("{raw:?} is not a service_request_id: {e}")))?;
    match state.store.order(&id).await.map_err(unavailable)? {
        Some(order) if visible(&state, &order) => {
            Ok(Json(vec![service_request(&order, state.web.utc_offset)]).into_response())
        }
        _ => Err(fail(404, format!("service_request_id {id} not found"))),
    }
}
