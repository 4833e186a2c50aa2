//! The `table_history` job: the transactions that changed one table, newest first, read from the
//! archived WAL (then the server's own pg_wal for what is not archived yet), following the table
//! through its relation files (core `recover::history`).

use std::time::Duration;

use backstop_core::backups::verify;
use backstop_core::recover::history::{TableChange, TableScan};
use backstop_core::recover::{self, ReadSummary};
use backstop_core::repository::CancellationToken;
use backstop_core::schedule::job::{JobKind, TableHistoryArgs};
use backstop_core::wal::events::{Decoder, PgTime};
use backstop_core::wal::records::RelFile;
use backstop_core::wal::{WalFileKind, WalFileName};
use backstop_core::Error;
use pgrx::bgworkers::BackgroundWorker;
use pgrx::pg_sys;

use crate::jobs::{self, Job, JobRequest, JobStatus};
use crate::{io, repo};

/// The `table_history` job (registered in [`crate::JOBS`]).
pub struct TableHistoryJob;

/// What a run found.
#[derive(Debug, serde::Serialize)]
pub struct TableHistoryOutcome {
    pub table: String,
    /// Newest first.
    pub changes: Vec<TableChange>,
    /// Changes found beyond `max_rows` (older ones), not listed.
    pub omitted: u64,
    /// The relation files it started from (known for the table).
    pub files_known: Vec<RelFile>,
    pub archived: ReadSummary,
    /// Segments of the server's own pg_wal read after the archived ones.
    pub local_segments_read: u64,
    /// Committed transactions in the range that took an ACCESS EXCLUSIVE lock on the table (the
    /// newest `max_rows`; `locks_omitted` the others).
    pub lock_xids: Vec<u32>,
    pub locks_omitted: u64,
    /// Unix seconds of the range asked for.
    pub since: f64,
    pub until: f64,
}

impl Job for TableHistoryJob {
    type Args = TableHistoryArgs;
    type Outcome = TableHistoryOutcome;
    const KIND: JobKind = JobKind::TableHistory;
    /// The caller's SELECT on the table is checked by the SQL function (a dropped table: operators).
    const NEEDS_OPERATOR: bool = false;
    const READ_ONLY: bool = true;

    fn authorize(&self, args: &Self::Args) {
        super::sql::authorize(&args.table, "read its history");
    }

    fn run(
        &self,
        _request: &JobRequest,
        args: TableHistoryArgs,
        status: &mut JobStatus,
    ) -> Result<Self::Outcome, Error> {
        run(&args, status)
    }
}

fn spi_error(e: pgrx::spi::Error) -> Error {
    Error::InvalidInput(format!("reading the catalog failed: {e}"))
}

