//! The public web form (`GET /` in the gateway): its fields, their validation and photo sniffing.
//!
//! The form is the channel of citizens who have no app and no WeChat, often on an old phone, so
//! everything a citizen can get wrong is reported per field in Chinese, next to the field, and
//! the input is kept for the next try. The gateway owns the HTTP side (tokens, rate limits,
//! storing photos); this module is pure so that it is tested and fuzzed alone.
//!
//! Photos are recognised by their first bytes, never by the file name or the browser's
//! `Content-Type`: a `.jpg` that is really a script or an HTML page must not be stored and later
//! served as if it were an image.

use crate::submission::{MAX_TEXT_CHARS, Submission, normalize_phone};
use crate::work_order::{Channel, Citizen, Location, Source};

/// Wuhan's thirteen districts, in the order the city lists them.
pub const DISTRICTS: [&str; 13] = [
    "江岸区",
    "江汉区",
    "硚口区",
    "汉阳区",
    "武昌区",
    "青山区",
    "洪山区",
    "东西湖区",
    "汉南区",
    "蔡甸区",
    "江夏区",
    "黄陂区",
    "新洲区",
];

pub const MAX_ADDRESS_CHARS: usize = 200;
pub const MAX_NAME_CHARS: usize = 32;

/// The form fields as typed, before validation; also what is put back into the form when it is
/// shown again with errors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebForm {
    /// 诉求内容
    pub text: String,
    /// 所在区: one of [`DISTRICTS`].
    pub district: String,
    /// 详细地址
    pub address: String,
    /// 联系人
    pub name: String,
    /// 联系电话
    pub phone: String,
}

/// One problem with one field, worded for the citizen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The form field's `name` (and the id of its input): `text`, `district`, `address`, `name`,
    /// `phone` or `photo`.
    pub field: &'static str,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        FieldError {
            field,
            message: message.into(),
        }
    }
}

/// Photo formats the form takes, recognised by their signature bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageType {
    Jpeg,
    Png,
    Webp,
}

impl ImageType {
    pub const ALL: [ImageType; 3] = [ImageType::Jpeg, ImageType::Png, ImageType::Webp];

    pub fn mime(self) -> &'static str {
        match self {
            ImageType::Jpeg => "image/jpeg",
            ImageType::Png => "image/png",
            ImageType::Webp => "image/webp",
        }
    }

    pub fn from_mime(mime: &str) -> Option<ImageType> {
        ImageType::ALL
            .into_iter()
            .find(|t| t.mime().eq_ignore_ascii_case(mime.trim()))
    }
}

/// What the first bytes of a file say it is (JPEG SOI marker, the PNG signature, or a RIFF
/// container of type WEBP); `None` for anything else, including text renamed to `.jpg`.
pub fn sniff_image(bytes: &[u8]) -> Option<ImageType> {
    if bytes.len() >= 3 && bytes[..3] == [0xFF, 0xD8, 0xFF] {
        Some(ImageType::Jpeg)
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(ImageType::Png)
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some(ImageType::Webp)
    } else {
        None
    }
}

/// Keep a phone number only if it is one a call-back can reach: a mainland mobile number (11
/// digits starting with 1, optionally after +86/86) or a landline with its area code (starting
/// with 0, 10 to 12 digits) or a local 7-8 digit landline. Returns the digits.
pub fn valid_phone(raw: &str) -> Option<String> {
    let normalized = normalize_phone(raw)?;
    let digits = normalized.trim_start_matches('+');
    let national = digits
        .strip_prefix("86")
        .filter(|rest| rest.len() == 11 && rest.starts_with('1'))
        .unwrap_or(digits);
    let bytes = national.as_bytes();
    let mobile = bytes.len() == 11 && bytes[0] == b'1' && (b'3'..=b'9').contains(&bytes[1]);
    let landline = bytes.first() == Some(&b'0') && (10..=12).contains(&bytes.len());
    let local = (7..=8).contains(&bytes.len()) && bytes.first() != Some(&b'0');
    (mobile || landline || local).then(|| national.to_owned())
}

/// Trim, collapse the form's `\r\n` to `\n`, drop control characters other than newlines and tabs.
fn clean(raw: &str, keep_newlines: bool) -> String {
    raw.trim()
        .replace("\r\n", "\n")
        .chars()
        .filter(|c| !c.is_control() || (keep_newlines && (*c == '\n' || *c == '\t')))
        .collect()
}

impl WebForm {
    /// Record one form field by its name; returns `false` for a name the form does not have.
    /// Over-long values are cut at a generous bound here so that a hostile request cannot make
    /// the gateway keep megabytes in memory; validation reports the real limits.
    pub fn set(&mut self, name: &str, value: &str) -> bool {
        let slot = match name {
            "text" => &mut self.text,
            "district" => &mut self.district,
            "address" => &mut self.address,
            "name" => &mut self.name,
            "phone" => &mut self.phone,
            _ => return false,
        };
        *slot = value.chars().take(MAX_TEXT_CHARS + 1).collect();
        true
    }

