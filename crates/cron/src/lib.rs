//! Ferry's cron schedules: a 5-field expression or a macro (`@hourly`,
//! `@daily`, `@weekly`, `@monthly`, `@yearly`/`@annually`) read in an IANA
//! time zone, with next fire times in UTC and a description in words.
//!
//! The api validates and previews with it; ferry-scheduler decides with it
//! which slots are due, so both agree on every fire time.
//!
//! Daylight saving time follows Vixie cron (croner implements it):
//! - spring forward: a fixed-time job (`30 2 * * *`) whose wall-clock time
//!   does not exist that day runs at the first instant after the gap
//!   (03:00); interval jobs (`*/15 * * * *`) simply have no slots in it;
//! - fall back: a fixed-time job runs once, at the first of the two
//!   instants; an interval job runs on both.
//!
//! Day-of-month and day-of-week restricted together match either (Vixie
//! semantics). Seconds and years are refused: Kubernetes and users both
//! think in minutes.

use std::fmt;

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// Longest accepted expression.
pub const MAX_EXPRESSION_LEN: usize = 200;

/// How far ahead a schedule must fire at least once to be accepted (a leap
/// day fires within 8 years; `30 2 31 2 *` never does).
const MUST_FIRE_WITHIN_YEARS: i64 = 8;

/// Why an expression or a time zone was refused, in words for the user.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("{0}")]
    Schedule(String),
    #[error("{0}")]
    Timezone(String),
}

/// A parsed schedule in its time zone.
#[derive(Clone)]
pub struct Schedule {
    cron: Cron,
    tz: Tz,
    expression: String,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule({:?} in {})", self.expression, self.tz.name())
    }
}

/// The IANA time zone `name` (`UTC`, `Europe/Berlin`); empty means UTC.
pub fn timezone(name: &str) -> Result<Tz, Error> {
    let name = name.trim();
    if name.is_empty() {
        return Ok(Tz::UTC);
    }
    if name.len() > 64 {
        return Err(Error::Timezone("must be at most 64 characters".into()));
    }
    name.parse::<Tz>().map_err(|_| {
        Error::Timezone(format!(
            "unknown time zone {name:?}: use an IANA name such as UTC or Europe/Berlin"
        ))
    })
}

impl Schedule {
    /// Parses `expression` (5 fields or a macro) in time zone `tz`
    /// (empty: UTC). Refuses schedules that never fire.
    pub fn parse(expression: &str, tz: &str) -> Result<Self, Error> {
        let tz = timezone(tz)?;
        let expression = expression.trim();
        if expression.is_empty() {
            return Err(Error::Schedule("must not be empty".into()));
        }
        if expression.len() > MAX_EXPRESSION_LEN {
            return Err(Error::Schedule(format!(
                "must be at most {MAX_EXPRESSION_LEN} characters"
            )));
        }
        if !expression.starts_with('@') && expression.split_whitespace().count() != 5 {
            return Err(Error::Schedule(format!(
                "{expression:?} must have 5 fields (minute hour day-of-month month day-of-week) \
                 or be a macro such as @hourly or @daily"
            )));
        }
        let parser = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build();
        let cron = parser.parse(expression).map_err(|e| {
            Error::Schedule(format!("{expression:?} is not a cron expression: {e}"))
        })?;
        let schedule = Schedule {
            cron,
            tz,
            expression: expression.to_owned(),
        };
        // A pattern such as `0 0 31 2 *` parses but never fires; croner
        // would search until year 5000 for it on every tick.
        let now = Utc::now();
        match schedule.next_after(now) {
            Some(t) if t - now <= Duration::days(366 * MUST_FIRE_WITHIN_YEARS) => Ok(schedule),
            _ => Err(Error::Schedule(format!(
                "{expression:?} never fires (no such date), or less than once in {MUST_FIRE_WITHIN_YEARS} years"
            ))),
        }
    }

    pub fn expression(&self) -> &str {
        &self.expression
    }

    pub fn timezone(&self) -> Tz {
        self.tz
    }

    /// The first fire time strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&t.with_timezone(&self.tz), false)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    /// The next `n` fire times strictly after `t`.
    pub fn upcoming(&self, t: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(n);
        let mut at = t;
        while out.len() < n {
            match self.next_after(at) {
                Some(next) => {
                    out.push(next);
                    at = next;
                }
                None => break,
            }
        }
        out
    }

