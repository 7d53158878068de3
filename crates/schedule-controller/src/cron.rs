//! Cron schedules read in an IANA time zone: the five-field (Vixie cron) dialect that
//! `spec.schedule` documents, evaluated on wall-clock time with [`jiff`].
//!
//! Daylight saving time, as the API promises: a wall-clock time that does not exist that day
//! (spring forward) is skipped, and one that occurs twice (fall back) runs once, at its first
//! occurrence. A schedule that can never come due (`0 0 31 2 *`) is refused when parsed.
//!
//! Why not a crate: `croner` returns the repeated hour of a fall-back twice and brings chrono
//! and chrono-tz; `jiff-cron` reads the seven-field Quartz dialect (Sunday = 1). The dialect
//! here is exactly the one the CRD's schema admits (`tusk_api::schedule::cron_pattern`), and
//! jiff is already the time library of the API types.
//!
//! When day of month and day of week are both restricted (neither starts with `*`), a day
//! matches if either does — as in Vixie cron and Kubernetes CronJobs.

use jiff::civil::{Date, DateTime};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{Timestamp, ToSpan};

/// How far ahead and back a search looks before it concludes the schedule never matches:
/// longer than the eight years between two 29 Februaries across a non-leap century year.
const SEARCH_DAYS: i64 = 366 * 9;

/// A parsed schedule and the time zone it is read in.
#[derive(Clone, Debug)]
pub struct CronSchedule {
    minutes: u64,
    hours: u32,
    days_of_month: u32,
    months: u16,
    days_of_week: u8,
    day_of_month_star: bool,
    day_of_week_star: bool,
    time_zone: TimeZone,
}

/// Why a schedule or time zone cannot be used; the message says what to write instead.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    #[error("spec.schedule {expression:?}: {problem}")]
    Expression { expression: String, problem: String },
    #[error(
        "spec.timeZone {0:?} is not in the time zone database: use an IANA name such as Europe/Berlin, America/New_York or UTC"
    )]
    TimeZone(String),
}

impl CronError {
    fn expression(expression: &str, problem: impl Into<String>) -> Self {
        CronError::Expression {
            expression: expression.to_owned(),
            problem: problem.into(),
        }
    }
}

const MONTH_NAMES: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAY_NAMES: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    /// The value the first name stands for (1 for months, 0 for days).
    names_start: u32,
}

const MINUTE: Field = Field {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
    names_start: 0,
};
const HOUR: Field = Field {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
    names_start: 0,
};
const DAY_OF_MONTH: Field = Field {
    name: "day of month",
    min: 1,
    max: 31,
    names: &[],
    names_start: 0,
};
const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    names: &MONTH_NAMES,
    names_start: 1,
};
const DAY_OF_WEEK: Field = Field {
    name: "day of week",
    min: 0,
    max: 7,
    names: &DAY_NAMES,
    names_start: 0,
};

impl Field {
    fn value(&self, text: &str) -> Result<u32, String> {
        let lower = text.to_ascii_lowercase();
        if let Some(index) = self.names.iter().position(|n| *n == lower) {
            return Ok(self.names_start + index as u32);
        }
        let value: u32 = text
            .parse()
            .map_err(|_| format!("{} {text:?} is not a number", self.name))?;
        if value < self.min || value > self.max {
            return Err(format!(
                "{} {value} is out of range {}-{}",
                self.name, self.min, self.max
            ));
        }
        Ok(value)
    }

    /// The set of values of one field as a bit mask (bit n = value n).
    fn parse(&self, text: &str) -> Result<u64, String> {
        let mut mask = 0u64;
        for element in text.split(',') {
            let (range, step) = match element.split_once('/') {
                Some((range, step)) => {
                    let step: u32 =
                        step.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                            format!("{} step {step:?} must be 1 or more", self.name)
                        })?;
                    (range, step)
                }
                None => (element, 1),
            };
            let (start, end) = if range == "*" {
                (self.min, self.max)
            } else if let Some((a, b)) = range.split_once('-') {
                let (a, b) = (self.value(a)?, self.value(b)?);
                if a > b {
                    return Err(format!("{} range {range:?} runs backwards", self.name));
                }
                (a, b)
            } else {
                let value = self.value(range)?;
                if element.contains('/') {
                    return Err(format!(
                        "{} {element:?}: a step needs a range or *, as in */{step} or {value}-{}/{step}",
                        self.name, self.max
                    ));
                }
                (value, value)
            };
            let mut value = start;
            while value <= end {
                mask |= 1 << value;
                value += step;
            }
        }
        Ok(mask)
    }
}

