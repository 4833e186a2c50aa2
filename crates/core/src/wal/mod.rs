//! WAL file names, their place in the repository, and the segment page header.
//!
//! ```text
//! wal/<timeline><log>/<segment>            000000010000000A000000FE
//! wal/<timeline><log>/<segment>.partial    end of a timeline, promoted standby
//! wal/<timeline><log>/<segment>.<off>.backup
//! wal/<timeline>.history
//! ```

use std::path::{Path, PathBuf};

pub mod events;
pub mod history;
mod lsn;
pub mod records;

pub use lsn::Lsn;

use crate::error::Error;
use crate::repository::{PutResult, Repository};
use crate::store::WriteMode;

pub use crate::layout::{segment_name, WalFileKind, WalFileName, DEFAULT_SEGMENT_SIZE};

/// The WAL files waiting in `archive_status` (names of `.ready` files without the suffix), in the
/// order PostgreSQL's archiver asks for them: timeline history files first, then oldest first.
pub fn archive_order(ready: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut files: Vec<String> = ready.into_iter().filter(|name| WalFileName::parse(name).is_ok()).collect();
    files.sort_by(|a, b| (!a.ends_with(".history"), a).cmp(&(!b.ends_with(".history"), b)));
    files
}

/// A run of missing segments on one timeline, between two archived ones.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Gap {
    pub timeline: u32,
    pub first_missing: String,
    pub last_missing: String,
    pub count: u64,
}

/// Missing segments between the first and last archived segment of each timeline. `.partial`
/// files do not fill a gap: they are the unfinished end of a timeline.
pub fn find_gaps<'a>(names: impl IntoIterator<Item = &'a WalFileName>, segment_size: u32) -> Vec<Gap> {
    let mut per_timeline: std::collections::BTreeMap<u32, Vec<u64>> = Default::default();
    for name in names {
        if name.kind == WalFileKind::Segment {
            if let Some((timeline, number)) = name.position(segment_size) {
                per_timeline.entry(timeline).or_default().push(number);
            }
        }
    }
    let mut gaps = Vec::new();
    for (timeline, mut numbers) in per_timeline {
        numbers.sort_unstable();
        numbers.dedup();
        for pair in numbers.windows(2) {
            if pair[1] > pair[0] + 1 {
                gaps.push(Gap {
                    timeline,
                    first_missing: segment_name(timeline, pair[0] + 1, segment_size),
                    last_missing: segment_name(timeline, pair[1] - 1, segment_size),
                    count: pair[1] - pair[0] - 1,
                });
            }
        }
    }
    gaps
}

/// The fields of a segment's first (long) page header that identify where it comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalPageHeader {
    pub magic: u16,
    pub timeline: u32,
    pub page_address: u64,
    pub system_identifier: u64,
    pub segment_size: u32,
    pub block_size: u32,
}

const XLP_LONG_HEADER: u16 = 0x0002;

/// Reads XLogLongPageHeaderData from the start of a segment (little-endian, as on every platform
/// this runs on). None when the bytes do not start with a long page header.
pub fn parse_long_page_header(bytes: &[u8]) -> Option<WalPageHeader> {
    if bytes.len() < 40 {
        return None;
    }
    let u16_at = |at: usize| u16::from_le_bytes(bytes[at..at + 2].try_into().unwrap());
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
    let info = u16_at(2);
    if info & XLP_LONG_HEADER == 0 {
        return None;
    }
    Some(WalPageHeader {
        magic: u16_at(0),
        timeline: u32_at(4),
        page_address: u64_at(8),
        system_identifier: u64_at(24),
        segment_size: u32_at(32),
        block_size: u32_at(36),
    })
}

