//! What differs between the PostgreSQL versions backstop builds for (15, 16, 17, 18), in one
//! place: everything else is written once against pgrx. The archive module's callbacks, whose
//! signatures changed in 16, are the other place (`wal::archive::callbacks`); 17's WAL summary
//! functions are SQL, asked for at run time (`backups::summaries`).

use std::ffi::c_int;

#[cfg(any(feature = "pg15", feature = "pg16", feature = "pg17"))]
use pgrx::pg_sys;

/// A signal handler PostgreSQL may install.
pub type SignalHandler = unsafe extern "C-unwind" fn(c_int);

/// Installs `handler` for `signal` with PostgreSQL's own wrapper (`pqsignal`), as a backend does.
pub fn set_signal_handler(signal: c_int, handler: SignalHandler) {
    #[cfg(any(feature = "pg15", feature = "pg16", feature = "pg17"))]
    // SAFETY: pqsignal only records the handler with sigaction.
    unsafe {
        pg_sys::pqsignal(signal, Some(handler));
    }
    // PostgreSQL 18: `pqsignal` is a macro for the backend's `pqsignal_be`, which returns nothing;
    // pgrx's bindings have neither.
    #[cfg(feature = "pg18")]
    {
        extern "C-unwind" {
            fn pqsignal_be(signal: c_int, handler: Option<SignalHandler>);
        }
        // SAFETY: as above.
        unsafe { pqsignal_be(signal, Some(handler)) };
    }
}

/// Wakes PostgreSQL 17+'s WAL summarizer, which sleeps up to seconds between looks at the WAL
/// when the server is quiet, as `pg_basebackup --incremental` does before waiting for it
/// (`SetWalSummarizerLatch` in 17, `WakeupWalSummarizer` in 18; pgrx binds neither). Nothing on
/// 15 and 16, which have no summarizer.
pub fn wake_wal_summarizer() {
    #[cfg(feature = "pg17")]
    {
        extern "C-unwind" {
            fn SetWalSummarizerLatch();
        }
        // SAFETY: sets the summarizer's latch when it runs; does nothing otherwise.
        unsafe { SetWalSummarizerLatch() };
    }
    #[cfg(feature = "pg18")]
    {
        extern "C-unwind" {
            fn WakeupWalSummarizer();
        }
        // SAFETY: as above.
        unsafe { WakeupWalSummarizer() };
    }
}
