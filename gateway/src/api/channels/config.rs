//! `[channels]`: WeChat accounts and SMS providers (`/channels/wechat/{name}`,
//! `/channels/sms/{provider}`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// `[channels]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelsConfig {
    /// Photos and locations a citizen sends within this long of a report are added to it.
    #[serde(with = "crate::config::seconds")]
    pub attach_window_s: Duration,
    /// WeChat pushes whose signed `timestamp` is further than this from now are refused (a
    /// captured push replayed later); 0 turns the check off.
    #[serde(with = "crate::config::seconds")]
    pub wechat_max_skew_s: Duration,
    pub wechat: Vec<WechatAccountConfig>,
    pub sms: SmsConfig,
}

impl Default for ChannelsConfig {
    fn default() -> Self {
        ChannelsConfig {
            attach_window_s: Duration::from_secs(1800),
            wechat_max_skew_s: Duration::from_secs(300),
            wechat: Vec::new(),
            sms: SmsConfig::default(),
        }
    }
}

impl ChannelsConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        let mut names = std::collections::HashSet::new();
        for a in &self.wechat {
            let valid = !a.name.is_empty()
                && a.name.len() <= 64
                && a.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !valid {
                bail!(
                    "channels.wechat name {:?} must be 1 to 64 letters, digits, - or _",
                    a.name
                );
            }
            if !names.insert(a.name.as_str()) {
                bail!("channels.wechat name {:?} is used twice", a.name);
            }
            if a.token.is_none() && a.token_file.is_none() {
                bail!("channels.wechat {:?} needs token or token_file", a.name);
            }
            if a.appid.trim().is_empty() {
                bail!("channels.wechat {:?} needs its appid", a.name);
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WechatKind {
    /// An official account (公众号): passive XML replies.
    #[default]
    Official,
    /// A mini-program's customer-service push: answered `success`.
    MiniProgram,
}

/// One WeChat official account or mini-program (`[[channels.wechat]]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WechatAccountConfig {
    /// The last path segment of its URL: `/channels/wechat/{name}`.
    pub name: String,
    /// The AppID; encrypted messages must carry it.
    pub appid: String,
    /// The Token from the WeChat console (signs every push).
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    /// The 43-character EncodingAESKey (safe and compatible mode).
    pub encoding_aes_key: Option<String>,
    pub encoding_aes_key_file: Option<PathBuf>,
    #[serde(default)]
    pub kind: WechatKind,
}

/// `[channels.sms]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmsConfig {
    /// Parts of a long message wait this long for the rest; then the order is made of what came.
    #[serde(with = "crate::config::seconds")]
    pub part_wait_s: Duration,
    pub aliyun: SmsProviderConfig,
    pub tencent: SmsProviderConfig,
}

impl Default for SmsConfig {
    fn default() -> Self {
        SmsConfig {
            part_wait_s: Duration::from_secs(60),
            aliyun: SmsProviderConfig::default(),
            tencent: SmsProviderConfig::default(),
        }
    }
}

/// One SMS provider's upstream callback (`[channels.sms.aliyun]`, `[channels.sms.tencent]`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmsProviderConfig {
    pub enabled: bool,
    /// Neither provider signs its callbacks: when set, a callback must carry `?token=<value>`
    /// (put it in the callback URL configured at the provider).
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    /// Addresses (`203.0.113.7`) or networks (`203.0.113.0/24`) callbacks may come from; empty
    /// means any.
    #[serde(with = "crate::config::ip_nets")]
    pub allow_ips: Vec<IpNet>,
}
