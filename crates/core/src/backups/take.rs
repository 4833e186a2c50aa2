//! Taking a base backup: walk the data directory and tablespaces, split files into chunks, store
//! the chunks no earlier backup holds in packs, and describe every file. PostgreSQL's side (start,
//! stop, waiting for WAL) is the caller's; this is the per-file work.
//!
//! What is skipped follows PostgreSQL's documentation for low-level backups and `basebackup.c`:
//! the contents of pg_wal, pg_replslot, pg_dynshmem, pg_notify, pg_serial, pg_snapshots,
//! pg_stat_tmp and pg_subtrans (the directories themselves are kept); postmaster.pid/.opts,
//! backup_label, tablespace_map, backup_manifest, recovery/standby signals, pg_internal.init,
//! backstop's signing key (and a half-written one),
//! pgsql_tmp files and directories, temporary relations (`t<backend>_<node>`), and every fork of
//! an unlogged relation except its init fork.
//!
//! Unchanged files: in an incremental backup a file whose size, mtime and inode equal what the
//! previous backup recorded reuses that chunk list without being read, when (a) its mtime was at
//! least [`MTIME_MARGIN`] older than the moment the previous backup read it (a write in the same
//! clock tick as the read could otherwise leave the mtime unchanged), and (b) its bytes were read
//! less than `reread_after` ago (default 7 days): the periodic full read that catches a file
//! changed behind an unchanged mtime.
//!
//! Changed blocks (PostgreSQL 17+, `summarize_wal = on`): a relation file whose mtime changed is
//! not read whole when the WAL summaries since the previous backup's start say which of its blocks
//! changed: its other chunks reuse the previous record's, when that record is of the same file
//! (inode) and was read less than `reread_after` ago (see `summaries`).
//!
//! Earlier packs: an incremental references a pack of the previous backup only when its signed
//! trailer is there with the recorded length and, when the pack was last read back more than
//! `reread_after` ago (its `verified_at`), after it was read again through every checksum; a pack
//! damaged in place is then left out and its chunks are read from the data directory and stored
//! anew. So a pack in use is re-read at least once per re-read period, as files are.
//!
//! Memory is bounded by the pipeline: one pack being filled, `parallel` packs uploading and one
//! queued, whatever the size of a file or of the cluster.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::manifest::{BackupStats, ChunkRef, FileEntry, FileKind, PackRef, Tablespace};
use super::page_checksum::BLOCK_SIZE;
use super::summaries::{ChangedBlocks, BLOCKS_PER_CHUNK};
use super::{unix_seconds, BackupManifest, CHUNK_SIZE, PACK_TARGET};
use crate::error::{Error, Result};
use crate::layout;
use crate::repository::Repository;
use crate::store::WriteMode;

/// See the module documentation.
pub const MTIME_MARGIN: Duration = Duration::from_secs(2);
pub const DEFAULT_REREAD_AFTER: Duration = Duration::from_secs(7 * 86_400);
/// The key the extension signs snapshot manifests with: stored only in encrypted backups.
pub const MANIFEST_KEY_FILE: &str = "backstop_manifest.key";

const EXCLUDED_CONTENTS: &[&str] = &[
    "pg_wal",
    "pg_xlog",
    "pg_dynshmem",
    "pg_notify",
    "pg_replslot",
    "pg_serial",
    "pg_snapshots",
    "pg_stat_tmp",
    "pg_subtrans",
];
const EXCLUDED_FILES: &[&str] = &[
    "postmaster.pid",
    "postmaster.opts",
    "backup_label",
    "backup_label.old",
    "tablespace_map",
    "backup_manifest",
    "postgresql.auto.conf.tmp",
    "current_logfiles.tmp",
    "recovery.signal",
    "standby.signal",
    "recovery.conf",
];

pub struct TakeOptions {
    pub data_dir: PathBuf,
    /// Full reads every file; incremental reuses unchanged files of `previous`.
    pub kind: super::BackupKind,
    pub previous: Option<BackupManifest>,
    pub reread_after: Duration,
    /// Only when the repository encrypts: the key must never be stored readable.
    pub include_manifest_key: bool,
    /// Packs uploading at once.
    pub parallel: usize,
    /// Verify page checksums of the relation files read (the cluster has data checksums on).
    pub page_checks: Option<PageChecks>,
    /// Incremental only: the blocks changed since `previous` started, from PostgreSQL 17's WAL
    /// summaries. A changed relation file then reads only the chunks holding changed blocks.
    pub changed: Option<super::summaries::ChangedBlocks>,
}

/// What checking a page's checksum needs to know about the cluster and the backup.
#[derive(Debug, Clone, Copy)]
pub struct PageChecks {
    /// pg_backup_start's LSN: pages written since are skipped (WAL replay rewrites them).
    pub start_lsn: u64,
    /// Blocks per relation segment file (`segment_size`, 131072 by default).
    pub blocks_per_segment: u32,
}

/// Damaged pages named in the manifest and the job's warning, at most.
const DAMAGED_PAGES_NAMED: usize = 100;

/// Live counters, read by whoever reports progress while the backup runs.
#[derive(Debug, Default)]
pub struct Progress {
    pub files_total: AtomicU64,
    pub bytes_total: AtomicU64,
    pub files_done: AtomicU64,
    /// Bytes of files done, read or reused.
    pub bytes_done: AtomicU64,
    pub bytes_read: AtomicU64,
    pub bytes_new: AtomicU64,
    pub bytes_stored: AtomicU64,
    pub packs_new: AtomicU64,
}

