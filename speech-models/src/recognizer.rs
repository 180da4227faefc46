//! Turning a finished utterance into text with Whisper (whisper.cpp through `whisper-rs`).
//!
//! Why it looks like this:
//! - **A bounded pool.** One model (read-only weights) is shared; each concurrent recognition needs
//!   its own whisper state (KV cache and work buffers, about 100 MB). The pool holds a fixed number
//!   sized to the machine, and [`Recognizer::try_acquire`] answers `None` at once when all are busy,
//!   so the IVR falls back to keypad menus instead of letting callers queue behind each other.
//! - **Bounded work.** whisper.cpp's encoder costs the same for any clip unless `audio_ctx` is cut
//!   to the utterance (50 frames a second, plus a margin that is smaller for longer utterances:
//!   [`audio_ctx_for`]), which is most of the latency win.
//!   Decoding is greedy, one segment, without temperature fallback, with a token cap, so bad audio
//!   cannot run long; the elapsed time is still checked against `timeout` and a late result is
//!   reported as not understood. (whisper-rs's abort callback leaks its closure on every call,
//!   so it is not used.)
//! - **The engine's settings, measured** (benches/README.md, "A smaller encoder window"): 80 % of
//!   the time is whisper.cpp's matrix products, which the workspace's `.cargo/config.toml` builds
//!   with ggml's tiled `llamafile` kernels (`GGML_LLAMAFILE=ON`, off in whisper.cpp's own build;
//!   12-39 % faster here, the same texts). Each recognition runs on `cores / pool` threads (one
//!   here), also when it is alone: ggml's threads spin at a barrier after every operation, and on
//!   a shared machine two threads made a 3 s utterance take 5-8 s in half the runs. Flash
//!   attention stays off: slower on this CPU, and its 256-frame padding is attended unmasked
//!   (stale keys of an earlier, longer utterance), which changed what was heard.
//! - **Simplified Chinese.** Whisper sometimes answers in Traditional characters; `hanconv`
//!   (MIT, OpenCC's dictionaries compiled in, pure Rust) converts `t2s`. `zhconv` is GPL and
//!   `opencc-rust` needs the OpenCC C library, hence not those.
//! - **Hints as the prompt.** A step's menu keywords and district names go in as prompt tokens
//!   (tokenized once and cached), which biases Whisper towards those words. On weak audio Whisper
//!   may echo the prompt back; that is detected and reported as not understood.
//! - **A confidence.** Mean probability of the text tokens; low confidence, empty text, known
//!   hallucinations ("谢谢观看") and no-speech are all [`Recognition::NotUnderstood`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[cfg(not(feature = "recognizer"))]
use absent::{WhisperContext, WhisperState};
#[cfg(feature = "recognizer")]
use whisper_rs::{
    FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters, WhisperState,
};

/// A build without the `recognizer` feature has no whisper.cpp (it needs cmake and libclang):
/// the pool, its types and the judging of transcripts are the same, but no engine can be loaded
/// ([`Recognizer::new`] says so), so nothing ever holds one of these.
#[cfg(not(feature = "recognizer"))]
mod absent {
    pub(super) enum WhisperContext {}
    pub(super) enum WhisperState {}
}

/// Whisper's sample rate.
pub const SAMPLE_RATE: usize = 16_000;
/// Whether this build has the Whisper engine (the `recognizer` feature); without it
/// [`Recognizer::new`] always answers [`RecognizerError::NotBuilt`].
pub const ENGINE_BUILT: bool = cfg!(feature = "recognizer");
/// Encoder frames per second of audio.
const FRAMES_PER_SECOND: f64 = 50.0;
/// Longest audio Whisper takes in one window.
const MAX_SECONDS: f64 = 30.0;
/// Prompt tokens kept (whisper.cpp keeps at most half its text context).
#[cfg_attr(not(feature = "recognizer"), allow(dead_code))]
const MAX_PROMPT_TOKENS: usize = 96;
/// Distinct prompts cached before the cache is cleared.
#[cfg_attr(not(feature = "recognizer"), allow(dead_code))]
const MAX_CACHED_PROMPTS: usize = 256;
/// Phrases Whisper invents on silence and noise (subtitle credits from its training data).
const HALLUCINATIONS: &[&str] = &[
    "谢谢观看",
    "谢谢收看",
    "字幕",
    "请不吝点赞",
    "订阅",
    "thank you for watching",
    "thanks for watching",
    "amara.org",
];

