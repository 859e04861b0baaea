//! Coalescing concurrent requests into batches: callers hand in items, one task gathers
//! whatever is queued (up to a maximum), runs the batch function once, and hands each caller
//! its own results. Used twice on the hot path: for Ed25519 batch verification and for
//! committing many transfers in one store transaction. The first stage hands what passes on
//! to the second itself ([`Batcher::enqueue_each`]), so a batch verified together is
//! committed together.
//!
//! Each batcher has two queues: the priority lane (single calls of wallets, the latency
//! path) and the bulk lane (large batches). A batch is gathered from one lane, the priority
//! lane first, and batches from the bulk lane may hold only some of the slots and run on the
//! lower-priority background runtime, so a wallet's transfer neither waits for the bulk
//! queue nor is verified or committed inside a large batch, and gets the CPU first.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};

/// The batcher's task has stopped (the service is shutting down).
#[derive(Debug, thiserror::Error)]
#[error("the {0} stage has stopped")]
pub struct Stopped(pub &'static str);

/// Queued items and who gets their results: each reply takes the next `size` results.
struct Job<T, R> {
    items: Vec<T>,
    replies: Vec<(usize, oneshot::Sender<Vec<R>>)>,
}

/// Where one item's result arrives (see [`Batcher::enqueue_each`]); an error means the
/// batcher stopped before answering.
pub type Ticket<R> = oneshot::Receiver<Vec<R>>;

/// Which queue a caller's items join.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    /// Gathered first: the latency path.
    Priority,
    /// Gathered when the priority lane is empty.
    Bulk,
}

/// A handle to a batching task.
pub struct Batcher<T, R> {
    name: &'static str,
    max: usize,
    bulk: mpsc::Sender<Job<T, R>>,
    priority: mpsc::Sender<Job<T, R>>,
}

impl<T, R> Clone for Batcher<T, R> {
    fn clone(&self) -> Self {
        Batcher {
            name: self.name,
            max: self.max,
            bulk: self.bulk.clone(),
            priority: self.priority.clone(),
        }
    }
}

impl<T: Send + 'static, R: Send + 'static> Batcher<T, R> {
    /// Starts the task on the current runtime. `run` gets each batch (at most `max` items:
    /// [`Batcher::run`] and [`Batcher::enqueue_each`] queue at most that many at a time) and
    /// must return one result per item, in order.
    /// At most `in_flight` batches run at once, and of those at most `bulk_in_flight` led by
    /// the bulk lane (a batch is led by the lane its first job came from), so some slots stay
    /// free for the priority lane; `observe` sees each batch's size.
    pub fn start<F, Fut>(
        name: &'static str,
        max: usize,
        queue_depth: usize,
        in_flight: usize,
        bulk_in_flight: usize,
        observe: impl Fn(usize) + Send + 'static,
        run: F,
    ) -> Batcher<T, R>
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<R>> + Send + 'static,
    {
        let (bulk, bulk_queue) = mpsc::channel(queue_depth.max(1));
        let (priority, priority_queue) = mpsc::channel(queue_depth.max(1));
        tokio::spawn(gather(
            Queues {
                priority: priority_queue,
                bulk: bulk_queue,
                held: [None, None],
            },
            max.max(1),
            in_flight.max(1),
            bulk_in_flight.clamp(1, in_flight.max(1)),
            observe,
            Arc::new(run),
        ));
        Batcher {
            name,
            max: max.max(1),
            bulk,
            priority,
        }
    }

    fn sender(&self, lane: Lane) -> &mpsc::Sender<Job<T, R>> {
        match lane {
            Lane::Priority => &self.priority,
            Lane::Bulk => &self.bulk,
        }
    }

    /// Runs `items` (split into chunks of at most the batch maximum) in the bulk lane,
    /// returning one result per item in order.
    pub async fn run(&self, items: Vec<T>) -> Result<Vec<R>, Stopped> {
        self.run_in(Lane::Bulk, items).await
    }

    /// [`Batcher::run`] in `lane`.
    pub async fn run_in(&self, lane: Lane, items: Vec<T>) -> Result<Vec<R>, Stopped> {
        if items.len() <= self.max {
            return self.run_chunk(lane, items).await;
        }
        let mut chunks = Vec::new();
        let mut rest = items;
        while rest.len() > self.max {
            let tail = rest.split_off(self.max);
            chunks.push(rest);
            rest = tail;
        }
        chunks.push(rest);
        let parts =
            futures::future::join_all(chunks.into_iter().map(|c| self.run_chunk(lane, c))).await;
        let mut all = Vec::new();
        for part in parts {
            all.extend(part?);
        }
        Ok(all)
    }

