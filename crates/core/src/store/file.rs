//! `file://` store: objects are files under a root directory.
//!
//! Publishing follows PostgreSQL's `basic_archive`: write a temporary file in the target directory,
//! fsync it, then make it visible in one step and fsync the directory. `CreateNew` publishes with
//! `link(2)`, which fails if the name exists, so two writers can never replace each other's object.
//!
//! Durability invariants: every directory on the way to an object is fsynced into its parent before
//! the object is acknowledged (once per process and directory, so a directory whose creation a crash
//! left unsynced is made durable by the next process that uses it), and an object that "already
//! exists" is fsynced, with its directory, before the caller is told so: the earlier writer may have
//! crashed between its link and its directory fsync.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{validate_key, ObjectInfo, ObjectReader, ObjectStore, Upload, WriteMode, WriteOutcome};
use crate::error::{Error, Result};

const TEMP_MARKER: &str = ".tmp-";

#[derive(Debug, Clone)]
pub struct FileStore {
    root: PathBuf,
    /// Directories already fsynced into their parents by this process.
    durable_dirs: Arc<Mutex<HashSet<PathBuf>>>,
}

impl FileStore {
    pub fn new(root: PathBuf) -> Self {
        FileStore { root, durable_dirs: Arc::default() }
    }

    /// Creates the directories an object at `path` needs, each fsynced into its parent.
    fn prepare_parent(&self, path: &Path) -> Result<()> {
        let parent = path.parent().expect("object paths have a parent");
        make_durable_dirs(&self.root, parent, &self.durable_dirs)
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        validate_key(key)?;
        Ok(self.root.join(key))
    }

    fn not_found(&self, key: &str) -> Error {
        Error::NotFound { store: self.describe(), key: key.to_string() }
    }
}

fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.contains(TEMP_MARKER)
}

/// Whether a directory holds anything but temporary files: an aborted upload leaves its directory
/// behind, and that must not look like a prefix with objects under it.
fn holds_objects(dir: &Path) -> bool {
    fs::read_dir(dir)
        .map(|entries| entries.flatten().any(|e| !e.file_name().to_string_lossy().starts_with('.')))
        .unwrap_or(false)
}

fn temp_path_for(target: &Path) -> PathBuf {
    let name = target.file_name().and_then(|n| n.to_str()).unwrap_or("object");
    let unique: u64 = rand::random();
    target.with_file_name(format!(".{name}{TEMP_MARKER}{}-{unique:016x}", std::process::id()))
}

fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(test)]
    tests::record_sync(dir);
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io("fsync directory", dir, e))
}

fn sync_file(path: &Path) -> Result<()> {
    #[cfg(test)]
    tests::record_sync(path);
    File::open(path).and_then(|f| f.sync_all()).map_err(|e| Error::io("fsync", path, e))
}

/// Makes `dir` (under `root`) exist durably: every directory from the root down is created if
/// missing and fsynced into its parent, so a crash cannot lose the path to an acknowledged object.
/// Directories this process already made durable are skipped.
fn make_durable_dirs(root: &Path, dir: &Path, known: &Mutex<HashSet<PathBuf>>) -> Result<()> {
    let mut known = known.lock().expect("directory cache lock");
    if known.contains(dir) {
        return Ok(());
    }
    if !known.contains(root) {
        if !root.is_dir() {
            fs::create_dir_all(root).map_err(|e| Error::io("create directory", root, e))?;
            if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
        }
        known.insert(root.to_path_buf());
    }
    let relative = dir.strip_prefix(root).expect("object directories are under the root");
    let mut current = root.to_path_buf();
    for part in relative.components() {
        let parent = current.clone();
        current.push(part);
        if known.contains(&current) {
            continue;
        }
        match fs::create_dir(&current) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && current.is_dir() => {}
            Err(e) => return Err(Error::io("create directory", &current, e)),
        }
        // Also when it existed: whoever created it may have crashed before this fsync.
        sync_dir(&parent)?;
        known.insert(current.clone());
    }
    Ok(())
}

/// An object another writer published: make sure it is durable before anyone relies on it.
fn sync_existing(target: &Path) -> Result<WriteOutcome> {
    sync_file(target)?;
    sync_dir(target.parent().expect("object paths have a parent"))?;
    Ok(WriteOutcome::AlreadyExists)
}

