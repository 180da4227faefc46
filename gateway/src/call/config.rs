//! `[sip]`, `[media]`, `[calls]` and `[speech]`: how calls are taken, carried and heard.
//!
//! Where the sans-IO cores have settings of their own ([`SipSettings`], [`MediaSettings`],
//! [`VadConfig`]) their defaults are the configuration's defaults, so each key has one default;
//! the settings are built from these sections in one place each ([`SipConfig::settings`],
//! `MediaSettings::from(&MediaConfig)`, [`crate::speech::SpeechSettings::from_config`]).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use ipnet::IpNet;
use media::{Codec, MediaSettings};
use serde::{Deserialize, Serialize};
use sip::SipSettings;
use speech_models::model::Quantization;
use speech_models::vad::VadConfig;

/// SIP towards the carrier trunk (`[sip]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipConfig {
    /// Answer calls at all; with `false` no SIP port is opened.
    pub enabled: bool,
    pub udp: SocketAddr,
    pub tcp: SocketAddr,
    /// Networks the trunk sends from; requests from anywhere else are answered 403.
    #[serde(with = "crate::config::ip_nets")]
    pub trunk_allow: Vec<IpNet>,
    /// Host written into Via, Contact and SDP when the bound address is not what peers reach.
    pub advertised_host: Option<String>,
    /// Sent as Server and User-Agent.
    pub user_agent: String,
    /// New calls taken per second from one source address; beyond it they are answered 503
    /// with Retry-After (0: no limit). Behind a proxy every call comes from the proxy's
    /// address: set it above the trunk's whole call rate, or 0.
    pub source_call_rate: u32,
    /// New calls one address may start at once before `source_call_rate` applies.
    pub source_call_burst: u32,
    /// Agents whose softphones REGISTER with the gateway (`[sip.agents.<user>]`), from any
    /// address, with digest authentication; a queue lists them by user name.
    pub agents: BTreeMap<String, SipAgentConfig>,
    /// The digest realm their phones authenticate in.
    pub realm: String,
}

/// One agent's login (`[sip.agents.<user>]`): `password_file` (a secret file, preferred) or
/// `password`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipAgentConfig {
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
}

impl Default for SipConfig {
    /// The SIP core's defaults ([`SipSettings::default`]).
    fn default() -> Self {
        let d = SipSettings::default();
        SipConfig {
            enabled: true,
            udp: d.udp,
            tcp: d.tcp,
            trunk_allow: d.trunk_allow,
            advertised_host: d.advertised_host,
            user_agent: d.user_agent,
            source_call_rate: d.source_call_rate,
            source_call_burst: d.source_call_burst,
            agents: BTreeMap::new(),
            realm: sip::registrar::RegistrarSettings::default().realm,
        }
    }
}

impl SipConfig {
    /// The SIP core's settings. `rng_seed` must come from the OS in production: branch ids,
    /// tags and Call-IDs must differ from one run to the next.
    pub fn settings(&self, rng_seed: u64) -> SipSettings {
        SipSettings {
            udp: self.udp,
            tcp: self.tcp,
            trunk_allow: self.trunk_allow.clone(),
            user_agent: self.user_agent.clone(),
            advertised_host: self.advertised_host.clone(),
            rng_seed,
            source_call_rate: self.source_call_rate,
            source_call_burst: self.source_call_burst,
            ..SipSettings::default()
        }
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        for (user, a) in &self.agents {
            if user.is_empty()
                || !user
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            {
                bail!("sip.agents.{user:?}: a user name of letters, digits, '.', '_' or '-'");
            }
            if a.password.is_none() && a.password_file.is_none() {
                bail!("sip.agents.{user}: needs password_file (or password)");
            }
        }
        Ok(())
    }

    /// The registrar's settings with the agents' passwords read, `None` without agents.
    pub fn registrar(&self) -> anyhow::Result<Option<sip::registrar::RegistrarSettings>> {
        if self.agents.is_empty() {
            return Ok(None);
        }
        let mut users = BTreeMap::new();
        for (user, a) in &self.agents {
            let password = crate::config::secret(&a.password, &a.password_file)
                .map_err(|e| anyhow::anyhow!("sip.agents.{user}: {e:#}"))?
                .ok_or_else(|| anyhow::anyhow!("sip.agents.{user}: no password"))?;
            users.insert(user.clone(), password);
        }
        Ok(Some(sip::registrar::RegistrarSettings {
            realm: self.realm.clone(),
            users,
            ..Default::default()
        }))
    }
}

