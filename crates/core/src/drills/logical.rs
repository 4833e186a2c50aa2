//! The `logical_restore` drill's verdict: a scratch database restored from a logical backup must
//! hold every table the dump's snapshot held with the same rows, no table it did not, and every
//! sequence where the dump left it (so the next value never repeats a key already handed out).

use serde::Serialize;

use crate::backups::manifest::TableRows;
use crate::error::{Error, Result};
use crate::logical::manifest::{LogicalManifest, SequenceValue};

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LogicalComparison {
    pub tables: usize,
    pub rows: i64,
    pub sequences: usize,
}

/// Compares what the restored database holds (`tables`, `sequences`, counted there) with what
/// `manifest` recorded at dump time. Every difference is named in one error.
pub fn compare(
    manifest: &LogicalManifest,
    tables: &[TableRows],
    sequences: &[SequenceValue],
) -> Result<LogicalComparison> {
    let mut differ = Vec::new();
    for recorded in &manifest.tables {
        match tables.iter().find(|t| t.table == recorded.table) {
            Some(found) if found.rows == recorded.rows => {}
            Some(found) => differ.push(format!("{} holds {} rows, not {}", recorded.table, found.rows, recorded.rows)),
            None => differ.push(format!("{} is missing", recorded.table)),
        }
    }
    for found in tables {
        if !manifest.tables.iter().any(|t| t.table == found.table) {
            differ.push(format!("{} was not in the dump", found.table));
        }
    }
    for recorded in &manifest.sequences {
        match sequences.iter().find(|s| s.sequence == recorded.sequence) {
            Some(found) if found == recorded => {}
            Some(found) => differ.push(format!(
                "sequence {} is at {} (is_called {}), not {} (is_called {})",
                recorded.sequence, found.last_value, found.is_called, recorded.last_value, recorded.is_called
            )),
            None => differ.push(format!("sequence {} is missing", recorded.sequence)),
        }
    }
    if differ.is_empty() {
        return Ok(LogicalComparison {
            tables: manifest.tables.len(),
            rows: manifest.tables.iter().map(|t| t.rows).sum(),
            sequences: manifest.sequences.len(),
        });
    }
    Err(Error::Job {
        message: format!(
            "logical backup {} of database {} restored, but it does not hold what was dumped: {}",
            manifest.id,
            manifest.database,
            differ.join("; ")
        ),
        hint: "Do not rely on this dump: take a new logical backup now (backstop.logical_backup()) and keep the older ones.".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> LogicalManifest {
        let mut m = crate::logical::manifest::tests::sample();
        m.tables = vec![
            TableRows { table: "public.orders".into(), rows: 42 },
            TableRows { table: "sales.\"Odd|name\"".into(), rows: 0 },
        ];
        m.sequences = vec![SequenceValue { sequence: "public.orders_id_seq".into(), last_value: 42, is_called: true }];
        m
    }

    #[test]
    fn a_faithful_restore_passes_and_says_what_it_compared() {
        let m = manifest();
        let found = compare(&m, &m.tables, &m.sequences).unwrap();
        assert_eq!(found, LogicalComparison { tables: 2, rows: 42, sequences: 1 });
    }

    #[test]
    fn every_difference_is_named() {
        let m = manifest();
        let tables = vec![
            TableRows { table: "public.orders".into(), rows: 41 },
            TableRows { table: "public.extra".into(), rows: 1 },
        ];
        let sequences =
            vec![SequenceValue { sequence: "public.orders_id_seq".into(), last_value: 1, is_called: false }];
        let error = compare(&m, &tables, &sequences).unwrap_err().to_string();
        for expected in [
            "public.orders holds 41 rows, not 42",
            "sales.\"Odd|name\" is missing",
            "public.extra was not in the dump",
            "sequence public.orders_id_seq is at 1 (is_called false), not 42 (is_called true)",
        ] {
            assert!(error.contains(expected), "{expected} in {error}");
        }
        assert!(compare(&m, &m.tables, &[])
            .unwrap_err()
            .to_string()
            .contains("sequence public.orders_id_seq is missing"));
    }
}
