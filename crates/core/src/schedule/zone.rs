//! Schedules in a time zone: when does a cron expression next fire in, say, Europe/Berlin, and
//! what happens on the two days a year its clocks jump.
//!
//! The rules (those of cronie and of what a DBA expects from "02:30 every night"):
//! - **Spring forward** (02:00 → 03:00): a wall-clock time that does not exist that day runs
//!   once, shifted forward by the gap (02:30 runs at 03:30), so the nightly job is not skipped.
//! - **Fall back** (03:00 → 02:00): a wall-clock time that happens twice runs once, at its first
//!   occurrence, when the expression names hours; an expression that runs every hour
//!   (`*/15 * * * *`) keeps running through the repeated hour, as real time passes.
//!
//! The zone database is compiled into the binary (jiff's bundled tzdb), so the CLI, the server
//! and the tests agree on every transition whatever the host has installed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jiff::tz::{AmbiguousOffset, TimeZone};

use super::Cron;
use crate::error::{Error, Result};

/// A checked IANA time zone (or UTC).
#[derive(Clone, Debug)]
pub struct Zone {
    name: String,
    tz: TimeZone,
}

/// Longest wall-clock jump handled (real transitions are 30 minutes to 2 hours).
const SLACK: i64 = 3 * 3600;

impl Zone {
    pub fn utc() -> Zone {
        Zone { name: "UTC".into(), tz: TimeZone::UTC }
    }

