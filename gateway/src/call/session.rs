//! One call: the task that joins its SIP dialog, its media and its IVR session.
//!
//! The task answers the INVITE at once with our SDP (no ringing: the greeting starts within one
//! round trip), starts the interpreter, and then waits on whatever comes first: a SIP event for
//! the call, a media event (caller frames, digits, the end of a prompt, a media timeout), a
//! result from the store, or the interpreter's next timer. Each is turned into an
//! [`ivr_flows::Event`] and the interpreter's actions are carried out in order. The interpreter
//! gets the call's own clock (milliseconds since answer), so its timers mean the same here as in
//! `gateway flows simulate`.
//!
//! Digits come from three paths (RFC 4733 events, in-band tones, SIP INFO) and go through one
//! [`DtmfMerger`], so a trunk that sends a key both ways is heard once.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::acd::Ticket;
use super::queues::QueueNews;
use adapters::OrderNumber;
use adapters::normalize::mask::mask_phone;
use adapters::work_order::{Recording, TranscriptSegment};
use chrono::{DateTime, Utc};
use ivr_flows::{Event, Session};
use media::prompt::{EncodedPrompt, PlayItem, Player};
use media::rtp_session::{RtpConfig, RtpSession};
use media::sdp::{self, Negotiated, OriginVersioning, SessionDescription};
use media::{Codec, Frame};
use tokio::sync::mpsc;
use tracing::Instrument;

use super::Shared;
use super::bridge::{self, AgentLeg, AgentTarget};
use super::cdr::{self, CallFacts, CallRecord};
use super::core::{ACK_WAIT, CallCommand, CallCore, CoreSettings, Output, StoreResult};
use super::events::{BridgeFigures, CallInput, Control, Incoming, LegInput, LegState, RtpFigures};
use super::order::{self, CallContext};
use crate::runtime::recorder::Recorder;
use crate::runtime::rtp_socket::{DriverOptions, MediaCommand, MediaEvent, MediaHandle};
use crate::runtime::sip_transport::Command;
use sip::{CallEvent, OutgoingCall};

mod outbound_leg;
mod webrtc_leg;
pub use outbound_leg::run_outbound;
pub use webrtc_leg::run_webrtc;

/// The user part of a SIP or tel URI: `sip:13800138000@host;user=phone` -> `13800138000`.
pub fn uri_user(uri: &str) -> String {
    let uri = uri.trim().trim_start_matches('<').trim_end_matches('>');
    let rest = uri
        .strip_prefix("sips:")
        .or_else(|| uri.strip_prefix("sip:"))
        .or_else(|| uri.strip_prefix("tel:"))
        .unwrap_or(uri);
    let user = rest.split(['@', ';', '?']).next().unwrap_or_default();
    user.to_owned()
}

/// Results of work done off the call task.
#[derive(Debug)]
enum Backend {
    Store(StoreResult),
}

/// A voice message being recorded (its length limit is the core's timer).
struct ActiveRecording {
    recorder: Recorder,
    path: PathBuf,
}

/// The call task's state: the [`CallCore`] that decides, and the I/O it decides about.
struct Call {
    shared: Arc<Shared>,
    incoming: Incoming,
    caller: String,
    started: Instant,
    started_at: DateTime<Utc>,
    core: CallCore,
    media: MediaHandle,
    codec: Codec,
    sdp_origin: OriginVersioning,
    local_rtp: SocketAddr,
    flows_dir: PathBuf,
    recording: Option<ActiveRecording>,
    call_recorder: Option<(Recorder, PathBuf)>,
    recordings: Vec<Recording>,
    speech: Vec<TranscriptSegment>,
    /// Hears spoken answers (VAD, recognizer pool); `None`: keys only.
    listener: Option<crate::speech::Listener>,
    backend_tx: mpsc::UnboundedSender<Backend>,
    transfer_to: Option<String>,
    /// The agent leg of a transfer in progress.
    agent: Option<AgentLeg>,
    /// Figures of the bridge once the agent leg has ended.
    bridge: Option<BridgeFigures>,
    control: mpsc::UnboundedSender<Control>,
    /// Whether the media driver hands us the caller's frames (see [`Call::sync_frame_events`]).
    frame_events: bool,
    /// Frames per batch we asked the media for (see [`MediaCommand::FrameBatch`]).
    frame_batch: usize,
    /// Waiting in an agent queue: the ticket, the queue's news and what the agent is told.
    queued: Option<QueueWait>,
    /// The queue ticket of the agent call in progress (the queue hears when it ends).
    queue_call: Option<Ticket>,
    /// An outbound call's job: it hears how the call ended; cancelling it hangs up.
    outbound: Option<outbound_leg::OutboundLink>,
    /// A browser's or app's call: its leg has no SIP dialog (see [`webrtc_leg`]).
    webrtc: Option<webrtc_leg::WebLink>,
}

/// A call's place in an agent queue.
struct QueueWait {
    ticket: Ticket,
    /// The queue and the caller's priority in it (a callback keeps both).
    queue: String,
    priority: u8,
    news: mpsc::UnboundedReceiver<QueueNews>,
    /// The flow's context for the agent (as a plain transfer passes it).
    context: BTreeMap<String, String>,
}

/// The next news for a call waiting in a queue (never, for one that is not).
async fn next_news(q: &mut Option<QueueWait>) -> Option<QueueNews> {
    match q.as_mut() {
        Some(w) => w.news.recv().await,
        None => std::future::pending().await,
    }
}

/// Build the answer for an offer; `Err(status)` is the SIP status to refuse it with.
pub(super) fn answer_offer(
    offer: &[u8],
    prefs: &[Codec],
    local: SocketAddr,
) -> Result<(SessionDescription, Negotiated), u16> {
    let text = std::str::from_utf8(offer).map_err(|_| 400u16)?;
    let parsed = SessionDescription::parse(text).map_err(|_| 400u16)?;
    let answer = sdp::negotiate(&parsed, prefs, local.ip(), local.port()).map_err(|_| 488u16)?;
    Ok((answer.sdp, answer.media))
}

