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

/// Runs blocking repository work (verified reads through `SyncIoBridge`, which block their thread
/// on every read) on a blocking thread of the I/O runtime, while the backend waits in [`block_on`]:
/// a cancel or statement_timeout is honoured within [`INTERRUPT_CHECK_INTERVAL`] even when the
/// store has stopped answering. `on_wait` runs on the backend thread between checks (progress
/// NOTICEs). If the backend errors out, the token is cancelled so the thread's reads fail at once.
pub fn run_blocking<T: Send + 'static>(
    work: impl FnOnce(&backstop_core::repository::CancellationToken) -> T + Send + 'static,
    mut on_wait: impl FnMut(),
) -> T {
    let token = backstop_core::repository::CancellationToken::new();
    // Cancels on every way out of this frame, the unwinding of an ERROR included.
    let _cancel_on_exit = token.clone().drop_guard();
    let worker = runtime().spawn_blocking({
        let token = token.clone();
        move || work(&token)
    });
    let mut worker = std::pin::pin!(worker);
    loop {
        match runtime().block_on(async { tokio::time::timeout(INTERRUPT_CHECK_INTERVAL, worker.as_mut()).await }) {
            Ok(Ok(output)) => return output,
            Ok(Err(join_error)) => pgrx::error!("backstop's I/O thread failed: {join_error}"),
            Err(_elapsed) => {
                pgrx::check_for_interrupts!();
                on_wait();
            }
        }
    }
}
