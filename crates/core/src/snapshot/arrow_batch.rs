//! Arrow schema of a snapshot and a builder that collects one batch of rows, column by column.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Date32Builder, FixedSizeBinaryBuilder, Float32Builder, Float64Builder, Int16Builder,
    Int32Builder, Int64Builder, StringBuilder, Time64MicrosecondBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

use super::manifest::{ColumnDef, Encoding, TableDef};
use crate::error::{Error, Result};

pub const PG_TYPE_METADATA: &str = "backstop.pg_type";
pub const ENCODING_METADATA: &str = "backstop.encoding";

pub fn data_type(encoding: Encoding) -> DataType {
    match encoding {
        Encoding::Bool => DataType::Boolean,
        Encoding::Int16 => DataType::Int16,
        Encoding::Int32 => DataType::Int32,
        Encoding::Int64 => DataType::Int64,
        Encoding::Float32 => DataType::Float32,
        Encoding::Float64 => DataType::Float64,
        Encoding::Text | Encoding::TextIo => DataType::Utf8,
        Encoding::Bytea => DataType::Binary,
        Encoding::Date => DataType::Date32,
        Encoding::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
        Encoding::TimestampTz => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        Encoding::Time => DataType::Time64(TimeUnit::Microsecond),
        Encoding::Uuid => DataType::FixedSizeBinary(16),
    }
}