    async fn run_chunk(&self, lane: Lane, items: Vec<T>) -> Result<Vec<R>, Stopped> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        let size = items.len();
        self.sender(lane)
            .send(Job {
                items,
                replies: vec![(size, reply)],
            })
            .await
            .map_err(|_| Stopped(self.name))?;
        answer.await.map_err(|_| Stopped(self.name))
    }

    /// Queues `items` without waiting for their results, in jobs of at most the batch
    /// maximum, and returns a ticket per item, in order. Used by a stage that hands its
    /// output on to the next: one queued job keeps the items together, so the next stage
    /// batches them as the first one did, however its callers are woken.
    pub async fn enqueue_each(&self, items: Vec<T>) -> Result<Vec<Ticket<R>>, Stopped> {
        self.enqueue_each_in(Lane::Bulk, items).await
    }

    /// [`Batcher::enqueue_each`] in `lane`.
    pub async fn enqueue_each_in(
        &self,
        lane: Lane,
        items: Vec<T>,
    ) -> Result<Vec<Ticket<R>>, Stopped> {
        let mut tickets = Vec::with_capacity(items.len());
        let mut rest = items.into_iter().peekable();
        while rest.peek().is_some() {
            let chunk: Vec<T> = rest.by_ref().take(self.max).collect();
            let mut replies = Vec::with_capacity(chunk.len());
            for _ in 0..chunk.len() {
                let (reply, ticket) = oneshot::channel();
                replies.push((1, reply));
                tickets.push(ticket);
            }
            self.sender(lane)
                .send(Job {
                    items: chunk,
                    replies,
                })
                .await
                .map_err(|_| Stopped(self.name))?;
        }
        Ok(tickets)
    }
}

/// The two lanes, and per lane a job taken that did not fit the last batch.
struct Queues<T, R> {
    priority: mpsc::Receiver<Job<T, R>>,
    bulk: mpsc::Receiver<Job<T, R>>,
    held: [Option<Job<T, R>>; 2],
}

impl<T, R> Queues<T, R> {
    /// The next job and its lane (0: priority, 1: bulk), waiting for one; `None` once
    /// both lanes are closed.
    async fn next(&mut self) -> Option<(Job<T, R>, usize)> {
        if let Some(job) = self.held[0].take() {
            return Some((job, 0));
        }
        if let Ok(job) = self.priority.try_recv() {
            return Some((job, 0));
        }
        if let Some(job) = self.held[1].take() {
            return Some((job, 1));
        }
        tokio::select! {
            biased;
            Some(job) = self.priority.recv() => Some((job, 0)),
            Some(job) = self.bulk.recv() => Some((job, 1)),
            else => None,
        }
    }

    /// Puts back a job that did not fit (at most one per lane is ever held).
    fn hold(&mut self, job: Job<T, R>, lane: usize) {
        self.held[lane] = Some(job);
    }
}

