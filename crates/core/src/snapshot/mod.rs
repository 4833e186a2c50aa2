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

use std::fmt::Write as _;

use crate::error::{Error, Result};

pub use manifest::{ColumnDef, ConstraintDef, Encoding, SnapshotManifest, TableDef};

pub const SNAPSHOTS_DIR: &str = "snapshots";
pub const MANIFEST_FILE: &str = "manifest.json";
pub const DATA_FILE: &str = "data.parquet";

/// `snap_` followed by 8 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SnapshotId(String);

impl SnapshotId {
    pub fn random() -> Self {
        SnapshotId(format!("snap_{:08x}", rand::random::<u32>()))
    }

    pub fn parse(text: &str) -> Result<Self> {
        let hex = text.strip_prefix("snap_").unwrap_or("");
        if hex.len() == 8 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            Ok(SnapshotId(text.to_string()))
        } else {
            Err(Error::InvalidInput(format!(
                "\"{}\" is not a snapshot id; ids look like snap_1a2b3c4d",
                text.escape_debug()
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Keeps ASCII letters, digits, '_' and '-'; every other byte of the UTF-8 name becomes %XX.
fn encode_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-' {
            out.push(byte as char);
        } else {
            write!(out, "%{byte:02X}").expect("writing to a String");
        }
    }
    out
}

fn decode_name(encoded: &str) -> Option<String> {
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = encoded.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The directory name of a table: `<schema>.<table>`, each part encoded.
pub fn table_dir_name(schema: &str, table: &str) -> String {
    format!("{}.{}", encode_name(schema), encode_name(table))
}

/// The (schema, table) a directory name stands for; None for names backstop did not write.
pub fn parse_table_dir_name(name: &str) -> Option<(String, String)> {
    let (schema, table) = name.split_once('.')?;
    Some((decode_name(schema)?, decode_name(table)?))
}

pub fn table_prefix(schema: &str, table: &str) -> String {
    format!("{SNAPSHOTS_DIR}/{}/", table_dir_name(schema, table))
}

pub fn manifest_path(schema: &str, table: &str, id: &SnapshotId) -> String {
    format!("{}{id}/{MANIFEST_FILE}", table_prefix(schema, table))
}

pub fn data_path(schema: &str, table: &str, id: &SnapshotId) -> String {
    format!("{}{id}/{DATA_FILE}", table_prefix(schema, table))
}

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
    fn snapshot_ids_are_validated() {
        let id = SnapshotId::random();
        assert_eq!(SnapshotId::parse(id.as_str()).unwrap(), id);
        assert!(id.as_str().starts_with("snap_") && id.as_str().len() == 13);
        for bad in ["", "snap_", "snap_1234567", "snap_123456789", "snap_ABCDEF12", "snap_../../x", "x_12345678"] {
            let error = SnapshotId::parse(bad).unwrap_err();
            assert!(matches!(error, Error::InvalidInput(_)), "{bad}");
        }
    }

    #[test]
    fn any_identifier_maps_to_one_safe_directory_and_back() {
        for (schema, table) in [
            ("public", "orders"),
            ("Sales", "Order Items"),
            ("a.b", "c/d"),
            ("ünïcødé", "表"),
            ("x%41", ".."),
            ("quote\"d", "semi;colon"),
        ] {
            let dir = table_dir_name(schema, table);
            crate::store::validate_key(&format!("snapshots/{dir}/snap_00000000")).unwrap();
            assert_eq!(dir.matches('.').count(), 1, "{dir}");
            assert!(dir.chars().all(|c| c.is_ascii_alphanumeric() || "%._-".contains(c)), "{dir}");
            assert_eq!(parse_table_dir_name(&dir), Some((schema.to_string(), table.to_string())));
        }
        assert_ne!(table_dir_name("a.b", "c"), table_dir_name("a", "b.c"));
        assert_eq!(parse_table_dir_name("no-dot"), None);
        assert_eq!(parse_table_dir_name("a.%zz"), None);
    }

    #[test]
    fn identifiers_are_always_quoted() {
        assert_eq!(quote_ident("Order Items"), "\"Order Items\"");
        assert_eq!(quote_ident("x\"; DROP TABLE t; --"), "\"x\"\"; DROP TABLE t; --\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(qualified_name("public", "t"), "\"public\".\"t\"");
    }
}
