//! Crate-private parts opened to the criterion benches in `benches/` (feature `bench`): not an
//! API, and not built without the feature.

use crate::Frame;
use crate::jitter::{self, PushOutcome};

/// The jitter buffer [`crate::rtp_session::RtpSession`] plays out from.
#[derive(Debug, Clone)]
pub struct JitterBuffer(jitter::JitterBuffer);

impl JitterBuffer {
    /// A buffer whose reorder window is `depth` 20 ms frames.
    pub fn new(depth: usize) -> Self {
        Self(jitter::JitterBuffer::new(depth))
    }

    /// Add decoded samples sent at RTP `timestamp`; true when they were taken (accepted, or
    /// resynchronised on).
    pub fn push(&mut self, timestamp: u32, samples: &[i16]) -> bool {
        matches!(
            self.0.push(timestamp, samples),
            PushOutcome::Accepted | PushOutcome::Resynchronised
        )
    }

    /// One 20 ms tick: the frame played and whether it was received audio (`None` before
    /// playout).
    pub fn pop(&mut self) -> Option<(Frame, bool)> {
        self.0.pop().map(|p| (p.frame, p.received))
    }
}