/// Makes a fully written and fsynced temporary file visible under `target`.
fn publish(temp: &Path, target: &Path, mode: WriteMode) -> Result<WriteOutcome> {
    let outcome = match mode {
        WriteMode::Overwrite => {
            fs::rename(temp, target).map_err(|e| Error::io("rename into place", target, e))?;
            WriteOutcome::Written
        }
        WriteMode::CreateNew => {
            let linked = fs::hard_link(temp, target);
            let _ = fs::remove_file(temp);
            match linked {
                Ok(()) => WriteOutcome::Written,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return sync_existing(target),
                Err(e) => return Err(Error::io("link into place", target, e)),
            }
        }
    };
    sync_dir(target.parent().expect("object paths have a parent"))?;
    Ok(outcome)
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| {
        Err(Error::Backend {
            store: "file".into(),
            operation: "blocking task",
            key: String::new(),
            message: e.to_string(),
        })
    })
}

#[async_trait]
impl ObjectStore for FileStore {
    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }

    fn lookups_are_local(&self) -> bool {
        true
    }

    fn create_is_exclusive(&self) -> bool {
        true
    }

    async fn put(&self, key: &str, body: Bytes, mode: WriteMode) -> Result<WriteOutcome> {
        let target = self.path(key)?;
        let store = self.clone();
        blocking(move || {
            store.prepare_parent(&target)?;
            if mode == WriteMode::CreateNew && target.exists() {
                return sync_existing(&target);
            }
            let temp = temp_path_for(&target);
            let written = File::create(&temp)
                .and_then(|mut f| f.write_all(&body).and_then(|_| f.sync_all()))
                .map_err(|e| Error::io("write", &temp, e));
            if let Err(e) = written {
                let _ = fs::remove_file(&temp);
                return Err(e);
            }
            publish(&temp, &target, mode)
        })
        .await
    }

    async fn start_upload(&self, key: &str, mode: WriteMode) -> Result<Box<dyn Upload>> {
        let target = self.path(key)?;
        let temp = temp_path_for(&target);
        let store = self.clone();
        let (target, temp, file) = blocking(move || {
            store.prepare_parent(&target)?;
            let file = File::create(&temp).map_err(|e| Error::io("create", &temp, e))?;
            Ok((target, temp, file))
        })
        .await?;
        Ok(Box::new(FileUpload { target, temp, file: Some(file), mode }))
    }

    async fn get(&self, key: &str) -> Result<ObjectReader> {
        let path = self.path(key)?;
        match tokio::fs::File::open(&path).await {
            Ok(file) => Ok(Box::pin(tokio::io::BufReader::with_capacity(256 * 1024, file))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(self.not_found(key)),
            Err(e) => Err(Error::io("open", path, e)),
        }
    }

    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes> {
        let path = self.path(key)?;
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(self.not_found(key)),
            Err(e) => return Err(Error::io("open", path, e)),
        };
        file.seek(io::SeekFrom::Start(offset)).await.map_err(|e| Error::io("seek", &path, e))?;
        let mut buffer = Vec::with_capacity(len as usize);
        file.take(len).read_to_end(&mut buffer).await.map_err(|e| Error::io("read", &path, e))?;
        Ok(buffer.into())
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        let path = self.path(key)?;
        match tokio::fs::metadata(&path).await {
            Ok(meta) if meta.is_file() => {
                Ok(Some(ObjectInfo { key: key.to_string(), size: meta.len(), last_modified: meta.modified().ok() }))
            }
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("stat", path, e)),
        }
    }

    fn list(&self, prefix: &str) -> super::ObjectStream {
        let root = self.root.clone();
        let prefix = prefix.to_string();
        // A blocking walk feeds a bounded channel: memory stays at the channel's size.
        let (sender, mut receiver) = tokio::sync::mpsc::channel::<Result<ObjectInfo>>(1024);
        tokio::task::spawn_blocking(move || {
            // Walk only the deepest directory the prefix names, then filter by the full prefix.
            let dir_part = prefix.rsplit_once('/').map(|(dir, _)| dir).unwrap_or("");
            if !dir_part.is_empty() {
                if let Err(e) = validate_key(dir_part) {
                    let _ = sender.blocking_send(Err(e));
                    return;
                }
            }
            if let Err(e) =
                walk(&root, &root.join(dir_part), &prefix, &mut |info| sender.blocking_send(Ok(info)).is_ok())
            {
                let _ = sender.blocking_send(Err(e));
            }
        });
        Box::pin(futures::stream::poll_fn(move |cx| receiver.poll_recv(cx)))
    }

    async fn list_prefixes(&self, prefix: &str) -> Result<Vec<String>> {
        let dir = if prefix.is_empty() { self.root.clone() } else { self.path(prefix.trim_end_matches('/'))? };
        blocking(move || {
            let mut names = Vec::new();
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(names),
                Err(e) => return Err(Error::io("list", &dir, e)),
            };
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) && holds_objects(&entry.path()) {
                    if let Some(name) = entry.file_name().to_str().filter(|n| !n.starts_with('.')) {
                        names.push(name.to_string());
                    }
                }
            }
            names.sort();
            Ok(names)
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("delete", path, e)),
        }
    }
}

