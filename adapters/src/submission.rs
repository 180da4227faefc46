//! Submissions: a work order before it has a number, and the app/integrator wire format.
//!
//! Every channel adapter produces a [`Submission`]; the gateway gives it a number, normalizes it
//! and stores it. [`Submission::from_app_json`] parses the body of `POST /v1/submissions` and
//! reports problems by field (`citizen.phone`, `location.lat`) so integrators can fix requests
//! without guessing. Unknown fields are refused: a typo such as `txt` must not silently lose the
//! citizen's text.

use serde::Deserialize;

use crate::normalize::Normalized;
use crate::order_number::OrderNumber;
use crate::work_order::{
    Attachment, Channel, Citizen, Kind, Location, Recording, Source, Status, TranscriptSegment,
    WorkOrder,
};

pub const MAX_TEXT_CHARS: usize = 5_000;
pub const MAX_ATTACHMENTS: usize = 10;

/// A citizen's submission from any channel, before it has an order number.
#[derive(Debug, Clone, PartialEq)]
pub struct Submission {
    pub channel: Channel,
    pub citizen: Citizen,
    /// The kind, when the citizen or integrator chose one; otherwise normalization decides.
    pub kind: Option<Kind>,
    pub text: String,
    pub transcript: Vec<TranscriptSegment>,
    pub language: String,
    pub location: Location,
    pub attachments: Vec<Attachment>,
    pub recording: Option<Recording>,
    pub source: Source,
}

/// A field-precise validation error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SubmissionError {
    /// Dotted path of the offending field (`citizen.phone`), `None` when the body as a whole is bad.
    pub field: Option<String>,
    pub message: String,
}

