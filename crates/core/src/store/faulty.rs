//! A store wrapper that injects faults, so that failure paths (an upload that fails half-way, a
//! read cut short, a store that hangs) are unit-tested without a server that misbehaves on cue.
//!
//! Faults are rules: which operation, on keys containing which text, after how many successful
//! ones, and how many times. A rule that fired is counted, so a test can assert that the path it
//! meant to exercise was taken (a fault nobody hit proves nothing).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::{ObjectInfo, ObjectReader, ObjectStore, ObjectStream, Upload, WriteMode, WriteOutcome};
use crate::error::{Error, Result};

/// The operations a fault can hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `put`, and the `finish` of a streamed upload (when an object becomes visible).
    Put,
    /// `get` and `get_range`.
    Get,
    Head,
    List,
    Delete,
}

/// What happens to the operation a rule hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// It fails with a backend error (nothing is written or deleted).
    Fail,
    /// A read returns only the first `n` bytes of the object (a connection cut short).
    Truncate(u64),
    /// It waits this long first, then runs.
    Delay(Duration),
}

#[derive(Debug, Clone)]
struct Rule {
    operation: Operation,
    key_contains: String,
    /// Matching operations let through before the fault fires.
    skip: u64,
    /// How many times it fires (u64::MAX: every time).
    times: u64,
    fault: Fault,
    seen: u64,
    fired: u64,
}

#[derive(Debug, Clone)]
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    rules: Arc<Mutex<Vec<Rule>>>,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        FaultyStore { inner, rules: Arc::default() }
    }

    /// Adds a rule: the `(skip + 1)`th matching operation on a key containing `key_contains`, and
    /// the `times - 1` after it, meet `fault`. Returns the rule's index for [`Self::fired`].
    pub fn inject(&self, operation: Operation, key_contains: &str, skip: u64, times: u64, fault: Fault) -> usize {
        let mut rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        rules.push(Rule { operation, key_contains: key_contains.into(), skip, times, fault, seen: 0, fired: 0 });
        rules.len() - 1
    }

    /// How often rule `index` fired.
    pub fn fired(&self, index: usize) -> u64 {
        self.rules.lock().unwrap_or_else(|e| e.into_inner())[index].fired
    }

    /// Removes every rule: the store behaves again.
    pub fn heal(&self) {
        self.rules.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// The fault this operation meets, if any (counting it).
    fn fault(&self, operation: Operation, key: &str) -> Option<Fault> {
        let mut rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        for rule in rules.iter_mut().filter(|r| r.operation == operation && key.contains(&r.key_contains)) {
            rule.seen += 1;
            if rule.seen > rule.skip && rule.fired < rule.times {
                rule.fired += 1;
                return Some(rule.fault);
            }
        }
        None
    }

    fn injected(&self, operation: Operation, key: &str) -> Error {
        let name = match operation {
            Operation::Put => "put",
            Operation::Get => "get",
            Operation::Head => "head",
            Operation::List => "list",
            Operation::Delete => "delete",
        };
        Error::Backend {
            store: self.describe(),
            operation: name,
            key: key.to_string(),
            message: "injected fault".into(),
        }
    }

    /// Applies a fault that is not about the bytes read: fails or waits.
    async fn before(&self, operation: Operation, key: &str) -> Result<Option<Fault>> {
        match self.fault(operation, key) {
            Some(Fault::Fail) => Err(self.injected(operation, key)),
            Some(Fault::Delay(wait)) => {
                tokio::time::sleep(wait).await;
                Ok(None)
            }
            other => Ok(other),
        }
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    fn describe(&self) -> String {
        format!("faulty {}", self.inner.describe())
    }

    async fn put(&self, key: &str, body: Bytes, mode: WriteMode) -> Result<WriteOutcome> {
        self.before(Operation::Put, key).await?;
        self.inner.put(key, body, mode).await
    }

    async fn start_upload(&self, key: &str, mode: WriteMode) -> Result<Box<dyn Upload>> {
        let inner = self.inner.start_upload(key, mode).await?;
        Ok(Box::new(FaultyUpload { store: self.clone(), key: key.to_string(), inner }))
    }

    async fn get(&self, key: &str) -> Result<ObjectReader> {
        match self.before(Operation::Get, key).await? {
            Some(Fault::Truncate(n)) => Ok(Box::pin(tokio::io::AsyncReadExt::take(self.inner.get(key).await?, n))),
            _ => self.inner.get(key).await,
        }
    }

    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes> {
        match self.before(Operation::Get, key).await? {
            Some(Fault::Truncate(n)) => {
                let bytes = self.inner.get_range(key, offset, len).await?;
                Ok(bytes.slice(..(n as usize).min(bytes.len())))
            }
            _ => self.inner.get_range(key, offset, len).await,
        }
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        self.before(Operation::Head, key).await?;
        self.inner.head(key).await
    }

    fn list(&self, prefix: &str) -> ObjectStream {
        match self.fault(Operation::List, prefix) {
            Some(Fault::Fail) => Box::pin(futures::stream::iter([Err(self.injected(Operation::List, prefix))])),
            _ => self.inner.list(prefix),
        }
    }

    async fn list_prefixes(&self, prefix: &str) -> Result<Vec<String>> {
        self.before(Operation::List, prefix).await?;
        self.inner.list_prefixes(prefix).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.before(Operation::Delete, key).await?;
        self.inner.delete(key).await
    }

    fn lookups_are_local(&self) -> bool {
        self.inner.lookups_are_local()
    }

    fn create_is_exclusive(&self) -> bool {
        self.inner.create_is_exclusive()
    }
}

struct FaultyUpload {
    store: FaultyStore,
    key: String,
    inner: Box<dyn Upload>,
}

#[async_trait]
impl Upload for FaultyUpload {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        self.inner.write(data).await
    }

    async fn finish(self: Box<Self>) -> Result<WriteOutcome> {
        if let Err(e) = self.store.before(Operation::Put, &self.key).await {
            self.inner.abort().await;
            return Err(e);
        }
        self.inner.finish().await
    }

    async fn abort(self: Box<Self>) {
        self.inner.abort().await
    }
}
