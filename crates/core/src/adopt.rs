//! Adopting a repository written by backstop 0.2: its objects are unsigned (format 1), so after
//! the upgrade no read accepts them until the DBA vouches for them, explicitly and once.
//!
//! `adopt` reads every unsigned object of the namespace in full through its checksums (an
//! encrypted one without the identity through its stored-bytes checksum), checks what can be
//! checked beyond that (a snapshot manifest's HMAC under the cluster's 0.2 manifest key, a backup
//! or logical manifest that parses and validates), and writes one signed adoption record listing
//! each object's header and tail. A later read of an unsigned object authenticates it by finding
//! exactly that header and tail in a record: an unsigned object added or replaced after the
//! adoption is refused.
//!
//! Invariants:
//! - Nothing is rewritten or moved: objects are never overwritten (design rule 2); the record is
//!   the only object written.
//! - A damaged object, or a snapshot manifest whose HMAC does not verify, is not adopted; the
//!   report names it with the reason.

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::layout::{self, ObjectKind, ObjectPath};
use crate::repository::Repository;
use crate::snapshot::manifest::{Authenticity, ManifestKey, SnapshotManifest};
use crate::store::WriteMode;

pub use crate::adoption_record::{AdoptedObject, AdoptionRecord, RECORD_FORMAT_VERSION};