/// Recognizer settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RecognizerConfig {
    /// A ggml Whisper model (see [`crate::model::prepare`]).
    pub model: PathBuf,
    /// Concurrent recognitions; 0 means min(cores, 2).
    pub pool_size: usize,
    /// Threads per recognition; 0 means cores / pool size (at least 1).
    pub threads: usize,
    /// Encoder frames added to a short utterance's own (50 per second); see [`audio_ctx_for`].
    pub audio_ctx_margin: usize,
    /// Encoder frames added to a long utterance's own: the margin shrinks from
    /// `audio_ctx_margin` to this once the window reaches `audio_ctx_short`.
    pub audio_ctx_min_margin: usize,
    /// The window (encoder frames) up to which the whole `audio_ctx_margin` is added.
    pub audio_ctx_short: usize,
    /// Most text tokens decoded per utterance.
    pub max_tokens: usize,
    /// A result that took longer is reported as [`NotUnderstoodReason::Timeout`].
    pub timeout: Duration,
    /// Below this mean token probability the result is not trusted.
    pub min_confidence: f32,
    /// Utterances shorter than this are not sent to Whisper.
    pub min_audio: Duration,
    /// Utterances quieter than this (RMS, dBFS) are treated as no speech.
    pub min_level_dbfs: f32,
}

impl RecognizerConfig {
    pub fn new(model: impl Into<PathBuf>) -> Self {
        RecognizerConfig {
            model: model.into(),
            pool_size: 0,
            threads: 0,
            audio_ctx_margin: 64,
            audio_ctx_min_margin: 32,
            audio_ctx_short: 150,
            max_tokens: 48,
            timeout: Duration::from_secs(5),
            min_confidence: 0.35,
            min_audio: Duration::from_millis(250),
            min_level_dbfs: -55.0,
        }
    }
}

/// Language to force (Whisper's own detection mistakes telephone Mandarin for other languages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Language {
    #[default]
    Zh,
    En,
}

impl Language {
    pub fn code(self) -> &'static str {
        match self {
            Language::Zh => "zh",
            Language::En => "en",
        }
    }
}

/// One utterance to recognize.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// 16 kHz mono f32 (see [`crate::vad::Utterance`]).
    pub audio: &'a [f32],
    pub language: Language,
    /// Words the step expects (menu keywords, district names); they bias recognition.
    pub hints: &'a [String],
}

/// What was heard.
#[derive(Debug, Clone, PartialEq)]
pub struct Transcript {
    /// Trimmed; Simplified Chinese when the language is Chinese.
    pub text: String,
    /// Mean probability of the text tokens, 0..1.
    pub confidence: f32,
    /// Mean log-probability of the text tokens.
    pub avg_logprob: f32,
    pub language: Language,
    /// Time spent recognizing.
    pub elapsed: Duration,
}

/// Why a result is not usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotUnderstoodReason {
    /// Too short or too quiet to contain words.
    NoSpeech,
    /// Whisper produced no text.
    Empty,
    LowConfidence,
    /// Only the prompt (hints) came back, or a known hallucination.
    Hallucination,
    Timeout,
    /// whisper.cpp reported an error.
    Failed(String),
}

/// The result of one recognition.
#[derive(Debug, Clone, PartialEq)]
pub enum Recognition {
    Text(Transcript),
    NotUnderstood {
        reason: NotUnderstoodReason,
        /// What was heard, if anything (for logs and the work order's transcript).
        heard: Option<Transcript>,
    },
}

impl Recognition {
    /// The text when understood.
    pub fn text(&self) -> Option<&str> {
        match self {
            Recognition::Text(t) => Some(&t.text),
            Recognition::NotUnderstood { .. } => None,
        }
    }
}

/// All recognizers are busy; use DTMF instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("all speech recognizers are busy")]
pub struct Busy;

/// Why the recognizer could not start.
#[derive(Debug, thiserror::Error)]
pub enum RecognizerError {
    #[error("loading the Whisper model {path}: {message}")]
    Load { path: PathBuf, message: String },
    #[error("creating a Whisper state: {0}")]
    State(String),
    #[error("this build has no Whisper engine (built without the `recognizer` feature)")]
    NotBuilt,
}

