//! `[store]` and `[related]`: which database holds the orders, and how new orders are linked to
//! related ones.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    Sqlite,
    Postgres,
}

/// `[store]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub kind: StoreKind,
    /// SQLite database file; default `<data_dir>/gateway.db`.
    pub sqlite_path: Option<PathBuf>,
    /// `postgres://user:pass@host:port/db`, for several nodes sharing one database.
    pub postgres_url: Option<String>,
    pub postgres_url_file: Option<PathBuf>,
    /// Most writes committed together in one transaction (group commit).
    pub max_batch: usize,
    /// Connections used for reads.
    pub read_pool: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            kind: StoreKind::Sqlite,
            sqlite_path: None,
            postgres_url: None,
            postgres_url_file: None,
            max_batch: 1024,
            read_pool: 4,
        }
    }
}

impl StoreConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.kind == StoreKind::Postgres
            && self.postgres_url.is_none()
            && self.postgres_url_file.is_none()
        {
            bail!("store.kind = \"postgres\" needs store.postgres_url or store.postgres_url_file");
        }
        if self.max_batch == 0 || self.read_pool == 0 {
            bail!("store.max_batch and store.read_pool must be at least 1");
        }
        Ok(())
    }
}

/// `[related]`: duplicates and same-event reports, linked in every new order's `related`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelatedOrdersConfig {
    /// Find related orders for every new order (off: `related` stays empty).
    pub enabled: bool,
    /// The same caller about the same matter within this long is a duplicate.
    #[serde(with = "crate::config::seconds")]
    pub duplicate_window_s: Duration,
    /// How alike (character-bigram Jaccard, 0 to 1) two texts of one caller must be.
    pub duplicate_similarity: f64,
    /// Reports of the same category at the same place within this long form one event.
    #[serde(with = "crate::config::seconds")]
    pub event_window_s: Duration,
    /// How alike a report must be to the event's latest similar one to join it.
    pub event_similarity: f64,
    /// Distinct citizens (the new one included) before reports are linked as one event.
    pub event_min_reports: usize,
    /// Most recent orders held in memory (the oldest go first).
    pub capacity: usize,
    /// Most links of each relation in one order.
    pub max_links: usize,
    /// Most earlier orders compared with a new one per caller and per place (newest first).
    pub max_scan: usize,
    /// Refill the index from the store's recent orders when the gateway starts (else it starts
    /// empty and links only orders taken since).
    pub rebuild_on_start: bool,
}

impl Default for RelatedOrdersConfig {
    /// The index's own defaults ([`RelatedConfig::default`](adapters::normalize::related::RelatedConfig)).
    fn default() -> Self {
        let d = adapters::normalize::related::RelatedConfig::default();
        let secs = |w: chrono::Duration| Duration::from_secs(w.num_seconds().unsigned_abs());
        RelatedOrdersConfig {
            enabled: true,
            duplicate_window_s: secs(d.duplicate_window),
            duplicate_similarity: d.duplicate_similarity,
            event_window_s: secs(d.event_window),
            event_similarity: d.event_similarity,
            event_min_reports: d.event_min_reports,
            capacity: d.capacity,
            max_links: d.max_links,
            max_scan: d.max_scan,
            rebuild_on_start: true,
        }
    }
}

/// Longest related-order window accepted (a year): longer ones are a typo.
const MAX_RELATED_WINDOW: Duration = Duration::from_secs(366 * 24 * 3600);

impl RelatedOrdersConfig {
    pub fn index_config(&self) -> adapters::normalize::related::RelatedConfig {
        let secs = |d: Duration| {
            chrono::Duration::seconds(d.min(MAX_RELATED_WINDOW).as_secs().cast_signed())
        };
        adapters::normalize::related::RelatedConfig {
            duplicate_window: secs(self.duplicate_window_s),
            duplicate_similarity: self.duplicate_similarity,
            event_window: secs(self.event_window_s),
            event_similarity: self.event_similarity,
            event_min_reports: self.event_min_reports,
            capacity: self.capacity,
            max_links: self.max_links,
            max_scan: self.max_scan,
        }
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        let max = MAX_RELATED_WINDOW.as_secs();
        for (name, v) in [
            ("duplicate_window_s", self.duplicate_window_s.as_secs()),
            ("event_window_s", self.event_window_s.as_secs()),
        ] {
            if v == 0 || v > max {
                bail!("related.{name} must be 1 to {max} seconds, got {v}");
            }
        }
        for (name, v) in [
            ("duplicate_similarity", self.duplicate_similarity),
            ("event_similarity", self.event_similarity),
        ] {
            if !(v > 0.0 && v <= 1.0) {
                bail!("related.{name} must be above 0 and at most 1, got {v}");
            }
        }
        if self.event_min_reports < 2 {
            bail!(
                "related.event_min_reports must be at least 2 (one citizen is not an event), got {}",
                self.event_min_reports
            );
        }
        if self.capacity == 0 || self.max_links == 0 || self.max_scan == 0 {
            bail!("related.capacity, related.max_links and related.max_scan must be at least 1");
        }
        Ok(())
    }
}
