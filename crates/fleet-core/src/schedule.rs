//! When a recurring job (an audit) is due: `daily 02:00`, `weekly mon 03:00`.
//!
//! Schedules are read in the instance's local time. The core knows no time zones: the edge turns
//! the clock into a [`LocalMinute`] (minutes since 1970-01-01 00:00 on the local wall clock) and
//! passes it in. Working on the wall clock keeps "02:00" at 02:00 across daylight-saving changes.
//!
//! **Missed slots fire once.** After downtime spanning several slots, [`due`] names only the
//! latest one, so a machine that was off for a week runs a daily audit once, not seven times.

use std::fmt;

/// Minutes since 1970-01-01 00:00 on the local wall clock (not UTC).
pub type LocalMinute = i64;

const MINUTES_PER_DAY: i64 = 24 * 60;
const MINUTES_PER_WEEK: i64 = 7 * MINUTES_PER_DAY;
/// 1970-01-01 was a Thursday: day 0 is weekday index 3 (Monday = 0).
const EPOCH_WEEKDAY: i64 = 3;

/// A day of the week, Monday first (ISO 8601).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Weekday {
    pub const ALL: [Weekday; 7] = [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
        Weekday::Sat,
        Weekday::Sun,
    ];

    fn index(self) -> i64 {
        Weekday::ALL.iter().position(|d| *d == self).unwrap_or(0) as i64
    }

    /// The three-letter lower-case name used in schedules.
    pub fn name(self) -> &'static str {
        ["mon", "tue", "wed", "thu", "fri", "sat", "sun"][self.index() as usize]
    }

    fn parse(word: &str) -> Option<Weekday> {
        let word = word.to_ascii_lowercase();
        Weekday::ALL
            .into_iter()
            .find(|d| word == d.name() || (word.len() > 3 && full_name(*d).starts_with(&word)))
    }
}

fn full_name(day: Weekday) -> &'static str {
    match day {
        Weekday::Mon => "monday",
        Weekday::Tue => "tuesday",
        Weekday::Wed => "wednesday",
        Weekday::Thu => "thursday",
        Weekday::Fri => "friday",
        Weekday::Sat => "saturday",
        Weekday::Sun => "sunday",
    }
}

/// A recurring slot on the local wall clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// Every day at `minute` past local midnight.
    Daily { minute: u32 },
    /// Every week on `day` at `minute` past local midnight.
    Weekly { day: Weekday, minute: u32 },
}

/// Why a schedule text was refused; `Display` says what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleError {
    pub found: String,
    pub expected: &'static str,
}

impl fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, found `{}`", self.expected, self.found)
    }
}

impl std::error::Error for ScheduleError {}

const EXPECTED_SCHEDULE: &str = "expected a schedule `daily HH:MM` or `weekly DAY HH:MM` (DAY: mon, tue, wed, thu, fri, sat, sun)";

impl Schedule {
    /// Parses `daily 02:00` or `weekly mon 03:00` (day names may be written out; case does
    /// not matter).
    pub fn parse(text: &str) -> Result<Schedule, ScheduleError> {
        let error = || ScheduleError {
            found: text.to_string(),
            expected: EXPECTED_SCHEDULE,
        };
        let words: Vec<&str> = text.split_whitespace().collect();
        match words.as_slice() {
            [kind, at] if kind.eq_ignore_ascii_case("daily") => Ok(Schedule::Daily {
                minute: parse_clock(at).ok_or_else(error)?,
            }),
            [kind, day, at] if kind.eq_ignore_ascii_case("weekly") => Ok(Schedule::Weekly {
                day: Weekday::parse(day).ok_or_else(error)?,
                minute: parse_clock(at).ok_or_else(error)?,
            }),
            _ => Err(error()),
        }
    }

