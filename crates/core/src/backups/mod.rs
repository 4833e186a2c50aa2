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

pub mod damage;
pub mod manifest;
pub mod page_checksum;
pub mod restore;
pub mod summaries;
pub mod take;
pub mod verify;

pub use verify::BackupStatus;

use crate::error::{Error, Result};

pub use manifest::{BackupManifest, ChunkRef, FileEntry, FileKind, PackRef};

pub use crate::layout::{BACKUPS_DIR, MANIFEST_FILE, PACKS_DIR};

/// Chunks are 32 pages of 8 KiB: small enough that a scattered change stores little, large enough
/// that a manifest of a terabyte cluster stays in memory (4 M entries).
pub const CHUNK_SIZE: usize = 256 << 10;
/// Chunks are packed into objects of about this size, so a backup of N GB makes about 64 N
/// requests whatever the number of files.
pub const PACK_TARGET: usize = 16 << 20;

pub use crate::layout::{BackupId, BackupKind};

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

pub use crate::time::{format_compact_utc, format_utc, from_unix_seconds, parse_time, unix_seconds};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_round_trip_in_postgres_notation() {
        let lsn = Lsn::parse("16/B374D848").unwrap();
        assert_eq!(lsn.0, 0x16_B374_D848);
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert_eq!(Lsn::parse("0/3000028").unwrap().segment(16 << 20), 3);
        assert!(Lsn::parse("3000028").is_err());
    }
}
