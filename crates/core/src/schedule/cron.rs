//! Standard five-field cron expressions (minute hour day-of-month month day-of-week), as DBAs know
//! them from crontab and pg_cron: numbers, `*`, ranges `a-b`, lists `a,b`, steps `*/n` and `a-b/n`,
//! month and weekday names (`jan`, `mon`), and 7 as Sunday. Day-of-month and day-of-week combine
//! as in Vixie cron: when both are restricted, a day matches if either matches.
//!
//! Times are evaluated in UTC here; the scheduler converts a schedule's time zone around this.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: u64, // bits 0..59
    hours: u32,   // bits 0..23
    days: u32,    // bits 1..31
    months: u16,  // bits 1..12
    weekdays: u8, // bits 0..6, Sunday = 0
    days_restricted: bool,
    weekdays_restricted: bool,
    text: String,
}

const MONTHS: [&str; 12] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

fn bad(text: &str, why: impl std::fmt::Display) -> Error {
    Error::InvalidInput(format!(
        "\"{}\" is not a cron expression: {why}; use five fields, minute hour day-of-month month day-of-week (e.g. '30 2 * * *' for 02:30 every day)",
        text.escape_debug()
    ))
}

/// Parses one field into a bit set over `min..=max`.
fn field(text: &str, part: &str, name: &str, min: u32, max: u32, names: &[&str]) -> Result<(u64, bool)> {
    let value = |v: &str| -> Result<u32> {
        let lower = v.to_ascii_lowercase();
        if let Some(i) = names.iter().position(|n| *n == lower) {
            return Ok(i as u32 + if names.len() == 12 { 1 } else { 0 });
        }
        let n: u32 = v.parse().map_err(|_| bad(text, format!("{name} \"{v}\" is not a number")))?;
        // 7 is Sunday too.
        let n = if names.len() == 7 && n == 7 { 0 } else { n };
        if n < min || n > max {
            return Err(bad(text, format!("{name} {n} is outside {min}-{max}")));
        }
        Ok(n)
    };
    let mut bits = 0u64;
    let restricted = part != "*";
    for item in part.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step
                    .parse()
                    .map_err(|_| bad(text, format!("step \"{step}\" in the {name} field is not a number")))?;
                if step == 0 {
                    return Err(bad(text, format!("a step of 0 in the {name} field")));
                }
                (range, step)
            }
            None => (item, 1),
        };
        let (low, high) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (value(a)?, value(b)?);
            // "fri-sun": 7 became 0; a range ending on Sunday runs to 6 and includes 0.
            if names.len() == 7 && b == 0 && a > 0 {
                bits |= 1;
                (a, 6)
            } else {
                (a, b)
            }
        } else {
            let v = value(range)?;
            (v, if step > 1 { max } else { v })
        };
        if low > high {
            return Err(bad(text, format!("the {name} range {range} runs backwards")));
        }
        let mut v = low;
        while v <= high {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok((bits, restricted))
}