fn run(args: &TableHistoryArgs, status: &mut JobStatus) -> Result<TableHistoryOutcome, Error> {
    jobs::phase(status, "finding the table's relation files");
    let now = backstop_core::time::unix_seconds(std::time::SystemTime::now());
    let until = args.until.unwrap_or(now);
    let since = args.since.unwrap_or(until - 86_400.0);
    let repository = repo::open_checked()?;
    let backups = io::block_on(verify::list_backups(&repository))?;
    let manifests: Vec<_> = backups.iter().filter_map(|b| b.manifest.as_ref()).collect();
    // The table as it is now, or as the newest backup that recorded it by this name knew it.
    let current = BackgroundWorker::transaction(|| {
        let oid =
            crate::spi::one::<i64>("SELECT pg_catalog.to_regclass($1)::oid::bigint", &[args.table.as_str().into()])?;
        match oid {
            Some(oid) => crate::backups::relations::relation_files(Some(oid as u32)),
            None => Ok(Vec::new()),
        }
    })
    .map_err(spi_error)?;
    let oid = match current.first() {
        Some(relation) => relation.oid,
        None => manifests
            .iter()
            .rev()
            .flat_map(|m| m.relations.iter())
            .find(|r| r.table == args.table || r.table == format!("public.{}", args.table))
            .map(|r| r.oid)
            .ok_or_else(|| {
                Error::InvalidInput(format!(
                    "table {} does not exist, and no base backup recorded a table of that name (backups before 0.3.0 record none); name it schema-qualified as it was",
                    args.table
                ))
            })?,
    };
    let mut known: Vec<RelFile> = current.iter().map(|r| r.file()).collect();
    for file in &args.files {
        if !known.contains(file) {
            known.push(*file);
        }
    }
    for relation in manifests.iter().flat_map(|m| m.relations.iter()).filter(|r| r.oid == oid) {
        if !known.contains(&relation.file()) {
            known.push(relation.file());
        }
    }
    let database = current
        .first()
        .map(|r| r.database)
        .or_else(|| manifests.iter().flat_map(|m| m.relations.iter()).find(|r| r.oid == oid).map(|r| r.database))
        .unwrap_or_default();
    let table = current
        .first()
        .map(|r| r.table.clone())
        .or_else(|| {
            manifests.iter().rev().flat_map(|m| m.relations.iter()).find(|r| r.oid == oid).map(|r| r.table.clone())
        })
        .unwrap_or_else(|| args.table.clone());

    jobs::phase(status, "listing the archived WAL");
    let segment_size = unsafe { pg_sys::wal_segment_size } as u32;
    let timeline = BackgroundWorker::transaction(|| {
        crate::spi::one::<i32>("SELECT timeline_id FROM pg_catalog.pg_control_checkpoint()", &[])
    })
    .map_err(spi_error)?
    .unwrap_or(1) as u32;
    let wal_files = io::block_on(verify::archived_wal(&repository))?;
    let ancestors = match wal_files.iter().find(|f| f.name.kind == WalFileKind::History && f.name.timeline == timeline)
    {
        Some(history) => {
            let bytes = io::block_on(repository.get_bytes(&backstop_core::layout::wal(&history.name)))?;
            backstop_core::wal::history::parse(&String::from_utf8_lossy(&bytes))?
        }
        None => Vec::new(),
    };
    let segments = recover::segments_along(&wal_files, timeline, &ancestors, segment_size);
    let (since_pg, until_pg) = (PgTime::from_unix_seconds(since), PgTime::from_unix_seconds(until));
    let until_lsn = args.until_lsn.as_deref().map(backstop_core::wal::Lsn::parse).transpose()?;
    let end = recover::Until { time: until_pg, lsn: until_lsn };

    jobs::phase(status, "finding where the range starts in the WAL");
    let max_rows = args.max_rows.unwrap_or(100);
    let cancel = CancellationToken::new();
    let progress = StatusProgress::default();
    let task = {
        let repository = repository.clone();
        let segments = segments.clone();
        let known = known.clone();
        let cancel = cancel.clone();
        let progress = progress.clone();
        io::runtime().spawn(async move {
            let start = recover::start_index(&repository, &segments, since_pg, segment_size).await?;
            let mut scan = TableScan::new(&known, database, since_pg, max_rows);
            scan.table_oid = Some(oid);
            let mut report = |done: usize, total: usize| progress.set(done, total);
            let range =
                recover::WalRange { segments: &segments, from: start, until: until_pg, until_lsn, segment_size };
            let read =
                recover::read_events(&repository, range, &cancel, &mut report, &mut |found| scan.feed(found)).await?;
            Ok::<_, Error>((scan, read))
        })
    };
    let mut backoff = jobs::Backoff::new(Duration::from_millis(250));
    while !task.is_finished() {
        if !BackgroundWorker::wait_latch(Some(backoff.next())) {
            cancel.cancel();
        }
        let (done, total) = progress.get();
        if total == 0 {
            continue;
        }
        status.phase = format!("reading archived WAL: segment {done} of {total}");
        status.files_done = done as u64;
        status.files_total = total as u64;
        jobs::write_status(status);
    }
    let (mut scan, archived) =
        io::runtime().block_on(task).map_err(|e| Error::InvalidInput(format!("the WAL reader failed: {e}")))??;

    // What is not archived yet: this server's own pg_wal after the last archived segment.
    let mut local_segments_read = 0;
    if !archived.reached_until && archived.gap_at.is_none() {
        jobs::phase(status, "reading this server's pg_wal after the archived WAL");
        let after = segments.last().and_then(|s| s.position(segment_size)).map(|(_, n)| n);
        local_segments_read = read_local_tail(timeline, after, segment_size, end, &mut scan)?;
    }
    let (omitted, locks_omitted) = (scan.omitted, scan.locks_omitted);
    let lock_xids: Vec<u32> = scan.lock_xids.iter().copied().collect();
    Ok(TableHistoryOutcome {
        table,
        changes: scan.finish(),
        omitted,
        files_known: known,
        archived,
        local_segments_read,
        lock_xids,
        locks_omitted,
        since,
        until,
    })
}

