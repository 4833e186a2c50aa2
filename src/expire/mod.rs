//! Retention: the `expire` job (`job.rs`); what to remove is core's plan (`backstop_core::expire`).

pub mod job;
