//! The working-day calendar (`flows/calendar.yaml`) administrators edit: any text gets a
//! calendar or diagnostics, never a panic; a parsed calendar answers for any date, and a date
//! the parser accepts has a weekday from 1 to 7.
#![no_main]
use ivr_flows::calendar::{Calendar, Date};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for line in text.lines().take(8) {
        if let Some(d) = Date::parse(line) {
            assert!((1..=7).contains(&d.weekday()), "{line}");
        }
    }
    match Calendar::parse("calendar.yaml", text) {
        Ok(calendar) => {
            for (year, month, day) in [(2026, 1, 1), (2026, 10, 1), (2027, 2, 6), (-40, 2, 29)] {
                let d = Date { year, month, day };
                if calendar.is_holiday(d) {
                    assert!(!calendar.is_working_day(d) || d.weekday() > 5);
                }
            }
        }
        Err(diagnostics) => assert!(!diagnostics.is_empty()),
    }
});
