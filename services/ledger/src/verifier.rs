//! Stateless checks and signature verification, batched across concurrent requests.
//!
//! Every submission — a single `SubmitTransfer` or a chunk of a `SubmitTransfers` batch —
//! queues here. The verifier takes whatever is queued, up to [`CHUNK`] transfers, and checks
//! them together with one Ed25519 batch verification (`check_stateless_batch`) on a blocking
//! thread, with at most one chunk per CPU in flight. Under load the chunks fill up; when idle
//! a lone transfer goes straight through.

use cbdc_core::validate::check_stateless_batch;
use cbdc_core::{Reject, Transfer, UnixSeconds};
use prometheus::Histogram;

use crate::batcher::{Batcher, Stopped};

/// Transfers verified together, at most.
pub const CHUNK: usize = 1024;
/// Submissions waiting for the verifier, at most; beyond this, submitters wait.
pub const QUEUE_DEPTH: usize = 4096;

/// A transfer and its verdict.
pub type Checked = (Transfer, Result<(), Reject>);

/// A handle to the verifier task.
#[derive(Clone)]
pub struct Verifier {
    batcher: Batcher<Transfer, Checked>,
}

impl Verifier {
    /// Starts the verifier on the current runtime. `now` is read once per chunk.
    pub fn start(
        now: impl Fn() -> UnixSeconds + Send + Sync + 'static,
        batch_sizes: Histogram,
    ) -> Verifier {
        let parallelism = std::thread::available_parallelism().map_or(2, |n| n.get());
        let now = std::sync::Arc::new(now);
        let batcher = Batcher::start(
            "verifier",
            CHUNK,
            QUEUE_DEPTH,
            parallelism,
            move |n| batch_sizes.observe(n as f64),
            move |transfers: Vec<Transfer>| {
                let now = now();
                async move {
                    tokio::task::spawn_blocking(move || {
                        let verdicts = check_stateless_batch(&transfers, now);
                        transfers.into_iter().zip(verdicts).collect::<Vec<_>>()
                    })
                    .await
                    .unwrap_or_default()
                }
            },
        );
        Verifier { batcher }
    }

    /// Checks `transfers` (stateless checks and signatures); returns each with its verdict,
    /// in order.
    pub async fn check(&self, transfers: Vec<Transfer>) -> Result<Vec<Checked>, Stopped> {
        let n = transfers.len();
        let checked = self.batcher.run(transfers).await?;
        if checked.len() != n {
            return Err(Stopped("verifier"));
        }
        Ok(checked)
    }
}
