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
pub mod window;

pub use verify::BackupStatus;

pub use manifest::{BackupManifest, ChunkRef, FileEntry, FileKind, PackRef};

pub use crate::layout::{BACKUPS_DIR, MANIFEST_FILE, PACKS_DIR};

/// Chunks are 32 pages of 8 KiB: small enough that a scattered change stores little, large enough
/// that a manifest of a terabyte cluster stays in memory (4 M entries).
pub const CHUNK_SIZE: usize = 256 << 10;
/// Chunks are packed into objects of about this size, so a backup of N GB makes about 64 N
/// requests whatever the number of files.
pub const PACK_TARGET: usize = 16 << 20;

pub use crate::layout::{BackupId, BackupKind};

pub use crate::wal::Lsn;

pub use crate::time::{format_compact_utc, format_utc, from_unix_seconds, parse_time, unix_seconds};
