//! `[http]` and `[api]`: where the API listens, and who may call it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use serde::{Deserialize, Serialize};

/// `[http]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes; larger ones get 413.
    pub max_body_bytes: usize,
    /// A request that takes longer is answered 503 (its submission may still be committed; the
    /// client retries with its Idempotency-Key).
    #[serde(with = "crate::config::millis")]
    pub request_timeout_ms: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 64 * 1024,
            request_timeout_ms: Duration::from_millis(10_000),
        }
    }
}

/// One `[[api.keys]]` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// Shown in logs and orders (`source.api_client`); never the key itself.
    pub name: String,
    pub key: Option<String>,
    pub key_file: Option<PathBuf>,
    /// Admin keys may also list and replay dead letters.
    #[serde(default)]
    pub admin: bool,
}

/// `[api]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// With no keys configured, an admin key is generated once into `<data_dir>/api-key`.
    pub keys: Vec<ApiKeyConfig>,
}

impl ApiConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        for key in &self.keys {
            if key.key.is_none() && key.key_file.is_none() {
                bail!("api key {:?} needs key or key_file", key.name);
            }
        }
        Ok(())
    }
}
