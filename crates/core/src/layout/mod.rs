//! The repository layout: the one owner of every object's name inside a cluster's namespace.
//!
//! ```text
//! <cluster>/cluster.json                                   who owns the namespace
//! <cluster>/wal/<TTTTTTTTLLLLLLLL>/<segment>[.partial]     WAL segments (and .backup files)
//! <cluster>/wal/<TTTTTTTT>.history                         timeline history files
//! <cluster>/backups/<backup-id>/manifest.json              base backups: the commit point
//! <cluster>/packs/<hh>/<pack-id>                           chunks of base backups
//! <cluster>/snapshots/<schema>.<table>/<snapshot-id>/{manifest.json,data.parquet}
//! <cluster>/logical/<database>/<logical-id>/{dump,schema.sql,globals.sql,manifest.json}
//! <cluster>/adopted/<adoption-id>.json                     objects of 0.2.0 vouched for by adopt_repository
//! <cluster>/damaged/<pack-id>.json                         packs verify found damaged: never reused
//! <cluster>/lease.json                                     who runs base backups and expire now
//! <cluster>/.probe/<random>                                doctor's round-trip check
//! ```
//!
//! Invariants:
//! - An [`ObjectPath`] is built only by the functions of this module (its fields are private), from
//!   checked names ([`names`]), so every key is valid, relative to the namespace, and classified.
//! - Its [`ObjectKind`] decides how the object is written (encrypted or not, compressed or not) and
//!   the most plain bytes a reader accepts from it, so no caller can pick either wrongly.

pub mod names;

pub use names::{
    database_dir, database_from_dir, parse_table_dir_name, segment_name, table_dir_name, BackupId, BackupKind,
    LogicalId, SnapshotId, WalFileKind, WalFileName, DEFAULT_SEGMENT_SIZE,
};

use crate::error::{Error, Result};

pub const CLUSTER_FILE: &str = "cluster.json";
pub const WAL_DIR: &str = "wal";
pub const BACKUPS_DIR: &str = "backups";
pub const PACKS_DIR: &str = "packs";
pub const SNAPSHOTS_DIR: &str = "snapshots";
pub const LOGICAL_DIR: &str = "logical";
pub const ADOPTED_DIR: &str = "adopted";
pub const DAMAGED_DIR: &str = "damaged";
pub const LEASE_FILE: &str = "lease.json";
const PROBE_DIR: &str = ".probe";
pub const MANIFEST_FILE: &str = "manifest.json";
pub const SNAPSHOT_DATA_FILE: &str = "data.parquet";
pub const DUMP_FILE: &str = "dump";
pub const SCHEMA_FILE: &str = "schema.sql";
pub const GLOBALS_FILE: &str = "globals.sql";

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// The largest pack a writer produces is well under this (packs close at 16 MiB plus one chunk).
pub const MAX_PACK_LEN: u64 = 64 * MIB;
/// Objects held whole in memory are never larger than this, whatever their kind allows.
pub const MAX_IN_MEMORY: u64 = GIB;

/// How an object is encoded: the server holds only public keys, so anything it must read back
/// itself (cluster.json, manifests, leases) is never encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectClass {
    Data,
    /// Data its producer already compressed (Parquet with zstd pages): encrypted like data, never
    /// compressed a second time.
    CompressedData,
    Metadata,
}

/// What an object is. Match on it exhaustively: a new kind must say how it is stored and capped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    ClusterFile,
    Wal,
    BackupManifest,
    Pack,
    SnapshotManifest,
    SnapshotData,
    LogicalManifest,
    LogicalDump,
    LogicalSql,
    Adoption,
    /// A pack `verify` found damaged. Only its name is ever used (a listing): it can only stop a
    /// backup from reusing a pack, so one forged or deleted costs a re-read, never data.
    DamageRecord,
    Lease,
    Probe,
}

impl ObjectKind {
    pub fn class(self) -> ObjectClass {
        match self {
            ObjectKind::Wal | ObjectKind::Pack | ObjectKind::LogicalDump | ObjectKind::LogicalSql => ObjectClass::Data,
            ObjectKind::SnapshotData => ObjectClass::CompressedData,
            ObjectKind::ClusterFile
            | ObjectKind::BackupManifest
            | ObjectKind::SnapshotManifest
            | ObjectKind::LogicalManifest
            | ObjectKind::Adoption
            | ObjectKind::DamageRecord
            | ObjectKind::Lease
            | ObjectKind::Probe => ObjectClass::Metadata,
        }
    }

