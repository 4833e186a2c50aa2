//! Bulk load through PostgreSQL's own COPY FROM: the snapshot's Parquet rows are rendered as COPY
//! text into the buffer COPY asks for, so each value goes through its type's input function and
//! rows are inserted in COPY's multi-insert batches, with constraints and defaults applied.

use std::cell::RefCell;
use std::ffi::{c_int, c_void, CString};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

use backstop_core::snapshot::copy_text::BatchRenderer;
use backstop_core::snapshot::parquet_file::batch_error;
use backstop_core::Error;
use parquet::arrow::arrow_reader::ParquetRecordBatchReader;
use pgrx::prelude::*;
use pgrx::PgList;

use crate::errors::{notice, raise};
use crate::io;
use crate::snapshots::PROGRESS_INTERVAL;

/// Size of the COPY text chunks handed from the rendering thread to COPY.
const CHUNK_BYTES: usize = 256 << 10;
/// Chunks rendered ahead of COPY: the pipeline's whole buffer.
const CHUNKS_AHEAD: usize = 8;

struct Chunk {
    text: Vec<u8>,
    rows: u64,
}

/// The rows of a verified Parquet file as a stream of COPY text. Decoding Parquet and rendering
/// text run on an I/O thread while the backend parses the previous chunk, so the load costs little
/// more than COPY itself. The thread touches no PostgreSQL state; dropping the source stops it.
pub struct LoadSource {
    chunks: Receiver<Result<Chunk, Error>>,
    expected_rows: u64,
    label: String,
    pending: Vec<u8>,
    offset: usize,
    loaded_rows: u64,
    started: Instant,
    last_report: Instant,
}

impl LoadSource {
    /// `columns`: indexes of the Parquet columns to load, in the order of the COPY column list;
    /// `key` names the object in errors.
    pub fn new(
        reader: ParquetRecordBatchReader,
        key: String,
        columns: Vec<usize>,
        expected_rows: u64,
        label: String,
    ) -> Self {
        let (sender, chunks) = sync_channel(CHUNKS_AHEAD);
        // The runtime's threads block every signal, as threads in a backend must.
        drop(io::runtime().spawn_blocking(move || render(reader, &key, &columns, &sender)));
        LoadSource {
            chunks,
            expected_rows,
            label,
            pending: Vec::new(),
            offset: 0,
            loaded_rows: 0,
            started: Instant::now(),
            last_report: Instant::now(),
        }
    }

    /// Takes the next chunk into `pending`; false once every row was handed out.
    fn refill(&mut self) -> bool {
        let chunk = loop {
            match self.chunks.recv_timeout(Duration::from_millis(100)) {
                Ok(Ok(chunk)) => break chunk,
                Ok(Err(e)) => raise(&e),
                Err(RecvTimeoutError::Timeout) => {
                    pgrx::check_for_interrupts!();
                }
                Err(RecvTimeoutError::Disconnected) => return false,
            }
        };
        self.loaded_rows += chunk.rows;
        self.pending = chunk.text;
        self.offset = 0;
        if self.last_report.elapsed() >= PROGRESS_INTERVAL {
            self.last_report = Instant::now();
            notice(&format!(
                "{}: {} of {} rows loaded, {:.0} s",
                self.label,
                self.loaded_rows,
                self.expected_rows,
                self.started.elapsed().as_secs_f64()
            ));
        }
        true
    }
}

/// Renders every row of `reader` as COPY text, in chunks; stops early when the backend is gone.
fn render(reader: ParquetRecordBatchReader, key: &str, columns: &[usize], sender: &SyncSender<Result<Chunk, Error>>) {
    let mut text = String::with_capacity(CHUNK_BYTES + 64 * 1024);
    let mut rows = 0u64;
    for batch in reader {
        let batch = match batch {
            Ok(batch) => batch,
            Err(e) => {
                let _ = sender.send(Err(batch_error(key, e)));
                return;
            }
        };
        let renderer = match BatchRenderer::new(&batch, columns) {
            Ok(renderer) => renderer,
            Err(e) => {
                let _ = sender.send(Err(e));
                return;
            }
        };
        for row in 0..renderer.rows() {
            renderer.render_row(row, &mut text);
            rows += 1;
            if text.len() >= CHUNK_BYTES {
                let chunk = Chunk {
                    text: std::mem::replace(&mut text, String::with_capacity(CHUNK_BYTES + 64 * 1024)).into_bytes(),
                    rows,
                };
                if sender.send(Ok(chunk)).is_err() {
                    return;
                }
                rows = 0;
            }
        }
    }
    if !text.is_empty() {
        let _ = sender.send(Ok(Chunk { text: text.into_bytes(), rows }));
    }
}

thread_local! {
    static SOURCE: RefCell<Option<LoadSource>> = const { RefCell::new(None) };
}

/// COPY's data source callback: fills `outbuf` with at least `minread` and at most `maxread`
/// bytes; fewer than `minread` means end of data.
#[pg_guard]
unsafe extern "C-unwind" fn copy_source(outbuf: *mut c_void, minread: c_int, maxread: c_int) -> c_int {
    SOURCE.with_borrow_mut(|source| {
        let source = source.as_mut().expect("a load is in progress");
        let (minread, maxread) = (minread.max(1) as usize, maxread as usize);
        let mut written = 0usize;
        while written < maxread {
            if source.offset == source.pending.len() && (written >= minread || !source.refill()) {
                break;
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
    pg_sys::makeDefElem(pg_sys::pstrdup(name.as_ptr()), pg_sys::makeString(pg_sys::pstrdup(value.as_ptr())).cast(), -1)
        .cast()
}

/// Loads every row of `source` into the table `relid` (its `columns`, by name); returns the rows
/// COPY inserted.
pub fn copy_into(relid: pg_sys::Oid, columns: &[String], source: LoadSource) -> u64 {
    /// Releases the source (and its temporary file) however COPY ends, errors included.
    struct Release;
    impl Drop for Release {
        fn drop(&mut self) {
            SOURCE.with_borrow_mut(|slot| *slot = None);
        }
    }
    let _release = Release;
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
    processed
}
