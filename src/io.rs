//! Driving async storage from a backend: one lazily created runtime per process, and `block_on`
//! that keeps `pg_cancel_backend` and statement timeouts working while it waits.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::runtime::Runtime;

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

/// The process's I/O runtime, created on first use (never in the postmaster).
pub fn runtime() -> &'static Runtime {
    RUNTIME.get_or_init(|| {
        backstop_core::runtime::build(2, "backstop-io").unwrap_or_else(|e| {
            pgrx::error!("backstop could not start its I/O threads: {e}");
        })
    })
}

const INTERRUPT_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// Runs `future` to completion on the backend's thread, checking for interrupts between polls. A
/// cancel raises the usual ERROR, which drops the future: its uploads are aborted and nothing is
/// published.
pub fn block_on<F: Future>(future: F) -> F::Output {
    let runtime = runtime();
    let mut future = std::pin::pin!(future);
    loop {
        match runtime.block_on(async { tokio::time::timeout(INTERRUPT_CHECK_INTERVAL, future.as_mut()).await }) {
            Ok(output) => return output,
            Err(_elapsed) => {
                pgrx::check_for_interrupts!();
            }
        }
    }
}
