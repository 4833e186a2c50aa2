//! Rebuilding a data directory from a backup: every chunk verified against its SHA-256 before it is
//! written, each pack downloaded once (whole, into memory: packs are bounded), in parallel, packs
//! of different files side by side; consecutive chunks of a file are written as one run, long
//! runs around the page cache (see [`DIRECT_WRITE_MIN`]).
//!
//! Order, so that a half-restored directory can never be started as if it were whole:
//! 1. every pack the manifest needs is looked up before anything is written (a missing chunk is
//!    refused with nothing touched);
//! 2. in a delta restore `global/pg_control` is removed first, then files the backup does not hold;
//! 3. files are written, every chunk checked, all fsynced; `backup_label` and `tablespace_map` are
//!    written from the manifest;
//! 4. `global/pg_control` is written under a temporary name, and only [`publish_control_file`]
//!    (called by the CLI after it wrote the recovery settings) puts it in place. PostgreSQL refuses
//!    to start a directory without it.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use futures::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::manifest::{FileEntry, FileKind};
use super::BackupManifest;
use crate::error::{Error, Result};
use crate::layout;
use crate::repository::Repository;

pub const CONTROL_FILE: &str = "global/pg_control";
/// Files a pack's download keeps open at once, two descriptors each (closed files are synced
/// later, by path).
const MAX_OPEN_FILES: usize = 16;
const CONTROL_FILE_PENDING: &str = "global/pg_control.backstop-restoring";

pub struct RestoreOptions {
    pub target_dir: PathBuf,
    /// Tablespace OID -> where to put it instead of its recorded location.
    pub tablespace_map: HashMap<u32, PathBuf>,
    /// Keep files whose chunks already match; fetch only the rest.
    pub delta: bool,
    /// Packs downloading at once.
    pub parallel: usize,
    /// Databases (OIDs) whose relation files are created as sparse files of their recorded
    /// length and nothing fetched (a partial restore: see [`sparse_database`]). Empty: all whole.
    pub sparse_databases: std::collections::BTreeSet<u32>,
}

/// The database whose relation file `path` (a manifest path) is, when it is one: a file named by
/// digits (a relfilenode, its segments `.1` and forks `_fsm`, `_vm`, `_init`) under `base/<oid>/`
/// or `pg_tblspc/<spc>/<version dir>/<oid>/`. `PG_VERSION`, `pg_filenode.map` and other files of
/// a database directory are not relation files: a partial restore restores them whole (the
/// server reads them at connection and at startup).
pub fn sparse_database(path: &str) -> Option<u32> {
    let parts: Vec<&str> = path.split('/').collect();
    let (database, file) = match parts.as_slice() {
        ["base", database, file] => (database, file),
        ["pg_tblspc", _, _, database, file] => (database, file),
        _ => return None,
    };
    let stem = file.split(['.', '_']).next().unwrap_or_default();
    let is_relation = !stem.is_empty() && stem.bytes().all(|b| b.is_ascii_digit());
    is_relation.then(|| database.parse().ok()).flatten()
}

#[derive(Debug, Default)]
pub struct RestoreProgress {
    pub bytes_total: AtomicU64,
    /// Bytes written or found already correct.
    pub bytes_done: AtomicU64,
    pub bytes_fetched: AtomicU64,
    pub packs_total: AtomicU64,
    pub packs_done: AtomicU64,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RestoreSummary {
    pub files: u64,
    pub bytes: u64,
    /// Plain bytes of chunks downloaded and written.
    pub bytes_fetched: u64,
    /// Bytes a delta restore found already correct.
    pub bytes_kept: u64,
    pub packs_fetched: u64,
    /// Files and directories a delta restore removed because the backup does not hold them.
    pub removed: u64,
    /// Relation files of skipped databases created sparse (nothing fetched), and their length.
    pub sparse_files: u64,
    pub sparse_bytes: u64,
}

fn invalid(message: String) -> Error {
    Error::InvalidInput(message)
}

/// Where each manifest path goes on this machine.
struct Layout {
    target: PathBuf,
    /// Tablespace OID -> location here.
    spaces: HashMap<u32, PathBuf>,
}

impl Layout {
    fn resolve(&self, path: &str) -> PathBuf {
        if let Some(rest) = path.strip_prefix("pg_tblspc/") {
            let (oid, inner) = rest.split_once('/').unwrap_or((rest, ""));
            if let Some(location) = oid.parse::<u32>().ok().and_then(|oid| self.spaces.get(&oid)) {
                return if inner.is_empty() { location.clone() } else { location.join(inner) };
            }
        }
        if path == CONTROL_FILE {
            return self.target.join(CONTROL_FILE_PENDING);
        }
        self.target.join(path)
    }

    fn is_tablespace_link(&self, path: &str) -> Option<u32> {
        path.strip_prefix("pg_tblspc/")
            .and_then(|oid| oid.parse::<u32>().ok())
            .filter(|oid| self.spaces.contains_key(oid))
    }
}

/// Where each tablespace goes: mapped by the caller, or its recorded location; either must be a
/// clean absolute path outside the target and every other tablespace. A delta restore touches only
/// what the caller named, so every tablespace must be mapped (on the backup's own host its
/// recorded location is the live cluster's tablespace).
fn tablespace_locations(manifest: &BackupManifest, options: &RestoreOptions) -> Result<HashMap<u32, PathBuf>> {
    let target = &options.target_dir;
    let mut spaces: HashMap<u32, PathBuf> = HashMap::new();
    for space in &manifest.tablespaces {
        let location = match options.tablespace_map.get(&space.oid) {
            Some(mapped) => mapped.clone(),
            None if options.delta => {
                return Err(invalid(format!(
                    "tablespace {} of backup {} is not mapped: a delta restore writes and deletes only where it is \
                     told, and {} may be a running cluster's tablespace; pass --tablespace-map {}=DIR",
                    space.oid, manifest.id, space.location, space.oid
                )))
            }
            None => PathBuf::from(&space.location),
        };
        let text = location.to_str().unwrap_or_default();
        if !super::manifest::is_clean_absolute(text) {
            return Err(invalid(format!(
                "tablespace location {} must be an absolute path without '.', '..' or line breaks",
                location.display()
            )));
        }
        if location.starts_with(target) || target.starts_with(&location) {
            return Err(invalid(format!(
                "tablespace location {} and the target directory {} lie inside one another",
                location.display(),
                target.display()
            )));
        }
        if let Some((other, _)) = spaces.iter().find(|(_, l)| l.starts_with(&location) || location.starts_with(l)) {
            return Err(invalid(format!(
                "tablespace location {} lies inside tablespace {other}'s, or it inside it",
                location.display()
            )));
        }
        spaces.insert(space.oid, location);
    }
    Ok(spaces)
}

/// Creates `path` and its missing parents owner-only (0700), as PostgreSQL wants its directories.
fn create_private_dirs(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new().recursive(true).mode(0o700).create(path)
}

fn dir_is_empty(path: &Path) -> Result<bool> {
    match fs::read_dir(path) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(Error::io("list", path, e)),
    }
}