impl Progress {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// What the file copy produced: everything of the manifest that is not PostgreSQL's.
#[derive(Debug)]
pub struct Taken {
    pub files: Vec<FileEntry>,
    pub packs: Vec<PackRef>,
    pub tablespaces: Vec<Tablespace>,
    pub stats: BackupStats,
}

/// One directory entry found by the walk.
struct Found {
    path: String,
    abs: PathBuf,
    kind: FileKind,
    meta: fs::Metadata,
}

fn skip_file(name: &str) -> bool {
    EXCLUDED_FILES.contains(&name) || name.starts_with("pg_internal.init") || name.starts_with("pgsql_tmp")
}

/// `t<digits>_<digits>` with an optional fork or segment suffix: a temporary relation.
fn is_temp_relation(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('t') else { return false };
    let Some((backend, node)) = rest.split_once('_') else { return false };
    let node = node.split(['.', '_']).next().unwrap_or("");
    !backend.is_empty()
        && backend.bytes().all(|b| b.is_ascii_digit())
        && !node.is_empty()
        && node.bytes().all(|b| b.is_ascii_digit())
}

/// The relfilenode a relation file belongs to, and whether it is the init fork.
fn relation_of(name: &str) -> Option<(&str, bool)> {
    let base = name.split('.').next()?;
    let (node, fork) = match base.split_once('_') {
        Some((node, fork)) => (node, Some(fork)),
        None => (base, None),
    };
    (!node.is_empty() && node.bytes().all(|b| b.is_ascii_digit())).then_some((node, fork == Some("init")))
}

/// Database directories hold relation files: base/<oid> and pg_tblspc/<oid>/<version>/<oid>.
fn is_database_dir(path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    matches!(parts.as_slice(), ["base", db] if numeric(db))
        || matches!(parts.as_slice(), ["pg_tblspc", ts, _, db] if numeric(ts) && numeric(db))
}

fn walk(options: &TakeOptions, tablespaces: &mut Vec<Tablespace>) -> Result<Vec<Found>> {
    let mut found = Vec::new();
    walk_dir(options, &options.data_dir, "", tablespaces, &mut found)?;
    found.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(found)
}

fn walk_dir(
    options: &TakeOptions,
    abs: &Path,
    rel: &str,
    tablespaces: &mut Vec<Tablespace>,
    found: &mut Vec<Found>,
) -> Result<()> {
    let entries = match fs::read_dir(abs) {
        Ok(entries) => entries,
        // A directory removed while we walk (a dropped database): PostgreSQL replays that.
        Err(e) if e.kind() == io::ErrorKind::NotFound && !rel.is_empty() => return Ok(()),
        Err(e) => return Err(Error::io("list", abs, e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list", abs, e))?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            return Err(Error::InvalidInput(format!(
                "{} holds a file whose name is not UTF-8; backstop cannot record it",
                abs.display()
            )));
        };
        names.push(name);
    }
    names.sort();
    let in_database = is_database_dir(rel);
    let unlogged: std::collections::HashSet<String> = if in_database {
        names
            .iter()
            .filter_map(|n| relation_of(n).filter(|(_, init)| *init).map(|(node, _)| node.to_string()))
            .collect()
    } else {
        Default::default()
    };
    for name in names {
        let path = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
        let child = abs.join(&name);
        if rel.is_empty() && name == MANIFEST_KEY_FILE && !options.include_manifest_key {
            continue;
        }
        // The signing key never leaves the data directory, encrypted or not: whoever holds a
        // backup could otherwise sign objects the cluster would trust. A restored cluster makes
        // its own and trusts this one's public key.
        if rel.is_empty() && crate::auth::is_signing_key_file(&name) {
            continue;
        }
        if skip_file(&name) {
            continue;
        }
        if in_database {
            if is_temp_relation(&name) {
                continue;
            }
            if let Some((node, init)) = relation_of(&name) {
                if !init && unlogged.contains(node) {
                    continue;
                }
            }
        }
        let link = match fs::symlink_metadata(&child) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("stat", &child, e)),
        };
        if rel == "pg_tblspc" && link.file_type().is_symlink() {
            let oid: u32 = name.parse().map_err(|_| {
                Error::InvalidInput(format!("{} is a symlink in pg_tblspc whose name is not an OID", child.display()))
            })?;
            let target = fs::read_link(&child).map_err(|e| Error::io("read link", &child, e))?;
            let location = target.to_str().filter(|t| t.starts_with('/')).ok_or_else(|| {
                Error::InvalidInput(format!(
                    "tablespace link {} does not point to an absolute UTF-8 path",
                    child.display()
                ))
            })?;
            tablespaces.push(Tablespace { oid, location: location.to_string() });
        }
        // Follow links (pg_wal elsewhere, tablespaces): what matters is what they hold.
        let meta = match fs::metadata(&child) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("stat", &child, e)),
        };
        if meta.is_dir() {
            found.push(Found { path: path.clone(), abs: child.clone(), kind: FileKind::Dir, meta });
            let excluded =
                (rel.is_empty() && EXCLUDED_CONTENTS.contains(&name.as_str())) || name.starts_with("pgsql_tmp");
            if !excluded {
                walk_dir(options, &child, &path, tablespaces, found)?;
            } else if name == "pg_wal" {
                // PostgreSQL recreates it, but an empty archive_status is what a restore expects.
                if let Ok(meta) = fs::metadata(child.join("archive_status")) {
                    found.push(Found {
                        path: format!("{path}/archive_status"),
                        abs: child.join("archive_status"),
                        kind: FileKind::Dir,
                        meta,
                    });
                }
            }
        } else if meta.is_file() {
            found.push(Found { path, abs: child, kind: FileKind::File, meta });
        }
    }
    Ok(())
}

