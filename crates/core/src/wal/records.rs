//! WAL records read from segment bytes: page headers, records continued across pages and
//! segments, each record's CRC, its block references and its main data. What a record means
//! (a commit, a restore point, a heap change) is [`super::events`]'s.
//!
//! Invariants:
//! - A record is handed out only whole and with its CRC-32C checked; the first byte that is not
//!   a valid continuation (a page from another place in the WAL, a zero length, a bad CRC, a
//!   `xl_prev` that does not point at the record before) ends the WAL, as it ends recovery.
//! - Memory stays bounded whatever the input: one record is kept whole up to [`KEEP_WHOLE`]
//!   bytes (PostgreSQL allows 1 GB); a longer one keeps only its first [`KEEP_PREFIX`] bytes
//!   (the block references), is still checked through its CRC, and is handed out marked
//!   `truncated`, without its main data.
//! - Nothing here trusts lengths read from the input: every read is bounds-checked and a record
//!   that does not add up is an error naming its LSN, never a panic.
//!
//! Layouts are PostgreSQL 15 to 18's (`access/xlog_internal.h`, `access/xlogrecord.h`), which do
//! not differ in anything read here; the page magic says which version wrote the WAL.

use crate::error::Error;

/// Page magic (`XLOG_PAGE_MAGIC`) per major version.
pub const PAGE_MAGICS: [(u16, u32); 4] = [(0xD110, 15), (0xD113, 16), (0xD116, 17), (0xD118, 18)];

const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
const XLP_LONG_HEADER: u16 = 0x0002;
const XLP_FIRST_IS_OVERWRITE_CONTRECORD: u16 = 0x0008;
const SHORT_PAGE_HEADER: usize = 24;
const LONG_PAGE_HEADER: usize = 40;
/// `SizeOfXLogRecord`.
pub const RECORD_HEADER: usize = 24;
/// `offsetof(XLogRecord, xl_crc)`: the header bytes the CRC covers, after the record's body.
const CRC_OFFSET: usize = 20;
/// `XLogRecordMaxSize`.
const RECORD_MAX: u32 = 1020 * 1024 * 1024;
/// Records up to this size are kept whole.
pub const KEEP_WHOLE: usize = 16 << 20;
/// Of a longer record, the bytes kept: its header and block references.
pub const KEEP_PREFIX: usize = 64 << 10;

pub const RM_XLOG_ID: u8 = 0;
pub const XLOG_SWITCH: u8 = 0x40;
const XLR_MAX_BLOCK_ID: u8 = 32;
const XLR_BLOCK_ID_DATA_SHORT: u8 = 255;
const XLR_BLOCK_ID_DATA_LONG: u8 = 254;
const XLR_BLOCK_ID_ORIGIN: u8 = 253;
const XLR_BLOCK_ID_TOPLEVEL_XID: u8 = 252;
const BKPBLOCK_FORK_MASK: u8 = 0x0F;
const BKPBLOCK_HAS_IMAGE: u8 = 0x10;
const BKPBLOCK_HAS_DATA: u8 = 0x20;
const BKPBLOCK_SAME_REL: u8 = 0x80;
const BKPIMAGE_HAS_HOLE: u8 = 0x01;
/// PGLZ, LZ4 or ZSTD (PostgreSQL 15+).
const BKPIMAGE_COMPRESSED: u8 = 0x04 | 0x08 | 0x10;

/// `MAXALIGN`.
fn maxalign(value: u64) -> u64 {
    (value + 7) & !7
}

/// A relation file's identity in WAL (`RelFileLocator`, `RelFileNode` before 16).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct RelFile {
    pub tablespace: u32,
    pub database: u32,
    pub relfilenode: u32,
}

/// A block a record touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRef {
    pub id: u8,
    pub rel: RelFile,
    /// 0 main, 1 free space map, 2 visibility map, 3 init.
    pub fork: u8,
    pub block: u32,
    pub has_image: bool,
}

