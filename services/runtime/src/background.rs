//! Work that may wait: a process-wide tokio runtime whose threads run at a lower priority
//! ([`NICE`]). The bulk lane's batches (decoded, verified and committed) run there, so when
//! they saturate the CPU the threads serving single calls still get it first, and a bulk
//! client can use whatever the latency path leaves idle.

use std::future::Future;
use std::sync::OnceLock;

/// The nice value of the background threads (the default is 0; each step of 1 is about
/// 10% less CPU share under contention).
pub const NICE: i32 = 10;

static RUNTIME: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();

/// Lowers the calling thread's priority to [`NICE`].
pub fn lower_this_thread() {
    // SAFETY: setpriority on this thread's own id; no memory is passed.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, NICE);
    }
}

/// The background runtime, started on first use (one worker per CPU); `None` if it could
/// not be started.
pub fn handle() -> Option<tokio::runtime::Handle> {
    RUNTIME
        .get_or_init(|| {
            let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
            match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name("background")
                .on_thread_start(lower_this_thread)
                .enable_all()
                .build()
            {
                Ok(rt) => Some(rt),
                Err(e) => {
                    tracing::error!("starting the background runtime: {e}");
                    None
                }
            }
        })
        .as_ref()
        .map(|rt| rt.handle().clone())
}

/// Runs `f` on the background runtime (on the caller's if it could not be started) and
/// waits for its output. Dropping the returned future does not cancel `f`.
pub async fn run<F>(f: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let task = match handle() {
        Some(h) => h.spawn(f),
        None => tokio::spawn(f),
    };
    match task.await {
        Ok(out) => out,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Only a runtime shutting down cancels the task, and this one never shuts down.
        Err(e) => panic!("a background task was cancelled: {e}"),
    }
}

#[cfg(test)]
mod tests {
    /// The work runs on a thread of the background runtime, at the lower priority.
    #[tokio::test]
    async fn runs_on_a_lower_priority_thread() {
        let (name, nice) = super::run(async {
            let name = std::thread::current().name().map(str::to_string);
            // SAFETY: getpriority of this thread; no memory is passed.
            let nice =
                unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) };
            (name, nice)
        })
        .await;
        assert_eq!(name.as_deref(), Some("background"));
        assert_eq!(nice, super::NICE);
    }
}
