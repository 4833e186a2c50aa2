//! "When did it happen?": the transactions that changed one table, read from the WAL.
//!
//! A table is followed through its relation files: the ones it is known to have had (recorded by
//! base backups at their start, and the current one), and each file that replaced one of them
//! (TRUNCATE, VACUUM FULL, CLUSTER: a transaction that creates a file and, at commit, drops the
//! table's). Rows are counted from heap records on those files, per top-level transaction
//! (a subtransaction's records join its parent at commit); aborted work is not listed.
//!
//! Invariants:
//! - Memory is bounded: per transaction in flight only the counts of the table's files, and at
//!   most `max_rows` changes kept (the newest).
//! - Every change carries the recovery target that undoes it (`recovery_target_inclusive = false`):
//!   just before its commit record, or, when the transaction took an ACCESS EXCLUSIVE lock in the
//!   table's database (DROP, TRUNCATE, ALTER TABLE), just before that lock's record: a server paused
//!   between the lock and the commit replays the lock and cannot read the table until the commit.
//!   Which relation a lock is on is not known here (an OID, not a file), so the earliest lock the
//!   transaction took in the database is used: the target may be earlier than needed by other
//!   transactions' commits in between, never later.
//! - A file that replaces the table's is, when one of the files known for the table is among the
//!   files the transaction created, that one; otherwise the first main-fork file it created in
//!   the table's database (PostgreSQL gives the heap its new file before its TOAST table and
//!   indexes). Said in the README.

use std::collections::{HashMap, HashSet, VecDeque};

use serde::Serialize;

use crate::wal::events::{Event, Found, PgTime, RowChange};
use crate::wal::records::RelFile;
use crate::wal::Lsn;

/// What happened to the table's file in a transaction, besides rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileChange {
    /// Its file was replaced by an empty one (TRUNCATE).
    Truncated,
    /// Its file was replaced by a rewritten copy (VACUUM FULL, CLUSTER, ALTER TABLE rewriting).
    Rewritten,
    /// Its file was dropped and nothing replaced it (DROP TABLE).
    Dropped,
}

/// One transaction that changed the table.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TableChange {
    pub xid: u32,
    pub commit_time: PgTime,
    /// The same instant, microseconds since 1970 (for callers converting it).
    pub commit_unix_micros: i64,
    pub commit_lsn: Lsn,
    pub commit_end_lsn: Lsn,
    pub inserted: u64,
    pub updated: u64,
    pub deleted: u64,
    pub file_change: Option<FileChange>,
    /// Recover to just before this change: `recovery_target_lsn = target_lsn`,
    /// `recovery_target_inclusive = false`.
    pub target_lsn: Lsn,
}

#[derive(Default)]
struct InFlight {
    inserted: u64,
    updated: u64,
    deleted: u64,
    /// Main-fork files it created, in order.
    created: Vec<RelFile>,
    /// It wrote page images of a file it created (a rewrite copies pages; TRUNCATE does not).
    imaged: HashSet<RelFile>,
    /// Where it first took an ACCESS EXCLUSIVE lock in the table's database.
    first_lock: Option<Lsn>,
    /// It took one on the table itself.
    locked_table: bool,
}

