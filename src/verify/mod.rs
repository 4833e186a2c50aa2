//! Scheduled repository verification: the `verify` job (`job.rs`) and the doctor row that watches
//! its last run (`health.rs`). The reading itself is core's (`backups::verify::verify_sample`),
//! shared with `backstop verify`, in the same words.

pub mod health;
pub mod job;
