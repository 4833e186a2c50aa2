//! An order-independent digest of a table's contents: each row's values hash to 128 bits, and the
//! row hashes are summed. The same rows in any physical order give the same digest, so a restored
//! table (whose heap order may differ) can be checked against the manifest by reading it back.

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Time64MicrosecondType,
    TimestampMicrosecondType,
};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use xxhash_rust::xxh3::xxh3_128_with_seed;

use crate::error::{Error, Result};

const COLUMN_MIX: u128 = 0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835;
const NULL_SEED: u64 = 1 << 63;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ContentDigest {
    rows: u64,
    sum: u128,
}

impl ContentDigest {
    pub fn rows(&self) -> u64 {
        self.rows
    }

    pub fn checksum(&self) -> String {
        format!("xxh3-128-sum:{:032x}", self.sum)
    }

    pub fn add_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        let mut rows = vec![0u128; batch.num_rows()];
        for (index, column) in batch.columns().iter().enumerate() {
            fold_column(column.as_ref(), index as u64 + 1, &mut rows)?;
        }
        for row in rows {
            // A second hash makes the per-row value non-linear before the sum.
            self.sum = self.sum.wrapping_add(xxh3_128_with_seed(&row.to_le_bytes(), 0));
        }
        self.rows += batch.num_rows() as u64;
        Ok(())
    }
}

fn fold_column(column: &dyn Array, seed: u64, rows: &mut [u128]) -> Result<()> {
    let null = xxh3_128_with_seed(b"", seed | NULL_SEED);
    let mut fold = |value_hash: &dyn Fn(usize) -> u128| {
        for (row, acc) in rows.iter_mut().enumerate() {
            let h = if column.is_null(row) { null } else { value_hash(row) };
            *acc = acc.wrapping_mul(COLUMN_MIX).wrapping_add(h);
        }
    };
    let hash = |bytes: &[u8]| xxh3_128_with_seed(bytes, seed);
    match column.data_type() {
        DataType::Boolean => {
            let a = column.as_boolean();
            fold(&|r| hash(&[a.value(r) as u8]))
        }
        DataType::Int16 => {
            let a = column.as_primitive::<Int16Type>();
            fold(&|r| hash(&a.value(r).to_le_bytes()))
        }
        DataType::Int32 => {
            let a = column.as_primitive::<Int32Type>();
            fold(&|r| hash(&a.value(r).to_le_bytes()))
        }
        DataType::Int64 => {
            let a = column.as_primitive::<Int64Type>();
            fold(&|r| hash(&a.value(r).to_le_bytes()))
        }
        // Every NaN is the same value to PostgreSQL, whatever its bit pattern; -0 stays distinct.
        DataType::Float32 => {
            let a = column.as_primitive::<Float32Type>();
            fold(&|r| hash(&canonical_f32(a.value(r)).to_le_bytes()))
        }
        DataType::Float64 => {
            let a = column.as_primitive::<Float64Type>();
            fold(&|r| hash(&canonical_f64(a.value(r)).to_le_bytes()))
        }
        DataType::Utf8 => {
            let a = column.as_string::<i32>();
            fold(&|r| hash(a.value(r).as_bytes()))
        }
        DataType::Binary => {
            let a = column.as_binary::<i32>();
            fold(&|r| hash(a.value(r)))
        }
        DataType::FixedSizeBinary(_) => {
            let a = column.as_fixed_size_binary();
            fold(&|r| hash(a.value(r)))
        }
        DataType::Date32 => {
            let a = column.as_primitive::<Date32Type>();
            fold(&|r| hash(&a.value(r).to_le_bytes()))
        }
        DataType::Timestamp(arrow_schema::TimeUnit::Microsecond, _) => {
            let a = column.as_primitive::<TimestampMicrosecondType>();
            fold(&|r| hash(&a.value(r).to_le_bytes()))
        }
        DataType::Time64(arrow_schema::TimeUnit::Microsecond) => {
            let a = column.as_primitive::<Time64MicrosecondType>();
            fold(&|r| hash(&a.value(r).to_le_bytes()))
        }
        other => return Err(Error::InvalidInput(format!("no content digest for Arrow type {other}"))),
    }
    Ok(())
}

fn canonical_f32(v: f32) -> u32 {
    if v.is_nan() {
        f32::NAN.to_bits()
    } else {
        v.to_bits()
    }
}

fn canonical_f64(v: f64) -> u64 {
    if v.is_nan() {
        f64::NAN.to_bits()
    } else {
        v.to_bits()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, BinaryArray, Float64Array, Int32Array, StringArray};

    use super::*;

    fn batch(ids: Vec<Option<i32>>, names: Vec<Option<&str>>) -> RecordBatch {
        RecordBatch::try_from_iter([
            ("id", Arc::new(Int32Array::from(ids)) as ArrayRef),
            ("name", Arc::new(StringArray::from(names)) as ArrayRef),
        ])
        .unwrap()
    }

    fn digest(batches: &[RecordBatch]) -> ContentDigest {
        let mut d = ContentDigest::default();
        for b in batches {
            d.add_batch(b).unwrap();
        }
        d
    }

    #[test]
    fn row_order_and_batching_do_not_matter_but_every_value_does() {
        let a = digest(&[batch(vec![Some(1), Some(2), None], vec![Some("x"), None, Some("")])]);
        let reordered =
            digest(&[batch(vec![None], vec![Some("")]), batch(vec![Some(2), Some(1)], vec![None, Some("x")])]);
        assert_eq!(a, reordered);
        assert_eq!(a.rows(), 3);
        for changed in [
            batch(vec![Some(1), Some(2), None], vec![Some("x"), None, None]),
            batch(vec![Some(1), Some(3), None], vec![Some("x"), None, Some("")]),
            // Values swapped between rows of one column: same multiset per column, different rows.
            batch(vec![Some(2), Some(1), None], vec![Some("x"), None, Some("")]),
        ] {
            assert_ne!(digest(&[changed]).checksum(), a.checksum());
        }
        // A duplicated row is not cancelled out.
        let twice = digest(&[batch(vec![Some(1), Some(1)], vec![Some("x"), Some("x")])]);
        assert_ne!(twice.checksum(), digest(&[batch(vec![], vec![])]).checksum());
    }

    #[test]
    fn columns_are_positional_and_nan_is_one_value() {
        let swapped = RecordBatch::try_from_iter([
            ("name", Arc::new(StringArray::from(vec!["x"])) as ArrayRef),
            ("id", Arc::new(Int32Array::from(vec![1])) as ArrayRef),
        ])
        .unwrap();
        assert_ne!(digest(&[swapped]), digest(&[batch(vec![Some(1)], vec![Some("x")])]));
        let nan =
            |v: f64| RecordBatch::try_from_iter([("f", Arc::new(Float64Array::from(vec![v])) as ArrayRef)]).unwrap();
        assert_eq!(digest(&[nan(f64::NAN)]), digest(&[nan(-f64::NAN)]));
        assert_ne!(digest(&[nan(0.0)]), digest(&[nan(-0.0)]));
        let bytes = |v: Option<&[u8]>| {
            RecordBatch::try_from_iter([("b", Arc::new(BinaryArray::from(vec![v])) as ArrayRef)]).unwrap()
        };
        assert_ne!(digest(&[bytes(None)]), digest(&[bytes(Some(b""))]));
    }
}
