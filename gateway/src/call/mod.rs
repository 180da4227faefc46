//! Calls: one task per call joins SIP signalling, its media and the IVR interpreter, and carries
//! out what the interpreter asks (play, listen, record, submit, look up, transfer, hang up).
//!
//! The protocol and flow logic stay in their sans-IO cores ([`sip::Endpoint`],
//! [`media::rtp_session::RtpSession`], [`ivr_flows::Session`]); this module is the edge
//! that connects them with tokio, the store and the file system:
//!
//! - [`manager`]: takes SIP events from the [`crate::runtime::sip_transport::SipService`],
//!   admits or refuses new calls (capacity, shutdown) and routes every later event to its call's
//!   task.
//! - [`core`]: the sans-IO call core ([`core::CallCore`]): the call's phase, the interpreter,
//!   its timers and the DTMF merger, fed events with the time and handing out commands. No
//!   tokio, no files, no clock.
//! - [`session`]: the per-call task, the core's driver. It answers at once (the caller hears the
//!   greeting within one round trip), selects on SIP, media, store, agent-leg and timer inputs,
//!   hands each to the core and carries out its commands (media, store writes, SIP).
//! - [`events`]: the event and report types the call modules share (a leaf: no import circle).
//! - [`order`]: work orders from a call: the flow's `submit` slots, and the callback order a
//!   caller leaves by hanging up before the flow ended, so nobody who called is lost.
//! - [`tts`]: prompts that have text but no recording, spoken by espeak-ng and cached.
//! - [`bridge`]: transfer to an agent as a B2BUA (second leg, relayed audio, order draft).
//! - [`acd`]: agent queues, sans-IO (who waits, in what order, which agent rings for whom,
//!   positions and estimated waits); [`queues`]: the task that drives it for every call.
//! - [`feature`]: agents' feature codes (`*21` log in, `*22` log out), from their phones.
//! - [`dialer`]: outbound calls, sans-IO (when each is dialled, retries, calling hours);
//!   [`outbound`]: the task that drives it with the store, the API and the missed calls.
//! - [`webrtc`]: browser and app calls (`[webrtc]`, the live WebRTC calls, placing and ending
//!   them for the HTTP API); their task is [`session::run_webrtc`].
//! - [`cdr`]: one call detail record per call (outcome, orders, recording, RTP loss and jitter).
//! - [`config`]: the `[sip]`, `[media]`, `[calls]` and `[speech]` sections.

pub mod acd;
pub mod bridge;
pub mod cdr;
pub mod config;
pub mod core;
pub mod dialer;
pub mod events;
pub mod feature;
pub mod manager;
pub mod order;
pub mod outbound;
pub mod queues;
pub mod session;
#[cfg(test)]
mod sim;
pub mod tts;
pub mod webrtc;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::ivr::LiveFlows;
use crate::runtime::media_engine::MediaEngine;
use crate::runtime::prompt_cache::PromptCache;
use crate::runtime::rtp_socket::PortAllocator;
use crate::runtime::sip_transport::{Command, SipService};
use crate::store::Store;
use media::MediaSettings;

/// What calls need from the configuration, with what is resolved at start (directories, our
/// SIP URI); built once, in [`CallService::start`].
#[derive(Debug, Clone)]
pub struct CallSettings {
    pub entry_flow: String,
    pub max_calls: usize,
    pub recordings_dir: PathBuf,
    pub record_calls: bool,
    pub agents: BTreeMap<String, String>,
    pub transfer_timeout: Duration,
    pub callback_orders: bool,
    pub utc_offset: chrono::FixedOffset,
    pub media: MediaSettings,
    pub cdr_dir: PathBuf,
    /// Our SIP identity for legs we place (From of a transfer's INVITE).
    pub local_uri: String,
    /// Outbound calls: the trunk, our number, the ring timeout (`[calls.outbound]`).
    pub outbound: config::OutboundConfig,
    /// `local_uri`'s host, for the From of outbound calls (`sip:<caller_id>@<host>`).
    pub local_host: String,
}

/// Everything a call task shares with the others.
#[derive(Debug)]
pub struct Shared {
    pub settings: CallSettings,
    pub flows: Arc<LiveFlows>,
    pub store: Store,
    pub prompts: PromptCache,
    pub tts: tts::Tts,
    pub ports: Arc<PortAllocator>,
    /// The pacer threads carrying every call's RTP.
    pub media: Arc<MediaEngine>,
    pub sip: mpsc::Sender<Command>,
    pub cdr: cdr::CdrWriter,
    /// Speech recognition; `None` when off or without a model (calls take keys only).
    pub speech: Option<Arc<crate::speech::SpeechService>>,
    /// The agent queues with waiting (`[calls.queues]`).
    pub queues: queues::Queues,
    /// Outbound calls (`[calls.outbound]`): the missed calls' callbacks go here.
    pub outbound: outbound::Outbound,
    /// Browser and app calls (`[webrtc]`); `None` when off.
    pub webrtc: Option<webrtc::WebCalls>,
}

