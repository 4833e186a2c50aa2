//! What a WAL record means for a DBA looking for a recovery target: transactions ending (commit,
//! abort, with their timestamps and the relation files a commit drops), restore points, and the
//! rows a heap record inserts, updates or deletes in which relation file.
//!
//! Layouts per version (`access/xact.h`, `access/heapam_xlog.h`, `catalog/storage_xlog.h`,
//! `catalog/pg_control.h`): they differ only in `xl_xact_stats_item`, 12 bytes up to 17 and 16
//! from 18 (its object id became 64-bit). Every read is bounds-checked: a record whose main data
//! is shorter than its layout says yields an error naming the LSN, never a panic.

use super::records::{Record, RelFile, RM_XLOG_ID};
use crate::error::Error;

pub const RM_XACT_ID: u8 = 1;
pub const RM_SMGR_ID: u8 = 2;
pub const RM_STANDBY_ID: u8 = 8;
pub const RM_HEAP2_ID: u8 = 9;
pub const RM_HEAP_ID: u8 = 10;

const XLOG_RESTORE_POINT: u8 = 0x70;
const XLOG_FPI: u8 = 0xB0;
const XLOG_XACT_OPMASK: u8 = 0x70;
const XLOG_XACT_HAS_INFO: u8 = 0x80;
const XLOG_XACT_COMMIT: u8 = 0x00;
const XLOG_XACT_ABORT: u8 = 0x20;
const XLOG_XACT_COMMIT_PREPARED: u8 = 0x30;
const XLOG_XACT_ABORT_PREPARED: u8 = 0x40;
const XACT_XINFO_HAS_DBINFO: u32 = 1 << 0;
const XACT_XINFO_HAS_SUBXACTS: u32 = 1 << 1;
const XACT_XINFO_HAS_RELFILELOCATORS: u32 = 1 << 2;
const XACT_XINFO_HAS_INVALS: u32 = 1 << 3;
const XACT_XINFO_HAS_TWOPHASE: u32 = 1 << 4;
const XACT_XINFO_HAS_GID: u32 = 1 << 7;
const XACT_XINFO_HAS_DROPPED_STATS: u32 = 1 << 8;
const XLOG_HEAP_OPMASK: u8 = 0x70;
const XLOG_HEAP_INSERT: u8 = 0x00;
const XLOG_HEAP_DELETE: u8 = 0x10;
const XLOG_HEAP_UPDATE: u8 = 0x20;
const XLOG_HEAP_TRUNCATE: u8 = 0x30;
const XLOG_HEAP_HOT_UPDATE: u8 = 0x40;
const XLOG_HEAP2_MULTI_INSERT: u8 = 0x50;
const XLOG_SMGR_CREATE: u8 = 0x10;
const XLOG_SMGR_TRUNCATE: u8 = 0x20;
const XLOG_STANDBY_LOCK: u8 = 0x00;
/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 00:00:00 UTC).
const POSTGRES_EPOCH_UNIX_MICROS: i64 = 946_684_800 * 1_000_000;

/// A PostgreSQL `TimestampTz`: microseconds since 2000-01-01 00:00:00 UTC. Printed (and
/// serialized) as `2026-12-07 21:44:50.123456+00`, which PostgreSQL takes back as a
/// `recovery_target_time` or a `timestamptz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PgTime(pub i64);

impl serde::Serialize for PgTime {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl PgTime {
    pub fn unix_micros(self) -> i64 {
        self.0.saturating_add(POSTGRES_EPOCH_UNIX_MICROS)
    }

    pub fn unix_seconds(self) -> f64 {
        self.unix_micros() as f64 / 1e6
    }

    pub fn from_unix_seconds(seconds: f64) -> PgTime {
        PgTime((seconds * 1e6).round() as i64 - POSTGRES_EPOCH_UNIX_MICROS)
    }
}

impl std::fmt::Display for PgTime {
    /// `2026-12-07 21:44:50.123456+00` (pg_waldump prints the same instant with ` UTC` when
    /// `TZ=UTC`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let micros = self.unix_micros();
        let (seconds, fraction) = (micros.div_euclid(1_000_000), micros.rem_euclid(1_000_000));
        let (days, of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
        let (year, month, day) = crate::time::civil_from_days(days);
        write!(
            f,
            "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{fraction:06}+00",
            of_day / 3600,
            of_day / 60 % 60,
            of_day % 60
        )
    }
}

/// How a transaction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum XactKind {
    Commit,
    Abort,
    CommitPrepared,
    AbortPrepared,
}

