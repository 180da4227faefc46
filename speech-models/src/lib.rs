//! # speech_models: hearing the caller
//!
//! This crate owns speech recognition for calls: preparing the Whisper model without a model hub
//! (converting the CTranslate2 release from PyPI to whisper.cpp's ggml format), voice activity
//! detection and endpointing on call frames, a bounded pool of recognizers fed with finished
//! utterances, and matching what was heard against what a flow step expects.
