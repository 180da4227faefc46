//! Message channels: WeChat (`GET/POST /channels/wechat/{account}`) and SMS upstream callbacks
//! (`POST /channels/sms/{provider}`).
//!
//! Each channel verifies the push (signature, token, address), turns it into an
//! `adapters::Submission` and hands it to [`intake::accept`](crate::intake::accept) with an
//! idempotency claim keyed by the channel's own message id, so a provider's redelivery returns
//! the order it already created. The answer (WeChat's passive reply with the order number, a
//! provider's `ok`) is sent only after the store has committed. Refused input stores nothing.
//! The wire formats and texts live in `adapters::wechat` and `adapters::sms`; this module does
//! the HTTP, the store and the clock.

mod config;
mod sms;
mod wechat;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use adapters::wechat::MessageCipher;
use anyhow::Context;
use axum::Router;
use axum::routing::{get, post};
use chrono::Utc;
use ipnet::IpNet;

use super::AppState;
use crate::intake::Intake;
use crate::store::Store;
pub use config::{ChannelsConfig, SmsConfig, SmsProviderConfig, WechatAccountConfig, WechatKind};

/// The channels' routes, merged into the API router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/channels/wechat/{account}",
            get(wechat::verify).post(wechat::receive),
        )
        .route("/channels/sms/{provider}", post(sms::receive))
}

/// One configured WeChat account, secrets resolved.
#[derive(Clone)]
pub struct WechatAccount {
    pub name: String,
    pub appid: String,
    token: String,
    cipher: Option<MessageCipher>,
    pub kind: WechatKind,
}

impl std::fmt::Debug for WechatAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WechatAccount")
            .field("name", &self.name)
            .field("appid", &self.appid)
            .field("kind", &self.kind)
            .field("encrypted", &self.cipher.is_some())
            .finish_non_exhaustive()
    }
}

/// One SMS provider's callback settings, secrets resolved.
#[derive(Clone, Default)]
pub struct SmsProvider {
    pub enabled: bool,
    token: Option<String>,
    allow: Vec<IpNet>,
}

impl std::fmt::Debug for SmsProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmsProvider")
            .field("enabled", &self.enabled)
            .field("token", &self.token.is_some())
            .field("allow", &self.allow)
            .finish()
    }
}

/// What the channel handlers need from the configuration.
#[derive(Debug, Default)]
pub struct Channels {
    wechat: HashMap<String, WechatAccount>,
    aliyun: SmsProvider,
    tencent: SmsProvider,
    attach_window: chrono::Duration,
    part_wait: chrono::Duration,
    /// Largest distance of a WeChat push's `timestamp` from now, in seconds; `None`: unchecked.
    wechat_max_skew_s: Option<i64>,
}

impl Channels {
    /// Resolve secrets and keys; on a bad key the gateway refuses to start, naming the account.
    pub fn from_config(c: &ChannelsConfig) -> anyhow::Result<Channels> {
        let mut wechat = HashMap::new();
        for a in &c.wechat {
            let token = crate::config::secret(&a.token, &a.token_file)?
                .with_context(|| format!("channels.wechat {:?} has no token", a.name))?;
            let cipher = crate::config::secret(&a.encoding_aes_key, &a.encoding_aes_key_file)?
                .map(|k| MessageCipher::new(&k, a.appid.trim()))
                .transpose()
                .map_err(|e| anyhow::anyhow!("channels.wechat {:?}: {e}", a.name))?;
            wechat.insert(
                a.name.clone(),
                WechatAccount {
                    name: a.name.clone(),
                    appid: a.appid.trim().to_owned(),
                    token,
                    cipher,
                    kind: a.kind,
                },
            );
        }
        let provider = |p: &SmsProviderConfig| -> anyhow::Result<SmsProvider> {
            Ok(SmsProvider {
                enabled: p.enabled,
                token: crate::config::secret(&p.token, &p.token_file)?,
                allow: p.allow_ips.clone(),
            })
        };
        Ok(Channels {
            wechat,
            aliyun: provider(&c.sms.aliyun)?,
            tencent: provider(&c.sms.tencent)?,
            attach_window: chrono_seconds(c.attach_window_s),
            part_wait: chrono_seconds(c.sms.part_wait_s),
            wechat_max_skew_s: (!c.wechat_max_skew_s.is_zero())
                .then(|| i64::try_from(c.wechat_max_skew_s.as_secs()).unwrap_or(i64::MAX)),
        })
    }

    /// Build the channels and, when an SMS provider is enabled, start the task that turns long
    /// messages whose parts stopped arriving into orders. Call inside the runtime.
    pub fn start(c: &ChannelsConfig, store: &Store) -> anyhow::Result<Arc<Channels>> {
        let channels = Arc::new(Channels::from_config(c)?);
        for name in channels.wechat.keys() {
            tracing::info!(account = %name, "wechat channel at /channels/wechat/{name}");
        }
        if channels.aliyun.enabled || channels.tencent.enabled {
            // Long messages left incomplete wait for no request: no timeout, as before.
            let intake = Intake::new(store.clone());
            let wait = channels.part_wait;
            tokio::spawn(async move {
                let period = Duration::from_secs(5).min(
                    wait.to_std()
                        .unwrap_or(Duration::from_secs(5))
                        .max(Duration::from_millis(200)),
                );
                loop {
                    tokio::time::sleep(period).await;
                    sms::flush_stale(&intake, Utc::now() - wait).await;
                }
            });
        }
        Ok(channels)
    }

    fn sms_provider(&self, name: &str) -> Option<&SmsProvider> {
        match name {
            "aliyun" => Some(&self.aliyun),
            "tencent" => Some(&self.tencent),
            _ => None,
        }
    }
}

/// A configured window in whole seconds, as the channels' clock (`chrono`) counts; absurdly long
/// ones are capped rather than overflowing.
fn chrono_seconds(d: Duration) -> chrono::Duration {
    chrono::Duration::seconds(i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 1_000_000))
}

/// The peer address, when the server was started with connect info.
pub(crate) type Peer = Option<axum::Extension<axum::extract::ConnectInfo<SocketAddr>>>;

/// A short, non-identifying form of a channel user id for logs (`oAbC***`).
pub(crate) fn short_user(id: &str) -> String {
    let head: String = id.chars().take(4).collect();
    format!("{head}***")
}

#[cfg(test)]
mod tests {
    #[test]
    fn allow_lists_match_addresses_and_networks() {
        use crate::config::ip_nets::{contains, parse};
        let net = [parse("203.0.113.0/24").expect("net")];
        assert!(contains(&net, "203.0.113.7".parse().expect("ip")));
        assert!(!contains(&net, "203.0.114.7".parse().expect("ip")));
        assert!(contains(&net, "::ffff:203.0.113.9".parse().expect("ip")));
        let one = [parse("127.0.0.1").expect("ip")];
        assert!(contains(&one, "127.0.0.1".parse().expect("ip")));
        assert!(!contains(&one, "127.0.0.2".parse().expect("ip")));
        assert!(contains(
            &[parse("0.0.0.0/0").expect("all")],
            "8.8.8.8".parse().expect("ip")
        ));
        assert!(parse("10.0.0.0/33").is_none());
        assert!(parse("nope").is_none());
        assert!(contains(
            &[parse("2001:db8::/32").expect("v6")],
            "2001:db8::1".parse().expect("ip")
        ));
        assert!(!contains(&[], "192.0.2.1".parse().expect("ip")));
    }
}