impl XactKind {
    pub fn committed(self) -> bool {
        match self {
            XactKind::Commit | XactKind::CommitPrepared => true,
            XactKind::Abort | XactKind::AbortPrepared => false,
        }
    }

    /// The word pg_waldump prints.
    pub fn waldump_word(self) -> &'static str {
        match self {
            XactKind::Commit => "COMMIT",
            XactKind::Abort => "ABORT",
            XactKind::CommitPrepared => "COMMIT_PREPARED",
            XactKind::AbortPrepared => "ABORT_PREPARED",
        }
    }
}

/// A transaction's end record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct XactEnd {
    pub kind: XactKind,
    /// The transaction that ended: the record's, or the prepared one's for COMMIT/ABORT PREPARED.
    pub xid: u32,
    pub time: PgTime,
    pub subxacts: Vec<u32>,
    /// Relation files dropped when it commits (DROP TABLE, TRUNCATE, a rewrite) or aborts (files
    /// it had created).
    pub dropped: Vec<RelFile>,
    /// The database it ran in, when the record says.
    pub database: Option<u32>,
}

/// What a heap record does to rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RowChange {
    Insert,
    Update,
    Delete,
}

/// The meaning of one record, where it has one for this module.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Xact(XactEnd),
    RestorePoint {
        time: PgTime,
        name: String,
    },
    /// `rows` rows of relation file `rel` changed by transaction `xid` (a subtransaction's own xid).
    Rows {
        xid: u32,
        rel: RelFile,
        change: RowChange,
        rows: u32,
    },
    /// TRUNCATE as logged for logical decoding (wal_level = logical): relation OIDs, not files.
    HeapTruncate {
        xid: u32,
        database: u32,
        relation_oids: Vec<u32>,
    },
    /// A relation file created (CREATE TABLE, TRUNCATE, a rewrite) by `xid`.
    FileCreated {
        xid: u32,
        rel: RelFile,
        fork: u32,
    },
    /// Whole pages of `rel` written as images by `xid` (log_newpage: a table rewritten by VACUUM
    /// FULL or CLUSTER, an index built).
    PageImage {
        xid: u32,
        rel: RelFile,
    },
    /// A relation file cut to `blocks` blocks (VACUUM's truncation, TRUNCATE in the creating
    /// transaction).
    FileTruncated {
        xid: u32,
        rel: RelFile,
        blocks: u32,
    },
    /// ACCESS EXCLUSIVE locks taken (DROP, TRUNCATE, ALTER TABLE, LOCK TABLE), as a hot standby
    /// replays them: from the record on, the relation is unreadable on a standby until the
    /// holding transaction ends. Also re-logged for transactions still running at a checkpoint.
    Locks {
        locks: Vec<StandbyLock>,
    },
}

/// One `xl_standby_lock`: transaction `xid` holds an ACCESS EXCLUSIVE lock on `relation` (an OID,
/// not a file) of `database`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct StandbyLock {
    pub xid: u32,
    pub database: u32,
    pub relation: u32,
}

/// An event and where its record is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Found {
    pub lsn: super::Lsn,
    /// Just past the record: a recovery with this target LSN (inclusive) includes it.
    pub end_lsn: super::Lsn,
    #[serde(flatten)]
    pub event: Event,
}

impl RowChange {
    pub fn word(self) -> &'static str {
        match self {
            RowChange::Insert => "INSERT",
            RowChange::Update => "UPDATE",
            RowChange::Delete => "DELETE",
        }
    }
}

