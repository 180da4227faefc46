//! The Damm check digit used by 12345 order numbers.
//!
//! Callers key in 14–20 digit order numbers; a single mistyped or transposed digit must be
//! caught before we ask the back office, so the interpreter validates `check: order_number`
//! locally. Kept here (not shared with `adapters`) so the flow crate has no dependencies on the
//! rest of the gateway.

const TABLE: [[u8; 10]; 10] = [
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

/// Folds ASCII digits through the Damm table; `None` if any byte is not a digit.
fn fold(digits: &str) -> Option<u8> {
    let mut interim = 0u8;
    for b in digits.bytes() {
        if !b.is_ascii_digit() {
            return None;
        }
        interim = TABLE[usize::from(interim)][usize::from(b - b'0')];
    }
    Some(interim)
}

/// The check digit to append to `digits` (ASCII digits only).
pub fn check_digit(digits: &str) -> Option<char> {
    fold(digits).map(|d| char::from(b'0' + d))
}

/// True if `s` is ASCII digits whose Damm fold is 0.
pub fn is_valid(s: &str) -> bool {
    !s.is_empty() && fold(s) == Some(0)
}

/// True if `s` is a well-formed 12345 order number: 14–20 ASCII digits with a valid Damm check.
pub fn is_valid_order_number(s: &str) -> bool {
    (14..=20).contains(&s.len()) && is_valid(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_example() {
        assert_eq!(check_digit("572"), Some('4'));
        assert!(is_valid("5724"));
        assert!(!is_valid("5714"));
    }

    #[test]
    fn order_numbers() {
        let base = "2611230100042";
        let full = format!("{base}{}", check_digit(base).expect("digits"));
        assert!(is_valid_order_number(&full));
        let swapped: String = {
            let mut c: Vec<char> = full.chars().collect();
            c.swap(3, 4);
            c.into_iter().collect()
        };
        assert!(!is_valid_order_number(&swapped));
        assert!(!is_valid_order_number("5724"));
        assert!(!is_valid_order_number("2611230100042x"));
    }
}
