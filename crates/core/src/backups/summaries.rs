//! Changed blocks from PostgreSQL 17's WAL summaries: which chunks of which relation files an
//! incremental backup must read, so that the rest of a changed file reuses the previous backup's
//! chunks without being read.
//!
//! The server's side (waiting for the summarizer, `pg_available_wal_summaries()`,
//! `pg_wal_summary_contents()`) is the extension's; this module decides whether the summaries
//! cover the range ([`covering`]) and answers, per chunk of a file, whether a block in it may have
//! changed ([`ChangedBlocks::chunk_changed`]).
//!
//! Invariants (why a chunk reused from the previous backup is what a restore needs):
//! - The summaries cover every WAL record from the previous backup's start LSN to this backup's
//!   start LSN, on this timeline. A block written after the previous backup read it was written
//!   after its start LSN, so it is in them; a block written after this backup's start is
//!   rewritten by WAL replay (full-page writes), as for any base backup.
//! - A relation fork's *limit block* (it was created, truncated or dropped in the range) makes
//!   every block from there on changed: a relfilenode reused by a new relation never shows its
//!   old contents. A database created or dropped in the range (limit block 0 of relfilenode 0,
//!   PostgreSQL's mark for a directory copied without per-file WAL) makes all of its files changed.
//! - Only files of relations (global/, base/<db>/, pg_tblspc/<spc>/<version>/<db>/) are
//!   answered, and not their free space maps (not WAL-logged, as `pg_basebackup --incremental`
//!   knows); anything else is `None` and is read whole, as without summaries.
//! - Granularity is the block: each changed chunk carries a mask of its changed blocks
//!   ([`ChangedBlocks::changed_mask`]), and the backup reads and stores only those (see `take`).
//!
//! Memory: one entry per changed chunk (the server aggregates blocks into chunks with a mask), so
//! bounded by the amount of change, not by the cluster's size.

use std::collections::{HashMap, HashSet};

use super::{Lsn, CHUNK_SIZE};

/// Pages per chunk.
pub const BLOCKS_PER_CHUNK: u32 = (CHUNK_SIZE / super::page_checksum::BLOCK_SIZE) as u32;
/// `pg_global` and `pg_default`: relation files in global/ and base/<db>/.
const GLOBALTABLESPACE_OID: u32 = 1664;
const DEFAULTTABLESPACE_OID: u32 = 1663;

/// One WAL summary file, as `pg_available_wal_summaries()` lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub timeline: u32,
    pub start: Lsn,
    pub end: Lsn,
}

/// The summaries that together cover `from`..`to` on `timeline`, in order, or why none do (the
/// reason the backup reads every changed file whole instead, said to the DBA).
pub fn covering(available: &[Summary], timeline: u32, from: Lsn, to: Lsn) -> Result<Vec<Summary>, String> {
    let mut on_timeline: Vec<Summary> = available.iter().copied().filter(|s| s.timeline == timeline).collect();
    on_timeline.sort_by_key(|s| (s.start, s.end));
    let mut chosen = Vec::new();
    let mut cursor = from;
    while cursor < to {
        // Of the summaries starting at or before the cursor, the one reaching furthest.
        let next = on_timeline.iter().filter(|s| s.start <= cursor && s.end > cursor).max_by_key(|s| s.end);
        match next {
            Some(summary) => {
                chosen.push(*summary);
                cursor = summary.end;
            }
            None if chosen.is_empty() => {
                return Err(format!(
                    "no WAL summary on timeline {timeline} covers {cursor} (the previous backup's start); \
                     summaries are kept for wal_summary_keep_time and start when summarize_wal is turned on"
                ))
            }
            None => return Err(format!("the WAL summaries on timeline {timeline} have a gap at {cursor}")),
        }
    }
    Ok(chosen)
}

/// A relation fork: tablespace, database (0 in global/), relfilenode, fork number.
type Fork = (u32, u32, u32, u8);

