//! Masking personal data before it reaches a log line.
//!
//! Phone numbers keep their first three and last four digits (`138****8000`, how Chinese
//! services print them so a citizen still recognises their own), ID card numbers keep region
//! and check digits (`420102********123X`), names keep the family name (`张*`). [`Masked`] wraps any
//! free text for `tracing` fields so that a phone or ID number typed into a complaint is masked
//! too, and so is a name the citizen introduces in the text ("我叫张三", "联系人：李四").

use std::borrow::Cow;
use std::fmt;

use crate::order_number::{MAX_LEN, MIN_LEN, damm_check_digit};

/// Mask a phone number for display: `13800138000` -> `138****8000`. At least four digits are
/// always hidden: a shorter number (a 7- to 10-digit landline) keeps fewer at each end
/// (`88886666` -> `88****66`), since head 3 and tail 4 of it would leave it readable.
pub fn mask_phone(phone: &str) -> String {
    let digits: Vec<char> = phone.chars().filter(char::is_ascii_digit).collect();
    let (keep_head, keep_tail) = match digits.len() {
        0..=6 => return "*".repeat(digits.len().max(3)),
        7 => (1, 2),
        8..=10 => (2, 2),
        _ => (3, 4),
    };
    let head: String = digits[..keep_head].iter().collect();
    let tail: String = digits[digits.len() - keep_tail..].iter().collect();
    format!(
        "{head}{}{tail}",
        "*".repeat(digits.len() - keep_head - keep_tail)
    )
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

/// The introducers in one automaton: the earliest in the text, and at one position the
/// smallest word (they are sorted), as the scan for each word in turn found them.
static INTRODUCERS: std::sync::LazyLock<aho_corasick::AhoCorasick> =
    std::sync::LazyLock::new(|| {
        let mut words = NAME_INTRODUCERS.to_vec();
        words.sort_unstable();
        // Built from the constant list above, never from input: it cannot fail.
        #[allow(clippy::expect_used)]
        aho_corasick::AhoCorasick::builder()
            .match_kind(aho_corasick::MatchKind::LeftmostFirst)
            .build(words)
            .expect("the name introducers build an automaton")
    });

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
    while let Some((at, intro)) = INTRODUCERS
        .find(aho_corasick::Input::new(text).range(search..))
        .map(|m| (m.start(), &text[m.start()..m.end()]))
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

/// One group of digits inside a number run: `start..end` in bytes of the text.
#[derive(Debug, Clone, Copy)]
struct Group {
    start: usize,
    end: usize,
    digits: usize,
}

/// What a stretch of groups is, judged by its shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// An order number of ours (valid date and Damm check digit): stays readable.
    OrderNumber,
    /// An ID card number (18 characters, 17 digits and a digit or X).
    IdNumber,
    /// A phone number: a mobile, a landline with or without area code or 86.
    Phone,
    /// Any other run of 14 or more digits (a bank card, numbers written together): masked too.
    LongNumber,
}

/// Is `digits` (ASCII digits only) one of our order numbers? Besides the Damm check digit the
/// first six digits must be a real date (`YYMMDD`), so a phone number with an extension has
/// about one chance in a hundred, not one in ten, of passing; an ID card number whose own
/// check digit is right is never taken for one.
fn is_order_number(digits: &str) -> bool {
    let b = digits.as_bytes();
    if !(MIN_LEN..=MAX_LEN).contains(&b.len()) || !b.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let two = |i: usize| u32::from(b[i] - b'0') * 10 + u32::from(b[i + 1] - b'0');
    let date_ok = chrono::NaiveDate::from_ymd_opt(2000 + two(0) as i32, two(2), two(4)).is_some();
    date_ok && damm_check_digit(b) == 0 && !(b.len() == 18 && id_check_ok(digits))
}

/// The ISO 7064 MOD 11-2 check character of a Chinese resident ID number (GB 11643).
fn id_check_ok(id: &str) -> bool {
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    const CHECK: &[u8; 11] = b"10X98765432";
    let b = id.as_bytes();
    if b.len() != 18 || !b[..17].iter().all(u8::is_ascii_digit) {
        return false;
    }
    let sum: u32 = b[..17]
        .iter()
        .zip(WEIGHTS)
        .map(|(d, w)| u32::from(d - b'0') * w)
        .sum();
    CHECK[(sum % 11) as usize] == b[17].to_ascii_uppercase()
}

/// A mobile number: 11 digits starting 1[3-9].
fn is_mobile(digits: &str) -> bool {
    let b = digits.as_bytes();
    b.len() == 11 && b[0] == b'1' && (b'3'..=b'9').contains(&b[1])
}

/// The digits (and a final X) of `text[start..end]`, separators dropped.
fn compact(text: &str, start: usize, end: usize) -> String {
    text[start..end]
        .chars()
        .filter(|c| c.is_ascii_digit() || matches!(c, 'X' | 'x'))
        .collect()
}

