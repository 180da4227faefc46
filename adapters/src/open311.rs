//! Open311 GeoReport v2: the service list, `POST requests` bodies, list filters and the public
//! view of an order.
//!
//! GeoReport v2 is what city apps, civic-tech tools and neighbouring systems already speak, so
//! supporting it lets them file into the 12345 hotline without a custom integration. The spec's
//! wire format is kept (form-encoded POST, arrays of objects in answers, errors as
//! `[{"code", "description"}]`); the gateway maps it onto the one [`Submission`] every channel
//! produces.
//!
//! The public view ([`ServiceRequest`]) carries no personal data: no names, phones or e-mail,
//! and the description is passed through [`mask_text`](crate::normalize::mask::mask_text) in
//! case the citizen typed a phone or ID number into it. Services are our six kinds (the
//! taxonomy's categories are assigned by normalization afterwards, not chosen by the client).
//! Everything here is pure; the gateway checks the API key and does the I/O.

use chrono::{DateTime, FixedOffset, NaiveDate, SecondsFormat, Utc};
use serde::Serialize;

use crate::normalize::mask::mask_text;
use crate::order_number::OrderNumber;
use crate::submission::{MAX_ATTACHMENTS, MAX_TEXT_CHARS, Submission, normalize_phone};
use crate::work_order::{Attachment, Channel, Citizen, Kind, Location, Source, Status, WorkOrder};

/// An error in the spec's shape: `{"code": 400, "description": "..."}`; `code` is also the HTTP
/// status of the answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{code}: {description}")]
pub struct Open311Error {
    pub code: u16,
    pub description: String,
}

impl Open311Error {
    pub fn new(code: u16, description: impl Into<String>) -> Self {
        Open311Error {
            code,
            description: description.into(),
        }
    }

    fn bad(description: impl Into<String>) -> Self {
        Self::new(400, description)
    }
}

/// One entry of `services.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Service {
    pub service_code: &'static str,
    pub service_name: &'static str,
    pub description: &'static str,
    pub metadata: bool,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub keywords: &'static str,
    pub group: &'static str,
}

const fn service(
    service_code: &'static str,
    service_name: &'static str,
    description: &'static str,
    keywords: &'static str,
) -> Service {
    Service {
        service_code,
        service_name,
        description,
        metadata: false,
        kind: "realtime",
        keywords,
        group: "12345市民热线",
    }
}

/// The service list: one service per kind of 12345 request. The code is the kind's name, so a
/// client's choice carries straight into `WorkOrder.kind`.
pub const SERVICES: [Service; 6] = [
    service(
        "consultation",
        "咨询",
        "政策、办事流程等问题咨询 (questions about policies and procedures)",
        "咨询,政策,办事,consultation,question",
    ),
    service(
        "help",
        "求助",
        "生活困难、需要帮助 (requests for help)",
        "求助,帮助,困难,help",
    ),
    service(
        "complaint",
        "投诉",
        "对服务、噪音、扰民等问题的投诉 (complaints: noise, services, conduct)",
        "投诉,扰民,噪音,complaint,noise",
    ),
    service(
        "report",
        "举报",
        "违法违规行为、设施损坏的举报 (reports: violations, broken facilities)",
        "举报,违法,违建,路灯,井盖,report,pothole,streetlight",
    ),
    service(
        "suggestion",
        "建议",
        "对城市管理和公共服务的建议 (suggestions)",
        "建议,suggestion",
    ),
    service(
        "praise",
        "表扬",
        "对部门、工作人员的表扬 (praise)",
        "表扬,感谢,praise,thanks",
    ),
];

pub fn service_for(code: &str) -> Option<&'static Service> {
    SERVICES.iter().find(|s| s.service_code == code)
}

/// The service an order belongs to (its kind).
pub fn service_of(kind: Kind) -> &'static Service {
    let code = kind.as_str();
    SERVICES
        .iter()
        .find(|s| s.service_code == code)
        .unwrap_or(&SERVICES[0])
}

/// A parsed `POST /open311/v2/requests.json` body.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PostRequest {
    pub api_key: Option<String>,
    pub jurisdiction_id: Option<String>,
    pub service_code: Option<String>,
    pub lat: Option<String>,
    pub long: Option<String>,
    pub address_string: Option<String>,
    pub address_id: Option<String>,
    pub description: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub device_id: Option<String>,
    pub account_id: Option<String>,
    pub media_url: Option<String>,
    /// `attribute[...]` parameters seen (ignored: no service has metadata).
    pub ignored_attributes: usize,
}

