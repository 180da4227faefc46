//! `[dispatch]`: where orders are delivered, and how hard to try.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use serde::{Deserialize, Serialize};

use super::DispatchSettings;
use super::backoff::Backoff;

/// `[dispatch]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DispatchConfig {
    /// Where orders are delivered. Without it orders wait in the outbox, visible through the API.
    pub url: Option<String>,
    /// HMAC key for `X-Gateway-Signature` on deliveries and on status events from the backend.
    /// With none configured, one is generated once into `<data_dir>/dispatch-secret`.
    pub secret: Option<String>,
    pub secret_file: Option<PathBuf>,
    /// Deliveries in flight at once.
    pub concurrency: usize,
    #[serde(with = "crate::config::millis")]
    pub timeout_ms: Duration,
    #[serde(with = "crate::config::millis")]
    pub backoff_initial_ms: Duration,
    #[serde(with = "crate::config::millis")]
    pub backoff_max_ms: Duration,
    /// How often the outbox is scanned for retries that have come due.
    #[serde(with = "crate::config::millis")]
    pub poll_interval_ms: Duration,
    /// How long a node owns a delivery it took, before another node may take it over.
    #[serde(with = "crate::config::millis")]
    pub lease_ms: Duration,
    /// Status events whose timestamp is further than this from now are refused (replay defence).
    #[serde(with = "crate::config::seconds")]
    pub event_max_skew_s: Duration,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            url: None,
            secret: None,
            secret_file: None,
            concurrency: 32,
            timeout_ms: Duration::from_millis(10_000),
            backoff_initial_ms: Duration::from_millis(500),
            backoff_max_ms: Duration::from_millis(300_000),
            poll_interval_ms: Duration::from_millis(1_000),
            lease_ms: Duration::from_millis(60_000),
            event_max_skew_s: Duration::from_secs(300),
        }
    }
}

impl DispatchConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.concurrency == 0 {
            bail!("dispatch.concurrency must be at least 1");
        }
        if let Some(url) = &self.url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            bail!("dispatch.url must be an http:// or https:// URL, got {url:?}");
        }
        Ok(())
    }

    /// The worker's settings: these, with the resolved secret, when `url` is set.
    pub fn settings(&self, secret: Arc<Vec<u8>>) -> Option<DispatchSettings> {
        Some(DispatchSettings {
            url: self.url.clone()?,
            secret,
            concurrency: self.concurrency,
            timeout: self.timeout_ms,
            backoff: Backoff {
                initial: self.backoff_initial_ms,
                max: self.backoff_max_ms,
            },
            poll_interval: self.poll_interval_ms,
            lease: self.lease_ms,
        })
    }
}