fn shorthand(expression: &str) -> Option<&'static str> {
    Some(match expression {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        _ => return None,
    })
}

impl CronSchedule {
    /// Parses `expression` (five fields or an `@` shorthand) to be read in `time_zone`.
    pub fn parse(expression: &str, time_zone: &str) -> Result<Self, CronError> {
        let fields_text = shorthand(expression).unwrap_or(expression);
        let fields: Vec<&str> = fields_text.split_whitespace().collect();
        let [minute, hour, dom, month, dow] = fields.as_slice() else {
            return Err(CronError::expression(
                expression,
                format!(
                    "needs five fields (minute hour day-of-month month day-of-week), found {}",
                    fields.len()
                ),
            ));
        };
        let field = |field: &Field, text: &str| {
            field
                .parse(text)
                .map_err(|problem| CronError::expression(expression, problem))
        };
        let mut days_of_week = field(&DAY_OF_WEEK, dow)?;
        // 7 is Sunday too.
        if days_of_week & (1 << 7) != 0 {
            days_of_week = (days_of_week | 1) & 0x7f;
        }
        let time_zone =
            TimeZone::get(time_zone).map_err(|_| CronError::TimeZone(time_zone.to_owned()))?;
        let schedule = CronSchedule {
            minutes: field(&MINUTE, minute)?,
            hours: field(&HOUR, hour)? as u32,
            days_of_month: field(&DAY_OF_MONTH, dom)? as u32,
            months: field(&MONTH, month)? as u16,
            days_of_week: days_of_week as u8,
            day_of_month_star: dom.starts_with('*'),
            day_of_week_star: dow.starts_with('*'),
            time_zone,
        };
        // A date that never exists (31 February) is no schedule at all.
        if schedule.next_after(Timestamp::UNIX_EPOCH).is_none() {
            return Err(CronError::expression(
                expression,
                "never comes due: no month has that day",
            ));
        }
        Ok(schedule)
    }

    /// The time zone the schedule is read in.
    pub fn time_zone(&self) -> &TimeZone {
        &self.time_zone
    }

    fn day_matches(&self, date: Date) -> bool {
        let month_ok = self.months & (1 << date.month()) != 0;
        let dom_ok = self.days_of_month & (1 << date.day()) != 0;
        let weekday = date.weekday().to_sunday_zero_offset();
        let dow_ok = self.days_of_week & (1 << weekday) != 0;
        let day_ok = match (self.day_of_month_star, self.day_of_week_star) {
            (false, false) => dom_ok || dow_ok,
            _ => dom_ok && dow_ok,
        };
        month_ok && day_ok
    }

    /// The instants this schedule comes due on the wall-clock day `date`, in order. A time in
    /// a spring-forward gap is left out; one in a fall-back fold counts once, at its first
    /// occurrence.
    fn runs_on(&self, date: Date) -> Vec<Timestamp> {
        if !self.day_matches(date) {
            return Vec::new();
        }
        let mut runs = Vec::new();
        for hour in (0..24i8).filter(|h| self.hours & (1 << h) != 0) {
            for minute in (0..60i8).filter(|m| self.minutes & (1 << m) != 0) {
                let wall = DateTime::from_parts(date, jiff::civil::time(hour, minute, 0, 0));
                let ambiguous = self.time_zone.to_ambiguous_timestamp(wall);
                let instant = match ambiguous.offset() {
                    AmbiguousOffset::Gap { .. } => continue,
                    AmbiguousOffset::Unambiguous { .. } | AmbiguousOffset::Fold { .. } => {
                        ambiguous.earlier()
                    }
                };
                if let Ok(instant) = instant {
                    runs.push(instant);
                }
            }
        }
        runs
    }

    fn local_date(&self, at: Timestamp) -> Date {
        at.to_zoned(self.time_zone.clone()).date()
    }