/// Rebuilds `options.target_dir` from `manifest`, all but the control file (see the module docs).
pub async fn restore(
    repository: &Repository,
    manifest: &BackupManifest,
    options: &RestoreOptions,
    progress: Arc<RestoreProgress>,
    cancel: &CancellationToken,
) -> Result<RestoreSummary> {
    let target = &options.target_dir;
    if !target.is_absolute() {
        return Err(invalid(format!("the target directory {} must be an absolute path", target.display())));
    }
    if target.join("postmaster.pid").exists() {
        return Err(invalid(format!(
            "{} holds postmaster.pid: a server may be running on it; stop it before restoring over it",
            target.display()
        )));
    }
    let spaces = tablespace_locations(manifest, options)?;
    for oid in options.tablespace_map.keys() {
        if !spaces.contains_key(oid) {
            return Err(invalid(format!(
                "--tablespace-map names OID {oid}, which backup {} does not hold",
                manifest.id
            )));
        }
    }
    if !options.delta {
        for dir in std::iter::once(target).chain(spaces.values()) {
            if !dir_is_empty(dir)? {
                return Err(invalid(format!(
                    "{} is not empty; restore into an empty directory, or pass --delta to reuse what is there",
                    dir.display()
                )));
            }
        }
    }
    let layout = Layout { target: target.clone(), spaces };

    // 1. Every pack must be there before anything is written.
    check_packs_present(repository, manifest).await?;
    let total: u64 = manifest.files.iter().map(|f| f.size).sum();
    let sparse: u64 = manifest
        .files
        .iter()
        .filter(|f| f.kind == FileKind::File)
        .filter(|f| sparse_database(&f.path).is_some_and(|db| options.sparse_databases.contains(&db)))
        .map(|f| f.size)
        .sum();
    create_private_dirs(target).map_err(|e| Error::io("create", target, e))?;
    // PostgreSQL refuses a data directory that others can read.
    fs::set_permissions(target, fs::Permissions::from_mode(0o700)).map_err(|e| Error::io("chmod", target, e))?;
    crate::disk::check_room(target, if options.delta { 0 } else { total - sparse })?;
    progress.bytes_total.store(total, Ordering::Relaxed);

    // 2-3. Layout, delta comparison, then the chunks still needed, grouped by pack.
    let (needed, mut summary) = {
        let manifest = manifest.clone();
        let delta = options.delta;
        let progress = progress.clone();
        let layout_target = layout.target.clone();
        let spaces = layout.spaces.clone();
        let cancel = cancel.clone();
        let sparse = options.sparse_databases.clone();
        tokio::task::spawn_blocking(move || {
            let layout = Layout { target: layout_target, spaces };
            prepare(&layout, &manifest, delta, &sparse, &progress, &cancel)
        })
        .await
        .map_err(|e| invalid(format!("the restore's file thread failed: {e}")))??
    };
    progress.packs_total.store(needed.len() as u64, Ordering::Relaxed);
    let layout = Arc::new(layout);
    let paths: Arc<Vec<String>> = Arc::new(manifest.files.iter().map(|f| f.path.clone()).collect());
    let handle = tokio::runtime::Handle::current();
    let mut fetches = futures::stream::iter(interleave_by_file(needed).into_iter().map(|(pack, chunks)| {
        let layout = layout.clone();
        let paths = paths.clone();
        let progress = progress.clone();
        let pack_ref = manifest.packs[pack as usize].clone();
        let repository = repository.clone();
        let handle = handle.clone();
        let cancel = cancel.clone();
        async move {
            // Streamed through one chunk-sized buffer: memory stays flat whatever the pack size.
            tokio::task::spawn_blocking(move || {
                restore_pack(&repository, &handle, &cancel, &layout, &pack_ref, &paths, chunks, &progress)
            })
            .await
            .map_err(|e| invalid(format!("a restore writer thread failed: {e}")))?
        }
    }))
    .buffer_unordered(options.parallel.max(1));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Err(Error::Cancelled),
            next = fetches.try_next() => match next? {
                Some(written) => {
                    summary.bytes_fetched += written;
                    summary.packs_fetched += 1;
                }
                None => break,
            }
        }
    }
    drop(fetches);

    // Durable, with the recorded modes and times, then the label files.
    let manifest_owned = manifest.clone();
    let layout_for_sync = layout.clone();
    tokio::task::spawn_blocking(move || finish_files(&layout_for_sync, &manifest_owned))
        .await
        .map_err(|e| invalid(format!("the restore's file thread failed: {e}")))??;
    summary.files = manifest.files.iter().filter(|f| f.kind == FileKind::File).count() as u64;
    summary.bytes = total;
    Ok(summary)
}

async fn check_packs_present(repository: &Repository, manifest: &BackupManifest) -> Result<()> {
    let missing: Vec<String> = futures::stream::iter(manifest.packs.iter().map(|pack| async move {
        let path = layout::pack(&pack.id)?;
        let key = repository.key(&path);
        match repository.head(&path).await? {
            Some(_) => Ok::<_, Error>(None),
            None => Ok(Some(key)),
        }
    }))
    .buffer_unordered(8)
    .try_filter_map(|missing| async move { Ok(missing) })
    .try_collect()
    .await?;
    if let Some(first) = missing.first() {
        return Err(Error::Corrupt {
            key: repository.key(&layout::backup_manifest(&manifest.id)),
            reason: format!(
                "backup {} is incomplete: {} of its {} packs are missing from {} (first: {first}); nothing was restored",
                manifest.id,
                missing.len(),
                manifest.packs.len(),
                repository.store().describe()
            ),
        });
    }
    Ok(())
}

