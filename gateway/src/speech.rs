//! Hearing callers: spoken answers to IVR steps, recognized on this machine with Whisper.
//!
//! The parts (model preparation, VAD and endpointing, the recognizer pool, the pinyin matcher)
//! live in the `speech_models` crate; this module joins them to calls:
//!
//! - [`SpeechService`]: one per gateway, built from `[speech]`. `None` when speech is off or no
//!   model is there (logged once at start): calls then take keys only, and every flow still works
//!   because each speech step also listens for keys. The model loads on a background thread so
//!   the gateway is ready at once; an utterance heard before it is loaded is "not understood".
//! - [`Listener`]: one per call, owned by the call task. Caller frames (8 kHz, 20 ms) go through
//!   the VAD on the call task (microseconds a frame). Speech start is reported at once as
//!   [`Event::SpeechStarted`] (barge-in: the interpreter stops the prompt). A finished utterance
//!   goes to a recognizer from the bounded pool on a blocking thread, never on the call task;
//!   when the pool is full the answer is [`Event::SpeechNoMatch`] at once, so the flow re-prompts
//!   and the caller can key in instead of waiting behind other callers.
//! - Matching: Whisper base on telephone Mandarin gets the sound more often than the characters
//!   ("我要做素" for "我要投诉"), while the interpreter matches menu keywords by substring. So the
//!   transcript is compared with the step's hints (its menu keywords and district names) in
//!   tone-insensitive pinyin, and the best keyword goes to the interpreter as an alternative
//!   beside the raw text: the menu then picks its option by the keyword, and a `collect` step
//!   still stores the caller's own words.
//!
//! Results carry the generation of the `Listen` they answer: a result that arrives after the
//! flow moved on (a key was pressed, the step timed out) is dropped, never applied to the wrong
//! question.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use adapters::normalize::mask::mask_text;
use adapters::work_order::TranscriptSegment;
use anyhow::Context;
use ivr_flows::Event;
use ivr_flows::io::SpeechListen;
use speech_models::answer::{self, chosen};
use speech_models::matcher::{Choice, Matcher};
use speech_models::model::{self, PrepareOptions};
use speech_models::recognizer::{Language, Recognition, Recognizer, RecognizerConfig};
use speech_models::vad::{Utterance, Vad, VadConfig, VadEvent};
use tokio::sync::mpsc;

use crate::call::config::{MAX_UTTERANCE, SpeechConfig};

/// `gateway models prepare`: obtains, converts, verifies and caches Whisper base (in
/// `options.quantization`).
pub fn prepare_model(cache_dir: &Path, options: &PrepareOptions) -> anyhow::Result<PathBuf> {
    let path = model::prepare(cache_dir, options)
        .with_context(|| format!("preparing the speech model in {}", cache_dir.display()))?;
    let summary = model::verify(&path).with_context(|| format!("verifying {}", path.display()))?;
    tracing::info!(path = %path.display(), tensors = summary.tensors.len(), "speech model ready");
    Ok(path)
}

/// What calls need from `[speech]`, with the model file resolved; built only by
/// [`SpeechSettings::from_config`].
#[derive(Debug, Clone)]
pub struct SpeechSettings {
    pub model: PathBuf,
    pub pool_size: usize,
    pub threads: usize,
    pub end_silence: Duration,
    pub max_utterance: Duration,
    pub timeout: Duration,
    pub min_confidence: f32,
    pub match_threshold: f32,
}

impl SpeechSettings {
    /// `[speech]` with `model` as the model file.
    fn new(model: PathBuf, config: &SpeechConfig) -> SpeechSettings {
        SpeechSettings {
            model,
            pool_size: config.pool_size,
            threads: config.threads,
            end_silence: config.end_silence_ms,
            max_utterance: config
                .max_utterance_s
                .clamp(Duration::from_secs(1), MAX_UTTERANCE),
            timeout: config.timeout_ms,
            min_confidence: config.min_confidence,
            match_threshold: config.match_threshold,
        }
    }

