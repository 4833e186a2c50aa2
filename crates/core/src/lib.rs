//! backstop's core: everything that does not need a PostgreSQL backend.
//!
//! The extension and the `backstop` CLI both read and write repositories through this crate, so a
//! repository written by one is always readable by the other.

pub mod adopt;
pub mod adoption_record;
pub mod auth;
pub mod backups;
pub mod codec;
pub mod disk;
pub mod doctor;
pub mod drills;
pub mod error;
pub mod expire;
pub mod layout;
pub mod lease;
pub mod location;
pub mod logical;
pub mod pg_version;
pub mod quote;
pub mod recover;
pub mod repository;
pub mod runtime;
pub mod schedule;
pub mod settings;
pub mod snapshot;
pub mod spool;
pub mod store;
pub mod time;
pub mod wal;

pub use error::{Error, Result};
pub use layout::{ObjectKind, ObjectPath};
pub use location::Location;
pub use repository::{ClusterIdentity, PutResult, Repository};
pub use store::{ObjectInfo, ObjectStore, WriteMode, WriteOutcome};