/// Where one chunk's bytes go: (file index in the manifest, offset in the file, and the part of
/// the chunk written there: `[from, to)`, the whole chunk unless the reference has a range).
type Destinations = Vec<(usize, u64, u32, u32)>;
/// Per pack: (offset in pack, length, sha256, destinations).
type PackPlan = Vec<(u64, u32, String, Destinations)>;

fn prepare(
    layout: &Layout,
    manifest: &BackupManifest,
    delta: bool,
    sparse: &std::collections::BTreeSet<u32>,
    progress: &RestoreProgress,
    cancel: &CancellationToken,
) -> Result<(std::collections::BTreeMap<u32, PackPlan>, RestoreSummary)> {
    let mut summary = RestoreSummary::default();
    if delta {
        for pending in [layout.target.join(CONTROL_FILE), layout.target.join(CONTROL_FILE_PENDING)] {
            match fs::remove_file(&pending) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove", &pending, e)),
            }
        }
        summary.removed = remove_extras(layout, manifest)?;
    }
    // Directories and tablespace links first.
    for entry in manifest.files.iter().filter(|f| f.kind == FileKind::Dir) {
        if let Some(oid) = layout.is_tablespace_link(&entry.path) {
            let location = &layout.spaces[&oid];
            create_private_dirs(location).map_err(|e| Error::io("create", location, e))?;
            fs::set_permissions(location, fs::Permissions::from_mode(0o700))
                .map_err(|e| Error::io("chmod", location, e))?;
            let link = layout.target.join(&entry.path);
            if let Some(parent) = link.parent() {
                create_private_dirs(parent).map_err(|e| Error::io("create", parent, e))?;
            }
            match fs::read_link(&link) {
                Ok(existing) if existing == *location => {}
                _ => {
                    let _ = fs::remove_file(&link);
                    std::os::unix::fs::symlink(location, &link).map_err(|e| Error::io("link", &link, e))?;
                }
            }
            continue;
        }
        let dir = layout.resolve(&entry.path);
        create_private_dirs(&dir).map_err(|e| Error::io("create", &dir, e))?;
    }
    let mut plan: std::collections::BTreeMap<u32, PackPlan> = Default::default();
    let mut slots: HashMap<(u32, u64), usize> = HashMap::new();
    let mut buffer = Vec::new();
    for (index, entry) in manifest.files.iter().enumerate().filter(|(_, f)| f.kind == FileKind::File) {
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let path = layout.resolve(&entry.path);
        if let Some(parent) = path.parent() {
            create_private_dirs(parent).map_err(|e| Error::io("create", parent, e))?;
        }
        if sparse_database(&entry.path).is_some_and(|db| sparse.contains(&db)) {
            // A hole of the file's length: reads see zeros, no block is allocated.
            let file = fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(&path)
                .map_err(|e| Error::io("create", &path, e))?;
            file.set_len(entry.size).map_err(|e| Error::io("resize", &path, e))?;
            summary.sparse_files += 1;
            summary.sparse_bytes += entry.size;
            progress.bytes_done.fetch_add(entry.size, Ordering::Relaxed);
            continue;
        }
        let mut existing = if delta { fs::File::open(&path).ok() } else { None };
        let file = fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(!delta)
            .open(&path)
            .map_err(|e| Error::io("create", &path, e))?;
        file.set_len(entry.size).map_err(|e| Error::io("resize", &path, e))?;
        let mut offset = 0u64;
        for chunk in &entry.chunks {
            let len = chunk.file_len();
            let kept = match existing.as_mut() {
                Some(current) => {
                    buffer.resize(len as usize, 0);
                    // A part of a chunk has no checksum of its own: always fetched.
                    current.read_exact(&mut buffer).is_ok()
                        && chunk.range.is_none()
                        && hex::encode(Sha256::digest(&buffer)) == chunk.sha256
                }
                None => false,
            };
            if kept {
                summary.bytes_kept += len as u64;
                progress.bytes_done.fetch_add(len as u64, Ordering::Relaxed);
            } else {
                let pack = plan.entry(chunk.pack).or_default();
                let slot = *slots.entry((chunk.pack, chunk.offset)).or_insert_with(|| {
                    pack.push((chunk.offset, chunk.len, chunk.sha256.clone(), Vec::new()));
                    pack.len() - 1
                });
                let (from, to) = chunk.span();
                pack[slot].3.push((index, offset, from, to));
            }
            offset += len as u64;
        }
    }
    Ok((plan, summary))
}

/// The packs in the order they are fetched: round-robin over the files they mostly write (the
/// first file of their first chunk), so that the packs restored at the same time write different
/// files. Writers of one file queue on its lock (a write that allocates blocks takes it
/// exclusively, for the whole of a direct write), which left a third of two cores idle when
/// consecutive packs of a big relation file were restored side by side.
fn interleave_by_file(needed: std::collections::BTreeMap<u32, PackPlan>) -> Vec<(u32, PackPlan)> {
    let mut by_file: Vec<(usize, std::collections::VecDeque<(u32, PackPlan)>)> = Vec::new();
    let mut slot_of: HashMap<usize, usize> = HashMap::new();
    for (pack, plan) in needed {
        let file = plan.first().and_then(|(_, _, _, destinations)| destinations.first()).map_or(usize::MAX, |d| d.0);
        let slot = *slot_of.entry(file).or_insert_with(|| {
            by_file.push((file, Default::default()));
            by_file.len() - 1
        });
        by_file[slot].1.push_back((pack, plan));
    }
    let mut order = Vec::new();
    while !by_file.is_empty() {
        for (_, packs) in by_file.iter_mut() {
            order.extend(packs.pop_front());
        }
        by_file.retain(|(_, packs)| !packs.is_empty());
    }
    order
}