    /// The settings, or why speech is off. Never downloads: a missing model is reported with
    /// the command that prepares it (`gateway run` must not fetch 140 MB on its own).
    pub fn from_config(config: &SpeechConfig) -> Result<SpeechSettings, String> {
        if !config.enabled {
            return Err("speech.enabled = false".into());
        }
        let path = match &config.model {
            Some(path) => path.clone(),
            None => prepared_model(&config.cache_dir, config.quantization),
        };
        if !path.is_file() {
            return Err(format!(
                "no speech model at {} (run `gateway models prepare`, or set speech.model)",
                path.display()
            ));
        }
        // Header and hyperparameters only: whisper.cpp checks the rest when it loads the file.
        let model = model::resolve(Some(&path), &config.cache_dir, &PrepareOptions::default())
            .map_err(|e| format!("speech model unusable: {e}"))?;
        Ok(SpeechSettings::new(model, config))
    }
}

/// The prepared Whisper base in `quantization` in `cache_dir`, or, when only the other format is
/// there, that one (with a warning naming the command that prepares the configured one): a site
/// that switches `speech.quantization` keeps hearing callers until it prepares the new format.
fn prepared_model(cache_dir: &Path, quantization: model::Quantization) -> PathBuf {
    let wanted = cache_dir.join(model::model_file(quantization));
    if wanted.is_file() {
        return wanted;
    }
    let other = model::Quantization::ALL
        .into_iter()
        .filter(|&q| q != quantization)
        .map(|q| (q, cache_dir.join(model::model_file(q))))
        .find(|(_, path)| path.is_file());
    match other {
        Some((q, path)) => {
            tracing::warn!(
                wanted = %wanted.display(),
                using = %path.display(),
                "speech.quantization is {quantization} but only the {q} model is prepared; \
                 using it (run `gateway models prepare` for the {quantization} one)"
            );
            path
        }
        None => wanted,
    }
}

enum Loaded {
    Loading,
    Ready(Recognizer),
    Failed,
}

/// The gateway's speech recognition: settings and the shared recognizer pool.
pub struct SpeechService {
    settings: SpeechSettings,
    recognizer: Mutex<Loaded>,
}

impl std::fmt::Debug for SpeechService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpeechService")
            .field("model", &self.settings.model)
            .field("ready", &self.recognizer().is_some())
            .finish()
    }
}

impl SpeechService {
    /// Speech for calls, or `None` (logged once) when it is off or has no model. The model is
    /// loaded on a thread of its own (about a second and a few hundred MB).
    pub fn start(config: &SpeechConfig) -> Option<Arc<SpeechService>> {
        if config.enabled && !speech_models::recognizer::ENGINE_BUILT {
            tracing::warn!(
                "speech recognition off: this gateway was built without its `speech` feature; \
                 calls take keys only"
            );
            metrics::gauge!("gateway_speech_ready").set(0.0);
            return None;
        }
        let settings = match SpeechSettings::from_config(config) {
            Ok(s) => s,
            Err(why) => {
                tracing::warn!(%why, "speech recognition off: calls take keys only");
                metrics::gauge!("gateway_speech_ready").set(0.0);
                return None;
            }
        };
        let service = Arc::new(SpeechService {
            settings,
            recognizer: Mutex::new(Loaded::Loading),
        });
        let loading = Arc::clone(&service);
        let spawned = std::thread::Builder::new()
            .name("speech-load".into())
            .spawn(move || loading.load());
        if let Err(e) = spawned {
            tracing::error!(error = %e, "speech recognition off: cannot start the loader");
            return None;
        }
        Some(service)
    }

    fn load(&self) {
        let s = &self.settings;
        let started = Instant::now();
        let mut cfg = RecognizerConfig::new(s.model.clone());
        cfg.pool_size = s.pool_size;
        cfg.threads = s.threads;
        cfg.timeout = s.timeout;
        cfg.min_confidence = s.min_confidence;
        let loaded = match Recognizer::new(cfg) {
            Ok(r) => {
                tracing::info!(
                    model = %s.model.display(),
                    pool = r.capacity(),
                    took_ms = started.elapsed().as_millis() as u64,
                    "speech recognition ready"
                );
                metrics::gauge!("gateway_speech_ready").set(1.0);
                Loaded::Ready(r)
            }
            Err(e) => {
                tracing::error!(error = %e, "speech recognition off: the model did not load; calls take keys only");
                metrics::gauge!("gateway_speech_ready").set(0.0);
                Loaded::Failed
            }
        };
        *self.recognizer.lock().unwrap_or_else(|p| p.into_inner()) = loaded;
    }

    /// The pool, once loaded.
    pub fn recognizer(&self) -> Option<Recognizer> {
        match &*self.recognizer.lock().unwrap_or_else(|p| p.into_inner()) {
            Loaded::Ready(r) => Some(r.clone()),
            Loaded::Loading | Loaded::Failed => None,
        }
    }

