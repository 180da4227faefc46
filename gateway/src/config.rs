//! Configuration: one TOML file, every key overridable from the environment.
//!
//! `GATEWAY__SECTION__KEY=value` overrides `[section] key` (figment's `Env` provider split on
//! `__`). Secrets may be given inline or as `*_file` paths, which keeps them out of the config file
//! and out of `ps`. With no file at all the embedded defaults run a complete single node: SQLite in
//! `./data`, HTTP on 127.0.0.1:8080.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[derive(Default)]
pub struct Config {
    pub node: NodeConfig,
    pub http: HttpConfig,
    pub log: LogConfig,
    pub store: StoreConfig,
    pub api: ApiConfig,
    pub dispatch: DispatchConfig,
    pub ivr: IvrConfig,
    pub channels: ChannelsConfig,
    pub web: WebConfig,
    pub sip: SipConfig,
    pub media: MediaConfig,
    pub calls: CallsConfig,
    pub speech: SpeechConfig,
    pub related: RelatedOrdersConfig,
}

/// `[related]`: duplicates and same-event reports, linked in every new order's `related`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelatedOrdersConfig {
    /// Find related orders for every new order (off: `related` stays empty).
    pub enabled: bool,
    /// The same caller about the same matter within this many seconds is a duplicate.
    pub duplicate_window_s: u64,
    /// How alike (character-bigram Jaccard, 0 to 1) two texts of one caller must be.
    pub duplicate_similarity: f64,
    /// Reports of the same category at the same place within this many seconds form one event.
    pub event_window_s: u64,
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
    fn default() -> Self {
        let d = adapters::normalize::related::RelatedConfig::default();
        RelatedOrdersConfig {
            enabled: true,
            duplicate_window_s: d.duplicate_window.num_seconds().unsigned_abs(),
            duplicate_similarity: d.duplicate_similarity,
            event_window_s: d.event_window.num_seconds().unsigned_abs(),
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
const MAX_RELATED_WINDOW_S: u64 = 366 * 24 * 3600;

impl RelatedOrdersConfig {
    pub fn index_config(&self) -> adapters::normalize::related::RelatedConfig {
        let secs = |s: u64| chrono::Duration::seconds(s.min(MAX_RELATED_WINDOW_S) as i64);
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

    fn validate(&self) -> anyhow::Result<()> {
        for (name, v) in [
            ("duplicate_window_s", self.duplicate_window_s),
            ("event_window_s", self.event_window_s),
        ] {
            if v == 0 || v > MAX_RELATED_WINDOW_S {
                bail!("related.{name} must be 1 to {MAX_RELATED_WINDOW_S} seconds, got {v}");
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

/// The public web form and the Open311 endpoint (`[web]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Where uploaded photos are kept, named by their SHA-256; default `<data_dir>/uploads`.
    pub upload_dir: Option<PathBuf>,
    /// Largest photo accepted, in bytes.
    pub max_upload_bytes: usize,
    /// Photo types accepted, checked against the file's first bytes (JPEG, PNG, WebP).
    pub allowed_types: Vec<String>,
    /// Longest 诉求内容 (request text) in characters.
    pub max_text_chars: usize,
    /// A form sent back sooner than this after it was served is taken for a bot.
    pub min_fill_seconds: u64,
    /// A form older than this is refused as expired (and shown again, input kept).
    pub form_max_age_seconds: u64,
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
            allowed_types: vec!["image/jpeg".into(), "image/png".into(), "image/webp".into()],
            max_text_chars: 2000,
            min_fill_seconds: 3,
            form_max_age_seconds: 7200,
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

/// `[channels]`: WeChat accounts and SMS providers (`/channels/wechat/{name}`,
/// `/channels/sms/{provider}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelsConfig {
    /// Photos and locations a citizen sends within this many seconds of a report are added to it.
    pub attach_window_s: u64,
    /// WeChat pushes whose signed `timestamp` is further than this many seconds from now are
    /// refused (a captured push replayed later); 0 turns the check off.
    pub wechat_max_skew_s: u64,
    pub wechat: Vec<WechatAccountConfig>,
    pub sms: SmsConfig,
}

impl Default for ChannelsConfig {
    fn default() -> Self {
        ChannelsConfig {
            attach_window_s: 1800,
            wechat_max_skew_s: 300,
            wechat: Vec::new(),
            sms: SmsConfig::default(),
        }
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

/// One WeChat official account or mini-program.
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

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmsConfig {
    /// Parts of a long message wait this long for the rest; then the order is made of what came.
    pub part_wait_s: u64,
    pub aliyun: SmsProviderConfig,
    pub tencent: SmsProviderConfig,
}

impl Default for SmsConfig {
    fn default() -> Self {
        SmsConfig {
            part_wait_s: 60,
            aliyun: SmsProviderConfig::default(),
            tencent: SmsProviderConfig::default(),
        }
    }
}

/// One SMS provider's upstream callback.
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
    pub allow_ips: Vec<String>,
}

/// SIP towards the carrier trunk (`[sip]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipConfig {
    /// Answer calls at all; with `false` no SIP port is opened.
    pub enabled: bool,
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
    /// Networks the trunk sends from; requests from anywhere else are answered 403.
    pub trunk_allow: Vec<String>,
    /// Host written into Via, Contact and SDP when the bound address is not what peers reach.
    pub advertised_host: Option<String>,
    /// Sent as Server and User-Agent.
    pub user_agent: String,
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            enabled: true,
            udp: SocketAddr::from(([127, 0, 0, 1], 5060)),
            tcp: SocketAddr::from(([127, 0, 0, 1], 5060)),
            trunk_allow: vec!["127.0.0.0/8".into(), "::1/128".into()],
            advertised_host: None,
            user_agent: "12345-gateway".into(),
        }
    }
}

/// RTP/RTCP for calls (`[media]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// Address RTP binds to and SDP advertises.
    pub bind_ip: std::net::IpAddr,
    /// RTP takes even ports in this range, RTCP the odd port above.
    pub rtp_port_min: u16,
    pub rtp_port_max: u16,
    /// A call whose media stops for this long is hung up (not while on hold).
    pub media_timeout_s: u64,
    /// Jitter buffer depth in milliseconds (whole 20 ms frames).
    pub jitter_ms: u32,
    /// Codecs in our order of preference: "PCMA", "PCMU".
    pub codecs: Vec<String>,
    /// Also detect DTMF tones in the audio (for trunks that do not send RFC 4733).
    pub inband_dtmf: bool,
    /// Threads that pace every call's RTP from one clock each (0: one per core).
    pub pacer_threads: usize,
    /// Real-time priority of those threads: 0 leaves them to the normal scheduler; 1-99 (10 by
    /// default) runs them SCHED_FIFO at that priority, so the 20 ms clock is not held up by
    /// other work on a busy host (FreeSWITCH's `-rp`, Asterisk's `-p`). A pacer busy more than
    /// 60 % of its core drops back to normal until calm, so signalling is never starved. Needs
    /// root, CAP_SYS_NICE or an RLIMIT_RTPRIO of at least this (`docker run --ulimit
    /// rtprio=10`); without, a warning is logged and they stay normal.
    pub pacer_priority: u8,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            bind_ip: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            rtp_port_min: 20000,
            rtp_port_max: 30000,
            media_timeout_s: 30,
            jitter_ms: 60,
            codecs: vec!["PCMA".into(), "PCMU".into()],
            inband_dtmf: true,
            pacer_threads: 0,
            pacer_priority: crate::runtime::media_engine::DEFAULT_PACER_PRIORITY,
        }
    }
}

/// Call handling (`[calls]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CallsConfig {
    /// The flow every call starts in.
    pub entry_flow: String,
    /// Calls held at once; more are answered 503 so the trunk can route them elsewhere.
    pub max_calls: usize,
    /// Where voice messages and call recordings go; default `<data_dir>/recordings`.
    pub recordings_dir: Option<PathBuf>,
    /// Record every call's caller audio (not only voice messages).
    pub record_calls: bool,
    /// Agent queues for transfers: queue name -> SIP URI. `general` is also the fallback for
    /// queues with no entry of their own. With none, transfers fail and the flow's `on_fail` runs.
    pub agents: std::collections::BTreeMap<String, String>,
    /// Seconds an agent's phone may ring before the transfer counts as failed.
    pub transfer_timeout_s: u64,
    /// A caller who hangs up before the flow ends leaves a callback order (so nobody who called
    /// is lost).
    pub callback_orders: bool,
    /// Synthesize prompts that have no recording with this espeak-ng binary; without it they
    /// are skipped (logged) and the flow goes on.
    pub tts_command: Option<String>,
}

