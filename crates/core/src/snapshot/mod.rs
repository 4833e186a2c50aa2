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

/// PostgreSQL's identifier quoting, applied always: "name" with embedded quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A SQL string literal; standard_conforming_strings is on in every supported version.
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

pub fn qualified_name(schema: &str, table: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(table))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_always_quoted() {
        assert_eq!(quote_ident("Order Items"), "\"Order Items\"");
        assert_eq!(quote_ident("x\"; DROP TABLE t; --"), "\"x\"\"; DROP TABLE t; --\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(qualified_name("public", "t"), "\"public\".\"t\"");
    }
}