/// Removes what the backup does not hold from the target and the tablespace locations.
fn remove_extras(layout: &Layout, manifest: &BackupManifest) -> Result<u64> {
    let wanted: HashSet<PathBuf> = manifest
        .files
        .iter()
        .map(|f| {
            if layout.is_tablespace_link(&f.path).is_some() {
                layout.target.join(&f.path)
            } else {
                layout.resolve(&f.path)
            }
        })
        .chain(std::iter::once(layout.target.join(CONTROL_FILE_PENDING)))
        .collect();
    let mut removed = 0;
    let roots: Vec<PathBuf> = std::iter::once(layout.target.clone()).chain(layout.spaces.values().cloned()).collect();
    for root in roots {
        let mut stack = vec![root];
        while let Some(dir) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("list", &dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| Error::io("list", &dir, e))?;
                let path = entry.path();
                let kind = entry.file_type().map_err(|e| Error::io("stat", &path, e))?;
                if wanted.contains(&path) {
                    if kind.is_dir() {
                        stack.push(path);
                    }
                    continue;
                }
                let result = if kind.is_dir() { fs::remove_dir_all(&path) } else { fs::remove_file(&path) };
                result.map_err(|e| Error::io("remove", &path, e))?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// Streams one pack and writes each chunk it holds where it belongs, every chunk checked against
/// its SHA-256 first; the pack's stored bytes and lengths are checked when it has been read to its
/// end. A chunk that does not match is never written.
#[allow(clippy::too_many_arguments)]
fn restore_pack(
    repository: &Repository,
    handle: &tokio::runtime::Handle,
    cancel: &CancellationToken,
    layout: &Layout,
    pack: &super::PackRef,
    paths: &[String],
    mut chunks: PackPlan,
    progress: &RestoreProgress,
) -> Result<u64> {
    let mut reader = repository.open_spooled_checked_by_caller(handle, &layout::pack(&pack.id)?, cancel)?;
    let key = reader.key().to_string();
    let corrupt = |reason: String| Error::Corrupt { key: key.clone(), reason };
    chunks.sort_by_key(|c| c.0);
    let mut position = 0u64;
    // Chunks that do not go straight into a run (parts, several places) are decoded here first.
    let mut decoded = vec![0u8; super::CHUNK_SIZE];
    let mut written = 0u64;
    let mut files = Writers::new(layout, paths);
    for (offset, len, sha256, destinations) in chunks {
        if offset < position {
            return Err(corrupt(format!("the manifest places overlapping chunks in it (at {offset})")));
        }
        if len as usize > decoded.len() {
            return Err(corrupt(format!(
                "the manifest gives a chunk of {len} bytes at {offset}, more than a chunk holds"
            )));
        }
        reader.skip(offset - position)?;
        position = offset + len as u64;
        // The common case, a whole chunk going to one place that continues the run being
        // gathered, is decoded straight into the run; it joins the run only once it checks out.
        if let [(file_index, file_offset, 0, to)] = destinations[..] {
            if to == len {
                if let Some(slot) = files.reserve(file_index, file_offset, len as usize)? {
                    reader.read_exact_checked(slot)?;
                    if hex::encode(Sha256::digest(&*slot)) != sha256 {
                        return Err(corrupt(format!("chunk {sha256} does not match its checksum; it was not written")));
                    }
                    files.commit(len as usize);
                    written += u64::from(len);
                    progress.bytes_done.fetch_add(u64::from(len), Ordering::Relaxed);
                    progress.bytes_fetched.fetch_add(u64::from(len), Ordering::Relaxed);
                    continue;
                }
            }
        }
        let buffer = &mut decoded[..len as usize];
        reader.read_exact_checked(buffer)?;
        if hex::encode(Sha256::digest(&*buffer)) != sha256 {
            return Err(corrupt(format!("chunk {sha256} does not match its checksum; it was not written")));
        }
        for (file_index, file_offset, from, to) in destinations {
            // The manifest was validated: the range lies inside the chunk.
            let part = &buffer[from as usize..to as usize];
            files.write(file_index, part, file_offset)?;
            written += part.len() as u64;
            progress.bytes_done.fetch_add(part.len() as u64, Ordering::Relaxed);
            progress.bytes_fetched.fetch_add(part.len() as u64, Ordering::Relaxed);
        }
    }
    files.flush()?;
    let trailer = reader.finish()?;
    if trailer.plain_len != pack.len {
        return Err(corrupt(format!("it holds {} bytes, the manifest expects {}", trailer.plain_len, pack.len)));
    }
    progress.packs_done.fetch_add(1, Ordering::Relaxed);
    Ok(written)
}

/// Alignment of a direct write's memory, file offset and length (the page size; every Linux file
/// system's logical block size divides it).
const DIRECT_ALIGN: usize = 4096;
/// Runs at least this long go around the page cache (`O_DIRECT`): a restore writes each byte
/// once and syncs it at the end, so copying it into the cache first is pure cost (measured on the
/// development machine: buffered writes spent 2.5 s of system time per GB, direct ones 0.2 s).
/// Shorter ones (parts of chunks, small files) stay buffered: a direct write waits for the
/// device, and thousands of small ones would.
const DIRECT_WRITE_MIN: usize = 64 << 10;
/// Consecutive chunks of one file are gathered into runs of up to this many bytes before a
/// direct write: disks (cloud volumes especially) cap operations per second, so one 4 MiB write
/// stores what sixteen chunk-sized ones would.
const RUN_MAX: usize = 4 << 20;

/// The restored files a pack's chunks go to, opened on first use and kept open up to
/// [`MAX_OPEN_FILES`]: a pack of small files (catalogs) reaches hundreds of them, and a restore
/// inside the server (the pitr drill), whose process already holds PostgreSQL's own descriptors,
/// must never run out. Each file has a buffered descriptor and, where the file system takes
/// `O_DIRECT`, a direct one: they write disjoint pages (runs are page-aligned), so the page cache
/// never holds a stale copy. Bytes are gathered into a run until the next write does not continue
/// it; [`Writers::flush`] writes what is pending and must be called before the pack is done.
struct Writers<'a> {
    layout: &'a Layout,
    paths: &'a [String],
    open: HashMap<usize, (fs::File, Option<fs::File>)>,
    /// The run being gathered: file, offset, bytes (page-aligned memory).
    run: Option<(usize, u64)>,
    run_raw: Vec<u8>,
    run_start: usize,
    run_len: usize,
}

impl<'a> Writers<'a> {
    fn new(layout: &'a Layout, paths: &'a [String]) -> Self {
        let run_raw = vec![0u8; RUN_MAX + DIRECT_ALIGN];
        let run_start = run_raw.as_ptr().align_offset(DIRECT_ALIGN);
        Writers { layout, paths, open: HashMap::new(), run: None, run_raw, run_start, run_len: 0 }
    }

    fn write(&mut self, file_index: usize, data: &[u8], offset: u64) -> Result<()> {
        match self.reserve(file_index, offset, data.len())? {
            Some(slot) => {
                slot.copy_from_slice(data);
                self.commit(data.len());
                Ok(())
            }
            None => self.write_now(file_index, data, offset, false),
        }
    }

    /// Room for `len` bytes at `offset` of the file at the end of the run (flushing the run first
    /// when they do not continue it), or None when they cannot join a run (not whole pages):
    /// those are written at once. The bytes join the run only with [`Writers::commit`].
    fn reserve(&mut self, file_index: usize, offset: u64, len: usize) -> Result<Option<&mut [u8]>> {
        let whole_pages = len.is_multiple_of(DIRECT_ALIGN) && offset.is_multiple_of(DIRECT_ALIGN as u64);
        let continues = self.run.is_some_and(|(file, at)| file == file_index && at + self.run_len as u64 == offset);
        if !(whole_pages && continues && self.run_len + len <= RUN_MAX) {
            self.flush()?;
        }
        if !whole_pages || len > RUN_MAX {
            return Ok(None);
        }
        if self.run.is_none() {
            self.run = Some((file_index, offset));
        }
        let at = self.run_start + self.run_len;
        Ok(Some(&mut self.run_raw[at..at + len]))
    }

    /// Adds the `len` bytes last reserved to the run.
    fn commit(&mut self, len: usize) {
        self.run_len += len;
    }

    /// Writes the pending run, if any.
    fn flush(&mut self) -> Result<()> {
        let Some((file_index, offset)) = self.run.take() else { return Ok(()) };
        let len = std::mem::take(&mut self.run_len);
        let raw = std::mem::take(&mut self.run_raw);
        let result =
            self.write_now(file_index, &raw[self.run_start..self.run_start + len], offset, len >= DIRECT_WRITE_MIN);
        self.run_raw = raw;
        result
    }

    fn write_now(&mut self, file_index: usize, data: &[u8], offset: u64, direct_wanted: bool) -> Result<()> {
        let path = || self.layout.resolve(&self.paths[file_index]);
        if self.open.len() >= MAX_OPEN_FILES && !self.open.contains_key(&file_index) {
            self.open.clear();
        }
        let (buffered, direct) = match self.open.entry(file_index) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let at = path();
                let buffered = fs::OpenOptions::new().write(true).open(&at).map_err(|e| Error::io("open", &at, e))?;
                // Not every file system takes O_DIRECT (tmpfs): those get buffered writes only.
                let direct = {
                    use std::os::unix::fs::OpenOptionsExt;
                    fs::OpenOptions::new().write(true).custom_flags(libc::O_DIRECT).open(&at).ok()
                };
                v.insert((buffered, direct))
            }
        };
        let aligned = (data.as_ptr() as usize).is_multiple_of(DIRECT_ALIGN);
        if let (true, true, Some(file)) = (direct_wanted, aligned, direct.as_ref()) {
            match file.write_all_at(data, offset) {
                Ok(()) => return Ok(()),
                // A file system that opened with O_DIRECT but refuses this write: buffered from now on.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => *direct = None,
                Err(e) => return Err(Error::io("write", path(), e)),
            }
        }
        buffered.write_all_at(data, offset).map_err(|e| Error::io("write", path(), e))
    }
}