/// Longest value kept from any single parameter before validation; validation reports the
/// real limits.
const MAX_PARAM_CHARS: usize = MAX_TEXT_CHARS + 1;

/// Decode a form-encoded body (`application/x-www-form-urlencoded`). Unknown parameters and
/// `attribute[code]=value` pairs are ignored, as the spec lets servers do; for a repeated
/// parameter the last one counts. Empty values count as absent.
pub fn parse_post(body: &[u8]) -> PostRequest {
    let mut r = PostRequest::default();
    for (name, value) in form_urlencoded::parse(body) {
        let value = value.trim();
        let value = (!value.is_empty()).then(|| value.chars().take(MAX_PARAM_CHARS).collect());
        let slot = match name.as_ref() {
            "api_key" => &mut r.api_key,
            "jurisdiction_id" => &mut r.jurisdiction_id,
            "service_code" => &mut r.service_code,
            "lat" => &mut r.lat,
            "long" => &mut r.long,
            "address_string" => &mut r.address_string,
            "address_id" => &mut r.address_id,
            "description" => &mut r.description,
            "first_name" => &mut r.first_name,
            "last_name" => &mut r.last_name,
            "phone" => &mut r.phone,
            "email" => &mut r.email,
            "device_id" => &mut r.device_id,
            "account_id" => &mut r.account_id,
            "media_url" => &mut r.media_url,
            n if n.starts_with("attribute[") => {
                r.ignored_attributes += 1;
                continue;
            }
            _ => continue,
        };
        *slot = value;
    }
    r
}

fn bounded(name: &str, v: &Option<String>, max: usize) -> Result<Option<String>, Open311Error> {
    match v {
        Some(s) if s.chars().count() > max => Err(Open311Error::bad(format!(
            "{name} is at most {max} characters"
        ))),
        Some(s)
            if s.chars()
                .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r') =>
        {
            Err(Open311Error::bad(format!("{name} has control characters")))
        }
        other => Ok(other.clone()),
    }
}

fn coordinate(
    name: &str,
    v: &str,
    range: std::ops::RangeInclusive<f64>,
) -> Result<f64, Open311Error> {
    v.parse::<f64>()
        .ok()
        .filter(|x| x.is_finite() && range.contains(x))
        .ok_or_else(|| {
            Open311Error::bad(format!(
                "{name} must be a decimal number between {} and {} (WGS84)",
                range.start(),
                range.end()
            ))
        })
}

impl PostRequest {
    /// Validate the request and turn it into a submission (the API key is the gateway's check).
    pub fn into_submission(self) -> Result<Submission, Open311Error> {
        let code = self
            .service_code
            .as_deref()
            .ok_or_else(|| Open311Error::bad("service_code is required; see services.json"))?;
        let service = service_for(code).ok_or_else(|| {
            Open311Error::new(
                404,
                format!("service_code {code:?} not found; see services.json"),
            )
        })?;
        let kind = Kind::parse(service.service_code);
        let text = self
            .description
            .as_deref()
            .ok_or_else(|| Open311Error::bad("description is required: what happened, where"))?;
        if text.chars().count() > MAX_TEXT_CHARS {
            return Err(Open311Error::bad(format!(
                "description is at most {MAX_TEXT_CHARS} characters"
            )));
        }

        let (lat, lng) = match (self.lat.as_deref(), self.long.as_deref()) {
            (None, None) => (None, None),
            (Some(lat), Some(lng)) => (
                Some(coordinate("lat", lat, -90.0..=90.0)?),
                Some(coordinate("long", lng, -180.0..=180.0)?),
            ),
            (Some(_), None) => return Err(Open311Error::bad("long is required with lat")),
            (None, Some(_)) => return Err(Open311Error::bad("lat is required with long")),
        };
        let address = bounded("address_string", &self.address_string, 256)?;
        let address_id = bounded("address_id", &self.address_id, 128)?;
        if lat.is_none() && address.is_none() && address_id.is_none() {
            return Err(Open311Error::bad(
                "a location is required: lat and long, or address_string",
            ));
        }

        let first = bounded("first_name", &self.first_name, 32)?;
        let last = bounded("last_name", &self.last_name, 32)?;
        let name = match (last, first) {
            (None, None) => None,
            (Some(n), None) | (None, Some(n)) => Some(n),
            // Chinese names are family name first, without a space; Latin ones the other way.
            (Some(l), Some(f)) if !l.is_ascii() && !f.is_ascii() => Some(format!("{l}{f}")),
            (Some(l), Some(f)) => Some(format!("{f} {l}")),
        };
        let phone = match self.phone.as_deref() {
            None => None,
            Some(p) => Some(normalize_phone(p).ok_or_else(|| {
                Open311Error::bad(
                    "phone has 3 to 20 digits, optionally a leading + and spaces or dashes",
                )
            })?),
        };
        let email = bounded("email", &self.email, 254)?;
        if let Some(e) = &email
            && (!e.contains('@') || e.contains(char::is_whitespace))
        {
            return Err(Open311Error::bad("email is not an e-mail address"));
        }

        let mut attachments = Vec::new();
        if let Some(url) = &self.media_url {
            if !(url.starts_with("https://") || url.starts_with("http://"))
                || url.len() > 2048
                || url.chars().any(char::is_whitespace)
            {
                return Err(Open311Error::bad(
                    "media_url is an http(s) URL of at most 2048 characters",
                ));
            }
            attachments.push(Attachment {
                url: url.clone(),
                mime: guess_mime(url).into(),
                sha256: None,
            });
        }
        debug_assert!(attachments.len() <= MAX_ATTACHMENTS);

        Ok(Submission {
            channel: Channel::Open311,
            citizen: Citizen {
                name,
                phone,
                channel_user: email.map(|e| format!("mailto:{e}")),
            },
            kind,
            text: text.to_owned(),
            transcript: Vec::new(),
            language: "zh".into(),
            location: Location {
                district: None,
                street: None,
                address: address.or(address_id),
                lat,
                lng,
            },
            attachments,
            recording: None,
            source: Source {
                external_id: bounded("device_id", &self.device_id, 128)?,
                ..Source::default()
            },
        })
    }
}