    /// The most plain bytes a reader accepts from an object of this kind (design rule 10): checked
    /// against the authenticated trailer before a byte is decoded, and enforced while decoding.
    pub fn max_plain_len(self) -> u64 {
        match self {
            ObjectKind::ClusterFile | ObjectKind::Lease | ObjectKind::Probe | ObjectKind::DamageRecord => 64 * KIB,
            // A segment is at most 1 GiB (wal_segment_size); history and .backup files are text.
            ObjectKind::Wal => GIB,
            ObjectKind::BackupManifest | ObjectKind::Adoption => GIB,
            ObjectKind::Pack => MAX_PACK_LEN,
            ObjectKind::SnapshotManifest | ObjectKind::LogicalManifest => 64 * MIB,
            ObjectKind::LogicalSql => GIB,
            // Streamed, never held whole.
            ObjectKind::SnapshotData | ObjectKind::LogicalDump => u64::MAX,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::ClusterFile => "cluster file",
            ObjectKind::Wal => "WAL file",
            ObjectKind::BackupManifest => "backup manifest",
            ObjectKind::Pack => "pack",
            ObjectKind::SnapshotManifest => "snapshot manifest",
            ObjectKind::SnapshotData => "snapshot data",
            ObjectKind::LogicalManifest => "logical backup manifest",
            ObjectKind::LogicalDump => "logical dump",
            ObjectKind::LogicalSql => "logical backup SQL",
            ObjectKind::Adoption => "adoption record",
            ObjectKind::DamageRecord => "damage record",
            ObjectKind::Lease => "lease",
            ObjectKind::Probe => "probe",
        }
    }
}

/// A path inside one cluster's namespace, of a known kind. Built only here.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectPath {
    rel: String,
    kind: ObjectKind,
}

impl ObjectPath {
    fn new(kind: ObjectKind, rel: String) -> Self {
        debug_assert!(crate::store::validate_key(&rel).is_ok(), "{rel}");
        ObjectPath { rel, kind }
    }

    pub fn as_str(&self) -> &str {
        &self.rel
    }

    pub fn kind(&self) -> ObjectKind {
        self.kind
    }

    /// Classifies a path found by a listing; None for anything backstop does not write there
    /// (temporary files, objects of other tools, garbage).
    pub fn parse(rel: &str) -> Option<ObjectPath> {
        crate::store::validate_key(rel).ok()?;
        let parts: Vec<&str> = rel.split('/').collect();
        let kind = match parts.as_slice() {
            [CLUSTER_FILE] => ObjectKind::ClusterFile,
            [LEASE_FILE] => ObjectKind::Lease,
            [PROBE_DIR, _] => ObjectKind::Probe,
            [WAL_DIR, name] => {
                let name = WalFileName::parse(name).ok()?;
                (name.kind == WalFileKind::History).then_some(ObjectKind::Wal)?
            }
            [WAL_DIR, dir, name] => {
                let name = WalFileName::parse(name).ok()?;
                (name.kind != WalFileKind::History && name.name[..16] == **dir).then_some(ObjectKind::Wal)?
            }
            [BACKUPS_DIR, id, MANIFEST_FILE] => {
                BackupId::parse(id).ok()?;
                ObjectKind::BackupManifest
            }
            [PACKS_DIR, hh, id] => (check_pack_id(id).is_ok() && id[..2] == **hh).then_some(ObjectKind::Pack)?,
            [SNAPSHOTS_DIR, table, id, file] => {
                parse_table_dir_name(table)?;
                SnapshotId::parse(id).ok()?;
                match *file {
                    MANIFEST_FILE => ObjectKind::SnapshotManifest,
                    SNAPSHOT_DATA_FILE => ObjectKind::SnapshotData,
                    _ => return None,
                }
            }
            [LOGICAL_DIR, database, id, file] => {
                database_from_dir(database)?;
                LogicalId::parse(id).ok()?;
                match *file {
                    MANIFEST_FILE => ObjectKind::LogicalManifest,
                    DUMP_FILE => ObjectKind::LogicalDump,
                    SCHEMA_FILE | GLOBALS_FILE => ObjectKind::LogicalSql,
                    _ => return None,
                }
            }
            [ADOPTED_DIR, name] => {
                let id = name.strip_suffix(".json")?;
                check_adoption_id(id).ok()?;
                ObjectKind::Adoption
            }
            [DAMAGED_DIR, name] => {
                check_pack_id(name.strip_suffix(".json")?).ok()?;
                ObjectKind::DamageRecord
            }
            _ => return None,
        };
        Some(ObjectPath::new(kind, rel.to_string()))
    }
}

