//! The Damm check digit used by 12345 order numbers, for `check: order_number` in collect steps.
//!
//! Callers key in order numbers; a mistyped or transposed digit must be caught before we ask the
//! back office. The algorithm and the number format live in `adapters::order_number`, the one
//! definition the whole gateway shares; these are the shapes the interpreter needs.

use adapters::order_number::{OrderNumber, damm_check_digit};

/// The check digit to append to `digits`; `None` if any byte is not an ASCII digit.
pub fn check_digit(digits: &str) -> Option<char> {
    digits
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| char::from(b'0' + damm_check_digit(digits.as_bytes())))
}

/// True if `s` is a well-formed order number: 14–20 ASCII digits with a valid check digit.
pub fn is_valid_order_number(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit()) && OrderNumber::parse(s).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_numbers() {
        assert_eq!(check_digit("572"), Some('4'));
        assert_eq!(check_digit("57a"), None);
        let base = "2611230100042";
        let full = format!("{base}{}", check_digit(base).expect("digits"));
        assert!(is_valid_order_number(&full));
        let mut swapped: Vec<char> = full.chars().collect();
        swapped.swap(3, 4);
        assert!(!is_valid_order_number(
            &swapped.into_iter().collect::<String>()
        ));
        assert!(!is_valid_order_number("5724"));
        assert!(!is_valid_order_number("2611230100042x"));
        assert!(!is_valid_order_number("261123 01000427"));
    }
}
