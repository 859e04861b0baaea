//! Stateless checks and signature verification, batched across concurrent requests.
//!
//! Every submission — a single `SubmitTransfer` or a chunk of a `SubmitTransfers` batch —
//! queues here. The verifier takes whatever is queued, up to [`CHUNK`] transfers, and checks
//! them together with one Ed25519 batch verification (`check_stateless_batch`) on a blocking
//! thread, with at most one chunk per CPU in flight. Under load the chunks fill up; when idle
//! a lone transfer goes straight through. What passes goes on to the committer in one queued
//! job, so a chunk verified together (often many callers' single transfers) commits in the
//! same store transactions instead of reaching the committer one caller at a time.

use cbdc_core::validate::check_stateless_batch;
use cbdc_core::{Reject, Transfer, UnixSeconds};
use prometheus::Histogram;

use crate::batcher::{Batcher, Lane, Stopped, Ticket};
use crate::ledger::{Committed, ServiceError};

/// Transfers verified together, at most.
pub const CHUNK: usize = 1024;
/// Submissions waiting for the verifier, at most; beyond this, submitters wait.
pub const QUEUE_DEPTH: usize = 4096;

/// The committer stage: transfers in, one commit result each.
pub type Committer = Batcher<Transfer, Result<Committed, ServiceError>>;

/// What became of one transfer.
pub enum Verdict {
    /// Passed the checks; handed back (the caller asked for the checks only).
    Valid(Transfer),
    /// Passed the checks and queued to commit, together with the rest of its verified batch
    /// that passed: the commit result arrives on the ticket.
    Queued(Ticket<Result<Committed, ServiceError>>),
    /// Refused by the checks.
    Refused(Transfer, Reject),
}

/// Threads that verify the bulk lane's batches at the lowest scheduling priority
/// (`SCHED_IDLE`), so that when the CPU is saturated by batches the threads serving a
/// wallet's single call (at the normal priority) get it first. With no single calls
/// waiting, batches have the CPU as before.
struct BulkThreads {
    jobs: std::sync::mpsc::SyncSender<Box<dyn FnOnce() + Send>>,
}

