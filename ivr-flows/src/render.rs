//! Turning a `Message` into concrete `PlayItem`s for the session's language: placeholders are
//! filled in, digits and numbers become per-language clips. Separate from the interpreter so
//! the prompt wording rules can be tested on their own.

use crate::check::{number_clip_path, number_clips};
use crate::expr::{Env, eval};
use crate::io::PlayItem;
use crate::model::{Clip, Lang, Message, Part, Seg};

fn text_of(clip: &Clip, env: &dyn Env) -> String {
    clip.text
        .iter()
        .map(|s| match s {
            Seg::Lit(t) => t.clone(),
            Seg::Expr(e) => eval(e, env).to_string(),
        })
        .collect()
}

fn clip(lang: Lang, name: &str, text: &str) -> PlayItem {
    PlayItem::Audio {
        path: number_clip_path(lang, name),
        text: text.to_string(),
    }
}

fn digits(lang: Lang, s: &str, out: &mut Vec<PlayItem>) {
    for c in s.chars().filter(char::is_ascii_digit) {
        out.push(clip(lang, &c.to_string(), &c.to_string()));
    }
}

/// A whole number spoken with the per-language number clips, as `say_number` plays it (each
/// clip's text names the clip, for logs and a missing file's spoken fallback).
pub fn number_items(lang: Lang, n: u64) -> Vec<PlayItem> {
    number_names(lang, n)
        .into_iter()
        .map(|name| clip(lang, &name, &name))
        .collect()
}

/// Clip names for a whole number (0–99 999 999; larger numbers are read digit by digit).
pub fn number_names(lang: Lang, n: u64) -> Vec<String> {
    let known = number_clips(lang);
    let mut out = Vec::new();
    match lang {
        Lang::Zh => {
            if n >= 100_000_000 {
                return n.to_string().chars().map(String::from).collect();
            }
            let (wan, rest) = (n / 10_000, n % 10_000);
            if wan > 0 {
                out.extend(zh_below_10000(wan, false));
                out.push("wan".into());
                if rest > 0 {
                    if rest < 1000 {
                        out.push("0".into());
                    }
                    out.extend(zh_below_10000(rest, true));
                }
            } else {
                out.extend(zh_below_10000(rest, false));
            }
        }
        Lang::En => {
            if n >= 1_000_000 {
                return n.to_string().chars().map(String::from).collect();
            }
            let (th, rest) = (n / 1000, n % 1000);
            if th > 0 {
                out.extend(en_below_1000(th));
                out.push("thousand".into());
            }
            if rest > 0 || th == 0 {
                out.extend(en_below_1000(rest));
            }
        }
    }
    out.retain(|n| known.contains(n));
    out
}

fn zh_below_10000(n: u64, inner: bool) -> Vec<String> {
    let ds = [n / 1000, n / 100 % 10, n / 10 % 10, n % 10];
    let units = ["thousand", "hundred", "10", ""];
    let mut out: Vec<String> = Vec::new();
    let mut zero_pending = false;
    let mut started = false;
    for (i, d) in ds.iter().enumerate() {
        if *d == 0 {
            if started {
                zero_pending = true;
            }
            continue;
        }
        if zero_pending {
            out.push("0".into());
            zero_pending = false;
        }
        // 十五 rather than 一十五 at the start of a number.
        let leading_ten = i == 2 && *d == 1 && !started && !inner;
        if !leading_ten {
            out.push(d.to_string());
        }
        if !units[i].is_empty() {
            out.push(units[i].into());
        }
        started = true;
    }
    if out.is_empty() {
        out.push("0".into());
    }
    out
}

fn en_below_1000(n: u64) -> Vec<String> {
    let mut out = Vec::new();
    if n >= 100 {
        out.push((n / 100).to_string());
        out.push("hundred".into());
    }
    let r = n % 100;
    if r >= 20 {
        out.push((r / 10 * 10).to_string());
        if !r.is_multiple_of(10) {
            out.push((r % 10).to_string());
        }
    } else if r > 0 || n == 0 {
        out.push(r.to_string());
    }
    out
}

/// Renders a message in `lang` (falling back to any language a clip has).
pub fn render(msg: &Message, lang: Lang, env: &dyn Env) -> Vec<PlayItem> {
    let mut out = Vec::new();
    for part in &msg.parts {
        match part {
            Part::Clip(clips) => {
                let Some(c) = clips.get(&lang).or_else(|| clips.values().next()) else {
                    continue;
                };
                let text = text_of(c, env);
                out.push(match &c.audio {
                    Some(path) => PlayItem::Audio {
                        path: path.clone(),
                        text,
                    },
                    None => PlayItem::Tts { text },
                });
            }
            Part::Digits(e, _) => digits(lang, &eval(e, env).to_string(), &mut out),
            Part::OrderNumber(e, _) => {
                let s: String = eval(e, env)
                    .to_string()
                    .chars()
                    .filter(char::is_ascii_digit)
                    .collect();
                let chars: Vec<char> = s.chars().collect();
                for (i, group) in chars.chunks(4).enumerate() {
                    if i > 0 {
                        out.push(PlayItem::Silence { ms: 300 });
                    }
                    digits(lang, &group.iter().collect::<String>(), &mut out);
                }
            }
            Part::Number(e, _) => {
                let v = eval(e, env).to_string();
                match v.trim().parse::<u64>() {
                    Ok(n) => out.extend(number_items(lang, n)),
                    Err(_) => out.push(PlayItem::Tts { text: v }),
                }
            }
            Part::Pause(ms) => out.push(PlayItem::Silence { ms: *ms }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chinese_numbers() {
        let s = |n| number_names(Lang::Zh, n).join(" ");
        assert_eq!(s(0), "0");
        assert_eq!(s(15), "10 5");
        assert_eq!(s(105), "1 hundred 0 5");
        assert_eq!(s(2300), "2 thousand 3 hundred");
        assert_eq!(s(12_0005), "10 2 wan 0 5");
    }

    #[test]
    fn english_numbers() {
        let s = |n| number_names(Lang::En, n).join(" ");
        assert_eq!(s(0), "0");
        assert_eq!(s(42), "40 2");
        assert_eq!(s(1013), "1 thousand 13");
        assert_eq!(s(300), "3 hundred");
    }
}