/// Writes a local file the way objects are published: temporary name in the same directory, fsync,
/// rename over the target, directory fsync. A reader sees the old file or the whole new one.
pub fn write_file_atomically(target: &Path, contents: &[u8]) -> Result<()> {
    let temp = temp_path_for(target);
    let written = File::create(&temp)
        .and_then(|mut f| f.write_all(contents).and_then(|_| f.sync_all()))
        .map_err(|e| Error::io("write", &temp, e));
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    if let Err(e) = fs::rename(&temp, target) {
        let _ = fs::remove_file(&temp);
        return Err(Error::io("rename into place", target, e));
    }
    let parent = target.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    sync_dir(parent)
}

/// Visits the objects under `dir` whose key starts with `prefix`, in key order: each directory's
/// entries are sorted with directories as `name/`, so the walk's order is the keys' byte order.
/// Stops early (Ok) when `emit` returns false (the listener went away).
fn walk(root: &Path, dir: &Path, prefix: &str, emit: &mut dyn FnMut(ObjectInfo) -> bool) -> Result<bool> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(Error::io("list", dir, e)),
    };
    let mut children = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if is_temp_name(name) {
            continue;
        }
        let path = entry.path();
        let file_type = entry.file_type().map_err(|e| Error::io("stat", &path, e))?;
        let sort_key = if file_type.is_dir() { format!("{name}/") } else { name.to_string() };
        children.push((sort_key, path, file_type));
    }
    children.sort_by(|a, b| a.0.cmp(&b.0));
    for (_, path, file_type) in children {
        let key = path
            .strip_prefix(root)
            .expect("walked paths are under the root")
            .to_string_lossy()
            .replace(std::path::MAIN_SEPARATOR, "/");
        if file_type.is_dir() {
            if (prefix.starts_with(&format!("{key}/")) || key.starts_with(prefix)) && !walk(root, &path, prefix, emit)?
            {
                return Ok(false);
            }
        } else if file_type.is_file() && key.starts_with(prefix) {
            let meta = match fs::metadata(&path) {
                Ok(meta) => meta,
                // Deleted while listed: it is not there.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("stat", &path, e)),
            };
            if !emit(ObjectInfo { key, size: meta.len(), last_modified: meta.modified().ok() }) {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

struct FileUpload {
    target: PathBuf,
    temp: PathBuf,
    file: Option<File>,
    mode: WriteMode,
}

#[async_trait]
impl Upload for FileUpload {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        let mut file = self.file.take().expect("upload used after finish");
        let temp = self.temp.clone();
        let file = blocking(move || {
            file.write_all(&data).map_err(|e| Error::io("write", &temp, e))?;
            Ok(file)
        })
        .await?;
        self.file = Some(file);
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<WriteOutcome> {
        let file = self.file.take().expect("upload used after finish");
        let (temp, target, mode) = (self.temp.clone(), self.target.clone(), self.mode);
        blocking(move || {
            let synced = file.sync_all().map_err(|e| Error::io("fsync", &temp, e));
            drop(file);
            if let Err(e) = synced {
                let _ = fs::remove_file(&temp);
                return Err(e);
            }
            publish(&temp, &target, mode)
        })
        .await
    }

    async fn abort(self: Box<Self>) {}
}

impl Drop for FileUpload {
    fn drop(&mut self) {
        // Runs on every path that did not publish: abort, error, or a dropped future. After a
        // successful publish the temporary name is already gone and this is a no-op.
        let _ = fs::remove_file(&self.temp);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Every fsync the file store issues in this test process, in order.
    static SYNCED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

    pub(crate) fn record_sync(path: &Path) {
        SYNCED.lock().unwrap().push(path.to_path_buf());
    }

    /// The fsyncs issued under `dir` (tests run in parallel; each has its own directory).
    fn synced_under(dir: &Path) -> Vec<PathBuf> {
        SYNCED.lock().unwrap().iter().filter(|p| p.starts_with(dir)).cloned().collect()
    }

    #[tokio::test]
    async fn every_new_directory_is_fsynced_into_its_parent_before_the_object_is_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("repo");
        let store = FileStore::new(root.clone());
        let key = "7400000000000000001/wal/0000000100000000/000000010000000000000001";
        assert_eq!(
            store.put(key, Bytes::from_static(b"x"), WriteMode::CreateNew).await.unwrap(),
            WriteOutcome::Written
        );
        let synced = synced_under(dir.path());
        let cluster = root.join("7400000000000000001");
        // The repository root itself (created here) is fsynced into the temporary directory, which
        // is not under `dir`; below it, each new directory's parent, then the object's directory.
        for parent in [&root, &cluster, &cluster.join("wal"), &cluster.join("wal/0000000100000000")] {
            assert!(synced.contains(parent), "{} not fsynced: {synced:?}", parent.display());
        }
        // A store (a process) makes each directory durable once, not once per object.
        let before = synced_under(dir.path()).len();
        let next = "7400000000000000001/wal/0000000100000000/000000010000000000000002";
        store.put(next, Bytes::from_static(b"y"), WriteMode::CreateNew).await.unwrap();
        let added: Vec<_> = synced_under(dir.path()).split_off(before);
        assert_eq!(added, vec![cluster.join("wal/0000000100000000")], "only the object's own directory");

        // The streamed path prepares its directories the same way.
        let upload = store.start_upload("7400000000000000001/snapshots/t/snap_00000001/data", WriteMode::CreateNew);
        let upload = upload.await.unwrap();
        assert!(synced_under(dir.path()).contains(&cluster.join("snapshots/t")), "{:?}", synced_under(dir.path()));
        drop(upload);
    }

    #[tokio::test]
    async fn a_directory_left_unsynced_by_a_crash_is_made_durable_by_the_next_process() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("repo");
        // As a crashed writer leaves it: the directories exist, nothing says they were fsynced.
        fs::create_dir_all(root.join("c/wal/0000000100000000")).unwrap();
        let store = FileStore::new(root.clone());
        store.put("c/wal/0000000100000000/000000010000000000000001", Bytes::new(), WriteMode::CreateNew).await.unwrap();
        let synced = synced_under(dir.path());
        for parent in [root.clone(), root.join("c"), root.join("c/wal")] {
            assert!(synced.contains(&parent), "{} not fsynced: {synced:?}", parent.display());
        }
    }

    #[tokio::test]
    async fn an_object_that_already_exists_is_fsynced_with_its_directory_before_it_counts() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("repo");
        let object = root.join("c/wal/0000000100000000/000000010000000000000001");
        // Published by a writer that crashed before its fsyncs.
        fs::create_dir_all(object.parent().unwrap()).unwrap();
        fs::write(&object, b"stored earlier").unwrap();
        let store = FileStore::new(root.clone());
        let key = "c/wal/0000000100000000/000000010000000000000001";
        let outcome = store.put(key, Bytes::from_static(b"stored earlier"), WriteMode::CreateNew).await.unwrap();
        assert_eq!(outcome, WriteOutcome::AlreadyExists);
        let synced = synced_under(dir.path());
        let file_at = synced.iter().position(|p| p == &object).expect("the existing object was fsynced");
        assert!(synced[file_at..].contains(&object.parent().unwrap().to_path_buf()), "and then its directory");

        // The same through a streamed upload that meets the object at publish time.
        let before = synced_under(dir.path()).len();
        let mut upload = store.start_upload(key, WriteMode::CreateNew).await.unwrap();
        upload.write(Bytes::from_static(b"stored earlier")).await.unwrap();
        assert_eq!(upload.finish().await.unwrap(), WriteOutcome::AlreadyExists);
        assert!(synced_under(dir.path())[before..].contains(&object));
    }
}
