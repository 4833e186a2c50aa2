//! Snapshots as stored in a repository: listing, and manifests read back with every check that
//! makes them trustworthy.

use bytes::Bytes;

use super::manifest::SnapshotManifest;
use super::{parse_table_dir_name, SnapshotId};
use crate::codec::Trailer;
use crate::error::{Error, Result};
use crate::layout;
use crate::repository::{CancellationToken, Repository};
use crate::store::WriteMode;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSnapshot {
    pub schema: String,
    pub table: String,
    pub id: SnapshotId,
}

/// Snapshot directories of one table, or of every table; directories that are not backstop's are
/// skipped. A directory without a manifest is listed too: the caller reports it as incomplete.
pub async fn list(repository: &Repository, table: Option<(&str, &str)>) -> Result<Vec<StoredSnapshot>> {
    let tables = match table {
        Some((schema, name)) => vec![(schema.to_string(), name.to_string())],
        None => repository
            .list_prefixes(&layout::snapshots())
            .await?
            .iter()
            .filter_map(|dir| parse_table_dir_name(dir))
            .collect(),
    };
    let mut found = Vec::new();
    for (schema, name) in tables {
        for dir in repository.list_prefixes(&layout::snapshot_table(&schema, &name)).await? {
            if let Ok(id) = SnapshotId::parse(&dir) {
                found.push(StoredSnapshot { schema: schema.clone(), table: name.clone(), id });
            }
        }
    }
    Ok(found)
}

/// Reads and verifies a manifest, and checks that it describes the snapshot its path names.
pub async fn read_manifest(repository: &Repository, snapshot: &StoredSnapshot) -> Result<SnapshotManifest> {
    let path = layout::snapshot_manifest(&snapshot.schema, &snapshot.table, &snapshot.id);
    let key = repository.key(&path);
    let bytes = repository.get_bytes(&path).await?;
    let manifest = SnapshotManifest::from_json(&key, &bytes)?;
    let described = (manifest.snapshot_id.as_str(), manifest.table.schema.as_str(), manifest.table.name.as_str());
    if described != (snapshot.id.as_str(), snapshot.schema.as_str(), snapshot.table.as_str()) {
        return Err(Error::Corrupt {
            key,
            reason: format!(
                "it describes snapshot {} of {}.{}, not the one its path names",
                described.0, described.1, described.2
            ),
        });
    }
    Ok(manifest)
}

/// Publishes a manifest: the snapshot's commit point. Never overwrites one.
pub async fn write_manifest(repository: &Repository, manifest: &SnapshotManifest) -> Result<()> {
    let id = SnapshotId::parse(&manifest.snapshot_id)?;
    let path = layout::snapshot_manifest(&manifest.table.schema, &manifest.table.name, &id);
    repository.put_bytes(&path, Bytes::from(manifest.to_json()), WriteMode::CreateNew).await?;
    Ok(())
}

/// Reads a snapshot's data object through into `sink`, checking every checksum and the object
/// against its manifest; `progress` gets the bytes copied so far after every megabyte. Blocks on
/// `handle`: call it outside the runtime. Gives up at once when `cancel` fires. On error, what
/// reached `sink` must be discarded.
pub fn read_data(
    repository: &Repository,
    handle: &tokio::runtime::Handle,
    snapshot: &StoredSnapshot,
    manifest: &SnapshotManifest,
    sink: &mut impl std::io::Write,
    progress: impl FnMut(u64),
    cancel: &CancellationToken,
) -> Result<()> {
    let path = layout::snapshot_data(&snapshot.schema, &snapshot.table, &snapshot.id);
    let trailer = repository.open_cancellable(handle, &path, cancel)?.copy_to_with_progress(sink, progress)?;
    check_data(&repository.key(&path), manifest, &trailer)
}

/// Which snapshots a listing covers: one table (schema unknown: any schema), or all.
#[derive(Debug, Clone, Default)]
pub struct TableFilter {
    pub schema: Option<String>,
    pub table: Option<String>,
}

impl TableFilter {
    fn matches(&self, snapshot: &StoredSnapshot) -> bool {
        self.table.as_ref().is_none_or(|t| t == &snapshot.table)
            && self.schema.as_ref().is_none_or(|s| s == &snapshot.schema)
    }
}

/// What checking one snapshot found. `backstop.snapshots()` and `backstop snapshots list` both
/// report it, in these words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotState {
    /// Its directory has no manifest: an interrupted snapshot.
    Incomplete,
    /// Its manifest could not be read or does not check out.
    BadManifest(String),
    /// The manifest is fine; the data object was not read.
    NotRead,
    /// The data object was read through and matches every checksum and the manifest.
    Verified,
    /// The data object is encrypted and no identity was given to read it.
    NotVerifiable(String),
    /// The data object is damaged, missing or does not belong to the manifest.
    Damaged(String),
    /// The store could not be read (network, permissions): nothing is known about the data.
    Unreachable(String),
}