/// RTP/RTCP for calls (`[media]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// Address RTP binds to and SDP advertises.
    pub bind_ip: IpAddr,
    /// RTP takes even ports in this range, RTCP the odd port above.
    pub rtp_port_min: u16,
    pub rtp_port_max: u16,
    /// A call whose media stops for this long is hung up (not while on hold).
    #[serde(with = "crate::config::seconds")]
    pub media_timeout_s: Duration,
    /// Jitter buffer depth in milliseconds (whole 20 ms frames).
    pub jitter_ms: u32,
    /// Codecs in our order of preference: "PCMA", "PCMU".
    #[serde(with = "codecs")]
    pub codecs: Vec<Codec>,
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
    /// "per_call" (the default): each call gets an RTP/RTCP port pair of its own from the
    /// range. "shared": each pacer has one pair for all its calls, read and written many
    /// datagrams per system call (less CPU per call), its calls told apart by address and
    /// SSRC; for media that comes from where the SDP says (a trunk, an SBC, rtpengine): a
    /// caller behind NAT whose SDP names a private address is not heard.
    pub rtp_sockets: RtpSockets,
}

/// How calls' RTP is carried on sockets (see [`MediaConfig::rtp_sockets`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RtpSockets {
    #[default]
    PerCall,
    Shared,
}

impl Default for MediaConfig {
    /// The media core's defaults ([`MediaSettings::default`]); the pacer's are the engine's
    /// only configuration, so they are set here.
    fn default() -> Self {
        let d = MediaSettings::default();
        MediaConfig {
            bind_ip: d.bind_ip,
            rtp_port_min: *d.rtp_ports.start(),
            rtp_port_max: *d.rtp_ports.end(),
            media_timeout_s: d.media_timeout,
            jitter_ms: d.jitter_ms,
            codecs: d.codecs,
            inband_dtmf: d.inband_dtmf,
            pacer_threads: 0,
            pacer_priority: 10,
            rtp_sockets: RtpSockets::PerCall,
        }
    }
}

impl MediaConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.rtp_port_min >= self.rtp_port_max {
            bail!("media.rtp_port_min must be below media.rtp_port_max");
        }
        if self.codecs.is_empty() {
            bail!("media.codecs must name at least one codec");
        }
        Ok(())
    }
}

impl From<&MediaConfig> for MediaSettings {
    fn from(m: &MediaConfig) -> MediaSettings {
        MediaSettings {
            bind_ip: m.bind_ip,
            rtp_ports: m.rtp_port_min..=m.rtp_port_max,
            media_timeout: m.media_timeout_s,
            jitter_ms: m.jitter_ms,
            codecs: m.codecs.clone(),
            inband_dtmf: m.inband_dtmf,
            ..MediaSettings::default()
        }
    }
}

