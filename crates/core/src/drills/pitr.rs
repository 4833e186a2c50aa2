//! The repository half of the `pitr` drill: the newest valid base backup restored into a scratch
//! directory with the same code as `backstop restore`, the WAL to replay fetched through every
//! checksum into a spool beside it, and recovery settings that read only that spool. The
//! extension then starts a throwaway server on it and runs the smoke checks.
//!
//! The spool keeps the drill independent of the CLI binary and of the network once prepared:
//! `restore_command` is a plain `cp` from a directory this drill wrote and verified.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::backups::manifest::{RowCounts, TableRows};
use crate::backups::restore::{self, RestoreOptions, RestoreProgress, RestoreSummary};
use crate::backups::verify;
use crate::error::{Error, Result};
use crate::repository::{CancellationToken, Repository};
use crate::wal::WalFileKind;

#[derive(Debug, Clone, Serialize)]
pub struct Prepared {
    #[serde(skip)]
    pub data_dir: PathBuf,
    pub backup: String,
    /// Unix seconds when the backup ended: recovery reaches at least this point.
    pub backup_end: f64,
    pub restored: RestoreSummary,
    /// WAL files fetched for replay (segments and timeline history files).
    pub wal_files: u64,
    pub wal_bytes: u64,
    /// The newest segment fetched: recovery replays up to its end.
    pub replay_to: String,
    /// The rows counted right after the backup, and the WAL position they match.
    #[serde(skip)]
    pub row_counts: Option<RowCounts>,
    /// With [`Scope::wal_while_replaying`]: the segments still being fetched.
    #[serde(skip)]
    pub wal_fetch: Option<Arc<WalFetch>>,
}

/// What to restore for a recovery and how (see [`prepare_backup`]).
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// The last WAL segment number to fetch (`u64::MAX`: all there is).
    pub last_segment: u64,
    /// Databases whose relation files are holes (a partial restore).
    pub sparse_databases: std::collections::BTreeSet<u32>,
    /// Fetch the WAL segments in the background while the server replays them (its
    /// restore_command waits for each one) instead of before it starts.
    pub wal_while_replaying: bool,
}

/// The WAL segments a recovery fetches while it replays.
#[derive(Debug, Default)]
pub struct WalFetch {
    pub done: std::sync::atomic::AtomicBool,
    pub bytes: std::sync::atomic::AtomicU64,
    /// Why the fetching stopped short, if it did.
    pub error: std::sync::Mutex<Option<String>>,
}

/// Marks the spool complete: the restore_command stops waiting for a segment not there.
const SPOOL_COMPLETE: &str = ".complete";

/// Prepares `dir` (which must be empty or absent) for a recovery of the newest valid backup,
/// replaying at most `max_replay` bytes of WAL past its end. Refuses up front, with the reason,
/// when the file system holding `dir` lacks room for the files and the WAL.
pub async fn prepare(
    repository: &Repository,
    dir: &Path,
    max_replay: u64,
    progress: Arc<RestoreProgress>,
    cancel: &CancellationToken,
) -> Result<Prepared> {
    let backups = verify::list_backups(repository).await?;
    let manifest =
        backups.iter().rev().find(|b| b.verified()).and_then(|b| b.manifest.clone()).ok_or_else(|| Error::Job {
            message: "the repository holds no valid base backup to drill".into(),
            hint: "Take a base backup (SELECT * FROM backstop.base_backup()) and run the drill again.".into(),
        })?;
    let segment_size = manifest.wal_segment_size as u64;
    // At least up to where the backup's row counts were taken, so the counts can be compared.
    let counted_at = manifest.row_counts.as_ref().map(|c| c.lsn.segment(segment_size as u32)).unwrap_or(0);
    let last_allowed =
        (manifest.stop_lsn.segment(segment_size as u32) + (max_replay / segment_size).max(1)).max(counted_at);
    let scope = Scope { last_segment: last_allowed, ..Scope::default() };
    prepare_backup(repository, dir, &manifest, &scope, progress, cancel).await
}