    pub fn settings(&self) -> &SpeechSettings {
        &self.settings
    }

    /// The listener for one call (`None` only if the VAD refused its settings, logged).
    pub fn listener(self: &Arc<Self>) -> Option<Listener> {
        let (tx, rx) = mpsc::unbounded_channel();
        let vad = Vad::new(VadConfig {
            sample_rate: 8000,
            end_silence: self.settings.end_silence,
            max_utterance: self.settings.max_utterance,
            ..VadConfig::default()
        })
        .map_err(|e| tracing::error!(error = %e, "no speech for this call"))
        .ok()?;
        Some(Listener {
            service: Arc::clone(self),
            vad,
            active: None,
            generation: 0,
            tx,
            rx,
        })
    }
}

/// What the current step listens for.
struct Active {
    language: Language,
    hints: Arc<Vec<String>>,
    /// The hints without those inside longer ones ("武昌" with "武昌区"): Whisper's prompt.
    prompt: Arc<Vec<String>>,
    matcher: Arc<Matcher>,
}

/// A recognition result on its way back to the call task.
#[derive(Debug)]
pub struct Heard {
    generation: u64,
    outcome: Outcome,
    /// Call clock (ms since answer) of the utterance's first and last frame.
    span_ms: (u64, u64),
    /// From end of speech to result.
    latency: Duration,
}

#[derive(Debug)]
enum Outcome {
    Recognized(Recognition),
    /// Every recognizer was busy.
    Busy,
    /// The model is still loading (or failed to).
    NotReady,
}

/// Speech for one call: VAD on its frames, recognitions in flight, the current step's hints.
pub struct Listener {
    service: Arc<SpeechService>,
    vad: Vad,
    active: Option<Active>,
    /// Bumped by every `Listen`/`StopListening`; results of older generations are dropped.
    generation: u64,
    tx: mpsc::UnboundedSender<Heard>,
    rx: mpsc::UnboundedReceiver<Heard>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("listening", &self.active.is_some())
            .field("generation", &self.generation)
            .finish()
    }
}

/// Keywords of the recognition language only: Latin keywords ("agent") say nothing about a
/// Mandarin transcript's pinyin, and would only add false matches.
fn hints_for(language: Language, hints: &[String]) -> Vec<String> {
    let cjk = |h: &str| h.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c));
    let mut out: Vec<String> = Vec::new();
    for h in hints {
        let h = h.trim();
        let keep = match language {
            Language::Zh => cjk(h),
            Language::En => !cjk(h),
        };
        if keep && !h.is_empty() && !out.iter().any(|o| o == h) {
            out.push(h.to_owned());
        }
    }
    out
}

impl Listener {
    /// A step listens (`Action::Listen`): `None` for speech means keys only.
    pub fn listen(&mut self, speech: Option<SpeechListen>) {
        self.generation += 1;
        self.vad.reset();
        let Some(l) = speech else {
            self.active = None;
            return;
        };
        let language = match l.language {
            ivr_flows::model::Lang::Zh => Language::Zh,
            ivr_flows::model::Lang::En => Language::En,
        };
        let s = &self.service.settings;
        let end_silence = s
            .end_silence
            .max(Duration::from_millis(u64::from(l.end_silence_ms)));
        let max_utterance = s
            .max_utterance
            .min(Duration::from_secs(u64::from(l.max_seconds.max(1))));
        self.vad.set_endpointing(end_silence, max_utterance);
        let hints = hints_for(language, &l.hints);
        let choices: Vec<Choice> = hints
            .iter()
            .map(|h| Choice::new(h.clone(), [h.clone()]))
            .collect();
        let prompt: Vec<String> = hints
            .iter()
            .filter(|h| !hints.iter().any(|o| o != *h && o.contains(h.as_str())))
            .cloned()
            .collect();
        self.active = Some(Active {
            language,
            matcher: Arc::new(Matcher::new(&choices, s.match_threshold)),
            hints: Arc::new(hints),
            prompt: Arc::new(prompt),
        });
    }

    /// `Action::StopListening`.
    /// Whether a step is listening for speech (the call then feeds it every frame).
    pub fn is_listening(&self) -> bool {
        self.active.is_some()
    }

    pub fn stop(&mut self) {
        self.listen(None);
    }

