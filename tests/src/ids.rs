//! Order ids as the contract describes them: digits ending in a Damm check digit; and the
//! published WorkOrder JSON Schema that orders are checked against.

/// Damm interim digit of a digit string (0 when its last digit is the check digit).
pub fn damm(digits: &str) -> u8 {
    adapters::order_number::damm_check_digit(digits.as_bytes())
}

/// An order id as the contract describes it: 14-20 digits whose Damm check is 0.
pub fn is_valid_order_id(id: &str) -> bool {
    (14..=20).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_digit()) && damm(id) == 0
}

/// `prefix` (digits) completed with its Damm check digit.
pub fn with_check_digit(prefix: &str) -> String {
    format!("{prefix}{}", damm(prefix))
}

/// The published WorkOrder JSON Schema, `adapters/schema/work-order.schema.json`.
pub fn work_order_schema() -> serde_json::Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../adapters/schema/work-order.schema.json"
    );
    let text = std::fs::read_to_string(path).expect("read the WorkOrder schema");
    serde_json::from_str(&text).expect("the schema is JSON")
}
