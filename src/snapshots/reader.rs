//! Reads a table's rows through one SPI cursor (one snapshot, with the caller's privileges and
//! row-level security applied) into Arrow batches of bounded size.

use std::ffi::{CStr, CString};

use arrow_array::RecordBatch;
use backstop_core::snapshot::arrow_batch::{BatchBuilder, ColumnBuilder};
use backstop_core::snapshot::manifest::{Encoding, TableDef};
use backstop_core::snapshot::{qualified_name, quote_ident, time};
use pgrx::prelude::*;
use pgrx::PgMemoryContexts;

use crate::errors::raise_with;

/// Rows per SPI fetch and the limits of one batch: whichever is reached first closes a batch, so
/// memory stays bounded for narrow and for wide (TOASTed, many-MB) rows alike.
const FETCH_ROWS: i64 = 1000;
const BATCH_ROWS: usize = 16 * 1024;
const BATCH_BYTES: usize = 16 << 20;

enum Source {
    Binary,
    /// The type's output function, for text I/O columns.
    Output(Box<pg_sys::FmgrInfo>),
}

fn sources(table: &TableDef, type_oids: &[pg_sys::Oid]) -> Vec<Source> {
    table
        .columns
        .iter()
        .zip(type_oids)
        .map(|(column, &oid)| match column.encoding {
            Encoding::TextIo => unsafe {
                let mut function = pg_sys::InvalidOid;
                let mut is_varlena = false;
                pg_sys::getTypeOutputInfo(oid, &mut function, &mut is_varlena);
                let mut info = Box::new(std::mem::zeroed::<pg_sys::FmgrInfo>());
                pg_sys::fmgr_info(function, info.as_mut());
                Source::Output(info)
            },
            _ => Source::Binary,
        })
        .collect()
}

/// Scans every row of `table` (`ONLY` unless it is partitioned) and hands out batches; returns
/// the number of rows read.
pub fn scan(table: &TableDef, type_oids: &[pg_sys::Oid], mut on_batch: impl FnMut(&RecordBatch)) -> u64 {
    let columns: Vec<String> = table.columns.iter().map(|c| quote_ident(&c.name)).collect();
    let only = if table.relkind == "p" { "" } else { "ONLY " };
    let query = format!("SELECT {} FROM {only}{}", columns.join(", "), qualified_name(&table.schema, &table.name));
    let query = CString::new(query).expect("identifiers contain no NUL");
    let sources = sources(table, type_oids);
    let utf8 = unsafe { pg_sys::GetDatabaseEncoding() } == pg_sys::pg_enc::PG_UTF8 as i32;
    let mut builder = BatchBuilder::new(table);
    let mut rows_context = PgMemoryContexts::new("backstop snapshot rows");
    let mut total = 0u64;
    unsafe {
        if pg_sys::SPI_connect() != pg_sys::SPI_OK_CONNECT as i32 {
            raise_with(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, "SPI_connect failed", "This is a bug in backstop.");
        }
        let plan = pg_sys::SPI_prepare(query.as_ptr(), 0, std::ptr::null_mut());
        if plan.is_null() {
            raise_with(
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                "preparing the table scan failed",
                "This is a bug in backstop.",
            );
        }
        let portal = pg_sys::SPI_cursor_open(std::ptr::null(), plan, std::ptr::null_mut(), std::ptr::null(), false);
        loop {
            pgrx::check_for_interrupts!();
            pg_sys::SPI_cursor_fetch(portal, true, FETCH_ROWS as _);
            let fetched = pg_sys::SPI_processed as usize;
            let tuptable = pg_sys::SPI_tuptable;
            if fetched == 0 || tuptable.is_null() {
                break;
            }
            let tupdesc = (*tuptable).tupdesc;
            let tuples = std::slice::from_raw_parts((*tuptable).vals, fetched);
            for &tuple in tuples {
                rows_context.switch_to(|_| {
                    for (index, source) in sources.iter().enumerate() {
                        let mut is_null = false;
                        let datum = pg_sys::SPI_getbinval(tuple, tupdesc, index as i32 + 1, &mut is_null);
                        if is_null {
                            builder.columns[index].append_null();
                        } else {
                            let added =
                                append(&mut builder.columns[index], source, datum, utf8, &table.columns[index].name);
                            builder.bytes += added;
                        }
                    }
                });
                builder.end_row();
                total += 1;
                if builder.rows() >= BATCH_ROWS || builder.bytes >= BATCH_BYTES {
                    on_batch(&finish(&mut builder));
                    rows_context.reset();
                }
            }
            pg_sys::SPI_freetuptable(tuptable);
        }
        if builder.rows() > 0 {
            on_batch(&finish(&mut builder));
        }
        pg_sys::SPI_cursor_close(portal);
        pg_sys::SPI_finish();
    }
    total
}