fn mtime(meta: &fs::Metadata) -> (i64, u32) {
    (meta.mtime(), meta.mtime_nsec().clamp(0, 999_999_999) as u32)
}

/// May `previous`'s record of a file stand for the file as it is now, without reading it?
fn reusable(previous: &FileEntry, meta: &fs::Metadata, now: SystemTime, reread_after: Duration) -> bool {
    let (mtime_s, mtime_ns) = mtime(meta);
    let mtime_secs = mtime_s as f64 + mtime_ns as f64 / 1e9;
    previous.kind == FileKind::File
        && previous.size == meta.len()
        && previous.mtime_s == mtime_s
        && previous.mtime_ns == mtime_ns
        && previous.inode == meta.ino()
        && mtime_secs + MTIME_MARGIN.as_secs_f64() <= previous.read_at
        && unix_seconds(now) - previous.read_at < reread_after.as_secs_f64()
}

/// A pack being filled; its index in the backup's pack table is fixed when it is started.
struct OpenPack {
    index: u32,
    bytes: Vec<u8>,
    /// The SHA-256 of each chunk in it, in order: the pack's id is the SHA-256 of these, so it is
    /// named by its content without hashing its bytes a second time.
    hashes: Vec<u8>,
}

struct SealedPack {
    index: u32,
    id: String,
    bytes: Vec<u8>,
}

/// Chunk table: SHA-256 -> (pack index in this backup's table, offset, length).
type ChunkIndex = HashMap<[u8; 32], (u32, u64, u32)>;

struct Packer {
    packs: Vec<Option<PackRef>>,
    /// Previous backup's pack index -> index here, for packs this backup reuses.
    adopted: HashMap<u32, u32>,
    previous_packs: Vec<PackRef>,
    known: ChunkIndex,
    previous_known: ChunkIndex,
    open: Option<OpenPack>,
    /// Mixed into every new pack's id: a pack this backup writes never shares its name with an
    /// older one (which may be damaged, and would then make the upload fail as a conflict).
    salt: [u8; 16],
    /// The repository encrypts what this backup writes.
    encrypts: bool,
}

impl Packer {
    /// `previous`'s chunks may be referenced, except those in the packs `damaged` lists.
    fn new(previous: Option<&BackupManifest>, damaged: &HashSet<u32>, encrypts: bool) -> Self {
        let mut previous_known = ChunkIndex::new();
        if let Some(previous) = previous {
            for file in &previous.files {
                for chunk in file.chunks.iter().filter(|c| !damaged.contains(&c.pack)) {
                    if let Ok(hash) = hex::decode(&chunk.sha256) {
                        if let Ok(hash) = <[u8; 32]>::try_from(hash.as_slice()) {
                            previous_known.insert(hash, (chunk.pack, chunk.offset, chunk.len));
                        }
                    }
                }
            }
        }
        Packer {
            packs: Vec::new(),
            adopted: HashMap::new(),
            previous_packs: previous.map(|p| p.packs.clone()).unwrap_or_default(),
            known: ChunkIndex::new(),
            previous_known,
            open: None,
            salt: rand::random(),
            encrypts,
        }
    }

    fn adopt(&mut self, previous_index: u32) -> u32 {
        if let Some(&index) = self.adopted.get(&previous_index) {
            return index;
        }
        let index = self.packs.len() as u32;
        self.packs.push(Some(self.previous_packs[previous_index as usize].clone()));
        self.adopted.insert(previous_index, index);
        index
    }

    /// References a chunk of the previous backup's record of `path` without reading it.
    fn reuse(&mut self, chunk: &ChunkRef, path: &str) -> Result<ChunkRef> {
        let hash: [u8; 32] = hex::decode(&chunk.sha256)
            .ok()
            .and_then(|h| h.try_into().ok())
            .ok_or_else(|| Error::InvalidInput(format!("the previous backup's record of {path} is damaged")))?;
        let (pack, offset, len) = match self.known.get(&hash) {
            Some(&known) => known,
            None => {
                let known = (self.adopt(chunk.pack), chunk.offset, chunk.len);
                self.known.insert(hash, known);
                known
            }
        };
        Ok(ChunkRef { sha256: chunk.sha256.clone(), pack, offset, len, range: chunk.range })
    }

    /// Places a chunk: an existing copy if any backup here or before holds it, else the open pack.
    /// Returns the reference and whether the bytes are new.
    fn place(&mut self, hash: [u8; 32], data: &[u8]) -> (ChunkRef, bool) {
        let sha256 = hex::encode(hash);
        if let Some(&(pack, offset, len)) = self.known.get(&hash) {
            return (ChunkRef { sha256, pack, offset, len, range: None }, false);
        }
        if let Some(&(previous_pack, offset, len)) = self.previous_known.get(&hash) {
            let pack = self.adopt(previous_pack);
            self.known.insert(hash, (pack, offset, len));
            return (ChunkRef { sha256, pack, offset, len, range: None }, false);
        }
        if self.open.is_none() {
            let index = self.packs.len() as u32;
            self.packs.push(None);
            self.open =
                Some(OpenPack { index, bytes: Vec::with_capacity(PACK_TARGET + CHUNK_SIZE), hashes: Vec::new() });
        }
        let open = self.open.as_mut().expect("opened above");
        let offset = open.bytes.len() as u64;
        open.bytes.extend_from_slice(data);
        open.hashes.extend_from_slice(&hash);
        let reference = (open.index, offset, data.len() as u32);
        self.known.insert(hash, reference);
        (ChunkRef { sha256, pack: reference.0, offset, len: reference.2, range: None }, true)
    }

