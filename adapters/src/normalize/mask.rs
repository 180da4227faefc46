//! Masking personal data before it reaches a log line.
//!
//! Phone numbers keep their first three and last four digits (`138****8000`, how Chinese
//! services print them so a citizen still recognises their own), ID card numbers keep region
//! and check digits (`420102********123X`), names keep the family name (`张*`). [`Masked`] wraps any
//! free text for `tracing` fields so that a phone or ID number typed into a complaint is masked
//! too, and so is a name the citizen introduces in the text ("我叫张三", "联系人：李四").

use std::borrow::Cow;
use std::fmt;

/// Mask a phone number for display: `13800138000` -> `138****8000`.
pub fn mask_phone(phone: &str) -> String {
    let digits: Vec<char> = phone.chars().filter(char::is_ascii_digit).collect();
    if digits.len() < 7 {
        return "*".repeat(digits.len().max(3));
    }
    let head: String = digits[..3].iter().collect();
    let tail: String = digits[digits.len() - 4..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(digits.len() - 7))
}

/// Mask an ID card number: keep the six region digits and the last four.
pub fn mask_id_number(id: &str) -> String {
    let chars: Vec<char> = id.chars().collect();
    if chars.len() < 10 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..6].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 10))
}

/// Mask a name: keep the first character (the family name in Chinese names).
pub fn mask_name(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        None => String::new(),
        Some(first) => {
            let rest = chars.count().max(1);
            format!("{first}{}", "*".repeat(rest))
        }
    }
}

/// How a run of digits in free text is masked, by its shape: 18 characters (17 digits and a
/// digit or X) is an ID card number; 7 to 13 digits is a phone number (mobile, landline with or
/// without area code, with 86). Shorter runs (house numbers, amounts) and longer ones (order
/// numbers) stay.
fn mask_run(run: &str) -> Option<String> {
    let digits = run.chars().filter(char::is_ascii_digit).count();
    let ends_x = run.ends_with(['X', 'x']);
    if digits == 18 || (digits == 17 && ends_x) {
        let compact: String = run.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
        Some(mask_id_number(&compact))
    } else if (7..=13).contains(&digits) && !ends_x {
        Some(mask_phone(run))
    } else {
        None
    }
}

/// Words after which a citizen introduces a name: "我叫张三", "联系人：李四".
const NAME_INTRODUCERS: &[&str] = &[
    "我叫",
    "名叫",
    "名字叫",
    "名字是",
    "姓名",
    "联系人",
    "投诉人",
    "举报人",
    "求助人",
    "来电人",
    "当事人",
];

/// Characters that end a name early: what usually follows a name in a sentence.
const AFTER_NAME: &[char] = &[
    '住', '在', '是', '的', '电', '手', '家', '今', '现', '，', '。', '、', '先', '女', '老', '同',
    '身', '联', '系', '和', '与', '及', '我', '他', '她', '反', '想', '要', '因', '从', '来', '年',
];

fn is_han(c: char) -> bool {
    ('\u{4e00}'..='\u{9fff}').contains(&c)
}

/// Mask names that the text introduces ("我叫张三" -> "我叫张*"): two to four Han characters
/// after an introducer (and an optional colon or "是"), ending early at a character that
/// usually follows a name. Names elsewhere cannot be told from ordinary words without a
/// dictionary, so they are left alone; the citizen's own name field is masked by [`mask_name`].
pub fn mask_names(text: &str) -> Cow<'_, str> {
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut search = 0;
    while let Some((at, intro)) = NAME_INTRODUCERS
        .iter()
        .filter_map(|w| text[search..].find(w).map(|i| (search + i, *w)))
        .min()
    {
        let mut start = at + intro.len();
        let rest = &text[start..];
        let skipped = rest.len() - rest.trim_start_matches([':', '：', ' ', '是']).len();
        start += skipped;
        let mut end = start;
        for (n, c) in text[start..].chars().enumerate() {
            if n >= 4 || !is_han(c) || AFTER_NAME.contains(&c) {
                break;
            }
            end += c.len_utf8();
        }
        if text[start..end].chars().count() >= 2 {
            let buf = out.get_or_insert_with(|| String::with_capacity(text.len()));
            buf.push_str(&text[copied..start]);
            buf.push_str(&mask_name(&text[start..end]));
            copied = end;
        }
        search = end.max(at + intro.len());
    }
    match out {
        None => Cow::Borrowed(text),
        Some(mut buf) => {
            buf.push_str(&text[copied..]);
            Cow::Owned(buf)
        }
    }
}

