//! Typed errors. Each variant is specific enough for the SQL boundary to pick a SQLSTATE and a hint,
//! and no variant ever carries a credential.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid repository location \"{location}\": {reason}")]
    InvalidLocation { location: String, reason: String },

    #[error("invalid setting {setting}: {reason}")]
    InvalidSetting { setting: &'static str, reason: String },

    #[error("invalid object key \"{0}\": keys are relative, '/'-separated and contain no '..' or empty parts")]
    InvalidKey(String),

    #[error("object {key} does not exist in {store}")]
    NotFound { store: String, key: String },

    #[error(
        "object {key} already exists in {store} with different contents \
         (stored sha256 {existing_sha256}, new sha256 {new_sha256}); refusing to overwrite it"
    )]
    Conflict { store: String, key: String, existing_sha256: String, new_sha256: String },

    #[error("{operation} of {key} in {store} failed: {message}")]
    Backend { store: String, operation: &'static str, key: String, message: String },

    #[error("{operation} {path}: {source}")]
    Io {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("object {key} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },

    #[error("object {key} is encrypted and {reason}")]
    Decryption { key: String, reason: String },

    #[error("encryption failed: {0}")]
    Encryption(String),

    #[error(
        "the repository at {store} belongs to another cluster: cluster.json records system identifier \
         {found}, this server is {expected}"
    )]
    ForeignCluster { store: String, expected: String, found: String },

    #[error("repository check of {store} failed at {step}: {reason}")]
    Probe { store: String, step: &'static str, reason: String },

    #[error("operation cancelled")]
    Cancelled,
}

impl Error {
    pub fn io(operation: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { operation, path: path.into(), source }
    }

    /// True for failures a retry may cure (network, server unavailable), false for failures that
    /// will repeat (corruption, conflicts, bad configuration).
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Backend { .. } | Error::Io { .. })
    }
}