    /// The open pack, sealed, once it is full (or at the end, whatever its size).
    fn take_full(&mut self, force: bool) -> Option<SealedPack> {
        let full = self.open.as_ref().is_some_and(|p| p.bytes.len() >= PACK_TARGET || (force && !p.bytes.is_empty()));
        if !full {
            return None;
        }
        let open = self.open.take().expect("checked");
        let id = hex::encode(Sha256::new().chain_update(self.salt).chain_update(&open.hashes).finalize());
        let verified_at = unix_seconds(SystemTime::now()) as u64;
        let (len, encrypted) = (open.bytes.len() as u64, Some(self.encrypts));
        self.packs[open.index as usize] = Some(PackRef { id: id.clone(), len, verified_at, encrypted });
        Some(SealedPack { index: open.index, id, bytes: open.bytes })
    }
}

/// Reads every file and stores what is new. Runs the reading on a blocking thread of `handle`'s
/// runtime and the uploads on the runtime; `cancel` stops both (nothing is published: the
/// manifest is the caller's to write).
pub async fn copy_files(
    repository: &Repository,
    options: TakeOptions,
    progress: Arc<Progress>,
    cancel: &CancellationToken,
) -> Result<Taken> {
    let mut options = options;
    let parallel = options.parallel.max(1);
    let now = unix_seconds(SystemTime::now()) as u64;
    let (damaged, rechecked, encryption) = match (&options.previous, options.kind) {
        (Some(previous), super::BackupKind::Incremental) => {
            unusable_packs(repository, previous, now, options.reread_after).await?
        }
        _ => (HashSet::new(), Vec::new(), Vec::new()),
    };
    if let Some(previous) = options.previous.as_mut() {
        for &index in &rechecked {
            previous.packs[index as usize].verified_at = now;
        }
        // What each earlier pack's authenticated header says (manifests before 0.3.0 did not record it).
        for &(index, encrypted) in &encryption {
            previous.packs[index as usize].encrypted = Some(encrypted);
        }
    }
    let (packs_rechecked, packs_unusable) = (rechecked.len() as u64, damaged.len() as u64);
    let (sender, receiver) = mpsc::channel::<SealedPack>(1);
    let reader_cancel = cancel.child_token();
    let reader_progress = progress.clone();
    let reader = tokio::task::spawn_blocking({
        let reader_cancel = reader_cancel.clone();
        let encrypts = repository.encrypts();
        move || read_all(options, &damaged, encrypts, reader_progress, sender, &reader_cancel)
    });
    let uploads = mpsc_stream(receiver)
        .map(|pack| {
            let progress = progress.clone();
            async move {
                let stored =
                    repository.put_bytes(&layout::pack(&pack.id)?, pack.bytes.into(), WriteMode::CreateNew).await?;
                progress.bytes_stored.fetch_add(stored.trailer().object_len(), Ordering::Relaxed);
                progress.packs_new.fetch_add(1, Ordering::Relaxed);
                Ok::<u32, Error>(pack.index)
            }
        })
        .buffer_unordered(parallel);
    // Boxed so that dropping it drops the receiver: a reader blocked on a full channel wakes up.
    let mut uploads = Box::pin(uploads);
    let mut upload_error = None;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => {
                reader_cancel.cancel();
                upload_error.get_or_insert(Error::Cancelled);
                break;
            }
            next = uploads.next() => match next {
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    reader_cancel.cancel();
                    upload_error = Some(e);
                    break;
                }
                None => break,
            }
        }
    }
    drop(uploads);
    let read = reader.await.map_err(|e| Error::InvalidInput(format!("the backup's reader thread failed: {e}")))?;
    if let Some(error) = upload_error {
        return Err(error);
    }
    let (files, packs, tablespaces, mut stats) = read?;
    stats.bytes_stored = Progress::get(&progress.bytes_stored);
    stats.packs_new = Progress::get(&progress.packs_new);
    stats.requests = stats.packs_new;
    stats.packs_rechecked = packs_rechecked;
    stats.packs_unusable = packs_unusable;
    Ok(Taken { files, packs, tablespaces, stats })
}

fn mpsc_stream<T: Send + 'static>(mut receiver: mpsc::Receiver<T>) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| receiver.poll_recv(cx))
}

type ReadResult = (Vec<FileEntry>, Vec<PackRef>, Vec<Tablespace>, BackupStats);