impl BulkThreads {
    fn start(threads: usize) -> BulkThreads {
        let (jobs, queue) = std::sync::mpsc::sync_channel::<Box<dyn FnOnce() + Send>>(threads);
        let queue = std::sync::Arc::new(std::sync::Mutex::new(queue));
        for i in 0..threads {
            let queue = std::sync::Arc::clone(&queue);
            let spawned = std::thread::Builder::new()
                .name(format!("verify-bulk-{i}"))
                .spawn(move || {
                    cbdc_runtime::background::lower_this_thread();
                    loop {
                        let job = match queue.lock() {
                            Ok(q) => q.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!("starting a bulk verification thread: {e}");
            }
        }
        BulkThreads { jobs }
    }

    /// Runs `f` on a bulk thread; `None` if the threads are gone.
    async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: Box<dyn FnOnce() + Send> = Box::new(move || {
            let _ = reply.send(f());
        });
        // The batcher runs at most `threads` bulk batches at once and the queue holds as
        // many, so it is never full; if it were, a blocking thread waits for room.
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(std::sync::mpsc::TrySendError::Full(job)) => {
                let jobs = self.jobs.clone();
                tokio::task::spawn_blocking(move || jobs.send(job))
                    .await
                    .ok()?
                    .ok()?;
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => return None,
        }
        answer.await.ok()
    }
}

/// A handle to the verifier task.
#[derive(Clone)]
pub struct Verifier {
    batcher: Batcher<(Transfer, bool, Lane), Verdict>,
}

impl Verifier {
    /// Starts the verifier on the current runtime, handing transfers that pass and are to be
    /// committed on to `committer`. `now` is read once per chunk.
    pub fn start(
        now: impl Fn() -> UnixSeconds + Send + Sync + 'static,
        batch_sizes: Histogram,
        committer: Committer,
    ) -> Verifier {
        let parallelism = std::thread::available_parallelism().map_or(2, |n| n.get());
        let bulk_threads = parallelism.saturating_sub(1).max(1);
        let bulk = std::sync::Arc::new(BulkThreads::start(bulk_threads));
        let now = std::sync::Arc::new(now);
        let batcher = Batcher::start(
            "verifier",
            CHUNK,
            QUEUE_DEPTH,
            parallelism,
            // One slot is kept for the priority lane: a wallet's single transfer is verified
            // beside a running batch, not after it.
            bulk_threads,
            move |n| batch_sizes.observe(n as f64),
            move |items: Vec<(Transfer, bool, Lane)>| {
                let now = now();
                let committer = committer.clone();
                let bulk = std::sync::Arc::clone(&bulk);
                async move {
                    let n = items.len();
                    // A batch is of one lane (see the batcher): the bulk lane's are verified on
                    // the low-priority threads.
                    let on_bulk = items
                        .first()
                        .is_some_and(|(_, _, lane)| *lane == Lane::Bulk);
                    let verify = move || {
                        let mut transfers = Vec::with_capacity(items.len());
                        let mut commit = Vec::with_capacity(items.len());
                        for (t, c, lane) in items {
                            transfers.push(t);
                            commit.push((c, lane));
                        }
                        let verdicts = check_stateless_batch(&transfers, now);
                        (transfers, commit, verdicts)
                    };
                    let checked = if on_bulk {
                        bulk.run(verify).await
                    } else {
                        tokio::task::spawn_blocking(verify).await.ok()
                    };
                    let Some(checked) = checked else {
                        return Vec::new(); // the caller answers "stopped"
                    };
                    let (transfers, commit, verdicts) = checked;
                    let mut out: Vec<Option<Verdict>> = Vec::with_capacity(n);
                    // Per lane (priority, bulk): the transfers to commit and their slots.
                    let mut to_commit = [Vec::new(), Vec::new()];
                    let mut queued = [Vec::new(), Vec::new()];
                    for ((t, (commit, lane)), verdict) in
                        transfers.into_iter().zip(commit).zip(verdicts)
                    {
                        let l = usize::from(lane == Lane::Bulk);
                        out.push(match verdict {
                            Err(r) => Some(Verdict::Refused(t, r)),
                            Ok(()) if commit => {
                                queued[l].push(out.len());
                                to_commit[l].push(t);
                                None
                            }
                            Ok(()) => Some(Verdict::Valid(t)),
                        });
                    }
                    // What came in the priority lane goes on in the committer's, the rest in
                    // its bulk lane. A stopped committer gives no tickets: the verdicts then
                    // end short and the callers from the first missing one on answer
                    // "stopped".
                    let [priority, bulk] = to_commit;
                    let [priority_slots, bulk_slots] = queued;
                    for (lane, items, slots) in [
                        (Lane::Priority, priority, priority_slots),
                        (Lane::Bulk, bulk, bulk_slots),
                    ] {
                        if items.is_empty() {
                            continue;
                        }
                        let tickets = committer
                            .enqueue_each_in(lane, items)
                            .await
                            .unwrap_or_default();
                        for (slot, ticket) in slots.into_iter().zip(tickets) {
                            out[slot] = Some(Verdict::Queued(ticket));
                        }
                    }
                    out.into_iter().map_while(|v| v).collect()
                }
            },
        );
        Verifier { batcher }
    }

    /// Checks `transfers` (stateless checks and signatures); returns each with its verdict,
    /// in order.
    pub async fn check(
        &self,
        transfers: Vec<Transfer>,
    ) -> Result<Vec<(Transfer, Result<(), Reject>)>, Stopped> {
        let verdicts = self.run(transfers, false, Lane::Bulk).await?;
        Ok(verdicts
            .into_iter()
            .map(|v| match v {
                Verdict::Valid(t) => (t, Ok(())),
                Verdict::Refused(t, r) => (t, Err(r)),
                Verdict::Queued(_) => unreachable!("only asked to check"),
            })
            .collect())
    }

    /// Checks `transfers` and queues those that pass to commit, both in `lane`; returns
    /// each one's verdict, in order.
    pub async fn check_and_commit(
        &self,
        transfers: Vec<Transfer>,
        lane: Lane,
    ) -> Result<Vec<Verdict>, Stopped> {
        self.run(transfers, true, lane).await
    }

    async fn run(
        &self,
        transfers: Vec<Transfer>,
        commit: bool,
        lane: Lane,
    ) -> Result<Vec<Verdict>, Stopped> {
        let n = transfers.len();
        let verdicts = self
            .batcher
            .run_in(
                lane,
                transfers.into_iter().map(|t| (t, commit, lane)).collect(),
            )
            .await?;
        if verdicts.len() != n {
            return Err(Stopped("verifier"));
        }
        Ok(verdicts)
    }
}
