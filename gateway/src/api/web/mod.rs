//! The public web form: `GET /` serves it, `POST /web/submit` files it, `GET /web/status` shows
//! an order's progress, `GET /uploads/{sha256}` gives photos back to API-key holders only.
//!
//! Why it looks like this:
//! - Server-rendered HTML with a plain POST form and no JavaScript, because the citizens who use
//!   a web form instead of an app are often on old phones, screen readers or bad connections.
//!   Validation errors show the form again with the input kept and a message at each field.
//! - Like every channel it builds an [`adapters::Submission`], hands it to
//!   [`intake::accept`](crate::intake::accept) and answers only after that returned, i.e. after
//!   the order and its outbox row are committed and synced. The confirmation page therefore never shows a number
//!   that could be lost.
//! - Spam and abuse: a honeypot field, a signed form token with a minimum fill time and an expiry
//!   (also the CSRF defence, see [`token`]), per-IP token buckets (429 page), and photo checks by
//!   their bytes. Anything refused stores nothing, not even the photo.
//! - The form token's nonce is the submission's idempotency key: a double click or a reload of
//!   the result page files one order and shows the same number.
//! - Photos are stored content-addressed (see [`upload`]) and are **not** public: only API-key
//!   holders (the dispatch backend, operators) can fetch them, since a photo of a doorway or a
//!   car plate is personal data.

mod config;
mod limit;
mod page;
pub mod token;
mod upload;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Instant;

use adapters::normalize::mask::Masked;
use adapters::webform::{FieldError, ImageType, WebForm, sniff_image};
use adapters::work_order::{Attachment, Status};
use adapters::{OrderNumber, WorkOrder};
use anyhow::Context;
use axum::Router;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{FixedOffset, Utc};
use sha2::{Digest, Sha256};

pub use config::WebConfig;
pub use limit::RateLimiter;

use super::AppState;
use super::auth;
use crate::config::Config;
use crate::intake::{self, Accepted, Idempotency, IntakeError, Via};
use crate::store::IdempotencyClaim;
use page::FormView;
use token::{FormTokens, TokenError};

const COOKIE: &str = "form_id";

/// The web and Open311 settings and their per-node state (tokens, rate limits).
#[derive(Debug)]
pub struct WebState {
    pub upload_dir: PathBuf,
    pub max_upload_bytes: usize,
    pub allowed: Vec<ImageType>,
    pub max_text_chars: usize,
    pub min_fill_seconds: u64,
    pub form_max_age_seconds: u64,
    pub trust_forwarded_for: bool,
    pub public_url: Option<String>,
    pub tokens: FormTokens,
    pub limiter: RateLimiter<IpAddr>,
    /// Call tokens of browser and app calls (signed with the same secret).
    pub call_tokens: super::webrtc::CallTokens,
    /// The `/call` page's own tokens per client address (the web form's rates).
    pub call_limiter: RateLimiter<IpAddr>,
    pub utc_offset: FixedOffset,
    pub open311_jurisdiction_id: String,
    pub open311_require_api_key: bool,
    pub open311_list_all_channels: bool,
    pub open311_limiter: RateLimiter<String>,
}

impl WebState {
    /// Read `[web]`, create the upload directory and the form secret (generated once, like the
    /// other secrets, into `<data_dir>/web-secret`).
    pub fn from_config(config: &Config) -> anyhow::Result<WebState> {
        let w = &config.web;
        let upload_dir = config.upload_dir();
        std::fs::create_dir_all(&upload_dir)
            .with_context(|| format!("cannot create the upload dir {}", upload_dir.display()))?;
        let secret = match crate::config::secret(&w.secret, &w.secret_file)? {
            Some(s) => s,
            None => crate::config::generated_secret(&config.node.data_dir, "web-secret")?.0,
        };
        Ok(WebState {
            upload_dir,
            max_upload_bytes: w.max_upload_bytes,
            allowed: w.allowed_types.clone(),
            max_text_chars: w.max_text_chars,
            min_fill_seconds: w.min_fill_seconds.as_secs(),
            form_max_age_seconds: w.form_max_age_seconds.as_secs(),
            trust_forwarded_for: w.trust_forwarded_for,
            public_url: w
                .public_url
                .as_ref()
                .map(|u| u.trim_end_matches('/').to_owned()),
            tokens: FormTokens::new(secret.as_bytes()),
            limiter: RateLimiter::new(w.rate_per_minute, w.rate_burst),
            call_tokens: super::webrtc::CallTokens::new(secret.as_bytes()),
            call_limiter: RateLimiter::new(w.rate_per_minute, w.rate_burst),
            utc_offset: config.node.utc_offset,
            open311_jurisdiction_id: w.open311_jurisdiction_id.clone(),
            open311_require_api_key: w.open311_require_api_key,
            open311_list_all_channels: w.open311_list_all_channels,
            open311_limiter: RateLimiter::new(w.open311_rate_per_minute, w.open311_rate_burst),
        })
    }