/// The previous backup's packs an incremental must not reference: recorded damaged by verify,
/// missing, not authenticated, not
/// the length the manifest records (each checked by its signed trailer: a head and two range
/// reads, not a download), or, when last read back more than `reread_after` before `now`, damaged
/// anywhere in their body (streamed through every checksum). Returns those, and the packs read
/// back that matched (their `verified_at` becomes `now`), and whether each readable pack is stored
/// encrypted.
async fn unusable_packs(
    repository: &Repository,
    previous: &BackupManifest,
    now: u64,
    reread_after: Duration,
) -> Result<(HashSet<u32>, Vec<u32>, Vec<(u32, bool)>)> {
    // What verify found damaged is out whatever its last read-back said (see damage.rs).
    let recorded = super::damage::damaged_packs(repository).await?;
    // Owned inputs: the future is spawned, and borrowed items make it not general enough to be Send.
    let checks = futures::stream::iter(previous.packs.clone().into_iter().enumerate().map(|(index, pack)| {
        let repository = repository.clone();
        let due = now.saturating_sub(pack.verified_at) >= reread_after.as_secs();
        let recorded_damaged = recorded.contains(&pack.id);
        async move {
            match recorded_damaged {
                true => Ok((index as u32, PackCheck::Unusable, None)),
                false => check_pack_usable(&repository, index, pack, due).await,
            }
        }
    }))
    .buffer_unordered(8);
    let results: Vec<(u32, PackCheck, Option<bool>)> = checks.try_collect().await?;
    let damaged = results.iter().filter(|(_, c, _)| *c == PackCheck::Unusable).map(|(i, _, _)| *i).collect();
    let rechecked = results.iter().filter(|(_, c, _)| *c == PackCheck::ReadBack).map(|(i, _, _)| *i).collect();
    let encryption = results.iter().filter_map(|(i, _, e)| e.map(|e| (*i, e))).collect();
    Ok((damaged, rechecked, encryption))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PackCheck {
    /// Its trailer matches; its body was read back recently enough not to be read now.
    Trailer,
    /// Read back whole through every checksum just now, and it matched.
    ReadBack,
    Unusable,
}

async fn check_pack_usable(
    repository: &Repository,
    index: usize,
    pack: PackRef,
    due: bool,
) -> Result<(u32, PackCheck, Option<bool>)> {
    let path = layout::pack(&pack.id)?;
    let unusable = |e: Error| match e {
        Error::NotFound { .. } | Error::Corrupt { .. } | Error::Unauthenticated { .. } => Ok(PackCheck::Unusable),
        e => Err(e),
    };
    let (check, encrypted) = match repository.read_trailer_and_encryption(&path).await {
        Ok((trailer, _)) if trailer.plain_len != pack.len => (PackCheck::Unusable, None),
        Ok((_, encrypted)) if repository.encrypts() && !encrypted => (PackCheck::Unusable, Some(false)),
        Ok((_, encrypted)) if !due => (PackCheck::Trailer, Some(encrypted)),
        Ok((_, encrypted)) => match repository.verify(&path).await {
            Ok(_) => (PackCheck::ReadBack, Some(encrypted)),
            Err(e) => (unusable(e)?, None),
        },
        Err(e) => (unusable(e)?, None),
    };
    Ok((index as u32, check, encrypted))
}

fn read_all(
    options: TakeOptions,
    damaged: &HashSet<u32>,
    encrypts: bool,
    progress: Arc<Progress>,
    sender: mpsc::Sender<SealedPack>,
    cancel: &CancellationToken,
) -> Result<ReadResult> {
    let mut tablespaces = Vec::new();
    let found = walk(&options, &mut tablespaces)?;
    progress.files_total.store(found.iter().filter(|f| f.kind == FileKind::File).count() as u64, Ordering::Relaxed);
    progress
        .bytes_total
        .store(found.iter().map(|f| if f.kind == FileKind::File { f.meta.len() } else { 0 }).sum(), Ordering::Relaxed);
    let incremental = options.kind == super::BackupKind::Incremental;
    let previous_files: HashMap<&str, &FileEntry> = match (&options.previous, incremental) {
        (Some(previous), true) => previous
            .files
            .iter()
            .filter(|f| f.chunks.iter().all(|c| !damaged.contains(&c.pack)))
            .map(|f| (f.path.as_str(), f))
            .collect(),
        _ => HashMap::new(),
    };
    // A full backup reads and writes everything: it references no pack of an earlier backup.
    let mut packer = Packer::new(options.previous.as_ref().filter(|_| incremental), damaged, encrypts);
    let mut stats = BackupStats {
        changed_blocks: options.changed.as_ref().filter(|_| incremental).map(|c| c.described.clone()),
        ..Default::default()
    };
    let mut files = Vec::with_capacity(found.len());
    let mut buffer = vec![0u8; CHUNK_SIZE];
    let send = |sealed: SealedPack| -> Result<()> { sender.blocking_send(sealed).map_err(|_| Error::Cancelled) };
    for entry in found {
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let (mtime_s, mtime_ns) = mtime(&entry.meta);
        let now = SystemTime::now();
        let mut record = FileEntry {
            path: entry.path.clone(),
            kind: entry.kind,
            mode: entry.meta.mode() & 0o7777,
            size: 0,
            mtime_s,
            mtime_ns,
            inode: entry.meta.ino(),
            read_at: unix_seconds(now),
            chunks: Vec::new(),
        };
        if entry.kind == FileKind::Dir {
            files.push(record);
            continue;
        }
        if let Some(previous) =
            previous_files.get(entry.path.as_str()).filter(|p| reusable(p, &entry.meta, now, options.reread_after))
        {
            record.size = previous.size;
            record.read_at = previous.read_at;
            for chunk in &previous.chunks {
                record.chunks.push(packer.reuse(chunk, &entry.path)?);
            }
            stats.files_reused += 1;
            progress.files_done.fetch_add(1, Ordering::Relaxed);
            progress.bytes_done.fetch_add(record.size, Ordering::Relaxed);
            stats.files += 1;
            stats.bytes += record.size;
            files.push(record);
            continue;
        }
        // Relation files (base/<db>/, global/, tablespaces) carry page checksums.
        let relation_segment = options.page_checks.and_then(|checks| {
            let (dir, name) = entry.path.rsplit_once('/')?;
            ((dir == "global" || is_database_dir(dir)) && relation_of(name).is_some())
                .then(|| (checks, super::page_checksum::segment_of(name)))
        });
        let file = match fs::File::open(&entry.abs) {
            Ok(file) => file,
            // Removed since the walk (a dropped relation): WAL replay removes it too.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("open", &entry.abs, e)),
        };
        // With WAL summaries, the previous record of this same file stands for its unchanged blocks.
        let summarized = options.changed.as_ref().and_then(|changed| {
            let previous = previous_files.get(entry.path.as_str())?;
            let usable = previous.kind == FileKind::File
                && previous.inode == entry.meta.ino()
                && unix_seconds(now) - previous.read_at < options.reread_after.as_secs_f64()
                && changed.chunk_changed(&entry.path, 0).is_some();
            usable.then_some((changed, *previous))
        });
        let mut store = Store {
            file: &file,
            path: &entry.path,
            abs: &entry.abs,
            relation_segment,
            buffer: &mut buffer,
            packer: &mut packer,
            stats: &mut stats,
            progress: &progress,
            record: &mut record,
            send: &send,
            previous_at: (0, 0),
        };
        let reused_any = match summarized {
            Some((changed, previous)) => store.by_blocks(changed, previous, entry.meta.len(), cancel)?,
            None => {
                store.whole(cancel)?;
                false
            }
        };
        if reused_any {
            // Part of it was read by an earlier backup: the periodic full read counts from then.
            record.read_at = summarized.map_or(record.read_at, |(_, previous)| previous.read_at);
            stats.files_summarized += 1;
        }
        progress.files_done.fetch_add(1, Ordering::Relaxed);
        stats.files += 1;
        stats.bytes += record.size;
        files.push(record);
    }
    if let Some(sealed) = packer.take_full(true) {
        send(sealed)?;
    }
    drop(sender);
    let packs = packer
        .packs
        .into_iter()
        .map(|p| p.ok_or_else(|| Error::InvalidInput("a pack was never sealed".into())))
        .collect::<Result<Vec<_>>>()?;
    Ok((files, packs, tablespaces, stats))
}

/// The blocks of a changed chunk, at most, that are stored as pieces of their own; with more, the
/// whole chunk is read and stored as one (fewer references, and nearly the same bytes).
const MOST_PIECEWISE_BLOCKS: u32 = BLOCKS_PER_CHUNK / 2;

/// Reading one file into chunks: its bytes read, checked, hashed and placed, or referenced from
/// the previous backup's record of it.
struct Store<'a, F: Fn(SealedPack) -> Result<()>> {
    file: &'a fs::File,
    path: &'a str,
    abs: &'a Path,
    relation_segment: Option<(PageChecks, u32)>,
    buffer: &'a mut Vec<u8>,
    packer: &'a mut Packer,
    stats: &'a mut BackupStats,
    progress: &'a Progress,
    record: &'a mut FileEntry,
    send: &'a F,
    /// Where [`Store::reuse_span`] left off in the previous record's chunks: the index of the
    /// first chunk not wholly before its last span, and that chunk's offset in the file. Spans
    /// come in file order, so each chunk is passed over once per file, not once per span.
    previous_at: (usize, u64),
}