    /// An IANA name such as `Europe/Berlin`, or `UTC`. Anything else is refused with the reason.
    pub fn parse(name: &str) -> Result<Zone> {
        let trimmed = name.trim();
        if trimmed.eq_ignore_ascii_case("utc") || trimmed.is_empty() {
            return Ok(Zone::utc());
        }
        match TimeZone::get(trimmed) {
            Ok(tz) => Ok(Zone { name: trimmed.to_string(), tz }),
            Err(_) => Err(Error::InvalidInput(format!(
                "\"{}\" is not a known time zone; use an IANA name such as 'Europe/Berlin' or 'America/New_York', or 'UTC'",
                name.escape_debug()
            ))),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn is_utc(&self) -> bool {
        self.name == "UTC"
    }

    /// Seconds east of UTC at this instant.
    fn offset_at(&self, unix: i64) -> i64 {
        jiff::Timestamp::from_second(unix).map(|t| self.tz.to_offset(t).seconds() as i64).unwrap_or(0)
    }

    /// The instants a wall-clock time (given as seconds since 1970-01-01 00:00 local) maps to,
    /// following the module's rules.
    fn instants(&self, cron: &Cron, local: i64) -> Vec<i64> {
        let Ok(stamp) = jiff::Timestamp::from_second(local) else { return vec![] };
        let civil = stamp.to_zoned(TimeZone::UTC).datetime();
        match self.tz.to_ambiguous_timestamp(civil).offset() {
            AmbiguousOffset::Unambiguous { offset } => vec![local - offset.seconds() as i64],
            // Before the jump the old offset held: 02:30 read with it is 03:30 after the jump.
            AmbiguousOffset::Gap { before, .. } => vec![local - before.seconds() as i64],
            AmbiguousOffset::Fold { before, after } => {
                let first = local - before.seconds() as i64;
                if cron.names_hours() {
                    vec![first]
                } else {
                    vec![first, local - after.seconds() as i64]
                }
            }
        }
    }

    /// The first instant strictly after `after` at which `cron` fires in this zone; None if it
    /// never does within five years.
    pub fn next_run(&self, cron: &Cron, after: SystemTime) -> Option<SystemTime> {
        if self.is_utc() {
            return cron.next_after(after);
        }
        let after = after.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
        let local_after = after + self.offset_at(after);
        // Start early enough to see a wall-clock time shifted past `after` by a gap, and stop once
        // no later wall-clock time can map to an earlier instant.
        let mut cursor = local_after - SLACK - 1;
        let mut best: Option<(i64, i64)> = None; // (instant, local)
        loop {
            let candidate = cron.next_after(UNIX_EPOCH + Duration::from_secs(cursor.max(0) as u64))?;
            let local = candidate.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
            if best.is_some_and(|(_, best_local)| local > best_local + SLACK) {
                break;
            }
            for instant in self.instants(cron, local) {
                if instant > after && best.is_none_or(|(b, _)| instant < b) {
                    best = Some((instant, local));
                }
            }
            cursor = local;
        }
        best.map(|(instant, _)| UNIX_EPOCH + Duration::from_secs(instant as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backups::{format_utc, parse_time};

    fn runs(expr: &str, zone: &str, from: &str, until: &str) -> Vec<String> {
        let cron = Cron::parse(expr).unwrap();
        let zone = Zone::parse(zone).unwrap();
        let until = parse_time(until).unwrap();
        let mut at = parse_time(from).unwrap();
        let mut out = Vec::new();
        while let Some(next) = zone.next_run(&cron, at) {
            if next > until {
                break;
            }
            out.push(format_utc(next));
            at = next;
        }
        out
    }

    #[test]
    fn a_nightly_run_on_spring_forward_day_runs_once_after_the_jump() {
        // Berlin, 2026-03-29: 02:00 CET becomes 03:00 CEST (01:00 UTC); 02:30 does not exist.
        assert_eq!(
            runs("30 2 * * *", "Europe/Berlin", "2026-03-27 12:00:00", "2026-03-31 00:00:00"),
            [
                "2026-03-28 01:30:00.000000+00", // 02:30 CET
                "2026-03-29 01:30:00.000000+00", // 03:30 CEST, shifted by the gap
                "2026-03-30 00:30:00.000000+00", // 02:30 CEST
            ]
        );
    }

    #[test]
    fn a_nightly_run_on_fall_back_day_runs_once() {
        // Berlin, 2026-10-25: 03:00 CEST becomes 02:00 CET (01:00 UTC); 02:30 happens twice.
        assert_eq!(
            runs("30 2 * * *", "Europe/Berlin", "2026-10-24 12:00:00", "2026-10-27 00:00:00"),
            [
                "2026-10-25 00:30:00.000000+00", // the first 02:30 (CEST)
                "2026-10-26 01:30:00.000000+00", // 02:30 CET
            ]
        );
    }

    #[test]
    fn hourly_runs_keep_real_time_through_both_transitions() {
        for (from, until) in
            [("2026-03-28 22:00:00", "2026-03-29 04:00:00"), ("2026-10-24 22:00:00", "2026-10-25 04:00:00")]
        {
            let got = runs("0 * * * *", "Europe/Berlin", from, until);
            let expected: Vec<String> =
                (1..=6).map(|h| format_utc(parse_time(from).unwrap() + Duration::from_secs(h * 3600))).collect();
            assert_eq!(got, expected, "{from}");
        }
    }

    #[test]
    fn local_times_follow_the_zone_through_the_year() {
        // 09:00 in New York is 14:00 UTC in winter and 13:00 UTC in summer.
        assert_eq!(
            runs("0 9 * * *", "America/New_York", "2026-01-10 00:00:00", "2026-01-11 00:00:00"),
            ["2026-01-10 14:00:00.000000+00"]
        );
        assert_eq!(
            runs("0 9 * * *", "America/New_York", "2026-07-10 00:00:00", "2026-07-11 00:00:00"),
            ["2026-07-10 13:00:00.000000+00"]
        );
        // A zone east of UTC whose local day starts the previous UTC day.
        assert_eq!(
            runs("0 1 * * mon", "Asia/Tokyo", "2026-11-22 00:00:00", "2026-11-29 00:00:00"),
            ["2026-11-22 16:00:00.000000+00"]
        );
    }

    #[test]
    fn unknown_zones_are_refused_and_utc_is_the_default() {
        let error = Zone::parse("Mars/Olympus").unwrap_err().to_string();
        assert!(error.contains("not a known time zone") && error.contains("Europe/Berlin"), "{error}");
        assert_eq!(Zone::parse("").unwrap().name(), "UTC");
        assert_eq!(Zone::parse("utc").unwrap().name(), "UTC");
        assert_eq!(Zone::parse("Europe/Berlin").unwrap().name(), "Europe/Berlin");
    }
}