#[derive(Debug, Clone, Default, Serialize)]
pub struct AdoptionReport {
    /// Unsigned objects read, checked and recorded now.
    pub adopted: u64,
    /// Bytes those objects hold (plain).
    pub bytes: u64,
    /// Objects already signed, or recorded by an earlier adoption.
    pub already_authenticated: u64,
    /// Objects not adopted, with the reason (damaged, a forged snapshot manifest).
    pub refused: Vec<Refused>,
    /// The record written, if anything was adopted.
    pub record: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Refused {
    pub path: String,
    pub reason: String,
}

/// What else an object must pass before it is adopted, beyond its checksums.
fn check_contents(
    path: &ObjectPath,
    plain: Option<&[u8]>,
    key: &str,
    snapshot_key: Option<&ManifestKey>,
) -> Result<(), String> {
    let Some(plain) = plain else { return Ok(()) };
    match path.kind() {
        ObjectKind::SnapshotManifest => {
            let manifest = SnapshotManifest::from_json(key, plain).map_err(|e| e.to_string())?;
            match manifest.authenticity(snapshot_key) {
                Authenticity::Authentic => Ok(()),
                other => Err(format!("snapshot manifest {}", other.describe())),
            }
        }
        ObjectKind::BackupManifest => {
            let manifest: crate::backups::BackupManifest =
                serde_json::from_slice(plain).map_err(|e| format!("it is not a backup manifest: {e}"))?;
            manifest.validate(key).map_err(|e| e.to_string())
        }
        ObjectKind::LogicalManifest => serde_json::from_slice::<crate::logical::manifest::LogicalManifest>(plain)
            .map(|_| ())
            .map_err(|e| format!("it is not a logical backup manifest: {e}")),
        ObjectKind::ClusterFile => serde_json::from_slice::<crate::repository::ClusterFile>(plain)
            .map(|_| ())
            .map_err(|e| format!("it is not valid cluster metadata: {e}")),
        ObjectKind::Wal
        | ObjectKind::Pack
        | ObjectKind::SnapshotData
        | ObjectKind::LogicalDump
        | ObjectKind::LogicalSql
        | ObjectKind::Adoption
        | ObjectKind::DamageRecord
        | ObjectKind::Lease
        | ObjectKind::Probe => Ok(()),
    }
}

/// Adopts every unsigned object of the namespace (see the module documentation). `snapshot_key`
/// is the cluster's 0.2 manifest key, which snapshot manifests of 0.2 must verify under.
/// `progress` is called with (objects done, objects found).
pub async fn adopt(
    repository: &Repository,
    snapshot_key: Option<&ManifestKey>,
    progress: &(dyn Fn(u64, u64) + Send + Sync),
) -> Result<AdoptionReport> {
    let listed: Vec<crate::repository::Listed> = repository.list(&layout::namespace()).try_collect().await?;
    let candidates: Vec<ObjectPath> = listed
        .into_iter()
        .filter_map(|l| l.path)
        .filter(|p| !matches!(p.kind(), ObjectKind::Adoption | ObjectKind::Lease | ObjectKind::Probe))
        .collect();
    let total = candidates.len() as u64;
    // What earlier adoptions vouched for: an object there whose bytes changed since was replaced
    // behind the cluster's back, and is never adopted again.
    let earlier = repository.adopted_objects().await?;
    let mut report = AdoptionReport::default();
    let mut objects = Vec::new();
    let mut done = 0u64;
    let earlier = &earlier;
    let mut checks = futures::stream::iter(candidates.into_iter().map(|path| async move {
        // Already authenticated (signed by a trusted key, or adopted before): nothing to do.
        match repository.read_trailer(&path).await {
            Ok(_) => return (path, Ok(None)),
            Err(Error::Unauthenticated { .. }) if earlier.contains_key(path.as_str()) => {
                let replaced = Error::Unauthenticated {
                    key: repository.key(&path),
                    reason: "it was replaced after an earlier adoption vouched for it".into(),
                };
                return (path, Err(replaced));
            }
            Err(Error::Unauthenticated { .. }) => {}
            Err(e) => return (path, Err(e)),
        }
        let read = repository.read_unsigned_for_adoption(&path).await;
        (path, read)
    }))
    .buffer_unordered(4);
    while let Some((path, read)) = checks.next().await {
        done += 1;
        progress(done, total);
        let key = repository.key(&path);
        match read {
            Ok(None) => report.already_authenticated += 1,
            Ok(Some((header, tail, trailer, plain))) => {
                match check_contents(&path, plain.as_deref(), &key, snapshot_key) {
                    Ok(()) => {
                        report.adopted += 1;
                        report.bytes += trailer.plain_len;
                        objects.push(AdoptedObject { path: path.as_str().to_string(), header, tail });
                    }
                    Err(reason) => report.refused.push(Refused { path: path.as_str().into(), reason }),
                }
            }
            Err(e) => report.refused.push(Refused { path: path.as_str().into(), reason: e.to_string() }),
        }
    }
    drop(checks);
    report.refused.sort_by(|a, b| a.path.cmp(&b.path));
    if objects.is_empty() {
        return Ok(report);
    }
    objects.sort_by(|a, b| a.path.cmp(&b.path));
    let now = std::time::SystemTime::now();
    let id = format!("{}-{:08x}", crate::time::format_compact_utc(now), rand::random::<u32>());
    let record = AdoptionRecord {
        format_version: RECORD_FORMAT_VERSION,
        id: id.clone(),
        cluster: repository.cluster().to_string(),
        adopted_at_unix: crate::time::unix_seconds(now),
        adopted_by: format!("backstop {}", env!("CARGO_PKG_VERSION")),
        objects,
    };
    let json = serde_json::to_vec(&record).map_err(|e| Error::InvalidInput(e.to_string()))?;
    repository.put_bytes(&layout::adoption(&id)?, json.into(), WriteMode::CreateNew).await?;
    repository.forget_adoptions();
    report.record = Some(id);
    Ok(report)
}

/// Whether the namespace still holds what an adoption must vouch for: its cluster.json unsigned
/// and not adopted (a namespace created by backstop 0.2). Cheap: one object's tail.
pub async fn needs_adoption(repository: &Repository) -> Result<bool> {
    match repository.read_trailer(&layout::cluster_file()).await {
        Ok(_) | Err(Error::NotFound { .. }) => Ok(false),
        Err(Error::Unauthenticated { .. }) => Ok(true),
        Err(e) => Err(e),
    }
}
