//! Order numbers: what a citizen hears at the end of a call and keys in to check progress.
//!
//! Layout, digits only: `YYMMDD` (the local day the order was received) + `NN` (the node id,
//! unique per gateway node, so nodes never collide without talking to each other) + a sequence
//! number of at least five digits (per node and day; it widens only past 99,999 orders a day) +
//! one check digit.
//!
//! The check digit uses the Damm algorithm rather than Luhn: Damm detects every single-digit error
//! *and* every transposition of adjacent digits (Luhn misses `09`/`90`), which are exactly the
//! mistakes people make when keying a number on a phone pad. It is a 10x10 table, smaller than any
//! crate dependency, so it is written here.

use std::fmt;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

/// The Damm quasigroup of order 10 (weakly totally anti-symmetric), as published by H. M. Damm.
const DAMM: [[u8; 10]; 10] = [
    [0, 3, 1, 7, 5, 9, 8, 6, 4, 2],
    [7, 0, 9, 2, 1, 5, 4, 8, 6, 3],
    [4, 2, 0, 6, 8, 7, 1, 3, 5, 9],
    [1, 7, 5, 0, 9, 8, 3, 4, 2, 6],
    [6, 1, 2, 3, 0, 4, 5, 9, 7, 8],
    [3, 6, 7, 4, 2, 0, 9, 5, 8, 1],
    [5, 8, 6, 9, 7, 2, 0, 1, 3, 4],
    [8, 9, 4, 5, 3, 6, 2, 0, 1, 7],
    [9, 4, 3, 8, 6, 1, 7, 2, 0, 5],
    [2, 5, 8, 1, 4, 3, 6, 7, 9, 0],
];

/// Shortest valid order number: 6 (date) + 2 (node) + 5 (sequence) + 1 (check).
pub const MIN_LEN: usize = 14;
/// Longest accepted order number (a sequence of up to 11 digits).
pub const MAX_LEN: usize = 20;
/// Node ids are two digits.
pub const MAX_NODE: u8 = 99;

/// The Damm check digit of a string of ASCII digits. Non-digits are a caller error and are
/// rejected by [`OrderNumber::parse`] before this runs.
pub fn damm_check_digit(digits: &[u8]) -> u8 {
    digits.iter().fold(0u8, |interim, d| {
        DAMM[interim as usize][(d - b'0') as usize % 10]
    })
}

/// A validated order number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OrderNumber(String);

/// Why a string is not an order number; the message is fit to show to a citizen or integrator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderNumberError {
    #[error("an order number has only digits")]
    NotDigits,
    #[error("an order number has {MIN_LEN} to {MAX_LEN} digits, this one has {0}")]
    Length(usize),
    #[error("the check digit does not match: a digit was mistyped or two were swapped")]
    CheckDigit,
}

impl OrderNumber {
    /// Compose the number for the `seq`-th order of `node` on `day`.
    pub fn compose(day: NaiveDate, node: u8, seq: u64) -> Self {
        use chrono::Datelike;
        let mut s = format!(
            "{:02}{:02}{:02}{:02}{:05}",
            day.year().rem_euclid(100),
            day.month(),
            day.day(),
            node.min(MAX_NODE),
            seq
        );
        let check = damm_check_digit(s.as_bytes());
        s.push(char::from(b'0' + check));
        OrderNumber(s)
    }

    /// Parse what a citizen typed or an integrator sent. Spaces and dashes that people use to
    /// group digits are ignored.
    pub fn parse(input: &str) -> Result<Self, OrderNumberError> {
        let cleaned: String = input
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '\u{3000}'))
            .collect();
        if cleaned.is_empty() || !cleaned.bytes().all(|b| b.is_ascii_digit()) {
            return Err(OrderNumberError::NotDigits);
        }
        if !(MIN_LEN..=MAX_LEN).contains(&cleaned.len()) {
            return Err(OrderNumberError::Length(cleaned.len()));
        }
        if damm_check_digit(cleaned.as_bytes()) != 0 {
            return Err(OrderNumberError::CheckDigit);
        }
        Ok(OrderNumber(cleaned))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The node that issued this number.
    pub fn node(&self) -> u8 {
        let b = self.0.as_bytes();
        (b[6] - b'0') * 10 + (b[7] - b'0')
    }

    /// The sequence number within its node and day.
    pub fn sequence(&self) -> u64 {
        self.0[8..self.0.len() - 1].parse().unwrap_or(0)
    }
}