/// One WAL record, whole and CRC-checked.
#[derive(Debug, Clone)]
pub struct Record {
    /// Where it starts (what pg_waldump prints as `lsn`).
    pub lsn: u64,
    /// The position just past its last byte.
    pub end_lsn: u64,
    pub prev: u64,
    pub xid: u32,
    pub rmid: u8,
    pub info: u8,
    pub total_len: u32,
    /// The PostgreSQL major version that wrote it (its page magic).
    pub major: u32,
    /// The top-level transaction of a subtransaction's record, when it carries one.
    pub toplevel_xid: Option<u32>,
    pub blocks: Vec<BlockRef>,
    /// Its main data; empty when `truncated`.
    pub main_data: Vec<u8>,
    /// Longer than [`KEEP_WHOLE`]: block references read, main data not kept.
    pub truncated: bool,
}

impl std::fmt::Display for RelFile {
    /// `1663/5/16384`, as pg_waldump prints it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.tablespace, self.database, self.relfilenode)
    }
}

impl Record {
    /// The rmgr's own info bits (`XLR_RMGR_INFO_MASK`).
    pub fn rmgr_info(&self) -> u8 {
        self.info & 0xF0
    }
}

/// Why the records of a segment stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentEnd {
    /// Its last record continues in the next segment (or it ends exactly at its end).
    Continues,
    /// An XLOG_SWITCH record: the rest of the segment is unused, the next record starts the
    /// next segment.
    Switched,
    /// The WAL ends inside it, at `lsn`, for `reason` (what ends recovery there).
    Ended { lsn: u64, reason: String },
}

/// A record being gathered across pages.
struct Pending {
    lsn: u64,
    /// 0 until its first 4 bytes are read.
    total_len: u32,
    got: u32,
    kept: Vec<u8>,
    /// CRC-32C of the bytes after the header, as they arrive.
    crc: crc_fast::Digest,
}

impl Pending {
    fn new(lsn: u64) -> Self {
        Pending {
            lsn,
            total_len: 0,
            got: 0,
            kept: Vec::new(),
            crc: crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi),
        }
    }

    fn remaining(&self) -> u32 {
        self.total_len - self.got
    }

    /// Takes bytes of the record; `bytes` never runs past its end once its length is known.
    fn push(&mut self, bytes: &[u8]) {
        let at = self.got as usize;
        let keep_limit = if self.total_len as usize <= KEEP_WHOLE { KEEP_WHOLE } else { KEEP_PREFIX };
        if at < keep_limit {
            let n = bytes.len().min(keep_limit - at);
            self.kept.extend_from_slice(&bytes[..n]);
        }
        // The CRC covers everything after the header.
        if at + bytes.len() > RECORD_HEADER {
            let skip = RECORD_HEADER.saturating_sub(at);
            self.crc.update(&bytes[skip..]);
        }
        self.got += bytes.len() as u32;
    }
}

/// Reads the records of consecutive segments of one timeline. Feed segments in order; a gap
/// (a segment not following the last one fed) starts over without the record that crossed it.
pub struct Reader {
    segment_size: u64,
    pending: Option<Pending>,
    /// Bytes of a record whose start this reader did not see, to skip.
    skipping: u32,
    /// Start of the last record handed out: the next one's `xl_prev`.
    last_lsn: Option<u64>,
    /// Where the next segment fed must start to continue.
    next_segment: Option<u64>,
    /// The major version the page magic names (set by the first page read).
    pub major: Option<u32>,
}

impl Reader {
    pub fn new(segment_size: u32) -> Self {
        Reader {
            segment_size: u64::from(segment_size),
            pending: None,
            skipping: 0,
            last_lsn: None,
            next_segment: None,
            major: None,
        }
    }