#[cfg_attr(not(feature = "recognizer"), allow(dead_code))]
struct Inner {
    ctx: WhisperContext,
    free: Mutex<Vec<WhisperState>>,
    prompts: Mutex<HashMap<String, Arc<Vec<i32>>>>,
    cfg: RecognizerConfig,
    pool_size: usize,
    threads: usize,
}

/// A shared, bounded pool of Whisper recognizers. Cheap to clone.
#[derive(Clone)]
pub struct Recognizer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Recognizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recognizer")
            .field("model", &self.inner.cfg.model)
            .field("pool_size", &self.inner.pool_size)
            .field("threads", &self.inner.threads)
            .field("available", &self.available())
            .finish()
    }
}

/// A recognizer taken from the pool; goes back when dropped. `Send`, so it can move into
/// `tokio::task::spawn_blocking`.
pub struct Lease {
    inner: Arc<Inner>,
    state: Option<WhisperState>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").finish_non_exhaustive()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(state) = self.state.take() {
            self.inner
                .free
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(state);
        }
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The model and one state per pooled recognizer.
#[cfg(feature = "recognizer")]
fn load_engine(
    cfg: &RecognizerConfig,
    pool_size: usize,
) -> Result<(WhisperContext, Vec<WhisperState>), RecognizerError> {
    whisper_rs::install_logging_hooks();
    let path = cfg.model.to_string_lossy().into_owned();
    let mut params = WhisperContextParameters::default();
    params.use_gpu(false);
    let ctx =
        WhisperContext::new_with_params(&path, params).map_err(|e| RecognizerError::Load {
            path: cfg.model.clone(),
            message: e.to_string(),
        })?;
    let states = (0..pool_size)
        .map(|_| {
            ctx.create_state()
                .map_err(|e| RecognizerError::State(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((ctx, states))
}

/// No engine in this build.
#[cfg(not(feature = "recognizer"))]
fn load_engine(
    _cfg: &RecognizerConfig,
    _pool_size: usize,
) -> Result<(WhisperContext, Vec<WhisperState>), RecognizerError> {
    Err(RecognizerError::NotBuilt)
}

impl Recognizer {
    /// Loads the model and creates the pool's states (a few hundred ms and ~100 MB each).
    pub fn new(cfg: RecognizerConfig) -> Result<Self, RecognizerError> {
        let pool_size = if cfg.pool_size == 0 {
            cores().min(2)
        } else {
            cfg.pool_size
        };
        let threads = if cfg.threads == 0 {
            (cores() / pool_size).max(1)
        } else {
            cfg.threads
        };
        let (ctx, states) = load_engine(&cfg, pool_size)?;
        Ok(Recognizer {
            inner: Arc::new(Inner {
                ctx,
                free: Mutex::new(states),
                prompts: Mutex::new(HashMap::new()),
                cfg,
                pool_size,
                threads,
            }),
        })
    }

    /// How many recognitions can run at once.
    pub fn capacity(&self) -> usize {
        self.inner.pool_size
    }

    /// How many are free now.
    pub fn available(&self) -> usize {
        self.inner.free.lock().map_or(0, |f| f.len())
    }

    /// Takes a free recognizer, or `None` at once when all are busy.
    pub fn try_acquire(&self) -> Option<Lease> {
        let state = self
            .inner
            .free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()?;
        Some(Lease {
            inner: Arc::clone(&self.inner),
            state: Some(state),
        })
    }

    /// Recognizes on the calling thread (blocking, up to about a second), or `Err(Busy)` at once.
    pub fn try_recognize(&self, request: &Request<'_>) -> Result<Recognition, Busy> {
        let mut lease = self.try_acquire().ok_or(Busy)?;
        Ok(lease.recognize(request))
    }
}

/// Text tokens allowed for `samples` of audio: nobody says more than about ten tokens a second,
/// and a cap this tight stops the repetition loops Whisper falls into on short clips early.
pub fn max_tokens_for(samples: usize, max: usize) -> usize {
    let seconds = samples as f64 / SAMPLE_RATE as f64;
    (8 + (seconds * 10.0).ceil() as usize).min(max).max(1)
}

/// Cuts a repetition loop ("我要求数我要求数我要求数…") down to its first round.
///
/// Returns the text and whether anything was cut. A tail counts as a loop when some period of
/// it repeats to the end at least twice (three times for one-character periods, so "谢谢" stays).
pub fn collapse_repeats(text: &str) -> (String, bool) {
    let c: Vec<char> = text.chars().collect();
    let n = c.len();
    for start in 0..n {
        let tail = n - start;
        for period in 1..=tail / 2 {
            let rounds_needed = if period == 1 { 3 } else { 2 };
            if tail < period * rounds_needed || tail < 4 {
                continue;
            }
            if (start..n - period).all(|i| c[i] == c[i + period]) {
                // Any rotation of the round is a loop too; prefer the one that ends at a
                // delimiter, so "区，硚口 区，硚口" keeps "硚口区" whole.
                let end = (start + period..(start + 2 * period).min(n + 1))
                    .find(|&e| matches!(c[e - 1], ',' | '，' | ' ' | '。' | '.'))
                    .unwrap_or(start + period);
                let kept: String = c[..end].iter().collect();
                return (
                    kept.trim_end_matches([',', '，', ' ', '。', '.'])
                        .to_owned(),
                    true,
                );
            }
        }
    }
    (text.to_owned(), false)
}

/// Encoder frames for `samples` of audio (whisper.cpp's `audio_ctx`): the utterance's own plus
/// `margin`, except that past a window of `short` frames the margin shrinks, down to
/// `min_margin`; at most 1500 (30 s).
///
/// The encoder's work grows with the window, and a margin of 64 frames was 30 % of a 3 s
/// utterance's. But Whisper was trained on 30 s windows and hears a short answer worse in a
/// window cut close to it: with 32 or 16 frames of margin for every utterance, "洪山区" (1.64 s,
/// 82 frames) was misheard in 2 and 3 of 5 runs of the speech tests, with 64 in none. Longer
/// utterances heard the same with 32 as with 64; with 16, 3 s of white noise became a confident
/// "铁" (0.88) instead of a low-confidence "鸡" (benches/README.md, "A smaller encoder window").
/// So answers up to 1.72 s keep their 64 frames, the window then stays at `short` (150 frames)
/// while the margin shrinks, and utterances from 2.36 s on get `min_margin` (32): 182 frames
/// instead of 214 for 3 s, 15 % less encoder work.
pub fn audio_ctx_for(samples: usize, margin: usize, min_margin: usize, short: usize) -> usize {
    let seconds = samples as f64 / SAMPLE_RATE as f64;
    let frames = (seconds * FRAMES_PER_SECOND).ceil() as usize;
    (frames + min_margin)
        .max((frames + margin).min(short))
        .min((MAX_SECONDS * FRAMES_PER_SECOND) as usize)
}

fn level_dbfs(audio: &[f32]) -> f32 {
    let energy = audio
        .iter()
        .map(|s| f64::from(*s) * f64::from(*s))
        .sum::<f64>()
        / audio.len().max(1) as f64;
    (10.0 * energy.max(1e-12).log10()) as f32
}

/// Letters and digits only, lower-case: for comparing text with prompts and hallucinations.
fn bare(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

impl Lease {
    /// Recognizes one utterance. Never panics on bad input; every failure is `NotUnderstood`.
    pub fn recognize(&mut self, request: &Request<'_>) -> Recognition {
        let started = Instant::now();
        let inner = Arc::clone(&self.inner);
        let cfg = &inner.cfg;
        let not = |reason, heard| Recognition::NotUnderstood { reason, heard };
        let max_samples = (MAX_SECONDS * SAMPLE_RATE as f64) as usize;
        let audio = &request.audio[..request.audio.len().min(max_samples)];
        if audio.len() < (cfg.min_audio.as_secs_f64() * SAMPLE_RATE as f64) as usize
            || audio.iter().any(|s| !s.is_finite())
            || level_dbfs(audio) < cfg.min_level_dbfs
        {
            return not(NotUnderstoodReason::NoSpeech, None);
        }
        let Some(state) = self.state.as_mut() else {
            return not(
                NotUnderstoodReason::Failed("recognizer state missing".into()),
                None,
            );
        };
        run(&inner, state, request, audio, started)
    }
}

/// Runs Whisper on the audio and judges what it heard.
#[cfg(feature = "recognizer")]
fn run(
    inner: &Inner,
    state: &mut WhisperState,
    request: &Request<'_>,
    audio: &[f32],
    started: Instant,
) -> Recognition {
    let cfg = &inner.cfg;
    let not = |reason, heard| Recognition::NotUnderstood { reason, heard };
    let prompt = prompt_tokens(inner, request.hints);
    let mut params = FullParams::new(SamplingStrategy::Greedy { best_of: 1 });
    params.set_n_threads(inner.threads as i32);
    params.set_language(Some(request.language.code()));
    params.set_translate(false);
    params.set_no_context(true);
    params.set_no_timestamps(true);
    params.set_single_segment(true);
    params.set_print_special(false);
    params.set_print_progress(false);
    params.set_print_realtime(false);
    params.set_print_timestamps(false);
    params.set_suppress_blank(true);
    params.set_suppress_nst(true);
    params.set_temperature(0.0);
    params.set_temperature_inc(0.0);
    params.set_max_tokens(max_tokens_for(audio.len(), cfg.max_tokens) as i32);
    params.set_audio_ctx(audio_ctx_for(
        audio.len(),
        cfg.audio_ctx_margin,
        cfg.audio_ctx_min_margin,
        cfg.audio_ctx_short,
    ) as i32);
    if !prompt.is_empty() {
        params.set_tokens(&prompt);
    }
    if let Err(e) = state.full(params, audio) {
        return not(NotUnderstoodReason::Failed(e.to_string()), None);
    }
    let transcript = collect(inner, state, request.language, started);
    let elapsed = started.elapsed();
    if elapsed > cfg.timeout {
        return not(NotUnderstoodReason::Timeout, Some(transcript));
    }
    judge(transcript, request.hints, cfg.min_confidence)
}

/// Unreachable: without an engine no state exists.
#[cfg(not(feature = "recognizer"))]
fn run(
    _inner: &Inner,
    state: &mut WhisperState,
    _request: &Request<'_>,
    _audio: &[f32],
    _started: Instant,
) -> Recognition {
    match *state {}
}

/// The hints as prompt tokens, tokenized once per distinct prompt.
#[cfg(feature = "recognizer")]
fn prompt_tokens(inner: &Inner, hints: &[String]) -> Arc<Vec<i32>> {
    let text: String = hints
        .iter()
        .map(|h| h.replace('\0', ""))
        .filter(|h| !h.trim().is_empty())
        .collect::<Vec<_>>()
        .join("，");
    if text.is_empty() {
        return Arc::new(Vec::new());
    }
    let mut cache = inner.prompts.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(tokens) = cache.get(&text) {
        return Arc::clone(tokens);
    }
    // A token is at least one byte, so this many slots always suffice.
    let mut tokens = inner
        .ctx
        .tokenize(&text, text.len() + 8)
        .unwrap_or_default();
    if tokens.len() > MAX_PROMPT_TOKENS {
        tokens.drain(..tokens.len() - MAX_PROMPT_TOKENS);
    }
    let tokens = Arc::new(tokens);
    if cache.len() >= MAX_CACHED_PROMPTS {
        cache.clear();
    }
    cache.insert(text, Arc::clone(&tokens));
    tokens
}

#[cfg(feature = "recognizer")]
fn collect(
    inner: &Inner,
    state: &WhisperState,
    language: Language,
    started: Instant,
) -> Transcript {
    let eot = inner.ctx.token_eot();
    let mut text = String::new();
    let (mut probs, mut logps) = (Vec::new(), Vec::new());
    for segment in state.as_iter() {
        if let Ok(s) = segment.to_str_lossy() {
            text.push_str(&s);
        }
        for i in 0..segment.n_tokens() {
            if let Some(token) = segment.get_token(i)
                && token.token_id() < eot
            {
                probs.push(token.token_probability());
                logps.push(token.token_data().plog);
            }
        }
    }
    let mean = |v: &[f32]| {
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<f32>() / v.len() as f32
        }
    };
    // A token budget can end inside a multi-byte character; its lossy remains (U+FFFD) would
    // also hide a repetition loop from `collapse_repeats`.
    let text = text.replace('\u{FFFD}', "");
    let (text, looped) = collapse_repeats(text.trim());
    if looped {
        tracing::debug!(%text, "whisper repetition loop cut");
    }
    let text = if language == Language::Zh {
        hanconv::t2s(&text)
    } else {
        text
    };
    Transcript {
        text,
        confidence: mean(&probs),
        avg_logprob: mean(&logps),
        language,
        elapsed: started.elapsed(),
    }
}

#[cfg_attr(not(feature = "recognizer"), allow(dead_code))]
fn judge(t: Transcript, hints: &[String], min_confidence: f32) -> Recognition {
    let not = |reason, t| Recognition::NotUnderstood {
        reason,
        heard: Some(t),
    };
    let text = bare(&t.text);
    if text.is_empty() {
        return not(NotUnderstoodReason::Empty, t);
    }
    if HALLUCINATIONS.iter().any(|h| text.contains(&bare(h))) {
        return not(NotUnderstoodReason::Hallucination, t);
    }
    // The prompt echoed: two or more hints, back to back, as given.
    let hints: Vec<String> = hints
        .iter()
        .map(|h| bare(h))
        .filter(|h| !h.is_empty())
        .collect();
    if hints.len() >= 2
        && hints
            .windows(2)
            .any(|w| text.contains(&format!("{}{}", w[0], w[1])))
    {
        return not(NotUnderstoodReason::Hallucination, t);
    }
    if t.confidence < min_confidence {
        return not(NotUnderstoodReason::LowConfidence, t);
    }
    Recognition::Text(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repetition_loops_are_cut() {
        assert_eq!(
            collapse_repeats("我要求数１我要求数１我要求数１我要"),
            ("我要求数１".to_owned(), true)
        );
        assert_eq!(
            collapse_repeats("江汉区，硚口区，硚口区，硚口区，硚"),
            ("江汉区，硚口区".to_owned(), true)
        );
        assert_eq!(
            collapse_repeats("你好,我要投诉"),
            ("你好,我要投诉".to_owned(), false)
        );
        assert_eq!(collapse_repeats("谢谢"), ("谢谢".to_owned(), false));
        assert_eq!(collapse_repeats(""), (String::new(), false));
        assert_eq!(max_tokens_for(16_000, 48), 18);
        assert_eq!(max_tokens_for(16_000 * 30, 48), 48);
    }

    #[test]
    fn audio_ctx_follows_the_utterance() {
        let d = RecognizerConfig::new("m");
        let ctx = |samples| {
            audio_ctx_for(
                samples,
                d.audio_ctx_margin,
                d.audio_ctx_min_margin,
                d.audio_ctx_short,
            )
        };
        // Short answers: the whole margin (the speech tests' "洪山区" is 1.64 s).
        assert_eq!(ctx(16_000), 50 + 64);
        assert_eq!(ctx(16_000 * 164 / 100), 82 + 64);
        // Between: the window stays at `short` while the margin shrinks.
        assert_eq!(ctx(16_000 * 2), 150);
        assert_eq!(ctx(16_000 * 118 / 50), 118 + 32);
        // Longer utterances: the small margin.
        assert_eq!(ctx(16_000 * 3), 150 + 32);
        assert_eq!(ctx(16_000 * 15), 750 + 32);
        assert_eq!(ctx(16_000 * 60), 1500);
        // The margin never shrinks below `min_margin`, whatever `short` says; with
        // `min_margin == margin` every utterance gets the whole margin (the rule before).
        assert_eq!(audio_ctx_for(16_000, 64, 16, 0), 50 + 16);
        assert_eq!(audio_ctx_for(16_000 * 3, 64, 64, 150), 150 + 64);
        assert_eq!(audio_ctx_for(1, 0, 0, 0), 1);
    }

    fn t(text: &str, confidence: f32) -> Transcript {
        Transcript {
            text: text.into(),
            confidence,
            avg_logprob: 0.0,
            language: Language::Zh,
            elapsed: Duration::ZERO,
        }
    }

    #[test]
    fn judging_results() {
        let hints = vec!["投诉".to_owned(), "咨询".to_owned()];
        assert!(matches!(
            judge(t("我要投诉", 0.8), &hints, 0.35),
            Recognition::Text(_)
        ));
        assert!(matches!(
            judge(t("投诉,咨询", 0.9), &hints, 0.35),
            Recognition::NotUnderstood {
                reason: NotUnderstoodReason::Hallucination,
                ..
            }
        ));
        assert!(matches!(
            judge(t("。", 0.9), &hints, 0.35),
            Recognition::NotUnderstood {
                reason: NotUnderstoodReason::Empty,
                ..
            }
        ));
        assert!(matches!(
            judge(t("谢谢观看!", 0.9), &hints, 0.35),
            Recognition::NotUnderstood {
                reason: NotUnderstoodReason::Hallucination,
                ..
            }
        ));
        assert!(matches!(
            judge(t("嗯", 0.1), &hints, 0.35),
            Recognition::NotUnderstood {
                reason: NotUnderstoodReason::LowConfidence,
                ..
            }
        ));
    }
}