impl SnapshotState {
    /// true: verified; false: unusable; None: not known either way.
    pub fn verified(&self) -> Option<bool> {
        match self {
            SnapshotState::Verified => Some(true),
            SnapshotState::Incomplete | SnapshotState::BadManifest(_) | SnapshotState::Damaged(_) => Some(false),
            SnapshotState::NotRead | SnapshotState::NotVerifiable(_) | SnapshotState::Unreachable(_) => None,
        }
    }

    pub fn problem(&self) -> Option<String> {
        match self {
            SnapshotState::Incomplete => {
                Some("incomplete: no manifest (interrupted snapshot; garbage for expire)".to_string())
            }
            SnapshotState::BadManifest(e) | SnapshotState::Damaged(e) => Some(e.clone()),
            SnapshotState::NotVerifiable(e) | SnapshotState::Unreachable(e) => Some(format!("not verified: {e}")),
            SnapshotState::NotRead | SnapshotState::Verified => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SnapshotStatus {
    pub snapshot: StoredSnapshot,
    pub manifest: Option<SnapshotManifest>,
    pub state: SnapshotState,
}

/// Lists snapshots newest first (unreadable manifests last) and checks each: its manifest, and
/// with `verify` its whole data object. The one listing and verification behind SQL and the CLI.
/// Blocks on `handle`; `progress` gets the data bytes read so far.
pub fn check_snapshots(
    repository: &Repository,
    handle: &tokio::runtime::Handle,
    filter: &TableFilter,
    verify: bool,
    cancel: &CancellationToken,
    progress: impl FnMut(u64),
) -> Result<Vec<SnapshotStatus>> {
    let mut statuses = list_statuses(repository, handle, filter, cancel)?;
    if verify {
        verify_statuses(repository, handle, &mut statuses, cancel, progress)?;
    }
    Ok(statuses)
}

/// [`check_snapshots`]' first half: the snapshots and their manifests (authenticated, not their
/// data), newest first; unreadable manifests sort last.
pub fn list_statuses(
    repository: &Repository,
    handle: &tokio::runtime::Handle,
    filter: &TableFilter,
    cancel: &CancellationToken,
) -> Result<Vec<SnapshotStatus>> {
    let table = match (&filter.schema, &filter.table) {
        (Some(schema), Some(table)) => Some((schema.as_str(), table.as_str())),
        _ => None,
    };
    let listed = handle.block_on(list(repository, table))?;
    let mut statuses = Vec::new();
    for snapshot in listed.into_iter().filter(|s| filter.matches(s)) {
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let (manifest, state) = match handle.block_on(read_manifest(repository, &snapshot)) {
            Ok(manifest) => (Some(manifest), SnapshotState::NotRead),
            Err(Error::NotFound { .. }) => (None, SnapshotState::Incomplete),
            Err(e) => (None, SnapshotState::BadManifest(e.to_string())),
        };
        statuses.push(SnapshotStatus { snapshot, manifest, state });
    }
    statuses.sort_by_key(|s| std::cmp::Reverse(s.manifest.as_ref().map(|m| m.taken_at_unix_ms).unwrap_or(i64::MIN)));
    Ok(statuses)
}

/// [`check_snapshots`]' second half: reads the data object of each listed snapshot with a
/// manifest through its checksums and records what it found; `progress` gets plain bytes read.
pub fn verify_statuses(
    repository: &Repository,
    handle: &tokio::runtime::Handle,
    statuses: &mut [SnapshotStatus],
    cancel: &CancellationToken,
    mut progress: impl FnMut(u64),
) -> Result<()> {
    {
        let mut done = 0u64;
        for status in statuses.iter_mut() {
            let Some(manifest) = &status.manifest else { continue };
            let result = read_data(
                repository,
                handle,
                &status.snapshot,
                manifest,
                &mut std::io::sink(),
                |copied| progress(done + copied),
                cancel,
            );
            if cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            done += manifest.data.bytes;
            status.state = match result {
                Ok(()) => SnapshotState::Verified,
                Err(e @ Error::Decryption { .. }) => SnapshotState::NotVerifiable(e.to_string()),
                Err(e @ (Error::Backend { .. } | Error::Io { .. })) => SnapshotState::Unreachable(e.to_string()),
                Err(e) => SnapshotState::Damaged(e.to_string()),
            };
        }
    }
    Ok(())
}

/// Checks the data object's verified trailer against what the manifest recorded.
pub fn check_data(key: &str, manifest: &SnapshotManifest, trailer: &Trailer) -> Result<()> {
    let found = trailer.plain_sha256_hex();
    if found != manifest.data.sha256 || trailer.plain_len != manifest.data.bytes {
        return Err(Error::Corrupt {
            key: key.to_string(),
            reason: format!(
                "it holds {} bytes with sha256 {found}, but its manifest records {} bytes with sha256 {} (object and manifest do not belong together)",
                trailer.plain_len, manifest.data.bytes, manifest.data.sha256
            ),
        });
    }
    Ok(())
}