/// Threads flushing files at the end of a restore: the disk gets several writes in flight.
const SYNC_THREADS: usize = 4;

fn finish_files(layout: &Layout, manifest: &BackupManifest) -> Result<()> {
    let mut dirs = Vec::new();
    let mut files = Vec::new();
    for entry in &manifest.files {
        if layout.is_tablespace_link(&entry.path).is_some() {
            continue;
        }
        let path = layout.resolve(&entry.path);
        set_attributes(&path, entry)?;
        if entry.kind == FileKind::File {
            files.push(path);
        } else {
            dirs.push(path);
        }
    }
    let per_thread = files.len().div_ceil(SYNC_THREADS).max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = files
            .chunks(per_thread)
            .map(|part| {
                scope.spawn(move || {
                    for path in part {
                        fs::File::open(path).and_then(|f| f.sync_all()).map_err(|e| Error::io("fsync", path, e))?;
                    }
                    Ok::<(), Error>(())
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().unwrap_or_else(|_| Err(invalid("an fsync thread panicked".into()))))
    })?;
    let label = &manifest.backup_label;
    if !label.starts_with("START WAL LOCATION: ") {
        return Err(invalid(format!("backup {}'s backup_label does not look like one", manifest.id)));
    }
    let label_path = layout.target.join("backup_label");
    crate::store::file::write_file_atomically(&label_path, label.as_bytes())?;
    fs::set_permissions(&label_path, fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io("chmod", &label_path, e))?;
    let map_path = layout.target.join("tablespace_map");
    if layout.spaces.is_empty() {
        let _ = fs::remove_file(&map_path);
    } else {
        let mut spaces: Vec<_> = layout.spaces.iter().collect();
        spaces.sort();
        let map: String = spaces.iter().map(|(oid, location)| format!("{oid} {}\n", location.display())).collect();
        crate::store::file::write_file_atomically(&map_path, map.as_bytes())?;
        fs::set_permissions(&map_path, fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::io("chmod", &map_path, e))?;
    }
    dirs.push(layout.target.clone());
    for dir in dirs {
        fs::File::open(&dir).and_then(|d| d.sync_all()).map_err(|e| Error::io("fsync", &dir, e))?;
    }
    Ok(())
}

/// Modes are the owner's only (0700 directories, 0600 files): no setuid, setgid or sticky bit and
/// no access for others comes from a manifest, whatever it records.
fn set_attributes(path: &Path, entry: &FileEntry) -> Result<()> {
    let mode = match entry.kind {
        FileKind::Dir => 0o700,
        FileKind::File => 0o600,
    };
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| Error::io("chmod", path, e))?;
    if entry.kind == FileKind::File {
        let mtime = UNIX_EPOCH + Duration::new(entry.mtime_s.max(0) as u64, entry.mtime_ns);
        let file = fs::OpenOptions::new().write(true).open(path).map_err(|e| Error::io("open", path, e))?;
        file.set_times(fs::FileTimes::new().set_modified(mtime)).map_err(|e| Error::io("set times of", path, e))?;
    }
    Ok(())
}

