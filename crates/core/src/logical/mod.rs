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

pub mod conninfo;
pub mod manifest;
pub mod restore;
pub mod take;
pub mod tools;

use tokio::io::AsyncRead;

use crate::error::{Error, Result};
use crate::layout::{self, LogicalFile};
use crate::repository::{Repository, Verified};
use crate::store::WriteMode;

pub use manifest::StoredObject;

pub use crate::layout::{DUMP_FILE, GLOBALS_FILE, LOGICAL_DIR, MANIFEST_FILE, SCHEMA_FILE};

pub use crate::layout::{database_dir, database_from_dir, LogicalId};

/// Streams one object of a logical backup into the repository as it is produced (no local copy
/// of it) and returns its plain size and SHA-256 for the manifest.
pub async fn store_object<R: AsyncRead + Unpin>(
    repository: &Repository,
    database: &str,
    id: &LogicalId,
    file: LogicalFile,
    reader: R,
) -> Result<StoredObject> {
    let path = layout::logical(database, id, file);
    let trailer = repository.put_reader(&path, reader, WriteMode::CreateNew).await?.trailer();
    Ok(StoredObject { bytes: trailer.plain_len, sha256: trailer.plain_sha256_hex() })
}

/// Reads a stored object back in full through every checksum and compares it with what the
/// manifest (or the backup that just wrote it) recorded. An encrypted object this process cannot
/// decrypt is refused: a logical backup is checked by its contents, not only its stored bytes.
pub async fn verify_object(
    repository: &Repository,
    database: &str,
    id: &LogicalId,
    file: LogicalFile,
    expected: &StoredObject,
) -> Result<()> {
    let path = layout::logical(database, id, file);
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
        SqlObject::Schema => (LogicalFile::Schema, &manifest.schema),
        SqlObject::Globals => (LogicalFile::Globals, &manifest.globals),
    };
    let path = layout::logical(&manifest.database, &manifest.id, file);
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
    fn object_paths_follow_the_layout() {
        let id = LogicalId::parse("20261122T031500Z-L").unwrap();
        assert_eq!(
            layout::logical("my db", &id, LogicalFile::Dump).as_str(),
            "logical/my%20db/20261122T031500Z-L/dump"
        );
    }
}