impl SubmissionError {
    fn field(field: &str, message: impl Into<String>) -> Self {
        SubmissionError {
            field: Some(field.to_owned()),
            message: message.into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AppBody {
    text: Option<String>,
    #[serde(default)]
    citizen: Option<AppCitizen>,
    #[serde(default)]
    location: Option<AppLocation>,
    #[serde(default)]
    kind: Option<Kind>,
    #[serde(default)]
    attachments: Vec<AppAttachment>,
    #[serde(default)]
    external_id: Option<String>,
    #[serde(default)]
    language: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AppCitizen {
    name: Option<String>,
    phone: Option<String>,
    #[serde(default)]
    user_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AppLocation {
    address: Option<String>,
    district: Option<String>,
    street: Option<String>,
    lat: Option<f64>,
    lng: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AppAttachment {
    url: String,
    mime: String,
}

impl Submission {
    /// A plain text message from a messaging channel (SMS, WeChat): the text trimmed and cut to
    /// [`MAX_TEXT_CHARS`], in Chinese, with no location, attachments or recording.
    pub fn text_message(channel: Channel, citizen: Citizen, text: &str, source: Source) -> Self {
        Submission {
            channel,
            citizen,
            kind: None,
            text: text.trim().chars().take(MAX_TEXT_CHARS).collect(),
            transcript: Vec::new(),
            language: "zh".into(),
            location: Location::default(),
            attachments: Vec::new(),
            recording: None,
            source,
        }
    }

    /// Parse and validate a `POST /v1/submissions` body.
    pub fn from_app_json(body: &[u8]) -> Result<Submission, SubmissionError> {
        // serde would also read a struct from an array; a submission is an object, say so.
        let first = body.iter().find(|b| !b.is_ascii_whitespace());
        if first.is_some_and(|b| *b != b'{') {
            return Err(SubmissionError {
                field: None,
                message: "the body must be a JSON object such as {\"text\": \"...\"}".into(),
            });
        }
        let de = &mut serde_json::Deserializer::from_slice(body);
        let parsed: AppBody = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if inner.is_syntax() || inner.is_eof() {
                return SubmissionError {
                    field: None,
                    message: format!("the body is not valid JSON: {inner}"),
                };
            }
            let field = if path == "." || path == "?" {
                None
            } else {
                Some(path)
            };
            SubmissionError {
                field,
                message: inner.to_string(),
            }
        })?;
        parsed.validate()
    }

    /// Turn the submission into an order once the gateway has numbered and normalized it.
    pub fn into_order(
        self,
        id: OrderNumber,
        received_at: chrono::DateTime<chrono::Utc>,
        normalized: Normalized,
    ) -> WorkOrder {
        let mut order = WorkOrder {
            id,
            channel: self.channel,
            received_at,
            citizen: self.citizen,
            kind: self.kind.unwrap_or(normalized.kind),
            category: normalized.category,
            text: self.text,
            transcript: self.transcript,
            language: self.language,
            location: Location {
                district: self.location.district.or(normalized.district),
                street: self.location.street.or(normalized.street),
                ..self.location
            },
            urgency: normalized.urgency,
            emergency_referral: normalized.emergency_referral,
            attachments: self.attachments,
            recording: self.recording,
            related: Vec::new(),
            source: self.source,
            status: Status::Accepted,
            history: Vec::new(),
        };
        order.push_status(Status::Accepted, received_at, None, "gateway");
        order
    }
}

fn bounded(
    field: &str,
    value: Option<String>,
    max: usize,
) -> Result<Option<String>, SubmissionError> {
    match value.map(|v| v.trim().to_owned()) {
        None => Ok(None),
        Some(v) if v.is_empty() => Ok(None),
        Some(v) if v.chars().count() > max => Err(SubmissionError::field(
            field,
            format!("at most {max} characters"),
        )),
        Some(v) => Ok(Some(v)),
    }
}

/// Accept the ways people write phone numbers (`+86 138-0013-8000`, `027 8888 6666`) and keep
/// the digits (and a leading `+`).
pub fn normalize_phone(raw: &str) -> Option<String> {
    let trimmed = raw.trim();
    let (plus, rest) = match trimmed.strip_prefix('+') {
        Some(r) => ("+", r),
        None => ("", trimmed),
    };
    let mut digits = String::with_capacity(rest.len());
    for c in rest.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' | '(' | ')' => {}
            _ => return None,
        }
    }
    (3..=20)
        .contains(&digits.len())
        .then(|| format!("{plus}{digits}"))
}

impl AppBody {
    fn validate(self) -> Result<Submission, SubmissionError> {
        let text = match self.text.map(|t| t.trim().to_owned()) {
            None => {
                return Err(SubmissionError::field(
                    "text",
                    "required: what the citizen said",
                ));
            }
            Some(t) if t.is_empty() => {
                return Err(SubmissionError::field("text", "must not be empty"));
            }
            Some(t) if t.chars().count() > MAX_TEXT_CHARS => {
                return Err(SubmissionError::field(
                    "text",
                    format!("at most {MAX_TEXT_CHARS} characters"),
                ));
            }
            Some(t) => t,
        };

        let mut citizen = Citizen::default();
        if let Some(c) = self.citizen {
            citizen.name = bounded("citizen.name", c.name, 64)?;
            citizen.channel_user = bounded("citizen.user_id", c.user_id, 128)?;
            if let Some(phone) = c.phone.filter(|p| !p.trim().is_empty()) {
                citizen.phone = Some(normalize_phone(&phone).ok_or_else(|| {
                    SubmissionError::field(
                        "citizen.phone",
                        "a phone number has 3 to 20 digits, optionally a leading + and spaces or dashes",
                    )
                })?);
            }
        }

        let mut location = Location::default();
        if let Some(l) = self.location {
            location.address = bounded("location.address", l.address, 256)?;
            location.district = bounded("location.district", l.district, 64)?;
            location.street = bounded("location.street", l.street, 64)?;
            match (l.lat, l.lng) {
                (None, None) => {}
                (Some(lat), Some(lng)) => {
                    if !(-90.0..=90.0).contains(&lat) {
                        return Err(SubmissionError::field("location.lat", "between -90 and 90"));
                    }
                    if !(-180.0..=180.0).contains(&lng) {
                        return Err(SubmissionError::field(
                            "location.lng",
                            "between -180 and 180",
                        ));
                    }
                    location.lat = Some(lat);
                    location.lng = Some(lng);
                }
                (Some(_), None) => {
                    return Err(SubmissionError::field(
                        "location.lng",
                        "required with location.lat",
                    ));
                }
                (None, Some(_)) => {
                    return Err(SubmissionError::field(
                        "location.lat",
                        "required with location.lng",
                    ));
                }
            }
        }

        if self.attachments.len() > MAX_ATTACHMENTS {
            return Err(SubmissionError::field(
                "attachments",
                format!("at most {MAX_ATTACHMENTS} attachments"),
            ));
        }
        let mut attachments = Vec::with_capacity(self.attachments.len());
        for (i, a) in self.attachments.into_iter().enumerate() {
            let url = a.url.trim();
            if !(url.starts_with("https://") || url.starts_with("http://")) || url.len() > 2048 {
                return Err(SubmissionError::field(
                    &format!("attachments[{i}].url"),
                    "an http(s) URL of at most 2048 characters",
                ));
            }
            let mime = a.mime.trim();
            let valid_mime = mime.len() <= 127
                && mime.split_once('/').is_some_and(|(t, s)| {
                    !t.is_empty()
                        && !s.is_empty()
                        && mime
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"/.+-_".contains(&b))
                });
            if !valid_mime {
                return Err(SubmissionError::field(
                    &format!("attachments[{i}].mime"),
                    "a media type such as image/jpeg",
                ));
            }
            attachments.push(Attachment {
                url: url.to_owned(),
                mime: mime.to_ascii_lowercase(),
                sha256: None,
            });
        }

        let language = match bounded("language", self.language, 16)? {
            None => "zh".to_owned(),
            Some(l) if l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') => l,
            Some(_) => {
                return Err(SubmissionError::field(
                    "language",
                    "a language tag such as zh or en",
                ));
            }
        };

        Ok(Submission {
            channel: Channel::App,
            citizen,
            kind: self.kind,
            text,
            transcript: Vec::new(),
            language,
            location,
            attachments,
            recording: None,
            source: Source {
                external_id: bounded("external_id", self.external_id, 128)?,
                ..Source::default()
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> SubmissionError {
        Submission::from_app_json(body.as_bytes()).expect_err("must be refused")
    }

    #[test]
    fn a_full_body_is_accepted() {
        let s = Submission::from_app_json(
            r#"{"text":" 小区噪音扰民 ","citizen":{"name":"张三","phone":"+86 138-0013-8000"},
                "location":{"address":"江汉路1号","district":"江汉区","lat":30.58,"lng":114.29},
                "kind":"complaint","attachments":[{"url":"https://x.example/a.jpg","mime":"Image/JPEG"}],
                "external_id":"app-1"}"#
                .as_bytes(),
        )
        .expect("valid");
        assert_eq!(s.text, "小区噪音扰民");
        assert_eq!(s.citizen.phone.as_deref(), Some("+8613800138000"));
        assert_eq!(s.kind, Some(Kind::Complaint));
        assert_eq!(s.attachments[0].mime, "image/jpeg");
        assert_eq!(s.source.external_id.as_deref(), Some("app-1"));
        assert_eq!(s.language, "zh");
    }

    #[test]
    fn missing_or_empty_text_names_the_field() {
        assert_eq!(err("{}").field.as_deref(), Some("text"));
        assert_eq!(err(r#"{"text":"   "}"#).field.as_deref(), Some("text"));
        let long = format!(r#"{{"text":"{}"}}"#, "字".repeat(MAX_TEXT_CHARS + 1));
        assert_eq!(err(&long).field.as_deref(), Some("text"));
    }

    #[test]
    fn malformed_json_is_a_body_error() {
        for bad in ["", "{", "[1,2]", "null", "{\"text\": \"a\",}", "\u{0}"] {
            let e = err(bad);
            assert!(e.field.is_none(), "{bad}: {e:?}");
            assert!(!e.message.is_empty());
        }
    }

    #[test]
    fn wrong_types_and_unknown_fields_name_the_field() {
        assert_eq!(
            err(r#"{"text":"a","citizen":{"phone":138}}"#)
                .field
                .as_deref(),
            Some("citizen.phone")
        );
        assert_eq!(
            err(r#"{"text":"a","kind":"rant"}"#).field.as_deref(),
            Some("kind")
        );
        let e = err(r#"{"txt":"a"}"#);
        assert!(e.message.contains("unknown field `txt`"), "{e:?}");
        assert_eq!(
            err(r#"{"text":"a","location":{"lat":"x"}}"#)
                .field
                .as_deref(),
            Some("location.lat")
        );
    }

    #[test]
    fn semantic_checks_name_the_field() {
        assert_eq!(
            err(r#"{"text":"a","citizen":{"phone":"call me"}}"#)
                .field
                .as_deref(),
            Some("citizen.phone")
        );
        assert_eq!(
            err(r#"{"text":"a","location":{"lat":91,"lng":0}}"#)
                .field
                .as_deref(),
            Some("location.lat")
        );
        assert_eq!(
            err(r#"{"text":"a","location":{"lat":30}}"#)
                .field
                .as_deref(),
            Some("location.lng")
        );
        assert_eq!(
            err(r#"{"text":"a","attachments":[{"url":"file:///etc/passwd","mime":"image/png"}]}"#)
                .field
                .as_deref(),
            Some("attachments[0].url")
        );
        assert_eq!(
            err(r#"{"text":"a","attachments":[{"url":"https://a/b","mime":"png"}]}"#)
                .field
                .as_deref(),
            Some("attachments[0].mime")
        );
    }
}