    /// One 20 ms caller frame at `now_ms` (the call clock). Returns `SpeechStarted` when the
    /// caller starts talking while a step listens; a finished utterance goes off to be
    /// recognized and comes back through [`next`].
    pub fn push(&mut self, frame: &[i16], now_ms: u64) -> Option<Event> {
        // The VAD runs even when nobody listens, so its noise floor knows the line.
        let ev = match self.vad.push(frame, now_ms) {
            Ok(ev) => ev?,
            Err(e) => {
                tracing::debug!(error = %e, "frame not usable for speech");
                return None;
            }
        };
        self.active.as_ref()?;
        match ev {
            VadEvent::SpeechStarted { .. } => {
                tracing::debug!("caller started speaking");
                Some(Event::SpeechStarted)
            }
            VadEvent::SpeechEnded(u) | VadEvent::MaxLength(u) => {
                self.recognize(u, now_ms);
                None
            }
            VadEvent::Partial(_) => None,
        }
    }

    fn recognize(&mut self, u: Utterance, now_ms: u64) {
        let Some(active) = self.active.as_ref() else {
            return;
        };
        let ended = Instant::now();
        let generation = self.generation;
        let span_ms = (u.started_at_ms, now_ms);
        let tx = self.tx.clone();
        let send = move |outcome| {
            let _ = tx.send(Heard {
                generation,
                outcome,
                span_ms,
                latency: ended.elapsed(),
            });
        };
        let Some(recognizer) = self.service.recognizer() else {
            return send(Outcome::NotReady);
        };
        let Some(mut lease) = recognizer.try_acquire() else {
            return send(Outcome::Busy);
        };
        let (language, hints, prompt, matcher) = (
            active.language,
            Arc::clone(&active.hints),
            Arc::clone(&active.prompt),
            Arc::clone(&active.matcher),
        );
        let span = tracing::debug_span!("recognize", ms = u.duration.as_millis() as u64);
        tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let result =
                answer::recognize(&mut lease, &u.audio, language, &hints, &prompt, &matcher);
            drop(lease);
            send(Outcome::Recognized(result));
        });
    }

    /// Turns a result into the interpreter's event, and the transcript segment for the order.
    /// `None` for a result of an earlier question.
    pub fn on_heard(&mut self, heard: Heard) -> Option<(Event, Option<TranscriptSegment>)> {
        let outcome_label = |o: &Outcome| match o {
            Outcome::Recognized(Recognition::Text(_)) => "text",
            Outcome::Recognized(Recognition::NotUnderstood { .. }) => "not_understood",
            Outcome::Busy => "busy",
            Outcome::NotReady => "not_ready",
        };
        metrics::counter!("gateway_speech_results_total", "outcome" => outcome_label(&heard.outcome))
            .increment(1);
        metrics::histogram!("gateway_speech_latency_seconds").record(heard.latency.as_secs_f64());
        if heard.generation != self.generation {
            tracing::debug!("speech result for an earlier step dropped");
            return None;
        }
        let active = self.active.as_ref()?;
        let segment = |text: &str, confidence: f32| TranscriptSegment {
            text: text.to_owned(),
            confidence,
            start_ms: Some(heard.span_ms.0),
            end_ms: Some(heard.span_ms.1),
        };
        let latency_ms = heard.latency.as_millis() as u64;
        match heard.outcome {
            Outcome::Busy => {
                tracing::info!("all speech recognizers busy: not understood, keys instead");
                Some((Event::SpeechNoMatch, None))
            }
            Outcome::NotReady => {
                tracing::info!("speech model not loaded yet: not understood");
                Some((Event::SpeechNoMatch, None))
            }
            Outcome::Recognized(recognition) => {
                let chosen = chosen(&active.matcher, &recognition);
                match (recognition, chosen) {
                    (Recognition::Text(t), chosen) => {
                        tracing::info!(text = %mask_text(&t.text), confidence = t.confidence, matched = ?chosen, latency_ms, "caller said");
                        Some((
                            Event::SpeechResult {
                                text: t.text.clone(),
                                confidence: t.confidence,
                                alternatives: chosen.map(|(p, _)| p).into_iter().collect(),
                            },
                            Some(segment(&t.text, t.confidence)),
                        ))
                    }
                    // Low confidence, but close to one of the step's keywords: the answer.
                    (Recognition::NotUnderstood { heard: Some(t), .. }, Some((phrase, score))) => {
                        tracing::info!(text = %mask_text(&t.text), confidence = t.confidence, %phrase, score, latency_ms, "caller said (low confidence, close to a keyword)");
                        Some((
                            Event::SpeechResult {
                                text: t.text.clone(),
                                confidence: t.confidence,
                                alternatives: vec![phrase],
                            },
                            Some(segment(&t.text, t.confidence)),
                        ))
                    }
                    (Recognition::NotUnderstood { reason, heard }, _) => {
                        let heard = heard.map(|t| mask_text(&t.text).into_owned());
                        tracing::info!(?reason, ?heard, latency_ms, "not understood");
                        Some((Event::SpeechNoMatch, None))
                    }
                }
            }
        }
    }
}

