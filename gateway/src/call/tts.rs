//! Prompts that have text but no recording (an order number's status, "You said: ..."), spoken
//! by espeak-ng and cached as WAV by a hash of voice, speed and text.
//!
//! Why a subprocess: espeak-ng is the speech synthesizer Debian ships for Mandarin and English and
//! has no maintained Rust binding; a short-lived process per new phrase, off the async threads,
//! costs tens of milliseconds once, and the cache serves every later call. Without espeak-ng
//! (or with `calls.tts_command` unset) such items are skipped with a warning and the flow goes on:
//! recorded prompts carry every menu, so a call still works.
//!
//! Under load many calls want the same new phrase at once (a queue filling up, every caller
//! told where they stand): one synthesis per phrase runs and the others wait for its file, and
//! at most [`MAX_SYNTHESES`] espeak-ng processes run at a time, so synthesis never takes the
//! cores from the media pacers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ivr_flows::model::Lang;
use sha2::{Digest, Sha256};

#[derive(Debug)]
pub struct Tts {
    command: Option<String>,
    cache_dir: PathBuf,
    /// Set once the command failed to start, so that a missing binary is logged once.
    unavailable: AtomicBool,
    /// Phrases being synthesized: later askers wait on the same lock, then find the file.
    inflight: std::sync::Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
    /// Permits for espeak-ng processes running at once.
    running: tokio::sync::Semaphore,
}

/// Most espeak-ng processes at once (one a core of the machines we aim at).
pub const MAX_SYNTHESES: usize = 2;

fn voice(lang: Lang) -> &'static str {
    match lang {
        Lang::Zh => "cmn",
        Lang::En => "en",
    }
}

/// espeak-ng speaks 175 words per minute by default; flows scale it (0.5 to 2.0).
fn speed(rate: f32) -> u32 {
    (175.0 * rate.clamp(0.5, 2.0)).round() as u32
}

impl Tts {
    pub fn new(command: Option<String>, cache_dir: PathBuf) -> Self {
        Self {
            command: command.filter(|c| !c.trim().is_empty()),
            cache_dir,
            unavailable: AtomicBool::new(false),
            inflight: std::sync::Mutex::new(HashMap::new()),
            running: tokio::sync::Semaphore::new(MAX_SYNTHESES),
        }
    }

    /// Where the synthesized `text` is cached.
    pub fn cache_path(&self, text: &str, lang: Lang, rate: f32) -> PathBuf {
        let mut h = Sha256::new();
        h.update(voice(lang).as_bytes());
        h.update([0]);
        h.update(speed(rate).to_le_bytes());
        h.update(text.as_bytes());
        self.cache_dir
            .join(format!("{}.wav", hex::encode(&h.finalize()[..12])))
    }

    /// A WAV file speaking `text`, synthesizing it on first use; `None` when it cannot be had.
    pub async fn speak(&self, text: &str, lang: Lang, rate: f32) -> Option<PathBuf> {
        let text = text.trim();
        if text.is_empty() {
            return None;
        }
        let path = self.cache_path(text, lang, rate);
        if path.is_file() {
            return Some(path);
        }
        let command = self.command.clone()?;
        if self.unavailable.load(Ordering::Relaxed) {
            return None;
        }
        // One synthesis per phrase: whoever comes second waits for the first, then finds it.
        let lock = {
            let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(inflight.entry(path.clone()).or_default())
        };
        let _phrase = lock.lock().await;
        if path.is_file() {
            return Some(path);
        }
        let _permit = self.running.acquire().await.ok()?;
        let result = self.synthesize_once(command, text, lang, rate, &path).await;
        self.inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&path);
        result
    }

    async fn synthesize_once(
        &self,
        command: String,
        text: &str,
        lang: Lang,
        rate: f32,
        path: &Path,
    ) -> Option<PathBuf> {
        let (text, out) = (text.to_owned(), path.to_path_buf());
        let cache_dir = self.cache_dir.clone();
        let result = tokio::task::spawn_blocking(move || {
            synthesize(&command, &cache_dir, &text, lang, rate, &out)
        })
        .await;
        match result {
            Ok(Ok(())) => Some(path.to_path_buf()),
            Ok(Err(e)) => {
                if !self.unavailable.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "text prompts cannot be spoken (calls.tts_command); they are skipped");
                }
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "speech synthesis task failed");
                None
            }
        }
    }
}

