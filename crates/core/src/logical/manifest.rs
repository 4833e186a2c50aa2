//! A logical backup's manifest: what was dumped, how to check it, and what a restore must hold.
//! Written last, after the stored dump passed `pg_restore --list`; read back by restores and
//! drills that may run with the server down, so it is validated here before anything uses it.
//! Nothing in it is executed: table and sequence names are compared with what a restore holds,
//! parsed and re-quoted by the caller, never pasted into SQL.

use serde::{Deserialize, Serialize};

use super::{LogicalId, MANIFEST_FILE};
use crate::backups::manifest::{is_sha256_hex, TableRows};
use crate::error::{Error, Result};
use crate::layout::{self, LogicalFile, ObjectKind, ObjectPath};
use crate::repository::Repository;
use crate::store::WriteMode;

pub const LOGICAL_FORMAT_VERSION: u32 = 1;

/// One stored object: its plain size and SHA-256 (checked again on every read, on top of the
/// codec's own checksums).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredObject {
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SequenceValue {
    /// Schema-qualified and quoted where needed, as the server printed it.
    pub sequence: String,
    pub last_value: i64,
    pub is_called: bool,
}

/// The check every logical backup passed before its manifest was written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    /// Entries `pg_restore --list` printed for the dump read back from the store.
    pub list_entries: u64,
    /// Unix seconds.
    pub verified_at: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogicalManifest {
    pub format_version: u32,
    pub id: LogicalId,
    pub cluster: String,
    pub database: String,
    /// The server's major version number (150000 style) and the `pg_dump --version` line.
    pub pg_version_num: u32,
    pub pg_dump_version: String,
    /// Unix seconds.
    pub start_time: f64,
    pub stop_time: f64,
    pub dump: StoredObject,
    pub schema: StoredObject,
    pub globals: StoredObject,
    /// Every table's rows in the dump's own snapshot.
    pub tables: Vec<TableRows>,
    pub sequences: Vec<SequenceValue>,
    pub verification: Verification,
}

fn corrupt(key: &str, reason: String) -> Error {
    Error::Corrupt { key: key.to_string(), reason }
}

impl LogicalManifest {
    pub fn manifest_path(&self) -> ObjectPath {
        layout::logical(&self.database, &self.id, LogicalFile::Manifest)
    }

    /// Checks everything a restore or drill relies on; `key` names the manifest in messages.
    pub fn validate(&self, key: &str) -> Result<()> {
        if self.format_version != LOGICAL_FORMAT_VERSION {
            return Err(corrupt(
                key,
                format!(
                    "manifest format {} is not one this backstop reads ({LOGICAL_FORMAT_VERSION})",
                    self.format_version
                ),
            ));
        }
        if self.database.is_empty() || self.database.contains('\0') {
            return Err(corrupt(key, "it names no database".into()));
        }
        if self.stop_time.is_nan() || self.start_time.is_nan() || self.stop_time < self.start_time {
            return Err(corrupt(key, "it ends before it starts".into()));
        }
        for (what, object) in [("dump", &self.dump), ("schema", &self.schema), ("globals", &self.globals)] {
            if !is_sha256_hex(&object.sha256) {
                return Err(corrupt(key, format!("its {what} checksum is not a SHA-256")));
            }
        }
        if self.dump.bytes == 0 || self.verification.list_entries == 0 {
            return Err(corrupt(key, "its dump is empty or was never verified with pg_restore --list".into()));
        }
        if self.tables.iter().any(|t| t.rows < 0 || t.table.is_empty() || t.table.contains('\0'))
            || self.sequences.iter().any(|s| s.sequence.is_empty() || s.sequence.contains('\0'))
        {
            return Err(corrupt(key, "its table or sequence records are impossible".into()));
        }
        Ok(())
    }
}

/// Reads, verifies and validates one logical backup's manifest.
pub async fn read(repository: &Repository, database: &str, id: &LogicalId) -> Result<LogicalManifest> {
    let path = layout::logical(database, id, LogicalFile::Manifest);
    let key = repository.key(&path);
    let bytes = repository.get_bytes(&path).await?;
    let manifest: LogicalManifest = serde_json::from_slice(&bytes)
        .map_err(|e| corrupt(&key, format!("it is not a logical backup manifest: {e}")))?;
    if &manifest.id != id || manifest.database != database {
        return Err(corrupt(
            &key,
            format!("it describes {} of database {} (moved or copied?)", manifest.id, manifest.database),
        ));
    }
    if manifest.cluster != repository.cluster() {
        return Err(corrupt(&key, format!("it belongs to cluster namespace {}", manifest.cluster)));
    }
    manifest.validate(&key)?;
    Ok(manifest)
}

/// Publishes a manifest: the commit point of a logical backup. Written once; never replaced.
pub async fn write(repository: &Repository, manifest: &LogicalManifest) -> Result<()> {
    let path = manifest.manifest_path();
    manifest.validate(&repository.key(&path))?;
    let json = serde_json::to_vec(manifest).map_err(|e| Error::InvalidInput(e.to_string()))?;
    repository.put_bytes(&path, json.into(), WriteMode::CreateNew).await?;
    Ok(())
}

