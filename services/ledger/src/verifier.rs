//! Stateless checks and signature verification, batched across concurrent requests.
//!
//! Every submission — a single `SubmitTransfer` or a chunk of a `SubmitTransfers` batch —
//! queues here. The verifier takes whatever is queued, up to [`CHUNK`] transfers, and checks
//! them together with one Ed25519 batch verification (`check_stateless_batch`) on a blocking
//! thread, with at most one chunk per CPU in flight. Under load the chunks fill up; when idle
//! a lone transfer goes straight through.

use std::sync::Arc;

use cbdc_core::validate::check_stateless_batch;
use cbdc_core::{Reject, Transfer, UnixSeconds};
use prometheus::Histogram;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Transfers verified together, at most.
pub const CHUNK: usize = 256;
/// Jobs waiting for the verifier, at most; beyond this, submitters wait (backpressure).
pub const QUEUE_DEPTH: usize = 4096;

type Checked = (Vec<Transfer>, Vec<Result<(), Reject>>);

struct Job {
    transfers: Vec<Transfer>,
    reply: oneshot::Sender<Checked>,
}

/// A handle to the verifier task.
#[derive(Clone)]
pub struct Verifier {
    sender: mpsc::Sender<Job>,
}

/// The verifier stopped (the service is shutting down).
#[derive(Debug, thiserror::Error)]
#[error("the verifier has stopped")]
pub struct Stopped;

impl Verifier {
    /// Starts the verifier on the current runtime. `now` is read once per chunk.
    pub fn start(
        now: impl Fn() -> UnixSeconds + Send + Sync + 'static,
        batch_sizes: Histogram,
    ) -> Verifier {
        let (sender, receiver) = mpsc::channel(QUEUE_DEPTH);
        let parallelism = std::thread::available_parallelism().map_or(2, |n| n.get());
        tokio::spawn(run(receiver, Arc::new(now), parallelism, batch_sizes));
        Verifier { sender }
    }

    /// Checks `transfers` (stateless checks and signatures); returns them with one result
    /// each, in order.
    pub async fn check(&self, transfers: Vec<Transfer>) -> Result<Checked, Stopped> {
        if transfers.len() <= CHUNK {
            return self.check_chunk(transfers).await;
        }
        let mut chunks = Vec::new();
        let mut rest = transfers;
        while rest.len() > CHUNK {
            let tail = rest.split_off(CHUNK);
            chunks.push(rest);
            rest = tail;
        }
        chunks.push(rest);
        let checked = futures::future::join_all(chunks.into_iter().map(|c| self.check_chunk(c)));
        let mut all = (Vec::new(), Vec::new());
        for part in checked.await {
            let (t, r) = part?;
            all.0.extend(t);
            all.1.extend(r);
        }
        Ok(all)
    }

    async fn check_chunk(&self, transfers: Vec<Transfer>) -> Result<Checked, Stopped> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(Job { transfers, reply })
            .await
            .map_err(|_| Stopped)?;
        answer.await.map_err(|_| Stopped)
    }
}

async fn run(
    mut receiver: mpsc::Receiver<Job>,
    now: Arc<dyn Fn() -> UnixSeconds + Send + Sync>,
    parallelism: usize,
    batch_sizes: Histogram,
) {
    let permits = Arc::new(Semaphore::new(parallelism.max(1)));
    while let Some(first) = receiver.recv().await {
        // Wait for a free CPU before gathering: while all are busy, the queue fills and the
        // next chunk is bigger.
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        let mut total = first.transfers.len();
        let mut jobs = vec![first];
        while total < CHUNK {
            match receiver.try_recv() {
                Ok(job) => {
                    total += job.transfers.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        batch_sizes.observe(total as f64);
        let now = now();
        tokio::spawn(async move {
            let verified = tokio::task::spawn_blocking(move || {
                let all: Vec<&Transfer> = jobs.iter().flat_map(|j| j.transfers.iter()).collect();
                let mut results = check_stateless_batch(all, now).into_iter();
                let replies: Vec<(Job, Vec<Result<(), Reject>>)> = jobs
                    .into_iter()
                    .map(|job| {
                        let r: Vec<_> = results.by_ref().take(job.transfers.len()).collect();
                        (job, r)
                    })
                    .collect();
                replies
            })
            .await;
            drop(permit);
            if let Ok(replies) = verified {
                for (job, results) in replies {
                    let _ = job.reply.send((job.transfers, results));
                }
            }
        });
    }
}