/// Mask every phone number, ID number and introduced name inside free text.
pub fn mask_text(text: &str) -> Cow<'_, str> {
    match mask_numbers(text) {
        Cow::Borrowed(t) => mask_names(t),
        Cow::Owned(t) => match mask_names(&t) {
            Cow::Borrowed(_) => Cow::Owned(t),
            Cow::Owned(named) => Cow::Owned(named),
        },
    }
}

/// Mask every phone and ID number inside free text. A number is a run of digits that may be
/// grouped by single spaces or dashes (`027-8888 6666`), may start with `+` and (ID cards) end
/// with `X`. Written as a scanner rather than a regex because the boundaries (a run must not
/// touch other digits) need look-around, which the `regex` crate deliberately lacks.
pub fn mask_numbers(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        if !(bytes[i].is_ascii_digit()
            || (bytes[i] == b'+' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit)))
        {
            i += 1;
            continue;
        }
        let start = i;
        i += 1;
        while i < bytes.len() {
            let b = bytes[i];
            if b.is_ascii_digit() {
                i += 1;
            } else if (b == b' ' || b == b'-') && bytes.get(i + 1).is_some_and(u8::is_ascii_digit) {
                i += 2;
            } else {
                break;
            }
        }
        // A trailing X belongs to the run only where it completes an ID card number.
        let digits = text[start..i].bytes().filter(u8::is_ascii_digit).count();
        if digits == 17 && i < bytes.len() && (bytes[i] == b'X' || bytes[i] == b'x') {
            i += 1;
        }
        let run = &text[start..i];
        if let Some(masked) = mask_run(run) {
            let buf = out.get_or_insert_with(|| String::with_capacity(text.len()));
            buf.push_str(&text[copied..start]);
            buf.push_str(&masked);
            copied = i;
        }
    }
    match out {
        None => Cow::Borrowed(text),
        Some(mut buf) => {
            buf.push_str(&text[copied..]);
            Cow::Owned(buf)
        }
    }
}

/// Free text wrapped for logging: `tracing::info!(text = %Masked(&s))`.
#[derive(Debug, Clone, Copy)]
pub struct Masked<'a>(pub &'a str);

impl fmt::Display for Masked<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&mask_text(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_keep_head_and_tail() {
        assert_eq!(mask_phone("13800138000"), "138****8000");
        assert_eq!(mask_phone("+8613800138000"), "861******8000");
        assert_eq!(mask_phone("12"), "***");
    }

    #[test]
    fn ids_and_names() {
        assert_eq!(mask_id_number("42010219900101123X"), "420102********123X");
        assert_eq!(mask_name("张三丰"), "张**");
        assert_eq!(mask_name("李"), "李*");
        assert_eq!(mask_name(""), "");
    }

    #[test]
    fn numbers_inside_text_are_masked() {
        let t = "我叫王五，电话13800138000，身份证42010219900101123X，座机027-88886666。";
        let m = mask_text(t);
        assert!(!m.contains("13800138000"), "{m}");
        assert!(!m.contains("19900101"), "{m}");
        assert!(!m.contains("88886666"), "{m}");
        assert!(m.contains("138****8000"), "{m}");
        assert!(m.contains("420102********123X"), "{m}");
        assert_eq!(mask_text("13800138000X"), "138****8000X");
        let two = mask_text("13800138000,13900139000");
        assert_eq!(two, "138****8000,139****9000");
    }

    #[test]
    fn introduced_names_are_masked() {
        assert_eq!(
            mask_text("我叫张三，电话13800138000"),
            "我叫张*，电话138****8000"
        );
        assert_eq!(mask_text("联系人：李四光住在光谷"), "联系人：李**住在光谷");
        assert_eq!(mask_text("姓名 欧阳娜娜。"), "姓名 欧***。");
        assert_eq!(mask_text("我叫王五住在洪山"), "我叫王*住在洪山");
        // No name after the introducer, or too short: nothing to mask.
        assert_eq!(mask_text("联系人电话"), "联系人电话");
        assert_eq!(mask_text("我叫了"), "我叫了");
        assert_eq!(mask_text("我叫"), "我叫");
        let logged = format!("{}", Masked("投诉人：赵六，手机13900139000"));
        assert_eq!(logged, "投诉人：赵*，手机139****9000");
    }

    #[test]
    fn ordinary_numbers_stay() {
        assert_eq!(mask_text("3号楼2单元漏水 20户"), "3号楼2单元漏水 20户");
        assert_eq!(mask_text("订单261123010000427"), "订单261123010000427");
    }
}