impl<F: Fn(SealedPack) -> Result<()>> Store<'_, F> {
    /// Reads up to `len` bytes at the end of the record and stores them as one chunk; returns
    /// the bytes read (fewer when the file ended: it shrank since the walk, and WAL replay
    /// truncates it again).
    fn read_piece(&mut self, len: usize) -> Result<usize> {
        let offset = self.record.size;
        let n = read_full_at(self.file, &mut self.buffer[..len], offset).map_err(|e| Error::io("read", self.abs, e))?;
        if n == 0 {
            return Ok(0);
        }
        let data = &self.buffer[..n];
        if let Some((checks, segment)) = self.relation_segment {
            check_pages(self.file, self.path, data, offset, segment, checks, self.stats);
        }
        let hash: [u8; 32] = Sha256::digest(data).into();
        let (chunk, new) = self.packer.place(hash, data);
        if new {
            self.stats.bytes_new += n as u64;
            self.progress.bytes_new.fetch_add(n as u64, Ordering::Relaxed);
        }
        self.record.chunks.push(chunk);
        self.record.size += n as u64;
        self.stats.bytes_read += n as u64;
        self.progress.bytes_read.fetch_add(n as u64, Ordering::Relaxed);
        self.progress.bytes_done.fetch_add(n as u64, Ordering::Relaxed);
        if let Some(sealed) = self.packer.take_full(false) {
            (self.send)(sealed)?;
        }
        Ok(n)
    }

    /// The whole file, chunk after chunk, to its end.
    fn whole(&mut self, cancel: &CancellationToken) -> Result<()> {
        loop {
            if cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            if self.read_piece(CHUNK_SIZE)? < CHUNK_SIZE {
                return Ok(());
            }
        }
    }

    /// References the bytes `[from, to)` of the file as `previous` recorded them.
    fn reuse_span(&mut self, previous: &FileEntry, from: u64, to: u64) -> Result<()> {
        if from < self.previous_at.1 {
            self.previous_at = (0, 0);
        }
        let (mut index, mut start) = self.previous_at;
        let mut covered = 0u64;
        while let Some(chunk) = previous.chunks.get(index).filter(|c| start + u64::from(c.file_len()) <= from) {
            start += u64::from(chunk.file_len());
            index += 1;
        }
        self.previous_at = (index, start);
        for chunk in &previous.chunks[index..] {
            let len = u64::from(chunk.file_len());
            let (lo, hi) = (from.max(start), to.min(start + len));
            if lo < hi {
                covered += hi - lo;
                let (base, _) = chunk.span();
                let range = [base + (lo - start) as u32, base + (hi - start) as u32];
                let mut reused = self.packer.reuse(chunk, self.path)?;
                reused.range = (range != [0, chunk.len]).then_some(range);
                self.record.chunks.push(reused);
            }
            start += len;
            if start >= to {
                break;
            }
        }
        let len = to - from;
        if covered != len {
            // Never a manifest whose pieces do not add up: the backup fails instead.
            return Err(Error::InvalidInput(format!(
                "the previous backup's record of {} holds {covered} of the bytes {from}..{to} it should",
                self.path
            )));
        }
        self.record.size += len;
        self.stats.bytes_skipped += len;
        self.progress.bytes_done.fetch_add(len, Ordering::Relaxed);
        Ok(())
    }

    /// A changed relation file with WAL summaries: per chunk-sized window, blocks the summaries
    /// name (and any the previous record does not hold) are read and stored, the rest referenced
    /// from the previous record. Returns whether anything was referenced rather than read.
    fn by_blocks(
        &mut self,
        changed: &ChangedBlocks,
        previous: &FileEntry,
        walked_len: u64,
        cancel: &CancellationToken,
    ) -> Result<bool> {
        let block = BLOCK_SIZE as u64;
        let mut reused_any = false;
        for window in 0u32.. {
            if cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            let start = u64::from(window) * CHUNK_SIZE as u64;
            if start >= walked_len {
                break;
            }
            let end = (start + CHUNK_SIZE as u64).min(walked_len);
            let blocks = (end - start).div_ceil(block) as u32;
            let mut mask = changed.changed_mask(self.path, window).unwrap_or(u32::MAX);
            for n in 0..blocks {
                // A block the previous record does not hold whole is new.
                if start + u64::from(n + 1) * block > previous.size {
                    mask |= 1 << n;
                }
            }
            if blocks < BLOCKS_PER_CHUNK {
                mask &= (1u32 << blocks) - 1;
            }
            if mask.count_ones() > MOST_PIECEWISE_BLOCKS {
                let wanted = (end - start) as usize;
                if self.read_piece(wanted)? < wanted {
                    return Ok(reused_any);
                }
                continue;
            }
            // Runs of blocks alike: read the changed ones, reference the others.
            let mut n = 0;
            while n < blocks {
                let is_changed = mask & (1 << n) != 0;
                let mut m = n + 1;
                while m < blocks && (mask & (1 << m) != 0) == is_changed {
                    m += 1;
                }
                let (from, to) = (start + u64::from(n) * block, (start + u64::from(m) * block).min(end));
                if is_changed {
                    let wanted = (to - from) as usize;
                    if self.read_piece(wanted)? < wanted {
                        return Ok(reused_any);
                    }
                } else {
                    self.reuse_span(previous, from, to)?;
                    reused_any = true;
                }
                n = m;
            }
        }
        Ok(reused_any)
    }
}

