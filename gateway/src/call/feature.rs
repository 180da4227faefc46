//! Feature codes: a registered agent's phone dials `*21` to log in to all their queues and
//! `*22` to log out (a break, the end of a shift), as PBX agents are used to.
//!
//! The SIP endpoint lets such a call in only with the agent's digest credentials (the same as
//! their REGISTER, computed for the INVITE) and names the agent. The call is answered so the
//! phone gets a clear result without a display: one high beep when done, three low beeps when
//! not (an unknown code, an agent of no queue); then the gateway hangs up.

use std::sync::Arc;
use std::time::Duration;

use media::Codec;
use media::prompt::{EncodedPrompt, PlayItem, Player};
use media::rtp_session::{RtpConfig, RtpSession};
use tokio::sync::mpsc;

use super::Shared;
use super::events::{CallInput, Incoming};
use crate::runtime::rtp_socket::{DriverOptions, MediaCommand, MediaEvent};
use crate::runtime::sip_transport::Command;
use sip::CallEvent;

/// Log in to every queue that lists the agent.
pub const LOGIN: &str = "*21";
/// Log out of them.
pub const LOGOUT: &str = "*22";

/// The call of `agent` to feature `code`: carry it out, answer, beep the result, hang up.
pub async fn run(
    shared: Arc<Shared>,
    incoming: Incoming,
    agent: String,
    code: String,
    mut rx: mpsc::UnboundedReceiver<CallInput>,
) {
    let done = match code.as_str() {
        LOGIN | LOGOUT => {
            let on = code == LOGIN;
            match shared.queues.set_all_logged_in(&agent, on).await {
                Ok(queues) if !queues.is_empty() => {
                    tracing::info!(%agent, ?queues, logged_in = on, "feature code: agent login set");
                    true
                }
                Ok(_) => {
                    tracing::info!(%agent, "feature code: the agent is in no queue");
                    false
                }
                Err(e) => {
                    tracing::warn!(%agent, error = %e, "feature code failed");
                    false
                }
            }
        }
        other => {
            tracing::info!(%agent, code = other, "unknown feature code");
            false
        }
    };
    let call = incoming.call;
    if let Err(status) = answer_and_beep(&shared, &incoming, done).await {
        let _ = shared.sip.send(Command::Reject { call, status }).await;
    } else {
        let _ = shared.sip.send(Command::Hangup(call)).await;
    }
    // Until SIP is done with the call (so the manager drops its route).
    let _ = tokio::time::timeout(Duration::from_secs(40), async {
        while let Some(input) = rx.recv().await {
            if matches!(input, CallInput::Sip(CallEvent::CallTerminated { .. })) {
                break;
            }
        }
    })
    .await;
}

/// Answer with our SDP, play the result's beeps and wait for them to end (3 s at most).
async fn answer_and_beep(shared: &Arc<Shared>, incoming: &Incoming, done: bool) -> Result<(), u16> {
    let settings = &shared.settings.media;
    let offer = incoming.sdp_offer.as_deref().ok_or(488u16)?;
    let ports = shared
        .media
        .open(&shared.ports, settings.bind_ip)
        .map_err(|_| 503u16)?;
    let local = ports.local_rtp().map_err(|_| 503u16)?;
    let (answer, negotiated) = super::session::answer_offer(offer, &settings.codecs, local)?;
    let session = RtpSession::new(
        RtpConfig::new(settings, &negotiated, &mut rand::rng()),
        std::time::Instant::now(),
        std::time::SystemTime::now(),
    );
    let mut media = shared
        .media
        .spawn(ports, session, DriverOptions::default())
        .map_err(|_| 503u16)?;
    shared
        .sip
        .send(Command::Answer {
            call: incoming.call,
            sdp: answer.to_string().into_bytes(),
        })
        .await
        .map_err(|_| 503u16)?;
    let beeps = result_tones(negotiated.codec, done);
    let _ = media.commands.send(MediaCommand::Play(beeps)).await;
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        while let Some(ev) = media.events.recv().await {
            if matches!(ev, MediaEvent::PlaybackFinished { .. }) {
                break;
            }
        }
    })
    .await;
    media.close().await;
    Ok(())
}

/// One 1 kHz beep of 400 ms (done) or three 400 Hz beeps of 150 ms (not done), after 300 ms of
/// silence so the phone's audio path is open.
fn result_tones(codec: Codec, done: bool) -> Player {
    let tone = |hz: f32, ms: usize| {
        let pcm: Vec<i16> = (0..ms * 8)
            .map(|i| {
                let t = i as f32 / 8000.0;
                (8000.0 * (2.0 * std::f32::consts::PI * hz * t).sin()) as i16
            })
            .collect();
        Arc::new(EncodedPrompt::encode(&pcm, codec))
    };
    let mut items = vec![PlayItem::Silence(Duration::from_millis(300))];
    if done {
        items.push(PlayItem::Clip(tone(1000.0, 400)));
    } else {
        let low = tone(400.0, 150);
        for _ in 0..3 {
            items.push(PlayItem::Clip(Arc::clone(&low)));
            items.push(PlayItem::Silence(Duration::from_millis(100)));
        }
    }
    Player::new(codec, items)
}