impl std::fmt::Display for Found {
    /// One line per event, the words pg_waldump uses: `0/3000060 tx 735 COMMIT 2026-12-07
    /// 21:44:50.123456+00 drops 1663/5/16384`, `0/30000A0 tx 736 INSERT 1 row 1663/5/16384`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lsn = self.lsn;
        match &self.event {
            Event::Xact(end) => {
                write!(f, "{lsn} tx {} {} {}", end.xid, end.kind.waldump_word(), end.time)?;
                if !end.subxacts.is_empty() {
                    let subxacts: Vec<String> = end.subxacts.iter().map(u32::to_string).collect();
                    write!(f, " subxacts {}", subxacts.join(","))?;
                }
                if !end.dropped.is_empty() {
                    let dropped: Vec<String> = end.dropped.iter().map(RelFile::to_string).collect();
                    write!(f, " drops {}", dropped.join(","))?;
                }
                Ok(())
            }
            Event::RestorePoint { time, name } => write!(f, "{lsn} RESTORE_POINT {time} {name}"),
            Event::Rows { xid, rel, change, rows } => {
                write!(f, "{lsn} tx {xid} {} {rows} row{} {rel}", change.word(), if *rows == 1 { "" } else { "s" })
            }
            Event::HeapTruncate { xid, database, relation_oids } => {
                let oids: Vec<String> = relation_oids.iter().map(u32::to_string).collect();
                write!(f, "{lsn} tx {xid} TRUNCATE database {database} relations {}", oids.join(","))
            }
            Event::FileCreated { xid, rel, fork } => write!(f, "{lsn} tx {xid} FILE_CREATE {rel} fork {fork}"),
            Event::PageImage { xid, rel } => write!(f, "{lsn} tx {xid} PAGE_IMAGE {rel}"),
            Event::FileTruncated { xid, rel, blocks } => {
                write!(f, "{lsn} tx {xid} FILE_TRUNCATE {rel} to {blocks} blocks")
            }
            Event::Locks { locks } => {
                write!(f, "{lsn} LOCK")?;
                for lock in locks {
                    write!(f, " xid {} db {} rel {}", lock.xid, lock.database, lock.relation)?;
                }
                Ok(())
            }
        }
    }
}

/// Reads the events of consecutive segments (the files' names say where each one is).
pub struct Decoder {
    reader: super::records::Reader,
    segment_size: u32,
}

impl Decoder {
    pub fn new(segment_size: u32) -> Self {
        Decoder { reader: super::records::Reader::new(segment_size), segment_size }
    }

    /// The events of the segment (or `.partial` file) `name` holding `bytes`, in WAL order.
    pub fn segment(
        &mut self,
        name: &super::WalFileName,
        bytes: &[u8],
        each: &mut dyn FnMut(Found) -> Result<(), Error>,
    ) -> Result<super::records::SegmentEnd, Error> {
        let (_, number) = name
            .position(self.segment_size)
            .ok_or_else(|| Error::InvalidInput(format!("{} is not a WAL segment", name.name)))?;
        let start = number * u64::from(self.segment_size);
        self.reader.segment(start, bytes, &mut |record| {
            if let Some(event) = event_of(&record, record.major)? {
                each(Found { lsn: super::Lsn(record.lsn), end_lsn: super::Lsn(record.end_lsn), event })?;
            }
            Ok(())
        })
    }
}

/// A little-endian cursor over main data.
struct Cursor<'a> {
    data: &'a [u8],
    at: usize,
    lsn: u64,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        let slice = self.data.get(self.at..self.at.saturating_add(n)).ok_or_else(|| {
            Error::InvalidInput(format!(
                "the WAL record at {} is shorter than its layout ({} bytes of main data, {} needed)",
                super::Lsn(self.lsn),
                self.data.len(),
                self.at.saturating_add(n)
            ))
        })?;
        self.at += n;
        Ok(slice)
    }

    fn u16(&mut self) -> Result<u16, Error> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap_or_default()))
    }

    fn u32(&mut self) -> Result<u32, Error> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap_or_default()))
    }

    fn i64(&mut self) -> Result<i64, Error> {
        Ok(i64::from_le_bytes(self.take(8)?.try_into().unwrap_or_default()))
    }

    fn rel(&mut self) -> Result<RelFile, Error> {
        Ok(RelFile { tablespace: self.u32()?, database: self.u32()?, relfilenode: self.u32()? })
    }

    /// A count followed by that many items of `size` bytes, bounded by the data left.
    fn count(&mut self, size: usize) -> Result<usize, Error> {
        let n = self.u32()? as usize;
        if n.saturating_mul(size) > self.data.len() - self.at {
            return Err(Error::InvalidInput(format!(
                "the WAL record at {} counts {n} items that its main data cannot hold",
                super::Lsn(self.lsn)
            )));
        }
        Ok(n)
    }
}