/// The running call service: SIP listening and the call manager.
#[derive(Debug)]
pub struct CallService {
    pub udp_addr: SocketAddr,
    pub tcp_addr: SocketAddr,
    /// The agent queues (for `GET /v1/queues`).
    pub queues: queues::Queues,
    /// Outbound calls (for `/v1/calls`).
    pub outbound: outbound::Outbound,
    /// Browser and app calls (for `/v1/calls/webrtc`), when `[webrtc] enabled`.
    pub webrtc: Option<webrtc::WebCalls>,
    stop: watch::Sender<bool>,
    manager: JoinHandle<()>,
    sip_task: JoinHandle<()>,
}

impl CallService {
    /// Bind SIP and start taking calls into `flows`.
    pub async fn start(
        config: &Config,
        flows: Arc<LiveFlows>,
        store: Store,
    ) -> anyhow::Result<CallService> {
        let recordings_dir = config.recordings_dir();
        std::fs::create_dir_all(&recordings_dir).with_context(|| {
            format!("cannot create recordings_dir {}", recordings_dir.display())
        })?;
        let mut settings = CallSettings {
            entry_flow: config.calls.entry_flow.clone(),
            max_calls: config.calls.max_calls,
            recordings_dir,
            record_calls: config.calls.record_calls,
            agents: config.calls.agents.clone(),
            transfer_timeout: config.calls.transfer_timeout_s.max(Duration::from_secs(1)),
            callback_orders: config.calls.callback_orders,
            utc_offset: config.node.utc_offset,
            cdr_dir: config.node.data_dir.join("cdr"),
            media: MediaSettings::from(&config.media),
            local_uri: String::new(),
            outbound: config.calls.outbound.clone(),
            local_host: String::new(),
        };
        // From the OS: branch ids, tags and Call-IDs must differ from one run to the next.
        let mut sip_settings = config.sip.settings(rand::random());
        sip_settings.registrar = config.sip.registrar()?;
        let sip = SipService::start(sip_settings.clone())
            .await
            .with_context(|| {
                format!(
                    "cannot listen for SIP on {} (UDP) / {} (TCP)",
                    config.sip.udp, config.sip.tcp
                )
            })?;
        settings.local_host = sip_settings
            .advertised_host
            .clone()
            .unwrap_or_else(|| sip.udp_addr.to_string());
        settings.local_uri = format!("sip:{}@{}", sip_settings.contact_user, settings.local_host);
        tracing::info!(udp = %sip.udp_addr, tcp = %sip.tcp_addr, "SIP calls: listening");
        let ports = PortAllocator::new(settings.media.rtp_ports.clone());
        let media = match config.media.rtp_sockets {
            config::RtpSockets::PerCall => {
                MediaEngine::new(config.media.pacer_threads, config.media.pacer_priority)
            }
            config::RtpSockets::Shared => MediaEngine::with_shared_sockets(
                config.media.pacer_threads,
                config.media.pacer_priority,
                &ports,
                settings.media.bind_ip,
            ),
        }
        .context("cannot start the media pacer threads")?;
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let queues = queues::Queues::start(config.calls.queue_settings(), config.node.utc_offset);
        let outbound = outbound::Outbound::start(
            config.calls.outbound.trunk.is_some().then(|| {
                config
                    .calls
                    .outbound
                    .dialer_settings(config.node.utc_offset)
            }),
            store.clone(),
            control_tx.clone(),
            queues.clone(),
        );
        queues.attach_outbound(outbound.clone());
        let webrtc = if config.webrtc.enabled {
            let settings = media::webrtc::WebRtcSettings::new(&settings.media.codecs)
                .context("cannot make the DTLS certificate for WebRTC calls")?;
            Some(webrtc::WebCalls::new(
                control_tx.clone(),
                settings,
                config.webrtc.clone(),
            )?)
        } else {
            None
        };
        let shared = Arc::new(Shared {
            webrtc: webrtc.clone(),
            outbound,
            ports,
            media,
            tts: tts::Tts::new(
                config.calls.tts_command.clone(),
                config.node.data_dir.join("tts-cache"),
            ),
            cdr: cdr::CdrWriter::new(settings.cdr_dir.clone()),
            settings,
            flows,
            store,
            prompts: PromptCache::new(),
            sip: sip.commands.clone(),
            speech: crate::speech::SpeechService::start(&config.speech),
            queues,
        });
        let (stop, stop_rx) = watch::channel(false);
        let queues = shared.queues.clone();
        let outbound = shared.outbound.clone();
        let manager = tokio::spawn(manager::run(
            shared, sip.events, stop_rx, control_tx, control_rx,
        ));
        Ok(CallService {
            udp_addr: sip.udp_addr,
            tcp_addr: sip.tcp_addr,
            queues,
            outbound,
            webrtc,
            stop,
            manager,
            sip_task: sip.task,
        })
    }

    /// Stop taking calls, end those in progress (callers hear BYE; callback orders are written)
    /// and wait for them, then stop SIP.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(Duration::from_secs(10), self.manager)
            .await
            .is_err()
        {
            tracing::warn!("calls did not end within 10 s of shutdown");
        }
        self.sip_task.abort();
    }
}