fn finish(builder: &mut BatchBuilder) -> RecordBatch {
    builder.finish().unwrap_or_else(|e| crate::errors::raise(&e))
}

/// Appends one non-null datum; returns the variable-length bytes it added.
unsafe fn append(
    builder: &mut ColumnBuilder,
    source: &Source,
    datum: pg_sys::Datum,
    utf8: bool,
    column: &str,
) -> usize {
    let raw = datum.value();
    match (builder, source) {
        (ColumnBuilder::Bool(b), _) => b.append_value(raw != 0),
        (ColumnBuilder::Int16(b), _) => b.append_value(raw as i16),
        (ColumnBuilder::Int32(b), _) => b.append_value(raw as i32),
        (ColumnBuilder::Int64(b), _) => b.append_value(raw as i64),
        (ColumnBuilder::Float32(b), _) => b.append_value(f32::from_bits(raw as u32)),
        (ColumnBuilder::Float64(b), _) => b.append_value(f64::from_bits(raw as u64)),
        (ColumnBuilder::Date(b), _) => b.append_value(time::date_to_arrow(raw as i32)),
        (ColumnBuilder::Timestamp(b), _) => match time::timestamp_to_arrow(raw as i64) {
            Ok(value) => b.append_value(value),
            Err(e) => raise_with(
                PgSqlErrorCode::ERRCODE_DATETIME_FIELD_OVERFLOW,
                &format!("column \"{column}\": {e}"),
                "Such far-future timestamps cannot be snapshotted as Parquet; update or exclude the row.",
            ),
        },
        (ColumnBuilder::Time(b), _) => b.append_value(raw as i64),
        (ColumnBuilder::Uuid(b), _) => {
            let bytes = std::slice::from_raw_parts(datum.cast_mut_ptr::<u8>(), 16);
            b.append_value(bytes).expect("a uuid is 16 bytes");
        }
        (ColumnBuilder::Binary(b), _) => {
            let bytes = varlena_bytes(datum);
            b.append_value(bytes);
            return bytes.len();
        }
        (ColumnBuilder::Utf8(b), Source::Binary) => {
            let text = text_of(varlena_bytes(datum), utf8, column);
            b.append_value(text);
            return text.len();
        }
        (ColumnBuilder::Utf8(b), Source::Output(function)) => {
            let output = pg_sys::OutputFunctionCall(std::ptr::from_ref(function.as_ref()).cast_mut(), datum);
            let text = text_of(CStr::from_ptr(output).to_bytes(), utf8, column);
            b.append_value(text);
            return text.len();
        }
    }
    0
}

unsafe fn varlena_bytes<'a>(datum: pg_sys::Datum) -> &'a [u8] {
    let value = pg_sys::pg_detoast_datum_packed(datum.cast_mut_ptr());
    std::slice::from_raw_parts(pgrx::varlena::vardata_any(value).cast::<u8>(), pgrx::varlena::varsize_any_exhdr(value))
}

/// Text in the database encoding, as UTF-8 (Parquet's strings are UTF-8).
unsafe fn text_of<'a>(bytes: &'a [u8], utf8: bool, column: &str) -> &'a str {
    let bytes = if utf8 || bytes.is_empty() {
        bytes
    } else {
        let converted =
            pg_sys::pg_server_to_any(bytes.as_ptr().cast(), bytes.len() as i32, pg_sys::pg_enc::PG_UTF8 as i32);
        if converted.cast_const() == bytes.as_ptr().cast() {
            bytes
        } else {
            CStr::from_ptr(converted).to_bytes()
        }
    };
    std::str::from_utf8(bytes).unwrap_or_else(|_| {
        raise_with(
            PgSqlErrorCode::ERRCODE_CHARACTER_NOT_IN_REPERTOIRE,
            &format!("column \"{column}\" holds text that is not valid in the database encoding"),
            "Snapshots store text as UTF-8; a SQL_ASCII database must hold UTF-8 text to be snapshotted.",
        )
    })
}