/// The media type of a linked photo, from its extension (we never fetch it).
fn guess_mime(url: &str) -> &'static str {
    let path = url
        .split(['?', '#'])
        .next()
        .unwrap_or(url)
        .to_ascii_lowercase();
    if path.ends_with(".png") {
        "image/png"
    } else if path.ends_with(".webp") {
        "image/webp"
    } else if path.ends_with(".jpg") || path.ends_with(".jpeg") {
        "image/jpeg"
    } else {
        "application/octet-stream"
    }
}

/// `open` or `closed`, the only two statuses GeoReport v2 knows.
pub fn open_or_closed(status: Status) -> &'static str {
    match status {
        Status::Accepted | Status::Delivered | Status::Assigned | Status::InProgress => "open",
        Status::Resolved | Status::Closed | Status::Rejected => "closed",
    }
}

/// An order as GeoReport v2 shows it: no personal data.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceRequest {
    pub service_request_id: OrderNumber,
    pub status: &'static str,
    pub status_notes: Option<String>,
    pub service_name: &'static str,
    pub service_code: &'static str,
    pub description: String,
    pub agency_responsible: Option<String>,
    pub service_notice: Option<String>,
    pub requested_datetime: String,
    pub updated_datetime: String,
    pub expected_datetime: Option<String>,
    pub address: Option<String>,
    pub address_id: Option<String>,
    pub zipcode: Option<String>,
    pub lat: Option<f64>,
    pub long: Option<f64>,
    pub media_url: Option<String>,
}

fn w3c(t: DateTime<Utc>, offset: FixedOffset) -> String {
    t.with_timezone(&offset)
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The public view of an order, times in the hotline's offset.
pub fn service_request(order: &WorkOrder, offset: FixedOffset) -> ServiceRequest {
    let service = service_of(order.kind);
    let updated = order.history.last().map_or(order.received_at, |h| h.at);
    let status_notes = order
        .history
        .iter()
        .rev()
        .find_map(|h| h.note.as_deref())
        .map(|n| mask_text(n).into_owned());
    let address = match (&order.location.district, &order.location.address) {
        (Some(d), Some(a)) if !a.starts_with(d.as_str()) => Some(format!("{d}{a}")),
        (_, Some(a)) => Some(a.clone()),
        (Some(d), None) => Some(d.clone()),
        (None, None) => None,
    };
    ServiceRequest {
        service_request_id: order.id.clone(),
        status: open_or_closed(order.status),
        status_notes,
        service_name: service.service_name,
        service_code: service.service_code,
        description: mask_text(&order.text).into_owned(),
        agency_responsible: None,
        service_notice: order
            .emergency_referral
            .map(|r| format!("如遇紧急情况请直接拨打{}", r.number())),
        requested_datetime: w3c(order.received_at, offset),
        updated_datetime: w3c(updated, offset),
        expected_datetime: None,
        address,
        address_id: None,
        zipcode: None,
        lat: order.location.lat,
        long: order.location.lng,
        // Only links the citizen gave us are public; photos uploaded to the gateway are not.
        media_url: order
            .attachments
            .iter()
            .find(|a| a.url.starts_with("http://") || a.url.starts_with("https://"))
            .filter(|a| a.sha256.is_none())
            .map(|a| a.url.clone()),
    }
}

/// Filters of `GET /open311/v2/requests.json`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListQuery {
    pub ids: Vec<OrderNumber>,
    pub service_codes: Vec<String>,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    /// `open` and/or `closed`.
    pub statuses: Vec<String>,
    pub jurisdiction_id: Option<String>,
}