/// The next recognition result of a call's listener; never ready when the call has none, so
/// it can sit in the call task's `select!` either way.
pub async fn next(listener: &mut Option<Listener>) -> Heard {
    match listener {
        Some(l) => match l.rx.recv().await {
            Some(h) => h,
            // The listener holds a sender itself, so the channel never closes.
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use speech_models::recognizer::NotUnderstoodReason;

    fn settings() -> SpeechSettings {
        SpeechSettings::new(
            PathBuf::from("/nonexistent/ggml-base.bin"),
            &SpeechConfig {
                pool_size: 1,
                threads: 1,
                ..SpeechConfig::default()
            },
        )
    }

    /// A service whose model never finished loading: every utterance is "not understood".
    fn unloaded() -> Arc<SpeechService> {
        Arc::new(SpeechService {
            settings: settings(),
            recognizer: Mutex::new(Loaded::Loading),
        })
    }

    fn listen(hints: &[&str]) -> SpeechListen {
        SpeechListen {
            language: ivr_flows::model::Lang::Zh,
            hints: hints.iter().map(|h| (*h).to_owned()).collect(),
            max_seconds: 15,
            end_silence_ms: 800,
        }
    }

    /// A voiced 20 ms frame: a 150 Hz buzz with harmonics, like a vowel on a phone line.
    fn voiced(i: usize) -> [i16; 160] {
        let mut f = [0i16; 160];
        for (n, s) in f.iter_mut().enumerate() {
            let t = (i * 160 + n) as f32 / 8000.0;
            let v: f32 = (1..6)
                .map(|h| (2.0 * std::f32::consts::PI * 150.0 * h as f32 * t).sin() / h as f32)
                .sum();
            *s = (v * 6000.0) as i16;
        }
        f
    }

    /// Feeds `speech_frames` of voice then two seconds of quiet; returns the events.
    fn talk(l: &mut Listener, start_ms: u64, speech_frames: usize) -> Vec<Event> {
        let mut out = Vec::new();
        for i in 0..speech_frames + 100 {
            let frame = if i < speech_frames {
                voiced(i)
            } else {
                [0; 160]
            };
            out.extend(l.push(&frame, start_ms + 20 * i as u64));
        }
        out
    }

    #[tokio::test]
    async fn speech_start_barges_in_and_an_unready_model_answers_no_match_at_once() {
        let service = unloaded();
        let mut l = service.listener().expect("listener");
        // Nobody listens yet: speech is not reported.
        assert!(talk(&mut l, 0, 50).is_empty());
        l.listen(Some(listen(&["投诉", "咨询"])));
        assert_eq!(talk(&mut l, 3000, 50), vec![Event::SpeechStarted]);
        let heard = tokio::time::timeout(Duration::from_secs(1), next(&mut Some(l)))
            .await
            .expect("an answer at once, not after a recognition");
        assert!(matches!(heard.outcome, Outcome::NotReady));
    }

    #[tokio::test]
    async fn results_of_an_earlier_step_are_dropped() {
        let service = unloaded();
        let mut l = service.listener().expect("listener");
        l.listen(Some(listen(&["投诉"])));
        assert_eq!(talk(&mut l, 0, 50), vec![Event::SpeechStarted]);
        let heard = l.rx.recv().await.expect("result");
        // A key moved the flow on before the result came back.
        l.listen(Some(listen(&["武昌区"])));
        assert_eq!(l.on_heard(heard), None);
        // Stopped listening: frames are not reported at all.
        l.stop();
        assert!(talk(&mut l, 5000, 50).is_empty());
    }

    #[tokio::test]
    async fn busy_and_unready_become_no_match_and_text_carries_the_matched_keyword() {
        let service = unloaded();
        let mut l = service.listener().expect("listener");
        l.listen(Some(listen(&["投诉", "咨询", "人工", "agent"])));
        let g = l.generation;
        let h = |outcome| Heard {
            generation: g,
            outcome,
            span_ms: (1000, 2500),
            latency: Duration::from_millis(300),
        };
        assert_eq!(
            l.on_heard(h(Outcome::Busy)),
            Some((Event::SpeechNoMatch, None))
        );
        assert_eq!(
            l.on_heard(h(Outcome::NotReady)),
            Some((Event::SpeechNoMatch, None))
        );
        let t = |text: &str, confidence| speech_models::recognizer::Transcript {
            text: text.into(),
            confidence,
            avg_logprob: -0.5,
            language: Language::Zh,
            elapsed: Duration::from_millis(200),
        };
        // "做素" sounds like "投诉": the keyword goes along so the menu can choose by it.
        let (ev, seg) = l
            .on_heard(h(Outcome::Recognized(Recognition::Text(t(
                "我要做素",
                0.7,
            )))))
            .expect("current");
        assert_eq!(
            ev,
            Event::SpeechResult {
                text: "我要做素".into(),
                confidence: 0.7,
                alternatives: vec!["投诉".into()],
            }
        );
        let seg = seg.expect("transcript segment");
        assert_eq!(
            (seg.text.as_str(), seg.start_ms, seg.end_ms),
            ("我要做素", Some(1000), Some(2500))
        );
        // Low confidence but close to a keyword: still an answer; far from any: no match.
        let low = |text: &str| {
            h(Outcome::Recognized(Recognition::NotUnderstood {
                reason: NotUnderstoodReason::LowConfidence,
                heard: Some(t(text, 0.2)),
            }))
        };
        assert!(matches!(
            l.on_heard(low("投诉")),
            Some((Event::SpeechResult { .. }, Some(_)))
        ));
        assert_eq!(
            l.on_heard(low("今天天气很好啊")),
            Some((Event::SpeechNoMatch, None))
        );
        let silence = h(Outcome::Recognized(Recognition::NotUnderstood {
            reason: NotUnderstoodReason::NoSpeech,
            heard: None,
        }));
        assert_eq!(l.on_heard(silence), Some((Event::SpeechNoMatch, None)));
    }

    #[test]
    fn only_keywords_of_the_recognition_language_are_matched() {
        let hints: Vec<String> = ["投诉", "report", "人工", "agent", "投诉", " "]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        assert_eq!(hints_for(Language::Zh, &hints), vec!["投诉", "人工"]);
        assert_eq!(hints_for(Language::En, &hints), vec!["report", "agent"]);
    }

    #[test]
    fn a_missing_model_turns_speech_off_with_the_command_that_fixes_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = SpeechConfig {
            cache_dir: dir.path().to_owned(),
            ..SpeechConfig::default()
        };
        let why = SpeechSettings::from_config(&cfg).expect_err("no model");
        assert!(why.contains("gateway models prepare"), "{why}");
        let off = SpeechConfig {
            enabled: false,
            ..cfg
        };
        assert!(SpeechSettings::from_config(&off).is_err());
        std::fs::write(dir.path().join(model::MODEL_FILE), b"not a model").expect("write");
        let why = SpeechSettings::from_config(&SpeechConfig {
            cache_dir: dir.path().to_owned(),
            ..SpeechConfig::default()
        })
        .expect_err("bad model");
        assert!(why.contains("unusable"), "{why}");
    }

    #[test]
    fn the_configured_format_is_preferred_and_the_other_one_used_when_alone() {
        use speech_models::model::Quantization;
        let dir = tempfile::tempdir().expect("tempdir");
        let f16 = dir.path().join(model::model_file(Quantization::F16));
        let q8 = dir.path().join(model::model_file(Quantization::Q8_0));
        assert_eq!(prepared_model(dir.path(), Quantization::Q8_0), q8);
        std::fs::write(&f16, b"x").expect("write");
        // Only f16 prepared (q8_0 configured but not prepared yet): f16 is used.
        assert_eq!(prepared_model(dir.path(), Quantization::Q8_0), f16);
        assert_eq!(prepared_model(dir.path(), Quantization::F16), f16);
        std::fs::write(&q8, b"x").expect("write");
        assert_eq!(prepared_model(dir.path(), Quantization::Q8_0), q8);
        assert_eq!(prepared_model(dir.path(), Quantization::F16), f16);
    }
}
