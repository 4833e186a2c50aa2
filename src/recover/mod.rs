//! One table as it was: `table_history` ([`sql`], run as the [`job`] `table_history`) finds the
//! transactions that changed a table in the WAL, following the relation files base backups record
//! (`crate::backups::relations`); `recover()` at a target runs the [`table`] job.

pub mod job;
pub mod sql;
pub mod table;
