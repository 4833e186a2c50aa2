//! PostgreSQL's date and time values in Arrow's units, and back to text PostgreSQL reads exactly.
//!
//! PostgreSQL counts from 2000-01-01 and Arrow from 1970-01-01. ±infinity become the extreme values
//! of the Arrow type, which no finite PostgreSQL value reaches after the shift.

use crate::error::{Error, Result};

/// Days from 1970-01-01 to 2000-01-01.
pub const EPOCH_SHIFT_DAYS: i32 = 10_957;
pub const EPOCH_SHIFT_MICROS: i64 = EPOCH_SHIFT_DAYS as i64 * MICROS_PER_DAY;
pub const MICROS_PER_DAY: i64 = 86_400_000_000;

pub fn date_to_arrow(pg_days: i32) -> i32 {
    match pg_days {
        i32::MAX | i32::MIN => pg_days,
        // PostgreSQL's finite dates end at 5874897 AD, well below i32::MAX - EPOCH_SHIFT_DAYS.
        days => days + EPOCH_SHIFT_DAYS,
    }
}

pub fn date_from_arrow(days: i32) -> i32 {
    match days {
        i32::MAX | i32::MIN => days,
        days => days - EPOCH_SHIFT_DAYS,
    }
}

/// Timestamps after 294247 AD do not fit Arrow's microseconds since 1970 (PostgreSQL goes to 294276
/// AD); they are refused rather than stored wrong.
pub fn timestamp_to_arrow(pg_micros: i64) -> Result<i64> {
    match pg_micros {
        i64::MAX | i64::MIN => Ok(pg_micros),
        micros => micros.checked_add(EPOCH_SHIFT_MICROS).filter(|m| *m != i64::MAX).ok_or_else(|| {
            Error::InvalidInput(
                "a timestamp after 294246 AD cannot be stored in Parquet's microseconds since 1970".into(),
            )
        }),
    }
}

pub fn timestamp_from_arrow(micros: i64) -> i64 {
    match micros {
        i64::MAX | i64::MIN => micros,
        micros => micros - EPOCH_SHIFT_MICROS,
    }
}

pub use crate::time::civil_from_days;

/// `YYYY-MM-DD` (with ` BC` for years before 1 AD), as PostgreSQL reads it whatever DateStyle is.
fn push_date(out: &mut String, days: i64) -> bool {
    use std::fmt::Write;
    let (year, month, day) = civil_from_days(days);
    let bc = year <= 0;
    let shown = if bc { 1 - year } else { year };
    write!(out, "{shown:04}-{month:02}-{day:02}").expect("writing to a String");
    bc
}

fn push_time_of_day(out: &mut String, micros: i64) {
    use std::fmt::Write;
    let (seconds, fraction) = (micros / 1_000_000, micros % 1_000_000);
    write!(out, "{:02}:{:02}:{:02}", seconds / 3600, seconds / 60 % 60, seconds % 60).expect("writing to a String");
    if fraction != 0 {
        write!(out, ".{fraction:06}").expect("writing to a String");
    }
}

pub fn push_arrow_date(out: &mut String, days: i32) {
    match days {
        i32::MAX => out.push_str("infinity"),
        i32::MIN => out.push_str("-infinity"),
        days => {
            if push_date(out, i64::from(days)) {
                out.push_str(" BC");
            }
        }
    }
}

/// A timestamp in microseconds since 1970; `with_zone` appends `+00` (the value is UTC).
pub fn push_arrow_timestamp(out: &mut String, micros: i64, with_zone: bool) {
    match micros {
        i64::MAX => out.push_str("infinity"),
        i64::MIN => out.push_str("-infinity"),
        micros => {
            let days = micros.div_euclid(MICROS_PER_DAY);
            let bc = push_date(out, days);
            out.push(' ');
            push_time_of_day(out, micros.rem_euclid(MICROS_PER_DAY));
            if with_zone {
                out.push_str("+00");
            }
            if bc {
                out.push_str(" BC");
            }
        }
    }
}

/// Time of day in microseconds; 24:00:00 is a valid PostgreSQL time.
pub fn push_arrow_time(out: &mut String, micros: i64) {
    push_time_of_day(out, micros);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(days: i32) -> String {
        let mut s = String::new();
        push_arrow_date(&mut s, days);
        s
    }

    fn ts(micros: i64, zone: bool) -> String {
        let mut s = String::new();
        push_arrow_timestamp(&mut s, micros, zone);
        s
    }

    #[test]
    fn dates_cover_bc_far_future_and_infinity() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(date_to_arrow(0)), "2000-01-01");
        assert_eq!(date(-1), "1969-12-31");
        assert_eq!(date(11_016), "2000-02-29");
        // 0001-01-01 is 719162 days before 1970; the day before is 1 BC (astronomical year 0).
        assert_eq!(date(-719_162), "0001-01-01");
        assert_eq!(date(-719_163), "0001-12-31 BC");
        // PostgreSQL's first day, 4714-11-24 BC (Julian day 0), is 2440588 days before 1970.
        assert_eq!(date(-2_440_588), "4714-11-24 BC");
        // Its last, 5874897-12-31 (Julian day 2147483493).
        assert_eq!(date(date_to_arrow(2_147_483_493 - 2_451_545)), "5874897-12-31");
        assert_eq!(date(date_to_arrow(i32::MAX)), "infinity");
        assert_eq!(date(date_to_arrow(i32::MIN)), "-infinity");
        assert_eq!(date_from_arrow(date_to_arrow(-5)), -5);
    }

    #[test]
    fn timestamps_keep_microseconds_zone_and_infinity() {
        assert_eq!(ts(0, false), "1970-01-01 00:00:00");
        assert_eq!(ts(1, true), "1970-01-01 00:00:00.000001+00");
        assert_eq!(ts(-1, false), "1969-12-31 23:59:59.999999");
        assert_eq!(ts(timestamp_to_arrow(0).unwrap(), true), "2000-01-01 00:00:00+00");
        assert_eq!(ts(-719_163 * MICROS_PER_DAY + 3_600_000_000, true), "0001-12-31 01:00:00+00 BC");
        assert_eq!(ts(timestamp_to_arrow(i64::MAX).unwrap(), false), "infinity");
        assert_eq!(ts(timestamp_to_arrow(i64::MIN).unwrap(), true), "-infinity");
        assert_eq!(timestamp_from_arrow(timestamp_to_arrow(-42).unwrap()), -42);
        // PostgreSQL's last microsecond (294276 AD) does not fit after the shift: refused, not wrapped.
        assert!(timestamp_to_arrow(9_223_371_331_200_000_000 - 1).is_err());
        let mut s = String::new();
        push_arrow_time(&mut s, MICROS_PER_DAY);
        assert_eq!(s, "24:00:00");
    }
}
