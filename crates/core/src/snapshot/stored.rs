//! Snapshots as stored in a repository: listing, and manifests read back with every check that
//! makes them trustworthy.

use bytes::Bytes;

use super::manifest::SnapshotManifest;
use super::{data_path, manifest_path, parse_table_dir_name, table_prefix, SnapshotId, SNAPSHOTS_DIR};
use crate::codec::Trailer;
use crate::error::{Error, Result};
use crate::repository::{ObjectClass, Repository};
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
            .store()
            .list_prefixes(&repository.key(&format!("{SNAPSHOTS_DIR}/")))
            .await?
            .iter()
            .filter_map(|dir| parse_table_dir_name(dir))
            .collect(),
    };
    let mut found = Vec::new();
    for (schema, name) in tables {
        for dir in repository.store().list_prefixes(&repository.key(&table_prefix(&schema, &name))).await? {
            if let Ok(id) = SnapshotId::parse(&dir) {
                found.push(StoredSnapshot { schema: schema.clone(), table: name.clone(), id });
            }
        }
    }
    Ok(found)
}

/// Reads and verifies a manifest, and checks that it describes the snapshot its path names.
pub async fn read_manifest(repository: &Repository, snapshot: &StoredSnapshot) -> Result<SnapshotManifest> {
    let path = manifest_path(&snapshot.schema, &snapshot.table, &snapshot.id);
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
    let path = manifest_path(&manifest.table.schema, &manifest.table.name, &id);
    repository.put_bytes(&path, Bytes::from(manifest.to_json()), ObjectClass::Metadata, WriteMode::CreateNew).await?;
    Ok(())
}

/// Reads a snapshot's data object through into `sink`, checking every checksum and the object
/// against its manifest; `progress` gets the bytes copied so far after every megabyte. Blocks on
/// `handle`: call it outside the runtime. On error, what reached `sink` must be discarded.
pub fn read_data(
    repository: &Repository,
    handle: &tokio::runtime::Handle,
    snapshot: &StoredSnapshot,
    manifest: &SnapshotManifest,
    sink: &mut impl std::io::Write,
    progress: impl FnMut(u64),
) -> Result<()> {
    let path = data_path(&snapshot.schema, &snapshot.table, &snapshot.id);
    let trailer = repository.open(handle, &path)?.copy_to_with_progress(sink, progress)?;
    check_data(&repository.key(&path), manifest, &trailer)
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