    /// Reads one whole segment starting at `start_lsn` and hands each record to `each`. A record
    /// crossing into the next segment is kept for the next call. Errors: the segment is not a
    /// WAL segment at that position (its first page says so), or a record is malformed past its
    /// CRC (which the CRC makes a decoding bug, not damage).
    pub fn segment(
        &mut self,
        start_lsn: u64,
        bytes: &[u8],
        each: &mut dyn FnMut(Record) -> Result<(), Error>,
    ) -> Result<SegmentEnd, Error> {
        if self.next_segment != Some(start_lsn) {
            self.pending = None;
            self.skipping = 0;
            self.last_lsn = None;
        }
        self.next_segment = None;
        let first =
            page_header(bytes, 0).ok_or_else(|| not_wal(start_lsn, "it does not start with a long page header"))?;
        if first.info & XLP_LONG_HEADER == 0 || first.address != start_lsn {
            return Err(not_wal(start_lsn, "its first page is not the start of this segment"));
        }
        let page_size = first.long.map(|(_, _, block)| block as usize).unwrap_or(0);
        if !(1024..=65536).contains(&page_size) || !page_size.is_power_of_two() {
            return Err(not_wal(start_lsn, &format!("its page size {page_size} is not a WAL block size")));
        }
        self.major = PAGE_MAGICS.iter().find(|(m, _)| *m == first.magic).map(|(_, v)| *v);
        if self.major.is_none() {
            return Err(not_wal(start_lsn, &format!("page magic {:#06X} is not PostgreSQL 15 to 18's", first.magic)));
        }
        let pages = bytes.len().min(self.segment_size as usize) / page_size;
        for page_index in 0..pages {
            let page_lsn = start_lsn + (page_index * page_size) as u64;
            let page = &bytes[page_index * page_size..(page_index + 1) * page_size];
            let Some(header) = page_header(page, page_lsn % self.segment_size) else {
                return Ok(self.ended(page_lsn, "a page without a header"));
            };
            if header.magic != first.magic || header.address != page_lsn {
                // Recycled bytes of an older segment: the WAL written so far ends here.
                return Ok(self.ended(page_lsn, "a page that belongs elsewhere in the WAL (recycled)"));
            }
            let mut offset = header.len;
            if header.info & XLP_FIRST_IS_CONTRECORD != 0 {
                let rem = header.rem_len;
                let available = (page_size - offset).min(rem as usize);
                match (self.pending.as_mut(), self.skipping) {
                    (Some(pending), _) => {
                        if pending.remaining() != rem {
                            return Ok(self.ended(page_lsn, "a continuation that does not match the record before"));
                        }
                        pending.push(&page[offset..offset + available]);
                    }
                    (None, _) => self.skipping = rem - available as u32,
                }
                offset += available;
                if self.pending.as_ref().is_some_and(|p| p.remaining() == 0) {
                    let end = page_lsn + offset as u64;
                    if let Some(reason) = self.finish(end, each)? {
                        return Ok(reason);
                    }
                }
                if (available as u32) < rem {
                    continue;
                }
                offset = maxalign(offset as u64) as usize;
            } else if self.pending.is_some() || self.skipping > 0 {
                let overwritten = header.info & XLP_FIRST_IS_OVERWRITE_CONTRECORD != 0;
                if !overwritten {
                    return Ok(self.ended(page_lsn, "a record that is not continued on the next page"));
                }
                // A record cut short by a crash, overwritten after it (XLOG_OVERWRITE_CONTRECORD).
                self.pending = None;
                self.skipping = 0;
            }
            while offset + 4 <= page_size {
                let record_lsn = page_lsn + offset as u64;
                let mut pending = Pending::new(record_lsn);
                let available = page_size - offset;
                if available >= 4 {
                    let total_len = u32::from_le_bytes(page[offset..offset + 4].try_into().unwrap_or_default());
                    if total_len == 0 {
                        return Ok(self.ended(record_lsn, "zeros where the next record would start"));
                    }
                    if (total_len as usize) < RECORD_HEADER || total_len > RECORD_MAX {
                        return Ok(self.ended(record_lsn, &format!("a record length of {total_len}")));
                    }
                    pending.total_len = total_len;
                }
                let n = available.min(pending.total_len as usize);
                pending.push(&page[offset..offset + n]);
                offset += n;
                self.pending = Some(pending);
                if offset < page_size || self.pending.as_ref().is_some_and(|p| p.remaining() == 0) {
                    if let Some(reason) = self.finish(page_lsn + offset as u64, each)? {
                        return Ok(reason);
                    }
                    offset = maxalign(offset as u64) as usize;
                } else {
                    break;
                }
            }
        }
        let end = start_lsn + (pages * page_size) as u64;
        if pages * page_size < self.segment_size as usize {
            return Ok(self.ended(end, "the file ends before the segment does"));
        }
        self.next_segment = Some(end);
        Ok(SegmentEnd::Continues)
    }

