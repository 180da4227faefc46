//! Configuration: one TOML file, every key overridable from the environment.
//!
//! `GATEWAY__SECTION__KEY=value` overrides `[section] key` (figment's `Env` provider split on
//! `__`). Secrets may be given inline or as `*_file` paths, which keeps them out of the config file
//! and out of `ps`. With no file at all the embedded defaults run a complete single node: SQLite in
//! `./data`, HTTP on 127.0.0.1:8080.
//!
//! Each section's typed configuration lives next to the component it configures and keeps its
//! one default there; [`Config`] only composes the sections, loads them and has each validate
//! itself once, at load. Values arrive typed (networks, codecs, addresses, durations), so no
//! component parses a configuration string again.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

pub use crate::api::channels::{
    ChannelsConfig, SmsConfig, SmsProviderConfig, WechatAccountConfig, WechatKind,
};
pub use crate::api::{ApiConfig, ApiKeyConfig, HttpConfig, WebConfig};
pub use crate::call::config::{CallsConfig, MediaConfig, SipConfig, SpeechConfig};
pub use crate::dispatch::DispatchConfig;
pub use crate::ivr::IvrConfig;
pub use crate::store::{RelatedOrdersConfig, StoreConfig, StoreKind};
pub use crate::telemetry::{LogConfig, LogFormat};
/// The one network type of the gateway's allow-lists (`sip.trunk_allow`, `allow_ips`).
pub use ipnet::IpNet;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
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
    pub webrtc: crate::call::webrtc::WebRtcConfig,
    pub speech: SpeechConfig,
    pub related: RelatedOrdersConfig,
}

/// `[node]`: this node's identity, and where its files live.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// 0 to 99, unique per node: it is part of every order number this node issues.
    pub id: u8,
    /// Offset of the hotline's local time, which decides the date in order numbers.
    #[serde(with = "utc_offset")]
    pub utc_offset: chrono::FixedOffset,
    /// Where the SQLite database, generated secrets and recordings live.
    pub data_dir: PathBuf,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            id: 1,
            utc_offset: chrono::FixedOffset::east_opt(8 * 3600).expect("+08:00 is an offset"),
            data_dir: PathBuf::from("./data"),
        }
    }
}

impl NodeConfig {
    fn validate(&self) -> anyhow::Result<()> {
        if self.id > adapters::order_number::MAX_NODE {
            bail!("node.id must be 0 to 99, got {}", self.id);
        }
        Ok(())
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
        Config::extract(figment.merge(Env::prefixed("GATEWAY__").split("__")))
    }