/// The call task. Ends when SIP reports the call terminated.
pub async fn run(
    shared: Arc<Shared>,
    incoming: Incoming,
    rx: mpsc::UnboundedReceiver<CallInput>,
    control: mpsc::UnboundedSender<Control>,
) {
    let caller = uri_user(&incoming.from);
    let span = tracing::info_span!(
        "call",
        call = incoming.call.0,
        sip_call_id = %incoming.sip_call_id,
        caller = %mask_phone(&caller),
    );
    async move {
        let sip = shared.sip.clone();
        let call = incoming.call;
        match setup(Arc::clone(&shared), incoming, caller, control).await {
            Ok((c, backend_rx)) => c.run(rx, backend_rx).await,
            Err(status) => {
                metrics::counter!("gateway_calls_total", "outcome" => "rejected").increment(1);
                tracing::info!(status, "call refused");
                let _ = sip.send(Command::Reject { call, status }).await;
                // Wait for SIP to finish the transaction so the manager drops the route.
                let mut rx = rx;
                while let Some(ev) = rx.recv().await {
                    if matches!(ev, CallInput::Sip(CallEvent::CallTerminated { .. })) {
                        break;
                    }
                }
            }
        }
    }
    .instrument(span)
    .await;
}

/// Caller frames per hand-over while the call only listens or records: 80 ms, so speech is
/// noticed (barge-in) at most 60 ms later than frame by frame, and the call task wakes 12.5
/// times a second instead of 50.
const LISTEN_FRAME_BATCH: usize = 4;

type Setup = (Call, mpsc::UnboundedReceiver<Backend>);

async fn setup(
    shared: Arc<Shared>,
    incoming: Incoming,
    caller: String,
    control: mpsc::UnboundedSender<Control>,
) -> Result<Setup, u16> {
    let media_settings = &shared.settings.media;
    let ports = shared
        .media
        .open(&shared.ports, media_settings.bind_ip)
        .map_err(|e| {
            tracing::warn!(error = %e, "no RTP port for the call");
            503u16
        })?;
    let local_rtp = ports.local_rtp().map_err(|_| 503u16)?;
    let (mut answer, negotiated) = match &incoming.sdp_offer {
        Some(offer) => answer_offer(offer, &media_settings.codecs, local_rtp)?,
        None => {
            // Late offer (RFC 3261 13.2.1): we offer in the 200; the answer comes in the ACK,
            // which the endpoint does not hand up, so we send to where media comes from
            // (symmetric RTP latches on the caller's first packet).
            let codec = *media_settings.codecs.first().ok_or(503u16)?;
            let offer = sdp::offer(
                &media_settings.codecs,
                media_settings.telephone_event_pt,
                local_rtp.ip(),
                local_rtp.port(),
            );
            let negotiated = Negotiated {
                codec,
                payload_type: codec.payload_type(),
                telephone_event: Some(media_settings.telephone_event_pt),
                remote: None,
                ptime: Some(20),
                remote_direction: sdp::Direction::SendRecv,
                local_direction: sdp::Direction::SendRecv,
                media_index: 0,
            };
            (offer, negotiated)
        }
    };
    let mut sdp_origin = OriginVersioning::new(rand::random::<u32>().into());
    sdp_origin.stamp(&mut answer);
    let session = RtpSession::new(
        RtpConfig::new(media_settings, &negotiated, &mut rand::rng()),
        Instant::now(),
        std::time::SystemTime::now(),
    );
    let media = shared
        .media
        .spawn(
            ports,
            session,
            DriverOptions {
                inband_dtmf: media_settings.inband_dtmf,
                ..DriverOptions::default()
            },
        )
        .map_err(|_| 503u16)?;
    if shared
        .sip
        .send(Command::Answer {
            call: incoming.call,
            sdp: answer.to_string().into_bytes(),
        })
        .await
        .is_err()
    {
        return Err(503);
    }
    let called = uri_user(&incoming.to);
    let answered = Answered {
        media,
        codec: negotiated.codec,
        sdp_origin,
        local_rtp,
    };
    let start = FlowStart {
        flow: shared.settings.entry_flow.clone(),
        inputs: BTreeMap::new(),
        called,
        ack_wait: ACK_WAIT,
    };
    tracing::info!(codec = negotiated.codec.name(), remote = ?negotiated.remote, "call answered");
    Ok(assemble(shared, incoming, caller, control, answered, start))
}

/// A call's media once it is answered (by us, or by the citizen on an outbound call).
struct Answered {
    media: MediaHandle,
    codec: Codec,
    sdp_origin: OriginVersioning,
    local_rtp: SocketAddr,
}

/// Which flow an answered call runs, with what.
struct FlowStart {
    flow: String,
    /// The flow's `inputs:` (an outbound call's `vars`).
    inputs: BTreeMap<String, String>,
    /// `called` for the flow.
    called: String,
    /// How long the flow waits for the ACK (none on an outbound call: ours is sent).
    ack_wait: Duration,
}

/// The call task's state for an answered call: its flow session, core, recorder and listener.
fn assemble(
    shared: Arc<Shared>,
    incoming: Incoming,
    caller: String,
    control: mpsc::UnboundedSender<Control>,
    answered: Answered,
    start: FlowStart,
) -> Setup {
    let (backend_tx, backend_rx) = mpsc::unbounded_channel();
    let set = shared.flows.current();
    let flows_dir = set
        .dir()
        .map(|d| d.to_path_buf())
        .unwrap_or_else(|| shared.flows.status().dir);
    let ivr = Session::new(set, &start.flow).and_then(|mut s| {
        if start.inputs.is_empty() {
            return Some(s);
        }
        s.set_inputs(&start.inputs)
            .map_err(|e| tracing::error!(flow = %start.flow, error = %e, "the flow's inputs do not fit: hung up"))
            .ok()
            .map(|()| s)
    });
    let media_settings = &shared.settings.media;
    let core = CallCore::new(
        Instant::now(),
        ivr,
        Event::CallStarted {
            caller: caller.clone(),
            called: start.called,
            local_time: local_time(&shared.settings.utc_offset),
        },
        CoreSettings {
            ack_wait: start.ack_wait,
            transfer_timeout: shared.settings.transfer_timeout,
            dtmf_merge_window: media_settings.dtmf_merge_window,
            recording_notice: shared.settings.record_calls,
        },
    );
    if !core.has_flow() {
        tracing::error!(flow = %start.flow, "no such flow: the call is hung up");
    }
    let call_recorder = if shared.settings.record_calls {
        let path = shared
            .settings
            .recordings_dir
            .join(format!("call-{}.wav", file_stem(&incoming.sip_call_id)));
        Recorder::create(&path, Duration::from_secs(4 * 3600))
            .map(|r| (r, path))
            .map_err(|e| tracing::warn!(error = %e, "call recording not started"))
            .ok()
    } else {
        None
    };
    metrics::counter!("gateway_calls_total", "outcome" => "answered").increment(1);
    let listener = shared.speech.as_ref().and_then(|s| s.listener());
    let call = Call {
        codec: answered.codec,
        core,
        shared,
        incoming,
        caller,
        started: Instant::now(),
        started_at: Utc::now(),
        media: answered.media,
        sdp_origin: answered.sdp_origin,
        local_rtp: answered.local_rtp,
        flows_dir,
        recording: None,
        call_recorder,
        recordings: Vec::new(),
        speech: Vec::new(),
        listener,
        backend_tx,
        transfer_to: None,
        queued: None,
        queue_call: None,
        agent: None,
        bridge: None,
        control,
        frame_events: true,
        frame_batch: 1,
        outbound: None,
        webrtc: None,
    };
    (call, backend_rx)
}

