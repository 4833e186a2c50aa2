//! A partial restore for recovering tables of one database: that database, the cluster-wide
//! files (`global/`, `pg_xact`, `pg_multixact`, `pg_control`, ...) and the template and
//! maintenance databases restored whole; every other database's relation files created as holes
//! of their recorded length (their `PG_VERSION` and `pg_filenode.map` whole).
//!
//! Why that is safe only with care: WAL replayed on a hole finds zero pages where a record
//! without a full-page image (`Heap2/VISIBLE` without checksums, hash-index deletes, ...)
//! expects data. PostgreSQL then remembers an "invalid page" and PANICs at consistency, unless
//! `ignore_invalid_pages = on`. So the throwaway server runs with it, stays a hot standby paused
//! at the target, is never promoted, and its log is checked: an invalid page of a relation
//! outside the skipped databases, or any PANIC, fails the recovery ([`check_log`]).
//!
//! Invariants:
//! - Only relation files are ever holes (`restore::sparse_database`); the table's database,
//!   template1 (OID 1), template0 (4) and postgres (5) never are.
//! - A log line naming an invalid page is trusted only when its relation path says a skipped
//!   database; anything unparsable counts as a problem.

use std::collections::BTreeSet;

use crate::backups::restore::sparse_database;
use crate::backups::BackupManifest;

/// Databases a recovery of one database always restores whole: template1, template0 and postgres
/// (fixed OIDs since PostgreSQL 15).
pub const ALWAYS_WHOLE: [u32; 3] = [1, 4, 5];

/// The databases of `manifest` whose relation files a recovery of tables in `database` creates as
/// holes: every one but `database` and [`ALWAYS_WHOLE`].
pub fn sparse_databases(manifest: &BackupManifest, database: u32) -> BTreeSet<u32> {
    manifest
        .files
        .iter()
        .filter_map(|f| sparse_database(&f.path))
        .filter(|db| *db != database && !ALWAYS_WHOLE.contains(db))
        .collect()
}

/// What a partial restore's throwaway server logged about pages.
#[derive(Debug, Default, PartialEq)]
pub struct LogCheck {
    /// Lines that make the result untrustworthy: a PANIC, or an invalid page (uninitialized,
    /// missing) of a relation not in a skipped database.
    pub problems: Vec<String>,
    /// Invalid pages in skipped databases: expected (replay wrote into a hole), tolerated.
    pub tolerated: u64,
}

/// Reads a throwaway server's log (see [`LogCheck`]); `sparse`: the skipped databases.
pub fn check_log(log: &str, sparse: &BTreeSet<u32>) -> LogCheck {
    let mut check = LogCheck::default();
    for line in log.lines() {
        if line.contains("PANIC:") {
            check.problems.push(line.to_string());
            continue;
        }
        let Some(at) = line.find(" of relation ") else { continue };
        let invalid = ["is uninitialized", "was uninitialized", "does not exist", "did not exist"]
            .iter()
            .any(|words| line.contains(words));
        if !line.contains("page ") || !invalid {
            continue;
        }
        let path = line[at + " of relation ".len()..].split_whitespace().next().unwrap_or_default();
        match sparse_database(path).is_some_and(|db| sparse.contains(&db)) {
            true => check.tolerated += 1,
            false => check.problems.push(line.to_string()),
        }
    }
    check
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_pages_are_tolerated_only_in_skipped_databases() {
        let sparse: BTreeSet<u32> = [16385].into();
        let log = "\
2026-12-08 01:00:00 UTC [10] WARNING:  page 0 of relation base/16385/16386 was uninitialized
2026-12-08 01:00:00 UTC [10] WARNING:  page 7 of relation pg_tblspc/16400/PG_15_202209061/16385/16390_vm did not exist
2026-12-08 01:00:00 UTC [10] WARNING:  WAL contains references to invalid pages
2026-12-08 01:00:00 UTC [10] LOG:  consistent recovery state reached at 0/3000100";
        assert_eq!(check_log(log, &sparse), LogCheck { problems: vec![], tolerated: 2 });
        let ours = "2026-12-08 01:00:00 UTC [10] WARNING:  page 3 of relation base/16384/16500 is uninitialized";
        assert_eq!(check_log(ours, &sparse).problems, vec![ours.to_string()]);
        let catalog = "WARNING:  page 1 of relation global/1262 does not exist";
        assert_eq!(check_log(catalog, &sparse).problems.len(), 1);
        let panic = "PANIC:  WAL contains references to invalid pages";
        assert_eq!(check_log(panic, &sparse).problems.len(), 1);
    }
}