impl Cron {
    pub fn parse(text: &str) -> Result<Cron> {
        let parts: Vec<&str> = text.split_whitespace().collect();
        if parts.len() != 5 {
            return Err(bad(text, format!("it has {} fields, not 5", parts.len())));
        }
        let (minutes, _) = field(text, parts[0], "minute", 0, 59, &[])?;
        let (hours, _) = field(text, parts[1], "hour", 0, 23, &[])?;
        let (days, days_restricted) = field(text, parts[2], "day of month", 1, 31, &[])?;
        let (months, _) = field(text, parts[3], "month", 1, 12, &MONTHS)?;
        let (weekdays, weekdays_restricted) = field(text, parts[4], "day of week", 0, 7, &WEEKDAYS)?;
        Ok(Cron {
            minutes,
            hours: hours as u32,
            days: days as u32,
            months: months as u16,
            weekdays: weekdays as u8,
            days_restricted,
            weekdays_restricted,
            text: parts.join(" "),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Does the expression name particular hours (`30 2 * * *`) rather than every hour
    /// (`*/15 * * * *`)? Decides how a repeated hour on a fall-back day is treated.
    pub fn names_hours(&self) -> bool {
        self.hours != (1 << 24) - 1
    }

    fn day_matches(&self, day: u32, weekday: u32) -> bool {
        let by_day = self.days & (1 << day) != 0;
        let by_weekday = self.weekdays & (1 << weekday) != 0;
        match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => by_day || by_weekday,
            (true, false) => by_day,
            (false, true) => by_weekday,
            (false, false) => true,
        }
    }

    /// Does the minute starting at `unix_minute * 60` match?
    pub fn matches_minute(&self, unix_minute: i64) -> bool {
        let days = unix_minute.div_euclid(1440);
        let minute_of_day = unix_minute.rem_euclid(1440);
        let (_, month, day) = crate::time::civil_from_days(days);
        let weekday = (days + 4).rem_euclid(7) as u32; // 1970-01-01 was a Thursday
        self.minutes & (1 << (minute_of_day % 60)) != 0
            && self.hours & (1 << (minute_of_day / 60)) != 0
            && self.months & (1 << month) != 0
            && self.day_matches(day, weekday)
    }

    /// The first matching minute strictly after `after`, in UTC; None if none within 5 years
    /// (an expression like '0 0 30 2 *' never matches).
    pub fn next_after(&self, after: SystemTime) -> Option<SystemTime> {
        let secs = after.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
        let mut minute = secs.div_euclid(60) + 1;
        let limit = minute + 5 * 366 * 1440;
        while minute < limit {
            let days = minute.div_euclid(1440);
            let (_, month, day) = crate::time::civil_from_days(days);
            let weekday = (days + 4).rem_euclid(7) as u32;
            if self.months & (1 << month) == 0 || !self.day_matches(day, weekday) {
                minute = (days + 1) * 1440; // next day
                continue;
            }
            let minute_of_day = minute.rem_euclid(1440);
            if self.hours & (1 << (minute_of_day / 60)) == 0 {
                minute = minute - minute_of_day % 60 + 60; // next hour
                continue;
            }
            if self.minutes & (1 << (minute_of_day % 60)) != 0 {
                return Some(UNIX_EPOCH + Duration::from_secs(minute as u64 * 60));
            }
            minute += 1;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backups::{format_utc, parse_time};

    fn next(expr: &str, after: &str) -> String {
        format_utc(Cron::parse(expr).unwrap().next_after(parse_time(after).unwrap()).unwrap())
    }

    #[test]
    fn next_runs_follow_crontab_semantics() {
        assert_eq!(next("30 2 * * *", "2026-11-22 02:29:59"), "2026-11-22 02:30:00.000000+00");
        assert_eq!(next("30 2 * * *", "2026-11-22 02:30:00"), "2026-11-23 02:30:00.000000+00");
        assert_eq!(next("*/15 * * * *", "2026-11-22 10:07:00"), "2026-11-22 10:15:00.000000+00");
        assert_eq!(next("0 3 * * sun", "2026-11-22 03:00:00"), "2026-11-29 03:00:00.000000+00"); // 22nd is a Sunday
        assert_eq!(next("0 3 * * 7", "2026-11-23 00:00:00"), "2026-11-29 03:00:00.000000+00");
        assert_eq!(next("0 0 1 * *", "2026-11-22 00:00:00"), "2026-12-01 00:00:00.000000+00");
        assert_eq!(next("0 0 29 feb *", "2026-03-01 00:00:00"), "2028-02-29 00:00:00.000000+00");
        // Day of month OR day of week when both are restricted (Vixie cron).
        assert_eq!(next("0 12 1 * mon", "2026-11-22 00:00:00"), "2026-11-23 12:00:00.000000+00");
        assert_eq!(next("0 9-17/4 * * mon-fri", "2026-11-21 00:00:00"), "2026-11-23 09:00:00.000000+00");
        assert_eq!(next("0 0 * * fri-sun", "2026-11-23 00:00:00"), "2026-11-27 00:00:00.000000+00");
        assert!(Cron::parse("0 0 30 2 *").unwrap().next_after(parse_time("2026-01-01 00:00:00").unwrap()).is_none());
    }

    #[test]
    fn bad_expressions_are_refused_with_the_reason() {
        for (expr, why) in [
            ("* * * *", "4 fields"),
            ("60 * * * *", "minute 60 is outside 0-59"),
            ("* 24 * * *", "hour 24"),
            ("* * 0 * *", "day of month 0"),
            ("* * * 13 *", "month 13"),
            ("*/0 * * * *", "step of 0"),
            ("5-1 * * * *", "runs backwards"),
            ("x * * * *", "\"x\" is not a number"),
            ("* * * * funday", "\"funday\""),
        ] {
            let error = Cron::parse(expr).unwrap_err().to_string();
            assert!(error.contains(why), "{expr}: {error}");
        }
    }
}