    /// The first time the schedule comes due strictly after `after`.
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        // A fall-back day's first hours may map before `after`'s local date: start a day early.
        let mut date = self.local_date(after).checked_sub(1.day()).ok()?;
        for _ in 0..SEARCH_DAYS {
            if let Some(run) = self.runs_on(date).into_iter().find(|run| *run > after) {
                return Some(run);
            }
            date = date.tomorrow().ok()?;
        }
        None
    }

    /// The last time the schedule came due at or before `at`.
    pub fn last_at_or_before(&self, at: Timestamp) -> Option<Timestamp> {
        let mut date = self.local_date(at).checked_add(1.day()).ok()?;
        for _ in 0..SEARCH_DAYS {
            if let Some(run) = self.runs_on(date).into_iter().rev().find(|run| *run <= at) {
                return Some(run);
            }
            date = date.yesterday().ok()?;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn next_n(schedule: &CronSchedule, from: &str, n: usize) -> Vec<String> {
        let mut at = ts(from);
        (0..n)
            .map(|_| {
                at = schedule.next_after(at).unwrap();
                at.to_string()
            })
            .collect()
    }

    #[test]
    fn every_minute_runs_on_each_minute_boundary() {
        let schedule = CronSchedule::parse("* * * * *", "UTC").unwrap();
        assert_eq!(
            next_n(&schedule, "2026-11-22T10:15:30Z", 3),
            [
                "2026-11-22T10:16:00Z",
                "2026-11-22T10:17:00Z",
                "2026-11-22T10:18:00Z"
            ]
        );
        // exactly on a boundary: strictly after
        assert_eq!(
            schedule.next_after(ts("2026-11-22T10:16:00Z")).unwrap(),
            ts("2026-11-22T10:17:00Z")
        );
        assert_eq!(
            schedule
                .last_at_or_before(ts("2026-11-22T10:16:00Z"))
                .unwrap(),
            ts("2026-11-22T10:16:00Z")
        );
    }

    #[test]
    fn daily_in_a_time_zone_is_read_on_the_wall_clock() {
        let schedule = CronSchedule::parse("0 3 * * *", "Europe/Berlin").unwrap();
        // 03:00 CET = 02:00 UTC in winter
        assert_eq!(
            schedule.next_after(ts("2026-11-22T10:00:00Z")).unwrap(),
            ts("2026-11-23T02:00:00Z")
        );
        // 03:00 CEST = 01:00 UTC in summer
        assert_eq!(
            schedule.next_after(ts("2026-07-01T10:00:00Z")).unwrap(),
            ts("2026-07-02T01:00:00Z")
        );
    }

    #[test]
    fn spring_forward_skips_the_missing_time() {
        // Europe/Berlin jumps from 02:00 to 03:00 on 2026-03-29: 02:30 does not exist.
        let schedule = CronSchedule::parse("30 2 * * *", "Europe/Berlin").unwrap();
        assert_eq!(
            next_n(&schedule, "2026-03-27T12:00:00Z", 3),
            [
                "2026-03-28T01:30:00Z", // 02:30 CET
                "2026-03-30T00:30:00Z", // 02:30 CEST, the 29th skipped
                "2026-03-31T00:30:00Z",
            ]
        );
        // times on either side of the gap still run that day
        let hourly = CronSchedule::parse("0 * * * *", "Europe/Berlin").unwrap();
        assert_eq!(
            next_n(&hourly, "2026-03-29T00:30:00Z", 2),
            ["2026-03-29T01:00:00Z", "2026-03-29T02:00:00Z"] // 03:00 CEST, 04:00 CEST
        );
    }

    #[test]
    fn fall_back_runs_the_repeated_time_once() {
        // Europe/Berlin goes from 03:00 CEST back to 02:00 CET on 2026-10-25.
        let schedule = CronSchedule::parse("30 2 * * *", "Europe/Berlin").unwrap();
        assert_eq!(
            next_n(&schedule, "2026-10-24T12:00:00Z", 2),
            [
                "2026-10-25T00:30:00Z", // the first 02:30 (CEST)
                "2026-10-26T01:30:00Z", // not 2026-10-25T01:30Z, the second 02:30
            ]
        );
        // Seen from inside the repeated hour, the run already happened.
        assert_eq!(
            schedule.next_after(ts("2026-10-25T01:15:00Z")).unwrap(),
            ts("2026-10-26T01:30:00Z")
        );
        let hourly = CronSchedule::parse("0 * * * *", "America/New_York").unwrap();
        // New York falls back at 02:00 EDT on 2026-11-01: 01:00 occurs twice.
        assert_eq!(
            next_n(&hourly, "2026-11-01T04:30:00Z", 3),
            [
                "2026-11-01T05:00:00Z", // 01:00 EDT
                "2026-11-01T07:00:00Z", // 02:00 EST; the 01:00 EST repeat is not a new run
                "2026-11-01T08:00:00Z",
            ]
        );
    }

    #[test]
    fn february_29_comes_every_four_years() {
        let schedule = CronSchedule::parse("0 0 29 2 *", "UTC").unwrap();
        assert_eq!(
            next_n(&schedule, "2026-11-22T00:00:00Z", 2),
            ["2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z"]
        );
        assert_eq!(
            schedule
                .last_at_or_before(ts("2026-11-22T00:00:00Z"))
                .unwrap(),
            ts("2024-02-29T00:00:00Z")
        );
        // 2100 is not a leap year: eight years apart
        assert_eq!(
            schedule.next_after(ts("2096-03-01T00:00:00Z")).unwrap(),
            ts("2104-02-29T00:00:00Z")
        );
    }

    #[test]
    fn day_of_month_or_day_of_week_when_both_are_set() {
        // the 1st of the month, or any Monday (Vixie cron)
        let schedule = CronSchedule::parse("0 12 1 * mon", "UTC").unwrap();
        assert_eq!(
            next_n(&schedule, "2026-11-27T00:00:00Z", 3),
            [
                "2026-11-30T12:00:00Z", // Monday
                "2026-12-01T12:00:00Z", // the 1st (a Tuesday)
                "2026-12-07T12:00:00Z", // Monday
            ]
        );
        // with one of them `*`, only the other restricts
        let weekdays = CronSchedule::parse("*/30 9-10 * * MON-FRI", "UTC").unwrap();
        assert_eq!(
            next_n(&weekdays, "2026-11-27T10:45:00Z", 2), // a Friday
            ["2026-11-30T09:00:00Z", "2026-11-30T09:30:00Z"]
        );
        let sunday_as_seven = CronSchedule::parse("0 0 * * 7", "UTC").unwrap();
        assert_eq!(
            sunday_as_seven
                .next_after(ts("2026-11-22T00:00:00Z"))
                .unwrap(),
            ts("2026-11-29T00:00:00Z")
        );
    }

    #[test]
    fn shorthands_expand() {
        let cases = [
            ("@hourly", "2026-11-22T11:00:00Z"),
            ("@daily", "2026-11-23T00:00:00Z"),
            ("@midnight", "2026-11-23T00:00:00Z"),
            ("@weekly", "2026-11-29T00:00:00Z"),
            ("@monthly", "2026-12-01T00:00:00Z"),
            ("@yearly", "2027-01-01T00:00:00Z"),
            ("@annually", "2027-01-01T00:00:00Z"),
        ];
        for (expression, want) in cases {
            let schedule = CronSchedule::parse(expression, "UTC").unwrap();
            assert_eq!(
                schedule.next_after(ts("2026-11-22T10:15:00Z")).unwrap(),
                ts(want),
                "{expression}"
            );
        }
    }

    #[test]
    fn invalid_expressions_are_refused_with_what_is_wrong() {
        let cases = [
            ("* * * *", "five fields"),
            ("60 * * * *", "minute 60 is out of range 0-59"),
            ("0 24 * * *", "hour 24"),
            ("0 0 0 * *", "day of month 0"),
            ("0 0 * 13 *", "month 13"),
            ("0 0 * * 8", "day of week 8"),
            ("*/0 * * * *", "step"),
            ("5/15 * * * *", "a step needs a range"),
            ("0 3 * * MONDAY", "not a number"),
            ("0 0 31 2 *", "never comes due"),
            ("0 0 30-31 2 *", "never comes due"),
            ("30-10 * * * *", "runs backwards"),
            ("@reboot", "five fields"),
        ];
        for (expression, expected) in cases {
            let error = CronSchedule::parse(expression, "UTC").unwrap_err();
            assert!(
                error.to_string().contains(expected),
                "{expression}: {error}"
            );
        }
    }

    #[test]
    fn unknown_time_zones_are_refused() {
        let error = CronSchedule::parse("0 3 * * *", "Mars/Olympus_Mons").unwrap_err();
        assert_eq!(error, CronError::TimeZone("Mars/Olympus_Mons".into()));
        assert!(error.to_string().contains("IANA"));
    }

    #[test]
    fn last_run_at_or_before_finds_the_most_recent_missed_time() {
        let schedule = CronSchedule::parse("0 */6 * * *", "UTC").unwrap();
        assert_eq!(
            schedule
                .last_at_or_before(ts("2026-11-22T17:59:59Z"))
                .unwrap(),
            ts("2026-11-22T12:00:00Z")
        );
        let spring = CronSchedule::parse("30 2 * * *", "Europe/Berlin").unwrap();
        assert_eq!(
            spring
                .last_at_or_before(ts("2026-03-29T12:00:00Z"))
                .unwrap(),
            ts("2026-03-28T01:30:00Z"),
            "the skipped 02:30 of the 29th is not a run"
        );
    }
}
