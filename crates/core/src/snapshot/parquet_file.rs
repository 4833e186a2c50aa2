//! Writing a snapshot's Parquet bytes in row groups of bounded size, and reading them back.

use std::fs::File;

use arrow_array::RecordBatch;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use super::arrow_batch::{check_schema, schema};
use super::manifest::TableDef;
use crate::error::{Error, Result};

/// A row group is closed once its encoded columns reach this size: it bounds the writer's memory
/// whatever the table's size, and keeps row groups large enough for efficient reads.
pub const ROW_GROUP_BYTES: usize = 32 << 20;
pub const ROW_GROUP_ROWS: usize = 1 << 20;
pub const ZSTD_LEVEL: i32 = 3;

/// Encodes batches into Parquet, handing out the bytes as row groups complete.
pub struct ParquetSink {
    writer: ArrowWriter<Vec<u8>>,
}

fn write_error(e: parquet::errors::ParquetError) -> Error {
    Error::InvalidInput(format!("the rows could not be encoded as Parquet: {e}"))
}

impl ParquetSink {
    pub fn new(table: &TableDef) -> Result<Self> {
        let properties = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(ZSTD_LEVEL).expect("a valid zstd level")))
            .set_max_row_group_size(ROW_GROUP_ROWS)
            .set_created_by(format!("backstop {}", env!("CARGO_PKG_VERSION")))
            .build();
        let writer = ArrowWriter::try_new(Vec::new(), schema(table), Some(properties)).map_err(write_error)?;
        Ok(ParquetSink { writer })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.writer.write(batch).map_err(write_error)?;
        if self.writer.in_progress_size() >= ROW_GROUP_BYTES {
            self.writer.flush().map_err(write_error)?;
        }
        Ok(())
    }

    /// Bytes completed so far; the caller uploads them and they are dropped here.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(self.writer.inner_mut())
    }

    /// Writes the footer; returns the remaining bytes and the number of row groups.
    pub fn finish(mut self) -> Result<(Vec<u8>, u64)> {
        let metadata = self.writer.finish().map_err(write_error)?;
        let rest = std::mem::take(self.writer.inner_mut());
        Ok((rest, metadata.num_row_groups() as u64))
    }
}

/// Reads a snapshot's Parquet file in batches of `batch_rows`, after checking its columns against
/// the manifest. `key` names the object in errors.
pub fn read_batches(
    key: &str,
    file: File,
    table: &TableDef,
    batch_rows: usize,
) -> Result<(ParquetRecordBatchReader, u64)> {
    let corrupt = |e: parquet::errors::ParquetError| Error::Corrupt {
        key: key.to_string(),
        reason: format!("it is not a readable Parquet file ({e})"),
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(corrupt)?;
    check_schema(key, table, builder.schema())?;
    let rows = builder.metadata().file_metadata().num_rows() as u64;
    Ok((builder.with_batch_size(batch_rows).build().map_err(corrupt)?, rows))
}

/// Turns an error met while reading batches into a corruption report for `key`.
pub fn batch_error(key: &str, e: arrow_schema::ArrowError) -> Error {
    Error::Corrupt { key: key.to_string(), reason: format!("a row group does not decode ({e})") }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::snapshot::arrow_batch::{BatchBuilder, ColumnBuilder};
    use crate::snapshot::content::ContentDigest;
    use crate::snapshot::manifest::tests::column;
    use crate::snapshot::manifest::Encoding;

    fn table() -> TableDef {
        TableDef {
            schema: "public".into(),
            name: "t".into(),
            relkind: "r".into(),
            unlogged: false,
            columns: vec![column("id", "bigint", Encoding::Int64), column("body", "text", Encoding::Text)],
            constraints: vec![],
            indexes: vec![],
            ddl: String::new(),
            access: Default::default(),
            referenced_by: vec![],
        }
    }

    fn write_rows(rows: usize, value_len: usize) -> (Vec<u8>, u64, ContentDigest, usize) {
        let table = table();
        let mut sink = ParquetSink::new(&table).unwrap();
        let mut builder = BatchBuilder::new(&table);
        let mut out = Vec::new();
        let mut digest = ContentDigest::default();
        let mut peak_pending = 0;
        for i in 0..rows {
            if let ColumnBuilder::Int64(b) = &mut builder.columns[0] {
                b.append_value(i as i64);
            }
            if let ColumnBuilder::Utf8(b) = &mut builder.columns[1] {
                // Pseudo-random text: row groups are cut by encoded size, which compressible text barely grows.
                let body: String = (0..value_len / 16 + 1)
                    .map(|k| format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&((i * 1000 + k) as u64).to_le_bytes())))
                    .collect();
                b.append_value(body);
            }
            builder.end_row();
            if builder.rows() == 1000 || i + 1 == rows {
                let batch = builder.finish().unwrap();
                digest.add_batch(&batch).unwrap();
                sink.write(&batch).unwrap();
                out.extend(sink.take_output());
                peak_pending = peak_pending.max(out.len());
            }
        }
        let (rest, row_groups) = sink.finish().unwrap();
        out.extend(rest);
        (out, row_groups, digest, peak_pending)
    }

    #[test]
    fn row_groups_are_cut_by_size_and_read_back_identically() {
        // ~100 MB of incompressible-ish text in 1000-row batches: several row groups.
        let (bytes, row_groups, digest, _) = write_rows(25_000, 4_000);
        assert!(row_groups >= 2, "{row_groups} row groups");
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&bytes).unwrap();
        let (reader, rows) = read_batches("k", file, &table(), 4096).unwrap();
        assert_eq!(rows, 25_000);
        let mut read_back = ContentDigest::default();
        for batch in reader {
            read_back.add_batch(&batch.unwrap()).unwrap();
        }
        assert_eq!(read_back, digest);
    }

    #[test]
    fn truncated_or_foreign_files_are_refused_as_corrupt() {
        let (bytes, _, _, _) = write_rows(10, 10);
        for damaged in [&bytes[..bytes.len() - 100], &b"PAR1 not really"[..]] {
            let mut file = tempfile::tempfile().unwrap();
            file.write_all(damaged).unwrap();
            assert!(matches!(read_batches("k", file, &table(), 10), Err(Error::Corrupt { .. })));
        }
        let mut other = table();
        other.columns[1].encoding = Encoding::Bytea;
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&bytes).unwrap();
        let error = read_batches("k", file, &other, 10).unwrap_err();
        assert!(error.to_string().contains("do not match its manifest"), "{error}");
    }
}