    fn ended(&mut self, lsn: u64, reason: &str) -> SegmentEnd {
        let lsn = self.pending.take().map_or(lsn, |p| p.lsn);
        self.skipping = 0;
        SegmentEnd::Ended { lsn, reason: reason.to_string() }
    }

    /// The pending record is complete: checks and hands it out. Returns how the segment ends
    /// when this record ends it (a switch, or a record that fails its checks).
    fn finish(
        &mut self,
        end_lsn: u64,
        each: &mut dyn FnMut(Record) -> Result<(), Error>,
    ) -> Result<Option<SegmentEnd>, Error> {
        let Some(mut pending) = self.pending.take() else { return Ok(None) };
        if pending.kept.len() < RECORD_HEADER {
            self.pending = Some(pending);
            return Ok(Some(self.ended(end_lsn, "a record header cut short")));
        }
        let header = &pending.kept[..RECORD_HEADER];
        let u32_at = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().unwrap_or_default());
        let prev = u64::from_le_bytes(header[8..16].try_into().unwrap_or_default());
        let stored_crc = u32_at(20);
        pending.crc.update(&header[..CRC_OFFSET]);
        let crc = pending.crc.finalize() as u32;
        let lsn = pending.lsn;
        if crc != stored_crc {
            self.pending = Some(pending);
            return Ok(Some(self.ended(lsn, "a record whose CRC does not match (the WAL written so far ends here)")));
        }
        if self.last_lsn.is_some_and(|last| last != prev) {
            self.pending = Some(pending);
            return Ok(Some(self.ended(lsn, "a record whose xl_prev does not point at the record before")));
        }
        let (rmid, info) = (header[17], header[16]);
        let truncated = pending.total_len as usize > KEEP_WHOLE;
        let mut record = Record {
            lsn,
            end_lsn,
            prev,
            xid: u32_at(4),
            rmid,
            info,
            total_len: pending.total_len,
            major: self.major.unwrap_or(0),
            toplevel_xid: None,
            blocks: Vec::new(),
            main_data: Vec::new(),
            truncated,
        };
        decode_body(&mut record, &pending.kept)?;
        self.last_lsn = Some(lsn);
        let switch = rmid == RM_XLOG_ID && record.rmgr_info() == XLOG_SWITCH;
        each(record)?;
        if switch {
            // The rest of the segment is padding; the next segment starts the next record.
            let segment_end = (end_lsn.saturating_sub(1) / self.segment_size + 1) * self.segment_size;
            self.next_segment = Some(segment_end);
            return Ok(Some(SegmentEnd::Switched));
        }
        Ok(None)
    }
}

fn not_wal(lsn: u64, why: &str) -> Error {
    Error::InvalidInput(format!("the bytes given for the WAL segment at {} are not one: {why}", super::Lsn(lsn)))
}

struct PageHeader {
    magic: u16,
    info: u16,
    address: u64,
    rem_len: u32,
    len: usize,
    /// System identifier, segment size and block size of a long header.
    long: Option<(u64, u32, u32)>,
}

/// The header of the page at `offset_in_segment` (the first page of a segment has the long one).
fn page_header(page: &[u8], offset_in_segment: u64) -> Option<PageHeader> {
    if page.len() < SHORT_PAGE_HEADER {
        return None;
    }
    let u16_at = |at: usize| u16::from_le_bytes(page[at..at + 2].try_into().unwrap_or_default());
    let u32_at = |at: usize| u32::from_le_bytes(page[at..at + 4].try_into().unwrap_or_default());
    let u64_at = |at: usize| u64::from_le_bytes(page[at..at + 8].try_into().unwrap_or_default());
    let info = u16_at(2);
    let long = info & XLP_LONG_HEADER != 0;
    if long != (offset_in_segment == 0) || (long && page.len() < LONG_PAGE_HEADER) {
        return None;
    }
    Some(PageHeader {
        magic: u16_at(0),
        info,
        address: u64_at(8),
        rem_len: u32_at(16),
        len: if long { LONG_PAGE_HEADER } else { SHORT_PAGE_HEADER },
        long: long.then(|| (u64_at(24), u32_at(32), u32_at(36))),
    })
}