/// Every committed logical backup (database, id), by database then oldest first; `database`
/// narrows it to one. A listing streams: nothing but the manifests' names is held.
pub async fn list_ids(repository: &Repository, database: Option<&str>) -> Result<Vec<(String, LogicalId)>> {
    let prefix = match database {
        Some(name) => layout::logical_database(name),
        None => layout::logical_backups(),
    };
    let mut out = Vec::new();
    let mut objects = repository.list(&prefix);
    while let Some(object) = futures::TryStreamExt::try_next(&mut objects).await? {
        let Some(path) = object.path.filter(|p: &ObjectPath| p.kind() == ObjectKind::LogicalManifest) else { continue };
        let mut parts = path.as_str().split('/').skip(1);
        let (Some(dir), Some(id), Some(MANIFEST_FILE), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if let (Some(name), Ok(id)) = (super::database_from_dir(dir), LogicalId::parse(id)) {
            out.push((name, id));
        }
    }
    out.sort();
    Ok(out)
}

/// The logical backup a restore or drill uses: `id`, or the newest of `database` when None. The
/// newest is the newest committed one; if its manifest is damaged that is the answer (an error),
/// never a silent fall back to an older dump.
pub async fn pick(repository: &Repository, database: &str, id: Option<&LogicalId>) -> Result<LogicalManifest> {
    let id = match id {
        Some(id) => id.clone(),
        None => match list_ids(repository, Some(database)).await?.pop() {
            Some((_, id)) => id,
            None => {
                return Err(Error::Job {
                    message: format!("there is no logical backup of database {database} in {}", repository.describe()),
                    hint: "Take one first: SELECT * FROM backstop.logical_backup('<database>'); backstop logical list shows what there is."
                        .into(),
                })
            }
        },
    };
    read(repository, database, &id).await
}

/// One logical backup as listed: its manifest, or why it could not be read (then it is not
/// usable, and says so).
#[derive(Debug, Clone)]
pub struct Listed {
    pub database: String,
    pub id: LogicalId,
    pub manifest: std::result::Result<LogicalManifest, String>,
}

/// Every committed logical backup (of `database`, or of all), each manifest read and validated:
/// the one listing SQL's `backstop.logical_backups()` and the CLI's `backstop logical list` show.
pub async fn list(repository: &Repository, database: Option<&str>) -> Result<Vec<Listed>> {
    let mut out = Vec::new();
    for (database, id) in list_ids(repository, database).await? {
        let manifest = match read(repository, &database, &id).await {
            Ok(manifest) => Ok(manifest),
            Err(e @ (Error::Corrupt { .. } | Error::Unauthenticated { .. } | Error::NotFound { .. })) => {
                Err(e.to_string())
            }
            Err(e) => return Err(e),
        };
        out.push(Listed { database, id, manifest });
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn sample() -> LogicalManifest {
        let sha = "cd".repeat(32);
        let object = |bytes| StoredObject { bytes, sha256: sha.clone() };
        LogicalManifest {
            format_version: LOGICAL_FORMAT_VERSION,
            id: LogicalId::parse("20261122T031500Z-L").unwrap(),
            cluster: "c".into(),
            database: "app".into(),
            pg_version_num: 150000,
            pg_dump_version: "pg_dump (PostgreSQL) 15.20".into(),
            start_time: 1.0,
            stop_time: 2.0,
            dump: object(4096),
            schema: object(100),
            globals: object(50),
            tables: vec![TableRows { table: "public.orders".into(), rows: 42 }],
            sequences: vec![SequenceValue { sequence: "public.orders_id_seq".into(), last_value: 42, is_called: true }],
            verification: Verification { list_entries: 12, verified_at: 2.0 },
        }
    }

    #[test]
    fn a_sound_manifest_validates_and_round_trips() {
        let m = sample();
        m.validate("m").unwrap();
        let back: LogicalManifest = serde_json::from_slice(&serde_json::to_vec(&m).unwrap()).unwrap();
        assert_eq!(back, m);
        assert_eq!(m.manifest_path().as_str(), "logical/app/20261122T031500Z-L/manifest.json");
    }

    #[test]
    fn impossible_or_unverified_manifests_are_refused() {
        type Damage = fn(&mut LogicalManifest);
        let cases: Vec<(&str, Damage)> = vec![
            ("format", |m| m.format_version = 99),
            ("database", |m| m.database.clear()),
            ("time", |m| m.stop_time = 0.5),
            ("checksum", |m| m.dump.sha256 = "../../etc".into()),
            ("unverified", |m| m.verification.list_entries = 0),
            ("empty dump", |m| m.dump.bytes = 0),
            ("rows", |m| m.tables[0].rows = -1),
            ("sequence", |m| m.sequences[0].sequence.clear()),
        ];
        for (what, damage) in cases {
            let mut m = sample();
            damage(&mut m);
            assert!(m.validate("m").is_err(), "{what}");
        }
        // Unknown fields are refused, not ignored: a newer format is not half-read.
        let mut json = serde_json::to_value(sample()).unwrap();
        json["restore_sql"] = "DROP TABLE x".into();
        assert!(serde_json::from_value::<LogicalManifest>(json).is_err());
    }
}
