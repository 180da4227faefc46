//! Browser and app calls (WebRTC): the `[webrtc]` section, the table of live WebRTC calls and
//! the handle the HTTP API places and ends them through.
//!
//! A WebRTC call is a call like a phone's: the same call task, core, flows, speech, queues,
//! transfer to SIP agents, call detail records and `calls.max_calls`. What differs is the leg:
//! signalling is one HTTP exchange (WHIP-shaped, RFC 9725: the browser POSTs its whole offer
//! and gets the whole answer; ICE-lite, no trickle) instead of SIP, and the media goes through
//! [`media::webrtc::WebRtcTransport`] (ICE, DTLS-SRTP) on the call's own UDP port. The call's
//! task is [`super::session::run_webrtc`]; this module is the part the API sees.
//!
//! Who may call: the holder of a call token ([`crate::api::webrtc`] issues and checks them).
//! The token's nonce is kept with the call, so only the browser that placed a call can end it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use super::events::Control;
use media::webrtc::{OfferError, WebRtcSettings};
use sip::CallId;

/// `[webrtc]`: browser and app calls.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebRtcConfig {
    /// Take WebRTC calls at `POST /v1/calls/webrtc` (and serve the `/call` page).
    pub enabled: bool,
    /// The address written in the answer's ICE candidate, for a gateway behind NAT (its
    /// public address); default `media.bind_ip`. The port is the call's own, from the RTP range.
    pub advertised_ip: Option<IpAddr>,
    /// How long a call token is good for: a call must be placed within this time.
    pub token_ttl_s: u64,
    /// Which candidates browsers may use (`RTCPeerConnection`'s `iceTransportPolicy`): `all`,
    /// or `relay` to send every call through the TURN servers below.
    pub ice_transport_policy: IceTransportPolicy,
    /// STUN/TURN servers handed to browsers with their token (`RTCPeerConnection`'s
    /// `iceServers`), e.g. a coturn for callers whose networks block UDP.
    pub ice_servers: Vec<IceServer>,
}

impl Default for WebRtcConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            advertised_ip: None,
            token_ttl_s: 300,
            ice_transport_policy: IceTransportPolicy::All,
            ice_servers: Vec::new(),
        }
    }
}

impl WebRtcConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        for (i, s) in self.ice_servers.iter().enumerate() {
            let at = format!("webrtc.ice_servers[{i}]");
            if s.urls.is_empty() {
                anyhow::bail!("{at}.urls: at least one stun:, turn: or turns: URL");
            }
            if let Some(u) = s.urls.iter().find(|u| {
                !["stun:", "stuns:", "turn:", "turns:"]
                    .iter()
                    .any(|p| u.starts_with(p))
            }) {
                anyhow::bail!("{at}.urls: {u:?} is not a stun:, turn: or turns: URL");
            }
            let shared = s.auth_secret.is_some() || s.auth_secret_file.is_some();
            if shared && (s.username.is_some() || s.credential.is_some()) {
                anyhow::bail!(
                    "{at}: auth_secret_file makes a credential per call token; drop username and credential"
                );
            }
        }
        if self.ice_transport_policy == IceTransportPolicy::Relay
            && !self
                .ice_servers
                .iter()
                .any(|s| s.urls.iter().any(|u| u.starts_with("turn")))
        {
            anyhow::bail!(
                "webrtc.ice_transport_policy = \"relay\" needs a turn: server in [[webrtc.ice_servers]]"
            );
        }
        Ok(())
    }
}

/// `[webrtc] ice_transport_policy`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum IceTransportPolicy {
    All,
    Relay,
}

/// One entry of `[[webrtc.ice_servers]]`: what the browser's `RTCIceServer` gets, with either
/// fixed credentials or coturn's shared secret (`use-auth-secret`, `static-auth-secret`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    /// The TURN server's shared secret (coturn's `static-auth-secret`): each call token comes
    /// with a credential of its own that expires with it, so no lasting password is handed out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_secret_file: Option<std::path::PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_secret: Option<String>,
}

/// The TURN REST API's credential (draft-uberti-behave-turn-rest, as coturn's `use-auth-secret`
/// checks it): the username is `<expiry unix time>:<tag>`, the password is
/// base64(HMAC-SHA1(secret, username)). The TURN server refuses it after `expires`.
pub fn turn_credential(secret: &str, expires: i64, tag: &str) -> (String, String) {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let username = format!("{expires}:{tag}");
    let mut mac = <Hmac<sha1::Sha1> as Mac>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(username.as_bytes());
    let password = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    (username, password)
}

/// What the page of a WebRTC call shows, as the call goes on (`GET /v1/calls/webrtc/{id}`).
#[derive(Debug, Clone, Serialize, Default, PartialEq, Eq)]
pub struct CallView {
    /// `in_call`: an ended call leaves the table at once (its `GET` is 404).
    pub state: &'static str,
    /// The text of what the gateway is saying now (the prompt playing), when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saying: Option<String>,
    /// Orders the call has filed so far.
    pub orders: Vec<String>,
}

/// A WebRTC offer on its way to the call manager.
#[derive(Debug)]
pub struct Offer {
    pub sdp: String,
    /// The app user the token names (the order's citizen reference), if any.
    pub user: Option<String>,
    /// The token's nonce: whoever ends the call must hold the same token.
    pub nonce: String,
    pub reply: oneshot::Sender<Result<Placed, PlaceError>>,
}

/// An answered offer.
#[derive(Debug)]
pub struct Placed {
    pub id: String,
    pub answer: String,
}

