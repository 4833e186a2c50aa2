//! The backup manifest: what a base backup holds, and the only object that makes it a backup.
//!
//! A manifest is read back by restores that run with the server down, where no key of the server
//! is at hand, so it is not signed: its integrity comes from the codec's checksums, and everything
//! in it that steers a restore is validated here before use (paths cannot leave the target
//! directory, chunk references stay inside the packs they name, ids have their fixed shapes).
//! Recovery settings are never taken from it: the CLI writes them from its own arguments.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::{BackupId, BackupKind, Lsn};
use crate::error::{Error, Result};
use crate::layout;
use crate::repository::Repository;
use crate::store::WriteMode;

/// Format 1: every chunk reference stands for its whole chunk. Format 2 (written only when one
/// does not): a reference may stand for a byte range of its chunk (`ChunkRef::range`), what an
/// incremental from WAL summaries writes for the unchanged blocks around a changed one. A reader
/// of format 1 only refuses format 2 by its number instead of restoring it wrongly.
pub const MANIFEST_FORMAT_VERSION: u32 = 2;
pub const MANIFEST_FORMAT_WHOLE_CHUNKS: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupManifest {
    pub format_version: u32,
    pub id: BackupId,
    pub kind: BackupKind,
    pub cluster: String,
    /// As a string: JSON numbers lose precision above 2^53 in many readers.
    pub system_identifier: String,
    pub pg_version_num: u32,
    pub wal_segment_size: u32,
    pub timeline: u32,
    pub start_lsn: Lsn,
    pub stop_lsn: Lsn,
    /// Unix seconds.
    pub start_time: f64,
    pub stop_time: f64,
    /// The backup whose chunk lists this one reused where files were unchanged.
    pub previous: Option<BackupId>,
    /// The `backup_label` pg_backup_stop returned; restored as the data directory's backup_label.
    pub backup_label: String,
    /// The `tablespace_map` pg_backup_stop returned (empty without tablespaces). A restore writes
    /// its own from [`BackupManifest::tablespaces`] and any relocation, never this text.
    #[serde(default)]
    pub tablespace_map: String,
    pub tablespaces: Vec<Tablespace>,
    pub packs: Vec<PackRef>,
    pub files: Vec<FileEntry>,
    pub stats: BackupStats,
    /// Every table's row count, taken right after the backup in one snapshot, and the WAL
    /// position that snapshot matches: a recovery stopped just before `lsn` must hold exactly
    /// these rows (the `pitr` drill checks it). Absent when counting was turned off or could
    /// not finish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_counts: Option<RowCounts>,
    /// The relation file of every table of the database backstop's worker runs in, when the
    /// backup started: where `table_history` starts following a table through the WAL (also
    /// one dropped since). Empty in manifests before 0.3.0.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relations: Vec<RelationFile>,
}

/// A table and its relation file (`pg_class.relfilenode` with its tablespace and database).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelationFile {
    /// As `regclass` prints it (schema-qualified, quoted where needed).
    pub table: String,
    pub oid: u32,
    pub tablespace: u32,
    pub database: u32,
    pub relfilenode: u32,
}