    /// Check every field and report all problems at once (a citizen fixes them in one go).
    /// `max_text_chars` is the configured limit of 诉求内容, capped at the schema's own limit.
    pub fn validate(&self, max_text_chars: usize) -> Result<Submission, Vec<FieldError>> {
        let max_text = max_text_chars.clamp(1, MAX_TEXT_CHARS);
        let mut errors = Vec::new();

        let text = clean(&self.text, true);
        if text.is_empty() {
            errors.push(FieldError::new("text", "请填写诉求内容"));
        } else if text.chars().count() > max_text {
            errors.push(FieldError::new(
                "text",
                format!("诉求内容最多{max_text}字，现在是{}字", text.chars().count()),
            ));
        }

        let district = self.district.trim();
        if district.is_empty() {
            errors.push(FieldError::new("district", "请选择所在区"));
        } else if !DISTRICTS.contains(&district) {
            errors.push(FieldError::new("district", "请从列表中选择武汉市的一个区"));
        }

        let address = clean(&self.address, false);
        if address.chars().count() > MAX_ADDRESS_CHARS {
            errors.push(FieldError::new(
                "address",
                format!("详细地址最多{MAX_ADDRESS_CHARS}字"),
            ));
        }

        let name = clean(&self.name, false);
        if name.chars().count() > MAX_NAME_CHARS {
            errors.push(FieldError::new(
                "name",
                format!("联系人最多{MAX_NAME_CHARS}字"),
            ));
        }

        let phone = clean(&self.phone, false);
        let phone = if phone.is_empty() {
            None
        } else {
            match valid_phone(&phone) {
                Some(p) => Some(p),
                None => {
                    errors.push(FieldError::new(
                        "phone",
                        "请填写11位手机号码，或带区号的固定电话（如 027-88886666）",
                    ));
                    None
                }
            }
        };

        if !errors.is_empty() {
            return Err(errors);
        }
        let non_empty = |s: String| (!s.is_empty()).then_some(s);
        Ok(Submission {
            channel: Channel::Web,
            citizen: Citizen {
                name: non_empty(name),
                phone,
                channel_user: None,
            },
            kind: None,
            text,
            transcript: Vec::new(),
            language: "zh".into(),
            location: Location {
                district: Some(district.to_owned()),
                street: None,
                address: non_empty(address),
                lat: None,
                lng: None,
            },
            attachments: Vec::new(),
            recording: None,
            source: Source::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(text: &str, district: &str, phone: &str) -> WebForm {
        let mut f = WebForm::default();
        assert!(f.set("text", text));
        assert!(f.set("district", district));
        assert!(f.set("phone", phone));
        f
    }

    fn fields(r: Result<Submission, Vec<FieldError>>) -> Vec<&'static str> {
        r.expect_err("must be refused")
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    #[test]
    fn a_complete_form_becomes_a_web_submission() {
        let mut f = form("  小区路灯坏了\r\n一周了 ", "江汉区", "138-0013-8000");
        f.set("name", "张三");
        f.set("address", "江汉路1号");
        let s = f.validate(1000).expect("valid");
        assert_eq!(s.channel, Channel::Web);
        assert_eq!(s.text, "小区路灯坏了\n一周了");
        assert_eq!(s.location.district.as_deref(), Some("江汉区"));
        assert_eq!(s.location.address.as_deref(), Some("江汉路1号"));
        assert_eq!(s.citizen.phone.as_deref(), Some("13800138000"));
        assert_eq!(s.citizen.name.as_deref(), Some("张三"));
        assert!(!f.set("website", "x"));
    }

    #[test]
    fn every_problem_is_reported_by_field() {
        assert_eq!(fields(form("", "", "").validate(100)), ["text", "district"]);
        assert_eq!(
            fields(form("长".repeat(101).as_str(), "北京区", "12").validate(100)),
            ["text", "district", "phone"]
        );
        let mut f = form("a", "武昌区", "");
        f.set("address", &"路".repeat(MAX_ADDRESS_CHARS + 1));
        f.set("name", &"名".repeat(MAX_NAME_CHARS + 1));
        assert_eq!(fields(f.validate(100)), ["address", "name"]);
    }

    #[test]
    fn phones_a_call_back_can_reach() {
        for ok in [
            "13800138000",
            "+86 138 0013 8000",
            "8613800138000",
            "027-88886666",
            "88886666",
        ] {
            assert!(valid_phone(ok).is_some(), "{ok}");
        }
        for bad in ["12", "12345678901", "call me", "0271", "138001380001234"] {
            assert!(valid_phone(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn images_are_known_by_their_bytes() {
        assert_eq!(sniff_image(b"\xFF\xD8\xFF\xE0rest"), Some(ImageType::Jpeg));
        assert_eq!(
            sniff_image(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"),
            Some(ImageType::Png)
        );
        assert_eq!(
            sniff_image(b"RIFF\x10\0\0\0WEBPVP8 "),
            Some(ImageType::Webp)
        );
        assert_eq!(sniff_image(b"<html>not a jpeg</html>"), None);
        assert_eq!(sniff_image(b""), None);
        assert_eq!(sniff_image(b"RIFF\x10\0\0\0WAVE"), None);
        assert_eq!(ImageType::from_mime("IMAGE/PNG"), Some(ImageType::Png));
    }
}
