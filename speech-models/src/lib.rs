//! # speech_models: hearing the caller
//!
//! This crate owns speech recognition for calls: preparing the Whisper model without a model hub
//! (converting the CTranslate2 release from PyPI to whisper.cpp's ggml format), voice activity
//! detection and endpointing on call frames, a bounded pool of recognizers fed with finished
//! utterances, and matching what was heard against what a flow step expects.
//!
//! - [`model`]: `prepare()` / `verify()` / `resolve()` the ggml model file.
//! - [`vad`]: sans-IO endpointing; emits speech start (barge-in), finished utterances, max length.
//! - [`recognizer`]: a bounded pool of whisper states; `None`/`Busy` at once when saturated
//!   (feature `recognizer`, which builds whisper.cpp; the gateway turns it on).
//! - [`matcher`]: picks the option a step expects from a noisy transcript, in pinyin.
//! - [`answer`]: a short answer to a question with known options: recognizer and matcher
//!   together (an unprompted pass, then a keyword-prompted one that must not echo).
//!
//! How a call uses it (the gateway wires this):
//!
//! ```text
//! let model = model::resolve(config_path, Path::new(model::DEFAULT_CACHE_DIR), &opts)?;  // startup
//! let recognizer = Recognizer::new(RecognizerConfig::new(model))?;                         // one per process
//! let mut vad = Vad::new(VadConfig { sample_rate: 8000, ..Default::default() })?;         // one per call
//! match vad.push(&frame, now_ms)? {
//!     Some(VadEvent::SpeechStarted { .. }) => stop_prompt(),                                // barge-in
//!     Some(VadEvent::SpeechEnded(u)) | Some(VadEvent::MaxLength(u)) => match recognizer.try_acquire() {
//!         None => offer_keypad_menu(),                                                      // all busy
//!         Some(mut lease) => spawn_blocking(move || lease.recognize(&Request {
//!             audio: &u.audio, language: Language::Zh, hints: &step_keywords })),
//!     },
//!     _ => {}
//! }
//! // then: Matcher::new(&step_choices, DEFAULT_THRESHOLD).best(text)
//! ```

pub mod answer;
pub mod matcher;
pub mod model;
pub mod recognizer;
pub mod vad;