/// The chunks the summaries name as changed.
#[derive(Debug, Default)]
pub struct ChangedBlocks {
    /// Blocks per segment file (`segment_size`, 131072 by default).
    blocks_per_segment: u32,
    /// (fork, segment number, chunk in the segment file) of every chunk holding a changed block,
    /// and which of its blocks changed (bit n: block n of the chunk).
    chunks: HashMap<(Fork, u32, u32), u32>,
    /// The lowest limit block of each fork that has one: blocks from there on count as changed.
    limits: HashMap<Fork, u32>,
    /// (tablespace, database) pairs created or dropped in the range: PostgreSQL records them as a
    /// limit block 0 of relfilenode 0 (CREATE DATABASE ... STRATEGY FILE_COPY copies files without
    /// logging each one), so every relation file there counts as changed.
    recreated: HashSet<(u32, u32)>,
    /// The range and summaries this describes, for the job's report.
    pub described: String,
}

impl ChangedBlocks {
    pub fn new(blocks_per_segment: u32) -> Self {
        ChangedBlocks { blocks_per_segment: blocks_per_segment.max(1), ..Default::default() }
    }

    /// A modified block (`is_limit_block` false in `pg_wal_summary_contents`).
    pub fn add_block(&mut self, tablespace: u32, database: u32, relfilenode: u32, fork: u8, block: u32) {
        let in_segment = block % self.blocks_per_segment;
        self.add_blocks(tablespace, database, relfilenode, fork, block, 1 << (in_segment % BLOCKS_PER_CHUNK));
    }

    /// Modified blocks of the chunk holding `block`, as a mask (bit n: block n of the chunk): what
    /// the server sends, one row per changed chunk.
    pub fn add_blocks(&mut self, tablespace: u32, database: u32, relfilenode: u32, fork: u8, block: u32, mask: u32) {
        let segment = block / self.blocks_per_segment;
        let chunk = (block % self.blocks_per_segment) / BLOCKS_PER_CHUNK;
        *self.chunks.entry(((tablespace, database, relfilenode, fork), segment, chunk)).or_insert(0) |= mask;
    }

    /// A limit block (`is_limit_block` true): the fork was cut to this length in the range.
    pub fn add_limit(&mut self, tablespace: u32, database: u32, relfilenode: u32, fork: u8, block: u32) {
        if relfilenode == 0 {
            self.recreated.insert((tablespace, database));
            return;
        }
        let limit = self.limits.entry((tablespace, database, relfilenode, fork)).or_insert(block);
        *limit = (*limit).min(block);
    }

    /// Changed chunks named, for the report.
    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    /// Changed blocks named (not counting limit blocks), for the report.
    pub fn blocks(&self) -> u64 {
        self.chunks.values().map(|mask| u64::from(mask.count_ones())).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty() && self.limits.is_empty() && self.recreated.is_empty()
    }

    /// Whether chunk `chunk` (offset `chunk * CHUNK_SIZE`) of the file at `path` (relative to the
    /// data directory) may hold a changed block; `None` when `path` is not a relation file, whose
    /// changes summaries do not describe.
    pub fn chunk_changed(&self, path: &str, chunk: u32) -> Option<bool> {
        self.changed_mask(path, chunk).map(|mask| mask != 0)
    }

    /// Which blocks of chunk `chunk` of the file at `path` may have changed (bit n: block n of
    /// the chunk); `None` when `path` is not a relation file.
    pub fn changed_mask(&self, path: &str, chunk: u32) -> Option<u32> {
        let (fork, segment) = relation_file(path)?;
        if self.recreated.contains(&(fork.0, fork.1)) {
            return Some(u32::MAX);
        }
        let mut mask = self.chunks.get(&(fork, segment, chunk)).copied().unwrap_or(0);
        if let Some(&limit) = self.limits.get(&fork) {
            // Blocks from the limit on, counted in the fork, are changed.
            let first = u64::from(segment) * u64::from(self.blocks_per_segment)
                + u64::from(chunk) * u64::from(BLOCKS_PER_CHUNK);
            let limit = u64::from(limit);
            if limit <= first {
                mask = u32::MAX;
            } else if limit < first + u64::from(BLOCKS_PER_CHUNK) {
                mask |= !((1u32 << (limit - first)) - 1);
            }
        }
        Some(mask)
    }
}