impl RelationFile {
    pub fn file(&self) -> crate::wal::records::RelFile {
        crate::wal::records::RelFile {
            tablespace: self.tablespace,
            database: self.database,
            relfilenode: self.relfilenode,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowCounts {
    /// The database the tables are in (the one backstop's worker connects to).
    pub database: String,
    /// `pg_current_wal_insert_lsn()` read in the counting snapshot's first statement.
    pub lsn: Lsn,
    pub tables: Vec<TableRows>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableRows {
    /// As `regclass` prints it (schema-qualified, quoted where needed). Parsed, never pasted.
    pub table: String,
    pub rows: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tablespace {
    pub oid: u32,
    /// Where the tablespace lived on the backed-up server (absolute).
    pub location: String,
}

/// A pack this backup needs, written by this backup or an earlier one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackRef {
    /// SHA-256 of the writing backup's random salt and the SHA-256s of its chunks in order, hex:
    /// unique to the backup that wrote it (never the name of an older, possibly damaged, pack).
    pub id: String,
    /// Plain length.
    pub len: u64,
    /// Unix seconds when its whole body was last known good: written by its backup, or read
    /// back through every checksum by a later incremental that reuses it (0: unknown, as in
    /// manifests before 0.3.0). A reused pack older than the re-read period is read again.
    #[serde(default)]
    pub verified_at: u64,
    /// Stored encrypted (age); None (unknown) in manifests before 0.3.0, until an incremental
    /// reads the pack's header again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    File,
    Dir,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative to the data directory; tablespace files under `pg_tblspc/<oid>/`.
    pub path: String,
    pub kind: FileKind,
    pub mode: u32,
    pub size: u64,
    pub mtime_s: i64,
    pub mtime_ns: u32,
    pub inode: u64,
    /// When this file's bytes were last actually read (unix seconds): a reused chunk list keeps
    /// the time of the read it came from, so the periodic re-read can tell how old it is.
    pub read_at: f64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<ChunkRef>,
}

/// One piece of a file: a chunk (its SHA-256 and where its bytes are in which pack), whole or,
/// with `range`, the bytes `[from, to)` of it. A restore reads and checks the whole chunk either way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    #[serde(rename = "h")]
    pub sha256: String,
    /// Index into [`BackupManifest::packs`].
    #[serde(rename = "p")]
    pub pack: u32,
    #[serde(rename = "o")]
    pub offset: u64,
    #[serde(rename = "l")]
    pub len: u32,
    #[serde(rename = "r", default, skip_serializing_if = "Option::is_none")]
    pub range: Option<[u32; 2]>,
}

impl ChunkRef {
    /// The bytes of the file this reference stands for.
    pub fn file_len(&self) -> u32 {
        self.range.map_or(self.len, |[from, to]| to.saturating_sub(from))
    }

    /// The part of the chunk this reference stands for, as offsets into the chunk.
    pub fn span(&self) -> (u32, u32) {
        self.range.map_or((0, self.len), |[from, to]| (from, to))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BackupStats {
    pub files: u64,
    /// Sum of the sizes of all files.
    pub bytes: u64,
    /// Bytes read from the data directory (less than `bytes` when unchanged files were reused).
    pub bytes_read: u64,
    /// Plain bytes of chunks no earlier backup held.
    pub bytes_new: u64,
    /// Bytes written to the store (compressed, encrypted) for the new packs.
    pub bytes_stored: u64,
    pub packs_new: u64,
    pub files_reused: u64,
    /// Store requests made (uploads of packs and the manifest).
    pub requests: u64,
    /// Earlier packs read back through every checksum before they were reused.
    #[serde(default)]
    pub packs_rechecked: u64,
    /// Earlier packs found missing or damaged: not referenced, their chunks stored anew.
    #[serde(default)]
    pub packs_unusable: u64,
    /// Pages read whose checksum did not match (data checksums on; pages written since the
    /// backup started are not judged): damage on the server's disk, backed up as found.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub page_checksum_failures: u64,
    /// The first of them, as "path block N (checksum S, computed C)".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub damaged_pages: Vec<String>,
    /// Incremental on PostgreSQL 17+: where the changed blocks came from ("WAL summaries ...")
    /// or why every changed file was read whole instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_blocks: Option<String>,
    /// Changed relation files read only in part, by the WAL summaries.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub files_summarized: u64,
    /// Bytes of those files not read: no block in them changed since the previous backup.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub bytes_skipped: u64,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

fn corrupt(key: &str, reason: String) -> Error {
    Error::Corrupt { key: key.to_string(), reason }
}

/// A path from a manifest is relative, '/'-separated, with no empty, '.' or '..' part and no NUL:
/// joined to a target directory it can never name anything outside it.
pub fn check_relative_path(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && !path.contains('\0')
        && !path.contains('\\')
        && path.split('/').all(|part| !part.is_empty() && part != "." && part != "..")
}

/// An absolute path without `.`, `..`, empty components or characters a tablespace_map line
/// cannot hold.
pub fn is_clean_absolute(path: &str) -> bool {
    path.starts_with('/')
        && !path.contains(['\0', '\n', '\r', '\\'])
        && path[1..].split('/').all(|part| !part.is_empty() && part != "." && part != "..")
}

pub(crate) fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl BackupManifest {
    /// Checks everything a restore relies on; `key` names the manifest in messages.
    pub fn validate(&self, key: &str) -> Result<()> {
        if !(MANIFEST_FORMAT_WHOLE_CHUNKS..=MANIFEST_FORMAT_VERSION).contains(&self.format_version) {
            return Err(corrupt(
                key,
                format!(
                    "manifest format {} is not one this backstop reads ({MANIFEST_FORMAT_VERSION})",
                    self.format_version
                ),
            ));
        }
        if self.stop_lsn < self.start_lsn || self.timeline == 0 || !self.wal_segment_size.is_power_of_two() {
            return Err(corrupt(key, "its LSNs, timeline or segment size are impossible".into()));
        }
        for pack in &self.packs {
            if !is_sha256_hex(&pack.id) {
                return Err(corrupt(key, format!("pack id \"{}\" is not a SHA-256", pack.id.escape_debug())));
            }
        }
        let mut oids = HashSet::new();
        for space in &self.tablespaces {
            if !is_clean_absolute(&space.location) || !oids.insert(space.oid) {
                return Err(corrupt(key, format!("tablespace {} has an invalid location", space.oid)));
            }
        }
        let dirs: HashSet<&str> =
            self.files.iter().filter(|f| f.kind == FileKind::Dir).map(|f| f.path.as_str()).collect();
        let mut paths = HashSet::new();
        for file in &self.files {
            if !check_relative_path(&file.path) || !paths.insert(file.path.as_str()) {
                return Err(corrupt(key, format!("file path \"{}\" is invalid or repeated", file.path.escape_debug())));
            }
            if let Some(rest) = file.path.strip_prefix("pg_tblspc/") {
                // pg_tblspc/<oid> itself is a link (or an in-place directory), never a file.
                if !rest.contains('/') && file.kind != FileKind::Dir {
                    return Err(corrupt(key, format!("{} is a file where a tablespace link belongs", file.path)));
                }
                // A tablespace is a recorded symlink target, or an in-place directory listed itself.
                let oid = rest.split('/').next().unwrap_or("");
                let recorded = oid.parse::<u32>().is_ok_and(|oid| oids.contains(&oid));
                let in_place = dirs.contains(format!("pg_tblspc/{oid}").as_str());
                if !recorded && !in_place {
                    return Err(corrupt(key, format!("{} is in no recorded tablespace", file.path)));
                }
            }
            let mut total = 0u64;
            for chunk in &file.chunks {
                let pack = self.packs.get(chunk.pack as usize).ok_or_else(|| {
                    corrupt(key, format!("{} refers to pack #{} of {}", file.path, chunk.pack, self.packs.len()))
                })?;
                if !is_sha256_hex(&chunk.sha256)
                    || chunk.len as usize > super::CHUNK_SIZE
                    || chunk.offset + chunk.len as u64 > pack.len
                {
                    return Err(corrupt(key, format!("{} has a chunk outside its pack", file.path)));
                }
                if let Some([from, to]) = chunk.range {
                    if self.format_version == MANIFEST_FORMAT_WHOLE_CHUNKS || from >= to || to > chunk.len {
                        return Err(corrupt(key, format!("{} has a chunk range outside its chunk", file.path)));
                    }
                }
                total += chunk.file_len() as u64;
            }
            if file.kind == FileKind::File && total != file.size {
                return Err(corrupt(
                    key,
                    format!("{}: its chunks add up to {total} bytes, not {}", file.path, file.size),
                ));
            }
        }
        if !self.files.iter().any(|f| f.path == "global/pg_control") {
            return Err(corrupt(key, "it holds no global/pg_control".into()));
        }
        if let Some(counts) = &self.row_counts {
            if counts.lsn < self.stop_lsn || counts.tables.iter().any(|t| t.rows < 0 || t.table.contains('\0')) {
                return Err(corrupt(key, "its row counts are impossible (taken before the backup ended)".into()));
            }
        }
        Ok(())
    }

    pub fn file(&self, path: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.path == path)
    }
}

/// Reads, verifies and validates one backup's manifest.
pub async fn read(repository: &Repository, id: &BackupId) -> Result<BackupManifest> {
    let path = layout::backup_manifest(id);
    let key = repository.key(&path);
    let bytes = repository.get_bytes(&path).await?;
    let manifest: BackupManifest =
        serde_json::from_slice(&bytes).map_err(|e| corrupt(&key, format!("it is not a backup manifest: {e}")))?;
    if &manifest.id != id {
        return Err(corrupt(&key, format!("it describes backup {} (moved or copied?)", manifest.id)));
    }
    if manifest.cluster != repository.cluster() {
        return Err(corrupt(&key, format!("it belongs to cluster namespace {}", manifest.cluster)));
    }
    manifest.validate(&key)?;
    Ok(manifest)
}

/// Publishes a manifest: the commit point of a backup. Written once; never replaced.
pub async fn write(repository: &Repository, manifest: &BackupManifest) -> Result<()> {
    let path = layout::backup_manifest(&manifest.id);
    manifest.validate(&repository.key(&path))?;
    let json = serde_json::to_vec(manifest).map_err(|e| Error::InvalidInput(e.to_string()))?;
    repository.put_bytes(&path, json.into(), WriteMode::CreateNew).await?;
    Ok(())
}

/// The ids of every committed backup (those whose manifest exists), oldest first.
pub async fn list_ids(repository: &Repository) -> Result<Vec<BackupId>> {
    let mut ids = Vec::new();
    let mut objects = repository.list(&layout::backups());
    while let Some(object) = futures::TryStreamExt::try_next(&mut objects).await? {
        if object.path.is_some_and(|p| p.kind() == layout::ObjectKind::BackupManifest) {
            let id = object.rel.split('/').nth(1).unwrap_or("");
            ids.push(BackupId::parse(id)?);
        }
    }
    ids.sort();
    Ok(ids)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn sample() -> BackupManifest {
        let sha = "ab".repeat(32);
        BackupManifest {
            format_version: MANIFEST_FORMAT_WHOLE_CHUNKS,
            id: BackupId::parse("20261122T031500Z-F").unwrap(),
            kind: BackupKind::Full,
            cluster: "c".into(),
            system_identifier: "1".into(),
            pg_version_num: 150000,
            wal_segment_size: 16 << 20,
            timeline: 1,
            start_lsn: Lsn(0x3000028),
            stop_lsn: Lsn(0x3000100),
            start_time: 1.0,
            stop_time: 2.0,
            previous: None,
            backup_label: "START WAL LOCATION: 0/3000028".into(),
            tablespace_map: String::new(),
            tablespaces: vec![],
            packs: vec![PackRef { id: sha.clone(), len: 8192, verified_at: 0, encrypted: None }],
            files: vec![FileEntry {
                path: "global/pg_control".into(),
                kind: FileKind::File,
                mode: 0o600,
                size: 8192,
                mtime_s: 0,
                mtime_ns: 0,
                inode: 1,
                read_at: 1.0,
                chunks: vec![ChunkRef { sha256: sha, pack: 0, offset: 0, len: 8192, range: None }],
            }],
            stats: BackupStats::default(),
            row_counts: Some(RowCounts {
                database: "postgres".into(),
                lsn: Lsn(0x4000028),
                tables: vec![TableRows { table: "public.t".into(), rows: 3 }],
            }),
            relations: vec![RelationFile {
                table: "public.t".into(),
                oid: 16390,
                tablespace: 1663,
                database: 5,
                relfilenode: 16390,
            }],
        }
    }

    #[test]
    fn a_manifest_cannot_steer_a_restore_outside_its_target() {
        sample().validate("m").unwrap();
        for bad in ["../etc/passwd", "/etc/passwd", "base/../../x", "base//1", "a\\..\\b", "pg_tblspc/999/x"] {
            let mut m = sample();
            m.files.push(FileEntry { path: bad.into(), kind: FileKind::Dir, chunks: vec![], ..m.files[0].clone() });
            assert!(m.validate("m").is_err(), "{bad}");
        }
        let mut m = sample();
        m.files[0].chunks[0].offset = 1;
        assert!(m.validate("m").unwrap_err().to_string().contains("outside its pack"));
        let mut m = sample();
        m.files[0].size = 1;
        assert!(m.validate("m").is_err());
        let mut m = sample();
        m.packs[0].id = "../../x".into();
        assert!(m.validate("m").is_err());
        let mut m = sample();
        m.tablespaces.push(Tablespace { oid: 5, location: "relative/dir".into() });
        assert!(m.validate("m").is_err());
        // Counts that claim a point before the backup ended cannot be compared with a recovery.
        let mut m = sample();
        m.row_counts.as_mut().unwrap().lsn = Lsn(0x3000000);
        assert!(m.validate("m").unwrap_err().to_string().contains("row counts"));
        let mut m = sample();
        m.row_counts.as_mut().unwrap().tables[0].rows = -1;
        assert!(m.validate("m").is_err());
    }

    #[test]
    fn parts_of_chunks_are_format_2_and_stay_inside_their_chunk() {
        // The sample's one 8 KiB chunk, as two parts of itself.
        let mut m = sample();
        let whole = m.files[0].chunks[0].clone();
        m.files[0].chunks = vec![
            ChunkRef { range: Some([0, 4096]), ..whole.clone() },
            ChunkRef { range: Some([4096, 8192]), ..whole.clone() },
        ];
        // Format 1 readers would take each part for the whole chunk: never written as format 1.
        assert!(m.validate("m").unwrap_err().to_string().contains("range outside its chunk"));
        m.format_version = MANIFEST_FORMAT_VERSION;
        m.validate("m").unwrap();
        for bad in [[0, 0], [4096, 4095], [0, 8193]] {
            let mut m = m.clone();
            m.files[0].chunks[1].range = Some(bad);
            assert!(m.validate("m").is_err(), "{bad:?}");
        }
        // The parts add up to the file's size, like whole chunks.
        let mut m = m.clone();
        m.files[0].chunks.pop();
        assert!(m.validate("m").unwrap_err().to_string().contains("add up to 4096"));
        let mut m = sample();
        m.format_version = 3;
        assert!(m.validate("m").unwrap_err().to_string().contains("manifest format 3"));
    }

    #[test]
    fn manifests_without_row_counts_still_read() {
        let mut json = serde_json::to_value(sample()).unwrap();
        json.as_object_mut().unwrap().remove("row_counts");
        let m: BackupManifest = serde_json::from_value(json).unwrap();
        assert!(m.row_counts.is_none());
        m.validate("m").unwrap();
    }
}