/// Why an offer did not become a call.
#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    #[error(transparent)]
    Offer(#[from] OfferError),
    #[error("the hotline is at capacity")]
    Busy,
    #[error("no media port for the call: {0}")]
    NoPort(String),
    #[error("calls are not being taken")]
    Stopped,
}

/// A live WebRTC call in the table.
#[derive(Debug)]
struct Entry {
    call: CallId,
    nonce: String,
    view: watch::Receiver<CallView>,
}

/// The live WebRTC calls and the way to place one. Cheap to clone.
#[derive(Debug, Clone)]
pub struct WebCalls {
    control: mpsc::UnboundedSender<Control>,
    calls: Arc<Mutex<HashMap<String, Entry>>>,
    /// The DTLS certificate and codecs every call shares.
    pub(super) settings: Arc<WebRtcSettings>,
    pub config: WebRtcConfig,
    /// Each of `config.ice_servers`' shared secret, read once at start.
    turn_secrets: Arc<Vec<Option<String>>>,
}

/// Why a hang-up was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum HangUpError {
    NotFound,
    /// Another token than the one that placed the call.
    NotYours,
}

impl WebCalls {
    pub(super) fn new(
        control: mpsc::UnboundedSender<Control>,
        settings: WebRtcSettings,
        config: WebRtcConfig,
    ) -> anyhow::Result<Self> {
        let turn_secrets = config
            .ice_servers
            .iter()
            .enumerate()
            .map(|(i, s)| {
                crate::config::secret(&s.auth_secret, &s.auth_secret_file)
                    .map_err(|e| anyhow::anyhow!("webrtc.ice_servers[{i}]: {e:#}"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            control,
            calls: Arc::default(),
            settings: Arc::new(settings),
            config,
            turn_secrets: Arc::new(turn_secrets),
        })
    }

    /// The `iceServers` and `iceTransportPolicy` for a browser whose token expires at
    /// `expires` (unix time): TURN servers with a shared secret get a credential that expires
    /// with the token.
    pub fn ice_for(&self, expires: i64) -> serde_json::Value {
        // As the browser's RTCIceServer: the config's entry without its secret, with a
        // credential made from the secret where there is one.
        let servers: Vec<IceServer> = self
            .config
            .ice_servers
            .iter()
            .zip(self.turn_secrets.iter())
            .map(|(s, secret)| {
                let (username, credential) = match secret {
                    Some(secret) => {
                        let (u, c) = turn_credential(secret, expires, "12345");
                        (Some(u), Some(c))
                    }
                    None => (s.username.clone(), s.credential.clone()),
                };
                IceServer {
                    urls: s.urls.clone(),
                    username,
                    credential,
                    auth_secret_file: None,
                    auth_secret: None,
                }
            })
            .collect();
        serde_json::json!({
            "ice_servers": servers,
            "ice_transport_policy": self.config.ice_transport_policy,
        })
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Place a call for this offer: the answer and the call's id, once its media is set up.
    pub async fn place(
        &self,
        sdp: String,
        user: Option<String>,
        nonce: String,
    ) -> Result<Placed, PlaceError> {
        // A refused offer never reaches the manager, so it never holds a line, even for the
        // moment its task would take to end (a browser retrying at once is not told "busy").
        media::webrtc::check_offer(&sdp, &self.settings).map_err(PlaceError::Offer)?;
        let (reply, rx) = oneshot::channel();
        let offer = Offer {
            sdp,
            user,
            nonce,
            reply,
        };
        self.control
            .send(Control::WebRtc(Box::new(offer)))
            .map_err(|_| PlaceError::Stopped)?;
        rx.await.map_err(|_| PlaceError::Stopped)?
    }

    /// A call's task has its media: it is in the table from now on.
    pub(super) fn insert(
        &self,
        id: &str,
        call: CallId,
        nonce: String,
        view: watch::Receiver<CallView>,
    ) {
        self.table()
            .insert(id.to_owned(), Entry { call, nonce, view });
    }

    /// The call has ended.
    pub(super) fn remove(&self, id: &str) {
        self.table().remove(id);
    }

    /// What the call's page shows; `None` when no such call is live.
    pub fn view(&self, id: &str, nonce: &str) -> Result<CallView, HangUpError> {
        let table = self.table();
        let e = table.get(id).ok_or(HangUpError::NotFound)?;
        if e.nonce != nonce {
            return Err(HangUpError::NotYours);
        }
        Ok(e.view.borrow().clone())
    }

    /// End the call `id` placed with the token whose nonce is `nonce` (the browser's DELETE).
    pub fn hang_up(&self, id: &str, nonce: &str) -> Result<(), HangUpError> {
        let call = {
            let table = self.table();
            let e = table.get(id).ok_or(HangUpError::NotFound)?;
            if e.nonce != nonce {
                return Err(HangUpError::NotYours);
            }
            e.call
        };
        let _ = self.control.send(Control::EndWebRtc(call));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_turn_credential_is_the_hmac_of_its_username_and_changes_with_expiry_and_secret() {
        let (u, c) = turn_credential("s3cret", 1_800_000_000, "12345");
        assert_eq!(u, "1800000000:12345");
        // HMAC-SHA1("s3cret", "1800000000:12345"), computed independently with
        // `printf %s 1800000000:12345 | openssl dgst -sha1 -hmac s3cret -binary | base64`.
        assert_eq!(c, "g5FRheh2jePCjHh4Ajd1iOTcpEw=");
        assert_ne!(turn_credential("s3cret", 1_800_000_001, "12345").1, c);
        assert_ne!(turn_credential("other", 1_800_000_000, "12345").1, c);
    }
}