/// Most ids in one `service_request_id` list.
pub const MAX_IDS: usize = 100;

fn parse_time(
    name: &str,
    v: &str,
    offset: FixedOffset,
    end_of_day: bool,
) -> Result<DateTime<Utc>, Open311Error> {
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return Ok(t.to_utc());
    }
    if let Ok(d) = NaiveDate::parse_from_str(v, "%Y-%m-%d") {
        let time = if end_of_day {
            d.and_hms_opt(23, 59, 59)
        } else {
            d.and_hms_opt(0, 0, 0)
        };
        if let Some(local) = time.and_then(|t| t.and_local_timezone(offset).single()) {
            return Ok(local.to_utc());
        }
    }
    Err(Open311Error::bad(format!(
        "{name} is a W3C date-time such as 2026-01-31T08:00:00+08:00 (or a date 2026-01-31)"
    )))
}

/// Parse the query string; dates without an offset are in the hotline's offset.
pub fn parse_list_query(query: &str, offset: FixedOffset) -> Result<ListQuery, Open311Error> {
    let mut q = ListQuery::default();
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        match name.as_ref() {
            "service_request_id" => {
                for id in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    let n = OrderNumber::parse(id).map_err(|e| {
                        Open311Error::bad(format!(
                            "service_request_id {id:?} is not an order number: {e}"
                        ))
                    })?;
                    q.ids.push(n);
                }
                if q.ids.len() > MAX_IDS {
                    return Err(Open311Error::bad(format!(
                        "at most {MAX_IDS} service_request_id values at once"
                    )));
                }
            }
            "service_code" => {
                for code in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    if service_for(code).is_none() {
                        return Err(Open311Error::new(
                            404,
                            format!("service_code {code:?} not found; see services.json"),
                        ));
                    }
                    q.service_codes.push(code.to_owned());
                }
            }
            "start_date" => q.start = Some(parse_time("start_date", value, offset, false)?),
            "end_date" => q.end = Some(parse_time("end_date", value, offset, true)?),
            "status" => {
                for s in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    if s != "open" && s != "closed" {
                        return Err(Open311Error::bad("status is open or closed"));
                    }
                    q.statuses.push(s.to_owned());
                }
            }
            "jurisdiction_id" => q.jurisdiction_id = Some(value.to_owned()),
            // Unknown parameters (extensions, cache busters) are ignored.
            _ => {}
        }
    }
    if let (Some(s), Some(e)) = (q.start, q.end)
        && e < s
    {
        return Err(Open311Error::bad("end_date is before start_date"));
    }
    Ok(q)
}

