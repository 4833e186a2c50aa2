//! Physical base backups: a cluster's files as lists of content-addressed chunks, packed into a
//! bounded number of objects, described by a manifest that is written last and is the commit point.
//!
//! ```text
//! <cluster>/backups/<backup-id>/manifest.json   every file with its chunks; written last
//! <cluster>/packs/<hh>/<id>                     chunks concatenated; the id is the SHA-256 of the
//!                                               chunks' SHA-256s in order (content-addressed)
//! ```
//!
//! Invariants:
//! - A backup exists only when its manifest does; packs without a manifest that names them are
//!   garbage for expire, never part of a backup.
//! - Every manifest names every pack it needs, whoever wrote the pack: no backup depends on another
//!   backup's manifest, so deleting an older backup never breaks a newer one (no chains).
//! - A chunk is identified by the SHA-256 of its plain bytes. Restore checks every chunk against it
//!   before writing it, on top of the codec's checksums of the whole pack.
//! - Files are split at page-aligned offsets (every [`CHUNK_SIZE`]), so a changed page changes one
//!   chunk and a backup after a small change stores about that much.

pub mod manifest;
pub mod restore;
pub mod take;
pub mod verify;

pub use verify::BackupStatus;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

pub use manifest::{BackupManifest, ChunkRef, FileEntry, FileKind, PackRef};

pub const BACKUPS_DIR: &str = "backups";
pub const PACKS_DIR: &str = "packs";
pub const MANIFEST_FILE: &str = "manifest.json";

/// Chunks are 32 pages of 8 KiB: small enough that a scattered change stores little, large enough
/// that a manifest of a terabyte cluster stays in memory (4 M entries).
pub const CHUNK_SIZE: usize = 256 << 10;
/// Chunks are packed into objects of about this size, so a backup of N GB makes about 64 N
/// requests whatever the number of files.
pub const PACK_TARGET: usize = 16 << 20;

/// Whether a backup read every file (full) or reused the chunk lists of files unchanged since the
/// previous one (incremental). Both kinds are complete on their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupKind {
    Full,
    Incremental,
}

impl BackupKind {
    pub fn letter(self) -> char {
        match self {
            BackupKind::Full => 'F',
            BackupKind::Incremental => 'I',
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BackupKind::Full => "full",
            BackupKind::Incremental => "incremental",
        }
    }
}

/// `YYYYMMDDTHHMMSSZ-F` or `-I`: sorts by start time, names the kind.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BackupId(String);

impl BackupId {
    pub fn new(start: SystemTime, kind: BackupKind) -> Self {
        BackupId(format!("{}-{}", format_compact_utc(start), kind.letter()))
    }

    pub fn parse(text: &str) -> Result<Self> {
        let bytes = text.as_bytes();
        let shape_ok = bytes.len() == 18
            && bytes[..8].iter().all(u8::is_ascii_digit)
            && bytes[8] == b'T'
            && bytes[9..15].iter().all(u8::is_ascii_digit)
            && bytes[15] == b'Z'
            && bytes[16] == b'-'
            && matches!(bytes[17], b'F' | b'I');
        if shape_ok {
            Ok(BackupId(text.to_string()))
        } else {
            Err(Error::InvalidInput(format!(
                "\"{}\" is not a backup id; ids look like 20261122T031500Z-F (F full, I incremental)",
                text.escape_debug()
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn kind(&self) -> BackupKind {
        if self.0.ends_with('I') {
            BackupKind::Incremental
        } else {
            BackupKind::Full
        }
    }
}

impl TryFrom<String> for BackupId {
    type Error = Error;
    fn try_from(value: String) -> Result<Self> {
        BackupId::parse(&value)
    }
}

impl From<BackupId> for String {
    fn from(id: BackupId) -> String {
        id.0
    }
}

impl std::fmt::Display for BackupId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub fn manifest_path(id: &BackupId) -> String {
    format!("{BACKUPS_DIR}/{id}/{MANIFEST_FILE}")
}

pub fn pack_path(pack_id: &str) -> String {
    format!("{PACKS_DIR}/{}/{pack_id}", &pack_id[..2])
}

/// A WAL position, `XXXXXXXX/XXXXXXXX` as PostgreSQL prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    pub fn parse(text: &str) -> Result<Lsn> {
        let bad =
            || Error::InvalidInput(format!("\"{}\" is not an LSN; LSNs look like 0/3000028", text.escape_debug()));
        let (high, low) = text.trim().split_once('/').ok_or_else(bad)?;
        let high = u32::from_str_radix(high, 16).map_err(|_| bad())?;
        let low = u32::from_str_radix(low, 16).map_err(|_| bad())?;
        Ok(Lsn(((high as u64) << 32) | low as u64))
    }

    /// The segment number holding this position.
    pub fn segment(self, segment_size: u32) -> u64 {
        self.0 / segment_size as u64
    }
}

impl std::fmt::Display for Lsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 as u32)
    }
}

impl serde::Serialize for Lsn {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Lsn {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Lsn::parse(&text).map_err(serde::de::Error::custom)
    }
}

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
    let (y, mo, d) = crate::snapshot::time::civil_from_days((secs / 86_400) as i64);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_time_and_name_their_kind() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_317_300); // 2026-11-22 03:15:00 UTC
        let full = BackupId::new(t, BackupKind::Full);
        assert_eq!(full.as_str(), "20261122T031500Z-F");
        let later = BackupId::new(t + Duration::from_secs(1), BackupKind::Incremental);
        assert!(later > full);
        assert_eq!(later.kind(), BackupKind::Incremental);
        assert_eq!(BackupId::parse("20261122T031500Z-F").unwrap(), full);
        for bad in ["", "20261122T031500Z", "20261122T031500Z-X", "../../etc-F", "20261122T031500Z-F/x"] {
            assert!(BackupId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn lsns_round_trip_in_postgres_notation() {
        let lsn = Lsn::parse("16/B374D848").unwrap();
        assert_eq!(lsn.0, 0x16_B374_D848);
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert_eq!(Lsn::parse("0/3000028").unwrap().segment(16 << 20), 3);
        assert!(Lsn::parse("3000028").is_err());
    }

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