/// The last step of a restore: puts the control file in place, after the caller wrote the recovery
/// settings. Until then PostgreSQL cannot start the directory.
pub fn publish_control_file(target: &Path) -> Result<()> {
    let pending = target.join(CONTROL_FILE_PENDING);
    let control = target.join(CONTROL_FILE);
    fs::File::open(&pending).and_then(|f| f.sync_all()).map_err(|e| Error::io("fsync", &pending, e))?;
    fs::rename(&pending, &control).map_err(|e| Error::io("rename", &pending, e))?;
    let global = target.join("global");
    fs::File::open(&global).and_then(|d| d.sync_all()).map_err(|e| Error::io("fsync", &global, e))
}

/// Where recovery stops.
#[derive(Debug, Clone, PartialEq)]
pub enum RecoveryTarget {
    /// Replay all archived WAL.
    Latest,
    /// Stop as soon as the backup is consistent.
    Immediate,
    Time(std::time::SystemTime),
    Lsn(super::Lsn),
    Xid(u64),
    Name(String),
}

impl RecoveryTarget {
    /// The postgresql.conf setting this target is, if any.
    pub fn setting(&self) -> Option<(&'static str, String)> {
        match self {
            RecoveryTarget::Latest => None,
            RecoveryTarget::Immediate => Some(("recovery_target", "immediate".into())),
            RecoveryTarget::Time(t) => Some(("recovery_target_time", super::format_utc(*t))),
            RecoveryTarget::Lsn(lsn) => Some(("recovery_target_lsn", lsn.to_string())),
            RecoveryTarget::Xid(xid) => Some(("recovery_target_xid", xid.to_string())),
            RecoveryTarget::Name(name) => Some(("recovery_target_name", name.clone())),
        }
    }
}

/// The backup to restore for `target`: `requested` if given (refused when it ends after the
/// target), else the newest usable backup that ends at or before the target. Only backups the
/// listing found whole are candidates.
pub fn choose_backup<'a>(
    backups: &'a [super::verify::BackupStatus],
    requested: Option<&super::BackupId>,
    target: &RecoveryTarget,
) -> Result<&'a BackupManifest> {
    let ends_before = |m: &BackupManifest| match target {
        RecoveryTarget::Time(t) => m.stop_time <= super::unix_seconds(*t),
        RecoveryTarget::Lsn(lsn) => m.stop_lsn <= *lsn,
        _ => true,
    };
    let describe_target = || match target.setting() {
        Some((_, value)) => value,
        None => "the end of the archive".into(),
    };
    if let Some(id) = requested {
        let status = backups.iter().find(|b| &b.id == id).ok_or_else(|| {
            invalid(format!("backup {id} is not in the repository (backstop backups list shows what is)"))
        })?;
        let manifest = status.manifest.as_ref().filter(|_| status.verified()).ok_or_else(|| {
            invalid(format!("backup {id} cannot be restored: {}", status.problem.clone().unwrap_or_default()))
        })?;
        if !ends_before(manifest) {
            return Err(invalid(format!(
                "backup {id} ends at {} (LSN {}), after the recovery target {}: a backup can only be recovered forward from its end; pick an older backup",
                super::format_utc(super::from_unix_seconds(manifest.stop_time)),
                manifest.stop_lsn,
                describe_target()
            )));
        }
        return Ok(manifest);
    }
    let usable: Vec<&BackupManifest> =
        backups.iter().filter(|b| b.verified()).filter_map(|b| b.manifest.as_ref()).collect();
    if usable.is_empty() {
        let why = match backups.last() {
            Some(newest) => format!(
                "; the newest, {}, cannot be used: {}",
                newest.id,
                newest.problem.as_deref().unwrap_or("it is not complete")
            ),
            None => String::new(),
        };
        return Err(invalid(format!("the repository holds no complete backup to restore{why}")));
    }
    usable.iter().rev().find(|m| ends_before(m)).copied().ok_or_else(|| {
        let oldest = usable[0];
        invalid(format!(
            "no backup ends before the recovery target {}: the oldest, {}, ends at {} (LSN {}); a backup can only be recovered forward from its end",
            describe_target(),
            oldest.id,
            super::format_utc(super::from_unix_seconds(oldest.stop_time)),
            oldest.stop_lsn
        ))
    })
}

/// Removes recovery settings left in postgresql.auto.conf by an earlier restore (two targets at
/// once stop PostgreSQL from starting) and every setting about to be written, then appends
/// `settings`.
pub fn write_recovery_settings(target: &Path, header: &str, settings: &[(&str, String)]) -> Result<()> {
    const OWNED: &[&str] = &[
        "restore_command",
        "recovery_target",
        "recovery_target_time",
        "recovery_target_lsn",
        "recovery_target_xid",
        "recovery_target_name",
        "recovery_target_inclusive",
        "recovery_target_action",
        "recovery_target_timeline",
        "primary_conninfo",
        // Commands recovery would run, set for another cluster's recovery: never carried over.
        "recovery_end_command",
        "archive_cleanup_command",
    ];
    let path = target.join("postgresql.auto.conf");
    let existing = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(Error::io("read", &path, e)),
    };
    let mut out = String::new();
    for line in existing.lines() {
        // Indented or not: PostgreSQL reads both.
        let key = line.trim_start().split(['=', ' ', '\t']).next().unwrap_or("").trim().to_ascii_lowercase();
        let written = settings.iter().any(|(name, _)| name.eq_ignore_ascii_case(&key));
        if OWNED.contains(&key.as_str()) || written || line.starts_with("# backstop restore") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(&format!("# backstop restore: {header}\n"));
    for (key, value) in settings {
        out.push_str(&format!("{key} = '{}'\n", value.replace('\'', "''")));
    }
    crate::store::file::write_file_atomically(&path, out.as_bytes())?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).map_err(|e| Error::io("chmod", &path, e))
}

/// The end of every restore for recovery, the CLI's and the PITR drill's: the recovery settings
/// (built by the caller, never taken from the repository), the signal file, and only then
/// `pg_control`, so a restore that failed before this point cannot be started.
pub fn prepare_recovery(
    target: &Path,
    manifest: &super::BackupManifest,
    settings: &[(&str, String)],
    standby: bool,
) -> Result<()> {
    let header = format!("backup {} restored {}", manifest.id, super::format_utc(std::time::SystemTime::now()));
    write_recovery_settings(target, &header, settings)?;
    write_signal(target, if standby { "standby.signal" } else { "recovery.signal" })?;
    publish_control_file(target)
}

