//! The tokio runtime every backstop process drives its I/O with.
//!
//! Inside PostgreSQL the runtime's threads must never run a signal handler: PostgreSQL's handlers
//! assume they run on the backend's thread. Every runtime thread therefore blocks all signals
//! before it does anything else, so signals keep going to the thread that owns the process.

use std::io;

use tokio::runtime::{Builder, Runtime};

pub fn build(worker_threads: usize, thread_name: &str) -> io::Result<Runtime> {
    Builder::new_multi_thread()
        .worker_threads(worker_threads.max(1))
        .max_blocking_threads(16)
        .thread_name(thread_name)
        .enable_all()
        .on_thread_start(block_all_signals)
        .build()
}

fn block_all_signals() {
    // SAFETY: sigfillset/pthread_sigmask only touch the signal mask of the calling thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}
