//! Work that may wait: a process-wide tokio runtime whose threads run under Linux's
//! `SCHED_IDLE` policy. The bulk lane's batches (decoded, verified and committed) run there,
//! so when they saturate the CPU a thread serving single calls that wakes up takes the CPU
//! at once (the scheduler preempts an idle-policy thread for any other), and a bulk client
//! uses whatever the latency path leaves idle. (A nice value alone is not enough: a nice-10
//! thread may keep the CPU for the rest of its slice when a nice-0 thread wakes, and a
//! single call crosses half a dozen threads.)

use std::future::Future;
use std::sync::OnceLock;

/// The nice value the background threads fall back to where `SCHED_IDLE` is refused.
pub const NICE: i32 = 10;

static RUNTIME: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();

/// Puts the calling thread under `SCHED_IDLE` (or, if that is refused, at nice [`NICE`]).
pub fn lower_this_thread() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: both calls act on this thread alone (id 0 / its own id) and read only `param`.
    unsafe {
        if libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) != 0 {
            libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, NICE);
        }
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
    /// The work runs on a thread of the background runtime, under the idle policy; the
    /// caller's thread is untouched.
    #[tokio::test]
    async fn runs_on_an_idle_policy_thread() {
        // SAFETY: sched_getscheduler reads this thread's policy; no memory is passed.
        let policy = || unsafe { libc::sched_getscheduler(0) };
        let (name, there) = super::run(async move {
            let name = std::thread::current().name().map(str::to_string);
            (name, policy())
        })
        .await;
        assert_eq!(name.as_deref(), Some("background"));
        assert_eq!(there, libc::SCHED_IDLE);
        assert_eq!(policy(), libc::SCHED_OTHER);
    }
}
