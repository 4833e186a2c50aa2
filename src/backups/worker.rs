//! The base backup job, in its own background worker process (see `jobs`): pg_backup_start and
//! pg_backup_stop in the worker's own session, files read straight from the data directory and
//! tablespaces while no transaction is open (no snapshot, no xmin held), the WAL up to the stop LSN
//! awaited in the repository, and the manifest written last.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use backstop_core::backups::take::{self, BackupFacts, Progress, TakeOptions};
use backstop_core::backups::{manifest, verify, BackupId, BackupKind, Lsn};
use backstop_core::repository::CancellationToken;
use backstop_core::schedule::job::BaseBackupArgs;
use backstop_core::wal::{self, WalFileName};
use backstop_core::{Error, Repository};
use pgrx::bgworkers::BackgroundWorker;
use pgrx::prelude::*;

use crate::jobs::{self, JobKind, JobRequest, JobStatus};
use crate::{gucs, io, repo};

/// Serialises base backups and expire across the whole cluster: a session-level advisory lock
/// whose tag names no database (pg_advisory_lock's would name the caller's, so expire run from
/// another database would not wait for a backup). Shown in pg_locks as an advisory lock with
/// database 0 and objid 0x6261636b ("back").
const LOCK_KEY: (u32, u32) = (0x6261_636b, 0x7570);

fn backup_lock_tag() -> pg_sys::LOCKTAG {
    pg_sys::LOCKTAG {
        locktag_field1: 0,
        locktag_field2: LOCK_KEY.0,
        locktag_field3: LOCK_KEY.1,
        locktag_field4: 1,
        locktag_type: pg_sys::LockTagType::LOCKTAG_ADVISORY as u8,
        locktag_lockmethodid: pg_sys::USER_LOCKMETHOD as u8,
    }
}

fn progress_into(status: &mut JobStatus, progress: &Progress) {
    status.files_done = Progress::get(&progress.files_done);
    status.files_total = Progress::get(&progress.files_total);
    status.bytes_done = Progress::get(&progress.bytes_done);
    status.bytes_total = Progress::get(&progress.bytes_total);
    status.bytes_new = Progress::get(&progress.bytes_new);
}

/// Takes the base-backup lock for the rest of this worker's session (base backups and expire hold
/// it); false when another process holds it.
pub fn try_backup_lock() -> Result<bool, Error> {
    let tag = backup_lock_tag();
    let result = BackgroundWorker::transaction(|| unsafe {
        pg_sys::LockAcquire(&tag, pg_sys::ExclusiveLock as pg_sys::LOCKMODE, true, true)
    });
    Ok(result != pg_sys::LockAcquireResult::LOCKACQUIRE_NOT_AVAIL)
}

/// Releases what [`try_backup_lock`] took (the worker's exit releases it too).
pub fn release_backup_lock() {
    let tag = backup_lock_tag();
    BackgroundWorker::transaction(|| unsafe {
        pg_sys::LockRelease(&tag, pg_sys::ExclusiveLock as pg_sys::LOCKMODE, true);
    });
}

use crate::jobs::PhaseTimes;

pub fn spi_error(e: pgrx::spi::Error) -> Error {
    Error::InvalidInput(format!("PostgreSQL refused: {e}"))
}

