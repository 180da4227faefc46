//! A browser's or app's call: answer its offer on a UDP port of its own, then run the entry
//! flow exactly as a phone call runs it (the same [`super::Call`] task and core).
//!
//! The leg has no SIP dialog: the core's requests to the caller's dialog are carried out here
//! ([`WebLink::hang_up`] ends the call on our side; the browser hears the DTLS close), the
//! browser's DELETE arrives as the dialog's end, and a browser that vanishes is the media's
//! (ICE consent lost: [`media::webrtc::TransportOutput::Gone`], or no RTP for
//! `media.media_timeout_s`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use super::super::Shared;
use super::super::events::{CallInput, Control, Incoming};
use super::super::webrtc::{CallView, Offer, PlaceError, Placed, WebCalls};
use super::{Answered, FlowStart, assemble};
use crate::runtime::rtp_socket::DriverOptions;
use adapters::normalize::mask::mask_name;
use media::rtp_session::{RtpConfig, RtpSession};
use media::sdp::OriginVersioning;
use media::webrtc::WebRtcTransport;
use sip::CallId;

/// What a WebRTC call's task keeps of its leg.
pub(in crate::call) struct WebLink {
    pub(in crate::call) id: String,
    /// The app user the token named (the orders' citizen reference).
    pub(in crate::call) user: Option<String>,
    calls: WebCalls,
    view: watch::Sender<CallView>,
}

impl WebLink {
    /// Show the page what the gateway says now.
    pub(super) fn saying(&self, text: Option<String>) {
        self.view.send_if_modified(|v| {
            let changed = v.saying != text;
            v.saying = text;
            changed
        });
    }

    /// Show the page the orders filed so far.
    pub(super) fn orders(&self, orders: &[String]) {
        self.view.send_if_modified(|v| {
            let changed = v.orders != orders;
            v.orders = orders.to_vec();
            changed
        });
    }

    /// The call has ended: it leaves the table (the page's next look is a 404).
    pub(super) fn ended(&self) {
        self.calls.remove(&self.id);
    }
}

/// The task of one WebRTC call (spawned by the call manager with the call's id and inputs).
pub async fn run_webrtc(
    shared: Arc<Shared>,
    call: CallId,
    offer: Offer,
    rx: mpsc::UnboundedReceiver<CallInput>,
    control: mpsc::UnboundedSender<Control>,
) {
    let span = tracing::info_span!(
        "call",
        call = call.0,
        channel = "webrtc",
        user = %offer.user.as_deref().map(mask_name).unwrap_or_default(),
    );
    async move {
        let Offer {
            sdp,
            user,
            nonce,
            reply,
        } = offer;
        let Some(calls) = shared.webrtc.clone() else {
            let _ = reply.send(Err(PlaceError::Stopped));
            return;
        };
        let (answered, placed) = match answer(&shared, &calls, &sdp) {
            Ok(a) => a,
            Err(e) => {
                tracing::info!(error = %e, "WebRTC offer refused");
                metrics::counter!("gateway_calls_total", "outcome" => "rejected").increment(1);
                let _ = reply.send(Err(e));
                return;
            }
        };
        let id = placed.id.clone();
        let (view_tx, view_rx) = watch::channel(CallView {
            state: "in_call",
            ..CallView::default()
        });
        calls.insert(&id, call, nonce, view_rx);
        if reply.send(Ok(placed)).is_err() {
            // The HTTP request went away before the answer: nobody can reach this call.
            tracing::info!("the browser left before the answer");
            calls.remove(&id);
            let _ = answered.media.close().await;
            return;
        }
        tracing::info!(webrtc_id = %id, codec = answered.codec.name(), "WebRTC call answered");
        let incoming = Incoming {
            call,
            sip_call_id: format!("webrtc-{id}"),
            from: String::new(),
            to: String::new(),
            sdp_offer: None,
            source: answered.local_rtp,
            transport: sip::Transport::Udp,
        };
        let start = FlowStart {
            flow: shared.settings.entry_flow.clone(),
            inputs: BTreeMap::new(),
            called: "webrtc".into(),
            ack_wait: Duration::ZERO,
        };
        let (mut c, backend_rx) =
            assemble(shared, incoming, String::new(), control, answered, start);
        c.webrtc = Some(WebLink {
            id,
            user,
            calls,
            view: view_tx,
        });
        c.run(rx, backend_rx).await;
    }
    .instrument(span)
    .await
}

/// Bind the call's port, answer the offer and start its media.
fn answer(
    shared: &Arc<Shared>,
    calls: &WebCalls,
    sdp: &str,
) -> Result<(Answered, Placed), PlaceError> {
    let media_settings = &shared.settings.media;
    // A port of its own even when the engine shares sockets: ICE and DTLS are per peer.
    let ports = shared
        .ports
        .bind(media_settings.bind_ip)
        .map_err(|e| PlaceError::NoPort(e.to_string()))?;
    let local = ports
        .local_rtp()
        .map_err(|e| PlaceError::NoPort(e.to_string()))?;
    let advertised = SocketAddr::new(
        calls.config.advertised_ip.unwrap_or(local.ip()),
        local.port(),
    );
    let accepted =
        WebRtcTransport::accept(Instant::now(), sdp, &calls.settings, local, advertised)?;
    let session = RtpSession::new(
        RtpConfig::new(media_settings, &accepted.negotiated, &mut rand::rng()),
        Instant::now(),
        std::time::SystemTime::now(),
    );
    let media = shared
        .media
        .spawn_webrtc(
            ports,
            session,
            DriverOptions {
                inband_dtmf: media_settings.inband_dtmf,
                ..DriverOptions::default()
            },
            accepted.transport,
        )
        .map_err(|e| PlaceError::NoPort(e.to_string()))?;
    let id = format!("w-{:016x}", rand::random::<u64>());
    let answered = Answered {
        media,
        codec: accepted.negotiated.codec,
        sdp_origin: OriginVersioning::new(0),
        local_rtp: local,
    };
    Ok((
        answered,
        Placed {
            id,
            answer: accepted.answer,
        },
    ))
}
