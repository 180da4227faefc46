//! # speech_models: hearing the caller
//!
//! This crate owns speech recognition for calls: preparing the Whisper model without a model hub
//! (converting the CTranslate2 release from PyPI to whisper.cpp's ggml format), voice activity
//! detection and endpointing on call frames, a bounded pool of recognizers fed with finished
//! utterances, and matching what was heard against what a flow step expects.
//!
//! - [`model`]: `prepare()` / `verify()` the ggml model file.
//! - [`vad`]: sans-IO endpointing; emits speech start (barge-in), finished utterances, max length.
//! - [`recognizer`]: a bounded pool of whisper states; `Busy` at once when saturated.
//! - [`matcher`]: picks the option a step expects from a noisy transcript, in pinyin.

pub mod matcher;
pub mod model;
#[cfg(feature = "recognizer")]
pub mod recognizer;
pub mod vad;
