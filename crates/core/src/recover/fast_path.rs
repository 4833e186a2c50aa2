//! Whether a table snapshot stands for the table at a recovery target, so `recover()` can restore
//! it instead of replaying WAL from a base backup.
//!
//! The snapshot records `pg_current_snapshot()` taken just before its rows were read (the rows'
//! own MVCC snapshot is that one or later, so it holds at least every transaction this one sees).
//! The WAL from shortly before the snapshot up to the target is read for the table
//! (`table_history`); the snapshot stands for the target when every transaction found there that
//! changed the table (rows, its file, or an ACCESS EXCLUSIVE lock such as ALTER TABLE) is one the
//! recorded snapshot already sees.
//!
//! Invariants:
//! - Any doubt means "replay": an unparsable snapshot, changes or locks beyond what was listed, a
//!   gap in the WAL read.
//! - Transaction ids from WAL are 32-bit; the snapshot's are 64-bit with an epoch. They are
//!   compared modulo 2^32 (`TransactionIdPrecedes`), right while the two are within 2^31 of each
//!   other, which vacuum's wraparound protection guarantees for any xid still in the WAL read.

use crate::error::{Error, Result};

/// A `pg_snapshot` as text: `xmin:xmax:xip,xip,...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MvccSnapshot {
    xmin: u32,
    xmax: u32,
    in_progress: Vec<u32>,
}

fn precedes(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

impl MvccSnapshot {
    pub fn parse(text: &str) -> Result<Self> {
        let bad = || Error::InvalidInput(format!("\"{text}\" is not a pg_snapshot (xmin:xmax:xip,...)"));
        let mut parts = text.trim().splitn(3, ':');
        // 64-bit with an epoch: the low 32 bits are the xid the WAL records.
        let xid = |part: Option<&str>| part.and_then(|p| p.parse::<u64>().ok()).map(|x| x as u32).ok_or_else(bad);
        let xmin = xid(parts.next())?;
        let xmax = xid(parts.next())?;
        let in_progress = match parts.next() {
            Some("") | None => Vec::new(),
            Some(list) => list.split(',').map(|p| xid(Some(p))).collect::<Result<_>>()?,
        };
        Ok(MvccSnapshot { xmin, xmax, in_progress })
    }

    /// Whether a committed top-level transaction `xid` is visible to this snapshot.
    pub fn sees(&self, xid: u32) -> bool {
        if precedes(xid, self.xmin) {
            return true;
        }
        // At or after xmax: not started when the snapshot was taken.
        precedes(xid, self.xmax) && !self.in_progress.contains(&xid)
    }
}

/// What the WAL between a snapshot and a target showed for the table.
#[derive(Debug, Default)]
pub struct Found {
    /// Top-level transactions that changed rows or the file.
    pub change_xids: Vec<u32>,
    pub changes_omitted: u64,
    /// Transactions that locked the table exclusively.
    pub lock_xids: Vec<u32>,
    pub locks_omitted: u64,
    /// Where the WAL read stopped short.
    pub gap_at: Option<String>,
}

/// Ok when the snapshot stands for the table at the target; otherwise why not.
pub fn stands_for_target(snapshot: &MvccSnapshot, found: &Found) -> std::result::Result<(), String> {
    if let Some(gap) = &found.gap_at {
        return Err(format!("the archived WAL has a gap at {gap}"));
    }
    if found.changes_omitted > 0 || found.locks_omitted > 0 {
        return Err("too many changes to the table to check".into());
    }
    let unseen: Vec<u32> = found.change_xids.iter().copied().filter(|x| !snapshot.sees(*x)).collect();
    if !unseen.is_empty() {
        return Err(format!(
            "{} transaction(s) changed the table after it (xid {})",
            unseen.len(),
            unseen.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
        ));
    }
    let locked: Vec<u32> = found.lock_xids.iter().copied().filter(|x| !snapshot.sees(*x)).collect();
    if !locked.is_empty() {
        return Err(format!(
            "{} transaction(s) locked the table exclusively after it, such as an ALTER TABLE (xid {})",
            locked.len(),
            locked.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_sees_what_finished_before_it_and_nothing_in_progress_or_later() {
        let snapshot = MvccSnapshot::parse("4294967396:4294967410:4294967400,4294967405").unwrap();
        // Epoch 1: xmin 100, xmax 114, in progress 104 and 109, in 32 bits.
        assert!(snapshot.sees(99));
        assert!(snapshot.sees(101));
        assert!(!snapshot.sees(400)); // far later
        assert!(!snapshot.sees(104)); // in progress
        assert!(!snapshot.sees(109));
        assert!(snapshot.sees(103));
        assert!(snapshot.sees(113));
        assert!(!snapshot.sees(114)); // xmax: not yet started
        assert!(!snapshot.sees(115));
        assert_eq!(MvccSnapshot::parse("5:5:").unwrap().in_progress, Vec::<u32>::new());
        assert!(MvccSnapshot::parse("x").is_err());
    }

    #[test]
    fn only_changes_the_snapshot_holds_let_it_stand_for_the_target() {
        let snapshot = MvccSnapshot::parse("100:110:105").unwrap();
        let seen = Found { change_xids: vec![90, 101], lock_xids: vec![102], ..Found::default() };
        assert_eq!(stands_for_target(&snapshot, &seen), Ok(()));
        let later = Found { change_xids: vec![90, 112], ..Found::default() };
        assert!(stands_for_target(&snapshot, &later).unwrap_err().contains("xid 112"));
        let running = Found { change_xids: vec![105], ..Found::default() };
        assert!(stands_for_target(&snapshot, &running).is_err());
        let altered = Found { lock_xids: vec![111], ..Found::default() };
        assert!(stands_for_target(&snapshot, &altered).unwrap_err().contains("ALTER TABLE"));
        let gap = Found { gap_at: Some("000000010000000000000007".into()), ..Found::default() };
        assert!(stands_for_target(&snapshot, &gap).unwrap_err().contains("gap"));
        let many = Found { changes_omitted: 1, ..Found::default() };
        assert!(stands_for_target(&snapshot, &many).is_err());
    }
}