impl std::fmt::Display for ObjectPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.rel)
    }
}

/// A directory of the namespace to list, ending in '/'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefix(String);

impl Prefix {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The whole namespace (adoption lists it all).
pub fn namespace() -> Prefix {
    Prefix(String::new())
}

pub fn cluster_file() -> ObjectPath {
    ObjectPath::new(ObjectKind::ClusterFile, CLUSTER_FILE.into())
}

pub fn lease() -> ObjectPath {
    ObjectPath::new(ObjectKind::Lease, LEASE_FILE.into())
}

pub fn probe(random: u64) -> ObjectPath {
    ObjectPath::new(ObjectKind::Probe, format!("{PROBE_DIR}/{random:016x}"))
}

pub fn probes() -> Prefix {
    Prefix(format!("{PROBE_DIR}/"))
}

/// `wal/<timeline><log>/<segment>`, or `wal/<timeline>.history`.
pub fn wal(name: &WalFileName) -> ObjectPath {
    let rel = match name.kind {
        WalFileKind::History => format!("{WAL_DIR}/{}", name.name),
        WalFileKind::Segment | WalFileKind::Partial | WalFileKind::Backup => {
            format!("{WAL_DIR}/{}/{}", &name.name[..16], name.name)
        }
    };
    ObjectPath::new(ObjectKind::Wal, rel)
}

pub fn wal_files() -> Prefix {
    Prefix(format!("{WAL_DIR}/"))
}

pub fn backups() -> Prefix {
    Prefix(format!("{BACKUPS_DIR}/"))
}

pub fn backup_manifest(id: &BackupId) -> ObjectPath {
    ObjectPath::new(ObjectKind::BackupManifest, format!("{BACKUPS_DIR}/{id}/{MANIFEST_FILE}"))
}

fn check_pack_id(id: &str) -> Result<()> {
    if id.len() == 64 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!("\"{}\" is not a pack id (64 lowercase hex digits)", id.escape_debug())))
    }
}

/// `packs/<hh>/<id>`; the id must be 64 lowercase hex digits.
pub fn pack(id: &str) -> Result<ObjectPath> {
    check_pack_id(id)?;
    Ok(ObjectPath::new(ObjectKind::Pack, format!("{PACKS_DIR}/{}/{id}", &id[..2])))
}

pub fn packs() -> Prefix {
    Prefix(format!("{PACKS_DIR}/"))
}

/// `damaged/<pack-id>.json`: the record that pack `id` was found damaged.
pub fn damage_record(pack_id: &str) -> Result<ObjectPath> {
    check_pack_id(pack_id)?;
    Ok(ObjectPath::new(ObjectKind::DamageRecord, format!("{DAMAGED_DIR}/{pack_id}.json")))
}

pub fn damage_records() -> Prefix {
    Prefix(format!("{DAMAGED_DIR}/"))
}

/// The pack a damage record names.
pub fn damaged_pack(path: &ObjectPath) -> Option<&str> {
    match path.kind() {
        ObjectKind::DamageRecord => path.as_str().strip_prefix(DAMAGED_DIR)?.strip_prefix('/')?.strip_suffix(".json"),
        _ => None,
    }
}

pub fn snapshots() -> Prefix {
    Prefix(format!("{SNAPSHOTS_DIR}/"))
}

pub fn snapshot_table(schema: &str, table: &str) -> Prefix {
    Prefix(format!("{SNAPSHOTS_DIR}/{}/", table_dir_name(schema, table)))
}

pub fn snapshot_manifest(schema: &str, table: &str, id: &SnapshotId) -> ObjectPath {
    ObjectPath::new(ObjectKind::SnapshotManifest, format!("{}{id}/{MANIFEST_FILE}", snapshot_table(schema, table).0))
}

pub fn snapshot_data(schema: &str, table: &str, id: &SnapshotId) -> ObjectPath {
    ObjectPath::new(ObjectKind::SnapshotData, format!("{}{id}/{SNAPSHOT_DATA_FILE}", snapshot_table(schema, table).0))
}

/// The objects of one logical backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogicalFile {
    Dump,
    Schema,
    Globals,
    Manifest,
}

impl LogicalFile {
    pub fn name(self) -> &'static str {
        match self {
            LogicalFile::Dump => DUMP_FILE,
            LogicalFile::Schema => SCHEMA_FILE,
            LogicalFile::Globals => GLOBALS_FILE,
            LogicalFile::Manifest => MANIFEST_FILE,
        }
    }

    fn kind(self) -> ObjectKind {
        match self {
            LogicalFile::Dump => ObjectKind::LogicalDump,
            LogicalFile::Schema | LogicalFile::Globals => ObjectKind::LogicalSql,
            LogicalFile::Manifest => ObjectKind::LogicalManifest,
        }
    }
}

