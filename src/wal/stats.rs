//! Archiver statistics in shared memory: written by the archiver, read by `backstop.archive_status`.
//! Only present when backstop is preloaded (shared memory is reserved at server start).

use pgrx::lwlock::PgLwLock;
use pgrx::pg_shmem_init;
use pgrx::prelude::*;
use pgrx::shmem::PGRXSharedMemory;

const NAME_LEN: usize = 64;
const ERROR_LEN: usize = 1024;

#[derive(Clone, Copy)]
pub struct ArchiveStats {
    pub archived_count: u64,
    pub already_archived_count: u64,
    pub plain_bytes: u64,
    pub stored_bytes: u64,
    pub failed_count: u64,
    pub lookahead_hits: u64,
    pub in_flight: u32,
    pub last_archived_time: i64,
    pub last_failed_time: i64,
    pub stats_reset: i64,
    last_archived_wal: [u8; NAME_LEN],
    last_failed_wal: [u8; NAME_LEN],
    last_error: [u8; ERROR_LEN],
}

impl Default for ArchiveStats {
    fn default() -> Self {
        ArchiveStats {
            archived_count: 0,
            already_archived_count: 0,
            plain_bytes: 0,
            stored_bytes: 0,
            failed_count: 0,
            lookahead_hits: 0,
            in_flight: 0,
            last_archived_time: 0,
            last_failed_time: 0,
            stats_reset: 0,
            last_archived_wal: [0; NAME_LEN],
            last_failed_wal: [0; NAME_LEN],
            last_error: [0; ERROR_LEN],
        }
    }
}

unsafe impl PGRXSharedMemory for ArchiveStats {}

fn store_text<const N: usize>(target: &mut [u8; N], text: &str) {
    let mut end = text.len().min(N - 1);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    target.fill(0);
    target[..end].copy_from_slice(&text.as_bytes()[..end]);
}

fn load_text(source: &[u8]) -> Option<String> {
    let end = source.iter().position(|&b| b == 0).unwrap_or(source.len());
    (end > 0).then(|| String::from_utf8_lossy(&source[..end]).into_owned())
}

impl ArchiveStats {
    pub fn last_archived_wal(&self) -> Option<String> {
        load_text(&self.last_archived_wal)
    }
    pub fn last_failed_wal(&self) -> Option<String> {
        load_text(&self.last_failed_wal)
    }
    pub fn last_error(&self) -> Option<String> {
        load_text(&self.last_error)
    }
}

static ARCHIVE_STATS: PgLwLock<ArchiveStats> = unsafe { PgLwLock::new(c"backstop_archive_stats") };

/// Called from _PG_init while preloading.
pub fn init() {
    pg_shmem_init!(ARCHIVE_STATS);
}

fn available() -> bool {
    crate::loaded_at_startup()
}

fn now() -> i64 {
    unsafe { pg_sys::GetCurrentTimestamp() }
}

pub fn snapshot() -> Option<ArchiveStats> {
    available().then(|| *ARCHIVE_STATS.share())
}

pub fn record_archived(file: &str, plain_bytes: u64, stored_bytes: u64, already_there: bool, from_lookahead: bool) {
    if !available() {
        return;
    }
    let mut stats = ARCHIVE_STATS.exclusive();
    if stats.stats_reset == 0 {
        stats.stats_reset = now();
    }
    if already_there {
        stats.already_archived_count += 1;
    } else {
        stats.archived_count += 1;
        stats.plain_bytes += plain_bytes;
        stats.stored_bytes += stored_bytes;
    }
    if from_lookahead {
        stats.lookahead_hits += 1;
    }
    store_text(&mut stats.last_archived_wal, file);
    stats.last_archived_time = now();
}