/// Parses the block references and main data of a record (PostgreSQL's `DecodeXLogRecord`).
fn decode_body(record: &mut Record, bytes: &[u8]) -> Result<(), Error> {
    let lsn = record.lsn;
    let bad =
        |what: &str| Error::InvalidInput(format!("the WAL record at {} does not decode: {what}", super::Lsn(lsn)));
    let total = record.total_len as usize;
    let mut at = RECORD_HEADER;
    let mut data_total: usize = 0;
    let mut main_len: usize = 0;
    let mut last_rel: Option<RelFile> = None;
    let take = |at: &mut usize, n: usize| -> Result<&[u8], Error> {
        let slice = bytes.get(*at..*at + n).ok_or_else(|| bad("a block header runs past the record"))?;
        *at += n;
        Ok(slice)
    };
    let u16_of = |s: &[u8]| u16::from_le_bytes(s.try_into().unwrap_or_default());
    let u32_of = |s: &[u8]| u32::from_le_bytes(s.try_into().unwrap_or_default());
    while total - at > data_total {
        let id = take(&mut at, 1)?[0];
        match id {
            XLR_BLOCK_ID_DATA_SHORT => {
                main_len = take(&mut at, 1)?[0] as usize;
                data_total += main_len;
                break;
            }
            XLR_BLOCK_ID_DATA_LONG => {
                main_len = u32_of(take(&mut at, 4)?) as usize;
                data_total += main_len;
                break;
            }
            XLR_BLOCK_ID_ORIGIN => {
                take(&mut at, 2)?;
            }
            XLR_BLOCK_ID_TOPLEVEL_XID => record.toplevel_xid = Some(u32_of(take(&mut at, 4)?)),
            id if id <= XLR_MAX_BLOCK_ID => {
                let fork_flags = take(&mut at, 1)?[0];
                let data_len = u16_of(take(&mut at, 2)?) as usize;
                if fork_flags & BKPBLOCK_HAS_DATA == 0 && data_len != 0 {
                    return Err(bad("block data without BKPBLOCK_HAS_DATA"));
                }
                data_total += data_len;
                let has_image = fork_flags & BKPBLOCK_HAS_IMAGE != 0;
                if has_image {
                    let image_len = u16_of(take(&mut at, 2)?) as usize;
                    let _hole_offset = take(&mut at, 2)?;
                    let image_info = take(&mut at, 1)?[0];
                    if image_info & BKPIMAGE_HAS_HOLE != 0 && image_info & BKPIMAGE_COMPRESSED != 0 {
                        take(&mut at, 2)?;
                    }
                    data_total += image_len;
                }
                let rel = if fork_flags & BKPBLOCK_SAME_REL != 0 {
                    last_rel.ok_or_else(|| bad("BKPBLOCK_SAME_REL on the first block"))?
                } else {
                    let s = take(&mut at, 12)?;
                    RelFile { tablespace: u32_of(&s[0..4]), database: u32_of(&s[4..8]), relfilenode: u32_of(&s[8..12]) }
                };
                last_rel = Some(rel);
                let block = u32_of(take(&mut at, 4)?);
                record.blocks.push(BlockRef { id, rel, fork: fork_flags & BKPBLOCK_FORK_MASK, block, has_image });
            }
            other => return Err(bad(&format!("block id {other}"))),
        }
    }
    if at + data_total != total {
        return Err(bad(&format!("its parts add up to {} bytes, its header says {total}", at + data_total)));
    }
    if !record.truncated {
        record.main_data = bytes[total - main_len..total].to_vec();
    }
    Ok(())
}

/// Test helpers: WAL bytes as PostgreSQL writes them, for this module's tests and those of the
/// modules reading records.
#[cfg(test)]
pub mod build {
    use super::*;

    pub const PAGE: usize = 8192;