/// `media.codecs`: encoding names.
mod codecs {
    use media::Codec;
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(codecs: &[Codec], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(codecs.iter().map(|c| c.name()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Codec>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|c| c.parse::<Codec>().map_err(D::Error::custom))
            .collect()
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
    pub agents: BTreeMap<String, String>,
    /// How long an agent's phone may ring before the transfer counts as failed.
    #[serde(with = "crate::config::seconds")]
    pub transfer_timeout_s: Duration,
    /// Agent queues with waiting (`[calls.queues.<name>]`): a flow's `transfer` to one of
    /// these puts the caller in line for its agents. A queue named only in `agents` rings its
    /// one URI at once, as before.
    pub queues: BTreeMap<String, QueueConfig>,
    /// A caller who hangs up before the flow ends leaves a callback order (so nobody who called
    /// is lost).
    pub callback_orders: bool,
    /// Synthesize prompts that have no recording with this espeak-ng binary; without it they
    /// are skipped (logged) and the flow goes on.
    pub tts_command: Option<String>,
    /// Calls the gateway places (`[calls.outbound]`): `POST /v1/calls` and missed calls'
    /// callbacks.
    pub outbound: OutboundConfig,
}

impl Default for CallsConfig {
    fn default() -> Self {
        CallsConfig {
            entry_flow: "main".into(),
            max_calls: 4000,
            recordings_dir: None,
            record_calls: false,
            agents: BTreeMap::new(),
            transfer_timeout_s: Duration::from_secs(30),
            queues: BTreeMap::new(),
            callback_orders: true,
            tts_command: Some("espeak-ng".into()),
            outbound: OutboundConfig::default(),
        }
    }
}

impl CallsConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        // The parse a transfer will do, done once at load: a wrong agent URI is the
        // administrator's error at start, not a failed transfer with a caller waiting.
        for (queue, uri) in &self.agents {
            if let Err(why) = super::bridge::AgentTarget::parse(uri) {
                bail!("calls.agents.{queue}: {why}");
            }
        }
        for (name, q) in &self.queues {
            q.validate()
                .map_err(|e| anyhow::anyhow!("calls.queues.{name}: {e}"))?;
        }
        self.outbound
            .validate()
            .map_err(|e| anyhow::anyhow!("calls.outbound.{e}"))?;
        Ok(())
    }

    /// The queues as the [`super::acd::Acd`] takes them.
    pub fn queue_settings(&self) -> BTreeMap<String, super::acd::QueueSettings> {
        self.queues
            .iter()
            .map(|(name, q)| (name.clone(), q.settings()))
            .collect()
    }
}

/// Calls the gateway places (`[calls.outbound]`); see [`super::dialer`] for how it schedules
/// them. Without `trunk`, the gateway places no calls (`POST /v1/calls` answers 503).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundConfig {
    /// The carrier trunk calls go through, e.g. `sip:10.0.0.5:5060` (`;transport=tcp` for TCP);
    /// the number dialled becomes the Request-URI's user part.
    pub trunk: Option<String>,
    /// The number the called citizen sees (From's user part).
    pub caller_id: String,
    /// Codecs offered to the trunk, in order of preference; empty: `media.codecs`.
    #[serde(with = "codecs")]
    pub codecs: Vec<Codec>,
    /// Outbound calls up at once (they count towards `calls.max_calls` too).
    pub max_calls: usize,
    /// New outbound calls a second at most, paced evenly (`1 / calls_per_second` apart).
    pub calls_per_second: u32,
    /// When calls may be placed, `"08:00-21:00"` in the node's time zone (`node.utc_offset`);
    /// a window across midnight such as `"22:00-06:00"` is allowed; `"00:00-24:00"`: any time.
    pub calling_hours: String,
    /// How long the phone may ring before the try counts as not answered.
    #[serde(with = "crate::config::seconds")]
    pub ring_timeout_s: Duration,
    /// Tries ending busy before the call ends `busy` (1: no retry), and the wait between.
    pub busy_tries: u32,
    #[serde(with = "crate::config::seconds")]
    pub busy_retry_s: Duration,
    /// Tries not answered before the call ends `no_answer`, and the wait between.
    pub no_answer_tries: u32,
    #[serde(with = "crate::config::seconds")]
    pub no_answer_retry_s: Duration,
    /// Tries failing otherwise (a SIP error, no media) before the call ends `failed`.
    pub failed_tries: u32,
    #[serde(with = "crate::config::seconds")]
    pub failed_retry_s: Duration,
    /// The flow a missed call's callback runs (漏话回拨: a call refused at capacity or abandoned
    /// before service is called back); unset: missed calls leave a callback order only.
    pub missed_call_flow: Option<String>,
    /// How long after the missed call its callback is placed at the earliest.
    #[serde(with = "crate::config::seconds")]
    pub missed_call_delay_s: Duration,
    /// The flow a queue callback runs when the citizen answers (a caller who pressed a transfer
    /// step's `callback:` key while waiting): it tells them why we call, and its `transfer`
    /// rejoins the queue they left, at the place kept.
    pub queue_callback_flow: String,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        OutboundConfig {
            trunk: None,
            caller_id: "12345".into(),
            codecs: Vec::new(),
            max_calls: 20,
            calls_per_second: 10,
            calling_hours: "08:00-21:00".into(),
            ring_timeout_s: Duration::from_secs(30),
            busy_tries: 3,
            busy_retry_s: Duration::from_secs(300),
            no_answer_tries: 3,
            no_answer_retry_s: Duration::from_secs(600),
            failed_tries: 2,
            failed_retry_s: Duration::from_secs(60),
            missed_call_flow: None,
            missed_call_delay_s: Duration::from_secs(30),
            queue_callback_flow: "queue_callback".into(),
        }
    }
}