    /// Embedded defaults, then this TOML text (no environment): what a config file alone says.
    pub fn from_toml_str(text: &str) -> anyhow::Result<Config> {
        Config::extract(
            Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(text)),
        )
    }

    fn extract(figment: Figment) -> anyhow::Result<Config> {
        let config: Config = figment.extract().map_err(|e| {
            let all: Vec<String> = e.into_iter().map(|e| e.to_string()).collect();
            anyhow::anyhow!("invalid configuration: {}", all.join("; "))
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Every section checks what its types do not already guarantee.
    fn validate(&self) -> anyhow::Result<()> {
        self.node.validate()?;
        self.store.validate()?;
        self.dispatch.validate()?;
        self.media.validate()?;
        self.sip.validate()?;
        self.calls.validate()?;
        self.webrtc.validate()?;
        // A queue's agent named without `sip:` is one who registers: they must have a login.
        for (name, q) in &self.calls.queues {
            for agent in q.agents.iter().filter(|a| !a.contains(':')) {
                if !self.sip.agents.contains_key(agent) {
                    anyhow::bail!(
                        "calls.queues.{name}.agents: {agent:?} is neither a sip: URI nor an agent in [sip.agents]"
                    );
                }
            }
        }
        self.channels.validate()?;
        self.api.validate()?;
        self.speech.validate()?;
        self.web.validate()?;
        self.related.validate()?;
        Ok(())
    }

    pub fn upload_dir(&self) -> PathBuf {
        self.web
            .upload_dir
            .clone()
            .unwrap_or_else(|| self.node.data_dir.join("uploads"))
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

/// `node.utc_offset`: written `+08:00`.
mod utc_offset {
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(o: &chrono::FixedOffset, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(o)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<chrono::FixedOffset, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|_| D::Error::custom(format!("must look like +08:00, got {s:?}")))
    }
}

/// `*_ms` keys: a [`Duration`](std::time::Duration) written as whole milliseconds.
pub mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// `*_s` keys: a [`Duration`](std::time::Duration) written as whole seconds.
pub mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

/// Allow-lists of addresses (`203.0.113.7`, taken as `/32` or `/128`) and networks
/// (`203.0.113.0/24`, `2001:db8::/32`), written as strings.
pub mod ip_nets {
    use std::net::IpAddr;

    use ipnet::IpNet;
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serializer};

    /// An address or a network.
    pub fn parse(s: &str) -> Option<IpNet> {
        let s = s.trim();
        s.parse::<IpNet>()
            .ok()
            .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
    }

    /// Whether `ip` is in one of `nets`; an IPv4-mapped IPv6 address counts as its IPv4 address.
    pub fn contains(nets: &[IpNet], ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        nets.iter().any(|net| net.contains(&ip))
    }

    pub fn serialize<S: Serializer>(nets: &[IpNet], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(nets.iter().map(|n| n.to_string()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|s| {
                parse(s).ok_or_else(|| {
                    D::Error::custom(format!(
                        "{s:?} is not an address or network such as 203.0.113.0/24"
                    ))
                })
            })
            .collect()
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

    /// Text that is not TOML, or TOML of the wrong shape, is an error that says where; the fuzz
    /// target `config_toml` holds every input to this.
    #[test]
    fn malformed_text_is_refused_with_its_place() {
        assert_eq!(
            format!(
                "{:?}",
                Config::from_toml_str("").expect("empty is the defaults")
            ),
            format!("{:?}", Config::default())
        );
        for (toml, says) in [
            ("[node\nid = 1\n", "line 1"),
            ("[node]\nid = \n", "line 2"),
            ("[node]\nid = \"one\"\n", "node.id"),
            ("[node]\nid = 1\n[node]\nid = 2\n", "node"),
            ("node = 5\n", "node"),
            ("[media]\ncodecs = \"PCMU\"\n", "media.codecs"),
            ("[sip]\nsource_call_rate = -1\n", "sip.source_call_rate"),
            ("[dispatch]\ntimeout_ms = 18446744073709551616\n", "line 2"),
            ("\u{0}", "line 1"),
        ] {
            let e = Config::from_toml_str(toml).expect_err(toml).to_string();
            assert!(e.contains(says), "{toml:?}: {e}");
        }
    }

    #[test]
    fn values_arrive_typed_and_bad_ones_name_their_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("gateway.toml");
        std::fs::write(
            &file,
            "[node]\nutc_offset = \"+05:30\"\n[media]\ncodecs = [\"pcmu\"]\n\
             [sip]\ntrunk_allow = [\"10.0.0.1\", \"192.0.2.0/24\"]\n\
             [dispatch]\ntimeout_ms = 2500\n[channels.sms.aliyun]\nallow_ips = [\"::1\"]\n",
        )
        .expect("write");
        let c = Config::load(Some(&file)).expect("valid");
        assert_eq!(c.node.utc_offset.local_minus_utc(), 5 * 3600 + 30 * 60);
        assert_eq!(c.media.codecs, vec![media::Codec::Pcmu]);
        let nets: Vec<String> = c.sip.trunk_allow.iter().map(|n| n.to_string()).collect();
        assert_eq!(nets, ["10.0.0.1/32", "192.0.2.0/24"]);
        assert_eq!(
            c.dispatch.timeout_ms,
            std::time::Duration::from_millis(2500)
        );
        assert_eq!(c.channels.sms.aliyun.allow_ips[0].to_string(), "::1/128");

        for (toml, key, value) in [
            ("[media]\ncodecs = [\"G729\"]\n", "media.codecs", "G729"),
            ("[media]\ncodecs = []\n", "media.codecs", "at least one"),
            (
                "[sip]\ntrunk_allow = [\"10.0.0.0/33\"]\n",
                "sip.trunk_allow",
                "10.0.0.0/33",
            ),
            (
                "[channels.sms.tencent]\nallow_ips = [\"nope\"]\n",
                "channels.sms.tencent.allow_ips",
                "nope",
            ),
            ("[node]\nutc_offset = \"8h\"\n", "node.utc_offset", "8h"),
            (
                "[web]\nallowed_types = [\"image/gif\"]\n",
                "web.allowed_types",
                "image/gif",
            ),
            (
                "[calls.agents]\ngeneral = \"sips:agent@pbx\"\n",
                "calls.agents.general",
                "not a sip: URI",
            ),
            (
                "[calls.agents]\ngeneral = \"sip:agent@pbx:99999\"\n",
                "calls.agents.general",
                "port",
            ),
            (
                "[speech]\nmax_utterance_s = 31\n",
                "speech.max_utterance_s",
                "1 to 30",
            ),
            (
                "[calls.queues.general]\nagents = []\n",
                "calls.queues.general",
                "at least one agent",
            ),
            (
                "[calls.queues.general]\nagents = [\"agent@pbx\"]\n",
                "calls.queues.general",
                "neither a sip: URI nor an agent in [sip.agents]",
            ),
            ("[sip.agents.1001]\n", "sip.agents.1001", "password_file"),
            (
                "[sip.agents.\"a b\"]\npassword = \"x\"\n",
                "sip.agents",
                "a user name of letters",
            ),
            (
                "[calls.queues.general]\nagents = [\"sip:a@pbx\"]\nannounce_every_s = 5\n",
                "calls.queues.general",
                "at least 10",
            ),
            (
                "[calls.queues.general]\nagents = [\"sip:a@pbx\"]\nmax_wait_s = 0\n",
                "calls.queues.general",
                "at least 1",
            ),
            (
                "[webrtc]\nice_transport_policy = \"relay\"\n",
                "webrtc.ice_transport_policy",
                "needs a turn: server",
            ),
            (
                "[[webrtc.ice_servers]]\nurls = [\"http://turn\"]\n",
                "webrtc.ice_servers[0].urls",
                "not a stun:, turn: or turns: URL",
            ),
            (
                "[[webrtc.ice_servers]]\nurls = [\"turn:t\"]\nauth_secret = \"s\"\ncredential = \"c\"\n",
                "webrtc.ice_servers[0]",
                "drop username and credential",
            ),
        ] {
            std::fs::write(&file, toml).expect("write");
            let e = Config::load(Some(&file)).expect_err(toml).to_string();
            assert!(e.contains(key) && e.contains(value), "{toml}: {e}");
        }
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
