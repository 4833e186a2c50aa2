//! An in-memory store, for unit tests of everything above the store: the same contract as the
//! file and S3 stores (a key is absent or holds a whole object, `CreateNew` never replaces, an
//! upload is invisible until it finishes, listings in key order), without a disk or a server.
//! It runs in the shared storage suite with the other backends, so it is held to that contract.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};

use super::{validate_key, ObjectInfo, ObjectReader, ObjectStore, ObjectStream, Upload, WriteMode, WriteOutcome};
use crate::error::{Error, Result};

type Objects = Arc<Mutex<BTreeMap<String, (Bytes, SystemTime)>>>;

#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    objects: Objects,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (Bytes, SystemTime)>> {
        self.objects.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn not_found(&self, key: &str) -> Error {
        Error::NotFound { store: self.describe(), key: key.to_string() }
    }
}

fn publish(objects: &Objects, key: &str, body: Bytes, mode: WriteMode) -> WriteOutcome {
    let mut objects = objects.lock().unwrap_or_else(|e| e.into_inner());
    if mode == WriteMode::CreateNew && objects.contains_key(key) {
        return WriteOutcome::AlreadyExists;
    }
    objects.insert(key.to_string(), (body, SystemTime::now()));
    WriteOutcome::Written
}

#[async_trait]
impl ObjectStore for MemoryStore {
    fn describe(&self) -> String {
        "memory://".into()
    }

    async fn put(&self, key: &str, body: Bytes, mode: WriteMode) -> Result<WriteOutcome> {
        validate_key(key)?;
        Ok(publish(&self.objects, key, body, mode))
    }

    async fn start_upload(&self, key: &str, mode: WriteMode) -> Result<Box<dyn Upload>> {
        validate_key(key)?;
        Ok(Box::new(MemoryUpload { objects: self.objects.clone(), key: key.to_string(), mode, body: BytesMut::new() }))
    }

    async fn get(&self, key: &str) -> Result<ObjectReader> {
        validate_key(key)?;
        let body = self.lock().get(key).map(|(b, _)| b.clone()).ok_or_else(|| self.not_found(key))?;
        Ok(Box::pin(std::io::Cursor::new(body)))
    }

    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes> {
        validate_key(key)?;
        let body = self.lock().get(key).map(|(b, _)| b.clone()).ok_or_else(|| self.not_found(key))?;
        let start = (offset as usize).min(body.len());
        let end = start.saturating_add(len as usize).min(body.len());
        Ok(body.slice(start..end))
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        validate_key(key)?;
        Ok(self.lock().get(key).map(|(body, modified)| ObjectInfo {
            key: key.to_string(),
            size: body.len() as u64,
            last_modified: Some(*modified),
        }))
    }

    fn list(&self, prefix: &str) -> ObjectStream {
        // A snapshot of the keys, in order (BTreeMap), as a stream like the other stores'.
        let items: Vec<Result<ObjectInfo>> = self
            .lock()
            .range(prefix.to_string()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, (body, modified))| {
                Ok(ObjectInfo { key: key.clone(), size: body.len() as u64, last_modified: Some(*modified) })
            })
            .collect();
        Box::pin(futures::stream::iter(items))
    }

    async fn list_prefixes(&self, prefix: &str) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .lock()
            .range(prefix.to_string()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .filter_map(|(key, _)| key[prefix.len()..].split_once('/').map(|(name, _)| name.to_string()))
            .collect();
        // Key order is not name order ("b-x/..." sorts before "b/..."): sort, then deduplicate.
        names.sort();
        names.dedup();
        Ok(names)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        validate_key(key)?;
        self.lock().remove(key);
        Ok(())
    }

    fn lookups_are_local(&self) -> bool {
        true
    }

    fn create_is_exclusive(&self) -> bool {
        true
    }
}

struct MemoryUpload {
    objects: Objects,
    key: String,
    mode: WriteMode,
    body: BytesMut,
}

#[async_trait]
impl Upload for MemoryUpload {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        self.body.extend_from_slice(&data);
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<WriteOutcome> {
        Ok(publish(&self.objects, &self.key, self.body.freeze(), self.mode))
    }

    async fn abort(self: Box<Self>) {}
}