async fn gather<T, R, F, Fut>(
    mut queues: Queues<T, R>,
    max: usize,
    in_flight: usize,
    bulk_in_flight: usize,
    observe: impl Fn(usize),
    run: Arc<F>,
) where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Vec<R>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(in_flight));
    let bulk_permits = Arc::new(Semaphore::new(bulk_in_flight));
    loop {
        // Wait for a free slot before choosing: while all are busy, the queues fill, the
        // next batch is bigger, and what arrived in the priority lane meanwhile goes first.
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        let Some((mut first, lane)) = queues.next().await else {
            return;
        };
        // A batch led by the bulk lane needs a bulk slot too; while it waits for one, a
        // job in the priority lane takes the slot instead.
        let mut bulk_permit = None;
        let mut led = lane;
        if lane == 1 {
            match Arc::clone(&bulk_permits).try_acquire_owned() {
                Ok(p) => bulk_permit = Some(p),
                Err(_) => {
                    tokio::select! {
                        biased;
                        Some(job) = queues.priority.recv() => {
                            queues.hold(first, 1);
                            first = job;
                            led = 0;
                        }
                        p = Arc::clone(&bulk_permits).acquire_owned() => {
                            let Ok(p) = p else { return };
                            bulk_permit = Some(p);
                        }
                    }
                }
            }
        }
        let mut total = first.items.len();
        let mut jobs = vec![first];
        // Fill from the lane that leads the batch only: a single call is not verified or
        // committed as part of a large batch (it would wait as long as the batch does), and a
        // batch does not take the priority lane's slots. A job that would take the batch past
        // `max` waits for the next batch, first in its lane.
        let lane = led;
        while total < max {
            let job = match (lane, queues.held[lane].take()) {
                (_, Some(job)) => job,
                (0, None) => match queues.priority.try_recv() {
                    Ok(job) => job,
                    Err(_) => break,
                },
                (_, None) => match queues.bulk.try_recv() {
                    Ok(job) => job,
                    Err(_) => break,
                },
            };
            if total + job.items.len() > max {
                queues.hold(job, lane);
                break;
            }
            total += job.items.len();
            jobs.push(job);
        }
        observe(total);
        let mut replies = Vec::with_capacity(jobs.len());
        let mut items = Vec::with_capacity(total);
        for job in jobs {
            replies.extend(job.replies);
            items.extend(job.items);
        }
        let run = Arc::clone(&run);
        tokio::spawn(async move {
            // A batch the bulk lane leads runs on the background runtime's lower-priority
            // threads.
            let results = if lane == 1 {
                cbdc_runtime::background::run(run(items)).await
            } else {
                run(items).await
            };
            drop((permit, bulk_permit));
            let mut results = results.into_iter();
            for (size, reply) in replies {
                let mine: Vec<R> = results.by_ref().take(size).collect();
                let _ = reply.send(mine);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Concurrent callers of every size get their own results in order; no batch goes past
    /// the maximum; tickets answer one item each.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batches_stay_within_the_maximum_and_answer_each_caller() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&sizes);
        let batcher: Batcher<u32, u32> = Batcher::start(
            "test",
            10,
            64,
            2,
            2,
            move |n| seen.lock().unwrap().push(n),
            |items: Vec<u32>| async move {
                tokio::task::yield_now().await;
                items.into_iter().map(|i| i * 2).collect()
            },
        );
        let callers = (0..40u32).map(|c| {
            let b = batcher.clone();
            tokio::spawn(async move {
                let items: Vec<u32> = (0..(c % 13) + 1).map(|i| c * 100 + i).collect();
                let want: Vec<u32> = items.iter().map(|i| i * 2).collect();
                assert_eq!(b.run(items).await.unwrap(), want);
                let tickets = b.enqueue_each(vec![c, c + 1, c + 2]).await.unwrap();
                for (ticket, i) in tickets.into_iter().zip(c..) {
                    assert_eq!(ticket.await.unwrap(), vec![i * 2]);
                }
            })
        });
        for caller in callers.collect::<Vec<_>>() {
            caller.await.unwrap();
        }
        let sizes = sizes.lock().unwrap();
        assert!(!sizes.is_empty());
        assert!(sizes.iter().all(|&n| (1..=10).contains(&n)), "{sizes:?}");
    }

    /// With the one slot busy and the bulk lane full, an item in the priority lane is in
    /// the next batch, ahead of every bulk item queued before it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_priority_lane_goes_first() {
        let order = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&order);
        let (release, gate) = tokio::sync::watch::channel(false);
        let batcher: Batcher<u32, u32> = Batcher::start(
            "test",
            4,
            64,
            1,
            1,
            |_| {},
            move |items: Vec<u32>| {
                let (seen, mut gate) = (Arc::clone(&seen), gate.clone());
                async move {
                    let _ = gate.wait_for(|open| *open).await;
                    seen.lock().unwrap().push(items.clone());
                    items
                }
            },
        );
        let mut bulk = Vec::new();
        for i in 0..6u32 {
            let b = batcher.clone();
            bulk.push(tokio::spawn(async move {
                b.run(vec![i * 10, i * 10 + 1]).await
            }));
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let b = batcher.clone();
        let urgent = tokio::spawn(async move { b.run_in(Lane::Priority, vec![999]).await });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        release.send(true).unwrap();
        assert_eq!(urgent.await.unwrap().unwrap(), vec![999]);
        for b in bulk {
            b.await.unwrap().unwrap();
        }
        let order = order.lock().unwrap();
        // The first batch (the first bulk job) was already running; the next one starts with
        // the priority item.
        assert_eq!(order[0], vec![0, 1]);
        assert_eq!(order[1], vec![999], "{order:?}");
        assert_eq!(order.iter().map(Vec::len).sum::<usize>(), 13);
        assert!(order.iter().all(|b| b.len() <= 4));
    }
}