/// The event a record stands for, if any. `major` is the PostgreSQL major version that wrote it
/// (the segment's page magic says).
pub fn event_of(record: &Record, major: u32) -> Result<Option<Event>, Error> {
    if record.truncated {
        // Only a transaction end's meaning is in its main data; a commit record over 16 MB (a
        // transaction invalidating a million catalog entries) is reported for what it is.
        return match record.rmid {
            RM_XACT_ID => Err(Error::InvalidInput(format!(
                "the transaction record at {} is {} bytes, more than this reader keeps; its time is not known",
                super::Lsn(record.lsn),
                record.total_len
            ))),
            _ => Ok(None),
        };
    }
    let mut data = Cursor { data: &record.main_data, at: 0, lsn: record.lsn };
    let info = record.rmgr_info();
    let first_block = record.blocks.first();
    Ok(match record.rmid {
        RM_XACT_ID => {
            let kind = match info & XLOG_XACT_OPMASK {
                XLOG_XACT_COMMIT => XactKind::Commit,
                XLOG_XACT_ABORT => XactKind::Abort,
                XLOG_XACT_COMMIT_PREPARED => XactKind::CommitPrepared,
                XLOG_XACT_ABORT_PREPARED => XactKind::AbortPrepared,
                _ => return Ok(None),
            };
            Some(Event::Xact(xact_end(kind, record, &mut data, major)?))
        }
        RM_XLOG_ID if info == XLOG_RESTORE_POINT => {
            let time = PgTime(data.i64()?);
            let name = data.take(64)?;
            let name = &name[..name.iter().position(|b| *b == 0).unwrap_or(name.len())];
            Some(Event::RestorePoint { time, name: String::from_utf8_lossy(name).into_owned() })
        }
        RM_XLOG_ID if info == XLOG_FPI => first_block.map(|block| Event::PageImage { xid: record.xid, rel: block.rel }),
        RM_HEAP_ID => {
            let change = match info & XLOG_HEAP_OPMASK {
                XLOG_HEAP_INSERT => RowChange::Insert,
                XLOG_HEAP_DELETE => RowChange::Delete,
                XLOG_HEAP_UPDATE | XLOG_HEAP_HOT_UPDATE => RowChange::Update,
                XLOG_HEAP_TRUNCATE => {
                    let database = data.u32()?;
                    let n = data.u32()? as usize;
                    data.take(1)?;
                    if n.saturating_mul(4) > record.main_data.len() {
                        return Err(Error::InvalidInput(format!(
                            "the TRUNCATE record at {} names more relations than it holds",
                            super::Lsn(record.lsn)
                        )));
                    }
                    // The OIDs start at offsetof(xl_heap_truncate, relids): 12, after padding.
                    let mut oids = Cursor { data: &record.main_data, at: 12, lsn: record.lsn };
                    let relation_oids = (0..n).map(|_| oids.u32()).collect::<Result<_, _>>()?;
                    return Ok(Some(Event::HeapTruncate { xid: record.xid, database, relation_oids }));
                }
                _ => return Ok(None),
            };
            let Some(block) = first_block else { return Ok(None) };
            Some(Event::Rows { xid: record.xid, rel: block.rel, change, rows: 1 })
        }
        RM_HEAP2_ID if info & XLOG_HEAP_OPMASK == XLOG_HEAP2_MULTI_INSERT => {
            let Some(block) = first_block else { return Ok(None) };
            // xl_heap_multi_insert: uint8 flags, a padding byte, uint16 ntuples.
            data.take(2)?;
            let rows = u32::from(data.u16()?);
            Some(Event::Rows { xid: record.xid, rel: block.rel, change: RowChange::Insert, rows })
        }
        RM_SMGR_ID if info == XLOG_SMGR_CREATE => {
            let rel = data.rel()?;
            Some(Event::FileCreated { xid: record.xid, rel, fork: data.u32()? })
        }
        RM_SMGR_ID if info == XLOG_SMGR_TRUNCATE => {
            let blocks = data.u32()?;
            Some(Event::FileTruncated { xid: record.xid, rel: data.rel()?, blocks })
        }
        RM_STANDBY_ID if info == XLOG_STANDBY_LOCK => {
            // xl_standby_locks: int nlocks, then nlocks of (xid, dbOid, relOid).
            let n = data.count(12)?;
            let locks = (0..n)
                .map(|_| Ok(StandbyLock { xid: data.u32()?, database: data.u32()?, relation: data.u32()? }))
                .collect::<Result<_, Error>>()?;
            Some(Event::Locks { locks })
        }
        _ => None,
    })
}