    /// A record's bytes: header (with CRC and `prev`) and body.
    pub fn record(prev: u64, xid: u32, rmid: u8, info: u8, body: &[u8]) -> Vec<u8> {
        let total = (RECORD_HEADER + body.len()) as u32;
        let mut bytes = Vec::with_capacity(total as usize);
        bytes.extend_from_slice(&total.to_le_bytes());
        bytes.extend_from_slice(&xid.to_le_bytes());
        bytes.extend_from_slice(&prev.to_le_bytes());
        bytes.push(info);
        bytes.push(rmid);
        bytes.extend_from_slice(&[0, 0]);
        bytes.extend_from_slice(&[0; 4]);
        bytes.extend_from_slice(body);
        let mut crc = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi);
        crc.update(&bytes[RECORD_HEADER..]);
        crc.update(&bytes[..CRC_OFFSET]);
        let crc = crc.finalize() as u32;
        bytes[20..24].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// A body of only main data.
    pub fn main_data(data: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        if data.len() < 256 {
            body.push(XLR_BLOCK_ID_DATA_SHORT);
            body.push(data.len() as u8);
        } else {
            body.push(XLR_BLOCK_ID_DATA_LONG);
            body.extend_from_slice(&(data.len() as u32).to_le_bytes());
        }
        body.extend_from_slice(data);
        body
    }

    /// A body with one block reference (no image) and main data.
    pub fn with_block(rel: RelFile, block: u32, block_data: &[u8], data: &[u8]) -> Vec<u8> {
        let mut body = vec![0u8];
        body.push(if block_data.is_empty() { 0 } else { BKPBLOCK_HAS_DATA });
        body.extend_from_slice(&(block_data.len() as u16).to_le_bytes());
        for v in [rel.tablespace, rel.database, rel.relfilenode, block] {
            body.extend_from_slice(&v.to_le_bytes());
        }
        let mut main = main_data(data);
        // Headers first, then block data, then main data.
        let header_len = main.len() - data.len();
        let main_bytes = main.split_off(header_len);
        body.extend_from_slice(&main);
        body.extend_from_slice(block_data);
        body.extend_from_slice(&main_bytes);
        body
    }

    /// Lays records out in segments of `segment_size` from `start` (a segment start) as
    /// PostgreSQL does: page headers, MAXALIGNed records, continuation pages. Each record is
    /// given as a closure of its `prev`, so the chain is right. Returns the segments and the
    /// LSN of every record.
    pub fn segments(
        start: u64,
        segment_size: usize,
        magic: u16,
        records: &[&dyn Fn(u64) -> Vec<u8>],
    ) -> (Vec<Vec<u8>>, Vec<u64>) {
        let mut stream: Vec<u8> = Vec::new(); // the WAL from `start`, page headers included
        let mut lsns = Vec::new();
        let mut prev = 0u64;
        let mut pos = start;
        let page_header = |stream: &mut Vec<u8>, at: u64, rem: u32| {
            let long = at.is_multiple_of(segment_size as u64);
            let mut info: u16 = if rem > 0 { XLP_FIRST_IS_CONTRECORD } else { 0 };
            if long {
                info |= XLP_LONG_HEADER;
            }
            stream.extend_from_slice(&magic.to_le_bytes());
            stream.extend_from_slice(&info.to_le_bytes());
            stream.extend_from_slice(&1u32.to_le_bytes());
            stream.extend_from_slice(&at.to_le_bytes());
            stream.extend_from_slice(&rem.to_le_bytes());
            stream.extend_from_slice(&[0; 4]);
            if long {
                stream.extend_from_slice(&7u64.to_le_bytes());
                stream.extend_from_slice(&(segment_size as u32).to_le_bytes());
                stream.extend_from_slice(&(PAGE as u32).to_le_bytes());
            }
        };
        for make in records {
            if pos.is_multiple_of(PAGE as u64) {
                page_header(&mut stream, pos, 0);
                pos = start + stream.len() as u64;
            }
            let bytes = make(prev);
            prev = pos;
            lsns.push(pos);
            let mut rest = &bytes[..];
            loop {
                let room = PAGE - (pos % PAGE as u64) as usize;
                let n = room.min(rest.len());
                stream.extend_from_slice(&rest[..n]);
                rest = &rest[n..];
                pos = start + stream.len() as u64;
                if rest.is_empty() {
                    break;
                }
                page_header(&mut stream, pos, rest.len() as u32);
                pos = start + stream.len() as u64;
            }
            let aligned = maxalign(pos);
            stream.resize((aligned - start) as usize, 0);
            pos = aligned;
        }
        let segments_needed = stream.len().div_ceil(segment_size).max(1);
        stream.resize(segments_needed * segment_size, 0);
        // Pages after the last record carry no header: zeros, as in a fresh segment.
        (stream.chunks(segment_size).map(|s| s.to_vec()).collect(), lsns)
    }
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;