/// Checks a file about to be archived: a valid WAL file name, and for segments a page header that
/// names this cluster. Returns the parsed name.
pub fn check_before_archiving(file_name: &str, contents: &[u8], system_identifier: u64) -> Result<WalFileName, Error> {
    let name = WalFileName::parse(file_name)?;
    if matches!(name.kind, WalFileKind::Segment | WalFileKind::Partial) {
        if let Some(header) = parse_long_page_header(contents) {
            if header.system_identifier != system_identifier {
                return Err(Error::ForeignWal {
                    file: file_name.to_string(),
                    expected: system_identifier.to_string(),
                    found: header.system_identifier.to_string(),
                });
            }
        }
    }
    Ok(name)
}

/// Archives one WAL file: checks it belongs to `system_identifier` (the namespace owner), then stores
/// it create-if-absent. The one "check then store" step of the archive module and `wal push`.
pub async fn archive_file(
    repository: &Repository,
    file_name: &str,
    contents: Vec<u8>,
    system_identifier: u64,
) -> Result<PutResult, Error> {
    let name = check_before_archiving(file_name, &contents, system_identifier)?;
    repository.put_bytes(&crate::layout::wal(&name), contents.into(), WriteMode::CreateNew).await
}

/// The system identifier a segment or .partial file's own page header names. `.history` and
/// `.backup` files are text and carry none: their bytes are never read as a header.
pub fn segment_system_identifier(name: &WalFileName, contents: &[u8]) -> Option<u64> {
    match name.kind {
        WalFileKind::Segment | WalFileKind::Partial => parse_long_page_header(contents).map(|h| h.system_identifier),
        WalFileKind::Backup | WalFileKind::History => None,
    }
}

/// pg_control is PG_CONTROL_FILE_SIZE bytes; ControlFileData starts with the system identifier
/// (uint64) and pg_control_version (uint32).
const CONTROL_FILE_SIZE: usize = 8192;

/// `global/pg_control` of the data directory a WAL file path (`%p`, `.../pg_wal/<file>`) lies in, if
/// the path is inside a `pg_wal` directory.
pub fn control_file_for(wal_path: &Path) -> Option<PathBuf> {
    let wal_dir = wal_path.parent()?;
    if wal_dir.file_name()? != "pg_wal" {
        return None;
    }
    let data_dir = wal_dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    Some(data_dir.join("global").join("pg_control"))
}