impl Default for CallsConfig {
    fn default() -> Self {
        CallsConfig {
            entry_flow: "main".into(),
            max_calls: 4000,
            recordings_dir: None,
            record_calls: false,
            agents: std::collections::BTreeMap::new(),
            transfer_timeout_s: 30,
            callback_orders: true,
            tts_command: Some("espeak-ng".into()),
        }
    }
}

/// Speech recognition in calls (`[speech]`): spoken answers to IVR steps, heard by Whisper on
/// this machine (no cloud service: a hotline's callers' voices stay on site).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpeechConfig {
    /// Hear spoken answers at all; off (or with no model) calls take keys only.
    pub enabled: bool,
    /// Any ggml Whisper model file; unset means Whisper base as `gateway models prepare` leaves
    /// it in `cache_dir`.
    pub model: Option<PathBuf>,
    /// Where `gateway models prepare` keeps the converted model (relative paths are from the
    /// working directory).
    pub cache_dir: PathBuf,
    /// Recognitions at once; 0 sizes the pool to the machine (min(cores, 2)). An utterance that
    /// finds every recognizer busy is answered "not understood" at once and the caller keys in.
    pub pool_size: usize,
    /// Threads per recognition; 0 means cores / pool_size.
    pub threads: usize,
    /// At least this much quiet ends an utterance; a flow step that asks for longer
    /// (`speech: { end_silence_ms }`) gets its own.
    pub end_silence_ms: u32,
    /// Longest utterance in seconds (a step may ask for less); Whisper hears at most 30 s at once.
    pub max_utterance_s: u32,
    /// A recognition that takes longer than this counts as not understood.
    pub timeout_ms: u64,
    /// Below this mean token probability a transcript is not trusted.
    pub min_confidence: f32,
    /// How close (0 to 1, tone-insensitive pinyin) a transcript must come to an option's keyword
    /// for the option to be chosen.
    pub match_threshold: f32,
}