/// Prepares `dir` (empty or absent) for a recovery of `manifest`'s backup: its files restored into
/// `dir/data`, the archived WAL from its start up to segment number `last_allowed` (of its
/// timeline or later ones, with every history file) fetched through every checksum into
/// `dir/wal`, and recovery settings that read only that spool. Refuses up front when the file
/// system lacks room. The recovery target is the caller's to add (on the server's command line).
/// The relation files of `sparse_databases` are holes of their length (a partial restore: the
/// server must then run with `ignore_invalid_pages` and never be promoted).
pub async fn prepare_backup(
    repository: &Repository,
    dir: &Path,
    manifest: &crate::backups::BackupManifest,
    scope: &Scope,
    progress: Arc<RestoreProgress>,
    cancel: &CancellationToken,
) -> Result<Prepared> {
    let (last_allowed, sparse_databases) = (scope.last_segment, &scope.sparse_databases);
    let segment_size = manifest.wal_segment_size as u64;
    let first = manifest.start_lsn.segment(segment_size as u32);
    let archived = verify::archived_wal(repository).await?;
    let mut wal: Vec<verify::ArchivedWal> = archived
        .into_iter()
        .filter(|a| match a.name.kind {
            WalFileKind::History => true,
            WalFileKind::Segment => a
                .name
                .position(segment_size as u32)
                .is_some_and(|(tli, number)| tli >= manifest.timeline && (first..=last_allowed).contains(&number)),
            _ => false,
        })
        .collect();
    wal.sort_by(|a, b| a.name.name.cmp(&b.name.name));
    let replay_to =
        wal.iter().filter(|a| a.name.kind == WalFileKind::Segment).map(|a| a.name.name.clone()).max().ok_or_else(
            || Error::Job {
                message: format!("no WAL from backup {} is in the repository", manifest.id),
                hint:
                    "The backup cannot be recovered without its WAL: check archiving (SELECT * FROM backstop.doctor())."
                        .into(),
            },
        )?;
    let segments = wal.iter().filter(|a| a.name.kind == WalFileKind::Segment).count() as u64;

    std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    let sparse: u64 = manifest
        .files
        .iter()
        .filter(|f| restore::sparse_database(&f.path).is_some_and(|db| sparse_databases.contains(&db)))
        .map(|f| f.size)
        .sum();
    // The WAL twice: fetched into the spool, then copied into pg_wal as it replays.
    crate::disk::check_room(dir, manifest.stats.bytes.saturating_sub(sparse) + 2 * segments * segment_size)?;

    let data_dir = dir.join("data");
    let tablespace_map: HashMap<u32, PathBuf> =
        manifest.tablespaces.iter().map(|t| (t.oid, dir.join(format!("tablespace_{}", t.oid)))).collect();
    let options = RestoreOptions {
        target_dir: data_dir.clone(),
        tablespace_map,
        delta: false,
        parallel: 2,
        sparse_databases: sparse_databases.clone(),
    };
    let spool = dir.join("wal");
    std::fs::create_dir_all(&spool).map_err(|e| Error::io("create", &spool, e))?;
    // The WAL is fetched (read, authenticated, decompressed) while the files are restored, a few
    // segments at a time (at most WAL_FETCHES in memory), each written under a temporary name and
    // renamed: the restore_command never copies half a segment. With `wal_while_replaying` the
    // timeline history files are fetched now and the segments go on in the background.
    let (now, later): (Vec<_>, Vec<_>) = match scope.wal_while_replaying {
        false => (wal.iter().map(|a| a.name.clone()).collect(), Vec::new()),
        true => wal.iter().map(|a| a.name.clone()).partition(|n| n.kind == WalFileKind::History),
    };
    let (restored, wal_bytes) = futures::try_join!(
        restore::restore(repository, manifest, &options, progress, cancel),
        fetch_into(repository.clone(), now, spool.clone(), cancel.clone())
    )?;
    let wal_fetch = scope.wal_while_replaying.then(|| {
        let state = Arc::new(WalFetch::default());
        let (repository, spool, cancel, task_state) =
            (repository.clone(), spool.clone(), cancel.clone(), state.clone());
        tokio::spawn(async move {
            let result = fetch_into(repository, later, spool.clone(), cancel).await;
            match result {
                Ok(bytes) => task_state.bytes.store(bytes, std::sync::atomic::Ordering::Relaxed),
                Err(e) => *task_state.error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string()),
            }
            let _ = std::fs::write(spool.join(SPOOL_COMPLETE), b"");
            task_state.done.store(true, std::sync::atomic::Ordering::Release);
        });
        state
    });
    let spool_text = spool.to_str().filter(|s| !s.contains(['\'', '"', '\\', '\n'])).ok_or_else(|| {
        Error::InvalidInput(format!("the drill directory {} has characters a shell command cannot hold", dir.display()))
    })?;
    // The drill's server runs nothing the backup configured: its postgresql.auto.conf (preload
    // libraries, archive_command, includes) is replaced by the drill's own recovery settings, and
    // the extension gives it its own postgresql.conf and pg_hba.conf.
    let auto_conf = data_dir.join("postgresql.auto.conf");
    crate::store::file::write_file_atomically(&auto_conf, b"# written by the backstop pitr drill\n")?;
    // In the background mode a segment not in the spool yet is waited for until the fetching is
    // complete (history files are all there before the server starts: never waited for).
    let restore_command = match scope.wal_while_replaying {
        false => format!("cp \"{spool_text}/%f\" \"%p\""),
        true => format!(
            "case \"%f\" in *.history) ;; *) while [ ! -e \"{spool_text}/%f\" ] && [ ! -e \"{spool_text}/{SPOOL_COMPLETE}\" ]; do sleep 0.05; done ;; esac; cp \"{spool_text}/%f\" \"%p\""
        ),
    };
    let settings = [("restore_command", restore_command), ("recovery_target_timeline", "latest".to_string())];
    restore::prepare_recovery(&data_dir, manifest, &settings, false)?;
    Ok(Prepared {
        data_dir,
        backup: manifest.id.to_string(),
        backup_end: manifest.stop_time,
        restored,
        wal_files: wal.len() as u64,
        wal_bytes,
        replay_to,
        row_counts: manifest.row_counts.clone(),
        wal_fetch,
    })
}

