//! Coalescing concurrent requests into batches: callers hand in items, one task gathers
//! whatever is queued (up to a maximum), runs the batch function once, and hands each caller
//! its own results. Used twice on the hot path: for Ed25519 batch verification and for
//! committing many transfers in one store transaction. The first stage hands what passes on
//! to the second itself ([`Batcher::enqueue_each`]), so a batch verified together is
//! committed together.

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

/// A handle to a batching task.
pub struct Batcher<T, R> {
    name: &'static str,
    max: usize,
    sender: mpsc::Sender<Job<T, R>>,
}

impl<T, R> Clone for Batcher<T, R> {
    fn clone(&self) -> Self {
        Batcher {
            name: self.name,
            max: self.max,
            sender: self.sender.clone(),
        }
    }
}

impl<T: Send + 'static, R: Send + 'static> Batcher<T, R> {
    /// Starts the task on the current runtime. `run` gets each batch (at most `max` items:
    /// [`Batcher::run`] and [`Batcher::enqueue_each`] queue at most that many at a time) and
    /// must return one result per item, in order.
    /// At most `in_flight` batches run at once; `observe` sees each batch's size.
    pub fn start<F, Fut>(
        name: &'static str,
        max: usize,
        queue_depth: usize,
        in_flight: usize,
        observe: impl Fn(usize) + Send + 'static,
        run: F,
    ) -> Batcher<T, R>
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<R>> + Send + 'static,
    {
        let (sender, receiver) = mpsc::channel(queue_depth.max(1));
        tokio::spawn(gather(
            receiver,
            max.max(1),
            in_flight.max(1),
            observe,
            Arc::new(run),
        ));
        Batcher {
            name,
            max: max.max(1),
            sender,
        }
    }

    /// Runs `items` (split into chunks of at most the batch maximum), returning one result
    /// per item in order.
    pub async fn run(&self, items: Vec<T>) -> Result<Vec<R>, Stopped> {
        if items.len() <= self.max {
            return self.run_chunk(items).await;
        }
        let mut chunks = Vec::new();
        let mut rest = items;
        while rest.len() > self.max {
            let tail = rest.split_off(self.max);
            chunks.push(rest);
            rest = tail;
        }
        chunks.push(rest);
        let parts = futures::future::join_all(chunks.into_iter().map(|c| self.run_chunk(c))).await;
        let mut all = Vec::new();
        for part in parts {
            all.extend(part?);
        }
        Ok(all)
    }

    async fn run_chunk(&self, items: Vec<T>) -> Result<Vec<R>, Stopped> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        let size = items.len();
        self.sender
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
            self.sender
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

async fn gather<T, R, F, Fut>(
    mut receiver: mpsc::Receiver<Job<T, R>>,
    max: usize,
    in_flight: usize,
    observe: impl Fn(usize),
    run: Arc<F>,
) where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Vec<R>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(in_flight));
    // A job that would have taken the last batch past `max` starts the next one.
    let mut held: Option<Job<T, R>> = None;
    loop {
        let first = match held.take() {
            Some(job) => job,
            None => match receiver.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        // Wait for a free slot before gathering: while all are busy, the queue fills and
        // the next batch is bigger.
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        let mut total = first.items.len();
        let mut jobs = vec![first];
        while total < max {
            match receiver.try_recv() {
                Ok(job) if total + job.items.len() > max => {
                    held = Some(job);
                    break;
                }
                Ok(job) => {
                    total += job.items.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
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
            let results = run(items).await;
            drop(permit);
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
}
