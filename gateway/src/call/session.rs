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

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use adapters::OrderNumber;
use adapters::normalize::mask::mask_phone;
use adapters::work_order::{Recording, TranscriptSegment};
use chrono::{DateTime, Utc};
use ivr_flows::{Action, Event, Session};
use media::dtmf::{DigitSource, DtmfMerger};
use media::prompt::{EncodedPrompt, PlayItem, Player};
use media::rtp_session::{RtpConfig, RtpSession, RtpStats};
use media::sdp::{self, Negotiated, OriginVersioning, SessionDescription};
use media::{Codec, Frame};
use tokio::sync::mpsc;
use tracing::Instrument;

use super::Shared;
use super::bridge::{self, AgentLeg, AgentTarget};
use super::cdr::CallRecord;
use super::events::{BridgeFigures, CallInput, Control, Incoming, LegInput, LegState, RtpFigures};
use super::order::{self, CallContext};
use crate::runtime::recorder::Recorder;
use crate::runtime::rtp_socket::{DriverOptions, MediaCommand, MediaEvent, MediaHandle};
use crate::runtime::sip_transport::Command;
use sip::{CallEvent, OutgoingCall, TerminationReason};

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
    Ivr(Event),
    Submitted { order_id: String },
}

/// Why the call ended, for the record and the callback decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    CallerHangup,
    FlowHangup,
    MediaTimeout,
    /// The agent a transfer reached hung up (or their media stopped).
    AgentHangup,
    Shutdown,
    Failed,
}

impl Ending {
    fn as_str(self) -> &'static str {
        match self {
            Ending::CallerHangup => "caller_hangup",
            Ending::FlowHangup => "flow_hangup",
            Ending::MediaTimeout => "media_timeout",
            Ending::AgentHangup => "agent_hangup",
            Ending::Shutdown => "shutdown",
            Ending::Failed => "failed",
        }
    }
}

struct ActiveRecording {
    recorder: Recorder,
    path: PathBuf,
    started: Instant,
    max: Duration,
}

struct Call {
    shared: Arc<Shared>,
    incoming: Incoming,
    caller: String,
    started: Instant,
    started_at: DateTime<Utc>,
    media: MediaHandle,
    codec: Codec,
    sdp_origin: OriginVersioning,
    local_rtp: SocketAddr,
    ivr: Option<Session>,
    flows_dir: PathBuf,
    timers: HashMap<u64, Instant>,
    merger: DtmfMerger,
    recording: Option<ActiveRecording>,
    call_recorder: Option<(Recorder, PathBuf)>,
    recordings: Vec<Recording>,
    speech: Vec<TranscriptSegment>,
    /// Hears spoken answers (VAD, recognizer pool); `None`: keys only.
    listener: Option<crate::speech::Listener>,
    backend_tx: mpsc::UnboundedSender<Backend>,
    orders: Vec<String>,
    submits: u32,
    ending: Option<Ending>,
    sip_gone: bool,
    flow_ended: bool,
    pending: VecDeque<Event>,
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
    /// The flow's start, held until the caller's ACK (or this deadline).
    held_start: Option<(Instant, Event)>,
}