fn synthesize(
    command: &str,
    cache_dir: &Path,
    text: &str,
    lang: Lang,
    rate: f32,
    out: &Path,
) -> std::io::Result<()> {
    std::fs::create_dir_all(cache_dir)?;
    // Written aside and renamed, so that a call never plays half a file another call is writing.
    let tmp = tempfile::NamedTempFile::new_in(cache_dir)?;
    let status = std::process::Command::new(command)
        .arg("-v")
        .arg(voice(lang))
        .arg("-s")
        .arg(speed(rate).to_string())
        .arg("-w")
        .arg(tmp.path())
        .arg("--")
        .arg(text)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if !status.success() {
        return Err(std::io::Error::other(format!(
            "{command} exited with {status}"
        )));
    }
    tmp.persist(out).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_keys_differ_by_voice_speed_and_text() {
        let t = Tts::new(Some("espeak-ng".into()), PathBuf::from("/tmp/x"));
        let a = t.cache_path("您好", Lang::Zh, 1.0);
        assert_eq!(a, t.cache_path("您好", Lang::Zh, 1.0));
        assert_ne!(a, t.cache_path("您好", Lang::En, 1.0));
        assert_ne!(a, t.cache_path("您好", Lang::Zh, 0.8));
        assert_ne!(a, t.cache_path("你好", Lang::Zh, 1.0));
    }

    #[tokio::test]
    async fn a_missing_command_gives_none_not_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = Tts::new(Some("/nonexistent/espeak".into()), dir.path().to_path_buf());
        assert_eq!(t.speak("工单号", Lang::Zh, 1.0).await, None);
        let none = Tts::new(None, dir.path().to_path_buf());
        assert_eq!(none.speak("工单号", Lang::Zh, 1.0).await, None);
    }

    #[tokio::test]
    async fn many_asking_for_one_new_phrase_share_one_synthesis() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A "synthesizer" that counts its runs and writes a WAV with espeak-ng.
        let counter = dir.path().join("runs");
        let script = dir.path().join("tts.sh");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho x >> {}\nsleep 0.3\nexec espeak-ng \"$@\"\n",
                counter.display()
            ),
        )
        .expect("script");
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        let t = Arc::new(Tts::new(
            Some(script.display().to_string()),
            dir.path().join("cache"),
        ));
        let asks: Vec<_> = (0..8)
            .map(|_| {
                let t = Arc::clone(&t);
                tokio::spawn(async move { t.speak("请稍候", Lang::Zh, 1.0).await })
            })
            .collect();
        let mut paths = Vec::new();
        for a in asks {
            paths.push(a.await.expect("task").expect("spoken"));
        }
        assert!(paths.windows(2).all(|w| w[0] == w[1]));
        let runs = std::fs::read_to_string(&counter)
            .expect("runs")
            .lines()
            .count();
        assert_eq!(runs, 1, "one synthesis for eight askers");
    }

    #[tokio::test]
    async fn espeak_output_is_cached() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = Tts::new(Some("espeak-ng".into()), dir.path().to_path_buf());
        let p = t
            .speak("办理中", Lang::Zh, 1.0)
            .await
            .expect("espeak-ng is installed by scripts/setup.sh");
        let pcm = crate::runtime::prompt_cache::load_pcm8k(&p).expect("a WAV we can play");
        assert!(pcm.len() > 8000 / 4, "at least a quarter second of speech");
        let modified = std::fs::metadata(&p)
            .and_then(|m| m.modified())
            .expect("mtime");
        assert_eq!(t.speak("办理中", Lang::Zh, 1.0).await, Some(p.clone()));
        assert_eq!(
            std::fs::metadata(&p)
                .and_then(|m| m.modified())
                .expect("mtime"),
            modified,
            "the second request is served from the cache"
        );
    }
}