    /// The last fire time at or before `t`.
    pub fn last_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&t.with_timezone(&self.tz), true)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    /// The schedule in words, with its time zone unless UTC.
    pub fn describe(&self) -> String {
        let described = self.cron.describe();
        let words = described.trim_end_matches('.');
        if self.tz == Tz::UTC {
            format!("{words} (UTC)")
        } else {
            format!("{words} ({})", self.tz.name())
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use chrono::TimeZone as _;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn next(expr: &str, tz: &str, after: &str, n: usize) -> Vec<String> {
        Schedule::parse(expr, tz)
            .unwrap()
            .upcoming(utc(after), n)
            .iter()
            .map(|t| t.to_rfc3339())
            .collect()
    }

    #[test]
    fn next_fire_times() {
        let cases: &[(&str, &str, &str, &[&str])] = &[
            (
                "*/15 * * * *",
                "UTC",
                "2026-01-01T00:07:00Z",
                &["2026-01-01T00:15:00+00:00", "2026-01-01T00:30:00+00:00"],
            ),
            // Strictly after: a slot at the instant itself is not next.
            (
                "0 * * * *",
                "",
                "2026-01-01T05:00:00Z",
                &["2026-01-01T06:00:00+00:00", "2026-01-01T07:00:00+00:00"],
            ),
            (
                "30 9 * * MON-FRI",
                "UTC",
                "2026-01-02T10:00:00Z", // a Friday, after 09:30
                &["2026-01-05T09:30:00+00:00", "2026-01-06T09:30:00+00:00"],
            ),
            // In a zone: 09:00 New York in winter is 14:00 UTC.
            (
                "0 9 * * *",
                "America/New_York",
                "2026-01-10T00:00:00Z",
                &["2026-01-10T14:00:00+00:00", "2026-01-11T14:00:00+00:00"],
            ),
            // Leap day.
            (
                "0 0 29 2 *",
                "UTC",
                "2026-01-01T00:00:00Z",
                &["2028-02-29T00:00:00+00:00", "2032-02-29T00:00:00+00:00"],
            ),
            // Day-of-month OR day-of-week (Vixie): the 13th and Fridays.
            (
                "0 12 13 * FRI",
                "UTC",
                "2026-02-10T00:00:00Z", // Tuesday
                &[
                    "2026-02-13T12:00:00+00:00", // Friday the 13th
                    "2026-02-20T12:00:00+00:00",
                    "2026-02-27T12:00:00+00:00",
                    "2026-03-06T12:00:00+00:00",
                    "2026-03-13T12:00:00+00:00",
                ],
            ),
        ];
        for (expr, tz, after, want) in cases {
            assert_eq!(next(expr, tz, after, want.len()), *want, "{expr} in {tz:?}");
        }
    }

    #[test]
    fn macros_are_their_expressions() {
        let after = "2026-03-10T10:20:00Z";
        for (mac, expr) in [
            ("@hourly", "0 * * * *"),
            ("@daily", "0 0 * * *"),
            ("@weekly", "0 0 * * SUN"),
            ("@monthly", "0 0 1 * *"),
            ("@yearly", "0 0 1 1 *"),
            ("@annually", "0 0 1 1 *"),
        ] {
            assert_eq!(
                next(mac, "UTC", after, 3),
                next(expr, "UTC", after, 3),
                "{mac}"
            );
        }
        assert_eq!(
            next("@daily", "Asia/Tokyo", after, 1),
            ["2026-03-10T15:00:00+00:00"]
        );
    }

    #[test]
    fn spring_forward_runs_a_missing_fixed_time_once_after_the_gap() {
        // Berlin skips 02:00-03:00 on 2026-03-29 (01:00 UTC).
        assert_eq!(
            next("30 2 * * *", "Europe/Berlin", "2026-03-28T12:00:00Z", 3),
            [
                "2026-03-29T01:00:00+00:00", // 03:00 CEST, right after the gap
                "2026-03-30T00:30:00+00:00", // 02:30 CEST
                "2026-03-31T00:30:00+00:00",
            ]
        );
        // Interval jobs have no slots inside the gap.
        assert_eq!(
            next("*/30 * * * *", "Europe/Berlin", "2026-03-29T00:15:00Z", 3),
            [
                "2026-03-29T00:30:00+00:00", // 01:30 CET
                "2026-03-29T01:00:00+00:00", // 03:00 CEST
                "2026-03-29T01:30:00+00:00",
            ]
        );
    }

    #[test]
    fn fall_back_runs_a_fixed_time_once_and_intervals_twice() {
        // Berlin repeats 02:00-03:00 on 2026-10-25 (00:00-01:00 UTC twice).
        assert_eq!(
            next("30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z", 2),
            [
                "2026-10-25T00:30:00+00:00", // 02:30 CEST, the first one
                "2026-10-26T01:30:00+00:00", // 02:30 CET
            ]
        );
        assert_eq!(
            next("30 * * * *", "Europe/Berlin", "2026-10-24T23:00:00Z", 3),
            [
                "2026-10-24T23:30:00+00:00", // 01:30 CEST
                "2026-10-25T00:30:00+00:00", // 02:30 CEST
                "2026-10-25T01:30:00+00:00", // 02:30 CET, the repeat
            ]
        );
        // And in the southern hemisphere (Sydney falls back in April).
        assert_eq!(
            next("30 2 * * *", "Australia/Sydney", "2026-04-04T00:00:00Z", 2),
            ["2026-04-04T15:30:00+00:00", "2026-04-05T16:30:00+00:00"]
        );
    }

    #[test]
    fn the_last_slot_before_a_time() {
        let s = Schedule::parse("0 */6 * * *", "UTC").unwrap();
        assert_eq!(
            s.last_at_or_before(utc("2026-05-01T13:59:00Z")),
            Some(utc("2026-05-01T12:00:00Z"))
        );
        assert_eq!(
            s.last_at_or_before(utc("2026-05-01T12:00:00Z")),
            Some(utc("2026-05-01T12:00:00Z"))
        );
    }

    #[test]
    fn descriptions_are_words_with_the_zone() {
        let d = Schedule::parse("30 2 1 * *", "Europe/Berlin")
            .unwrap()
            .describe();
        assert_eq!(d, "At 02:30, on day 1 (Europe/Berlin)");
        assert!(d.contains("02:30") || d.contains("2:30"), "{d}");
        let d = Schedule::parse("@hourly", "").unwrap().describe();
        assert!(d.ends_with("(UTC)"), "{d}");
    }

    #[test]
    fn bad_schedules_say_why() {
        let bad = [
            ("", "must not be empty"),
            ("* * * *", "5 fields"),
            ("0 * * * * *", "5 fields"),
            ("0 0 1 1 * 2030", "5 fields"),
            ("61 * * * *", "not a cron expression"),
            ("* 24 * * *", "not a cron expression"),
            ("@every_minute", "not a cron expression"),
            ("0 0 31 2 *", "never fires"),
            ("0 0 30 2 *", "never fires"),
            ("a b c d e", "not a cron expression"),
        ];
        for (expr, why) in bad {
            let err = Schedule::parse(expr, "UTC").unwrap_err();
            assert!(
                matches!(&err, Error::Schedule(m) if m.contains(why)),
                "{expr:?}: {err}"
            );
        }
        let long = format!("{} * * * *", "1,".repeat(150));
        assert!(Schedule::parse(&long, "UTC").is_err());
    }

    #[test]
    fn time_zones_are_iana_names() {
        assert_eq!(timezone("").unwrap(), Tz::UTC);
        assert_eq!(timezone("Europe/Berlin").unwrap(), Tz::Europe__Berlin);
        for bad in [
            "Mars/Olympus",
            "CEST+2",
            "../../etc/passwd",
            &"x".repeat(65),
        ] {
            assert!(matches!(timezone(bad), Err(Error::Timezone(_))), "{bad}");
        }
        assert!(Schedule::parse("* * * * *", "Nowhere/City").is_err());
    }

    #[test]
    fn utc_and_an_offset_zone_agree_on_instants() {
        let a = Schedule::parse("0 12 * * *", "UTC").unwrap();
        let t = Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap();
        assert_eq!(
            a.next_after(t),
            Some(Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap())
        );
    }
}
