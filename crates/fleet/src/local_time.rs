//! Times as a person reads them: local wall-clock time ("14:05", or "Dec 7 14:05" on
//! another day), never raw Unix numbers or UTC stamps in user-facing text.

use chrono::{DateTime, Local, TimeZone};

/// `at` (milliseconds since the Unix epoch) in local time.
pub fn clock_ms(at: i64) -> String {
    match Local.timestamp_millis_opt(at).single() {
        Some(t) => readable(t, Local::now()),
        None => format!("{at} ms after the epoch"),
    }
}

/// An RFC 3339 stamp in local time; text that is not one is returned as it is.
pub fn clock(rfc3339: &str) -> String {
    match DateTime::parse_from_rfc3339(rfc3339) {
        Ok(t) => readable(t.with_timezone(&Local), Local::now()),
        Err(_) => rfc3339.to_string(),
    }
}

fn readable(t: DateTime<Local>, now: DateTime<Local>) -> String {
    if t.date_naive() == now.date_naive() {
        t.format("%H:%M").to_string()
    } else {
        t.format("%b %-d %H:%M").to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn today_is_a_clock_time_and_another_day_names_the_day() {
        let now = Local.with_ymd_and_hms(2026, 12, 6, 9, 0, 0).unwrap();
        let later = Local.with_ymd_and_hms(2026, 12, 6, 14, 5, 0).unwrap();
        let tomorrow = Local.with_ymd_and_hms(2026, 12, 7, 0, 0, 0).unwrap();
        assert_eq!(readable(later, now), "14:05");
        assert_eq!(readable(tomorrow, now), "Dec 7 00:00");
        assert_eq!(clock("not a time"), "not a time");
    }
}
