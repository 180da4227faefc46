//! Delivery: the outbox worker that forwards every committed order to the dispatch backend.
//!
//! Orders are delivered at least once: a row leaves the outbox only after the backend answered
//! 2xx, and a node that crashes mid-delivery leaves a lease that expires, so the order is sent
//! again with the same `Idempotency-Key` (the order number) for the backend to deduplicate.
//! Permanent refusals (4xx other than 408/429) become dead letters that operators can replay.

pub mod backoff;
mod config;
pub mod signature;

pub use config::DispatchConfig;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use rand::Rng;
use tokio::sync::{Semaphore, watch};
use tracing::Instrument;

use crate::store::{Claimed, DeliveryOutcome, Store};
use backoff::{Backoff, Verdict, classify_status};

/// Settings the worker needs: `[dispatch]` with its URL and secret resolved
/// ([`DispatchConfig::settings`]).
#[derive(Debug, Clone)]
pub struct DispatchSettings {
    pub url: String,
    pub secret: Arc<Vec<u8>>,
    pub concurrency: usize,
    pub timeout: Duration,
    pub backoff: Backoff,
    pub poll_interval: Duration,
    pub lease: Duration,
}

#[derive(Debug, Clone)]
pub struct Dispatcher {
    store: Store,
    client: reqwest::Client,
    settings: Arc<DispatchSettings>,
}

impl Dispatcher {
    pub fn new(store: Store, settings: DispatchSettings) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(settings.concurrency)
            .user_agent(concat!("12345-gateway/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Dispatcher {
            store,
            client,
            settings: Arc::new(settings),
        })
    }

    /// Deliver until `shutdown` turns true, then wait (briefly) for deliveries in flight.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let permits = Arc::new(Semaphore::new(self.settings.concurrency));
        tracing::info!(url = %self.settings.url, concurrency = self.settings.concurrency, "dispatch started");
        while !*shutdown.borrow() {
            let free = permits.available_permits() as u32;
            let claimed = if free == 0 {
                Vec::new()
            } else {
                let now = Utc::now();
                let lease = chrono::Duration::from_std(self.settings.lease).unwrap_or_default();
                match self.store.claim_due(now, now + lease, free).await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the outbox");
                        Vec::new()
                    }
                }
            };
            if claimed.is_empty() {
                let wait_for_permit = async {
                    if free == 0 {
                        let _ = permits.acquire().await;
                    } else {
                        std::future::pending::<()>().await;
                    }
                };
                tokio::select! {
                    _ = self.store.outbox_signal().notified() => {}
                    _ = tokio::time::sleep(self.settings.poll_interval) => {}
                    _ = wait_for_permit => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            for job in claimed {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    break;
                };
                let this = self.clone();
                let span = tracing::info_span!("delivery", order_id = %job.order_id, attempt = job.attempts + 1);
                tokio::spawn(
                    async move {
                        this.deliver(job).await;
                        drop(permit);
                    }
                    .instrument(span),
                );
            }
        }
        let all = self.settings.concurrency as u32;
        let _ = tokio::time::timeout(Duration::from_secs(5), permits.acquire_many(all)).await;
        tracing::info!("dispatch stopped");
    }

    async fn attempt(&self, job: &Claimed) -> Verdict {
        let timestamp = Utc::now().timestamp().to_string();
        let signature = signature::sign(&self.settings.secret, &timestamp, job.body.as_bytes());
        let sent = self
            .client
            .post(&self.settings.url)
            .header("content-type", "application/json")
            .header("idempotency-key", job.order_id.as_str())
            .header(signature::TIMESTAMP_HEADER, timestamp)
            .header(signature::SIGNATURE_HEADER, signature)
            .body(job.body.clone())
            .send()
            .await;
        match sent {
            Ok(response) => classify_status(response.status().as_u16()),
            Err(e) if e.is_timeout() => Verdict::Retry("dispatch timed out".into()),
            Err(e) => Verdict::Retry(format!("cannot reach dispatch: {e}")),
        }
    }

    async fn deliver(&self, job: Claimed) {
        let started = std::time::Instant::now();
        let verdict = self.attempt(&job).await;
        metrics::histogram!("gateway_delivery_seconds").record(started.elapsed().as_secs_f64());
        let now = Utc::now();
        let outcome = match verdict {
            Verdict::Delivered => {
                metrics::counter!("gateway_deliveries_total", "outcome" => "delivered")
                    .increment(1);
                tracing::info!("delivered");
                DeliveryOutcome::Delivered
            }
            Verdict::Retry(error) => {
                metrics::counter!("gateway_deliveries_total", "outcome" => "retried").increment(1);
                let delay = self
                    .settings
                    .backoff
                    .delay(job.attempts, rand::rng().random());
                tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "delivery failed, will retry");
                DeliveryOutcome::Retry {
                    at: now + chrono::Duration::from_std(delay).unwrap_or_default(),
                    error,
                }
            }
            Verdict::Dead(error) => {
                metrics::counter!("gateway_deliveries_total", "outcome" => "dead").increment(1);
                tracing::error!(%error, "delivery refused, moved to dead letters");
                DeliveryOutcome::Dead { error }
            }
        };
        if let Err(e) = self.store.complete(&job.order_id, outcome, now).await {
            // The lease expires and the order is delivered again: at least once, never lost.
            tracing::error!(error = %e, "cannot record the delivery outcome");
        }
    }
}
