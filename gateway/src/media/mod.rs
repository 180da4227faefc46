//! Media for calls: SDP offer/answer, RTP/RTCP sessions, G.711, the jitter buffer, DTMF,
//! prompt playback and recording.
