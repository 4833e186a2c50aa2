//! Bulk load through PostgreSQL's own COPY FROM: the snapshot's Parquet rows are rendered as COPY
//! text into the buffer COPY asks for, so each value goes through its type's input function and
//! rows are inserted in COPY's multi-insert batches, with constraints and defaults applied.

use std::cell::RefCell;
use std::ffi::{c_int, c_void, CString};
use std::time::Instant;

use arrow_array::RecordBatch;
use backstop_core::snapshot::copy_text::BatchRenderer;
use backstop_core::snapshot::parquet_file::batch_error;
use parquet::arrow::arrow_reader::ParquetRecordBatchReader;
use pgrx::prelude::*;
use pgrx::PgList;

use crate::errors::{notice, raise, OrRaise};
use crate::snapshot::PROGRESS_INTERVAL;

/// COPY text rendered ahead of what COPY has consumed.
const RENDER_AHEAD: usize = 256 << 10;

pub struct LoadSource {
    pub reader: ParquetRecordBatchReader,
    /// Object key, for errors.
    pub key: String,
    /// Indexes of the Parquet columns to load, in the order of the COPY column list.
    pub columns: Vec<usize>,
    pub expected_rows: u64,
    pub label: String,
    batch: Option<RecordBatch>,
    next_row: usize,
    pending: Vec<u8>,
    offset: usize,
    rendered_rows: u64,
    started: Instant,
    last_report: Instant,
}

impl LoadSource {
    pub fn new(
        reader: ParquetRecordBatchReader,
        key: String,
        columns: Vec<usize>,
        expected_rows: u64,
        label: String,
    ) -> Self {
        LoadSource {
            reader,
            key,
            columns,
            expected_rows,
            label,
            batch: None,
            next_row: 0,
            pending: Vec::new(),
            offset: 0,
            rendered_rows: 0,
            started: Instant::now(),
            last_report: Instant::now(),
        }
    }

    /// Renders more rows into `pending`; false once every row was rendered.
    fn refill(&mut self) -> bool {
        self.pending.clear();
        self.offset = 0;
        let mut text = String::with_capacity(RENDER_AHEAD + 4096);
        while text.len() < RENDER_AHEAD {
            let exhausted = self
                .batch
                .as_ref()
                .is_none_or(|b| self.next_row >= b.num_rows());
            if exhausted {
                match self.reader.next() {
                    None => break,
                    Some(Ok(batch)) => {
                        self.batch = Some(batch);
                        self.next_row = 0;
                        continue;
                    }
                    Some(Err(e)) => raise(&batch_error(&self.key, e)),
                }
            }
            let batch = self.batch.as_ref().expect("checked above");
            let renderer = BatchRenderer::new(batch, &self.columns).or_raise();
            while self.next_row < renderer.rows() && text.len() < RENDER_AHEAD {
                renderer.render_row(self.next_row, &mut text);
                self.next_row += 1;
                self.rendered_rows += 1;
            }
        }
        if self.last_report.elapsed() >= PROGRESS_INTERVAL {
            self.last_report = Instant::now();
            notice(&format!(
                "{}: {} of {} rows loaded, {:.0} s",
                self.label,
                self.rendered_rows,
                self.expected_rows,
                self.started.elapsed().as_secs_f64()
            ));
        }
        self.pending = text.into_bytes();
        !self.pending.is_empty()
    }
}

thread_local! {
    static SOURCE: RefCell<Option<LoadSource>> = const { RefCell::new(None) };
}

/// COPY's data source callback: fills `outbuf` with at least `minread` and at most `maxread`
/// bytes; fewer than `minread` means end of data.
#[pg_guard]
unsafe extern "C-unwind" fn copy_source(
    outbuf: *mut c_void,
    minread: c_int,
    maxread: c_int,
) -> c_int {
    SOURCE.with_borrow_mut(|source| {
        let source = source.as_mut().expect("a load is in progress");
        let (minread, maxread) = (minread.max(1) as usize, maxread as usize);
        let mut written = 0usize;
        while written < maxread {
            if source.offset == source.pending.len() {
                if written >= minread || !source.refill() {
                    break;
                }
            }
            let n = (maxread - written).min(source.pending.len() - source.offset);
            std::ptr::copy_nonoverlapping(
                source.pending.as_ptr().add(source.offset),
                outbuf.cast::<u8>().add(written),
                n,
            );
            source.offset += n;
            written += n;
        }
        written as c_int
    })
}

unsafe fn def_elem(name: &str, value: &str) -> *mut pg_sys::Node {
    let name = CString::new(name).expect("no NUL");
    let value = CString::new(value).expect("no NUL");
    pg_sys::makeDefElem(
        pg_sys::pstrdup(name.as_ptr()),
        pg_sys::makeString(pg_sys::pstrdup(value.as_ptr())).cast(),
        -1,
    )
    .cast()
}

/// Loads every row of `source` into the table `relid` (its `columns`, by name); returns the rows
/// COPY inserted.
pub fn copy_into(relid: pg_sys::Oid, columns: &[String], source: LoadSource) -> u64 {
    SOURCE.with_borrow_mut(|slot| *slot = Some(source));
    let processed = unsafe {
        let relation = pg_sys::table_open(relid, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE);
        let mut names = PgList::<pg_sys::Node>::new();
        for column in columns {
            let column = CString::new(column.as_str()).expect("column names contain no NUL");
            names.push(pg_sys::makeString(pg_sys::pstrdup(column.as_ptr())).cast());
        }
        let mut options = PgList::<pg_sys::Node>::new();
        options.push(def_elem("format", "text"));
        // The rendered text is UTF-8 whatever the client's encoding; COPY converts it to the
        // server's.
        options.push(def_elem("encoding", "UTF8"));
        let parse_state = pg_sys::make_parsestate(std::ptr::null_mut());
        // COPY's executor state resolves the target through range table entry 1, as in DoCopy.
        pg_sys::addRangeTableEntryForRelation(
            parse_state,
            relation,
            pg_sys::RowExclusiveLock as pg_sys::LOCKMODE,
            std::ptr::null_mut(),
            false,
            false,
        );
        let copy_state = pg_sys::BeginCopyFrom(
            parse_state,
            relation,
            std::ptr::null_mut(),
            std::ptr::null(),
            false,
            Some(copy_source),
            names.into_pg(),
            options.into_pg(),
        );
        let processed = pg_sys::CopyFrom(copy_state);
        pg_sys::EndCopyFrom(copy_state);
        pg_sys::free_parsestate(parse_state);
        pg_sys::table_close(relation, pg_sys::NoLock as pg_sys::LOCKMODE);
        processed
    };
    SOURCE.with_borrow_mut(|slot| *slot = None);
    processed
}