/// Checks the checksum of every whole page in `data`, read at `offset` of segment `segment` of a
/// relation file; a page that fails is read once more (a concurrent write may have torn the first
/// read) before it is counted and named in `stats`.
fn check_pages(
    file: &fs::File,
    path: &str,
    data: &[u8],
    offset: u64,
    segment: u32,
    checks: PageChecks,
    stats: &mut BackupStats,
) {
    use super::page_checksum::{verify, Verdict};
    use std::os::unix::fs::FileExt;
    let first_block = u64::from(segment) * u64::from(checks.blocks_per_segment) + offset / BLOCK_SIZE as u64;
    for (index, page) in data.chunks_exact(BLOCK_SIZE).enumerate() {
        let block = (first_block + index as u64) as u32;
        let Verdict::Failed { .. } = verify(page, block, checks.start_lsn) else {
            continue;
        };
        let mut again = vec![0u8; BLOCK_SIZE];
        let verdict = match file.read_exact_at(&mut again, offset + (index * BLOCK_SIZE) as u64) {
            Ok(()) => verify(&again, block, checks.start_lsn),
            Err(_) => verify(page, block, checks.start_lsn),
        };
        if let Verdict::Failed { stored, computed } = verdict {
            stats.page_checksum_failures += 1;
            if stats.damaged_pages.len() < DAMAGED_PAGES_NAMED {
                stats.damaged_pages.push(format!("{path} block {block} (checksum {stored}, computed {computed})"));
            }
        }
    }
}

