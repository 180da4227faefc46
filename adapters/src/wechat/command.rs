//! Commands citizens type into a message instead of a report: today only "查询 <order number>".
//!
//! Shared by WeChat and SMS. Only a message that is the command word followed by something that
//! looks like a number is a command: "查询社保转移手续" is a question and must become an order.

use crate::order_number::{OrderNumber, OrderNumberError};

/// What a citizen asked for with "查询 ...".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// "查询" alone: tell them how.
    Usage,
    Order(OrderNumber),
    /// A number that is not a valid order number (mistyped digit, wrong length).
    Invalid(OrderNumberError),
}

const WORDS: [&str; 3] = ["查询", "查", "cx"];

/// Recognize "查询 <number>" (also "查询<number>", a full-width space, full-width digits, a colon).
pub fn parse_query(text: &str) -> Option<Query> {
    let t = text.trim_matches(|c: char| c.is_whitespace() || c == '\u{3000}');
    let rest = WORDS.iter().find_map(|w| {
        t.get(..w.len())
            .filter(|head| head.eq_ignore_ascii_case(w))
            .map(|_| &t[w.len()..])
    })?;
    let rest: String = rest
        .chars()
        .map(|c| match c {
            '０'..='９' => char::from_u32(c as u32 - '０' as u32 + '0' as u32).unwrap_or(c),
            c => c,
        })
        .filter(|c| !matches!(c, ' ' | '\u{3000}' | ':' | '：' | '-' | '#' | '\t'))
        .collect();
    if rest.is_empty() {
        return Some(Query::Usage);
    }
    if !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(match OrderNumber::parse(&rest) {
        Ok(n) => Query::Order(n),
        Err(e) => Query::Invalid(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    #[test]
    fn the_forms_citizens_type() {
        let n = OrderNumber::compose(NaiveDate::from_ymd_opt(2026, 11, 23).expect("date"), 1, 42);
        for t in [
            format!("查询 {n}"),
            format!("查询{n}"),
            format!("查询\u{3000}{n}"),
            format!(" 查询：{n} "),
            format!("CX{n}"),
        ] {
            assert_eq!(parse_query(&t), Some(Query::Order(n.clone())), "{t}");
        }
        let wide: String = n
            .as_str()
            .chars()
            .map(|c| char::from_u32(c as u32 - '0' as u32 + '０' as u32).expect("digit"))
            .collect();
        assert_eq!(
            parse_query(&format!("查询 {wide}")),
            Some(Query::Order(n.clone()))
        );
        let mut typo = n.as_str().to_owned();
        let last = typo.pop().expect("digit");
        typo.push(if last == '0' { '1' } else { '0' });
        assert_eq!(
            parse_query(&format!("查询 {typo}")),
            Some(Query::Invalid(OrderNumberError::CheckDigit))
        );
        assert_eq!(parse_query("查询"), Some(Query::Usage));
        assert_eq!(parse_query("查询社保怎么转移"), None);
        assert_eq!(parse_query("路灯坏了"), None);
    }
}