    const SEG: usize = 64 * 1024;
    const MAGIC15: u16 = 0xD110;

    fn read_all(segments: &[Vec<u8>], start: u64) -> (Vec<Record>, Vec<SegmentEnd>) {
        let mut reader = Reader::new(SEG as u32);
        let mut records = Vec::new();
        let mut ends = Vec::new();
        for (index, segment) in segments.iter().enumerate() {
            let at = start + (index * SEG) as u64;
            let end = reader.segment(at, segment, &mut |r| {
                records.push(r);
                Ok(())
            });
            ends.push(end.unwrap());
        }
        (records, ends)
    }

    #[test]
    fn records_are_read_across_pages_and_segments_with_their_crc_and_chain_checked() {
        let rel = RelFile { tablespace: 1663, database: 5, relfilenode: 16384 };
        let big = vec![7u8; 3 * PAGE + 100];
        let block_data = vec![1u8; 40];
        let makers: Vec<Box<dyn Fn(u64) -> Vec<u8>>> = vec![
            Box::new(|prev| record(prev, 0, 0, 0x00, &main_data(&[1, 2, 3]))),
            Box::new(move |prev| record(prev, 730, 10, 0x00, &with_block(rel, 3, &block_data, &[9; 3]))),
            Box::new(move |prev| record(prev, 731, 1, 0x00, &main_data(&big))),
            Box::new(|prev| record(prev, 0, 0, 0x10, &main_data(&[5; 20]))),
        ];
        // Enough records that the stream crosses a segment boundary inside a record.
        let mut all: Vec<&dyn Fn(u64) -> Vec<u8>> = Vec::new();
        for _ in 0..8 {
            for m in &makers {
                all.push(m.as_ref());
            }
        }
        let start = 3 * SEG as u64;
        let (segments, lsns) = segments(start, SEG, MAGIC15, &all);
        assert!(segments.len() >= 2, "the test must cross a segment");
        let (records, ends) = read_all(&segments, start);
        assert_eq!(records.iter().map(|r| r.lsn).collect::<Vec<_>>(), lsns);
        assert_eq!(records[1].blocks, vec![BlockRef { id: 0, rel, fork: 0, block: 3, has_image: false }]);
        assert_eq!(records[1].main_data, vec![9; 3]);
        assert_eq!(records[2].main_data.len(), 3 * PAGE + 100);
        assert_eq!(records[1].xid, 730);
        assert!(matches!(ends.last(), Some(SegmentEnd::Ended { .. })), "{ends:?}");
        for pair in records.windows(2) {
            assert_eq!(pair[1].prev, pair[0].lsn);
            assert!(pair[0].end_lsn <= pair[1].lsn);
        }
    }

