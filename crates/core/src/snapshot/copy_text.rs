//! Renders snapshot rows as PostgreSQL COPY text format, so a restore goes through COPY's own bulk
//! path: each column's input function, defaults, constraints and multi-insert batching.
//!
//! Every value is written in a form PostgreSQL reads back exactly whatever DateStyle, TimeZone or
//! extra_float_digits the session has: ISO dates with BC, timestamps in UTC with `+00`, floats as
//! Rust's shortest round-trip representation.

use std::fmt::Write as _;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Time64MicrosecondType,
    TimestampMicrosecondType,
};
use arrow_array::{
    Array, BinaryArray, BooleanArray, Date32Array, FixedSizeBinaryArray, Float32Array, Float64Array, Int16Array,
    Int32Array, Int64Array, RecordBatch, StringArray, Time64MicrosecondArray, TimestampMicrosecondArray,
};
use arrow_schema::DataType;

use super::time::{push_arrow_date, push_arrow_time, push_arrow_timestamp};
use crate::error::{Error, Result};

enum ColumnView<'a> {
    Bool(&'a BooleanArray),
    Int16(&'a Int16Array),
    Int32(&'a Int32Array),
    Int64(&'a Int64Array),
    Float32(&'a Float32Array),
    Float64(&'a Float64Array),
    Text(&'a StringArray),
    Binary(&'a BinaryArray),
    Date(&'a Date32Array),
    Timestamp(&'a TimestampMicrosecondArray, bool),
    Time(&'a Time64MicrosecondArray),
    Uuid(&'a FixedSizeBinaryArray),
}

/// One batch, ready to render row by row.
pub struct BatchRenderer<'a> {
    columns: Vec<(&'a dyn Array, ColumnView<'a>)>,
    rows: usize,
}

impl<'a> BatchRenderer<'a> {
    /// `columns`: the batch's column indexes to render, in COPY column order.
    pub fn new(batch: &'a RecordBatch, columns: &[usize]) -> Result<Self> {
        let views = columns
            .iter()
            .map(|&index| {
                let array = batch.column(index).as_ref();
                let view = match array.data_type() {
                    DataType::Boolean => ColumnView::Bool(array.as_boolean()),
                    DataType::Int16 => ColumnView::Int16(array.as_primitive::<Int16Type>()),
                    DataType::Int32 => ColumnView::Int32(array.as_primitive::<Int32Type>()),
                    DataType::Int64 => ColumnView::Int64(array.as_primitive::<Int64Type>()),
                    DataType::Float32 => ColumnView::Float32(array.as_primitive::<Float32Type>()),
                    DataType::Float64 => ColumnView::Float64(array.as_primitive::<Float64Type>()),
                    DataType::Utf8 => ColumnView::Text(array.as_string::<i32>()),
                    DataType::Binary => ColumnView::Binary(array.as_binary::<i32>()),
                    DataType::Date32 => ColumnView::Date(array.as_primitive::<Date32Type>()),
                    DataType::Timestamp(arrow_schema::TimeUnit::Microsecond, zone) => {
                        ColumnView::Timestamp(array.as_primitive::<TimestampMicrosecondType>(), zone.is_some())
                    }
                    DataType::Time64(arrow_schema::TimeUnit::Microsecond) => {
                        ColumnView::Time(array.as_primitive::<Time64MicrosecondType>())
                    }
                    DataType::FixedSizeBinary(16) => ColumnView::Uuid(array.as_fixed_size_binary()),
                    other => {
                        return Err(Error::InvalidInput(format!(
                            "column {} has Arrow type {other}, which backstop does not restore",
                            batch.schema().field(index).name()
                        )))
                    }
                };
                Ok((array, view))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(BatchRenderer { columns: views, rows: batch.num_rows() })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Appends one row, tab-separated and newline-terminated.
    pub fn render_row(&self, row: usize, out: &mut String) {
        for (position, (array, view)) in self.columns.iter().enumerate() {
            if position > 0 {
                out.push('\t');
            }
            if array.is_null(row) {
                out.push_str("\\N");
                continue;
            }
            match view {
                ColumnView::Bool(a) => out.push(if a.value(row) { 't' } else { 'f' }),
                ColumnView::Int16(a) => write!(out, "{}", a.value(row)).expect("writing to a String"),
                ColumnView::Int32(a) => write!(out, "{}", a.value(row)).expect("writing to a String"),
                ColumnView::Int64(a) => write!(out, "{}", a.value(row)).expect("writing to a String"),
                ColumnView::Float32(a) => push_float(out, f64::from(a.value(row)), format_args!("{:?}", a.value(row))),
                ColumnView::Float64(a) => push_float(out, a.value(row), format_args!("{:?}", a.value(row))),
                ColumnView::Text(a) => push_escaped(out, a.value(row)),
                ColumnView::Binary(a) => {
                    out.push_str("\\\\x");
                    out.push_str(&hex::encode(a.value(row)));
                }
                ColumnView::Date(a) => push_arrow_date(out, a.value(row)),
                ColumnView::Timestamp(a, zone) => push_arrow_timestamp(out, a.value(row), *zone),
                ColumnView::Time(a) => push_arrow_time(out, a.value(row)),
                ColumnView::Uuid(a) => {
                    let hex = hex::encode(a.value(row));
                    write!(out, "{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
                        .expect("writing to a String");
                }
            }
        }
        out.push('\n');
    }
}

/// Rust's `{:?}` of a float is the shortest text that parses back to the same bits (and keeps the
/// sign of -0); PostgreSQL's float input is correctly rounded, so the value survives exactly.
fn push_float(out: &mut String, value: f64, shortest: std::fmt::Arguments<'_>) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value.is_infinite() {
        out.push_str(if value > 0.0 { "Infinity" } else { "-Infinity" });
    } else {
        out.write_fmt(shortest).expect("writing to a String");
    }
}

/// COPY text escaping: backslash, newline, carriage return and tab are the only special characters.
fn push_escaped(out: &mut String, text: &str) {
    if !text.bytes().any(|b| matches!(b, b'\\' | b'\n' | b'\r' | b'\t')) {
        out.push_str(text);
        return;
    }
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::builder::FixedSizeBinaryBuilder;
    use arrow_array::ArrayRef;

    use super::*;

    fn render(columns: Vec<(&str, ArrayRef)>) -> String {
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        let all: Vec<usize> = (0..batch.num_columns()).collect();
        let renderer = BatchRenderer::new(&batch, &all).unwrap();
        let mut out = String::new();
        for row in 0..renderer.rows() {
            renderer.render_row(row, &mut out);
        }
        out
    }

    #[test]
    fn specials_escape_and_nulls_render_as_copy_reads_them() {
        let out = render(vec![
            ("t", Arc::new(StringArray::from(vec![Some("a\tb\\c\nd\re"), None, Some("\\N"), Some("")])) as ArrayRef),
            ("f", Arc::new(Float64Array::from(vec![f64::NAN, f64::INFINITY, -0.0, 1e300])) as ArrayRef),
            ("g", Arc::new(Float32Array::from(vec![f32::NEG_INFINITY, 0.1, 3.4028235e38, 1.0])) as ArrayRef),
            ("b", Arc::new(BinaryArray::from(vec![Some(&b"\x00\xff"[..]), Some(&b""[..]), None, None])) as ArrayRef),
        ]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "a\\tb\\\\c\\nd\\re\tNaN\t-Infinity\t\\\\x00ff");
        assert_eq!(lines[1], "\\N\tInfinity\t0.1\t\\\\x");
        assert_eq!(lines[2], "\\\\N\t-0.0\t3.4028235e38\t\\N");
        assert_eq!(lines[3], "\t1e300\t1.0\t\\N");
    }

    #[test]
    fn uuids_render_in_their_canonical_form() {
        let mut builder = FixedSizeBinaryBuilder::new(16);
        builder.append_value(hex::decode("a0eebc999c0b4ef8bb6d6bb9bd380a11").unwrap()).unwrap();
        let out = render(vec![("u", Arc::new(builder.finish()) as ArrayRef)]);
        assert_eq!(out, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\n");
    }

    #[test]
    fn floats_render_to_the_same_bits() {
        for value in [0.1f64, 1.0 / 3.0, f64::MIN_POSITIVE, 5e-324, f64::MAX, -123456.789e-10] {
            let text = format!("{value:?}");
            assert_eq!(text.parse::<f64>().unwrap().to_bits(), value.to_bits(), "{text}");
        }
    }
}
