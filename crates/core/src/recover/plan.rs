//! Planning a recovery to a target: which base backup, whether the archive reaches the target,
//! and how much WAL to fetch. One implementation for the `table_recover` job, `backstop restore`
//! and `backstop recover-table`.
//!
//! Invariants:
//! - A target the archive cannot reach (before the backup's end, after the last commit archived,
//!   on a timeline nothing reaches) is refused here, with the window, before anything is written.
//! - The WAL fetched for a time target ends with the segment after the one holding the first
//!   commit past the target (where replay stops; its record may continue there), found by reading
//!   the WAL, never by a fixed count of segments.

use crate::backups::restore::{self, RecoveryTarget};
use crate::backups::verify::{self, ArchivedWal, BackupStatus};
use crate::backups::{window, BackupId, BackupManifest};
use crate::error::Result;
use crate::repository::{CancellationToken, Repository};
use crate::wal::events::PgTime;

/// A checked recovery: the backup to restore and the archive's WAL files.
pub struct Plan {
    pub manifest: BackupManifest,
    pub backups: Vec<BackupStatus>,
    pub wal_files: Vec<ArchivedWal>,
}

/// Picks the newest backup that ends before `target` (or `requested`) and checks that the archive
/// reaches the target from it (time and LSN targets; the others are checked by PostgreSQL).
pub async fn plan(repository: &Repository, requested: Option<&BackupId>, target: &RecoveryTarget) -> Result<Plan> {
    let backups = verify::list_backups(repository).await?;
    let manifest = restore::choose_backup(&backups, requested, target)?.clone();
    let wal_files = verify::archived_wal(repository).await?;
    if matches!(target, RecoveryTarget::Time(_) | RecoveryTarget::Lsn(_)) {
        let segment_size = manifest.wal_segment_size;
        let parents = window::timeline_parents(repository, &wal_files).await;
        let mut parts = window::recovery_window(&backups, &wal_files, segment_size, None, &parents);
        window::read_commit_times(repository, &mut parts, segment_size).await?;
        window::check_target(&parts, &manifest, target)?;
    }
    Ok(Plan { manifest, backups, wal_files })
}

impl Plan {
    /// The last WAL segment number a recovery to `target` needs (u64::MAX: all there is).
    pub async fn last_segment(&self, repository: &Repository, target: &RecoveryTarget) -> Result<u64> {
        let segment_size = self.manifest.wal_segment_size;
        Ok(match target {
            RecoveryTarget::Lsn(lsn) => lsn.segment(segment_size) + 1,
            RecoveryTarget::Time(time) => {
                let segments = super::segments_along(&self.wal_files, self.manifest.timeline, &[], segment_size);
                let backup_start = self.manifest.start_lsn.segment(segment_size);
                let from = segments
                    .iter()
                    .position(|s| s.position(segment_size).is_some_and(|(_, n)| n >= backup_start))
                    .unwrap_or(0);
                let until = PgTime::from_unix_seconds(crate::time::unix_seconds(*time));
                let index = super::start_index(repository, &segments[from..], until, segment_size).await?;
                let range =
                    super::WalRange { segments: &segments, from: from + index, until, until_lsn: None, segment_size };
                let read =
                    super::read_events(repository, range, &CancellationToken::new(), &mut |_, _| {}, &mut |_| {})
                        .await?;
                read.last_segment
                    .filter(|_| read.reached_until)
                    .and_then(|name| segments.iter().find(|s| s.name == name))
                    .and_then(|segment| segment.position(segment_size))
                    .map_or(u64::MAX, |(_, n)| n + 1)
            }
            RecoveryTarget::Xid(_) | RecoveryTarget::Name(_) | RecoveryTarget::Latest | RecoveryTarget::Immediate => {
                u64::MAX
            }
        })
    }
}

/// A table a recovery reads: its OID (locks name relations by OID), database and files.
#[derive(Debug, Clone)]
pub struct TableIds {
    pub oid: u32,
    pub database: u32,
    pub files: Vec<crate::wal::records::RelFile>,
}