/// Creates an empty signal file (recovery.signal or standby.signal), durably.
pub fn write_signal(target: &Path, name: &str) -> Result<()> {
    crate::store::file::write_file_atomically(&target.join(name), b"")
}

/// Where PostgreSQL's server programs usually are, for a restore not told (`--pg-bin`): the
/// Debian/Ubuntu directory of `major`, then the one `pg_config` on the PATH names.
pub fn usual_binaries(major: u32) -> Vec<PathBuf> {
    let mut dirs = vec![PathBuf::from(format!("/usr/lib/postgresql/{major}/bin"))];
    if let Ok(output) = std::process::Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        if output.status.success() && !dir.as_os_str().is_empty() && !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    dirs.retain(|dir| dir.join("postgres").is_file());
    dirs
}

/// For a restore not told which programs will start it: the first of `dirs` whose `postgres` is of
/// the backup's major version (`Ok`), or, when there are programs but none of that major, what
/// they are (`Err`, for a warning: the directory may be started elsewhere, so it is not refused).
/// `Ok(None)` when no programs were found at all.
pub fn binaries_for(dirs: &[PathBuf], pg_version_num: u32) -> std::result::Result<Option<PathBuf>, Error> {
    let mut refused = None;
    for dir in dirs {
        match check_binaries(dir, pg_version_num) {
            Ok(_) => return Ok(Some(dir.clone())),
            Err(e) => refused = refused.or(Some(e)),
        }
    }
    refused.map_or(Ok(None), Err)
}

