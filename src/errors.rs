//! The SQL boundary: typed core errors become ERRORs with a specific SQLSTATE and a hint.

use backstop_core::Error;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

pub fn sqlstate(error: &Error) -> PgSqlErrorCode {
    use PgSqlErrorCode::*;
    match error {
        Error::InvalidLocation { .. } | Error::InvalidSetting { .. } => ERRCODE_INVALID_PARAMETER_VALUE,
        Error::NotConfigured(_) => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        Error::InvalidKey(_) | Error::Encryption(_) => ERRCODE_INTERNAL_ERROR,
        Error::NotFound { .. } => ERRCODE_UNDEFINED_OBJECT,
        Error::Conflict { .. } => ERRCODE_DUPLICATE_OBJECT,
        Error::Backend { .. } | Error::Probe { .. } => ERRCODE_CONNECTION_FAILURE,
        Error::Io { .. } => ERRCODE_IO_ERROR,
        Error::Corrupt { .. } => ERRCODE_DATA_CORRUPTED,
        Error::Decryption { .. } => ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION,
        Error::Unauthenticated { .. } => ERRCODE_DATA_CORRUPTED,
        Error::NoSigningKey { .. } | Error::ReadOnly { .. } => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        Error::ForeignCluster { .. } | Error::ForeignMajorVersion { .. } | Error::ForeignWal { .. } => {
            ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE
        }
        Error::NamespaceMissing { .. } => ERRCODE_UNDEFINED_OBJECT,
        Error::NoSpace { .. } => ERRCODE_DISK_FULL,
        Error::Cancelled => ERRCODE_QUERY_CANCELED,
        Error::InvalidInput(_) => ERRCODE_INVALID_PARAMETER_VALUE,
        Error::Job { .. } => ERRCODE_EXTERNAL_ROUTINE_EXCEPTION,
        Error::Busy { .. } => ERRCODE_OBJECT_IN_USE,
    }
}

/// Logs `error` as a WARNING with its hint, for callers that must not raise (the archiver).
pub fn warn(context: &str, error: &Error) {
    ErrorReport::new(sqlstate(error), format!("{context}: {error}"), "backstop")
        .set_hint(error.hint())
        .report(PgLogLevel::WARNING);
}

/// Raises `error` as an ERROR with its SQLSTATE and hint.
pub fn raise(error: &Error) -> ! {
    raise_with(sqlstate(error), &error.to_string(), error.hint())
}

/// Raises an ERROR that is not a core error: bad arguments, missing privileges, catalog state.
pub fn raise_with(code: PgSqlErrorCode, message: &str, hint: &str) -> ! {
    ErrorReport::new(code, message.to_string(), "backstop").set_hint(hint.to_string()).report(PgLogLevel::ERROR);
    unreachable!("an ERROR report does not return")
}

pub trait OrRaise<T> {
    fn or_raise(self) -> T;
}

impl<T> OrRaise<T> for Result<T, Error> {
    fn or_raise(self) -> T {
        self.unwrap_or_else(|error| raise(&error))
    }
}

/// Sends a NOTICE: how long operations tell the person at the psql prompt what is happening.
pub fn notice(message: &str) {
    ErrorReport::new(PgSqlErrorCode::ERRCODE_SUCCESSFUL_COMPLETION, message.to_string(), "backstop")
        .report(PgLogLevel::NOTICE);
}
