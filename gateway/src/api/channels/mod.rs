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

mod sms;
mod wechat;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use adapters::wechat::MessageCipher;
use anyhow::Context;
use axum::Router;
use axum::routing::{get, post};
use chrono::Utc;

use super::AppState;
use crate::config::{self, ChannelsConfig, SmsProviderConfig, WechatKind};
use crate::intake::Intake;
use crate::store::Store;

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
            let token = config::secret(&a.token, &a.token_file)?
                .with_context(|| format!("channels.wechat {:?} has no token", a.name))?;
            let cipher = config::secret(&a.encoding_aes_key, &a.encoding_aes_key_file)?
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
        let provider = |name: &str, p: &SmsProviderConfig| -> anyhow::Result<SmsProvider> {
            let allow = p
                .allow_ips
                .iter()
                .map(|s| {
                    IpNet::parse(s).with_context(|| format!("channels.sms.{name}.allow_ips: {s:?}"))
                })
                .collect::<anyhow::Result<_>>()?;
            Ok(SmsProvider {
                enabled: p.enabled,
                token: config::secret(&p.token, &p.token_file)?,
                allow,
            })
        };
        Ok(Channels {
            wechat,
            aliyun: provider("aliyun", &c.sms.aliyun)?,
            tencent: provider("tencent", &c.sms.tencent)?,
            attach_window: chrono::Duration::seconds(
                i64::try_from(c.attach_window_s).unwrap_or(i64::MAX / 1_000_000),
            ),
            part_wait: chrono::Duration::seconds(
                i64::try_from(c.sms.part_wait_s).unwrap_or(i64::MAX / 1_000_000),
            ),
            wechat_max_skew_s: (c.wechat_max_skew_s > 0)
                .then(|| i64::try_from(c.wechat_max_skew_s).unwrap_or(i64::MAX)),
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

/// An address or network of an allow-list (`203.0.113.7`, `203.0.113.0/24`, `2001:db8::/32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    pub fn parse(s: &str) -> Option<IpNet> {
        let (a, p) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = a.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max)?,
        };
        Some(IpNet { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
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
    use super::*;

    #[test]
    fn allow_lists_match_addresses_and_networks() {
        let net = IpNet::parse("203.0.113.0/24").expect("net");
        assert!(net.contains("203.0.113.7".parse().expect("ip")));
        assert!(!net.contains("203.0.114.7".parse().expect("ip")));
        assert!(net.contains("::ffff:203.0.113.9".parse().expect("ip")));
        let one = IpNet::parse("127.0.0.1").expect("ip");
        assert!(one.contains("127.0.0.1".parse().expect("ip")));
        assert!(!one.contains("127.0.0.2".parse().expect("ip")));
        assert!(
            IpNet::parse("0.0.0.0/0")
                .expect("all")
                .contains("8.8.8.8".parse().expect("ip"))
        );
        assert!(IpNet::parse("10.0.0.0/33").is_none());
        assert!(IpNet::parse("nope").is_none());
        assert!(
            IpNet::parse("2001:db8::/32")
                .expect("v6")
                .contains("2001:db8::1".parse().expect("ip"))
        );
    }
}