/// Fetches `names` from the archive into `spool`, a few at a time, each under a temporary name
/// then renamed; the plain bytes fetched.
async fn fetch_into(
    repository: Repository,
    names: Vec<crate::wal::WalFileName>,
    spool: PathBuf,
    cancel: CancellationToken,
) -> Result<u64> {
    use futures::{StreamExt, TryStreamExt};
    const WAL_FETCHES: usize = 3;
    let mut fetched = futures::stream::iter(names.into_iter().map(|name| {
        let (repository, spool, cancel) = (repository.clone(), spool.clone(), cancel.clone());
        async move {
            if cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            let plain = repository.get_bytes(&crate::layout::wal(&name)).await?;
            let len = plain.len() as u64;
            tokio::task::spawn_blocking(move || {
                let (part, path) = (spool.join(format!(".{}.part", name.name)), spool.join(&name.name));
                std::fs::write(&part, plain).map_err(|e| Error::io("write", &part, e))?;
                std::fs::rename(&part, &path).map_err(|e| Error::io("rename", &path, e))
            })
            .await
            .map_err(|e| Error::InvalidInput(format!("a WAL writer thread failed: {e}")))??;
            Ok::<u64, Error>(len)
        }
    }))
    .buffer_unordered(WAL_FETCHES);
    let mut total = 0;
    while let Some(len) = fetched.try_next().await? {
        total += len;
    }
    Ok(total)
}

/// One table's rows at backup time and after recovery to the same point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ComparedTable {
    pub table: String,
    pub rows_at_backup: i64,
    pub rows_recovered: i64,
}

/// Compares what a server recovered to `counts.lsn` holds with the rows counted when the backup
/// was taken: `count` reads one table there. Every difference (and every table that could not be
/// read) is named in one error; the drill fails on any.
pub fn compare_row_counts<'a>(
    backup: &str,
    counts: &RowCounts,
    tables: impl IntoIterator<Item = &'a TableRows>,
    mut count: impl FnMut(&TableRows) -> std::result::Result<i64, String>,
) -> Result<Vec<ComparedTable>> {
    let mut compared = Vec::new();
    let mut differ = Vec::new();
    for recorded in tables {
        match count(recorded) {
            Ok(found) if found == recorded.rows => compared.push(ComparedTable {
                table: recorded.table.clone(),
                rows_at_backup: recorded.rows,
                rows_recovered: found,
            }),
            Ok(found) => differ.push(format!("{} holds {found} rows, not {}", recorded.table, recorded.rows)),
            Err(e) => differ.push(format!("{} could not be read ({e})", recorded.table)),
        }
    }
    if differ.is_empty() {
        return Ok(compared);
    }
    Err(Error::Job {
        message: format!(
            "backup {backup} recovered to {} does not hold the rows counted when it was taken: {}",
            counts.lsn,
            differ.join("; ")
        ),
        hint:
            "Do not rely on this backup: take a new base backup now, run backstop verify, and keep the older backups."
                .into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backups::Lsn;

    fn counts() -> RowCounts {
        RowCounts {
            database: "app".into(),
            lsn: Lsn(0x5000028),
            tables: vec![
                TableRows { table: "public.orders".into(), rows: 42 },
                TableRows { table: "public.users".into(), rows: 7 },
            ],
        }
    }

    #[test]
    fn equal_counts_pass_and_are_reported() {
        let c = counts();
        let compared = compare_row_counts("B", &c, &c.tables, |t| Ok(t.rows)).unwrap();
        assert_eq!(compared.len(), 2);
        assert_eq!(
            compared[0],
            ComparedTable { table: "public.orders".into(), rows_at_backup: 42, rows_recovered: 42 }
        );
    }

    #[test]
    fn a_missing_row_or_an_unreadable_table_fails_naming_each() {
        let c = counts();
        let error = compare_row_counts("B", &c, &c.tables, |t| {
            if t.table == "public.orders" {
                Ok(41)
            } else {
                Err("relation does not exist".into())
            }
        })
        .unwrap_err();
        let text = error.to_string();
        assert!(text.contains("backup B recovered to 0/5000028"), "{text}");
        assert!(text.contains("public.orders holds 41 rows, not 42"), "{text}");
        assert!(text.contains("public.users could not be read (relation does not exist)"), "{text}");
        assert!(error.hint().contains("take a new base backup"));
    }

    #[test]
    fn only_the_chosen_tables_are_read() {
        let c = counts();
        let mut read = Vec::new();
        compare_row_counts("B", &c, c.tables.iter().filter(|t| t.table == "public.users"), |t| {
            read.push(t.table.clone());
            Ok(t.rows)
        })
        .unwrap();
        assert_eq!(read, ["public.users"]);
    }
}
