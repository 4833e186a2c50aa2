//! The names backstop gives things in a repository: backup, snapshot and logical ids, WAL file
//! names, and the encodings that turn a table or database name into one path component. Each is a
//! checked type: a value exists only if it has the shape its parser accepts, so no path built from
//! one can leave its directory or alias another name.

use std::fmt::Write as _;
use std::time::SystemTime;

use crate::error::{Error, Result};
use crate::time::format_compact_utc;

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

/// `YYYYMMDDTHHMMSSZ-L`: sorts by start time; the letter tells it from a base backup's id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LogicalId(String);

impl LogicalId {
    pub fn new(start: SystemTime) -> Self {
        LogicalId(format!("{}-L", format_compact_utc(start)))
    }

    pub fn parse(text: &str) -> Result<Self> {
        let bytes = text.as_bytes();
        let shape_ok = bytes.len() == 18
            && bytes[..8].iter().all(u8::is_ascii_digit)
            && bytes[8] == b'T'
            && bytes[9..15].iter().all(u8::is_ascii_digit)
            && bytes[15] == b'Z'
            && &bytes[16..] == b"-L";
        if shape_ok {
            Ok(LogicalId(text.to_string()))
        } else {
            Err(Error::InvalidInput(format!(
                "\"{}\" is not a logical backup id; ids look like 20261122T031500Z-L",
                text.escape_debug()
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for LogicalId {
    type Error = Error;
    fn try_from(value: String) -> Result<Self> {
        LogicalId::parse(&value)
    }
}

impl From<LogicalId> for String {
    fn from(id: LogicalId) -> String {
        id.0
    }
}

impl std::fmt::Display for LogicalId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A database name as one path component: bytes outside `[A-Za-z0-9_-]` become `%XX`.
pub fn database_dir(database: &str) -> String {
    let mut out = String::with_capacity(database.len());
    for byte in database.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The inverse of [`database_dir`]; None for a component it could not have written.
pub fn database_from_dir(dir: &str) -> Option<String> {
    let bytes = dir.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                if hex.bytes().any(|b| b.is_ascii_lowercase()) {
                    return None;
                }
                let byte = u8::from_str_radix(hex, 16).ok()?;
                if byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-' {
                    return None; // never encoded: a second spelling of the same name
                }
                out.push(byte);
                i += 3;
            }
            b if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    let name = String::from_utf8(out).ok()?;
    (!name.is_empty()).then_some(name)
}

/// `snap_` followed by 8 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SnapshotId(String);

impl SnapshotId {
    pub fn random() -> Self {
        SnapshotId(format!("snap_{:08x}", rand::random::<u32>()))
    }

    pub fn parse(text: &str) -> Result<Self> {
        let hex = text.strip_prefix("snap_").unwrap_or("");
        if hex.len() == 8 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            Ok(SnapshotId(text.to_string()))
        } else {
            Err(Error::InvalidInput(format!(
                "\"{}\" is not a snapshot id; ids look like snap_1a2b3c4d",
                text.escape_debug()
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Keeps ASCII letters, digits, '_' and '-'; every other byte of the UTF-8 name becomes %XX.
pub(crate) fn encode_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-' {
            out.push(byte as char);
        } else {
            write!(out, "%{byte:02X}").expect("writing to a String");
        }
    }
    out
}

pub(crate) fn decode_name(encoded: &str) -> Option<String> {
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = encoded.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The directory name of a table: `<schema>.<table>`, each part encoded.
pub fn table_dir_name(schema: &str, table: &str) -> String {
    format!("{}.{}", encode_name(schema), encode_name(table))
}

/// The (schema, table) a directory name stands for; None for names backstop did not write.
pub fn parse_table_dir_name(name: &str) -> Option<(String, String)> {
    let (schema, table) = name.split_once('.')?;
    Some((decode_name(schema)?, decode_name(table)?))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalFileKind {
    Segment,
    Partial,
    Backup,
    History,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalFileName {
    pub name: String,
    pub kind: WalFileKind,
    pub timeline: u32,
}

fn is_upper_hex(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

impl WalFileName {
    /// Parses a file name PostgreSQL hands to archive_library / archive_command / restore_command.
    pub fn parse(name: &str) -> Result<Self, Error> {
        let invalid = || Error::InvalidSetting {
            setting: "WAL file name",
            reason: format!("\"{name}\" is not a WAL segment, .partial, .backup or .history file name"),
        };
        let (kind, stem) = if let Some(stem) = name.strip_suffix(".history") {
            (WalFileKind::History, stem)
        } else if let Some(stem) = name.strip_suffix(".partial") {
            (WalFileKind::Partial, stem)
        } else if let Some(rest) = name.strip_suffix(".backup") {
            let (stem, offset) = rest.split_once('.').ok_or_else(invalid)?;
            if offset.len() != 8 || !is_upper_hex(offset) {
                return Err(invalid());
            }
            (WalFileKind::Backup, stem)
        } else {
            (WalFileKind::Segment, name)
        };
        let expected_len = if kind == WalFileKind::History { 8 } else { 24 };
        if stem.len() != expected_len || !is_upper_hex(stem) {
            return Err(invalid());
        }
        let timeline = u32::from_str_radix(&stem[..8], 16).map_err(|_| invalid())?;
        Ok(WalFileName { name: name.to_string(), kind, timeline })
    }
}

pub const DEFAULT_SEGMENT_SIZE: u32 = 16 << 20;

impl WalFileName {
    /// (timeline, segment number) of a segment or .partial file.
    pub fn position(&self, segment_size: u32) -> Option<(u32, u64)> {
        if matches!(self.kind, WalFileKind::History) {
            return None;
        }
        let log = u64::from_str_radix(&self.name[8..16], 16).ok()?;
        let seg = u64::from_str_radix(&self.name[16..24], 16).ok()?;
        Some((self.timeline, log * segments_per_log(segment_size) + seg))
    }

    /// The segment that follows this one on the same timeline.
    pub fn next_segment(&self, segment_size: u32) -> Option<WalFileName> {
        let (timeline, number) = self.position(segment_size)?;
        let name = segment_name(timeline, number + 1, segment_size);
        Some(WalFileName { name, kind: WalFileKind::Segment, timeline })
    }
}

fn segments_per_log(segment_size: u32) -> u64 {
    0x1_0000_0000u64 / segment_size.max(1) as u64
}

pub fn segment_name(timeline: u32, number: u64, segment_size: u32) -> String {
    let per_log = segments_per_log(segment_size);
    format!("{:08X}{:08X}{:08X}", timeline, number / per_log, number % per_log)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

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
    fn ids_sort_by_time_and_have_one_shape() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_795_312_500);
        let id = LogicalId::new(t);
        assert_eq!(LogicalId::parse(id.as_str()).unwrap(), id);
        assert!(id.as_str().ends_with("-L"));
        assert!(LogicalId::new(t) < LogicalId::new(t + std::time::Duration::from_secs(1)));
        for bad in ["20261122T031500Z-F", "20261122T031500Z-L/..", "../x", ""] {
            assert!(LogicalId::parse(bad).is_err(), "{bad}");
        }
    }
    #[test]
    fn any_database_name_is_one_path_component_and_round_trips() {
        for name in ["app", "my db", "a/b", "..", ".", "Ünïcode", "x%41", "semi;colon", "MixedCase_1-2"] {
            let dir = database_dir(name);
            assert!(!dir.contains('/') && dir != "." && dir != "..", "{name} -> {dir}");
            assert_eq!(database_from_dir(&dir).as_deref(), Some(name), "{dir}");
        }
        assert_eq!(database_dir("app"), "app");
        assert_eq!(database_dir("a/b"), "a%2Fb");
        // Spellings database_dir never writes are not read as names.
        for bad in ["a%2fb", "%61pp", "a b", "", "%2", "a.b"] {
            assert_eq!(database_from_dir(bad), None, "{bad}");
        }
    }
    #[test]
    fn snapshot_ids_are_validated() {
        let id = SnapshotId::random();
        assert_eq!(SnapshotId::parse(id.as_str()).unwrap(), id);
        assert!(id.as_str().starts_with("snap_") && id.as_str().len() == 13);
        for bad in ["", "snap_", "snap_1234567", "snap_123456789", "snap_ABCDEF12", "snap_../../x", "x_12345678"] {
            let error = SnapshotId::parse(bad).unwrap_err();
            assert!(matches!(error, Error::InvalidInput(_)), "{bad}");
        }
    }
    #[test]
    fn any_identifier_maps_to_one_safe_directory_and_back() {
        for (schema, table) in [
            ("public", "orders"),
            ("Sales", "Order Items"),
            ("a.b", "c/d"),
            ("ünïcødé", "表"),
            ("x%41", ".."),
            ("quote\"d", "semi;colon"),
        ] {
            let dir = table_dir_name(schema, table);
            crate::store::validate_key(&format!("snapshots/{dir}/snap_00000000")).unwrap();
            assert_eq!(dir.matches('.').count(), 1, "{dir}");
            assert!(dir.chars().all(|c| c.is_ascii_alphanumeric() || "%._-".contains(c)), "{dir}");
            assert_eq!(parse_table_dir_name(&dir), Some((schema.to_string(), table.to_string())));
        }
        assert_ne!(table_dir_name("a.b", "c"), table_dir_name("a", "b.c"));
        assert_eq!(parse_table_dir_name("no-dot"), None);
        assert_eq!(parse_table_dir_name("a.%zz"), None);
    }
    #[test]
    fn names_map_to_their_objects() {
        let cases = [
            ("000000010000000A000000FE", WalFileKind::Segment, "wal/000000010000000A/000000010000000A000000FE"),
            (
                "000000020000000000000003.partial",
                WalFileKind::Partial,
                "wal/0000000200000000/000000020000000000000003.partial",
            ),
            (
                "000000010000000000000002.00000028.backup",
                WalFileKind::Backup,
                "wal/0000000100000000/000000010000000000000002.00000028.backup",
            ),
            ("00000002.history", WalFileKind::History, "wal/00000002.history"),
        ];
        for (name, kind, path) in cases {
            let parsed = WalFileName::parse(name).unwrap();
            assert_eq!(parsed.kind, kind, "{name}");
            assert_eq!(crate::layout::wal(&parsed).as_str(), path);
        }
        assert_eq!(WalFileName::parse("0000000A0000000000000001").unwrap().timeline, 10);
    }
    #[test]
    fn anything_else_is_refused() {
        for bad in [
            "",
            "00000001000000000000001",
            "000000010000000000000001x",
            "000000010000000a00000001",
            "../../etc/passwd",
            "0000000100000000000000010.partial",
            "000000010000000000000002.backup",
            "00000002.History",
            "archive_status",
        ] {
            assert!(WalFileName::parse(bad).is_err(), "{bad:?}");
        }
    }
    #[test]
    fn segments_follow_each_other_across_log_boundaries() {
        let name = WalFileName::parse("0000000100000003000000FF").unwrap();
        assert_eq!(name.next_segment(16 << 20).unwrap().name, "000000010000000400000000");
        let name = WalFileName::parse("000000020000000000000001").unwrap();
        assert_eq!(name.next_segment(64 << 20).unwrap().name, "000000020000000000000002");
        assert_eq!(segment_name(1, 0x3FF, 64 << 20), "000000010000000F0000003F");
        assert!(WalFileName::parse("00000002.history").unwrap().next_segment(16 << 20).is_none());
    }
}
