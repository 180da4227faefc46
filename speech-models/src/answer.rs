//! Recognizing a short answer to a question whose options are known (a menu, a district).
//!
//! Whisper base on telephone Mandarin gets the sound of an answer right more often than its
//! characters, and a prompt that lists the options tempts it to answer with the list. So an
//! answer is recognized without a prompt first and matched to the options in pinyin
//! ([`crate::matcher`]); only a short answer that matched nothing is tried again with the
//! options as the prompt, and that try is thrown away when the prompt comes back.

use std::time::Duration;

use crate::matcher::{MatchOutcome, Matcher};
use crate::recognizer::{Language, Lease, NotUnderstoodReason, Recognition, Request, SAMPLE_RATE};

/// A low-confidence transcript still chooses an option when it sounds at least this close to
/// one of the step's keywords (short answers like "武昌区" often decode with low token
/// probabilities while the sound is right).
pub const LOW_CONFIDENCE_MATCH: f32 = 0.6;

/// Answers longer than this are descriptions, not choices: one plain pass only.
pub const SECOND_PASS_MAX: Duration = Duration::from_secs(4);

/// How close a transcript must sound to a keyword for `recognition` to choose it: a trusted
/// transcript needs the matcher's threshold, a low-confidence one [`LOW_CONFIDENCE_MATCH`].
pub fn chosen(matcher: &Matcher, recognition: &Recognition) -> Option<(String, f32)> {
    let (text, needed) = match recognition {
        Recognition::Text(t) => (&t.text, 0.0),
        Recognition::NotUnderstood {
            reason: NotUnderstoodReason::LowConfidence,
            heard: Some(t),
        } => (&t.text, LOW_CONFIDENCE_MATCH),
        Recognition::NotUnderstood { .. } => return None,
    };
    match matcher.best(text) {
        MatchOutcome::Match { phrase, score, .. } if score >= needed => Some((phrase, score)),
        _ => None,
    }
}

/// How many different keywords a transcript contains word for word.
pub fn keywords_in(text: &str, hints: &[String]) -> usize {
    hints
        .iter()
        .filter(|h| text.contains(h.as_str()))
        .filter(|h| {
            !hints
                .iter()
                .any(|o| o != *h && o.contains(h.as_str()) && text.contains(o.as_str()))
        })
        .count()
}

/// One utterance, recognized for a step that expects `hints` (`prompt`: the same without
/// keywords inside longer ones).
///
/// Measured on telephone Mandarin (espeak-ng's pinyin voice over mu-law), Whisper base with the
/// options as its prompt either hears one option verbatim ("我要投诉", mostly right), or answers
/// with the list itself ("江汉区，洪山区，东西湖区"), while without a prompt it is wrong in
/// characters but right in sound ("红山锯" for 洪山区, "我要自信" for 我要咨询), which the pinyin
/// matcher turns into the right option. So: the prompted pass first, kept when exactly one
/// keyword came back word for word; otherwise an unprompted pass, for the matcher. Answers
/// longer than [`SECOND_PASS_MAX`] are descriptions, not choices: one prompted pass only.
pub fn recognize(
    lease: &mut Lease,
    audio: &[f32],
    language: Language,
    hints: &[String],
    prompt: &[String],
    matcher: &Matcher,
) -> Recognition {
    if hints.is_empty() {
        return lease.recognize(&Request {
            audio,
            language,
            hints: &[],
        });
    }
    let biased = lease.recognize(&Request {
        audio,
        language,
        hints: prompt,
    });
    let long = audio.len() as f64 / SAMPLE_RATE as f64 > SECOND_PASS_MAX.as_secs_f64();
    let heard_one = match &biased {
        Recognition::Text(t)
        | Recognition::NotUnderstood {
            reason: NotUnderstoodReason::LowConfidence,
            heard: Some(t),
        } => keywords_in(&t.text, hints) == 1,
        Recognition::NotUnderstood { .. } => false,
    };
    let no_speech = matches!(
        biased,
        Recognition::NotUnderstood {
            reason: NotUnderstoodReason::NoSpeech,
            ..
        }
    );
    if long || no_speech || (heard_one && chosen(matcher, &biased).is_some()) {
        return biased;
    }
    tracing::debug!("prompted pass heard no single option: trying without the prompt");
    lease.recognize(&Request {
        audio,
        language,
        hints: &[],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_echoed_prompt_is_recognized_by_its_several_keywords() {
        let hints: Vec<String> = [
            "江汉区",
            "江汉",
            "武昌区",
            "武昌",
            "洪山区",
            "洪山",
            "东西湖区",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        assert_eq!(keywords_in("洪山区，东西湖区", &hints), 2);
        assert_eq!(keywords_in("武昌区", &hints), 1);
        assert_eq!(keywords_in("我在武昌", &hints), 1);
        assert_eq!(keywords_in("红山锯", &hints), 0);
    }
}