    /// The latest slot at or before `now`.
    pub fn latest_slot(self, now: LocalMinute) -> LocalMinute {
        match self {
            Schedule::Daily { minute } => {
                let today = now.div_euclid(MINUTES_PER_DAY) * MINUTES_PER_DAY + minute as i64;
                if today <= now {
                    today
                } else {
                    today - MINUTES_PER_DAY
                }
            }
            Schedule::Weekly { day, minute } => {
                // Week 0 starts on the Monday before the epoch.
                let week_start = -EPOCH_WEEKDAY * MINUTES_PER_DAY;
                let since = now - week_start;
                let this_week = week_start
                    + since.div_euclid(MINUTES_PER_WEEK) * MINUTES_PER_WEEK
                    + day.index() * MINUTES_PER_DAY
                    + minute as i64;
                if this_week <= now {
                    this_week
                } else {
                    this_week - MINUTES_PER_WEEK
                }
            }
        }
    }

    /// The first slot strictly after `after`.
    pub fn next_slot(self, after: LocalMinute) -> LocalMinute {
        let period = match self {
            Schedule::Daily { .. } => MINUTES_PER_DAY,
            Schedule::Weekly { .. } => MINUTES_PER_WEEK,
        };
        self.latest_slot(after) + period
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Daily { minute } => write!(f, "daily {:02}:{:02}", minute / 60, minute % 60),
            Schedule::Weekly { day, minute } => write!(
                f,
                "weekly {} {:02}:{:02}",
                day.name(),
                minute / 60,
                minute % 60
            ),
        }
    }
}

fn parse_clock(text: &str) -> Option<u32> {
    let (hours, minutes) = text.split_once(':')?;
    if hours.is_empty() || hours.len() > 2 || minutes.len() != 2 {
        return None;
    }
    let hours: u32 = hours.parse().ok()?;
    let minutes: u32 = minutes.parse().ok()?;
    (hours < 24 && minutes < 60).then_some(hours * 60 + minutes)
}

/// The slot to run now, if any: the latest slot at or before `now` that is later than `since`
/// (the last slot that ran, or when the schedule was first seen). However many slots were
/// missed, at most one is due.
pub fn due(schedule: Schedule, since: LocalMinute, now: LocalMinute) -> Option<LocalMinute> {
    let slot = schedule.latest_slot(now);
    (slot > since).then_some(slot)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-07 is a Monday; minutes since the epoch at local midnight.
    const MON_2026_12_07: LocalMinute = 20_794 * MINUTES_PER_DAY;

    #[test]
    fn parses_and_prints_schedules() {
        let weekly = Schedule::parse("weekly Monday 03:00").unwrap();
        assert_eq!(
            weekly,
            Schedule::Weekly {
                day: Weekday::Mon,
                minute: 180
            }
        );
        assert_eq!(weekly.to_string(), "weekly mon 03:00");
        assert_eq!(
            Schedule::parse("DAILY 2:05").unwrap(),
            Schedule::Daily { minute: 125 }
        );
        for bad in [
            "",
            "daily",
            "daily 24:00",
            "daily 02:60",
            "daily 0200",
            "weekly 03:00",
            "weekly mo 03:00",
            "hourly :15",
            "daily 02:00 extra",
            "daily -1:00",
        ] {
            let error = Schedule::parse(bad).unwrap_err();
            assert!(
                error.to_string().starts_with("expected a schedule"),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_epoch_weekday_is_right() {
        // 2026-12-07 (day 20794) is a Monday: a weekly Monday slot falls on it.
        let monday = Schedule::Weekly {
            day: Weekday::Mon,
            minute: 180,
        };
        assert_eq!(
            monday.latest_slot(MON_2026_12_07 + 200),
            MON_2026_12_07 + 180
        );
        assert_eq!(
            monday.latest_slot(MON_2026_12_07 + 100),
            MON_2026_12_07 + 180 - MINUTES_PER_WEEK
        );
    }

    #[test]
    fn downtime_over_two_slots_fires_once() {
        let daily = Schedule::Daily { minute: 120 };
        let last = MON_2026_12_07 + 120;
        let now = last + 2 * MINUTES_PER_DAY + 30;
        let slot = due(daily, last, now).unwrap();
        assert_eq!(slot, last + 2 * MINUTES_PER_DAY);
        assert_eq!(due(daily, slot, now), None, "fired once, not again");
    }
}
