//! Logical backups: one `pg_dump -Fc` of one database, stored beside what a DBA needs to use it
//! without unpacking it, and a manifest written last that makes it a backup.
//!
//! ```text
//! <cluster>/logical/<database>/<logical-id>/dump           pg_dump -Fc output, streamed in
//! <cluster>/logical/<database>/<logical-id>/schema.sql     pg_dump --schema-only, plain SQL
//! <cluster>/logical/<database>/<logical-id>/globals.sql    pg_dumpall --globals-only --no-role-passwords
//! <cluster>/logical/<database>/<logical-id>/manifest.json  sizes, SHA-256s, row counts, verification
//! ```
//!
//! Invariants:
//! - A logical backup exists only when its manifest does, and its manifest is written only after
//!   the stored dump was read back through its checksums and `pg_restore --list` accepted it.
//! - `<database>` is the database's name with every byte outside `[A-Za-z0-9_-]` percent-encoded
//!   ([`database_dir`]), so any name PostgreSQL allows is one path component, and two names
//!   never share one.
//! - Ids sort by the dump's start time (`YYYYMMDDTHHMMSSZ-L`).

pub mod manifest;
pub mod restore;
pub mod take;
pub mod tools;

use std::time::SystemTime;

use tokio::io::AsyncRead;

use crate::error::{Error, Result};
use crate::repository::{ObjectClass, Repository, Verified};
use crate::store::WriteMode;

pub use manifest::StoredObject;

pub const LOGICAL_DIR: &str = "logical";
pub const DUMP_FILE: &str = "dump";
pub const SCHEMA_FILE: &str = "schema.sql";
pub const GLOBALS_FILE: &str = "globals.sql";
pub const MANIFEST_FILE: &str = "manifest.json";

/// `YYYYMMDDTHHMMSSZ-L`: sorts by start time; the letter tells it from a base backup's id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LogicalId(String);

impl LogicalId {
    pub fn new(start: SystemTime) -> Self {
        LogicalId(format!("{}-L", crate::backups::format_compact_utc(start)))
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

/// `logical/<database>/<id>/<file>`, relative to the cluster.
pub fn object_path(database: &str, id: &LogicalId, file: &str) -> String {
    format!("{LOGICAL_DIR}/{}/{id}/{file}", database_dir(database))
}

/// Streams one object of a logical backup into the repository as it is produced (no local copy
/// of it) and returns its plain size and SHA-256 for the manifest.
pub async fn store_object<R: AsyncRead + Unpin>(
    repository: &Repository,
    database: &str,
    id: &LogicalId,
    file: &str,
    reader: R,
    class: ObjectClass,
) -> Result<StoredObject> {
    let path = object_path(database, id, file);
    let trailer = repository.put_reader(&path, reader, class, WriteMode::CreateNew).await?.trailer();
    Ok(StoredObject { bytes: trailer.plain_len, sha256: trailer.plain_sha256_hex() })
}

/// Reads a stored object back in full through every checksum and compares it with what the
/// manifest (or the backup that just wrote it) recorded. An encrypted object this process cannot
/// decrypt is refused: a logical backup is checked by its contents, not only its stored bytes.
pub async fn verify_object(
    repository: &Repository,
    database: &str,
    id: &LogicalId,
    file: &str,
    expected: &StoredObject,
) -> Result<()> {
    let path = object_path(database, id, file);
    let key = repository.key(&path);
    let trailer = match repository.verify(&path).await? {
        Verified::Contents(trailer) => trailer,
        Verified::StoredBytes(_) => {
            return Err(Error::InvalidInput(format!(
                "{key} is encrypted and no identity to decrypt it is configured, so its contents cannot be checked"
            )))
        }
    };
    if trailer.plain_len != expected.bytes || trailer.plain_sha256_hex() != expected.sha256 {
        return Err(Error::Corrupt {
            key,
            reason: format!(
                "it holds {} bytes with SHA-256 {}, not the {} bytes with SHA-256 {} its manifest records",
                trailer.plain_len,
                trailer.plain_sha256_hex(),
                expected.bytes,
                expected.sha256
            ),
        });
    }
    Ok(())
}

/// The small plain-SQL objects of a logical backup, for a DBA to read without unpacking the dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlObject {
    /// `pg_dump --schema-only` in the dump's snapshot.
    Schema,
    /// `pg_dumpall --globals-only --no-role-passwords`.
    Globals,
}

/// Reads one of [`SqlObject`] whole, through the codec's checksums and against the size and
/// SHA-256 the manifest records; nothing is returned unless both match.
pub async fn read_sql_object(
    repository: &Repository,
    manifest: &manifest::LogicalManifest,
    which: SqlObject,
) -> Result<Vec<u8>> {
    let (file, expected) = match which {
        SqlObject::Schema => (SCHEMA_FILE, &manifest.schema),
        SqlObject::Globals => (GLOBALS_FILE, &manifest.globals),
    };
    let path = object_path(&manifest.database, &manifest.id, file);
    let bytes = repository.get_bytes(&path).await?;
    let sha256 = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&bytes))
    };
    if bytes.len() as u64 != expected.bytes || sha256 != expected.sha256 {
        return Err(Error::Corrupt {
            key: repository.key(&path),
            reason: format!(
                "it holds {} bytes with SHA-256 {sha256}, not the {} bytes with SHA-256 {} its manifest records",
                bytes.len(),
                expected.bytes,
                expected.sha256
            ),
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn object_paths_follow_the_layout() {
        let id = LogicalId::parse("20261122T031500Z-L").unwrap();
        assert_eq!(object_path("my db", &id, DUMP_FILE), "logical/my%20db/20261122T031500Z-L/dump");
    }
}