/// A file-name-safe form of a Call-ID.
fn file_stem(call_id: &str) -> String {
    let s: String = call_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    format!("{}-{}", Utc::now().format("%Y%m%dT%H%M%S"), s)
}

/// A 1 kHz beep of 300 ms before a voice message.
fn beep(codec: Codec) -> EncodedPrompt {
    let pcm: Vec<i16> = (0..2400)
        .map(|i| {
            let t = i as f32 / 8000.0;
            (8000.0 * (2.0 * std::f32::consts::PI * 1000.0 * t).sin()) as i16
        })
        .collect();
    EncodedPrompt::encode(&pcm, codec)
}

impl Call {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    async fn sip(&mut self, cmd: Command) {
        if self.webrtc.is_some() {
            // The caller's leg is WebRTC: what the core asks of its dialog is done here; an
            // agent leg's commands still go to SIP.
            match cmd {
                Command::Hangup(call) if call == self.incoming.call => {
                    tracing::info!("WebRTC call hung up by the gateway");
                    self.core.handle_sip(
                        Instant::now(),
                        CallEvent::CallTerminated {
                            call,
                            reason: sip::TerminationReason::LocalHangup,
                        },
                    );
                    return;
                }
                Command::Answer { call, .. }
                | Command::Reject { call, .. }
                | Command::Info { call, .. }
                    if call == self.incoming.call =>
                {
                    return;
                }
                _ => {}
            }
        }
        if self.shared.sip.send(cmd).await.is_err() {
            tracing::debug!("SIP service gone");
        }
    }

    /// The sleep for the core's deadline; without one, an hour (the select has other inputs
    /// to wake on, and a far deadline keeps one `sleep_until` arm for both cases).
    fn timer(next: Option<Instant>) -> tokio::time::Instant {
        let next = next.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::time::Instant::from_std(next)
    }