/// What a base backup stored, and how long it took.
#[derive(serde::Serialize)]
pub struct BaseBackupOutcome {
    pub backup_id: BackupId,
    /// doctor()'s deletion check compares what each repository should hold with what it holds.
    pub repository: String,
    pub kind: &'static str,
    pub start_lsn: String,
    pub stop_lsn: String,
    pub timeline: u32,
    pub files: u64,
    pub files_reused: u64,
    pub packs_rechecked: u64,
    pub packs_unusable: u64,
    pub bytes: u64,
    pub bytes_read: u64,
    pub bytes_new: u64,
    pub bytes_stored: u64,
    pub packs_new: u64,
    pub requests: u64,
    pub seconds: f64,
    /// Pages whose checksum failed as they were read (data checksums on), and the first of them.
    #[serde(skip_serializing_if = "is_zero")]
    pub page_checksum_failures: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub damaged_pages: Vec<String>,
    /// Incremental on PostgreSQL 17+: "WAL summaries ..." or why every changed file was read whole.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changed_blocks: Option<String>,
    /// Changed relation files read only in part, and the bytes of them not read.
    pub files_summarized: u64,
    pub bytes_skipped: u64,
    /// Seconds per phase, in order.
    pub phases: PhaseTimes,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

pub fn run(request: &JobRequest, args: BaseBackupArgs, status: &mut JobStatus) -> Result<BaseBackupOutcome, Error> {
    if !try_backup_lock()? {
        return Err(Error::Busy {
            message: "another base backup or expire is running in this cluster (backstop.job_progress in the database that started it shows it); only one runs at a time".into(),
            hint: "Wait for it to end, then run this again.".into(),
        });
    }
    let mut timed = PhaseTimes::default();
    timed.enter(status, "opening the repository");
    let repository = repo::open_checked()?;
    // Across servers writing this namespace (a standby, a copy restored as primary): the lease.
    let lease = repo::HeldLease::acquire(&repository, JobKind::BaseBackup.as_str(), request.id)?;
    // Only the newest verified manifest is read: what an incremental builds on.
    let (ids, newest) = io::block_on(verify::newest_verified(&repository))?;
    let previous = newest.and_then(|b| b.manifest);
    let kind = match (args.kind.as_str(), &previous) {
        ("full", _) | ("auto", None) => BackupKind::Full,
        ("incremental" | "auto", Some(_)) => BackupKind::Incremental,
        ("incremental", None) => {
            return Err(Error::InvalidInput(
                "an incremental backup needs an earlier complete backup, and the repository holds none; take a full one (kind => 'full' or 'auto')".into(),
            ))
        }
        (other, _) => return Err(Error::InvalidInput(format!("kind \"{other}\" is not auto, full or incremental"))),
    };
    // Ids have one-second resolution: never reuse an existing backup's second.
    let (started, id) = loop {
        let now = SystemTime::now();
        let id = BackupId::new(now, kind);
        if ids.iter().all(|b| b.as_str()[..16] != id.as_str()[..16]) {
            break (now, id);
        }
        if !BackgroundWorker::wait_latch(Some(Duration::from_millis(200))) {
            return Err(Error::Cancelled);
        }
    };
    let clock = Instant::now();

    timed.enter(status, "pg_backup_start (checkpoint)");
    let label = format!("backstop {id}");
    let backup_start = BackgroundWorker::transaction(|| {
        Spi::get_one_with_args::<String>(
            "SELECT pg_catalog.pg_backup_start($1, $2)::text",
            &[label.as_str().into(), args.fast.into()],
        )
    })
    .map_err(spi_error)?;
    // Each table's relation file as the backup starts: where table_history starts following it.
    let relations = BackgroundWorker::transaction(|| super::relations::relation_files(None)).unwrap_or_else(|e| {
        pgrx::warning!(
            "backstop: base backup {id} records no relation files (table_history cannot start from it): {e}"
        );
        Vec::new()
    });
    // With data checksums on (PostgreSQL 18's default), every relation page read is checked.
    let (checksums, blocks_per_segment) = BackgroundWorker::transaction(|| {
        Spi::get_two::<String, String>(
            "SELECT pg_catalog.current_setting('data_checksums'), \
                    (SELECT setting FROM pg_catalog.pg_settings WHERE name = 'segment_size')",
        )
    })
    .map_err(spi_error)?;
    let blocks_per_segment: Option<u32> = blocks_per_segment.and_then(|b| b.parse().ok());
    let page_checks = match (checksums.as_deref(), backup_start.as_deref(), blocks_per_segment) {
        (Some("on"), Some(start), Some(blocks_per_segment)) => {
            Some(take::PageChecks { start_lsn: Lsn::parse(start)?.0, blocks_per_segment })
        }
        _ => None,
    };

    // PostgreSQL 17+: an incremental reads only the chunks the WAL summaries name as changed.
    let mut changed_blocks_fallback = None;
    let changed = match (kind, &previous, backup_start.as_deref()) {
        (BackupKind::Incremental, Some(previous), Some(start)) if super::summaries::server_has_summaries() => {
            timed.enter(status, "reading WAL summaries");
            let timeline = BackgroundWorker::transaction(|| {
                crate::spi::one::<i32>("SELECT timeline_id FROM pg_catalog.pg_control_checkpoint()", &[])
            })
            .map_err(spi_error)?
            .unwrap_or(0) as u32;
            let blocks = blocks_per_segment.unwrap_or(0);
            match super::summaries::changed_since(previous, Lsn::parse(start)?, timeline, blocks)? {
                Ok(changed) => Some((changed, timeline)),
                Err(reason) => {
                    let said = format!("every changed file read whole: {reason}");
                    pgrx::log!("backstop: base backup {id}: {said}");
                    changed_blocks_fallback = Some(said);
                    None
                }
            }
        }
        _ => None,
    };
    let summaries_timeline = changed.as_ref().map(|(_, timeline)| *timeline);

    timed.enter(status, "copying files");
    // Test builds: a pause a scenario sets to watch a running backup whatever the machine's speed.
    let pause = gucs::test_backup_pause();
    if !pause.is_zero() && !BackgroundWorker::wait_latch(Some(pause)) {
        return Err(Error::Cancelled);
    }
    let data_dir =
        std::path::PathBuf::from(unsafe { std::ffi::CStr::from_ptr(pg_sys::DataDir) }.to_string_lossy().into_owned());
    let options = TakeOptions {
        data_dir,
        kind,
        previous: previous.clone(),
        reread_after: gucs::base_backup_reread_after(),
        include_manifest_key: !gucs::codec_settings()?.recipients.is_empty(),
        parallel: gucs::base_backup_parallel(),
        page_checks,
        changed: changed.map(|(changed, _)| changed),
    };
    let progress = Arc::new(Progress::default());
    let cancel = CancellationToken::new();
    let task = {
        // Packs may use their own zstd level; manifests and WAL keep the repository's.
        let repository = repository.clone().with_codec(gucs::base_backup_codec_settings()?);
        let progress = progress.clone();
        let cancel = cancel.clone();
        io::runtime().spawn(async move { take::copy_files(&repository, options, progress, &cancel).await })
    };
    // Short waits: the copy of a small incremental takes a fraction of a second, and a long
    // last wait would be most of the backup's time (progress is still written every 500 ms).
    let mut backoff = jobs::Backoff::new(Duration::from_millis(25));
    let mut reported = Instant::now();
    while !task.is_finished() {
        if !BackgroundWorker::wait_latch(Some(backoff.next())) || lease.lost() {
            cancel.cancel();
        }
        if reported.elapsed() >= Duration::from_millis(500) {
            progress_into(status, &progress);
            jobs::write_status(status);
            reported = Instant::now();
        }
    }
    let taken =
        io::runtime().block_on(task).map_err(|e| Error::InvalidInput(format!("the backup's copy task failed: {e}")))?;
    lease.check()?;
    let mut taken = taken?;
    if taken.stats.changed_blocks.is_none() {
        taken.stats.changed_blocks = changed_blocks_fallback;
    }
    progress_into(status, &progress);
    if taken.stats.page_checksum_failures > 0 {
        // Backed up as found, as pg_basebackup does, but never silently: the pages are damaged on
        // this server's disk, and a restore brings the damage back unless WAL rewrites them.
        pgrx::warning!(
            "backstop: base backup {id}: {} page(s) failed their checksum: {}{}",
            taken.stats.page_checksum_failures,
            taken.stats.damaged_pages.join("; "),
            if taken.stats.page_checksum_failures as usize > taken.stats.damaged_pages.len() { "; ..." } else { "" }
        );
    }

    timed.enter(status, "pg_backup_stop");
    let (stop_lsn, backup_label, tablespace_map) = BackgroundWorker::transaction(|| {
        Spi::get_three::<String, String, String>(
            "SELECT lsn::text, labelfile, coalesce(spcmapfile, '') FROM pg_catalog.pg_backup_stop(false)",
        )
    })
    .map_err(spi_error)?;
    // The backup ends when pg_backup_stop returned; the row counting after it is not part of it.
    let stopped_at = SystemTime::now();
    let stop_lsn = Lsn::parse(&stop_lsn.unwrap_or_default())?;
    let backup_label = backup_label.unwrap_or_default();
    let (start_lsn, timeline) = take::parse_label(&backup_label)?;
    if summaries_timeline.is_some_and(|t| t != timeline) {
        // The summaries read were of another timeline than the backup's: what they left unread is
        // not known to be unchanged. Never published; the next attempt reads what it must.
        return Err(Error::InvalidInput(format!(
            "the timeline changed while base backup {id} ran (WAL summaries of timeline {} were used, the backup is on {timeline}); no manifest was written",
            summaries_timeline.unwrap_or_default()
        )));
    }

    timed.enter(status, "waiting for WAL to be archived");
    let segment_size = unsafe { pg_sys::wal_segment_size } as u32;
    wait_for_wal(&repository, timeline, start_lsn, stop_lsn, segment_size, &cancel)?;

    let row_counts = if args.count_rows {
        timed.enter(status, "counting rows (for the pitr drill)");
        match count_rows(&id, &repository, timeline, segment_size, &cancel) {
            Ok(counts) => Some(counts),
            Err(Error::Cancelled) => return Err(Error::Cancelled),
            Err(e) => {
                pgrx::warning!("backstop: backup {id} is published without row counts: {e}");
                None
            }
        }
    } else {
        None
    };

    timed.enter(status, "writing the manifest");
    lease.check()?;
    let identity = repo::cluster_identity();
    let manifest = taken.into_manifest(BackupFacts {
        id: id.clone(),
        cluster: repository.cluster().to_string(),
        system_identifier: identity.system_identifier,
        pg_version_num: identity.pg_version_num,
        wal_segment_size: segment_size,
        timeline,
        start_lsn,
        stop_lsn,
        start_time: started,
        stop_time: stopped_at,
        previous: previous.map(|p| p.id),
        backup_label,
        tablespace_map: tablespace_map.unwrap_or_default(),
        row_counts,
        relations,
    });
    io::block_on(manifest::write(&repository, &manifest))?;
    let stats = &manifest.stats;
    Ok(BaseBackupOutcome {
        backup_id: id,
        repository: repository.describe(),
        kind: kind.as_str(),
        start_lsn: start_lsn.to_string(),
        stop_lsn: stop_lsn.to_string(),
        timeline,
        files: stats.files,
        files_reused: stats.files_reused,
        packs_rechecked: stats.packs_rechecked,
        packs_unusable: stats.packs_unusable,
        bytes: stats.bytes,
        bytes_read: stats.bytes_read,
        bytes_new: stats.bytes_new,
        bytes_stored: stats.bytes_stored,
        packs_new: stats.packs_new,
        requests: stats.requests,
        seconds: clock.elapsed().as_secs_f64(),
        page_checksum_failures: stats.page_checksum_failures,
        damaged_pages: stats.damaged_pages.clone(),
        changed_blocks: stats.changed_blocks.clone(),
        files_summarized: stats.files_summarized,
        bytes_skipped: stats.bytes_skipped,
        phases: {
            timed.end();
            timed
        },
    })
}

/// Counts every permanent table of this database in one REPEATABLE READ snapshot, whose first
/// statement reads the WAL insert position: a recovery that stops just before that position
/// replays exactly the commits this snapshot sees (up to a commit caught between writing its WAL
/// record and becoming visible in that same instant). A restore point and a segment switch then
/// push the WAL up to it into the repository, and the count is kept only once it is there, so a
/// drill can always replay to it.
fn count_rows(
    id: &BackupId,
    repository: &Repository,
    timeline: u32,
    segment_size: u32,
    cancel: &CancellationToken,
) -> Result<manifest::RowCounts, Error> {
    // A scan of a big table must stop on SIGTERM; the manifest is not written yet, so dying here
    // leaves no backup, as any cancelled backup.
    jobs::die_on_sigterm();
    let set = |level: &str| {
        BackgroundWorker::transaction(|| Spi::run(&format!("SET default_transaction_isolation = '{level}'")))
            .map_err(spi_error)
    };
    set("repeatable read")?;
    let counted = BackgroundWorker::transaction(|| -> Result<manifest::RowCounts, Error> {
        let lsn = Spi::get_one::<String>("SELECT pg_catalog.pg_current_wal_insert_lsn()::text")
            .map_err(spi_error)?
            .unwrap_or_default();
        Spi::run("SET LOCAL lock_timeout = '30s'").map_err(spi_error)?;
        let database = Spi::get_one::<String>("SELECT pg_catalog.current_database()::text")
            .map_err(spi_error)?
            .unwrap_or_default();
        let tables = crate::spi::texts(
            "SELECT pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname) \
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind = 'r' AND c.relpersistence = 'p' \
               AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%' \
             ORDER BY 1",
            &[],
        )
        .map_err(spi_error)?;
        let mut counts = Vec::new();
        for table in tables {
            // Quoted by the server from the catalog; a table locked past lock_timeout is left out.
            match jobs::sql_step(|| Spi::get_one::<i64>(&format!("SELECT count(*) FROM {table}"))) {
                Ok(Ok(Some(rows))) => counts.push(manifest::TableRows { table, rows }),
                Ok(Err(e)) => pgrx::warning!("backstop: {table} was not counted: {e}"),
                Err(e) => pgrx::warning!("backstop: {table} was not counted: {e}"),
                Ok(Ok(None)) => {}
            }
        }
        Ok(manifest::RowCounts { database, lsn: Lsn::parse(&lsn)?, tables: counts })
    });
    set("read committed")?;
    let counted = counted?;
    let name = format!("backstop {id} row counts");
    BackgroundWorker::transaction(|| {
        Spi::get_one_with_args::<String>(
            "SELECT pg_catalog.pg_create_restore_point($1)::text",
            &[name.as_str().into()],
        )?;
        Spi::get_one::<String>("SELECT pg_catalog.pg_switch_wal()::text")
    })
    .map_err(spi_error)?;
    wait_for_wal(repository, timeline, counted.lsn, counted.lsn, segment_size, cancel)?;
    Ok(counted)
}

/// Waits until every segment from the backup's start to its stop LSN is in the repository: a
/// backup without them cannot be made consistent, so none is published before they are.
fn wait_for_wal(
    repository: &Repository,
    timeline: u32,
    start: Lsn,
    stop: Lsn,
    segment_size: u32,
    cancel: &CancellationToken,
) -> Result<(), Error> {
    let first = start.segment(segment_size);
    // The segment holding the last byte before the stop LSN (PostgreSQL's XLByteToPrevSeg).
    let last = Lsn(stop.0.saturating_sub(1)).segment(segment_size).max(first);
    let mut pending: Vec<String> = (first..=last).map(|n| wal::segment_name(timeline, n, segment_size)).collect();
    let deadline = Instant::now() + gucs::base_backup_wal_timeout();
    let mut backoff = jobs::Backoff::new(Duration::from_millis(250));
    loop {
        let mut still = Vec::new();
        for name in pending {
            let path = backstop_core::layout::wal(&WalFileName::parse(&name)?);
            if io::block_on(repository.head(&path))?.is_none() {
                still.push(name);
            }
        }
        pending = still;
        if pending.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::InvalidInput(format!(
                "WAL segment {} (needed to make the backup consistent) did not reach the repository within {} s; check archiving with backstop.doctor() and pg_stat_archiver. No manifest was written",
                pending[0],
                gucs::base_backup_wal_timeout().as_secs()
            )));
        }
        if !BackgroundWorker::wait_latch(Some(backoff.next())) || cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
    }
}

/// The `base_backup` job, run in a worker (registered in [`crate::JOBS`]).
pub struct BaseBackupJob;

impl crate::jobs::Job for BaseBackupJob {
    type Args = BaseBackupArgs;
    type Outcome = BaseBackupOutcome;
    const KIND: JobKind = JobKind::BaseBackup;
    /// It reads every table, pg_authid and the server's configuration.
    const NEEDS_OPERATOR: bool = true;
    const READ_ONLY: bool = false;

    fn run(
        &self,
        request: &JobRequest,
        args: BaseBackupArgs,
        status: &mut JobStatus,
    ) -> Result<BaseBackupOutcome, Error> {
        run(request, args, status)
    }
}