    fn accept(&self) -> String {
        self.allowed
            .iter()
            .map(|t| t.mime())
            .collect::<Vec<_>>()
            .join(",")
    }

    fn type_names(&self) -> String {
        self.allowed
            .iter()
            .map(|t| match t {
                ImageType::Jpeg => "JPEG",
                ImageType::Png => "PNG",
                ImageType::Webp => "WebP",
            })
            .collect::<Vec<_>>()
            .join("、")
    }
}

pub fn routes(state: &AppState) -> Router<AppState> {
    // The multipart body may be larger than `http.max_body_bytes`: a photo plus the fields.
    let body_limit = state.web.max_upload_bytes.saturating_add(256 * 1024);
    let photos = Router::new()
        .route("/uploads/{name}", get(photo))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_key,
        ));
    Router::new()
        .route("/", get(form))
        .route(
            "/web/submit",
            post(submit).layer(DefaultBodyLimit::max(body_limit)),
        )
        .route("/web/status", get(status))
        .route("/web/style.css", get(style))
        .merge(photos)
}

/// The client address for rate limits: the peer, or behind a trusted proxy the last
/// `X-Forwarded-For` entry (the one that proxy added; earlier ones are the client's to forge).
pub fn client_ip(headers: &HeaderMap, request_ext: &axum::http::Extensions, trust: bool) -> IpAddr {
    if trust
        && let Some(ip) = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|s| s.trim().parse::<IpAddr>().ok())
            .next_back()
    {
        return ip;
    }
    request_ext
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip())
}

fn html(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn message(status: StatusCode, title: &str, text: &str) -> Response {
    html(status, page::message_page(title, text))
}

fn form_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, v)| *k == COOKIE && token::plausible_cookie(v))
        .map(|(_, v)| v.to_owned())
}

/// Show the form (fresh or again with errors) with a new token for `cookie`.
fn render_form(
    web: &WebState,
    status: StatusCode,
    form: &WebForm,
    errors: &[FieldError],
    general: Option<&str>,
    cookie: &str,
) -> Response {
    let token = web.tokens.issue(Utc::now().timestamp(), cookie);
    let accept = web.accept();
    let type_names = web.type_names();
    let body = page::form_page(&FormView {
        form,
        errors,
        general,
        token: &token,
        max_text_chars: web.max_text_chars,
        max_upload_bytes: web.max_upload_bytes,
        accept: &accept,
        type_names: &type_names,
    });
    let mut r = html(status, body);
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{COOKIE}={cookie}; Path=/; HttpOnly; SameSite=Strict; Max-Age=86400"
    )) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// `GET /`
async fn form(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let cookie = form_cookie(&headers).unwrap_or_else(token::new_cookie);
    render_form(
        &state.web,
        StatusCode::OK,
        &WebForm::default(),
        &[],
        None,
        &cookie,
    )
}

async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("style.css"),
    )
        .into_response()
}

/// A photo as received: its bytes, or that it was too large (the rest was read and dropped).
#[derive(Debug, Default)]
struct Photo {
    bytes: Vec<u8>,
    too_large: bool,
}

#[derive(Debug, Default)]
struct Posted {
    form: WebForm,
    token: String,
    honeypot: String,
    photo: Option<Photo>,
}