/// Progress shared between the reader task and the worker's loop.
#[derive(Clone, Default)]
struct StatusProgress(std::sync::Arc<(std::sync::atomic::AtomicUsize, std::sync::atomic::AtomicUsize)>);

impl StatusProgress {
    fn set(&self, done: usize, total: usize) {
        self.0 .0.store(done, std::sync::atomic::Ordering::Relaxed);
        self.0 .1.store(total, std::sync::atomic::Ordering::Relaxed);
    }
    fn get(&self) -> (usize, usize) {
        (self.0 .0.load(std::sync::atomic::Ordering::Relaxed), self.0 .1.load(std::sync::atomic::Ordering::Relaxed))
    }
}

/// Reads the segments of `timeline` in this server's pg_wal after segment `after` (all of them
/// when nothing is archived), up to `until`. These are the server's own
/// files, read in place; a segment still being written ends where its written records end.
fn read_local_tail(
    timeline: u32,
    after: Option<u64>,
    segment_size: u32,
    until: recover::Until,
    scan: &mut TableScan,
) -> Result<u64, Error> {
    let data_dir =
        std::path::PathBuf::from(unsafe { std::ffi::CStr::from_ptr(pg_sys::DataDir) }.to_string_lossy().into_owned());
    let wal_dir = data_dir.join("pg_wal");
    let mut names: Vec<WalFileName> = std::fs::read_dir(&wal_dir)
        .map_err(|e| Error::io("list", &wal_dir, e))?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| WalFileName::parse(&entry.file_name().to_string_lossy()).ok())
        .filter(|name| name.kind == WalFileKind::Segment && name.timeline == timeline)
        .filter(|name| name.position(segment_size).is_some_and(|(_, n)| after.is_none_or(|a| n > a)))
        .collect();
    names.sort_by(|a, b| a.name.cmp(&b.name));
    let mut decoder = Decoder::new(segment_size);
    let mut read = 0;
    let mut previous: Option<u64> = after;
    for name in names {
        let (_, number) = name.position(segment_size).unwrap_or_default();
        if previous.is_some_and(|p| p + 1 != number) {
            break;
        }
        previous = Some(number);
        let path = wal_dir.join(&name.name);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            // Recycled or removed since the listing.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
            Err(e) => return Err(Error::io("read", &path, e)),
        };
        read += 1;
        let mut stop = false;
        let end = decoder.segment(&name, &bytes, &mut |found| {
            if stop {
                return Ok(());
            }
            if until.past(&found) {
                stop = true;
                return Ok(());
            }
            scan.feed(&found);
            Ok(())
        });
        // A recycled segment ahead of the insert position does not start where its name says:
        // the WAL written so far has ended.
        match end {
            Ok(backstop_core::wal::records::SegmentEnd::Ended { .. }) | Err(_) => break,
            Ok(_) if stop => break,
            Ok(_) => {}
        }
    }
    Ok(read)
}