/// Checks that the PostgreSQL programs in `bin_dir` are of the major version that took the
/// backup (`pg_version_num`): a data directory starts only under its own major, and a restore
/// that cannot start is found out here, before anything is written. Returns the version line.
pub fn check_binaries(bin_dir: &std::path::Path, pg_version_num: u32) -> Result<String> {
    let needed = pg_version_num / 10000;
    let postgres = bin_dir.join("postgres");
    let output = std::process::Command::new(&postgres).arg("--version").output().map_err(|e| Error::Job {
        message: format!("could not run {}: {e}", postgres.display()),
        hint: format!("Give --pg-bin the directory of PostgreSQL {needed}'s server programs (e.g. /usr/lib/postgresql/{needed}/bin)."),
    })?;
    let version = String::from_utf8_lossy(&output.stdout).trim().to_string();
    match crate::pg_version::version_major(&version) {
        Some(found) if found == needed || needed == 0 => Ok(version),
        found => Err(Error::Job {
            message: format!(
                "the backup was taken by PostgreSQL {needed} and {} is {}: a data directory starts only under its own major version",
                postgres.display(),
                found.map(|f| f.to_string()).unwrap_or_else(|| format!("unknown (\"{version}\")"))
            ),
            hint: format!(
                "Restore with PostgreSQL {needed}'s programs (--pg-bin /usr/lib/postgresql/{needed}/bin); to move to a newer major, restore with {needed}, then pg_upgrade."
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backups::manifest::tests::sample;
    use crate::backups::verify::BackupStatus;
    use crate::backups::{BackupId, Lsn};

    fn backup(id: &str, stop_time: f64, stop_lsn: u64) -> BackupStatus {
        let mut m = sample();
        m.id = BackupId::parse(id).unwrap();
        m.stop_time = stop_time;
        m.stop_lsn = Lsn(stop_lsn);
        m.start_lsn = Lsn(stop_lsn - 1);
        BackupStatus { id: m.id.clone(), manifest: Some(m), state: "verified".into(), problem: None }
    }

    #[test]
    fn the_newest_backup_that_ends_before_the_target_is_chosen() {
        let backups = vec![backup("20261122T010000Z-F", 1000.0, 0x100), backup("20261122T020000Z-I", 2000.0, 0x200)];
        let at = |s: f64| RecoveryTarget::Time(crate::backups::from_unix_seconds(s));
        assert_eq!(choose_backup(&backups, None, &at(2500.0)).unwrap().stop_time, 2000.0);
        assert_eq!(choose_backup(&backups, None, &at(1500.0)).unwrap().stop_time, 1000.0);
        assert_eq!(choose_backup(&backups, None, &RecoveryTarget::Lsn(Lsn(0x150))).unwrap().stop_lsn, Lsn(0x100));
        assert_eq!(choose_backup(&backups, None, &RecoveryTarget::Latest).unwrap().stop_lsn, Lsn(0x200));
        let early = choose_backup(&backups, None, &at(500.0)).unwrap_err().to_string();
        assert!(early.contains("no backup ends before") && early.contains("20261122T010000Z-F"), "{early}");
        // An explicit backup that ends after the target is refused with the reason.
        let id = BackupId::parse("20261122T020000Z-I").unwrap();
        let late = choose_backup(&backups, Some(&id), &at(1500.0)).unwrap_err().to_string();
        assert!(late.contains("after the recovery target"), "{late}");
        // An incomplete backup is never a candidate.
        let mut damaged = backups.clone();
        damaged[1].problem = Some("1 of its 2 packs are missing".into());
        assert_eq!(choose_backup(&damaged, None, &at(2500.0)).unwrap().stop_time, 1000.0);
        let refused = choose_backup(&damaged, Some(&id), &at(2500.0)).unwrap_err().to_string();
        assert!(refused.contains("packs are missing"), "{refused}");
    }

    #[test]
    fn recovery_settings_replace_those_of_an_earlier_restore() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("postgresql.auto.conf"),
            "work_mem = '64MB'\n# backstop restore: backup X\nrestore_command = 'old'\nrecovery_target_time = '2020-01-01'\n  \trecovery_end_command = 'touch /tmp/x'\n   archive_mode = on\n",
        )
        .unwrap();
        write_recovery_settings(
            dir.path(),
            "backup Y",
            &[
                ("restore_command", "backstop wal fetch '%f' \"%p\"".into()),
                ("recovery_target_lsn", "0/3000000".into()),
                ("archive_mode", "off".into()),
            ],
        )
        .unwrap();
        let text = fs::read_to_string(dir.path().join("postgresql.auto.conf")).unwrap();
        // Indented settings are settings too: the restore's own replace them.
        assert!(!text.contains("archive_mode = on") && text.contains("archive_mode = 'off'"), "{text}");
        assert!(!text.contains("recovery_end_command"), "{text}");
        assert!(text.contains("work_mem = '64MB'"), "{text}");
        assert!(
            !text.contains("recovery_target_time") && !text.contains("'old'") && !text.contains("backup X"),
            "{text}"
        );
        assert!(text.contains("restore_command = 'backstop wal fetch ''%f'' \"%p\"'"), "{text}");
        assert!(text.contains("recovery_target_lsn = '0/3000000'"), "{text}");
    }
}

#[cfg(test)]
mod binaries_tests {
    use super::*;

    fn fake_postgres(version: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let program = dir.path().join("postgres");
        fs::write(&program, format!("#!/bin/sh\necho 'postgres (PostgreSQL) {version}'\n")).unwrap();
        fs::set_permissions(&program, fs::Permissions::from_mode(0o755)).unwrap();
        dir
    }

    #[test]
    fn a_restore_not_told_its_programs_finds_those_of_its_major_or_says_which_it_found() {
        let (fifteen, seventeen) = (fake_postgres("15.19"), fake_postgres("17.11"));
        let both = [fifteen.path().to_path_buf(), seventeen.path().to_path_buf()];
        assert_eq!(binaries_for(&both, 170002).unwrap(), Some(seventeen.path().to_path_buf()));
        let other = binaries_for(&both[..1], 170002).unwrap_err();
        assert!(other.to_string().contains("PostgreSQL 17") && other.to_string().contains("is 15"), "{other}");
        assert!(other.hint().contains("pg_upgrade"), "{}", other.hint());
        assert_eq!(binaries_for(&[], 170002).unwrap(), None);
    }

    #[test]
    fn a_backup_is_restored_only_for_the_programs_of_its_major() {
        let seventeen = fake_postgres("17.11");
        let error = check_binaries(seventeen.path(), 150004).unwrap_err();
        assert!(error.to_string().contains("PostgreSQL 15") && error.to_string().contains("is 17"), "{error}");
        assert!(error.hint().contains("/usr/lib/postgresql/15/bin") && error.hint().contains("pg_upgrade"));
        assert_eq!(check_binaries(seventeen.path(), 170002).unwrap(), "postgres (PostgreSQL) 17.11");
        let missing = check_binaries(Path::new("/nonexistent"), 150004).unwrap_err();
        assert!(missing.hint().contains("--pg-bin"), "{}", missing.hint());
    }
}

#[cfg(test)]
mod writers_tests {
    use super::*;

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    /// Whatever mix of runs, parts, unaligned tails and files the writes come in, each file ends
    /// up holding exactly the bytes written to it (on this machine's file system the long runs
    /// go through O_DIRECT; where it is refused, through the buffered path).
    #[test]
    fn gathered_runs_parts_and_tails_land_where_they_were_written() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout { target: dir.path().to_path_buf(), spaces: HashMap::new() };
        let paths = vec!["a".to_string(), "b".to_string()];
        let sizes = [RUN_MAX as u64 + (3 << 20) + 1000, 40_000];
        let mut expected = [vec![0u8; sizes[0] as usize], vec![0u8; sizes[1] as usize]];
        for (path, size) in paths.iter().zip(sizes) {
            fs::File::create(dir.path().join(path)).unwrap().set_len(size).unwrap();
        }
        let chunk = crate::backups::CHUNK_SIZE;
        let mut raw = vec![0u8; RUN_MAX + DIRECT_ALIGN];
        let start = raw.as_ptr().align_offset(DIRECT_ALIGN);
        let mut writes: Vec<(usize, u64, Vec<u8>)> = Vec::new();
        // Whole chunks in order past RUN_MAX (two runs), a block-sized part, a gap, then b's
        // unaligned bytes in between, then a's unaligned tail.
        let mut at = 0u64;
        for n in 0..(RUN_MAX / chunk + 4) {
            writes.push((0, at, pattern(chunk, n as u8)));
            at += chunk as u64;
        }
        writes.push((0, at + 8192, pattern(8192, 200)));
        writes.push((1, 0, pattern(8192, 201)));
        writes.push((1, 8192, pattern(40_000 - 8192, 202)));
        let tail = sizes[0] - (at + 16384);
        writes.push((0, at + 16384, pattern(tail as usize, 203)));
        let mut writers = Writers::new(&layout, &paths);
        for (file, offset, data) in &writes {
            // A page-aligned source, though write() copies into the run whatever its alignment.
            raw[start..start + data.len()].copy_from_slice(data);
            writers.write(*file, &raw[start..start + data.len()], *offset).unwrap();
            expected[*file][*offset as usize..*offset as usize + data.len()].copy_from_slice(data);
        }
        writers.flush().unwrap();
        drop(writers);
        for (file, path) in paths.iter().enumerate() {
            assert!(fs::read(dir.path().join(path)).unwrap() == expected[file], "{path} differs");
        }
    }

    #[test]
    fn packs_restored_side_by_side_write_different_files() {
        let plan = |file: usize| -> PackPlan { vec![(0, 1, String::new(), vec![(file, 0, 0, 1)])] };
        let needed: std::collections::BTreeMap<u32, PackPlan> =
            [(0, plan(7)), (1, plan(7)), (2, plan(7)), (3, plan(8)), (4, plan(8)), (5, plan(9))].into_iter().collect();
        let order: Vec<u32> = interleave_by_file(needed).into_iter().map(|(pack, _)| pack).collect();
        assert_eq!(order, vec![0, 3, 5, 1, 4, 2]);
    }
}

#[cfg(test)]
mod sparse_tests {
    use super::sparse_database;

    #[test]
    fn only_relation_files_of_a_database_directory_can_be_sparse() {
        assert_eq!(sparse_database("base/16385/16386"), Some(16385));
        assert_eq!(sparse_database("base/16385/16386.12"), Some(16385));
        assert_eq!(sparse_database("base/16385/16386_vm"), Some(16385));
        assert_eq!(sparse_database("pg_tblspc/16400/PG_15_202209061/16385/16401_fsm"), Some(16385));
        // Read at startup and connection: always whole.
        assert_eq!(sparse_database("base/16385/PG_VERSION"), None);
        assert_eq!(sparse_database("base/16385/pg_filenode.map"), None);
        assert_eq!(sparse_database("base/16385/pg_internal.init"), None);
        assert_eq!(sparse_database("global/1262"), None);
        assert_eq!(sparse_database("pg_xact/0000"), None);
        assert_eq!(sparse_database("base/pgsql_tmp/x"), None);
    }
}
