//! Durations as users write them: `30m`, `1h30m`, `45s`, `500ms`, or a bare number of seconds.

use std::time::Duration;

/// The accepted forms, quoted in every duration error.
pub(crate) const DURATION_FORMS: &str =
    "expected a duration like 30s, 5m, 1h30m, 500ms or a bare number of seconds";

#[derive(Clone, Copy, PartialEq, PartialOrd)]
enum Unit {
    Millis,
    Seconds,
    Minutes,
    Hours,
}

impl Unit {
    fn of(n: u64, unit: Unit) -> Option<Duration> {
        match unit {
            Unit::Millis => Some(Duration::from_millis(n)),
            Unit::Seconds => Some(Duration::from_secs(n)),
            Unit::Minutes => n.checked_mul(60).map(Duration::from_secs),
            Unit::Hours => n.checked_mul(3600).map(Duration::from_secs),
        }
    }
}

/// Parses a duration: one or more `<integer><unit>` parts with units `h`, `m`, `s`, `ms`,
/// largest first and each at most once (`1h30m`), or a bare integer meaning seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let fail = || format!("{DURATION_FORMS}, found {s:?}");
    let text = s.trim();
    if text.is_empty() {
        return Err(fail());
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().map(Duration::from_secs).map_err(|_| fail());
    }
    let mut rest = text;
    let mut total = Duration::ZERO;
    let mut previous: Option<Unit> = None;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let n: u64 = rest[..digits].parse().map_err(|_| fail())?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Unit::Millis, 2)
        } else {
            match rest.as_bytes().first() {
                Some(b'h') => (Unit::Hours, 1),
                Some(b'm') => (Unit::Minutes, 1),
                Some(b's') => (Unit::Seconds, 1),
                _ => return Err(fail()),
            }
        };
        if previous.is_some_and(|p| p <= unit) {
            return Err(fail());
        }
        previous = Some(unit);
        rest = &rest[len..];
        total = Unit::of(n, unit)
            .and_then(|d| total.checked_add(d))
            .ok_or_else(fail)?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_forms() {
        let cases = [
            ("30m", 1_800_000),
            ("1h30m", 5_400_000),
            ("45s", 45_000),
            ("500ms", 500),
            ("2h", 7_200_000),
            ("90", 90_000),
            ("0", 0),
            ("1h2m3s4ms", 3_723_004),
            (" 5m ", 300_000),
        ];
        for (text, millis) in cases {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(millis)),
                "{text}"
            );
        }
    }

    #[test]
    fn refuses_everything_else_naming_the_accepted_forms() {
        for bad in [
            "",
            "m",
            "1x",
            "1.5h",
            "30m1h",
            "1m1m",
            "1 h",
            "-5s",
            "5sm",
            "h1",
            "1hh",
            "99999999999999999999",
        ] {
            let err = parse_duration(bad).unwrap_err();
            assert!(
                err.contains("expected a duration like 30s, 5m, 1h30m"),
                "{bad:?}: {err}"
            );
            assert!(err.contains(&format!("{bad:?}")), "{bad:?}: {err}");
        }
    }

    #[test]
    fn overflow_is_an_error_not_a_panic() {
        assert!(parse_duration(&format!("{}h", u64::MAX)).is_err());
        assert!(parse_duration(&format!("{}s{}ms", u64::MAX, u64::MAX)).is_err());
    }
}
