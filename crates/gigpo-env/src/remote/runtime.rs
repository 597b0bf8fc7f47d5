//! The one tokio runtime that carries every remote connection of the process.
//!
//! [`crate::Environment`] is synchronous; a remote environment's `reset`/`step` waits on its
//! future with [`block_on`] from whatever thread the caller uses. Many threads may wait at once:
//! the runtime's worker threads drive the sockets and pipes of all of them.

use std::future::Future;
use std::sync::OnceLock;
use tokio::runtime::{Builder, Handle, Runtime};

/// Worker threads of the shared runtime: the work is waiting on sockets, not computing.
const WORKER_THREADS: usize = 2;

/// The process-wide runtime, created on first use.
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        Builder::new_multi_thread()
            .worker_threads(WORKER_THREADS)
            .thread_name("gigpo-remote")
            .enable_all()
            .build()
            .expect("the operating system refused to start the remote-environment runtime threads")
    })
}

/// Run `future` to completion on the shared runtime, from synchronous code.
///
/// Called from inside another tokio runtime (where blocking the thread is not allowed), the
/// future is waited on from a short-lived helper thread instead.
pub fn block_on<F>(future: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    if Handle::try_current().is_err() {
        return runtime().block_on(future);
    }
    std::thread::scope(|scope| {
        scope
            .spawn(|| runtime().block_on(future))
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_on_works_from_plain_and_async_threads() {
        assert_eq!(block_on(async { 2 + 2 }), 4);
        let inner = runtime().block_on(async { block_on(async { 5 }) });
        assert_eq!(inner, 5);
    }
}