/// The stretch of groups starting at `groups[i]` that forms one number, and its shape; `None`
/// when `groups[i]` is a short number (house number, amount, extension) that stays as written.
///
/// Each group is judged on its own as well as joined with its neighbours, so that a number
/// cannot hide behind the digits that follow it ("13800138000-8001", "13800138000 13900139000"):
/// an order number is kept only where no group in it is a phone number on its own; an ID card
/// number is 18 characters in one group, or grouped with its own check digit right; a phone number takes as many groups as fit in
/// 13 digits; anything longer than that, in one group, is masked as a whole.
fn shape_at(text: &str, groups: &[Group], i: usize, ends_x: bool) -> Option<(usize, Shape)> {
    let mut total = 0;
    let mut id_end = None;
    let mut phone_end = None;
    let mut mobile = false;
    for (j, g) in groups.iter().enumerate().skip(i) {
        total += g.digits;
        let last = j + 1 == groups.len();
        if total > MAX_LEN.max(18) {
            break;
        }
        if (MIN_LEN..=MAX_LEN).contains(&total)
            && (j == i || groups[i..=j].iter().all(|g| g.digits < 7))
            && is_order_number(&compact(text, groups[i].start, g.end))
        {
            return Some((j, Shape::OrderNumber));
        }
        // An ID card number in one group, or grouped (6-8-4) with its own check digit right
        // and no mobile number at its front (one in eleven 3-4-4 pairs of mobiles would pass).
        let id_shaped = total == 18 || (total == 17 && last && ends_x);
        if id_end.is_none()
            && id_shaped
            && (j == i || (!mobile && id_check_ok(&compact(text, groups[i].start, g.end))))
        {
            id_end = Some(j);
        }
        mobile |= total == 11 && is_mobile(&compact(text, groups[i].start, g.end));
        if (7..=13).contains(&total) {
            phone_end = Some(j);
        }
    }
    if let Some(j) = id_end {
        return Some((j, Shape::IdNumber));
    }
    if let Some(j) = phone_end {
        return Some((j, Shape::Phone));
    }
    (groups[i].digits > 13).then_some((i, Shape::LongNumber))
}

