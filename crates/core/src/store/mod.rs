//! Object stores: one trait, one implementation per backend.
//!
//! Stores move opaque bytes. They guarantee that a key is either absent or holds a complete object
//! (design rule 4) and, with [`WriteMode::CreateNew`], that an existing object is never replaced.
//! What an object *means* (codec, checksums, same-or-different bytes) is the repository's business.

use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::AsyncRead;

use crate::error::{Error, Result};
use crate::location::Location;

pub mod faulty;
pub mod file;
pub mod memory;
pub mod s3;

pub use s3::S3Options;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Replace whatever is there, atomically.
    Overwrite,
    /// Publish only if the key is absent; otherwise report [`WriteOutcome::AlreadyExists`].
    CreateNew,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    Written,
    AlreadyExists,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Key relative to the store root.
    pub key: String,
    pub size: u64,
    pub last_modified: Option<SystemTime>,
}

pub type ObjectReader = Pin<Box<dyn AsyncRead + Send>>;

/// A listing, in key order.
pub type ObjectStream = futures::stream::BoxStream<'static, Result<ObjectInfo>>;

#[async_trait]
pub trait ObjectStore: Send + Sync + std::fmt::Debug {
    /// Where this store is, for messages (never contains credentials).
    fn describe(&self) -> String;

    /// Writes a whole object in one request.
    async fn put(&self, key: &str, body: Bytes, mode: WriteMode) -> Result<WriteOutcome>;

    /// Starts a streamed upload; nothing is visible under `key` until [`Upload::finish`] succeeds.
    async fn start_upload(&self, key: &str, mode: WriteMode) -> Result<Box<dyn Upload>>;

    async fn get(&self, key: &str) -> Result<ObjectReader>;

    /// Reads `len` bytes at `offset`.
    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes>;

    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>>;

    /// Every object whose key starts with `prefix`, in key order, as a stream: a listing of
    /// millions of objects is consumed page by page, never held whole.
    fn list(&self, prefix: &str) -> ObjectStream;

    /// [`ObjectStore::list`] collected: for listings known to be small.
    async fn list_all(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        use futures::TryStreamExt;
        self.list(prefix).try_collect().await
    }

    /// The names one level below `prefix` that have objects under them ("directories"), sorted.
    async fn list_prefixes(&self, prefix: &str) -> Result<Vec<String>>;

    /// Deletes an object; deleting an absent object succeeds.
    async fn delete(&self, key: &str) -> Result<()>;

    /// True when a lookup costs no network round trip (a local file system), so callers need not
    /// cache its answers.
    fn lookups_are_local(&self) -> bool {
        false
    }

    /// True when [`WriteMode::CreateNew`] is decided by the store in one step, so of two writers
    /// racing for an absent key exactly one sees `Written` (a local file system's link). False
    /// where the check is the client's own look-then-write (S3: Garage ignores `If-None-Match`),
    /// so callers that need mutual exclusion must not rely on it there.
    fn create_is_exclusive(&self) -> bool {
        false
    }
}

/// A streamed upload. Dropping it without `finish` publishes nothing.
#[async_trait]
pub trait Upload: Send {
    async fn write(&mut self, data: Bytes) -> Result<()>;
    async fn finish(self: Box<Self>) -> Result<WriteOutcome>;
    async fn abort(self: Box<Self>);
}

/// Opens the store a location names.
pub async fn open(location: &Location, s3: &S3Options) -> Result<Arc<dyn ObjectStore>> {
    Ok(match location {
        Location::File { root } => Arc::new(file::FileStore::new(root.clone())),
        Location::S3 { bucket, prefix } => Arc::new(s3::S3Store::connect(bucket, prefix, s3).await?),
    })
}

/// Keys are relative, '/'-separated paths without empty, '.' or '..' parts, so that no key can
/// escape the store root on a file system or alias another key on S3.
pub fn validate_key(key: &str) -> Result<()> {
    let valid = !key.is_empty()
        && !key.starts_with('/')
        && key.split('/').all(|part| !part.is_empty() && part != "." && part != "..")
        && !key.contains('\0');
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidKey(key.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_escape_the_root() {
        for good in ["a", "cluster/wal/0000000100000000/000000010000000000000001", "x.json"] {
            validate_key(good).unwrap();
        }
        for bad in ["", "/etc/passwd", "a/../b", "a//b", "./a", "a/", "..", "a\0b"] {
            assert!(validate_key(bad).is_err(), "{bad:?}");
        }
    }
}