pub fn logical_backups() -> Prefix {
    Prefix(format!("{LOGICAL_DIR}/"))
}

pub fn logical_database(database: &str) -> Prefix {
    Prefix(format!("{LOGICAL_DIR}/{}/", database_dir(database)))
}

/// `logical/<database>/<id>/<file>`.
pub fn logical(database: &str, id: &LogicalId, file: LogicalFile) -> ObjectPath {
    ObjectPath::new(file.kind(), format!("{}{id}/{}", logical_database(database).0, file.name()))
}

fn check_adoption_id(id: &str) -> Result<()> {
    // A compact UTC stamp and a random suffix: 20261122T031500Z-1a2b3c4d.
    let ok = id.len() == 25
        && id.as_bytes()[16] == b'-'
        && id[..16].bytes().all(|b| b.is_ascii_digit() || b == b'T' || b == b'Z')
        && id[17..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!("\"{}\" is not an adoption id", id.escape_debug())))
    }
}

/// `adopted/<id>.json`: one adoption's record of the unsigned objects it vouched for.
pub fn adoption(id: &str) -> Result<ObjectPath> {
    check_adoption_id(id)?;
    Ok(ObjectPath::new(ObjectKind::Adoption, format!("{ADOPTED_DIR}/{id}.json")))
}

pub fn adoptions() -> Prefix {
    Prefix(format!("{ADOPTED_DIR}/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_built_here_parses_back_to_its_kind() {
        let wal_name = WalFileName::parse("000000010000000A000000FE").unwrap();
        let snapshot = SnapshotId::parse("snap_0000abcd").unwrap();
        let logical_id = LogicalId::parse("20261122T031500Z-L").unwrap();
        let paths = [
            cluster_file(),
            lease(),
            probe(7),
            wal(&wal_name),
            wal(&WalFileName::parse("00000002.history").unwrap()),
            wal(&WalFileName::parse("000000010000000000000002.00000028.backup").unwrap()),
            backup_manifest(&BackupId::parse("20261122T031500Z-F").unwrap()),
            pack(&"ab".repeat(32)).unwrap(),
            snapshot_manifest("Sales", "Order Items", &snapshot),
            snapshot_data("public", "t", &snapshot),
            logical("my db", &logical_id, LogicalFile::Dump),
            logical("app", &logical_id, LogicalFile::Globals),
            logical("app", &logical_id, LogicalFile::Manifest),
            adoption("20261122T031500Z-1a2b3c4d").unwrap(),
        ];
        for path in paths {
            assert_eq!(ObjectPath::parse(path.as_str()), Some(path.clone()), "{path}");
        }
        assert_eq!(wal(&wal_name).as_str(), "wal/000000010000000A/000000010000000A000000FE");
        assert_eq!(
            logical("my db", &logical_id, LogicalFile::Dump).as_str(),
            "logical/my%20db/20261122T031500Z-L/dump"
        );
    }

    #[test]
    fn anything_backstop_does_not_write_is_not_classified() {
        for other in [
            "cluster.json.tmp",
            "wal/0000000100000000/000000010000000A000000FE",
            "wal/000000010000000000000001",
            "packs/cd/".to_string().as_str(),
            &format!("packs/cd/{}", "ab".repeat(32)),
            "backups/20261122T031500Z-F/manifest.json.sig",
            "snapshots/public.t/snap_0000abcd/other",
            "logical/app/20261122T031500Z-L/../dump",
            "adopted/x.json",
            "random/object",
        ] {
            assert_eq!(ObjectPath::parse(other), None, "{other}");
        }
        assert!(pack("../../x").is_err() && pack(&"AB".repeat(32)).is_err());
    }

    #[test]
    fn metadata_is_never_encrypted_and_every_kind_is_capped() {
        assert_eq!(ObjectKind::BackupManifest.class(), ObjectClass::Metadata);
        assert_eq!(ObjectKind::Pack.class(), ObjectClass::Data);
        assert_eq!(ObjectKind::SnapshotData.class(), ObjectClass::CompressedData);
        assert!(ObjectKind::SnapshotManifest.max_plain_len() <= 64 * MIB);
        assert!(ObjectKind::Pack.max_plain_len() >= (16 * MIB + 256 * KIB));
    }
}
