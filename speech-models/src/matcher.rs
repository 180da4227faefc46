//! Understanding a short answer: which of the options a step expects did the caller say?
//!
//! Whisper base on telephone Mandarin gets the sound right more often than the characters
//! ("我要做素" for "我要投诉"), and sometimes answers in Traditional characters. So transcripts and
//! options are compared as tone-less pinyin, with "fuzzy pinyin" merges that input methods use
//! for the same reason (zh/z, ch/c, sh/s, -ng/-n), by normalized Levenshtein distance over the
//! letters of a window of syllables the size of the option. Latin text (English answers) is
//! compared as lower-case letters. An exact character match always scores 1.0.
//!
//! The best option wins; below the threshold the answer is [`MatchOutcome::NoMatch`], and the
//! flow can re-prompt or fall back to the keypad.

use pinyin::ToPinyin;

/// One option of a step: an id the flow knows and the phrases that select it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub id: String,
    /// Keyword and synonyms, e.g. `["投诉", "举报", "反映问题"]`.
    pub phrases: Vec<String>,
}

impl Choice {
    pub fn new(
        id: impl Into<String>,
        phrases: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Choice {
            id: id.into(),
            phrases: phrases.into_iter().map(Into::into).collect(),
        }
    }
}

/// The result of matching one transcript.
#[derive(Debug, Clone, PartialEq)]
pub enum MatchOutcome {
    Match {
        id: String,
        /// The phrase that matched best.
        phrase: String,
        /// 0.0..=1.0; 1.0 is an exact (character or pinyin) match.
        score: f32,
    },
    /// Nothing reached the threshold; `best` is the closest option, for logs.
    NoMatch { best: Option<(String, f32)> },
}

impl MatchOutcome {
    pub fn id(&self) -> Option<&str> {
        match self {
            MatchOutcome::Match { id, .. } => Some(id),
            MatchOutcome::NoMatch { .. } => None,
        }
    }
}

/// A phrase prepared for comparison.
#[derive(Debug, Clone)]
struct Phrase {
    text: String,
    chars: String,
    syllables: Vec<String>,
}

/// Matches transcripts against a fixed set of options.
#[derive(Debug, Clone)]
pub struct Matcher {
    options: Vec<(String, Vec<Phrase>)>,
    threshold: f32,
}

/// Default acceptance threshold: "zuo su" for "tou su" (one syllable of two heard right) scores 0.4.
pub const DEFAULT_THRESHOLD: f32 = 0.4;

impl Matcher {
    pub fn new(choices: &[Choice], threshold: f32) -> Self {
        let options = choices
            .iter()
            .map(|c| {
                (
                    c.id.clone(),
                    c.phrases
                        .iter()
                        .map(|p| prepare(p))
                        .filter(|p| !p.syllables.is_empty())
                        .collect(),
                )
            })
            .collect();
        Matcher { options, threshold }
    }

    /// Yes/no questions ("是" / "不是", "对" / "不对", English yes/no).
    pub fn yes_no() -> Self {
        Matcher::new(
            &[
                Choice::new(
                    "yes",
                    [
                        "是", "是的", "对", "对的", "好", "好的", "可以", "没错", "确认", "嗯",
                        "yes", "yeah", "right",
                    ],
                ),
                Choice::new(
                    "no",
                    [
                        "不",
                        "不是",
                        "不是的",
                        "不对",
                        "不对的",
                        "不好",
                        "不行",
                        "不可以",
                        "不用",
                        "不要",
                        "没有",
                        "错了",
                        "取消",
                        "no",
                        "nope",
                        "not",
                    ],
                ),
            ],
            0.7,
        )
    }

    /// Best option for `transcript`, or `NoMatch` below the threshold.
    pub fn best(&self, transcript: &str) -> MatchOutcome {
        let t = prepare(transcript);
        let mut best: Option<(&str, &Phrase, f32, usize)> = None;
        for (id, phrases) in &self.options {
            for p in phrases {
                let (s, at) = score(&t, p);
                // Ties go to what was said first (the answer, not what a recognizer loop added
                // after it), then to the longer phrase: "不是的" beats "是的".
                let better = match best {
                    None => true,
                    Some((_, bp, bs, bat)) => {
                        s > bs + 1e-6
                            || ((s - bs).abs() <= 1e-6
                                && (at < bat
                                    || (at == bat && p.syllables.len() > bp.syllables.len())))
                    }
                };
                if better {
                    best = Some((id, p, s, at));
                }
            }
        }
        match best {
            Some((id, p, s, _)) if s >= self.threshold => MatchOutcome::Match {
                id: id.to_owned(),
                phrase: p.text.clone(),
                score: s,
            },
            other => MatchOutcome::NoMatch {
                best: other.map(|(id, _, s, _)| (id.to_owned(), s)),
            },
        }
    }
}