/// The fork and segment number a relation file's path names, if it is one.
fn relation_file(path: &str) -> Option<(Fork, u32)> {
    let parts: Vec<&str> = path.split('/').collect();
    let number =
        |s: &str| -> Option<u32> { (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok())? };
    let (tablespace, database, name) = match parts.as_slice() {
        ["global", name] => (GLOBALTABLESPACE_OID, 0, *name),
        ["base", db, name] => (DEFAULTTABLESPACE_OID, number(db)?, *name),
        ["pg_tblspc", spc, version, db, name] if version.starts_with("PG_") => (number(spc)?, number(db)?, *name),
        _ => return None,
    };
    let (base, segment) = match name.split_once('.') {
        Some((base, segment)) => (base, number(segment)?),
        None => (name, 0),
    };
    // The free space map is not WAL-logged: its changes are in no summary, so it is read whole
    // (as pg_basebackup --incremental sends it whole).
    let (node, fork) = match base.split_once('_') {
        None => (base, 0),
        Some((_, "fsm")) => return None,
        Some((node, "vm")) => (node, 2),
        Some((node, "init")) => (node, 3),
        Some(_) => return None,
    };
    Some(((tablespace, database, number(node)?, fork), segment))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(timeline: u32, start: u64, end: u64) -> Summary {
        Summary { timeline, start: Lsn(start), end: Lsn(end) }
    }

    #[test]
    fn summaries_must_cover_the_range_without_a_gap() {
        let all = [s(1, 0x100, 0x200), s(1, 0x200, 0x300), s(2, 0x300, 0x400), s(1, 0x300, 0x380)];
        assert_eq!(covering(&all, 1, Lsn(0x150), Lsn(0x300)).unwrap(), vec![all[0], all[1]]);
        assert_eq!(covering(&all, 1, Lsn(0x150), Lsn(0x350)).unwrap(), vec![all[0], all[1], all[3]]);
        // The previous backup started before the oldest summary (summaries removed, or turned on later).
        let err = covering(&all, 1, Lsn(0x50), Lsn(0x300)).unwrap_err();
        assert!(err.contains("no WAL summary on timeline 1 covers 0/50"), "{err}");
        // The summarizer has not reached this backup's start.
        let err = covering(&all, 1, Lsn(0x150), Lsn(0x400)).unwrap_err();
        assert!(err.contains("gap at 0/380"), "{err}");
        // Other timelines never count.
        assert!(covering(&all, 2, Lsn(0x150), Lsn(0x300)).is_err());
        let gap = [s(1, 0x100, 0x200), s(1, 0x210, 0x300)];
        assert!(covering(&gap, 1, Lsn(0x100), Lsn(0x300)).unwrap_err().contains("gap at 0/200"));
    }

    #[test]
    fn relation_file_paths_name_their_fork_and_segment() {
        assert_eq!(relation_file("base/5/16384"), Some(((1663, 5, 16384, 0), 0)));
        assert_eq!(relation_file("base/5/16384.3"), Some(((1663, 5, 16384, 0), 3)));
        assert_eq!(relation_file("base/5/16384_vm"), Some(((1663, 5, 16384, 2), 0)));
        assert_eq!(relation_file("base/5/16384_vm.1"), Some(((1663, 5, 16384, 2), 1)));
        // Not WAL-logged: read whole.
        assert_eq!(relation_file("base/5/16384_fsm"), None);
        assert_eq!(relation_file("base/5/16384_init"), Some(((1663, 5, 16384, 3), 0)));
        assert_eq!(relation_file("global/1262"), Some(((1664, 0, 1262, 0), 0)));
        assert_eq!(relation_file("pg_tblspc/16390/PG_17_202406281/5/16391.2"), Some(((16390, 5, 16391, 0), 2)));
        for not_relation in [
            "global/pg_control",
            "base/5/PG_VERSION",
            "base/5/pg_filenode.map",
            "base/5/16384_foo",
            "pg_xact/0000",
            "pg_tblspc/16390/PG_17_202406281/5/PG_VERSION",
            "postgresql.conf",
        ] {
            assert_eq!(relation_file(not_relation), None, "{not_relation}");
        }
    }

    #[test]
    fn a_chunk_is_changed_when_a_block_in_it_is_or_it_reaches_a_limit_block() {
        let mut changed = ChangedBlocks::new(131072);
        changed.add_block(1663, 5, 16384, 0, 40); // chunk 1 of segment 0
        changed.add_block(1663, 5, 16384, 0, 131072 + 3); // chunk 0 of segment 1
        changed.add_limit(1663, 5, 16400, 0, 100); // truncated to 100 blocks: chunk 3 onwards
        changed.add_limit(1663, 5, 16400, 0, 200);
        assert_eq!(changed.chunk_changed("base/5/16384", 0), Some(false));
        assert_eq!(changed.chunk_changed("base/5/16384", 1), Some(true));
        assert_eq!(changed.chunk_changed("base/5/16384", 2), Some(false));
        assert_eq!(changed.chunk_changed("base/5/16384.1", 0), Some(true));
        assert_eq!(changed.chunk_changed("base/5/16384.1", 1), Some(false));
        // Another fork or database of the same relfilenode is another file.
        assert_eq!(changed.chunk_changed("base/5/16384_vm", 1), Some(false));
        assert_eq!(changed.chunk_changed("base/6/16384", 1), Some(false));
        // The lowest limit wins: blocks 96..127 (chunk 3) hold block 100.
        assert_eq!(changed.chunk_changed("base/5/16400", 2), Some(false));
        assert_eq!(changed.chunk_changed("base/5/16400", 3), Some(true));
        assert_eq!(changed.chunk_changed("base/5/16400", 9), Some(true));
        assert_eq!(changed.chunk_changed("base/5/16400.1", 0), Some(true));
        // A limit of 0 (created or dropped and reused in the range): everything.
        changed.add_limit(1664, 0, 1262, 0, 0);
        assert_eq!(changed.chunk_changed("global/1262", 0), Some(true));
        // A database created or dropped in the range (relfilenode 0): all of its files.
        changed.add_limit(1663, 7, 0, 0, 0);
        assert_eq!(changed.chunk_changed("base/7/16384", 0), Some(true));
        assert_eq!(changed.chunk_changed("base/7/2619_vm", 0), Some(true));
        assert_eq!(changed.chunk_changed("pg_tblspc/16390/PG_17_202406281/7/16384", 0), Some(false));
        // Which blocks: block 40 is block 8 of chunk 1; the limit 229 is block 5 of chunk 7.
        assert_eq!(changed.changed_mask("base/5/16384", 1), Some(1 << 8));
        changed.add_limit(1663, 5, 16384, 0, 7 * 32 + 5);
        assert_eq!(changed.changed_mask("base/5/16384", 7), Some(!0b11111));
        assert_eq!(changed.changed_mask("base/5/16384", 6), Some(0));
        assert_eq!(changed.changed_mask("base/5/16384", 8), Some(u32::MAX));
        changed.add_blocks(1663, 5, 16384, 0, 64, 0b1010);
        assert_eq!(changed.changed_mask("base/5/16384", 2), Some(0b1010));
        // Not a relation file: the caller reads it whole.
        assert_eq!(changed.chunk_changed("global/pg_control", 0), None);
        assert_eq!(changed.len(), 3);
    }
}