/// Read the multipart body. Text fields are bounded by the body limit; the photo by
/// `max_upload_bytes` (beyond it the bytes are read and dropped so the form can be shown again).
async fn read_multipart(
    mut multipart: Multipart,
    max_upload: usize,
) -> Result<Posted, (StatusCode, String)> {
    let fail = |e: axum::extract::multipart::MultipartError| (e.status(), e.body_text());
    let mut posted = Posted::default();
    while let Some(mut field) = multipart.next_field().await.map_err(fail)? {
        let name = field.name().unwrap_or_default().to_owned();
        if name == "photo" {
            let mut photo = Photo::default();
            while let Some(chunk) = field.chunk().await.map_err(fail)? {
                if photo.bytes.len() + chunk.len() > max_upload {
                    photo.too_large = true;
                    photo.bytes = Vec::new();
                }
                if !photo.too_large {
                    photo.bytes.extend_from_slice(&chunk);
                }
            }
            // A file input left empty still sends a part, with no bytes.
            if photo.too_large || !photo.bytes.is_empty() {
                posted.photo = Some(photo);
            }
            continue;
        }
        let value = field.text().await.map_err(fail)?;
        match name.as_str() {
            "token" => posted.token = value,
            "website" => posted.honeypot = value,
            other => {
                posted.form.set(other, &value);
            }
        }
    }
    Ok(posted)
}

/// Does the `Origin` (when the browser sent a real one) name this host? Defence in depth: the
/// token bound to the cookie is what actually stops cross-site posts, so an absent or `null`
/// origin (privacy settings, old browsers) is let through to the token check.
fn same_origin(headers: &HeaderMap, trust_forwarded: bool) -> bool {
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    let Some(origin) = origin.filter(|o| *o != "null") else {
        return true;
    };
    let origin_host = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .unwrap_or("");
    let host = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let ours = host("host");
    let forwarded = if trust_forwarded {
        host("x-forwarded-host")
    } else {
        None
    };
    !origin_host.is_empty() && (ours == Some(origin_host) || forwarded == Some(origin_host))
}

fn refused(reason: &'static str) {
    metrics::counter!("gateway_web_refused_total", "reason" => reason).increment(1);
}