impl OutboundConfig {
    fn validate(&self) -> anyhow::Result<()> {
        if let Some(trunk) = &self.trunk {
            super::bridge::AgentTarget::parse(trunk)
                .map_err(|why| anyhow::anyhow!("trunk: {why}"))?;
        }
        if adapters::submission::normalize_phone(&self.caller_id).is_none() {
            bail!("caller_id: {:?} is not a number", self.caller_id);
        }
        super::dialer::CallingHours::parse(&self.calling_hours)
            .map_err(|why| anyhow::anyhow!("calling_hours: {why}"))?;
        if self.max_calls == 0 || self.calls_per_second == 0 || self.ring_timeout_s.is_zero() {
            bail!("max_calls, calls_per_second and ring_timeout_s must be at least 1");
        }
        if self.missed_call_flow.is_some() && self.trunk.is_none() {
            bail!("missed_call_flow: needs a trunk to call back through");
        }
        Ok(())
    }

    /// The dialer's settings (valid after [`CallsConfig::validate`]).
    pub fn dialer_settings(
        &self,
        utc_offset: chrono::FixedOffset,
    ) -> super::dialer::DialerSettings {
        use super::dialer::Retry;
        super::dialer::DialerSettings {
            max_calls: self.max_calls,
            calls_per_second: self.calls_per_second,
            calling_hours: super::dialer::CallingHours::parse(&self.calling_hours).ok(),
            utc_offset,
            busy: Retry {
                tries: self.busy_tries,
                after: self.busy_retry_s,
            },
            no_answer: Retry {
                tries: self.no_answer_tries,
                after: self.no_answer_retry_s,
            },
            failed: Retry {
                tries: self.failed_tries,
                after: self.failed_retry_s,
            },
        }
    }
}

/// One agent queue (`[calls.queues.<name>]`); see [`super::acd`] for how it serves.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// The agents' SIP URIs (`sip:1001@10.0.0.8:5060`), logged in from the start.
    pub agents: Vec<String>,
    /// How long an agent's phone rings before the caller is offered to the next agent.
    #[serde(with = "crate::config::seconds")]
    pub ring_timeout_s: Duration,
    /// An agent who let a call ring out is skipped for this long.
    #[serde(with = "crate::config::seconds")]
    pub retry_s: Duration,
    /// An agent's time after a call before the next one.
    #[serde(with = "crate::config::seconds")]
    pub wrap_up_s: Duration,
    /// The longest a caller waits; then the flow's `on_fail` runs (a voice message, say).
    #[serde(with = "crate::config::seconds")]
    pub max_wait_s: Duration,
    /// How often a waiting caller hears their position and the expected wait; 0: never.
    #[serde(with = "crate::config::seconds")]
    pub announce_every_s: Duration,
    /// The handle time assumed for the wait estimate until calls of the queue have ended.
    #[serde(with = "crate::config::seconds")]
    pub initial_handle_time_s: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        let d = super::acd::QueueSettings::default();
        Self {
            agents: Vec::new(),
            ring_timeout_s: d.ring_timeout,
            retry_s: d.retry_after,
            wrap_up_s: d.wrap_up,
            max_wait_s: d.max_wait,
            announce_every_s: d.announce_every,
            initial_handle_time_s: d.initial_handle_time,
        }
    }
}

