//! Calls end to end: SIPp and baresip callers against the gateway, transfers, call media (prompts,
//! DTMF, recordings), spoken answers, and the media engine over loopback.

mod call_flood;
mod call_media;
mod call_outbound;
mod call_queue;
mod call_sipp;
mod call_speech;
mod call_transfer;
mod call_webrtc;
mod media_loopback;
