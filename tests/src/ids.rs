//! Order ids as the contract describes them: digits ending in a Damm check digit.

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

/// Damm interim digit of a digit string.
pub fn damm(digits: &str) -> u8 {
    digits
        .bytes()
        .fold(0u8, |i, d| DAMM[i as usize][(d - b'0') as usize])
}

/// An order id as the contract describes it: 14-20 digits whose Damm check is 0.
pub fn is_valid_order_id(id: &str) -> bool {
    (14..=20).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_digit()) && damm(id) == 0
}

/// `prefix` (digits) completed with its Damm check digit.
pub fn with_check_digit(prefix: &str) -> String {
    format!("{prefix}{}", damm(prefix))
}