impl QueueConfig {
    fn validate(&self) -> anyhow::Result<()> {
        if self.agents.is_empty() {
            bail!("agents: at least one agent's SIP URI");
        }
        // Names without a scheme are agents who register ([sip.agents], checked by Config).
        for uri in self.agents.iter().filter(|a| a.contains(':')) {
            if let Err(why) = super::bridge::AgentTarget::parse(uri) {
                bail!("agents: {why}");
            }
        }
        if self.ring_timeout_s.is_zero() || self.max_wait_s.is_zero() {
            bail!("ring_timeout_s and max_wait_s must be at least 1");
        }
        if !self.announce_every_s.is_zero() && self.announce_every_s < Duration::from_secs(10) {
            bail!("announce_every_s must be 0 (never) or at least 10");
        }
        Ok(())
    }

    fn settings(&self) -> super::acd::QueueSettings {
        super::acd::QueueSettings {
            agents: self.agents.clone(),
            ring_timeout: self.ring_timeout_s,
            retry_after: self.retry_s,
            wrap_up: self.wrap_up_s,
            max_wait: self.max_wait_s,
            announce_every: self.announce_every_s,
            initial_handle_time: self.initial_handle_time_s,
            callback_hold: super::acd::QueueSettings::default().callback_hold,
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
    /// Which Whisper base `gateway models prepare` writes and an unset `model` means: `f16`
    /// (`ggml-base.bin`, the release's own precision) or `q8_0` (8-bit weights,
    /// `ggml-base-q8_0.bin`: about a quarter faster on CPU, but hears some Mandarin answers
    /// worse). Ignored when `model` is set.
    pub quantization: Quantization,
    /// Recognitions at once; 0 sizes the pool to the machine (min(cores, 2)). An utterance that
    /// finds every recognizer busy is answered "not understood" at once and the caller keys in.
    pub pool_size: usize,
    /// Threads per recognition; 0 means cores / pool_size.
    pub threads: usize,
    /// At least this much quiet ends an utterance; a flow step that asks for longer
    /// (`speech: { end_silence_ms }`) gets its own.
    #[serde(with = "crate::config::millis")]
    pub end_silence_ms: Duration,
    /// Longest utterance (a step may ask for less); Whisper hears at most 30 s at once.
    #[serde(with = "crate::config::seconds")]
    pub max_utterance_s: Duration,
    /// A recognition that takes longer than this counts as not understood.
    #[serde(with = "crate::config::millis")]
    pub timeout_ms: Duration,
    /// Below this mean token probability a transcript is not trusted.
    pub min_confidence: f32,
    /// How close (0 to 1, tone-insensitive pinyin) a transcript must come to an option's keyword
    /// for the option to be chosen.
    pub match_threshold: f32,
}

impl Default for SpeechConfig {
    /// Utterance limits are the VAD's defaults ([`VadConfig::default`]), the match threshold
    /// the matcher's.
    fn default() -> Self {
        let vad = VadConfig::default();
        SpeechConfig {
            enabled: true,
            model: None,
            cache_dir: PathBuf::from(speech_models::model::DEFAULT_CACHE_DIR),
            quantization: Quantization::default(),
            pool_size: 0,
            threads: 0,
            end_silence_ms: vad.end_silence,
            max_utterance_s: vad.max_utterance,
            timeout_ms: Duration::from_millis(5000),
            min_confidence: 0.35,
            match_threshold: speech_models::matcher::DEFAULT_THRESHOLD,
        }
    }
}

/// Whisper hears at most this much at once.
pub const MAX_UTTERANCE: Duration = Duration::from_secs(30);

impl SpeechConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        if !(0.0..=1.0).contains(&self.min_confidence)
            || !(0.0..=1.0).contains(&self.match_threshold)
        {
            bail!("speech.min_confidence and speech.match_threshold must be 0 to 1");
        }
        if self.max_utterance_s.is_zero() || self.max_utterance_s > MAX_UTTERANCE {
            bail!("speech.max_utterance_s must be 1 to 30 (Whisper hears 30 s at once)");
        }
        if self.end_silence_ms < Duration::from_millis(100) || self.timeout_ms.is_zero() {
            bail!("speech.end_silence_ms must be at least 100 and speech.timeout_ms at least 1");
        }
        Ok(())
    }
}