    /// Wait on whatever comes first, hand it to the core, and carry out what it asks.
    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<CallInput>,
        mut backend: mpsc::UnboundedReceiver<Backend>,
    ) {
        let mut next = self.carry_out().await;
        while !self.core.sip_gone() {
            let deadline = Self::timer(next);
            tokio::select! {
                input = rx.recv() => match input {
                    None => break,
                    Some(CallInput::Sip(ev)) => self.core.handle_sip(Instant::now(), ev),
                    Some(CallInput::Shutdown) => self.core.handle_shutdown(Instant::now()),
                },
                ev = self.media.events.recv() => match ev {
                    Some(ev) => self.on_media(ev),
                    None => self.core.handle_media_failed(Instant::now()),
                },
                Some(Backend::Store(result)) = backend.recv() => {
                    self.core.handle_store(Instant::now(), result);
                    if let Some(w) = self.webrtc.as_ref() {
                        w.orders(&self.core.outcome().orders);
                    }
                }
                ev = bridge::next_leg(&mut self.agent) => self.on_leg(ev).await,
                news = next_news(&mut self.queued) => self.on_queue_news(news).await,
                () = tokio::time::sleep_until(deadline) => self.core.handle_timeout(Instant::now()),
                heard = crate::speech::next(&mut self.listener) => self.on_heard(heard),
                () = outbound_leg::cancelled(&mut self.outbound) => {
                    tracing::info!("outbound call cancelled: hanging up");
                    self.core.handle_shutdown(Instant::now());
                }
            }
            next = self.carry_out().await;
            self.sync_frame_events();
        }
        self.finish().await;
    }

    /// Carry out the core's commands, in order, until it has none left; then its deadline.
    async fn carry_out(&mut self) -> Option<Instant> {
        loop {
            match self.core.poll_output(Instant::now()) {
                Output::Command(cmd) => self.execute(cmd).await,
                Output::Timeout(next) => return next,
            }
        }
    }

    async fn execute(&mut self, cmd: CallCommand) {
        match cmd {
            CallCommand::Play {
                id,
                items,
                language,
                rate,
            } => {
                if let Some(w) = self.webrtc.as_ref() {
                    let text: Vec<&str> = items
                        .iter()
                        .filter_map(|i| match i {
                            ivr_flows::PlayItem::Audio { text, .. }
                            | ivr_flows::PlayItem::Tts { text } => Some(text.as_str()),
                            ivr_flows::PlayItem::Silence { .. } => None,
                        })
                        .collect();
                    w.saying((!text.is_empty()).then(|| text.concat()));
                }
                let player = self.player(id, items, language, rate).await;
                let _ = self.media.commands.send(MediaCommand::Play(player)).await;
            }
            CallCommand::StopPlayback => {
                let _ = self.media.commands.send(MediaCommand::StopPlayback).await;
            }
            CallCommand::HoldMusic => {
                let music = bridge::hold_music(self.codec);
                let _ = self.media.commands.send(MediaCommand::Play(music)).await;
            }
            CallCommand::Listen(speech) => {
                if let Some(l) = self.listener.as_mut() {
                    l.listen(speech);
                }
            }
            CallCommand::StopListening => {
                if let Some(l) = self.listener.as_mut() {
                    l.stop();
                }
            }
            CallCommand::StartRecording { max_seconds, beep } => {
                self.start_recording(max_seconds, beep).await
            }
            CallCommand::StopRecording => self.stop_recording(),
            CallCommand::Submit { seq, slots } => self.submit(seq, slots),
            CallCommand::Lookup { order_id } => self.lookup(order_id),
            CallCommand::Transfer {
                target,
                context,
                priority,
            } => self.transfer(target, context, priority).await,
            CallCommand::QueueCallback => {
                let result = self.queue_callback().await;
                self.core.handle_callback_result(Instant::now(), result);
            }
            CallCommand::LeaveQueue => {
                if let Some(q) = self.queued.take() {
                    tracing::info!("left the agent queue for another step");
                    self.shared.queues.left(q.ticket);
                }
            }
            CallCommand::Ringback(left) => {
                let tone = bridge::ringback(self.codec, left);
                let _ = self.media.commands.send(MediaCommand::Play(tone)).await;
            }
            CallCommand::CloseAgentLeg => self.close_agent_leg().await,
            CallCommand::DigitToAgent(d) => {
                if let Some(media) = self.bridged_media() {
                    let _ = media
                        .commands
                        .try_send(MediaCommand::Digit(d, Duration::from_millis(160)));
                }
            }
            CallCommand::Renegotiate(sdp) => self.reinvite(sdp).await,
            CallCommand::Hangup => self.sip(Command::Hangup(self.incoming.call)).await,
        }
    }

    async fn reinvite(&mut self, sdp_body: Option<Vec<u8>>) {
        let call = self.incoming.call;
        let Some(body) = sdp_body else {
            // An offerless re-INVITE asks for our offer: the current one will do.
            let mut offer = sdp::offer(
                &self.shared.settings.media.codecs,
                self.shared.settings.media.telephone_event_pt,
                self.local_rtp.ip(),
                self.local_rtp.port(),
            );
            self.sdp_origin.stamp(&mut offer);
            let sdp = offer.to_string().into_bytes();
            self.sip(Command::Answer { call, sdp }).await;
            return;
        };
        match answer_offer(&body, &[self.codec], self.local_rtp) {
            Ok((mut answer, negotiated)) => {
                tracing::info!(hold = negotiated.on_hold(), "re-INVITE");
                let _ = self
                    .media
                    .commands
                    .send(MediaCommand::Update(negotiated))
                    .await;
                self.sdp_origin.stamp(&mut answer);
                let sdp = answer.to_string().into_bytes();
                self.sip(Command::Answer { call, sdp }).await;
            }
            Err(status) => {
                tracing::info!(status, "re-INVITE refused; the call goes on unchanged");
                self.sip(Command::Reject {
                    call,
                    status: status.max(488),
                })
                .await;
            }
        }
    }

    fn on_media(&mut self, ev: MediaEvent) {
        match ev {
            MediaEvent::Frame { frame, .. } => {
                self.relay_to_agent(&frame);
                self.caller_audio(&frame, self.now_ms())
            }
            MediaEvent::Frames(frames) => {
                // The last frame has just played out; the earlier ones 20 ms apart before it.
                let now = self.now_ms();
                let n = frames.len() as u64;
                for (i, frame) in (0u64..).zip(frames.iter()) {
                    self.relay_to_agent(frame);
                    self.caller_audio(frame, now.saturating_sub((n - 1 - i) * 20));
                }
            }
            MediaEvent::Digit { digit, source, at } => self.core.handle_digit(at, digit, source),
            MediaEvent::PlaybackFinished { id } => {
                self.core.handle_prompt_finished(Instant::now(), id)
            }
            MediaEvent::MediaTimeout => self.core.handle_media_timeout(Instant::now()),
            MediaEvent::Latched(addr) => tracing::debug!(%addr, "media latched"),
            MediaEvent::Report { report, round_trip } => {
                tracing::trace!(?report, ?round_trip, "RTCP")
            }
        }
    }

    /// Ask for the caller's frames only while something uses them: a recording, a step that
    /// listens for speech, or an agent bridge; one by one only for a bridge (the agent hears
    /// them), in batches of [`LISTEN_FRAME_BATCH`] otherwise.
    fn sync_frame_events(&mut self) {
        let bridged = self.bridged_media().is_some();
        let wanted = self.recording.is_some()
            || self.call_recorder.is_some()
            || self.listener.as_ref().is_some_and(|l| l.is_listening())
            || bridged;
        if wanted != self.frame_events
            && self
                .media
                .commands
                .try_send(MediaCommand::FrameEvents(wanted))
                .is_ok()
        {
            self.frame_events = wanted;
        }
        let batch = if bridged { 1 } else { LISTEN_FRAME_BATCH };
        if wanted
            && batch != self.frame_batch
            && self
                .media
                .commands
                .try_send(MediaCommand::FrameBatch(batch))
                .is_ok()
        {
            self.frame_batch = batch;
        }
    }

    fn caller_audio(&mut self, frame: &Frame, now: u64) {
        if let Some(r) = self.recording.as_mut() {
            match r.recorder.write(frame) {
                Ok(true) => {}
                Ok(false) => self.stop_recording(),
                Err(e) => {
                    tracing::warn!(error = %e, "recording failed");
                    self.stop_recording();
                }
            }
        }
        if let Some((r, _)) = self.call_recorder.as_mut()
            && let Err(e) = r.write(frame)
        {
            tracing::warn!(error = %e, "call recording failed");
            self.call_recorder = None;
        }
        if let Some(ev) = self.listener.as_mut().and_then(|l| l.push(frame, now)) {
            self.core.handle_heard(Instant::now(), ev);
        }
    }

    /// A recognition result: to the interpreter, and its transcript to the call's orders.
    fn on_heard(&mut self, heard: crate::speech::Heard) {
        if let Some((ev, segment)) = self.listener.as_mut().and_then(|l| l.on_heard(heard)) {
            self.speech.extend(segment);
            self.core.handle_heard(Instant::now(), ev);
        }
    }

    /// End the voice message being recorded (if any) and tell the core.
    fn stop_recording(&mut self) {
        let Some(r) = self.recording.take() else {
            return;
        };
        let (uri, duration_ms) = match r.recorder.finish() {
            Ok(rec) => {
                let uri = r.path.display().to_string();
                let ms = rec.duration.as_millis() as u64;
                self.recordings.push(Recording {
                    url: uri.clone(),
                    duration_ms: ms,
                });
                (uri, ms)
            }
            Err(e) => {
                tracing::warn!(error = %e, "recording could not be finished");
                (String::new(), 0)
            }
        };
        tracing::info!(duration_ms, "voice message recorded");
        self.core
            .handle_recording_finished(Instant::now(), uri, duration_ms);
    }

    async fn player(
        &self,
        id: u64,
        items: Vec<ivr_flows::PlayItem>,
        language: ivr_flows::model::Lang,
        rate: f32,
    ) -> Player {
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            match item {
                ivr_flows::PlayItem::Audio { path, text } => {
                    let file = self.flows_dir.join(&path);
                    match self.shared.prompts.get(&file, self.codec) {
                        Ok(clip) => out.push(PlayItem::Clip(clip)),
                        Err(e) => {
                            tracing::warn!(error = %e, "prompt recording unusable: speaking its text");
                            if let Some(p) = self.spoken(&text, language, rate).await {
                                out.push(p);
                            }
                        }
                    }
                }
                ivr_flows::PlayItem::Tts { text } => {
                    if let Some(p) = self.spoken(&text, language, rate).await {
                        out.push(p);
                    }
                }
                ivr_flows::PlayItem::Silence { ms } => {
                    out.push(PlayItem::Silence(Duration::from_millis(u64::from(ms))))
                }
            }
        }
        Player::new(self.codec, out).with_id(id)
    }

    async fn spoken(
        &self,
        text: &str,
        language: ivr_flows::model::Lang,
        rate: f32,
    ) -> Option<PlayItem> {
        let path = self.shared.tts.speak(text, language, rate).await?;
        match self.shared.prompts.get(&path, self.codec) {
            Ok(clip) => Some(PlayItem::Clip(clip)),
            Err(e) => {
                tracing::warn!(error = %e, "synthesized prompt unusable");
                None
            }
        }
    }

    async fn start_recording(&mut self, max_seconds: u32, with_beep: bool) {
        let path = self.shared.settings.recordings_dir.join(format!(
            "voice-{}-{}.wav",
            file_stem(&self.incoming.sip_call_id),
            self.recordings.len() + 1
        ));
        let max = Duration::from_secs(u64::from(max_seconds.max(1)));
        match Recorder::create(&path, max) {
            Ok(recorder) => {
                if with_beep {
                    let p = Player::new(self.codec, [PlayItem::Clip(Arc::new(beep(self.codec)))]);
                    let _ = self.media.commands.send(MediaCommand::Play(p)).await;
                }
                self.recording = Some(ActiveRecording { recorder, path });
            }
            Err(e) => {
                tracing::warn!(error = %e, path = %path.display(), "cannot record");
                self.core
                    .handle_recording_finished(Instant::now(), String::new(), 0);
            }
        }
    }

    fn context(&self) -> CallContext<'_> {
        CallContext {
            sip_call_id: &self.incoming.sip_call_id,
            caller: (!self.caller.is_empty()).then_some(self.caller.as_str()),
            language: self.core.language().code(),
            speech: &self.speech,
            webrtc_user: self
                .webrtc
                .as_ref()
                .map(|w| w.user.as_deref().unwrap_or_default()),
        }
    }

    fn submit(&mut self, seq: u32, slots: BTreeMap<String, String>) {
        let recording = self.recordings.last().cloned();
        let new = match order::from_slots(&self.context(), seq, &slots, recording) {
            Ok(n) => n,
            Err(reason) => {
                self.core
                    .handle_store(Instant::now(), StoreResult::SubmitFailed { reason });
                return;
            }
        };
        use crate::intake::{self, Accepted, Idempotency, Intake, Via};
        let intake = Intake::new(self.shared.store.clone());
        let tx = self.backend_tx.clone();
        tokio::spawn(
            async move {
                let claim = Idempotency::Redelivery(new.claim);
                let result = match intake::accept(&intake, Via::Call, new.submission, claim).await {
                    Ok(Accepted::Created(o)) => StoreResult::Created {
                        order_id: o.id.to_string(),
                    },
                    Ok(Accepted::Replayed(id)) => StoreResult::Replayed {
                        order_id: id.to_string(),
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "order not stored");
                        StoreResult::SubmitFailed {
                            reason: e.to_string(),
                        }
                    }
                };
                let _ = tx.send(Backend::Store(result));
            }
            .in_current_span(),
        );
    }

    fn lookup(&mut self, order_id: String) {
        let store = self.shared.store.clone();
        let tx = self.backend_tx.clone();
        let zh = self.core.language() == ivr_flows::model::Lang::Zh;
        tokio::spawn(
            async move {
                let result = match OrderNumber::parse(&order_id) {
                    Err(e) => StoreResult::LookupFailed {
                        reason: e.to_string(),
                    },
                    Ok(id) => match store.order(&id).await {
                        Ok(Some(o)) => StoreResult::LookupResult {
                            status: if zh {
                                o.status.label_zh()
                            } else {
                                o.status.label_en()
                            }
                            .to_owned(),
                        },
                        Ok(None) => StoreResult::LookupFailed {
                            reason: "no such order".into(),
                        },
                        Err(e) => StoreResult::LookupFailed {
                            reason: e.to_string(),
                        },
                    },
                };
                let _ = tx.send(Backend::Store(result));
            }
            .in_current_span(),
        );
    }

    async fn transfer(
        &mut self,
        target: ivr_flows::model::TransferTarget,
        context: BTreeMap<String, String>,
        priority: u8,
    ) {
        if let Some(job) = self.outbound.as_ref().and_then(|l| l.queue_callback()) {
            // A queue callback's transfer rejoins the queue the caller left, at their place.
            self.rejoin_queue(job, context).await;
            return;
        }
        if let ivr_flows::model::TransferTarget::Queue(q) = &target
            && self.shared.queues.has(q)
        {
            self.join_queue(q, context, priority).await;
            return;
        }
        let uri = match &target {
            ivr_flows::model::TransferTarget::Sip(uri) => Some(uri.clone()),
            ivr_flows::model::TransferTarget::Queue(q) => self
                .shared
                .settings
                .agents
                .get(q)
                .or_else(|| self.shared.settings.agents.get("general"))
                .cloned(),
        };
        let Some(uri) = uri else {
            tracing::info!(?target, "transfer: no agent configured (calls.agents)");
            self.core
                .handle_transfer_failed(Instant::now(), "no agent configured".into());
            return;
        };
        match self.place_agent_leg(&uri, &context, None).await {
            Ok(()) => self.core.handle_agent_dialing(Instant::now()),
            Err(reason) => {
                tracing::warn!(%uri, %reason, "transfer: agent leg not placed");
                self.core.handle_transfer_failed(Instant::now(), reason);
            }
        }
    }

    /// Wait in `queue` for one of its agents (see [`super::acd`]).
    async fn join_queue(&mut self, queue: &str, context: BTreeMap<String, String>, priority: u8) {
        if self.queued.is_some() {
            self.core
                .handle_transfer_failed(Instant::now(), "already waiting in a queue".into());
            return;
        }
        match self.shared.queues.enqueue(queue, priority).await {
            Ok((ticket, news)) => {
                tracing::info!(queue, ticket, priority, "joined the agent queue");
                self.queued = Some(QueueWait {
                    ticket,
                    queue: queue.to_owned(),
                    priority,
                    news,
                    context,
                });
                self.core.handle_queued(Instant::now());
            }
            Err(e) => {
                tracing::info!(queue, error = %e, "agent queue refused the caller");
                self.core
                    .handle_transfer_failed(Instant::now(), e.to_string());
            }
        }
    }

    /// The citizen of a queue callback answered: take the ticket back (the agent reserved for
    /// it rings at once).
    async fn rejoin_queue(&mut self, job: String, context: BTreeMap<String, String>) {
        match self.shared.queues.reclaim(&job).await {
            Some((ticket, news)) => {
                tracing::info!(ticket, "queue callback: back at the kept place");
                self.queued = Some(QueueWait {
                    ticket,
                    queue: String::new(),
                    priority: 0,
                    news,
                    context,
                });
                self.core.handle_queued(Instant::now());
            }
            None => self.core.handle_transfer_failed(
                Instant::now(),
                "the place in the queue is no longer kept".into(),
            ),
        }
    }

    /// The caller asked to be called back in their turn: a held outbound call is stored, then
    /// the queue keeps the ticket without the call.
    async fn queue_callback(&mut self) -> Result<(), String> {
        let Some(q) = self.queued.as_ref() else {
            return Err("not waiting in a queue".into());
        };
        if q.queue.is_empty() {
            return Err("already a callback".into());
        }
        let outbound = &self.shared.outbound;
        if !outbound.enabled() {
            return Err("outbound calls are off".into());
        }
        let to = adapters::submission::normalize_phone(&self.caller)
            .ok_or_else(|| "no number to call back".to_owned())?;
        let now = Utc::now();
        let mut job = super::dialer::OutboundCall::new(
            super::dialer::OutboundCall::new_id("q-", now),
            to,
            self.shared.settings.outbound.queue_callback_flow.clone(),
            BTreeMap::new(),
            super::dialer::Origin::QueueCallback {
                queue: q.queue.clone(),
                priority: q.priority,
            },
            now,
            now,
        );
        job.status = super::dialer::Status::Held;
        let id = job.id.clone();
        outbound.submit(job).await.map_err(|e| e.to_string())?;
        if !self.shared.queues.to_callback(q.ticket, &id).await {
            let _ = outbound.cancel(&id).await;
            return Err("the place in the queue is gone".into());
        }
        tracing::info!(job = %id, "queue callback: place kept, the caller will be called back");
        self.queued = None;
        Ok(())
    }

    /// What the queue decided for this caller.
    async fn on_queue_news(&mut self, news: Option<QueueNews>) {
        let Some(ticket) = self.queued.as_ref().map(|q| q.ticket) else {
            return;
        };
        match news {
            Some(QueueNews::Offer { agent, via }) => {
                let context = self
                    .queued
                    .as_ref()
                    .map(|q| q.context.clone())
                    .unwrap_or_default();
                if let Err(reason) = self.place_agent_leg(&agent, &context, via).await {
                    tracing::warn!(%agent, %reason, "queue: agent leg not placed");
                    self.shared.queues.offer_failed(ticket);
                }
            }
            Some(QueueNews::Withdrawn { agent }) => {
                if self
                    .agent
                    .as_ref()
                    .is_some_and(|a| a.target.uri == agent && a.state != LegState::Bridged)
                {
                    tracing::info!(%agent, "queue: the agent did not answer in time");
                    self.close_agent_leg().await;
                }
            }
            Some(QueueNews::Announce {
                position,
                estimated_wait,
            }) => self.announce_position(position, estimated_wait).await,
            Some(QueueNews::GaveUp) | None => {
                self.queued = None;
                self.core.handle_transfer_failed(
                    Instant::now(),
                    "no agent answered within the queue's longest wait".into(),
                );
            }
        }
    }

    /// Tell a waiting caller their place and the expected wait, then back to the music.
    async fn announce_position(&mut self, position: usize, wait: Duration) {
        if !self.core.in_queue() || self.agent.is_some() {
            return;
        }
        let minutes = wait.as_secs().div_ceil(60).max(1);
        let language = self.core.language();
        let ahead = position - 1;
        // The words synthesized once and cached, the numbers from the recorded number clips
        // (`say_number`'s): a thousand callers waiting need no synthesis per position.
        let tts = |text: &str| ivr_flows::PlayItem::Tts { text: text.into() };
        let number = |n: u64| ivr_flows::number_items(language, n);
        let mut items = Vec::new();
        match language {
            ivr_flows::model::Lang::Zh if ahead == 0 => {
                items.push(tts("您是下一位，预计等待"));
                items.extend(number(minutes));
                items.push(tts("分钟，请稍候。"));
            }
            ivr_flows::model::Lang::Zh => {
                items.push(tts("您前面还有"));
                items.extend(number(ahead as u64));
                items.push(tts("位，预计等待"));
                items.extend(number(minutes));
                items.push(tts("分钟，请稍候。"));
            }
            ivr_flows::model::Lang::En => {
                items.push(tts("You are number"));
                items.extend(number(position as u64));
                items.push(tts("in line. The expected wait is"));
                items.extend(number(minutes));
                items.push(tts(if minutes == 1 {
                    "minute. Please hold."
                } else {
                    "minutes. Please hold."
                }));
            }
        }
        tracing::info!(position, minutes, "queue: position announced");
        let mut player = self.player(0, items, language, 1.0).await;
        player.push(PlayItem::Silence(Duration::from_millis(300)));
        for item in bridge::hold_music_items(self.codec) {
            player.push(item);
        }
        let _ = self.media.commands.send(MediaCommand::Play(player)).await;
    }

    /// The agent leg did not connect: in a queue the caller keeps waiting and the queue tries
    /// the next agent; otherwise the flow hears that the transfer failed.
    async fn agent_leg_failed(&mut self, reason: String) {
        match self.queued.as_ref().map(|q| q.ticket) {
            Some(ticket) => {
                tracing::info!(%reason, "queue: the agent did not take the call");
                self.close_agent_leg().await;
                self.shared.queues.offer_failed(ticket);
            }
            None => self.core.handle_transfer_failed(Instant::now(), reason),
        }
    }

    /// Dial the agent with an offer for a fresh port pair; the answer bridges them.
    async fn place_agent_leg(
        &mut self,
        uri: &str,
        context: &BTreeMap<String, String>,
        via: Option<super::queues::AgentRoute>,
    ) -> Result<(), String> {
        if self.agent.is_some() {
            return Err("a transfer is already under way".into());
        }
        let mut target = AgentTarget::parse(uri)?;
        let destination = match via {
            Some(route) => {
                target.transport = route.transport;
                route.addr
            }
            None => target.resolve().await?,
        };
        let media = &self.shared.settings.media;
        let ports = self
            .shared
            .media
            .open(&self.shared.ports, media.bind_ip)
            .map_err(|e| format!("no RTP port for the agent leg: {e}"))?;
        let local = ports.local_rtp().map_err(|e| e.to_string())?;
        // The caller's codec first: the agent's phone then needs no other.
        let mut codecs = vec![self.codec];
        codecs.extend(media.codecs.iter().copied().filter(|c| *c != self.codec));
        let offer = sdp::offer(&codecs, media.telephone_event_pt, local.ip(), local.port());
        let draft = bridge::draft_header(&self.incoming.sip_call_id, context, self.core.orders());
        let call = OutgoingCall {
            target_uri: target.uri.clone(),
            from_uri: self.shared.settings.local_uri.clone(),
            from_display: (!self.caller.is_empty()).then(|| self.caller.clone()),
            to_uri: target.uri.clone(),
            destination,
            transport: target.transport,
            sdp_offer: offer.to_string().into_bytes(),
            extra_headers: vec![(bridge::DRAFT_HEADER.to_owned(), draft)],
        };
        let (cmd, reply) = Command::invite(call);
        if self.shared.sip.send(cmd).await.is_err() {
            return Err("the SIP service stopped".into());
        }
        tracing::info!(agent = %target.uri, %destination, "transfer: calling the agent");
        metrics::counter!("gateway_transfers_total", "outcome" => "attempted").increment(1);
        self.agent = Some(AgentLeg::new(
            target,
            ports,
            self.codec,
            reply,
            self.shared.settings.transfer_timeout,
        ));
        Ok(())
    }

    /// The agent's media while bridged.
    fn bridged_media(&self) -> Option<&MediaHandle> {
        self.agent
            .as_ref()
            .filter(|a| a.state == LegState::Bridged)
            .and_then(|a| a.media.as_ref())
    }

    /// Queue a caller frame on the agent's paced sender (see [`bridge::relay`]).
    fn relay_to_agent(&mut self, frame: &media::Frame) {
        let Some(a) = self.agent.as_mut().filter(|a| a.state == LegState::Bridged) else {
            return;
        };
        if let Some(media) = a.media.as_ref() {
            let f = &mut a.figures;
            bridge::relay(
                media,
                Box::new(*frame),
                &mut f.frames_to_agent,
                &mut f.voiced_to_agent,
            );
        }
    }

    async fn on_leg(&mut self, input: LegInput) {
        match input {
            LegInput::Placed(Ok(id)) => {
                if let Some(a) = self.agent.as_mut() {
                    a.call = Some(id);
                    let _ = self
                        .control
                        .send(Control::Register(id, a.events_tx.clone()));
                }
            }
            LegInput::Placed(Err(reason)) => self.agent_leg_failed(reason).await,
            LegInput::Sip(ev) => self.on_agent_sip(ev).await,
            LegInput::Media(MediaEvent::Frame { frame, .. }) => {
                let Some(a) = self.agent.as_mut() else { return };
                if a.state == LegState::Bridged {
                    let f = &mut a.figures;
                    bridge::relay(
                        &self.media,
                        frame,
                        &mut f.frames_to_caller,
                        &mut f.voiced_to_caller,
                    );
                }
            }
            LegInput::Media(MediaEvent::MediaTimeout) | LegInput::MediaGone => {
                tracing::info!("transfer: no media from the agent: ending the call");
                self.core.handle_agent_hangup(Instant::now());
            }
            LegInput::Media(_) => {}
        }
    }

    async fn on_agent_sip(&mut self, ev: CallEvent) {
        let Some(a) = self.agent.as_mut() else { return };
        match ev {
            CallEvent::OutgoingProgress { status, .. }
                if a.state == LegState::Dialing && (status == 180 || status == 183) =>
            {
                a.state = LegState::Ringing;
                self.core.handle_agent_ringing(Instant::now());
            }
            CallEvent::OutgoingAnswered { sdp, .. } => {
                let ports = a.ports.take();
                let answer = sdp.as_deref().ok_or(400u16).and_then(|body| {
                    let local = ports
                        .as_ref()
                        .and_then(|p| p.local_rtp().ok())
                        .ok_or(503u16)?;
                    answer_offer(body, &[a.codec, Codec::Pcmu, Codec::Pcma], local)
                });
                let media = match (answer, ports) {
                    (Ok((_, negotiated)), Some(ports)) => {
                        let settings = &self.shared.settings.media;
                        let session = RtpSession::new(
                            RtpConfig::new(settings, &negotiated, &mut rand::rng()),
                            Instant::now(),
                            std::time::SystemTime::now(),
                        );
                        self.shared
                            .media
                            .spawn(
                                ports,
                                session,
                                DriverOptions {
                                    inband_dtmf: false,
                                    ..DriverOptions::default()
                                },
                            )
                            .ok()
                    }
                    _ => None,
                };
                let Some(media) = media else {
                    self.agent_leg_failed("the agent's answer has no usable audio".into())
                        .await;
                    return;
                };
                a.media = Some(media);
                a.state = LegState::Bridged;
                a.answered = Some(Instant::now());
                a.figures.answered_after_ms = Some(a.started.elapsed().as_millis() as u64);
                self.transfer_to = Some(a.target.uri.clone());
                self.core.handle_agent_answered(Instant::now());
                metrics::counter!("gateway_transfers_total", "outcome" => "bridged").increment(1);
                tracing::info!(agent = %a.target.uri, "transfer: bridged to the agent");
                if let Some(q) = self.queued.take() {
                    self.shared.queues.answered(q.ticket);
                    self.queue_call = Some(q.ticket);
                }
            }
            CallEvent::OutgoingFailed { status, reason, .. } => {
                self.agent_leg_failed(format!("the agent answered {status} {reason}"))
                    .await;
            }
            CallEvent::Bye { .. } if a.state == LegState::Bridged => {
                tracing::info!("transfer: the agent hung up");
                self.core.handle_agent_hangup(Instant::now());
            }
            CallEvent::CallTerminated { reason, .. } => {
                a.terminated = true;
                if a.state == LegState::Bridged {
                    if self.core.ending().is_none() {
                        tracing::info!(?reason, "transfer: the agent leg ended");
                        self.core.handle_agent_hangup(Instant::now());
                    }
                } else {
                    self.agent_leg_failed(format!("the agent leg ended ({reason:?})"))
                        .await;
                }
            }
            _ => {}
        }
    }

    /// Hang up the agent leg (if any) and keep its figures for the call record.
    async fn close_agent_leg(&mut self) {
        let Some(mut a) = self.agent.take() else {
            return;
        };
        if a.state != LegState::Bridged {
            tracing::info!(agent = %a.target.uri, "transfer: the agent leg is given up");
        }
        if let Some(id) = a.call.filter(|_| !a.terminated) {
            self.sip(Command::Hangup(id)).await;
        }
        if let Some(at) = a.answered {
            a.figures.bridged_ms = at.elapsed().as_millis() as u64;
            if let Some(ticket) = self.queue_call.take() {
                self.shared.queues.ended(ticket);
            }
        }
        if let Some(m) = a.media.take() {
            a.figures.agent_rtp = Some(RtpFigures::from_stats(&m.close().await));
        }
        self.bridge = Some(a.figures);
    }

    async fn finish(mut self) {
        self.stop_recording();
        if let Some(q) = self.queued.take() {
            tracing::info!("left the agent queue: the caller hung up");
            self.shared.queues.left(q.ticket);
        }
        self.close_agent_leg().await;
        // Let the interpreter see the hang-up, then collect what it had.
        self.carry_out().await;
        let outcome = self.core.outcome();
        let ending = outcome.ending;
        let position = outcome.last_step.clone();
        // Orders whose write was under way when the caller hung up still count.
        let mut callback_order = None;
        let reached_agent = self
            .bridge
            .as_ref()
            .is_some_and(|b| b.answered_after_ms.is_some());
        // A citizen who hangs up on our call did not miss a call of theirs.
        let abandoned = outcome.abandoned && !reached_agent && self.outbound.is_none();
        // A browser call from the page names nobody: nobody to call back.
        let reachable = self
            .webrtc
            .as_ref()
            .is_none_or(|w| w.user.as_deref().is_some_and(|u| !u.is_empty()));
        let abandoned = abandoned && reachable;
        if abandoned && self.shared.settings.callback_orders && self.core.has_flow() {
            let new = order::callback(
                &self.context(),
                outcome.submits + 1,
                position.as_deref().unwrap_or("-"),
                &outcome.collected,
                self.recordings.last().cloned(),
            );
            use crate::intake::{self, Idempotency, Intake, Via};
            let intake = Intake::new(self.shared.store.clone());
            let via = Via::CallCallback {
                at: position.as_deref(),
            };
            let claim = Idempotency::Redelivery(new.claim);
            match intake::accept(&intake, via, new.submission, claim).await {
                Ok(accepted) => {
                    let id = accepted.id().to_string();
                    if matches!(accepted, intake::Accepted::Created(_)) {
                        let shared = &self.shared;
                        shared
                            .outbound
                            .call_back_missed(&shared.settings.outbound, &self.caller, &id)
                            .await;
                    }
                    callback_order = Some(id);
                }
                Err(e) => tracing::error!(error = %e, "callback order not stored"),
            }
        }
        if let Some((r, path)) = self.call_recorder.take() {
            match r.finish() {
                Ok(rec) => self.recordings.push(Recording {
                    url: path.display().to_string(),
                    duration_ms: rec.duration.as_millis() as u64,
                }),
                Err(e) => tracing::warn!(error = %e, "call recording not finished"),
            }
        }
        let stats = self.media.close().await;
        let (caller, called) = match &self.outbound {
            // Our number called the citizen's.
            Some(_) => (uri_user(&self.incoming.from), self.caller.clone()),
            None => (self.caller.clone(), uri_user(&self.incoming.to)),
        };
        let duration_ms = self.started.elapsed().as_millis() as u64;
        if let Some(w) = self.webrtc.as_ref() {
            w.ended();
        }
        let outbound_id = self.outbound.as_ref().map(|l| l.id.clone());
        if let Some(link) = self.outbound.take() {
            link.ended(&outcome, duration_ms);
        }
        let record = CallRecord::new(
            &outcome,
            CallFacts {
                direction: cdr::direction(outbound_id.is_some()),
                channel: cdr::channel(self.webrtc.is_some()),
                outbound_id,
                sip_call_id: self.incoming.sip_call_id.clone(),
                caller,
                called,
                started_at: self.started_at,
                ended_at: Utc::now(),
                duration_ms,
                callback_order,
                recordings: self.recordings.iter().map(|r| r.url.clone()).collect(),
                transfer_to: self.transfer_to.clone(),
                bridge: self.bridge.clone(),
                codec: Some(self.codec.name().into()),
                rtp: Some(RtpFigures::from_stats(&stats)),
            },
        );
        tracing::info!(
            outcome = ending.as_str(),
            duration_ms = record.facts.duration_ms,
            orders = record.orders.len(),
            lost = stats.packets_lost,
            jitter_ms = record.facts.rtp.as_ref().map_or(0.0, |r| r.jitter_ms),
            "call ended"
        );
        metrics::counter!("gateway_calls_ended_total", "outcome" => ending.as_str()).increment(1);
        let shared = Arc::clone(&self.shared);
        let _ = tokio::task::spawn_blocking(move || shared.cdr.write(&record)).await;
    }
}