    #[test]
    fn a_damaged_record_ends_the_wal_there_and_a_recycled_page_too() {
        let makers: Vec<Box<dyn Fn(u64) -> Vec<u8>>> =
            (0..5).map(|i| Box::new(move |prev| record(prev, i, 1, 0, &main_data(&[i as u8; 50]))) as _).collect();
        let all: Vec<&dyn Fn(u64) -> Vec<u8>> = makers.iter().map(|m| m.as_ref()).collect();
        let (mut segments, lsns) = segments(0, SEG, MAGIC15, &all);
        // Flip a byte of the third record's body.
        segments[0][(lsns[2] + 30) as usize] ^= 0xFF;
        let (records, ends) = read_all(&segments, 0);
        assert_eq!(records.len(), 2);
        assert_eq!(
            ends[0],
            SegmentEnd::Ended {
                lsn: lsns[2],
                reason: "a record whose CRC does not match (the WAL written so far ends here)".into()
            }
        );

        // A page whose address is not its own (recycled): the WAL ends at the record crossing
        // into it.
        let long: Vec<Box<dyn Fn(u64) -> Vec<u8>>> =
            (0..4).map(|i| Box::new(move |prev| record(prev, i, 1, 0, &main_data(&[i as u8; 3000]))) as _).collect();
        let all: Vec<&dyn Fn(u64) -> Vec<u8>> = long.iter().map(|m| m.as_ref()).collect();
        let (mut recycled, lsns) = super::build::segments(0, SEG, MAGIC15, &all);
        assert!(lsns[2] < PAGE as u64 && lsns[3] > PAGE as u64, "the third record crosses into the second page");
        recycled[0][PAGE + 8] ^= 1;
        let (records, ends) = read_all(&recycled, 0);
        assert_eq!(records.len(), 2);
        assert!(
            matches!(&ends[0], SegmentEnd::Ended { lsn, reason } if *lsn == lsns[2] && reason.contains("recycled")),
            "{ends:?}"
        );
    }

    #[test]
    fn a_switch_record_ends_the_segment_and_the_next_continues_the_chain() {
        let first: Vec<Box<dyn Fn(u64) -> Vec<u8>>> = vec![
            Box::new(|prev| record(prev, 1, 1, 0, &main_data(&[1; 8]))),
            Box::new(|prev| record(prev, 0, RM_XLOG_ID, XLOG_SWITCH, &[])),
        ];
        let all: Vec<&dyn Fn(u64) -> Vec<u8>> = first.iter().map(|m| m.as_ref()).collect();
        let (segments0, lsns0) = segments(0, SEG, MAGIC15, &all);
        let switch_lsn = lsns0[1];
        let next: Vec<Box<dyn Fn(u64) -> Vec<u8>>> =
            vec![Box::new(move |_| record(switch_lsn, 2, 1, 0, &main_data(&[2; 8])))];
        let all: Vec<&dyn Fn(u64) -> Vec<u8>> = next.iter().map(|m| m.as_ref()).collect();
        let (segments1, _) = segments(SEG as u64, SEG, MAGIC15, &all);
        let (records, ends) = read_all(&[segments0[0].clone(), segments1[0].clone()], 0);
        assert_eq!(ends[0], SegmentEnd::Switched);
        assert_eq!(records.iter().map(|r| r.xid).collect::<Vec<_>>(), vec![1, 0, 2]);
    }

    #[test]
    fn starting_mid_record_skips_to_the_first_whole_record_and_hostile_lengths_do_not_panic() {
        let big = vec![3u8; SEG + 500];
        let makers: Vec<Box<dyn Fn(u64) -> Vec<u8>>> = vec![
            Box::new(|prev| record(prev, 1, 1, 0, &main_data(&[1; 8]))),
            Box::new(move |prev| record(prev, 2, 1, 0, &main_data(&big))),
            Box::new(|prev| record(prev, 3, 1, 0, &main_data(&[3; 8]))),
        ];
        let all: Vec<&dyn Fn(u64) -> Vec<u8>> = makers.iter().map(|m| m.as_ref()).collect();
        let (segments, _) = segments(0, SEG, MAGIC15, &all);
        let mut reader = Reader::new(SEG as u32);
        let mut xids = Vec::new();
        reader
            .segment(SEG as u64, &segments[1], &mut |r| {
                xids.push(r.xid);
                Ok(())
            })
            .unwrap();
        assert_eq!(xids, vec![3], "the record begun in the segment not read is skipped");

        // Garbage after a valid first page header: never a panic, an end or an error.
        let mut garbage = segments[0].clone();
        for (i, b) in garbage.iter_mut().enumerate().skip(LONG_PAGE_HEADER) {
            *b = (i * 7919 % 251) as u8;
        }
        let _ = Reader::new(SEG as u32).segment(0, &garbage, &mut |_| Ok(()));
        let _ = Reader::new(SEG as u32).segment(0, &garbage[..100], &mut |_| Ok(()));
    }
}