impl fmt::Display for OrderNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for OrderNumber {
    type Error = OrderNumberError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        OrderNumber::parse(&s)
    }
}

impl From<OrderNumber> for String {
    fn from(n: OrderNumber) -> String {
        n.0
    }
}

impl std::str::FromStr for OrderNumber {
    type Err = OrderNumberError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OrderNumber::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 23).expect("valid date")
    }

    #[test]
    fn damm_matches_the_published_example() {
        // Damm's worked example: 572 has check digit 4.
        assert_eq!(damm_check_digit(b"572"), 4);
        assert_eq!(damm_check_digit(b"5724"), 0);
    }

    #[test]
    fn composed_numbers_parse_back_with_their_parts() {
        let n = OrderNumber::compose(day(), 7, 42);
        assert_eq!(n.as_str().len(), MIN_LEN);
        assert!(n.as_str().starts_with("26112307"));
        let parsed = OrderNumber::parse(n.as_str()).expect("valid");
        assert_eq!(parsed, n);
        assert_eq!(parsed.node(), 7);
        assert_eq!(parsed.sequence(), 42);
    }

    #[test]
    fn sequence_widens_past_five_digits() {
        let n = OrderNumber::compose(day(), 1, 1_234_567);
        assert_eq!(n.as_str().len(), MIN_LEN + 2);
        assert_eq!(
            OrderNumber::parse(n.as_str()).expect("valid").sequence(),
            1_234_567
        );
    }

    #[test]
    fn every_single_digit_error_is_caught() {
        let n = OrderNumber::compose(day(), 3, 98_765);
        let bytes = n.as_str().as_bytes().to_vec();
        for i in 0..bytes.len() {
            for d in b'0'..=b'9' {
                if d == bytes[i] {
                    continue;
                }
                let mut typo = bytes.clone();
                typo[i] = d;
                let s = String::from_utf8(typo).expect("ascii");
                assert_eq!(
                    OrderNumber::parse(&s),
                    Err(OrderNumberError::CheckDigit),
                    "{s}"
                );
            }
        }
    }

    #[test]
    fn every_adjacent_transposition_is_caught() {
        for seq in [0u64, 9, 90, 12_345, 90_909] {
            let n = OrderNumber::compose(day(), 9, seq);
            let bytes = n.as_str().as_bytes().to_vec();
            for i in 0..bytes.len() - 1 {
                if bytes[i] == bytes[i + 1] {
                    continue;
                }
                let mut swapped = bytes.clone();
                swapped.swap(i, i + 1);
                let s = String::from_utf8(swapped).expect("ascii");
                assert!(OrderNumber::parse(&s).is_err(), "{s} passed");
            }
        }
    }

    #[test]
    fn malformed_input_gets_a_clear_error() {
        assert_eq!(OrderNumber::parse(""), Err(OrderNumberError::NotDigits));
        assert_eq!(
            OrderNumber::parse("26112301abc"),
            Err(OrderNumberError::NotDigits)
        );
        assert_eq!(OrderNumber::parse("٣٤٥"), Err(OrderNumberError::NotDigits));
        assert_eq!(OrderNumber::parse("1234"), Err(OrderNumberError::Length(4)));
        assert_eq!(
            OrderNumber::parse(&"1".repeat(40)),
            Err(OrderNumberError::Length(40))
        );
    }

    #[test]
    fn grouping_spaces_and_dashes_are_ignored() {
        let n = OrderNumber::compose(day(), 1, 5);
        let s = n.as_str();
        let grouped = format!("{} {}-{}", &s[..6], &s[6..8], &s[8..]);
        assert_eq!(OrderNumber::parse(&grouped).expect("valid"), n);
    }
}
