//! The working-day calendar: which dates are public holidays and which weekend dates are
//! make-up workdays (调休). Chinese public holidays move every year and shift weekends, so
//! "Monday to Friday" is wrong several weeks a year; the hotline's after-hours routing reads
//! this file instead (`flows/calendar.yaml`).

use crate::diagnostic::Diagnostic;
use crate::yaml::{self, Node, NodeKind};
use std::collections::BTreeSet;

/// A civil date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    /// Year, e.g. 2026.
    pub year: i32,
    /// Month 1–12.
    pub month: u32,
    /// Day 1–31.
    pub day: u32,
}

impl Date {
    /// Parses `YYYY-MM-DD`.
    pub fn parse(s: &str) -> Option<Date> {
        let mut it = s.trim().splitn(3, '-');
        let year = it.next()?.parse().ok()?;
        let month = it.next()?.parse().ok()?;
        let day = it.next()?.parse().ok()?;
        ((1..=12).contains(&month) && (1..=31).contains(&day)).then_some(Date { year, month, day })
    }

    /// ISO weekday: 1 = Monday … 7 = Sunday.
    pub fn weekday(self) -> u32 {
        // Days since 1970-01-01 (a Thursday), H. Hinnant's days_from_civil.
        let y = i64::from(self.year) - i64::from(self.month <= 2);
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let m = i64::from(self.month);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(self.day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        // 1970-01-01 was a Thursday (ISO 4).
        u32::try_from((days + 3).rem_euclid(7) + 1).unwrap_or(1)
    }
}

/// Local wall-clock time at call start, supplied by the gateway (the engine reads no clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalTime {
    /// The date.
    pub date: Date,
    /// Hour 0–23.
    pub hour: u32,
    /// Minute 0–59.
    pub minute: u32,
}

impl From<chrono::NaiveDateTime> for LocalTime {
    /// The hotline's local wall-clock time as the calendar reads it (seconds dropped).
    fn from(t: chrono::NaiveDateTime) -> Self {
        use chrono::{Datelike, Timelike};
        LocalTime {
            date: Date {
                year: t.year(),
                month: t.month(),
                day: t.day(),
            },
            hour: t.hour(),
            minute: t.minute(),
        }
    }
}

/// Holidays and make-up workdays.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Calendar {
    /// Public holidays (no service on these days even if they fall on a weekday).
    pub holidays: BTreeSet<Date>,
    /// Weekend days that are working days.
    pub workdays: BTreeSet<Date>,
}

impl Calendar {
    /// True if the date is a public holiday.
    pub fn is_holiday(&self, d: Date) -> bool {
        self.holidays.contains(&d)
    }

    /// True on weekdays that are not holidays, and on make-up workdays.
    pub fn is_working_day(&self, d: Date) -> bool {
        self.workdays.contains(&d) || (d.weekday() <= 5 && !self.is_holiday(d))
    }

    /// Parses `calendar.yaml`: `holidays:` and `workdays:` lists of `YYYY-MM-DD`.
    pub fn parse(file: &str, text: &str) -> Result<Calendar, Vec<Diagnostic>> {
        let root = yaml::parse(file, text)?;
        let mut cal = Calendar::default();
        let mut diags = Vec::new();
        let Some(root) = root else { return Ok(cal) };
        let Some(entries) = root.as_map() else {
            return Err(vec![Diagnostic::new(
                file,
                root.pos,
                "calendar should be a mapping",
                "write `holidays:` and `workdays:` lists",
            )]);
        };
        for (k, v) in entries {
            let set = match k.as_str() {
                Some("holidays") => &mut cal.holidays,
                Some("workdays") => &mut cal.workdays,
                other => {
                    let hint = crate::diagnostic::suggest(
                        other.unwrap_or_default(),
                        ["holidays", "workdays"],
                        || "allowed: holidays, workdays".into(),
                    );
                    diags.push(Diagnostic::new(
                        file,
                        k.pos,
                        format!(
                            "unknown field \"{}\" in the calendar",
                            other.unwrap_or_default()
                        ),
                        hint,
                    ));
                    continue;
                }
            };
            let items: Vec<&Node> = match &v.kind {
                NodeKind::Seq(items) => items.iter().collect(),
                _ if v.is_null() => Vec::new(),
                _ => vec![v],
            };
            for item in items {
                match item.as_str().and_then(Date::parse) {
                    Some(d) => {
                        set.insert(d);
                    }
                    None => diags.push(Diagnostic::new(
                        file,
                        item.pos,
                        format!("\"{}\" is not a date", item.as_str().unwrap_or("?")),
                        "write dates as YYYY-MM-DD",
                    )),
                }
            }
        }
        if diags.is_empty() {
            Ok(cal)
        } else {
            Err(diags)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Date {
        Date::parse(s).expect("date")
    }

    #[test]
    fn weekdays() {
        assert_eq!(d("2026-11-23").weekday(), 1);
        assert_eq!(d("2026-10-01").weekday(), 4);
        assert_eq!(d("2000-02-29").weekday(), 2);
    }

    #[test]
    fn holidays_and_makeup_days() {
        let cal = Calendar::parse(
            "calendar.yaml",
            "holidays: [2026-10-01]\nworkdays: [2026-10-10]\n",
        )
        .expect("parses");
        assert!(!cal.is_working_day(d("2026-10-01")));
        assert!(cal.is_working_day(d("2026-10-10")));
        assert!(!cal.is_working_day(d("2026-10-11")));
        assert!(cal.is_working_day(d("2026-10-12")));
        assert!(Calendar::parse("c.yaml", "holiday: [2026-13-01]").is_err());
    }
}
