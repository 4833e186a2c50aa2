//! Table snapshots: one table's rows as one Parquet object, described by a manifest that is written
//! last and is the commit point.
//!
//! ```text
//! <cluster>/snapshots/<schema>.<table>/<snapshot-id>/data.parquet    the rows (zstd inside Parquet)
//! <cluster>/snapshots/<schema>.<table>/<snapshot-id>/manifest.json   written last; without it, garbage
//! ```
//!
//! Schema and table names are percent-encoded into one path segment, so any identifier PostgreSQL
//! accepts ("Order Items", names with '/', '.', or non-ASCII letters) maps to exactly one directory.

pub mod arrow_batch;
pub mod content;
pub mod copy_text;
pub mod copyback;
pub mod manifest;
pub mod parquet_file;
pub mod stored;
pub mod time;

pub use manifest::{ColumnDef, ConstraintDef, Encoding, SnapshotManifest, TableDef};

pub const SNAPSHOTS_DIR: &str = "snapshots";
pub const MANIFEST_FILE: &str = "manifest.json";
pub const DATA_FILE: &str = "data.parquet";

pub use crate::layout::{parse_table_dir_name, table_dir_name, SnapshotId};

pub use crate::quote::{qualified_name, quote_ident, quote_literal};