impl Plan {
    /// A target that stops replay while a transaction that commits later holds an ACCESS
    /// EXCLUSIVE lock on one of `tables` (a DROP, TRUNCATE or ALTER TABLE in progress at the
    /// target) leaves the hot standby paused there unable to read the table. Returns the LSN just
    /// before the earliest such lock when stopping there gives the same rows (no change to the
    /// tables commits in between); None when the target is fine as it is. Time and LSN targets
    /// only; an error when the lock cannot be stepped around.
    pub async fn before_pending_locks(
        &self,
        repository: &Repository,
        target: &RecoveryTarget,
        tables: &[TableIds],
    ) -> Result<Option<crate::wal::Lsn>> {
        let segment_size = self.manifest.wal_segment_size;
        let (until, until_lsn) = match target {
            RecoveryTarget::Time(time) => (PgTime::from_unix_seconds(crate::time::unix_seconds(*time)), None),
            RecoveryTarget::Lsn(lsn) => (PgTime(i64::MAX), Some(*lsn)),
            RecoveryTarget::Xid(_) | RecoveryTarget::Name(_) | RecoveryTarget::Latest | RecoveryTarget::Immediate => {
                return Ok(None)
            }
        };
        let segments = super::segments_along(&self.wal_files, self.manifest.timeline, &[], segment_size);
        let backup_start = self.manifest.start_lsn.segment(segment_size);
        let from =
            segments.iter().position(|s| s.position(segment_size).is_some_and(|(_, n)| n >= backup_start)).unwrap_or(0);
        // From the segment before the target's: a lock taken long before it is not seen (the
        // query's lock_timeout then says so).
        let start = match target {
            RecoveryTarget::Time(_) => super::start_index(repository, &segments[from..], until, segment_size).await?,
            _ => segments[from..]
                .iter()
                .position(|s| {
                    s.position(segment_size)
                        .is_some_and(|(_, n)| until_lsn.is_some_and(|l| n + 1 >= l.segment(segment_size)))
                })
                .unwrap_or(0),
        };
        let mut earliest: Option<(crate::wal::Lsn, Vec<super::history::TableChange>)> = None;
        for table in tables {
            let mut scan = super::history::TableScan::new(&table.files, table.database, PgTime(i64::MIN), 10_000);
            scan.table_oid = Some(table.oid);
            let range = super::WalRange { segments: &segments, from: from + start, until, until_lsn, segment_size };
            super::read_events(repository, range, &CancellationToken::new(), &mut |_, _| {}, &mut |f| scan.feed(f))
                .await?;
            if let Some(lock) = scan.pending_lock() {
                let changes = scan.finish();
                match &mut earliest {
                    Some((at, all)) => {
                        *at = (*at).min(lock);
                        all.extend(changes);
                    }
                    None => earliest = Some((lock, changes)),
                }
            }
        }
        let Some((lock, changes)) = earliest else { return Ok(None) };
        if let Some(change) = changes.iter().find(|c| c.commit_lsn > lock) {
            return Err(crate::error::Error::InvalidInput(format!(
                "at this target a transaction still in progress holds an ACCESS EXCLUSIVE lock on the table (taken at {lock}), and transaction {} changed the table after that lock and before the target: no point reads the table as the target asks",
                change.xid
            )));
        }
        Ok(Some(lock))
    }
}

/// The command-line options that make a throwaway server replay to `setting = value` and pause
/// there: a hot standby, read-only and never promoted (`recovery_target_action = pause`), whose
/// queries give up on a lock after 5 s (a transaction in progress at the target may hold one
/// until its commit, which never comes). `partial`: other databases are holes
/// (`recover::partial`), so invalid pages are tolerated and the log must be checked afterwards.
/// `value` is a time, LSN, xid or restore point name (plain words: `TableRecoverArgs` checks it).
///
/// The server is thrown away after: nothing it writes needs to survive a crash (`fsync = off`),
/// and no restartpoint needs to flush its buffers while it replays (a large `max_wal_size`, a
/// long `checkpoint_timeout`); the replayed WAL stays in its pg_wal until it stops.
pub fn paused_at_target(setting: &str, value: &str, inclusive: bool, partial: bool) -> String {
    format!(
        "-c hot_standby=on -c {setting}='{value}' -c recovery_target_inclusive={} -c recovery_target_action=pause \
         -c lock_timeout=5s -c fsync=off -c max_wal_size=1TB -c checkpoint_timeout=1d{}",
        if inclusive { "on" } else { "off" },
        if partial { " -c ignore_invalid_pages=on" } else { "" }
    )
}

/// Rows and a checksum of their text for `table` (SQL, quoted), the same wherever the rows are:
/// the sum of the first 60 bits of each row's md5 (exact, in numeric), so no sort of the rows is
/// needed (a sorted string_agg took as long as the copy). Prints `<rows> <checksum>`.
pub fn checksum_sql(table: &str) -> String {
    format!(
        "SELECT count(*) || ' ' || coalesce(pg_catalog.sum(('x' || pg_catalog.substr(pg_catalog.md5(t::text), 1, 15))::bit(60)::bigint), 0) FROM {table} t"
    )
}

/// The `-c` options a hot standby of a cluster needs at least (PostgreSQL refuses to replay with
/// lower ones), from `pg_controldata`'s output for it (run with `LC_ALL=C`).
pub fn hot_standby_limits(controldata: &str) -> String {
    let settings = [
        ("max_connections setting:", "max_connections"),
        ("max_worker_processes setting:", "max_worker_processes"),
        ("max_wal_senders setting:", "max_wal_senders"),
        ("max_prepared_xacts setting:", "max_prepared_transactions"),
        ("max_locks_per_xact setting:", "max_locks_per_transaction"),
    ];
    let mut options = Vec::new();
    for (label, name) in settings {
        let value = controldata.lines().find_map(|line| line.strip_prefix(label)).map(str::trim);
        if let Some(value) = value.filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit())) {
            options.push(format!("-c {name}={value}"));
        }
    }
    options.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hot_standby_gets_the_limits_its_primary_had_and_nothing_else() {
        let controldata = "pg_control version number:            1300\n\
max_connections setting:              250\n\
max_worker_processes setting:         8\n\
max_wal_senders setting:              10\n\
max_prepared_xacts setting:           0\n\
max_locks_per_xact setting:           64\n\
max_wal_size setting:                 x; rm -rf /\n";
        assert_eq!(
            hot_standby_limits(controldata),
            "-c max_connections=250 -c max_worker_processes=8 -c max_wal_senders=10 -c max_prepared_transactions=0 -c max_locks_per_transaction=64"
        );
        assert_eq!(hot_standby_limits("max_connections setting: 1; DROP\n"), "");
    }

    #[test]
    fn a_paused_server_is_a_hot_standby_never_promoted() {
        let options = paused_at_target("recovery_target_lsn", "0/3000000", false, true);
        assert!(options.contains("recovery_target_action=pause") && options.contains("hot_standby=on"), "{options}");
        assert!(options.contains("recovery_target_inclusive=off") && options.contains("ignore_invalid_pages=on"));
        assert!(!paused_at_target("recovery_target_xid", "7", true, false).contains("ignore_invalid_pages"));
    }
}