impl Default for SpeechConfig {
    fn default() -> Self {
        SpeechConfig {
            enabled: true,
            model: None,
            cache_dir: PathBuf::from(speech_models::model::DEFAULT_CACHE_DIR),
            pool_size: 0,
            threads: 0,
            end_silence_ms: 800,
            max_utterance_s: 15,
            timeout_ms: 5000,
            min_confidence: 0.35,
            match_threshold: speech_models::matcher::DEFAULT_THRESHOLD,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IvrConfig {
    /// The flow files administrators edit; watched and reloaded live.
    pub flows_dir: PathBuf,
    /// Watch `flows_dir` and apply valid edits without a restart.
    pub reload: bool,
}

impl Default for IvrConfig {
    fn default() -> Self {
        IvrConfig {
            flows_dir: PathBuf::from("ivr-flows/flows"),
            reload: true,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// 0 to 99, unique per node: it is part of every order number this node issues.
    pub id: u8,
    /// Offset of the hotline's local time, which decides the date in order numbers.
    pub utc_offset: String,
    /// Where the SQLite database, generated secrets and recordings live.
    pub data_dir: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes; larger ones get 413.
    pub max_body_bytes: usize,
    /// A request that takes longer is answered 503 (its submission may still be committed; the
    /// client retries with its Idempotency-Key).
    pub request_timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `gateway=debug,info`; `RUST_LOG` wins when set.
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    Sqlite,
    Postgres,
}

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

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// With no keys configured, an admin key is generated once into `<data_dir>/api-key`.
    pub keys: Vec<ApiKeyConfig>,
}

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
    pub timeout_ms: u64,
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    /// How often the outbox is scanned for retries that have come due.
    pub poll_interval_ms: u64,
    /// How long a node owns a delivery it took, before another node may take it over.
    pub lease_ms: u64,
    /// Status events whose timestamp is further than this from now are refused (replay defence).
    pub event_max_skew_s: i64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            id: 1,
            utc_offset: "+08:00".into(),
            data_dir: PathBuf::from("./data"),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 64 * 1024,
            request_timeout_ms: 10_000,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Human,
            level: "info".into(),
        }
    }
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

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            url: None,
            secret: None,
            secret_file: None,
            concurrency: 32,
            timeout_ms: 10_000,
            backoff_initial_ms: 500,
            backoff_max_ms: 300_000,
            poll_interval_ms: 1_000,
            lease_ms: 60_000,
            event_max_skew_s: 300,
        }
    }
}

