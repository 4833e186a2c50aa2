//! Wall-clock times as backstop writes and reads them: unix seconds, the compact UTC stamps ids
//! are made of, the form PostgreSQL accepts for recovery targets, and civil dates. No feature's
//! own; every module that formats a time uses these.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

pub fn unix_seconds(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs_f64()
}

pub fn from_unix_seconds(seconds: f64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs_f64(seconds.max(0.0))
}

/// `20261122T031500Z`.
pub fn format_compact_utc(time: SystemTime) -> String {
    let (y, mo, d, h, mi, s) = utc_fields(time);
    format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z")
}

/// `2026-11-22 03:15:00+00`, the form PostgreSQL accepts for recovery_target_time.
pub fn format_utc(time: SystemTime) -> String {
    let micros = time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).subsec_micros();
    let (y, mo, d, h, mi, s) = utc_fields(time);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{micros:06}+00")
}

fn utc_fields(time: SystemTime) -> (i64, u32, u32, u64, u64, u64) {
    let secs = time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs();
    let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
    let rest = secs % 86_400;
    (y, mo, d, rest / 3600, rest % 3600 / 60, rest % 60)
}

/// Parses the recovery target times the CLI accepts: RFC 3339 (`2026-11-22T14:32:00Z`,
/// `2026-11-22 14:32:00+01:00`) or a bare `2026-11-22 14:32:00` taken as UTC.
pub fn parse_time(text: &str) -> Result<SystemTime> {
    let bad = || {
        Error::InvalidInput(format!(
            "\"{}\" is not a time; use 2026-11-22 14:32:00+00 (a time without a zone is UTC)",
            text.escape_debug()
        ))
    };
    let t = text.trim();
    if t.len() < 19 {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| t.get(r).and_then(|s| s.parse::<u64>().ok()).ok_or_else(bad);
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if &t[4..5] != "-"
        || &t[7..8] != "-"
        || !matches!(&t[10..11], "T" | " " | "t")
        || &t[13..14] != ":"
        || &t[16..17] != ":"
    {
        return Err(bad());
    }
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return Err(bad());
    }
    let mut rest = &t[19..];
    let mut nanos = 0u64;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits: String = fraction.chars().take_while(char::is_ascii_digit).collect();
        if digits.is_empty() || digits.len() > 9 {
            return Err(bad());
        }
        nanos = format!("{digits:0<9}").parse().map_err(|_| bad())?;
        rest = &fraction[digits.len()..];
    }
    let rest = rest.trim();
    let offset_seconds: i64 = match rest {
        "" | "Z" | "z" | "UTC" | "+00" | "+00:00" | "-00" => 0,
        zone => {
            let sign = match &zone[..1] {
                "+" => 1,
                "-" => -1,
                _ => return Err(bad()),
            };
            let digits: String = zone[1..].chars().filter(|c| *c != ':').collect();
            let (h, m) = match digits.len() {
                2 => (digits.parse::<i64>().map_err(|_| bad())?, 0),
                4 => (digits[..2].parse::<i64>().map_err(|_| bad())?, digits[2..].parse::<i64>().map_err(|_| bad())?),
                _ => return Err(bad()),
            };
            sign * (h * 3600 + m * 60)
        }
    };
    let days = days_from_civil(year as i64, month as u32, day as u32);
    let seconds = days * 86_400 + (hour * 3600 + minute * 60 + second) as i64 - offset_seconds;
    if seconds < 0 {
        return Err(bad());
    }
    Ok(UNIX_EPOCH + Duration::new(seconds as u64, nanos as u32))
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Proleptic Gregorian (year, month, day) of days since 1970-01-01, with astronomical years
/// (0 = 1 BC). Howard Hinnant's civil_from_days.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// An age for doctor's words: seconds under 2 minutes, minutes under 2 hours, hours under 2
/// days, then days.
pub fn age_text(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        7200..=172_799 => format!("{} h", s / 3600),
        _ => format!("{} days", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ages_read_in_the_unit_that_fits() {
        assert_eq!(super::age_text(-5.0), "0 s");
        assert_eq!(super::age_text(119.0), "119 s");
        assert_eq!(super::age_text(120.0), "2 min");
        assert_eq!(super::age_text(7200.0), "2 h");
        assert_eq!(super::age_text(3.0 * 86_400.0), "3 days");
    }

    use super::*;

    #[test]
    fn target_times_parse_with_and_without_zones() {
        let utc = parse_time("2026-11-22 14:32:00").unwrap();
        assert_eq!(format_utc(utc), "2026-11-22 14:32:00.000000+00");
        assert_eq!(parse_time("2026-11-22T15:32:00+01:00").unwrap(), utc);
        assert_eq!(parse_time("2026-11-22 14:32:00Z").unwrap(), utc);
        assert_eq!(parse_time("2026-11-22 09:32:00-05").unwrap(), utc);
        let fractional = parse_time("2026-11-22 14:32:00.25+00").unwrap();
        assert_eq!(fractional.duration_since(utc).unwrap(), Duration::from_millis(250));
        for bad in ["yesterday", "2026-13-01 00:00:00", "2026-11-22 14:32", "2026-11-22 14:32:00 CET"] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }
}