impl ListQuery {
    /// Whether an order passes the filters other than `ids` (the gateway fetches those directly).
    pub fn matches(&self, order: &WorkOrder) -> bool {
        (self.service_codes.is_empty()
            || self.service_codes.iter().any(|c| c == order.kind.as_str()))
            && self.start.is_none_or(|s| order.received_at >= s)
            && self.end.is_none_or(|e| order.received_at <= e)
            && (self.statuses.is_empty()
                || self
                    .statuses
                    .iter()
                    .any(|s| s == open_or_closed(order.status)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalize::normalize;

    fn offset() -> FixedOffset {
        FixedOffset::east_opt(8 * 3600).expect("offset")
    }

    #[test]
    fn a_spec_shaped_body_becomes_a_submission() {
        let body = b"api_key=k&jurisdiction_id=wuhan&service_code=report&lat=30.58&long=114.29\
            &address_string=%E6%B1%9F%E6%B1%89%E8%B7%AF1%E5%8F%B7&description=%E8%B7%AF%E7%81%AF%E5%9D%8F%E4%BA%86\
            &first_name=%E4%B8%89&last_name=%E5%BC%A0&phone=13800138000&email=a%40b.cn\
            &media_url=https%3A%2F%2Fx.example%2Fa.jpg&attribute%5BWHISHETN%5D=123&attribute[x]=y&extra=1";
        let p = parse_post(body);
        assert_eq!(p.api_key.as_deref(), Some("k"));
        assert_eq!(p.ignored_attributes, 2);
        let s = p.into_submission().expect("valid");
        assert_eq!(s.channel, Channel::Open311);
        assert_eq!(s.kind, Some(Kind::Report));
        assert_eq!(s.text, "路灯坏了");
        assert_eq!(s.citizen.name.as_deref(), Some("张三"));
        assert_eq!(s.citizen.channel_user.as_deref(), Some("mailto:a@b.cn"));
        assert_eq!(s.location.lat, Some(30.58));
        assert_eq!(s.location.address.as_deref(), Some("江汉路1号"));
        assert_eq!(s.attachments[0].mime, "image/jpeg");
        let n = normalize(&s);
        assert_eq!(n.emergency_referral, None);
    }

    #[test]
    fn errors_follow_the_spec() {
        let e = |b: &str| {
            parse_post(b.as_bytes())
                .into_submission()
                .expect_err("refused")
        };
        assert_eq!(e("description=x&lat=1&long=1").code, 400);
        assert!(
            e("description=x&lat=1&long=1")
                .description
                .contains("service_code")
        );
        assert_eq!(e("service_code=nope&description=x&lat=1&long=1").code, 404);
        assert!(
            e("service_code=report&lat=1&long=1")
                .description
                .contains("description")
        );
        assert!(
            e("service_code=report&description=x&lat=91&long=1")
                .description
                .contains("lat")
        );
        assert!(
            e("service_code=report&description=x&lat=1&long=abc")
                .description
                .contains("long")
        );
        assert!(
            e("service_code=report&description=x&lat=NaN&long=1")
                .description
                .contains("lat")
        );
        assert!(
            e("service_code=report&description=x&lat=1")
                .description
                .contains("long")
        );
        assert!(
            e("service_code=report&description=x")
                .description
                .contains("location")
        );
        assert!(
            e("service_code=report&description=x&address_string=a&media_url=file:///etc/passwd")
                .description
                .contains("media_url")
        );
        assert!(
            e("service_code=report&description=x&address_string=a&phone=abc")
                .description
                .contains("phone")
        );
    }

    #[test]
    fn list_filters() {
        let q = parse_list_query(
            "service_request_id=2611230100004,&status=open,closed&start_date=2026-01-01&end_date=2026-01-31T23:00:00Z&service_code=report",
            offset(),
        );
        // The id above has a wrong check digit.
        assert!(q.is_err());
        let q = parse_list_query(
            "status=open&start_date=2026-01-01&service_code=report,help",
            offset(),
        )
        .expect("ok");
        assert_eq!(q.statuses, ["open"]);
        assert_eq!(q.service_codes, ["report", "help"]);
        assert_eq!(
            q.start.map(|t| t.to_rfc3339()),
            Some("2025-12-31T16:00:00+00:00".to_owned())
        );
        assert_eq!(
            parse_list_query("status=pending", offset())
                .expect_err("bad")
                .code,
            400
        );
        assert_eq!(
            parse_list_query("service_code=zzz", offset())
                .expect_err("bad")
                .code,
            404
        );
        assert_eq!(
            parse_list_query("start_date=yesterday", offset())
                .expect_err("bad")
                .code,
            400
        );
        assert!(parse_list_query("start_date=2026-02-01&end_date=2026-01-01", offset()).is_err());
    }

    #[test]
    fn the_public_view_has_no_personal_data() {
        let s = parse_post(
            "service_code=complaint&description=%E5%99%AA%E9%9F%B3%E6%89%B0%E6%B0%91%EF%BC%8C%E7%94%B5%E8%AF%9D13800138000&address_string=a&first_name=Li&phone=13900139000"
                .as_bytes(),
        )
        .into_submission()
        .expect("valid");
        let n = normalize(&s);
        let id = OrderNumber::compose(NaiveDate::from_ymd_opt(2026, 1, 2).expect("date"), 1, 42);
        let at = DateTime::parse_from_rfc3339("2026-01-02T01:00:00Z")
            .expect("t")
            .to_utc();
        let order = s.into_order(id, at, n);
        let view = service_request(&order, offset());
        let json = serde_json::to_string(&view).expect("json");
        assert!(!json.contains("13800138000"), "{json}");
        assert!(!json.contains("13900139000"), "{json}");
        assert!(!json.contains("Li"), "{json}");
        assert_eq!(view.status, "open");
        assert_eq!(view.service_code, "complaint");
        assert_eq!(view.requested_datetime, "2026-01-02T09:00:00+08:00");
    }
}