impl Config {
    /// Embedded defaults, then the file (if any), then `GATEWAY__*` environment variables.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                bail!("config file {} does not exist", file.display());
            }
            figment = figment.merge(Toml::file(file));
        }
        figment = figment.merge(Env::prefixed("GATEWAY__").split("__"));
        let config: Config = figment.extract().map_err(|e| {
            let all: Vec<String> = e.into_iter().map(|e| e.to_string()).collect();
            anyhow::anyhow!("invalid configuration: {}", all.join("; "))
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.node.id > adapters::order_number::MAX_NODE {
            bail!("node.id must be 0 to 99, got {}", self.node.id);
        }
        self.utc_offset()?;
        if self.store.kind == StoreKind::Postgres
            && self.store.postgres_url.is_none()
            && self.store.postgres_url_file.is_none()
        {
            bail!("store.kind = \"postgres\" needs store.postgres_url or store.postgres_url_file");
        }
        if self.store.max_batch == 0 || self.store.read_pool == 0 {
            bail!("store.max_batch and store.read_pool must be at least 1");
        }
        if self.dispatch.concurrency == 0 {
            bail!("dispatch.concurrency must be at least 1");
        }
        if let Some(url) = &self.dispatch.url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            bail!("dispatch.url must be an http:// or https:// URL, got {url:?}");
        }
        if self.media.rtp_port_min >= self.media.rtp_port_max {
            bail!("media.rtp_port_min must be below media.rtp_port_max");
        }
        for c in &self.media.codecs {
            if media::Codec::from_name(c).is_none() {
                bail!("media.codecs: unknown codec {c:?} (PCMA or PCMU)");
            }
        }
        if self.media.codecs.is_empty() {
            bail!("media.codecs must name at least one codec");
        }
        for net in &self.sip.trunk_allow {
            if net.parse::<ipnet::IpNet>().is_err() && net.parse::<std::net::IpAddr>().is_err() {
                bail!("sip.trunk_allow: {net:?} is not an address or network such as 10.0.0.0/8");
            }
        }
        for (queue, uri) in &self.calls.agents {
            if !(uri.starts_with("sip:") || uri.starts_with("sips:")) {
                bail!("calls.agents.{queue}: {uri:?} is not a sip: URI");
            }
        }
        let mut names = std::collections::HashSet::new();
        for a in &self.channels.wechat {
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
        for (name, p) in [
            ("aliyun", &self.channels.sms.aliyun),
            ("tencent", &self.channels.sms.tencent),
        ] {
            for ip in &p.allow_ips {
                if crate::api::channels::IpNet::parse(ip).is_none() {
                    bail!(
                        "channels.sms.{name}.allow_ips: {ip:?} is not an address or network such as 203.0.113.0/24"
                    );
                }
            }
        }
        for key in &self.api.keys {
            if key.key.is_none() && key.key_file.is_none() {
                bail!("api key {:?} needs key or key_file", key.name);
            }
        }
        let sp = &self.speech;
        if !(0.0..=1.0).contains(&sp.min_confidence) || !(0.0..=1.0).contains(&sp.match_threshold) {
            bail!("speech.min_confidence and speech.match_threshold must be 0 to 1");
        }
        if sp.max_utterance_s == 0 || sp.max_utterance_s > 30 {
            bail!("speech.max_utterance_s must be 1 to 30 (Whisper hears 30 s at once)");
        }
        if sp.end_silence_ms < 100 || sp.timeout_ms == 0 {
            bail!("speech.end_silence_ms must be at least 100 and speech.timeout_ms at least 1");
        }
        self.validate_web()?;
        self.related.validate()?;
        Ok(())
    }

    fn validate_web(&self) -> anyhow::Result<()> {
        let w = &self.web;
        for t in &w.allowed_types {
            if adapters::webform::ImageType::from_mime(t).is_none() {
                bail!("web.allowed_types: {t:?} is not one of image/jpeg, image/png, image/webp");
            }
        }
        if w.max_upload_bytes == 0 || w.max_text_chars == 0 {
            bail!("web.max_upload_bytes and web.max_text_chars must be at least 1");
        }
        if w.rate_per_minute == 0
            || w.rate_burst == 0
            || w.open311_rate_per_minute == 0
            || w.open311_rate_burst == 0
        {
            bail!("web rate limits (rate_per_minute, rate_burst, open311_*) must be at least 1");
        }
        if w.form_max_age_seconds <= w.min_fill_seconds {
            bail!("web.form_max_age_seconds must be longer than web.min_fill_seconds");
        }
        if let Some(url) = &w.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            bail!("web.public_url must be an http:// or https:// URL, got {url:?}");
        }
        Ok(())
    }

    pub fn upload_dir(&self) -> PathBuf {
        self.web
            .upload_dir
            .clone()
            .unwrap_or_else(|| self.node.data_dir.join("uploads"))
    }

    pub fn utc_offset(&self) -> anyhow::Result<chrono::FixedOffset> {
        self.node
            .utc_offset
            .parse::<chrono::FixedOffset>()
            .with_context(|| {
                format!(
                    "node.utc_offset must look like +08:00, got {:?}",
                    self.node.utc_offset
                )
            })
    }

    pub fn recordings_dir(&self) -> PathBuf {
        self.calls
            .recordings_dir
            .clone()
            .unwrap_or_else(|| self.node.data_dir.join("recordings"))
    }

    pub fn sqlite_path(&self) -> PathBuf {
        self.store
            .sqlite_path
            .clone()
            .unwrap_or_else(|| self.node.data_dir.join("gateway.db"))
    }
}