/// `POST /web/submit`
async fn submit(State(state): State<AppState>, request: Request) -> Response {
    let web = state.web.clone();
    let headers = request.headers().clone();
    let ip = client_ip(&headers, request.extensions(), web.trust_forwarded_for);
    if let Err(wait) = web.limiter.check(ip, Instant::now()) {
        refused("rate_limited");
        tracing::info!(%ip, "web form: rate limited");
        let mut r = message(
            StatusCode::TOO_MANY_REQUESTS,
            "提交过于频繁",
            &format!(
                "您提交得太频繁了，请约{}秒后再试。紧急情况请直接拨打电话。",
                wait.as_secs().max(1)
            ),
        );
        if let Ok(v) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return r;
    }
    if !same_origin(&headers, web.trust_forwarded_for) {
        refused("cross_origin");
        return message(
            StatusCode::FORBIDDEN,
            "无法提交",
            "请从本网站的表单页面提交诉求。",
        );
    }
    let cookie = form_cookie(&headers);
    let multipart = match Multipart::from_request(request, &state).await {
        Ok(m) => m,
        Err(_) => {
            refused("malformed");
            return message(
                StatusCode::BAD_REQUEST,
                "无法提交",
                "请通过诉求表单页面提交。",
            );
        }
    };
    let posted = match read_multipart(multipart, web.max_upload_bytes).await {
        Ok(p) => p,
        Err((status, detail)) => {
            refused("malformed");
            tracing::info!(%ip, %status, detail, "web form: unreadable body");
            let text = if status == StatusCode::PAYLOAD_TOO_LARGE {
                format!(
                    "上传的内容太大。照片不能超过{}MB，请压缩或换一张后重新提交。",
                    web.max_upload_bytes / (1024 * 1024)
                )
            } else {
                "提交的内容无法读取，请返回表单重新提交。".to_owned()
            };
            return message(status, "无法提交", &text);
        }
    };
    let cookie_for_form = cookie.clone().unwrap_or_else(token::new_cookie);
    let again = |status: StatusCode, errors: &[FieldError], general: Option<&str>| {
        render_form(
            &web,
            status,
            &posted.form,
            errors,
            general,
            &cookie_for_form,
        )
    };

    if !posted.honeypot.trim().is_empty() {
        refused("honeypot");
        tracing::info!(%ip, website = %Masked(&posted.honeypot), "web form: honeypot filled");
        return message(
            StatusCode::BAD_REQUEST,
            "无法提交",
            "提交未被受理。如需帮助请拨打12345热线。",
        );
    }
    let verified = match web.tokens.verify(
        &posted.token,
        cookie.as_deref().unwrap_or(""),
        Utc::now().timestamp(),
        web.min_fill_seconds,
        web.form_max_age_seconds,
    ) {
        Ok(v) => v,
        Err(TokenError::TooFast) => {
            refused("too_fast");
            tracing::info!(%ip, "web form: sent back too fast");
            return again(
                StatusCode::BAD_REQUEST,
                &[],
                Some("提交得太快了。请核对填写的内容，然后再次点击“提交诉求”。"),
            );
        }
        Err(TokenError::Expired) => {
            refused("expired");
            return again(
                StatusCode::BAD_REQUEST,
                &[],
                Some("页面已过期。您填写的内容已保留，请核对后再次提交。"),
            );
        }
        Err(TokenError::Invalid) => {
            refused("bad_token");
            tracing::info!(%ip, cookie = cookie.is_some(), "web form: invalid token");
            return again(
                StatusCode::FORBIDDEN,
                &[],
                Some(
                    "页面已失效（可能浏览器禁用了Cookie）。请允许本网站使用Cookie，核对内容后再次提交。",
                ),
            );
        }
    };

    let mut errors = Vec::new();
    let submission = posted.form.validate(web.max_text_chars);
    if let Err(e) = &submission {
        errors.extend(e.iter().cloned());
    }
    let photo_type = match &posted.photo {
        None => None,
        Some(p) if p.too_large => {
            errors.push(FieldError::new(
                "photo",
                format!(
                    "照片不能超过{}MB，请压缩或换一张",
                    web.max_upload_bytes / (1024 * 1024)
                ),
            ));
            None
        }
        Some(p) => match sniff_image(&p.bytes).filter(|t| web.allowed.contains(t)) {
            Some(t) => Some(t),
            None => {
                errors.push(FieldError::new(
                    "photo",
                    format!(
                        "只能上传{}格式的照片，这个文件不是有效的图片",
                        web.type_names()
                    ),
                ));
                None
            }
        },
    };
    let mut submission = match submission {
        Ok(s) if errors.is_empty() => s,
        _ => {
            refused("invalid");
            return again(StatusCode::UNPROCESSABLE_ENTITY, &errors, None);
        }
    };

    let mut photo_sha = String::new();
    if let (Some(photo), Some(kind)) = (posted.photo, photo_type) {
        let dir = web.upload_dir.clone();
        let stored = tokio::task::spawn_blocking(move || upload::store(&dir, &photo.bytes)).await;
        match stored {
            Ok(Ok(sha)) => {
                let base = web.public_url.as_deref().unwrap_or("");
                submission.attachments.push(Attachment {
                    url: format!("{base}/uploads/{sha}"),
                    mime: kind.mime().into(),
                    sha256: Some(sha.clone()),
                });
                photo_sha = sha;
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, dir = %web.upload_dir.display(), "cannot store an uploaded photo");
                return again(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &[],
                    Some("系统繁忙，照片未能保存。请稍后再试，或不附照片提交。"),
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "photo store task failed");
                return again(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &[],
                    Some("系统繁忙，请稍后再试。"),
                );
            }
        }
    }

    let mut content = Sha256::new();
    for part in [
        submission.text.as_str(),
        submission.location.district.as_deref().unwrap_or(""),
        submission.location.address.as_deref().unwrap_or(""),
        submission.citizen.name.as_deref().unwrap_or(""),
        submission.citizen.phone.as_deref().unwrap_or(""),
        &photo_sha,
    ] {
        content.update(part.as_bytes());
        content.update(b"\0");
    }
    let idempotency = Idempotency::Key(IdempotencyClaim {
        client: "web-form".into(),
        key: verified.nonce,
        body_sha256: content.finalize().into(),
    });
    let busy = || {
        again(
            StatusCode::SERVICE_UNAVAILABLE,
            &[],
            Some("系统繁忙，诉求未能提交。您填写的内容已保留，请稍后再次提交。"),
        )
    };
    let via = Via::Web {
        photo: !photo_sha.is_empty(),
    };
    match intake::accept(&state.intake, via, submission, idempotency).await {
        Ok(Accepted::Created(order)) => confirmation(&order),
        Ok(Accepted::Replayed(id)) => match state.store.order(&id).await {
            Ok(Some(order)) => confirmation(&order),
            _ => html(StatusCode::OK, page::confirmation_page(id.as_str(), None)),
        },
        Err(IntakeError::Conflict(id)) => again(
            StatusCode::CONFLICT,
            &[],
            Some(&format!(
                "这张表单已经提交过（工单号 {id}）。如要提交新的诉求，请核对内容后再次提交。"
            )),
        ),
        Err(IntakeError::Store(e)) => {
            tracing::error!(error = %e, "web form: store error");
            busy()
        }
        Err(IntakeError::Timeout) => {
            tracing::error!("web form: the store did not confirm in time");
            busy()
        }
    }
}