/// The system identifier recorded in a pg_control file.
pub fn control_file_system_identifier(path: &Path, bytes: &[u8]) -> Result<u64, Error> {
    let corrupt = |reason: String| Error::Corrupt { key: path.display().to_string(), reason };
    if bytes.len() != CONTROL_FILE_SIZE {
        return Err(corrupt(format!("it is {} bytes, not the {CONTROL_FILE_SIZE} of a pg_control file", bytes.len())));
    }
    let system_identifier = u64::from_le_bytes(bytes[0..8].try_into().expect("8 bytes"));
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    // PG_CONTROL_VERSION: 1100 (PostgreSQL 11) up to 1800; anything else is not a control file.
    if !(1100..=1900).contains(&version) || system_identifier == 0 {
        return Err(corrupt(format!("it does not look like a pg_control file (control version {version})")));
    }
    Ok(system_identifier)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_directory_s_control_file_is_found_from_a_wal_path() {
        assert_eq!(control_file_for(Path::new("pg_wal/000000010000000000000001")), Some("./global/pg_control".into()));
        assert_eq!(
            control_file_for(Path::new("/srv/pg/data/pg_wal/00000002.history")),
            Some("/srv/pg/data/global/pg_control".into())
        );
        assert_eq!(control_file_for(Path::new("/tmp/copies/00000002.history")), None, "not in a pg_wal directory");
        let mut control = vec![0u8; CONTROL_FILE_SIZE];
        control[0..8].copy_from_slice(&7_400_000_000_000_000_001u64.to_le_bytes());
        control[8..12].copy_from_slice(&1300u32.to_le_bytes());
        assert_eq!(control_file_system_identifier(Path::new("x"), &control).unwrap(), 7_400_000_000_000_000_001);
        control[8..12].copy_from_slice(&42u32.to_le_bytes());
        assert!(matches!(control_file_system_identifier(Path::new("x"), &control), Err(Error::Corrupt { .. })));
        assert!(control_file_system_identifier(Path::new("x"), b"short").is_err());
    }

    #[test]
    fn text_files_are_never_read_as_a_page_header() {
        // A .history file whose text happens to have the long-header bit set at byte 2.
        let mut text = b"1\t0/3000000\tbefore 2026-11-22 03:00:00+00\n".to_vec();
        text.resize(64, b' ');
        text[2] = 0x02;
        assert!(parse_long_page_header(&text).is_some(), "the bytes alone would pass as a header");
        let history = WalFileName::parse("00000002.history").unwrap();
        assert_eq!(segment_system_identifier(&history, &text), None);
        let backup = WalFileName::parse("000000010000000000000002.00000028.backup").unwrap();
        assert_eq!(segment_system_identifier(&backup, &text), None);
    }

    #[test]
    fn archive_order_puts_history_first_then_oldest() {
        let ready = [
            "000000020000000000000004",
            "00000002.history",
            "000000010000000000000009",
            "junk",
            "000000020000000000000003.partial",
        ];
        assert_eq!(
            archive_order(ready.iter().map(|s| s.to_string())),
            [
                "00000002.history",
                "000000010000000000000009",
                "000000020000000000000003.partial",
                "000000020000000000000004"
            ]
        );
    }

    #[test]
    fn gaps_are_found_per_timeline() {
        let names: Vec<WalFileName> = [
            "000000010000000000000001",
            "000000010000000000000002",
            "000000010000000000000005",
            "0000000100000000000000FF",
            "000000010000000100000000",
            "000000020000000100000000.partial",
            "000000020000000100000003",
            "000000020000000100000004",
            "00000002.history",
        ]
        .iter()
        .map(|n| WalFileName::parse(n).unwrap())
        .collect();
        let gaps = find_gaps(&names, 16 << 20);
        assert_eq!(gaps.len(), 2, "{gaps:?}");
        assert_eq!(
            gaps[0],
            Gap {
                timeline: 1,
                first_missing: "000000010000000000000003".into(),
                last_missing: "000000010000000000000004".into(),
                count: 2
            }
        );
        assert_eq!((gaps[1].first_missing.as_str(), gaps[1].count), ("000000010000000000000006", 249));
    }

    #[test]
    fn a_segment_of_another_cluster_is_refused() {
        let mut page = vec![0u8; 64];
        page[2..4].copy_from_slice(&0x0002u16.to_le_bytes());
        page[24..32].copy_from_slice(&111u64.to_le_bytes());
        check_before_archiving("000000010000000000000001", &page, 111).unwrap();
        let error = check_before_archiving("000000010000000000000001", &page, 222).unwrap_err();
        assert!(error.to_string().contains("system identifier 111, not by 222"), "{error}");
        check_before_archiving("00000002.history", b"1\t0/3000000\tno recovery target", 222).unwrap();
    }

    #[test]
    fn long_page_header_fields_are_read_at_their_offsets() {
        let mut page = vec![0u8; 8192];
        page[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
        page[2..4].copy_from_slice(&0x0006u16.to_le_bytes());
        page[4..8].copy_from_slice(&1u32.to_le_bytes());
        page[8..16].copy_from_slice(&0x0000_0001_0000_0000u64.to_le_bytes());
        page[24..32].copy_from_slice(&7_301_234_567_890_123_456u64.to_le_bytes());
        page[32..36].copy_from_slice(&(16u32 << 20).to_le_bytes());
        page[36..40].copy_from_slice(&8192u32.to_le_bytes());
        let header = parse_long_page_header(&page).unwrap();
        assert_eq!(header.system_identifier, 7_301_234_567_890_123_456);
        assert_eq!(header.segment_size, 16 << 20);
        assert_eq!(header.timeline, 1);
        page[2] = 0;
        assert!(parse_long_page_header(&page).is_none(), "a short page header carries no system identifier");
    }
}