/// Read a secret given inline or as a file (trailing newline removed).
pub fn secret(inline: &Option<String>, file: &Option<PathBuf>) -> anyhow::Result<Option<String>> {
    if let Some(v) = inline {
        return Ok(Some(v.clone()));
    }
    match file {
        None => Ok(None),
        Some(path) => {
            let v = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read secret file {}", path.display()))?;
            let v = v.trim_end_matches(['\n', '\r']).to_owned();
            if v.is_empty() {
                bail!("secret file {} is empty", path.display());
            }
            Ok(Some(v))
        }
    }
}

/// Read `<data_dir>/<name>`, or create it with a fresh random secret (mode 0600) the first time.
pub fn generated_secret(data_dir: &Path, name: &str) -> anyhow::Result<(String, PathBuf)> {
    use rand::Rng;
    let path = data_dir.join(name);
    if path.exists() {
        return Ok((
            secret(&None, &Some(path.clone()))?.unwrap_or_default(),
            path,
        ));
    }
    let bytes: [u8; 24] = rand::rng().random();
    let value = hex::encode(bytes);
    write_private(&path, &value)?;
    Ok((value, path))
}

fn write_private(path: &Path, value: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    writeln!(f, "{value}")?;
    f.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_the_contract() {
        let c = Config::default();
        c.validate().expect("defaults valid");
        assert_eq!(c.http.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.sqlite_path(), PathBuf::from("./data/gateway.db"));
        assert_eq!(c.upload_dir(), PathBuf::from("./data/uploads"));
    }

    #[test]
    fn file_and_environment_override_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("gateway.toml");
        std::fs::write(
            &file,
            "[node]\nid = 7\n[dispatch]\nurl = \"http://127.0.0.1:9/x\"\nconcurrency = 3\n",
        )
        .expect("write");
        let c = Config::load(Some(&file)).expect("valid");
        assert_eq!(c.node.id, 7);
        assert_eq!(c.dispatch.concurrency, 3);
        assert_eq!(c.http.max_body_bytes, 64 * 1024);
    }

    #[test]
    fn the_shipped_example_is_the_defaults() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../gateway.example.toml");
        let c = Config::load(Some(&example)).expect("example config loads");
        let d = Config::default();
        assert_eq!(
            serde_json::to_value(&c).expect("json"),
            serde_json::to_value(&d).expect("json"),
            "gateway.example.toml must list the defaults"
        );
    }

    #[test]
    fn mistakes_are_explained() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("gateway.toml");
        std::fs::write(&file, "[node]\nidd = 7\n").expect("write");
        let e = Config::load(Some(&file))
            .expect_err("unknown key")
            .to_string();
        assert!(e.contains("idd"), "{e}");
        std::fs::write(&file, "[node]\nid = 120\n").expect("write");
        let e = Config::load(Some(&file)).expect_err("bad node").to_string();
        assert!(e.contains("node.id"), "{e}");
        assert!(Config::load(Some(&dir.path().join("missing.toml"))).is_err());
    }

    #[test]
    fn secrets_from_files_and_generated_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("s");
        std::fs::write(&f, "hunter2\n").expect("write");
        assert_eq!(
            secret(&None, &Some(f)).expect("read").as_deref(),
            Some("hunter2")
        );
        let (a, _) = generated_secret(dir.path(), "k").expect("gen");
        let (b, _) = generated_secret(dir.path(), "k").expect("reuse");
        assert_eq!(a, b);
        assert_eq!(a.len(), 48);
    }
}
