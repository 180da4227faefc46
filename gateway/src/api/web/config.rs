//! `[web]`: the public web form and the Open311 endpoint.

use std::path::PathBuf;
use std::time::Duration;

use adapters::webform::ImageType;
use anyhow::bail;
use serde::{Deserialize, Serialize};

/// `[web]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Where uploaded photos are kept, named by their SHA-256; default `<data_dir>/uploads`.
    pub upload_dir: Option<PathBuf>,
    /// Largest photo accepted, in bytes.
    pub max_upload_bytes: usize,
    /// Photo types accepted, checked against the file's first bytes (JPEG, PNG, WebP).
    #[serde(with = "image_types")]
    pub allowed_types: Vec<ImageType>,
    /// Longest 诉求内容 (request text) in characters.
    pub max_text_chars: usize,
    /// A form sent back sooner than this after it was served is taken for a bot.
    #[serde(with = "crate::config::seconds")]
    pub min_fill_seconds: Duration,
    /// A form older than this is refused as expired (and shown again, input kept).
    #[serde(with = "crate::config::seconds")]
    pub form_max_age_seconds: Duration,
    /// Web form submissions per client IP: sustained rate and burst (token bucket).
    pub rate_per_minute: u32,
    pub rate_burst: u32,
    /// Take the client IP from the first `X-Forwarded-For` entry (only behind a trusted proxy).
    pub trust_forwarded_for: bool,
    /// HMAC key of the form tokens; generated once into `<data_dir>/web-secret` when unset.
    pub secret: Option<String>,
    pub secret_file: Option<PathBuf>,
    /// Prefix of attachment URLs in orders (`<public_url>/uploads/<sha256>`); relative when unset.
    pub public_url: Option<String>,
    /// The `jurisdiction_id` Open311 clients may send; another one is refused.
    pub open311_jurisdiction_id: String,
    /// Open311 `POST requests.json` needs an `api_key` from `[[api.keys]]`.
    pub open311_require_api_key: bool,
    /// Open311 `GET requests.json` lists orders of every channel (else only Open311 ones).
    pub open311_list_all_channels: bool,
    /// Open311 POSTs per API key (or client IP without one): sustained rate and burst.
    pub open311_rate_per_minute: u32,
    pub open311_rate_burst: u32,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            upload_dir: None,
            max_upload_bytes: 5 * 1024 * 1024,
            allowed_types: ImageType::ALL.to_vec(),
            max_text_chars: 2000,
            min_fill_seconds: Duration::from_secs(3),
            form_max_age_seconds: Duration::from_secs(7200),
            rate_per_minute: 6,
            rate_burst: 10,
            trust_forwarded_for: false,
            secret: None,
            secret_file: None,
            public_url: None,
            open311_jurisdiction_id: "wuhan.gov.cn".into(),
            open311_require_api_key: true,
            open311_list_all_channels: false,
            open311_rate_per_minute: 120,
            open311_rate_burst: 60,
        }
    }
}

impl WebConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.max_upload_bytes == 0 || self.max_text_chars == 0 {
            bail!("web.max_upload_bytes and web.max_text_chars must be at least 1");
        }
        if self.rate_per_minute == 0
            || self.rate_burst == 0
            || self.open311_rate_per_minute == 0
            || self.open311_rate_burst == 0
        {
            bail!("web rate limits (rate_per_minute, rate_burst, open311_*) must be at least 1");
        }
        if self.form_max_age_seconds <= self.min_fill_seconds {
            bail!("web.form_max_age_seconds must be longer than web.min_fill_seconds");
        }
        if let Some(url) = &self.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            bail!("web.public_url must be an http:// or https:// URL, got {url:?}");
        }
        Ok(())
    }
}

/// `web.allowed_types`: MIME types.
mod image_types {
    use adapters::webform::ImageType;
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(types: &[ImageType], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(types.iter().map(|t| t.mime()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ImageType>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|t| {
                ImageType::from_mime(t).ok_or_else(|| {
                    D::Error::custom(format!(
                        "{t:?} is not one of image/jpeg, image/png, image/webp"
                    ))
                })
            })
            .collect()
    }
}