impl InFlight {
    fn absorb(&mut self, other: InFlight) {
        self.inserted += other.inserted;
        self.updated += other.updated;
        self.deleted += other.deleted;
        self.created.extend(other.created);
        self.imaged.extend(other.imaged);
        self.locked_table |= other.locked_table;
        self.first_lock = match (self.first_lock, other.first_lock) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

/// Follows one table through WAL events fed in order.
pub struct TableScan {
    /// The table's files: known ones and their successors found so far.
    files: HashSet<RelFile>,
    known: HashSet<RelFile>,
    database: u32,
    in_flight: HashMap<u32, InFlight>,
    changes: VecDeque<TableChange>,
    max_rows: usize,
    /// Changes committed before this time are followed (files) but not listed.
    since: PgTime,
    /// Changes not listed because more than `max_rows` were found.
    pub omitted: u64,
    /// The table's OID, when known: ACCESS EXCLUSIVE locks on it are counted.
    pub table_oid: Option<u32>,
    /// Transactions committed since `since` that took an ACCESS EXCLUSIVE lock on the table
    /// (ALTER TABLE, DROP, TRUNCATE, LOCK TABLE), whatever else they did: a definition may have
    /// changed without a row or file changing. The newest `max_rows` (`locks_omitted` the rest).
    pub lock_xids: VecDeque<u32>,
    pub locks_omitted: u64,
}

impl TableScan {
    /// `known`: every file the table is known to have had (at least one); `database`: its
    /// database's OID.
    pub fn new(known: &[RelFile], database: u32, since: PgTime, max_rows: usize) -> Self {
        let files: HashSet<RelFile> = known.iter().copied().collect();
        TableScan {
            known: files.clone(),
            files,
            database,
            in_flight: HashMap::new(),
            changes: VecDeque::new(),
            max_rows: max_rows.max(1),
            since,
            omitted: 0,
            table_oid: None,
            lock_xids: VecDeque::new(),
            locks_omitted: 0,
        }
    }

    pub fn feed(&mut self, found: &Found) {
        match &found.event {
            Event::Rows { xid, rel, change, rows } if self.files.contains(rel) => {
                let entry = self.in_flight.entry(*xid).or_default();
                let rows = u64::from(*rows);
                match change {
                    RowChange::Insert => entry.inserted += rows,
                    RowChange::Update => entry.updated += rows,
                    RowChange::Delete => entry.deleted += rows,
                }
            }
            Event::FileCreated { xid, rel, fork: 0 } if rel.database == self.database => {
                self.in_flight.entry(*xid).or_default().created.push(*rel);
            }
            Event::Locks { locks } => {
                for lock in locks.iter().filter(|l| l.database == self.database) {
                    let entry = self.in_flight.entry(lock.xid).or_default();
                    entry.first_lock = Some(entry.first_lock.map_or(found.lsn, |at| at.min(found.lsn)));
                    entry.locked_table |= Some(lock.relation) == self.table_oid;
                }
            }
            Event::PageImage { xid, rel } => {
                if let Some(entry) = self.in_flight.get_mut(xid).filter(|e| e.created.contains(rel)) {
                    entry.imaged.insert(*rel);
                }
            }
            Event::Xact(end) => {
                let mut work = self.in_flight.remove(&end.xid).unwrap_or_default();
                for sub in &end.subxacts {
                    if let Some(sub) = self.in_flight.remove(sub) {
                        work.absorb(sub);
                    }
                }
                if !end.kind.committed() {
                    return;
                }
                let dropped_ours = end.dropped.iter().any(|f| self.files.contains(f));
                let file_change = match dropped_ours {
                    false => None,
                    true => {
                        let successor = work
                            .created
                            .iter()
                            .find(|f| self.known.contains(f))
                            .or_else(|| work.created.first())
                            .copied();
                        for dropped in &end.dropped {
                            self.files.remove(dropped);
                        }
                        match successor {
                            Some(file) => {
                                self.files.insert(file);
                                match work.imaged.contains(&file) {
                                    true => Some(FileChange::Rewritten),
                                    false => Some(FileChange::Truncated),
                                }
                            }
                            None => Some(FileChange::Dropped),
                        }
                    }
                };
                if end.time < self.since {
                    return;
                }
                if work.locked_table {
                    if self.lock_xids.len() == self.max_rows {
                        self.lock_xids.pop_front();
                        self.locks_omitted += 1;
                    }
                    self.lock_xids.push_back(end.xid);
                }
                let rows = work.inserted + work.updated + work.deleted;
                if rows == 0 && file_change.is_none() {
                    return;
                }
                if self.changes.len() == self.max_rows {
                    self.changes.pop_front();
                    self.omitted += 1;
                }
                self.changes.push_back(TableChange {
                    xid: end.xid,
                    commit_time: end.time,
                    commit_unix_micros: end.time.unix_micros(),
                    commit_lsn: found.lsn,
                    commit_end_lsn: found.end_lsn,
                    inserted: work.inserted,
                    updated: work.updated,
                    deleted: work.deleted,
                    file_change,
                    target_lsn: work.first_lock.map_or(found.lsn, |at| at.min(found.lsn)),
                });
            }
            _ => {}
        }
    }

    /// Where the earliest ACCESS EXCLUSIVE lock on the table is that a transaction still in
    /// flight (not committed or aborted in what was read) took: a server paused here replays it
    /// and cannot read the table.
    pub fn pending_lock(&self) -> Option<Lsn> {
        self.in_flight.values().filter(|w| w.locked_table).filter_map(|w| w.first_lock).min()
    }

    /// Whether the table still has a file (it was not dropped in what was read).
    pub fn table_exists(&self) -> bool {
        !self.files.is_empty()
    }

    /// The changes, newest first.
    pub fn finish(self) -> Vec<TableChange> {
        self.changes.into_iter().rev().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::events::{StandbyLock, XactEnd, XactKind};

    const DB: u32 = 5;

    fn rel(relfilenode: u32) -> RelFile {
        RelFile { tablespace: 1663, database: DB, relfilenode }
    }

    struct Wal {
        at: u64,
        events: Vec<Found>,
    }

    impl Wal {
        fn push(&mut self, event: Event) {
            self.at += 0x40;
            self.events.push(Found { lsn: Lsn(self.at), end_lsn: Lsn(self.at + 0x20), event });
        }
        fn rows(&mut self, xid: u32, file: u32, change: RowChange, rows: u32) {
            self.push(Event::Rows { xid, rel: rel(file), change, rows });
        }
        fn end(&mut self, kind: XactKind, xid: u32, time: i64, subxacts: Vec<u32>, dropped: Vec<u32>) {
            let dropped = dropped.into_iter().map(rel).collect();
            self.push(Event::Xact(XactEnd { kind, xid, time: PgTime(time), subxacts, dropped, database: Some(DB) }));
        }
    }

    #[test]
    fn changes_are_counted_per_transaction_through_truncate_and_rewrite_until_the_drop() {
        let mut wal = Wal { at: 0, events: Vec::new() };
        wal.rows(10, 100, RowChange::Insert, 3);
        wal.rows(10, 999, RowChange::Insert, 50); // another table
        wal.end(XactKind::Commit, 10, 1_000, vec![], vec![]);
        // A subtransaction's rows join its parent; an aborted transaction is not listed.
        wal.rows(12, 100, RowChange::Update, 2);
        wal.rows(11, 100, RowChange::Delete, 1);
        wal.end(XactKind::Commit, 11, 2_000, vec![12], vec![]);
        wal.rows(13, 100, RowChange::Delete, 3);
        wal.end(XactKind::Abort, 13, 2_500, vec![], vec![]);
        // TRUNCATE: new files for heap (200) and TOAST (201), the old ones dropped at commit.
        wal.push(Event::FileCreated { xid: 14, rel: rel(200), fork: 0 });
        wal.push(Event::FileCreated { xid: 14, rel: rel(201), fork: 0 });
        wal.end(XactKind::Commit, 14, 3_000, vec![], vec![100, 101]);
        wal.rows(15, 200, RowChange::Insert, 7);
        wal.end(XactKind::Commit, 15, 4_000, vec![], vec![]);
        // VACUUM FULL: a new file written as page images.
        wal.push(Event::FileCreated { xid: 16, rel: rel(300), fork: 0 });
        wal.push(Event::PageImage { xid: 16, rel: rel(300) });
        wal.end(XactKind::Commit, 16, 5_000, vec![], vec![200]);
        wal.rows(17, 300, RowChange::Delete, 1);
        wal.end(XactKind::Commit, 17, 6_000, vec![], vec![]);
        // DROP, its lock taken in a subtransaction (another database's lock is not its own).
        wal.push(Event::Locks { locks: vec![StandbyLock { xid: 19, database: DB + 1, relation: 1 }] });
        wal.push(Event::Locks { locks: vec![StandbyLock { xid: 19, database: DB, relation: 16384 }] });
        let drop_lock = wal.events.last().map(|f| f.lsn);
        wal.end(XactKind::Commit, 18, 7_000, vec![19], vec![300]);
        let mut scan = TableScan::new(&[rel(100)], DB, PgTime(0), 100);
        for found in &wal.events {
            scan.feed(found);
        }
        assert!(!scan.table_exists());
        let changes = scan.finish();
        let summary: Vec<(u32, u64, u64, u64, Option<FileChange>)> =
            changes.iter().map(|c| (c.xid, c.inserted, c.updated, c.deleted, c.file_change)).collect();
        assert_eq!(
            summary,
            vec![
                (18, 0, 0, 0, Some(FileChange::Dropped)),
                (17, 0, 0, 1, None),
                (16, 0, 0, 0, Some(FileChange::Rewritten)),
                (15, 7, 0, 0, None),
                (14, 0, 0, 0, Some(FileChange::Truncated)),
                (11, 0, 2, 1, None),
                (10, 3, 0, 0, None),
            ]
        );
        let drop = &changes[0];
        assert_eq!(Some(drop.target_lsn), drop_lock, "recover to just before the lock, which blocks reading");
        let delete = &changes[1];
        assert_eq!(delete.target_lsn, delete.commit_lsn, "recover to just before the commit");
        assert_eq!(drop.commit_time, PgTime(7_000));
    }

    #[test]
    fn a_known_file_wins_over_the_first_created_and_only_the_newest_are_kept() {
        let mut wal = Wal { at: 0, events: Vec::new() };
        // TRUNCATE of two tables at once: ours got 202, which a backup recorded.
        wal.push(Event::FileCreated { xid: 20, rel: rel(201), fork: 0 });
        wal.push(Event::FileCreated { xid: 20, rel: rel(202), fork: 0 });
        wal.end(XactKind::Commit, 20, 1_000, vec![], vec![100, 150]);
        for xid in 21..26 {
            wal.rows(xid, 201, RowChange::Insert, 1);
            wal.rows(xid, 202, RowChange::Insert, 2);
            wal.end(XactKind::Commit, xid, 1_000 + i64::from(xid), vec![], vec![]);
        }
        let mut scan = TableScan::new(&[rel(100), rel(202)], DB, PgTime(0), 3);
        for found in &wal.events {
            scan.feed(found);
        }
        assert_eq!(scan.omitted, 3);
        let changes = scan.finish();
        assert_eq!(changes.iter().map(|c| (c.xid, c.inserted)).collect::<Vec<_>>(), vec![(25, 2), (24, 2), (23, 2)]);
    }
}