/// The hotline's wall clock for the interpreter (business hours, holidays).
pub fn local_time(offset: &chrono::FixedOffset) -> ivr_flows::calendar::LocalTime {
    Utc::now().with_timezone(offset).naive_local().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_numbers_come_from_the_uri_user_part() {
        assert_eq!(
            uri_user("sip:13800138000@10.0.0.1;user=phone"),
            "13800138000"
        );
        assert_eq!(uri_user("<sip:02788886666@trunk>"), "02788886666");
        assert_eq!(uri_user("tel:+8613800138000"), "+8613800138000");
        assert_eq!(uri_user("sip:trunk.example"), "trunk.example");
        assert_eq!(uri_user(""), "");
    }

    #[test]
    fn an_offer_we_cannot_use_is_refused_with_the_right_status() {
        let local: SocketAddr = "127.0.0.1:20000".parse().expect("addr");
        assert_eq!(
            answer_offer(b"\xff\xfe", &[Codec::Pcmu], local).err(),
            Some(400)
        );
        assert_eq!(
            answer_offer(b"garbage", &[Codec::Pcmu], local).err(),
            Some(400)
        );
        let g729 = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n";
        assert_eq!(
            answer_offer(g729.as_bytes(), &[Codec::Pcmu], local).err(),
            Some(488)
        );
        let pcmu = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n";
        let (answer, n) =
            answer_offer(pcmu.as_bytes(), &[Codec::Pcma, Codec::Pcmu], local).expect("answer");
        assert_eq!(n.codec, Codec::Pcmu);
        assert_eq!(n.telephone_event, Some(101));
        assert!(answer.to_string().contains("m=audio 20000 RTP/AVP 0 101"));
    }
}