/// `message` must not contain secrets; backstop's errors never do.
pub fn record_failure(file: &str, message: &str) {
    if !available() {
        return;
    }
    let mut stats = ARCHIVE_STATS.exclusive();
    if stats.stats_reset == 0 {
        stats.stats_reset = now();
    }
    stats.failed_count += 1;
    store_text(&mut stats.last_failed_wal, file);
    store_text(&mut stats.last_error, message);
    stats.last_failed_time = now();
}

pub fn record_in_flight(count: usize) {
    if available() {
        ARCHIVE_STATS.exclusive().in_flight = count as u32;
    }
}

/// WAL files PostgreSQL has finished and not yet archived (`.ready` in pg_wal/archive_status).
pub fn ready_files() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("pg_wal/archive_status") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str().and_then(|n| n.strip_suffix(".ready")).map(str::to_string))
        .collect()
}

fn timestamp(value: i64) -> Option<TimestampWithTimeZone> {
    (value != 0).then(|| TimestampWithTimeZone::try_from(value).ok()).flatten()
}

/// One row: what the archive module has done since the server started. Read through the
/// `backstop.archive_status` view.
#[pg_extern(volatile, parallel_unsafe)]
fn archive_status_snapshot() -> TableIterator<
    'static,
    (
        name!(last_archived_wal, Option<String>),
        name!(last_archived_time, Option<TimestampWithTimeZone>),
        name!(archived_count, i64),
        name!(already_archived_count, i64),
        name!(archived_bytes, i64),
        name!(stored_bytes, i64),
        name!(compression_ratio, Option<f64>),
        name!(failed_count, i64),
        name!(last_failed_wal, Option<String>),
        name!(last_failed_time, Option<TimestampWithTimeZone>),
        name!(last_error, Option<String>),
        name!(lookahead_in_flight, i32),
        name!(lookahead_hits, i64),
        name!(ready_to_archive, i64),
        name!(stats_since, Option<TimestampWithTimeZone>),
    ),
> {
    let Some(stats) = snapshot() else {
        pgrx::pg_sys::panic::ErrorReport::new(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "backstop.archive_status needs backstop in shared_preload_libraries",
            "backstop",
        )
        .set_hint("Add backstop to shared_preload_libraries in postgresql.conf and restart the server.")
        .report(PgLogLevel::ERROR);
        unreachable!()
    };
    let ratio = (stats.stored_bytes > 0).then(|| stats.plain_bytes as f64 / stats.stored_bytes as f64);
    TableIterator::once((
        stats.last_archived_wal(),
        timestamp(stats.last_archived_time),
        stats.archived_count as i64,
        stats.already_archived_count as i64,
        stats.plain_bytes as i64,
        stats.stored_bytes as i64,
        ratio,
        stats.failed_count as i64,
        stats.last_failed_wal(),
        timestamp(stats.last_failed_time),
        stats.last_error(),
        stats.in_flight as i32,
        stats.lookahead_hits as i64,
        ready_files().len() as i64,
        timestamp(stats.stats_reset),
    ))
}

extension_sql!(
    r#"
CREATE VIEW archive_status AS SELECT * FROM archive_status_snapshot();
COMMENT ON VIEW archive_status IS 'What the backstop archive module has shipped since the server started';
"#,
    name = "archive_status_view",
    requires = [archive_status_snapshot]
);

/// The WAL file this server archived last, when this session looks at the repository (and
/// namespace) the archiver ships into: in another one it is not expected. (An unset string
/// setting reads as '' through current_setting and as NULL in pg_settings.reset_val.)
pub fn last_archived_here() -> Option<String> {
    crate::spi::text(
        "SELECT a.last_archived_wal::text FROM pg_catalog.pg_stat_archiver a, pg_catalog.pg_settings s \
          WHERE s.name = 'backstop.repository' AND s.setting = s.reset_val \
            AND coalesce(pg_catalog.current_setting('backstop.cluster_name', true), '') = \
                (SELECT coalesce(reset_val, '') FROM pg_catalog.pg_settings WHERE name = 'backstop.cluster_name')",
        &[],
    )
}