fn encoding_name(encoding: Encoding) -> String {
    serde_json::to_value(encoding).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// Each field carries the PostgreSQL type, so the Parquet file explains itself to other readers.
pub fn field(column: &ColumnDef) -> Field {
    let mut metadata = HashMap::from([
        (PG_TYPE_METADATA.to_string(), column.type_name.clone()),
        (ENCODING_METADATA.to_string(), encoding_name(column.encoding)),
    ]);
    let extension = match (column.encoding, column.type_name.as_str()) {
        (Encoding::Uuid, _) => Some("arrow.uuid"),
        (Encoding::TextIo, "json" | "jsonb") => Some("arrow.json"),
        _ => None,
    };
    if let Some(name) = extension {
        metadata.insert("ARROW:extension:name".to_string(), name.to_string());
    }
    Field::new(&column.name, data_type(column.encoding), true).with_metadata(metadata)
}

pub fn schema(table: &TableDef) -> SchemaRef {
    Arc::new(Schema::new(table.columns.iter().map(field).collect::<Vec<_>>()))
}

/// Checks that a Parquet file's columns are the manifest's, by name and Arrow type.
pub fn check_schema(key: &str, table: &TableDef, found: &Schema) -> Result<()> {
    let expected = schema(table);
    let describe = |s: &Schema| {
        s.fields().iter().map(|f| format!("{} {}", f.name(), f.data_type())).collect::<Vec<_>>().join(", ")
    };
    let same = expected.fields().len() == found.fields().len()
        && expected
            .fields()
            .iter()
            .zip(found.fields())
            .all(|(a, b)| a.name() == b.name() && a.data_type() == b.data_type());
    if same {
        Ok(())
    } else {
        Err(Error::Corrupt {
            key: key.to_string(),
            reason: format!("its columns ({}) do not match its manifest ({})", describe(found), describe(&expected)),
        })
    }
}

pub enum ColumnBuilder {
    Bool(BooleanBuilder),
    Int16(Int16Builder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    Float32(Float32Builder),
    Float64(Float64Builder),
    Utf8(StringBuilder),
    Binary(BinaryBuilder),
    Date(Date32Builder),
    Timestamp(TimestampMicrosecondBuilder),
    Time(Time64MicrosecondBuilder),
    Uuid(FixedSizeBinaryBuilder),
}

impl ColumnBuilder {
    fn new(encoding: Encoding) -> Self {
        match encoding {
            Encoding::Bool => ColumnBuilder::Bool(BooleanBuilder::new()),
            Encoding::Int16 => ColumnBuilder::Int16(Int16Builder::new()),
            Encoding::Int32 => ColumnBuilder::Int32(Int32Builder::new()),
            Encoding::Int64 => ColumnBuilder::Int64(Int64Builder::new()),
            Encoding::Float32 => ColumnBuilder::Float32(Float32Builder::new()),
            Encoding::Float64 => ColumnBuilder::Float64(Float64Builder::new()),
            Encoding::Text | Encoding::TextIo => ColumnBuilder::Utf8(StringBuilder::new()),
            Encoding::Bytea => ColumnBuilder::Binary(BinaryBuilder::new()),
            Encoding::Date => ColumnBuilder::Date(Date32Builder::new()),
            Encoding::Timestamp => ColumnBuilder::Timestamp(TimestampMicrosecondBuilder::new()),
            Encoding::TimestampTz => ColumnBuilder::Timestamp(TimestampMicrosecondBuilder::new().with_timezone("UTC")),
            Encoding::Time => ColumnBuilder::Time(Time64MicrosecondBuilder::new()),
            Encoding::Uuid => ColumnBuilder::Uuid(FixedSizeBinaryBuilder::new(16)),
        }
    }

    pub fn append_null(&mut self) {
        match self {
            ColumnBuilder::Bool(b) => b.append_null(),
            ColumnBuilder::Int16(b) => b.append_null(),
            ColumnBuilder::Int32(b) => b.append_null(),
            ColumnBuilder::Int64(b) => b.append_null(),
            ColumnBuilder::Float32(b) => b.append_null(),
            ColumnBuilder::Float64(b) => b.append_null(),
            ColumnBuilder::Utf8(b) => b.append_null(),
            ColumnBuilder::Binary(b) => b.append_null(),
            ColumnBuilder::Date(b) => b.append_null(),
            ColumnBuilder::Timestamp(b) => b.append_null(),
            ColumnBuilder::Time(b) => b.append_null(),
            ColumnBuilder::Uuid(b) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            ColumnBuilder::Bool(b) => Arc::new(b.finish()),
            ColumnBuilder::Int16(b) => Arc::new(b.finish()),
            ColumnBuilder::Int32(b) => Arc::new(b.finish()),
            ColumnBuilder::Int64(b) => Arc::new(b.finish()),
            ColumnBuilder::Float32(b) => Arc::new(b.finish()),
            ColumnBuilder::Float64(b) => Arc::new(b.finish()),
            ColumnBuilder::Utf8(b) => Arc::new(b.finish()),
            ColumnBuilder::Binary(b) => Arc::new(b.finish()),
            ColumnBuilder::Date(b) => Arc::new(b.finish()),
            ColumnBuilder::Timestamp(b) => Arc::new(b.finish()),
            ColumnBuilder::Time(b) => Arc::new(b.finish()),
            ColumnBuilder::Uuid(b) => Arc::new(b.finish()),
        }
    }
}

/// Collects rows until the caller decides the batch is full (by rows or by `bytes`).
pub struct BatchBuilder {
    schema: SchemaRef,
    pub columns: Vec<ColumnBuilder>,
    rows: usize,
    /// Variable-length bytes appended so far: batches are cut by size, so a table of 10 MB values
    /// does not hold a thousand of them in memory at once.
    pub bytes: usize,
}

impl BatchBuilder {
    pub fn new(table: &TableDef) -> Self {
        BatchBuilder {
            schema: schema(table),
            columns: table.columns.iter().map(|c| ColumnBuilder::new(c.encoding)).collect(),
            rows: 0,
            bytes: 0,
        }
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Marks one complete row as appended (every column builder got a value or a null).
    pub fn end_row(&mut self) {
        self.rows += 1;
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn finish(&mut self) -> Result<RecordBatch> {
        let arrays: Vec<ArrayRef> = self.columns.iter_mut().map(ColumnBuilder::finish).collect();
        let rows = self.rows;
        self.rows = 0;
        self.bytes = 0;
        let options = arrow_array::RecordBatchOptions::new().with_row_count(Some(rows));
        RecordBatch::try_new_with_options(self.schema.clone(), arrays, &options)
            .map_err(|e| Error::InvalidInput(format!("rows could not be assembled into a batch: {e}")))
    }
}