/// Mask every phone and ID number inside free text. A number is a run of digits that may be
/// grouped by single spaces or dashes (`027-8888 6666`), may start with `+` and (ID cards) end
/// with `X`; the groups of a run are then judged by [`shape_at`]. Written as a scanner rather
/// than a regex because the boundaries (a run must not touch other digits) need look-around,
/// which the `regex` crate deliberately lacks.
pub fn mask_numbers(text: &str) -> Cow<'_, str> {
    if text.contains(is_fullwidth) {
        // Full-width digits ("１３８００１３８０００") are what a Chinese keyboard types in its
        // full-width mode: read them as ASCII first, so they are masked like any other.
        let ascii: String = text.chars().map(to_ascii).collect();
        return Cow::Owned(mask_numbers(&ascii).into_owned());
    }
    let bytes = text.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    let mut groups: Vec<Group> = Vec::new();
    while i < bytes.len() {
        if !(bytes[i].is_ascii_digit()
            || (bytes[i] == b'+' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit)))
        {
            i += 1;
            continue;
        }
        groups.clear();
        let mut start = i;
        i += 1;
        loop {
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            let digits = text[start..i].bytes().filter(u8::is_ascii_digit).count();
            groups.push(Group {
                start,
                end: i,
                digits,
            });
            if i + 1 < bytes.len()
                && matches!(bytes[i], b' ' | b'-')
                && bytes[i + 1].is_ascii_digit()
            {
                start = i + 1;
                i += 1;
            } else {
                break;
            }
        }
        // A trailing X belongs to the run only where it can complete an ID card number.
        let ends_x = i < bytes.len()
            && matches!(bytes[i], b'X' | b'x')
            && groups.iter().map(|g| g.digits).sum::<usize>() >= 17;
        if ends_x {
            i += 1;
            if let Some(last) = groups.last_mut() {
                last.end = i;
            }
        }
        let mut g = 0;
        while g < groups.len() {
            let Some((end, shape)) = shape_at(text, &groups, g, ends_x) else {
                g += 1;
                continue;
            };
            let (from, to) = (groups[g].start, groups[end].end);
            let masked = match shape {
                Shape::OrderNumber => None,
                Shape::IdNumber => Some(mask_id_number(&compact(text, from, to))),
                Shape::Phone | Shape::LongNumber => Some(mask_phone(&text[from..to])),
            };
            if let Some(masked) = masked {
                let buf = out.get_or_insert_with(|| String::with_capacity(text.len()));
                buf.push_str(&text[copied..from]);
                // The `+` stays, so the masked digits never join digits written before it.
                if bytes[from] == b'+' {
                    buf.push('+');
                }
                buf.push_str(&masked);
                copied = to;
            }
            g = end + 1;
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

fn is_fullwidth(c: char) -> bool {
    matches!(c, '\u{ff10}'..='\u{ff19}' | '\u{ff0b}' | '\u{ff0d}')
}

/// A full-width digit, plus or minus as its ASCII twin; any other character as it is.
fn to_ascii(c: char) -> char {
    if is_fullwidth(c) {
        char::from_u32(u32::from(c) - 0xfee0).unwrap_or(c)
    } else {
        c
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
        assert_eq!(mask_text("订单261123010000423"), "订单261123010000423");
        assert_eq!(mask_text("工单 26112301000012"), "工单 26112301000012");
        assert_eq!(mask_text("工单2611-2301-0000-12"), "工单2611-2301-0000-12");
        assert_eq!(mask_text("共计 500-800 元"), "共计 500-800 元");
    }

    /// Every digit run of exactly 11 digits starting 1[3-9] left in `masked`.
    fn mobiles_left(masked: &str) -> Vec<String> {
        masked
            .split(|c: char| !c.is_ascii_digit())
            .filter(|r| r.len() == 11 && r.starts_with('1') && !r.starts_with("10"))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn a_number_cannot_hide_behind_digits_that_follow_it() {
        // The cases the fuzzer and the Open311 API found (issue 19).
        assert_eq!(
            mask_text("13800138000 13900139000"),
            "138****8000 139****9000"
        );
        assert_eq!(
            mask_text("联系电话13800138000-8001"),
            "联系电话138****8000-8001"
        );
        assert_eq!(mask_text("16816168161 844"), "168****8161 844");
        let published = "江汉路井盖缺失，联系电话13800138000-8001，或13900139000 13700137000";
        let m = mask_text(published);
        assert!(mobiles_left(&m).is_empty(), "{m}");
        assert_eq!(
            m,
            "江汉路井盖缺失，联系电话138****8000-8001，或139****9000 137****7000"
        );
        // More groups, in front and behind, of every length.
        for t in [
            "12345 13800138000",
            "13800138000 12345 13900139000",
            "1 2 13800138000",
            "13800138000-13900139000-13700137000",
            "13800138000 26112301000012",
            "8001-13800138000",
            "1380013800013900139000",
            "138 0013 8000 139 0013 9000",
        ] {
            let m = mask_text(t);
            assert!(mobiles_left(&m).is_empty(), "{t} -> {m}");
            assert!(!m.contains("0013"), "{t} -> {m}");
        }
        // An order number after a phone number stays readable; the phone does not.
        assert_eq!(
            mask_text("13800138000 26112301000012"),
            "138****8000 26112301000012"
        );
    }

    #[test]
    fn landlines_with_area_codes_and_extensions() {
        assert_eq!(mask_text("座机027-88886666"), "座机027****6666");
        assert_eq!(mask_text("座机027-8888-6666-8001"), "座机027****6666-8001");
        assert_eq!(mask_text("010-12345678-8001"), "010****5678-8001");
        let m = mask_text("027 8888 6666 13800138000");
        assert!(!m.contains("8888"), "{m}");
        assert!(mobiles_left(&m).is_empty(), "{m}");
        assert_eq!(mask_text("+86 138 0013 8000"), "+861******8000");
        assert_eq!(mask_text("电话88886666"), "电话88****66");
        assert_eq!(mask_text("电话8886666"), "电话8****66");
    }

    #[test]
    fn id_numbers_however_grouped() {
        assert_eq!(
            mask_text("身份证420102 19900101 121X"),
            "身份证420102********121X"
        );
        // Its own check digit right: an ID number, even where Damm's also happens to pass.
        let id = "420102199001011236";
        assert_eq!(damm_check_digit(id.as_bytes()), 0);
        assert!(id_check_ok(id));
        assert!(!is_order_number(id));
        assert_eq!(mask_text(id), "420102********1236");
        // A bank card or any other long run: masked too.
        assert_eq!(
            mask_text("卡号6222021234567890123"),
            "卡号622************0123"
        );
    }

    #[test]
    fn order_numbers_only_with_their_check_digit_and_date() {
        assert!(is_order_number("26112301000012"));
        // One digit changed: the check digit says it is not an order number, so it is masked.
        assert!(!is_order_number("26112301000013"));
        assert_ne!(mask_text("26112301000013"), "26112301000013");
        // A valid check digit on a date that does not exist: not ours.
        let fake = {
            let mut s = String::from("2613320100001");
            s.push(char::from(b'0' + damm_check_digit(s.as_bytes())));
            s
        };
        assert!(!is_order_number(&fake));
        assert_ne!(mask_text(&fake), fake);
    }

    /// Found by the `mask_text` fuzz target: a 7-digit number came out whole, right after the
    /// digits before its `+`, so together they read as a mobile number.
    #[test]
    fn masked_digits_never_join_the_digits_before_them() {
        let m = mask_text("身份证1352+2 199001`1 121X");
        assert!(mobiles_left(&m).is_empty(), "{m}");
        assert_eq!(m, "身份证1352+2****01`1 121X");
    }

    #[test]
    fn full_width_digits_are_masked() {
        assert_eq!(mask_text("电话１３８００１３８０００"), "电话138****8000");
        assert_eq!(
            mask_text("１３８００１３８０００－８００１"),
            "138****8000-8001"
        );
    }
}