/// `ParseCommitRecord` / `ParseAbortRecord` of `xactdesc.c`, the parts read here.
fn xact_end(kind: XactKind, record: &Record, data: &mut Cursor<'_>, major: u32) -> Result<XactEnd, Error> {
    let time = PgTime(data.i64()?);
    let xinfo = if record.info & XLOG_XACT_HAS_INFO != 0 { data.u32()? } else { 0 };
    let mut end = XactEnd { kind, xid: record.xid, time, subxacts: Vec::new(), dropped: Vec::new(), database: None };
    if xinfo & XACT_XINFO_HAS_DBINFO != 0 {
        end.database = Some(data.u32()?);
        data.u32()?;
    }
    if xinfo & XACT_XINFO_HAS_SUBXACTS != 0 {
        let n = data.count(4)?;
        end.subxacts = (0..n).map(|_| data.u32()).collect::<Result<_, _>>()?;
    }
    if xinfo & XACT_XINFO_HAS_RELFILELOCATORS != 0 {
        let n = data.count(12)?;
        end.dropped = (0..n).map(|_| data.rel()).collect::<Result<_, _>>()?;
    }
    if xinfo & XACT_XINFO_HAS_DROPPED_STATS != 0 {
        let item = if major >= 18 { 16 } else { 12 };
        let n = data.count(item)?;
        data.take(n * item)?;
    }
    let commit = matches!(kind, XactKind::Commit | XactKind::CommitPrepared);
    if commit && xinfo & XACT_XINFO_HAS_INVALS != 0 {
        let n = data.count(16)?;
        data.take(n * 16)?;
    }
    if xinfo & XACT_XINFO_HAS_TWOPHASE != 0 {
        end.xid = data.u32()?;
        if xinfo & XACT_XINFO_HAS_GID != 0 {
            // The GID follows, NUL-terminated; nothing after it is read here.
        }
    }
    Ok(end)
}

#[cfg(test)]
mod tests {
    use super::super::records::build::*;
    use super::super::records::{Reader, Record};
    use super::*;

    const SEG: usize = 64 * 1024;

    fn decode(records: &[&dyn Fn(u64) -> Vec<u8>], magic: u16, major: u32) -> Vec<(Record, Option<Event>)> {
        let (segments, _) = segments(0, SEG, magic, records);
        let mut out = Vec::new();
        Reader::new(SEG as u32)
            .segment(0, &segments[0], &mut |r| {
                let event = event_of(&r, major)?;
                out.push((r, event));
                Ok(())
            })
            .unwrap();
        out
    }

    fn commit_body(time: i64, xinfo: u32, parts: &[&[u8]]) -> Vec<u8> {
        let mut data = time.to_le_bytes().to_vec();
        data.extend_from_slice(&xinfo.to_le_bytes());
        for part in parts {
            data.extend_from_slice(part);
        }
        data
    }