/// Simplified characters without punctuation, and fuzzy tone-less syllables.
fn prepare(text: &str) -> Phrase {
    let simplified = hanconv::t2s(text);
    let mut chars = String::new();
    let mut syllables = Vec::new();
    let mut word = String::new();
    for (ch, py) in simplified.chars().zip(simplified.as_str().to_pinyin()) {
        if let Some(py) = py {
            flush(&mut word, &mut syllables);
            chars.push(ch);
            syllables.push(fuzzy(py.plain()));
        } else if ch.is_alphanumeric() {
            chars.extend(ch.to_lowercase());
            word.extend(ch.to_lowercase());
        } else {
            flush(&mut word, &mut syllables);
        }
    }
    flush(&mut word, &mut syllables);
    Phrase {
        text: text.to_owned(),
        chars,
        syllables,
    }
}

fn flush(word: &mut String, out: &mut Vec<String>) {
    if !word.is_empty() {
        out.push(std::mem::take(word));
    }
}

/// Merges sounds that Southern speakers, telephone bandwidth and Whisper confuse.
fn fuzzy(syllable: &str) -> String {
    let s = syllable.replace(['ü', 'v'], "u");
    let s = ["zh", "ch", "sh"]
        .iter()
        .find(|p| s.starts_with(*p))
        .map_or(s.clone(), |p| format!("{}{}", &p[..1], &s[2..]));
    match s.strip_suffix("ng") {
        Some(stem) => format!("{stem}n"),
        None => s,
    }
}

/// How well `phrase` occurs somewhere in `t`.
///
/// A window counts only if it shares at least one whole (fuzzy) syllable with the phrase: letter
/// distance alone rates unrelated pairs such as "tianqi"/"jianyi" at 0.5, while a misheard
/// keyword nearly always keeps one syllable ("zuo su" for "tou su"). One-syllable phrases must
/// match exactly.
fn score(t: &Phrase, phrase: &Phrase) -> (f32, usize) {
    if !phrase.chars.is_empty()
        && let Some(byte) = t.chars.find(&phrase.chars)
    {
        return (1.0, t.chars[..byte].chars().count());
    }
    let n = phrase.syllables.len();
    if n == 1 {
        return match t.syllables.iter().position(|s| *s == phrase.syllables[0]) {
            Some(at) => (1.0, at),
            None => (0.0, usize::MAX),
        };
    }
    let target: String = phrase.syllables.concat();
    let anchored = |w: &[String]| w.iter().any(|s| phrase.syllables.contains(s));
    let mut best = (0.0f32, usize::MAX);
    // Windows of n-1..=n+1 syllables, so one inserted or dropped syllable still matches; a
    // transcript shorter than that is compared whole.
    for len in (n - 1).max(1)..=n + 1 {
        let len = len.min(t.syllables.len()).max(1);
        for (at, window) in t
            .syllables
            .windows(len)
            .enumerate()
            .filter(|(_, w)| anchored(w))
        {
            let s = strsim::normalized_levenshtein(&window.concat(), &target) as f32;
            if s > best.0 + 1e-6 || ((s - best.0).abs() <= 1e-6 && at < best.1) {
                best = (s, at);
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn menu() -> Matcher {
        Matcher::new(
            &[
                Choice::new("complaint", ["投诉", "举报"]),
                Choice::new("consult", ["咨询", "问一下"]),
                Choice::new("suggest", ["建议"]),
            ],
            DEFAULT_THRESHOLD,
        )
    }

    #[test]
    fn misheard_words_still_pick_the_right_option() {
        assert_eq!(menu().best("我要投诉").id(), Some("complaint"));
        assert_eq!(
            menu().best("你好,我要做素小串早飲飄明").id(),
            Some("complaint")
        );
        assert_eq!(menu().best("我想咨詢一下").id(), Some("consult"));
        assert_eq!(menu().best("今天天气很好").id(), None);
        assert_eq!(menu().best("").id(), None);
    }

    #[test]
    fn districts_and_yes_no() {
        let d = Matcher::new(
            &[
                Choice::new("jianghan", ["江汉区"]),
                Choice::new("jiangan", ["江岸区"]),
                Choice::new("wuchang", ["武昌区"]),
            ],
            DEFAULT_THRESHOLD,
        );
        assert_eq!(d.best("江汗区").id(), Some("jianghan"));
        assert_eq!(d.best("在武场区").id(), Some("wuchang"));
        assert_eq!(d.best("江汉区，武昌区").id(), Some("jianghan"));
        let yn = Matcher::yes_no();
        assert_eq!(yn.best("是的").id(), Some("yes"));
        assert_eq!(yn.best("不是的").id(), Some("no"));
        assert_eq!(yn.best("Yes.").id(), Some("yes"));
        assert_eq!(yn.best("No, thanks").id(), Some("no"));
    }
}