/// Fills `buffer` from `offset` unless the file ends first; returns the bytes read.
fn read_full_at(file: &fs::File, buffer: &mut [u8], offset: u64) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut filled = 0;
    while filled < buffer.len() {
        match file.read_at(&mut buffer[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unchanged_file_is_reused_only_when_its_record_is_recent_and_safely_older_than_the_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("16384");
        std::fs::write(&path, vec![1u8; 8192]).unwrap();
        let written = SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(written).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        let (mtime_s, mtime_ns) = mtime(&meta);
        let record = FileEntry {
            path: "base/5/16384".into(),
            kind: FileKind::File,
            mode: 0o600,
            size: 8192,
            mtime_s,
            mtime_ns,
            inode: meta.ino(),
            read_at: unix_seconds(written) + 60.0,
            chunks: vec![],
        };
        let now = SystemTime::now();
        let week = DEFAULT_REREAD_AFTER;
        assert!(reusable(&record, &meta, now, week));
        // Read again once the last read is older than the re-read period.
        assert!(!reusable(&record, &meta, now + week, week));
        assert!(!reusable(&record, &meta, now, Duration::ZERO));
        // Read within MTIME_MARGIN of the write: a later write in the same tick could hide.
        let close = FileEntry { read_at: unix_seconds(written) + 1.0, ..record.clone() };
        assert!(!reusable(&close, &meta, now, week));
        // Any difference in size, mtime or inode.
        assert!(!reusable(&FileEntry { size: 4096, ..record.clone() }, &meta, now, week));
        assert!(!reusable(&FileEntry { mtime_ns: mtime_ns ^ 1, ..record.clone() }, &meta, now, week));
        assert!(!reusable(&FileEntry { inode: record.inode + 1, ..record.clone() }, &meta, now, week));
    }

    #[test]
    fn relation_file_names_are_classified() {
        assert!(is_temp_relation("t3_16384"));
        assert!(is_temp_relation("t3_16384_fsm"));
        assert!(is_temp_relation("t12_16384.1"));
        assert!(!is_temp_relation("16384"));
        assert!(!is_temp_relation("tablespace"));
        assert_eq!(relation_of("16384_init"), Some(("16384", true)));
        assert_eq!(relation_of("16384.2"), Some(("16384", false)));
        assert_eq!(relation_of("16384_vm"), Some(("16384", false)));
        assert_eq!(relation_of("PG_VERSION"), None);
        assert!(is_database_dir("base/5"));
        assert!(is_database_dir("pg_tblspc/16390/PG_15_202209061/5"));
        assert!(!is_database_dir("global"));
        assert!(!is_database_dir("base"));
    }
}

/// What PostgreSQL said about the backup (pg_backup_start / pg_backup_stop), with who took it.
#[derive(Debug, Clone)]
pub struct BackupFacts {
    pub id: super::BackupId,
    pub cluster: String,
    pub system_identifier: u64,
    pub pg_version_num: u32,
    pub wal_segment_size: u32,
    pub timeline: u32,
    pub start_lsn: super::Lsn,
    pub stop_lsn: super::Lsn,
    pub start_time: SystemTime,
    pub stop_time: SystemTime,
    pub previous: Option<super::BackupId>,
    pub backup_label: String,
    pub tablespace_map: String,
    pub row_counts: Option<super::manifest::RowCounts>,
    pub relations: Vec<super::manifest::RelationFile>,
}

impl Taken {
    pub fn into_manifest(self, facts: BackupFacts) -> BackupManifest {
        let mut stats = self.stats;
        stats.requests += 1; // the manifest
                             // Format 2 only where it is needed: a manifest of whole chunks stays readable by older backstops.
        let ranged = self.files.iter().any(|f| f.chunks.iter().any(|c| c.range.is_some()));
        BackupManifest {
            format_version: match ranged {
                true => super::manifest::MANIFEST_FORMAT_VERSION,
                false => super::manifest::MANIFEST_FORMAT_WHOLE_CHUNKS,
            },
            kind: facts.id.kind(),
            id: facts.id,
            cluster: facts.cluster,
            system_identifier: facts.system_identifier.to_string(),
            pg_version_num: facts.pg_version_num,
            wal_segment_size: facts.wal_segment_size,
            timeline: facts.timeline,
            start_lsn: facts.start_lsn,
            stop_lsn: facts.stop_lsn,
            start_time: unix_seconds(facts.start_time),
            stop_time: unix_seconds(facts.stop_time),
            previous: facts.previous,
            backup_label: facts.backup_label,
            tablespace_map: facts.tablespace_map,
            tablespaces: self.tablespaces,
            packs: self.packs,
            files: self.files,
            stats,
            row_counts: facts.row_counts,
            relations: facts.relations,
        }
    }
}

/// Reads a `backup_label`'s timeline and start position ("START WAL LOCATION: 0/2000028 (file
/// 000000010000000000000002)", "START TIMELINE: 1").
pub fn parse_label(label: &str) -> Result<(super::Lsn, u32)> {
    let bad = || Error::InvalidInput("pg_backup_stop returned a backup_label backstop cannot read".into());
    let mut lsn = None;
    let mut timeline = None;
    for line in label.lines() {
        if let Some(rest) = line.strip_prefix("START WAL LOCATION: ") {
            lsn = Some(super::Lsn::parse(rest.split_whitespace().next().ok_or_else(bad)?)?);
        } else if let Some(rest) = line.strip_prefix("START TIMELINE: ") {
            timeline = Some(rest.trim().parse::<u32>().map_err(|_| bad())?);
        }
    }
    Ok((lsn.ok_or_else(bad)?, timeline.ok_or_else(bad)?))
}