    fn words(values: &[u32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn commits_aborts_and_restore_points_are_read_with_their_times_and_dropped_files() {
        let t = 818_000_000_123_456i64; // 2025-12-03 ...
        let dbinfo = words(&[5, 1663]);
        let subxacts = words(&[2, 741, 742]);
        let rels = words(&[2, 1663, 5, 16384, 1663, 5, 16390]);
        let stats = words(&[1, 1, 5, 16384]); // one 12-byte item (PostgreSQL 15-17)
        let invals = [words(&[1]), vec![0u8; 16]].concat();
        let commit = commit_body(t, 0x1 | 0x2 | 0x4 | 0x100 | 0x8, &[&dbinfo, &subxacts, &rels, &stats, &invals]);
        let abort = commit_body(t + 5, 0x4, &[&words(&[1, 1663, 5, 16400])]);
        let mut rp = (t + 9).to_le_bytes().to_vec();
        let mut name = b"before_migration".to_vec();
        name.resize(64, 0);
        rp.extend_from_slice(&name);
        let makers: Vec<Box<dyn Fn(u64) -> Vec<u8>>> = vec![
            Box::new(move |prev| record(prev, 740, RM_XACT_ID, 0x80, &main_data(&commit))),
            Box::new(move |prev| record(prev, 743, RM_XACT_ID, 0x80 | 0x20, &main_data(&abort))),
            Box::new(move |prev| record(prev, 0, RM_XLOG_ID, 0x70, &main_data(&rp))),
            Box::new(move |prev| record(prev, 744, RM_XACT_ID, 0x00, &main_data(&(t + 20).to_le_bytes()))),
        ];
        let all: Vec<&dyn Fn(u64) -> Vec<u8>> = makers.iter().map(|m| m.as_ref()).collect();
        let events: Vec<Event> = decode(&all, 0xD110, 15).into_iter().filter_map(|(_, e)| e).collect();
        let rel = |relfilenode| RelFile { tablespace: 1663, database: 5, relfilenode };
        assert_eq!(
            events,
            vec![
                Event::Xact(XactEnd {
                    kind: XactKind::Commit,
                    xid: 740,
                    time: PgTime(t),
                    subxacts: vec![741, 742],
                    dropped: vec![rel(16384), rel(16390)],
                    database: Some(5),
                }),
                Event::Xact(XactEnd {
                    kind: XactKind::Abort,
                    xid: 743,
                    time: PgTime(t + 5),
                    subxacts: vec![],
                    dropped: vec![rel(16400)],
                    database: None,
                }),
                Event::RestorePoint { time: PgTime(t + 9), name: "before_migration".into() },
                Event::Xact(XactEnd {
                    kind: XactKind::Commit,
                    xid: 744,
                    time: PgTime(t + 20),
                    subxacts: vec![],
                    dropped: vec![],
                    database: None,
                }),
            ]
        );
        assert_eq!(PgTime(0).to_string(), "2000-01-01 00:00:00.000000+00");
        assert_eq!(PgTime(t).unix_micros(), t + 946_684_800_000_000);
    }

    #[test]
    fn dropped_stats_items_are_sixteen_bytes_from_postgresql_18() {
        let t = 1i64;
        let stats18 = words(&[1, 1, 5, 16384, 0]);
        let rels = words(&[1, 1663, 5, 16384]);
        // Relation files before the stats; the two-phase xid after them is where a wrong item
        // size would read garbage.
        let body = commit_body(t, 0x4 | 0x100 | 0x10, &[&rels, &stats18, &words(&[900])]);
        let makers: Vec<Box<dyn Fn(u64) -> Vec<u8>>> =
            vec![Box::new(move |prev| record(prev, 0, RM_XACT_ID, 0x80 | 0x30, &main_data(&body)))];
        let all: Vec<&dyn Fn(u64) -> Vec<u8>> = makers.iter().map(|m| m.as_ref()).collect();
        let events: Vec<Event> = decode(&all, 0xD118, 18).into_iter().filter_map(|(_, e)| e).collect();
        let Event::Xact(end) = &events[0] else { panic!("{events:?}") };
        assert_eq!((end.kind, end.xid), (XactKind::CommitPrepared, 900));
    }

    #[test]
    fn heap_records_count_rows_per_relation_file_and_short_data_is_an_error() {
        let rel = RelFile { tablespace: 1663, database: 5, relfilenode: 16384 };
        let multi = [vec![2u8, 0], 7u16.to_le_bytes().to_vec(), vec![0; 14]].concat();
        let makers: Vec<Box<dyn Fn(u64) -> Vec<u8>>> = vec![
            Box::new(move |prev| record(prev, 750, RM_HEAP_ID, 0x00, &with_block(rel, 0, &[1; 10], &[1, 0, 0]))),
            Box::new(move |prev| record(prev, 750, RM_HEAP_ID, 0x40, &with_block(rel, 0, &[], &[0; 14]))),
            Box::new(move |prev| record(prev, 750, RM_HEAP_ID, 0x10, &with_block(rel, 0, &[], &[0; 8]))),
            Box::new(move |prev| record(prev, 750, RM_HEAP2_ID, 0x50, &with_block(rel, 1, &[2; 30], &multi))),
        ];
        let all: Vec<&dyn Fn(u64) -> Vec<u8>> = makers.iter().map(|m| m.as_ref()).collect();
        let events: Vec<Event> = decode(&all, 0xD110, 15).into_iter().filter_map(|(_, e)| e).collect();
        let rows = |change, rows| Event::Rows { xid: 750, rel, change, rows };
        assert_eq!(
            events,
            vec![
                rows(RowChange::Insert, 1),
                rows(RowChange::Update, 1),
                rows(RowChange::Delete, 1),
                rows(RowChange::Insert, 7)
            ]
        );

        let short: Vec<Box<dyn Fn(u64) -> Vec<u8>>> = vec![Box::new(|prev| {
            record(prev, 1, RM_XACT_ID, 0x80, &main_data(&[1, 2, 3, 4, 5, 6, 7, 8, 0x2, 0, 0, 0, 9, 9, 9, 9]))
        })];
        let all: Vec<&dyn Fn(u64) -> Vec<u8>> = short.iter().map(|m| m.as_ref()).collect();
        let (segments, _) = segments(0, SEG, 0xD110, &all);
        let error = Reader::new(SEG as u32)
            .segment(0, &segments[0], &mut |r| event_of(&r, 15).map(|_| ()))
            .unwrap_err()
            .to_string();
        assert!(error.contains("counts") || error.contains("shorter"), "{error}");
    }
}