fn confirmation(order: &WorkOrder) -> Response {
    html(
        StatusCode::OK,
        page::confirmation_page(
            order.id.as_str(),
            order.emergency_referral.map(|r| r.number()),
        ),
    )
}

fn status_label(s: Status) -> &'static str {
    s.label_zh()
}

/// `GET /web/status?order=`
async fn status(State(state): State<AppState>, RawQuery(query): RawQuery) -> Response {
    let raw: String = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "order")
        .map(|(_, v)| v.chars().filter(|c| !c.is_whitespace()).take(40).collect())
        .unwrap_or_default();
    if raw.is_empty() {
        return html(StatusCode::OK, page::status_page("", None, None));
    }
    let Ok(id) = OrderNumber::parse(&raw) else {
        return html(
            StatusCode::BAD_REQUEST,
            page::status_page(&raw, Some("工单号有误，请核对后重新输入"), None),
        );
    };
    match state.store.order(&id).await {
        Ok(Some(order)) => {
            let offset = state.web.utc_offset;
            let view = page::StatusView {
                id: order.id.to_string(),
                status: status_label(order.status),
                history: order
                    .history
                    .iter()
                    .map(|h| {
                        (
                            h.at.with_timezone(&offset)
                                .format("%Y-%m-%d %H:%M")
                                .to_string(),
                            status_label(h.status),
                        )
                    })
                    .collect(),
            };
            html(StatusCode::OK, page::status_page(&raw, None, Some(&view)))
        }
        Ok(None) => html(
            StatusCode::NOT_FOUND,
            page::status_page(&raw, Some("没有找到这个工单，请核对工单号"), None),
        ),
        Err(e) => {
            tracing::error!(error = %e, "status page: store error");
            message(
                StatusCode::SERVICE_UNAVAILABLE,
                "暂时无法查询",
                "系统繁忙，请稍后再试，或拨打12345热线查询。",
            )
        }
    }
}

/// `GET /uploads/{sha256}`, API key required (see the module doc).
async fn photo(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    let not_found = || super::error::ApiError::not_found("no such photo").into_response();
    if !upload::is_photo_name(&name) {
        return not_found();
    }
    let Ok(bytes) = tokio::fs::read(state.web.upload_dir.join(&name)).await else {
        return not_found();
    };
    let Some(kind) = sniff_image(&bytes) else {
        return not_found();
    };
    (
        [
            (header::CONTENT_TYPE, kind.mime()),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; sandbox",
            ),
            (header::CACHE_CONTROL, "private, max-age=86400, immutable"),
        ],
        bytes,
    )
        .into_response()
}