/// Build the answer for an offer; `Err(status)` is the SIP status to refuse it with.
fn answer_offer(
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

/// How long the flow waits for the caller's ACK before it starts anyway (the ACK may be lost;
/// our 200 is retransmitted at 0.5 s and 1 s).
const ACK_WAIT: Duration = Duration::from_secs(1);

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
    let ports = shared.ports.bind(media_settings.bind_ip).map_err(|e| {
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
    let (backend_tx, backend_rx) = mpsc::unbounded_channel();
    let set = shared.flows.current();
    let flows_dir = set
        .dir()
        .map(|d| d.to_path_buf())
        .unwrap_or_else(|| shared.flows.status().dir);
    let ivr = Session::new(set, &shared.settings.entry_flow);
    if ivr.is_none() {
        tracing::error!(flow = %shared.settings.entry_flow, "calls.entry_flow names no flow: the call is hung up");
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
    tracing::info!(codec = negotiated.codec.name(), remote = ?negotiated.remote, "call answered");
    let listener = shared.speech.as_ref().and_then(|s| s.listener());
    let call = Call {
        codec: negotiated.codec,
        merger: DtmfMerger::new(media_settings.dtmf_merge_window),
        shared,
        incoming,
        caller,
        started: Instant::now(),
        started_at: Utc::now(),
        media,
        sdp_origin,
        local_rtp,
        ivr,
        flows_dir,
        timers: HashMap::new(),
        recording: None,
        call_recorder,
        recordings: Vec::new(),
        speech: Vec::new(),
        listener,
        backend_tx,
        orders: Vec::new(),
        submits: 0,
        ending: None,
        sip_gone: false,
        flow_ended: false,
        pending: VecDeque::new(),
        transfer_to: None,
        agent: None,
        bridge: None,
        control,
        frame_events: true,
        frame_batch: 1,
        held_start: None,
    };
    Ok((call, backend_rx))
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

    async fn sip(&self, cmd: Command) {
        if self.shared.sip.send(cmd).await.is_err() {
            tracing::debug!("SIP service gone");
        }
    }

    /// Start the flow (see [`Call::run`]): on the ACK, or after [`ACK_WAIT`] without one.
    fn start_flow(&mut self) {
        if let Some((_, started)) = self.held_start.take() {
            self.pending.push_front(started);
        }
    }

    fn next_timer(&self) -> tokio::time::Instant {
        let far = Instant::now() + Duration::from_secs(3600);
        let mut next = self.timers.values().copied().min().unwrap_or(far);
        if let Some((at, _)) = &self.held_start {
            next = next.min(*at);
        }
        if let Some(r) = &self.recording {
            next = next.min(r.started + r.max);
        }
        if let Some(a) = self.agent.as_ref().filter(|a| a.ringing()) {
            next = next.min(a.deadline);
        }
        tokio::time::Instant::from_std(next)
    }

    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<CallInput>,
        mut backend: mpsc::UnboundedReceiver<Backend>,
    ) {
        let local_time = local_time(&self.shared.settings.utc_offset);
        match &self.ivr {
            // The flow (and its greeting) starts on the caller's ACK: a phone that is slow to
            // open its audio path after our 200 would otherwise miss the greeting's first words.
            Some(_) => {
                self.held_start = Some((
                    Instant::now() + ACK_WAIT,
                    Event::CallStarted {
                        caller: self.caller.clone(),
                        called: uri_user(&self.incoming.to),
                        local_time,
                    },
                ))
            }
            None => self.end(Ending::Failed).await,
        }
        self.drive().await;
        while !self.sip_gone {
            let deadline = self.next_timer();
            tokio::select! {
                input = rx.recv() => match input {
                    None => break,
                    Some(CallInput::Sip(ev)) => self.on_sip(ev).await,
                    Some(CallInput::Shutdown) => self.end(Ending::Shutdown).await,
                },
                ev = self.media.events.recv() => match ev {
                    Some(ev) => self.on_media(ev).await,
                    None => self.end(Ending::Failed).await,
                },
                Some(b) = backend.recv() => match b {
                    Backend::Ivr(ev) => self.pending.push_back(ev),
                    Backend::Submitted { order_id } => self.orders.push(order_id),
                },
                ev = bridge::next_leg(&mut self.agent) => self.on_leg(ev).await,
                () = tokio::time::sleep_until(deadline) => self.on_timers().await,
                heard = crate::speech::next(&mut self.listener) => self.on_heard(heard),
            }
            self.drive().await;
            self.sync_frame_events();
        }
        self.finish().await;
    }

    /// Feed pending events to the interpreter and carry out its actions until none are left.
    async fn drive(&mut self) {
        while let Some(ev) = self.pending.pop_front() {
            if self.ending.is_some() && !matches!(ev, Event::HangUp) {
                continue;
            }
            let now = self.now_ms();
            let Some(ivr) = self.ivr.as_mut() else { return };
            if ivr.is_ended() {
                return;
            }
            let actions = ivr.handle(now, ev);
            for a in actions {
                self.act(a).await;
            }
        }
    }

    async fn on_timers(&mut self) {
        let now = Instant::now();
        if self.held_start.as_ref().is_some_and(|(at, _)| *at <= now) {
            tracing::debug!("no ACK yet: the flow starts anyway");
            self.start_flow();
        }
        if let Some(a) = self
            .agent
            .as_ref()
            .filter(|a| a.ringing() && a.deadline <= now)
        {
            let reason = format!(
                "no answer from the agent within {} s",
                a.deadline.duration_since(a.started).as_secs()
            );
            self.transfer_failed(reason).await;
        }
        let mut due: Vec<u64> = self
            .timers
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(id, _)| *id)
            .collect();
        due.sort_unstable();
        for id in due {
            self.timers.remove(&id);
            self.pending.push_back(Event::TimerFired { id });
        }
        if self
            .recording
            .as_ref()
            .is_some_and(|r| r.started + r.max <= now)
        {
            self.stop_recording();
        }
    }

    async fn on_sip(&mut self, ev: CallEvent) {
        match ev {
            CallEvent::CallAcked { .. } => {
                tracing::debug!("ACK: call confirmed");
                self.start_flow();
            }
            CallEvent::Info { dtmf, .. } => {
                if let Some(d) = dtmf {
                    self.digit(d.digit, Instant::now(), DigitSource::SipInfo);
                }
            }
            CallEvent::ReInvite { sdp, .. } => self.reinvite(sdp).await,
            CallEvent::Bye { .. } | CallEvent::Cancelled { .. } => {
                tracing::info!("caller hung up");
                if self.ending.is_none() {
                    self.ending = Some(Ending::CallerHangup);
                }
                self.pending.push_back(Event::HangUp);
            }
            CallEvent::CallTerminated { reason, .. } => {
                if self.ending.is_none() {
                    self.ending = Some(match reason {
                        TerminationReason::RemoteBye | TerminationReason::Cancelled => {
                            Ending::CallerHangup
                        }
                        TerminationReason::NoAck | TerminationReason::ByeTimeout => Ending::Failed,
                        _ => Ending::FlowHangup,
                    });
                    self.pending.push_back(Event::HangUp);
                }
                self.sip_gone = true;
            }
            CallEvent::IncomingCall { .. }
            | CallEvent::OutgoingProgress { .. }
            | CallEvent::OutgoingAnswered { .. }
            | CallEvent::OutgoingFailed { .. } => {}
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

    fn digit(&mut self, digit: char, at: Instant, source: DigitSource) {
        let Some(d) = self.merger.push(digit, at, source) else {
            return;
        };
        tracing::debug!(digit = %d, ?source, "key press");
        if let Some(media) = self.bridged_media() {
            // Keys pressed while talking to an agent are for the agent's system.
            let _ = media
                .commands
                .try_send(MediaCommand::Digit(d, Duration::from_millis(160)));
            return;
        }
        if self.recording.is_some() {
            // Any key ends a voice message ("press any key when you are done").
            self.stop_recording();
            return;
        }
        self.pending.push_back(Event::Digit(d));
    }

    async fn on_media(&mut self, ev: MediaEvent) {
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
            MediaEvent::Digit { digit, source, at } => self.digit(digit, at, source),
            MediaEvent::PlaybackFinished { id } => {
                self.pending.push_back(Event::PromptFinished { id })
            }
            MediaEvent::MediaTimeout => {
                tracing::info!("no media from the caller: hanging up");
                self.end(Ending::MediaTimeout).await;
            }
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
            self.pending.push_back(ev);
        }
    }

    /// A recognition result: to the interpreter, and its transcript to the call's orders.
    fn on_heard(&mut self, heard: crate::speech::Heard) {
        if let Some((ev, segment)) = self.listener.as_mut().and_then(|l| l.on_heard(heard)) {
            self.speech.extend(segment);
            self.pending.push_back(ev);
        }
    }

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
        self.pending.push_back(Event::RecordingFinished {
            uri,
            duration_ms,
            transcript: None,
        });
    }

    async fn act(&mut self, action: Action) {
        match action {
            Action::Play {
                id,
                items,
                language,
                rate,
                ..
            } => {
                let player = self.player(id, items, language, rate).await;
                let _ = self.media.commands.send(MediaCommand::Play(player)).await;
            }
            Action::StopPlayback => {
                let _ = self.media.commands.send(MediaCommand::StopPlayback).await;
            }
            // Digits always reach the interpreter, which knows what it is collecting; speech
            // is heard only while a step asks for it.
            Action::Listen { speech, .. } => {
                if let Some(l) = self.listener.as_mut() {
                    l.listen(speech);
                }
            }
            Action::StopListening => {
                if let Some(l) = self.listener.as_mut() {
                    l.stop();
                }
            }
            Action::StartTimer { id, after_ms } => {
                self.timers.insert(
                    id,
                    Instant::now() + Duration::from_millis(u64::from(after_ms)),
                );
            }
            Action::CancelTimer { id } => {
                self.timers.remove(&id);
            }
            Action::Transfer { target, context } => self.transfer(target, context).await,
            Action::Record {
                max_seconds,
                beep: with_beep,
            } => self.start_recording(max_seconds, with_beep).await,
            Action::SubmitOrder { slots } => self.submit(slots),
            Action::LookupOrder { order_id } => self.lookup(order_id),
            Action::HangUp { reason } => {
                tracing::info!(%reason, "flow hung up");
                self.flow_ended = true;
                self.end(Ending::FlowHangup).await;
            }
            Action::Trace(t) => tracing::debug!(trace = %t, "ivr"),
        }
        if self.ivr.as_ref().is_some_and(Session::is_ended) && self.ending.is_none() {
            // A flow that returned from its entry flow has nothing more to say.
            self.flow_ended = true;
            self.end(Ending::FlowHangup).await;
        }
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
                self.recording = Some(ActiveRecording {
                    recorder,
                    path,
                    started: Instant::now(),
                    max,
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, path = %path.display(), "cannot record");
                self.pending.push_back(Event::RecordingFinished {
                    uri: String::new(),
                    duration_ms: 0,
                    transcript: None,
                });
            }
        }
    }

    fn context(&self) -> CallContext<'_> {
        CallContext {
            sip_call_id: &self.incoming.sip_call_id,
            caller: (!self.caller.is_empty()).then_some(self.caller.as_str()),
            language: self.ivr.as_ref().map_or("zh", |s| s.language().code()),
            speech: &self.speech,
        }
    }

    fn submit(&mut self, slots: BTreeMap<String, String>) {
        self.submits += 1;
        let recording = self.recordings.last().cloned();
        let new = match order::from_slots(&self.context(), self.submits, &slots, recording) {
            Ok(n) => n,
            Err(reason) => {
                self.pending.push_back(Event::SubmitFailed { reason });
                return;
            }
        };
        use crate::intake::{self, Accepted, Idempotency, Intake, Via};
        let intake = Intake::new(self.shared.store.clone());
        let tx = self.backend_tx.clone();
        tokio::spawn(
            async move {
                let claim = Idempotency::Redelivery(new.claim);
                let ev = match intake::accept(&intake, Via::Call, new.submission, claim).await {
                    Ok(Accepted::Created(o)) => {
                        let _ = tx.send(Backend::Submitted {
                            order_id: o.id.to_string(),
                        });
                        Event::SubmitResult {
                            order_id: o.id.to_string(),
                        }
                    }
                    Ok(Accepted::Replayed(id)) => Event::SubmitResult {
                        order_id: id.to_string(),
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "order not stored");
                        Event::SubmitFailed {
                            reason: e.to_string(),
                        }
                    }
                };
                let _ = tx.send(Backend::Ivr(ev));
            }
            .in_current_span(),
        );
    }

    fn lookup(&mut self, order_id: String) {
        let store = self.shared.store.clone();
        let tx = self.backend_tx.clone();
        let zh = self
            .ivr
            .as_ref()
            .is_none_or(|s| s.language() == ivr_flows::model::Lang::Zh);
        tokio::spawn(
            async move {
                let ev = match OrderNumber::parse(&order_id) {
                    Err(e) => Event::LookupFailed {
                        reason: e.to_string(),
                    },
                    Ok(id) => match store.order(&id).await {
                        Ok(Some(o)) => Event::LookupResult {
                            status: if zh {
                                o.status.label_zh()
                            } else {
                                o.status.label_en()
                            }
                            .to_owned(),
                        },
                        Ok(None) => Event::LookupFailed {
                            reason: "no such order".into(),
                        },
                        Err(e) => Event::LookupFailed {
                            reason: e.to_string(),
                        },
                    },
                };
                let _ = tx.send(Backend::Ivr(ev));
            }
            .in_current_span(),
        );
    }

    async fn transfer(
        &mut self,
        target: ivr_flows::model::TransferTarget,
        context: BTreeMap<String, String>,
    ) {
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
            self.pending.push_back(Event::TransferFailed {
                reason: "no agent configured".into(),
            });
            return;
        };
        if let Err(reason) = self.place_agent_leg(&uri, &context).await {
            tracing::warn!(%uri, %reason, "transfer: agent leg not placed");
            self.pending.push_back(Event::TransferFailed { reason });
        }
    }

    /// Dial the agent with an offer for a fresh port pair; the answer bridges them.
    async fn place_agent_leg(
        &mut self,
        uri: &str,
        context: &BTreeMap<String, String>,
    ) -> Result<(), String> {
        if self.agent.is_some() {
            return Err("a transfer is already under way".into());
        }
        let target = AgentTarget::parse(uri)?;
        let destination = target.resolve().await?;
        let media = &self.shared.settings.media;
        let ports = self
            .shared
            .ports
            .bind(media.bind_ip)
            .map_err(|e| format!("no RTP port for the agent leg: {e}"))?;
        let local = ports.local_rtp().map_err(|e| e.to_string())?;
        // The caller's codec first: the agent's phone then needs no other.
        let mut codecs = vec![self.codec];
        codecs.extend(media.codecs.iter().copied().filter(|c| *c != self.codec));
        let offer = sdp::offer(&codecs, media.telephone_event_pt, local.ip(), local.port());
        let draft = bridge::draft_header(&self.incoming.sip_call_id, context, &self.orders);
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
            LegInput::Placed(Err(reason)) => self.transfer_failed(reason).await,
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
                self.end(Ending::AgentHangup).await;
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
                let left = a.deadline.saturating_duration_since(Instant::now());
                let tone = bridge::ringback(self.codec, left);
                let _ = self.media.commands.send(MediaCommand::Play(tone)).await;
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
                    self.transfer_failed("the agent's answer has no usable audio".into())
                        .await;
                    return;
                };
                a.media = Some(media);
                a.state = LegState::Bridged;
                a.answered = Some(Instant::now());
                a.figures.answered_after_ms = Some(a.started.elapsed().as_millis() as u64);
                self.transfer_to = Some(a.target.uri.clone());
                let _ = self.media.commands.send(MediaCommand::StopPlayback).await;
                metrics::counter!("gateway_transfers_total", "outcome" => "bridged").increment(1);
                tracing::info!(agent = %a.target.uri, "transfer: bridged to the agent");
            }
            CallEvent::OutgoingFailed { status, reason, .. } => {
                self.transfer_failed(format!("the agent answered {status} {reason}"))
                    .await;
            }
            CallEvent::Bye { .. } if a.state == LegState::Bridged => {
                tracing::info!("transfer: the agent hung up");
                self.end(Ending::AgentHangup).await;
            }
            CallEvent::CallTerminated { reason, .. } => {
                a.terminated = true;
                if a.state == LegState::Bridged {
                    if self.ending.is_none() {
                        tracing::info!(?reason, "transfer: the agent leg ended");
                        self.end(Ending::AgentHangup).await;
                    }
                } else {
                    self.transfer_failed(format!("the agent leg ended ({reason:?})"))
                        .await;
                }
            }
            _ => {}
        }
    }

    /// Give up on the agent: hang the leg up, stop the ringback, and tell the flow.
    async fn transfer_failed(&mut self, reason: String) {
        let Some(a) = self.agent.as_ref() else { return };
        let ringing = a.state == LegState::Ringing;
        tracing::info!(agent = %a.target.uri, %reason, "transfer failed");
        metrics::counter!("gateway_transfers_total", "outcome" => "failed").increment(1);
        self.close_agent_leg().await;
        if ringing {
            let _ = self.media.commands.send(MediaCommand::StopPlayback).await;
        }
        self.pending.push_back(Event::TransferFailed { reason });
    }

    /// Hang up the agent leg (if any) and keep its figures for the call record.
    async fn close_agent_leg(&mut self) {
        let Some(mut a) = self.agent.take() else {
            return;
        };
        if let Some(id) = a.call.filter(|_| !a.terminated) {
            self.sip(Command::Hangup(id)).await;
        }
        if let Some(at) = a.answered {
            a.figures.bridged_ms = at.elapsed().as_millis() as u64;
        }
        if let Some(m) = a.media.take() {
            a.figures.agent_rtp = Some(figures(&m.close().await));
        }
        self.bridge = Some(a.figures);
    }

    /// Hang up from our side (or note that the caller already did).
    async fn end(&mut self, why: Ending) {
        if self.ending.is_some() {
            return;
        }
        self.ending = Some(why);
        self.stop_recording();
        if !self.sip_gone {
            self.sip(Command::Hangup(self.incoming.call)).await;
        }
        self.pending.push_back(Event::HangUp);
    }

    async fn finish(mut self) {
        self.stop_recording();
        self.close_agent_leg().await;
        // Let the interpreter see the hang-up, then collect what it had.
        self.drive().await;
        let ending = self.ending.unwrap_or(Ending::CallerHangup);
        let position = self
            .ivr
            .as_ref()
            .and_then(|s| s.position().map(|(f, st)| format!("{f}/{st}")));
        let collected: BTreeMap<String, String> = self
            .ivr
            .as_ref()
            .map(|s| {
                s.vars()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_string()))
                    .collect()
            })
            .unwrap_or_default();
        // Orders whose write was under way when the caller hung up still count.
        let mut callback_order = None;
        let reached_agent = self
            .bridge
            .as_ref()
            .is_some_and(|b| b.answered_after_ms.is_some());
        let abandoned = matches!(ending, Ending::CallerHangup | Ending::MediaTimeout)
            && !self.flow_ended
            && !reached_agent
            && self.orders.is_empty()
            && self.submits == 0;
        if abandoned && self.shared.settings.callback_orders && self.ivr.is_some() {
            let new = order::callback(
                &self.context(),
                self.submits + 1,
                position.as_deref().unwrap_or("-"),
                &collected,
                self.recordings.last().cloned(),
            );
            use crate::intake::{self, Idempotency, Intake, Via};
            let intake = Intake::new(self.shared.store.clone());
            let via = Via::CallCallback {
                at: position.as_deref(),
            };
            let claim = Idempotency::Redelivery(new.claim);
            match intake::accept(&intake, via, new.submission, claim).await {
                Ok(accepted) => callback_order = Some(accepted.id().to_string()),
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
        let record = CallRecord {
            sip_call_id: self.incoming.sip_call_id.clone(),
            caller: self.caller.clone(),
            called: uri_user(&self.incoming.to),
            started_at: self.started_at,
            ended_at: Utc::now(),
            duration_ms: self.started.elapsed().as_millis() as u64,
            outcome: ending.as_str().into(),
            last_step: position,
            orders: self.orders.clone(),
            callback_order,
            recordings: self.recordings.iter().map(|r| r.url.clone()).collect(),
            transfer_to: self.transfer_to.clone(),
            bridge: self.bridge.clone(),
            codec: Some(self.codec.name().into()),
            rtp: Some(figures(&stats)),
        };
        tracing::info!(
            outcome = ending.as_str(),
            duration_ms = record.duration_ms,
            orders = record.orders.len(),
            lost = stats.packets_lost,
            jitter_ms = record.rtp.as_ref().map_or(0.0, |r| r.jitter_ms),
            "call ended"
        );
        metrics::counter!("gateway_calls_ended_total", "outcome" => ending.as_str()).increment(1);
        let shared = Arc::clone(&self.shared);
        let _ = tokio::task::spawn_blocking(move || shared.cdr.write(&record)).await;
    }
}

fn figures(s: &RtpStats) -> RtpFigures {
    RtpFigures {
        packets_received: s.packets_received,
        packets_sent: s.packets_sent,
        packets_lost: s.packets_lost,
        jitter_ms: s.jitter / 8.0,
        late: s.late,
        concealed: s.concealed,
    }
}

/// The hotline's wall clock for the interpreter (business hours, holidays).
pub fn local_time(offset: &chrono::FixedOffset) -> ivr_flows::calendar::LocalTime {
    use chrono::{Datelike, Timelike};
    let t = Utc::now().with_timezone(offset).naive_local();
    ivr_flows::calendar::LocalTime {
        date: ivr_flows::calendar::Date {
            year: t.year(),
            month: t.month(),
            day: t.day(),
        },
        hour: t.hour(),
        minute: t.minute(),
    }
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
