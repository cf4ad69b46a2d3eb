//! Statement batching for small, independent statements on a hot path
//! (callback claims and completions, referral lookups, cold stream loads):
//! concurrent callers' items go to Postgres as one statement, so one round
//! trip and one transaction serve many callers.
//!
//! Each caller still waits for its own answer, so the semantics are those of
//! one statement per item. As in [`crate::group_commit`]: no timer, a worker
//! takes what is queued when it is free (after one yield to let runnable
//! callers queue theirs), and a failed batch is retried item by item so one
//! item's failure is never another's.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot, Mutex};
use wxcm_commands::ports::PortError;

/// Batches in flight at once for statements of uniform, short cost. One: the
/// callers queueing behind the running batch leave together in the next
/// (fewer, larger batches; two measured no better on 2 cores).
pub const WORKERS_SHORT: usize = 1;
/// For statements whose cost varies with the data (a cold load of a long
/// stream without snapshot takes about a second): a slow batch must not hold
/// every other caller back.
pub const WORKERS_VARIABLE: usize = 4;
/// Items waiting for a worker before `submit` waits for room (backpressure).
pub const QUEUE_MAX: usize = 4_096;
pub const BATCH_ITEMS_MAX: usize = 256;

/// Runs a batch of items as one statement.
#[async_trait]
pub trait BatchStatement: Send + Sync + 'static {
    type Item: Send + Sync + 'static;
    type Output: Send + 'static;
    /// Writes every item of `items` (one statement) and returns one output per
    /// item, in order. On an error nothing of the batch may have been written,
    /// so that each item can be retried alone.
    async fn run(&self, items: &[Self::Item]) -> Result<Vec<Self::Output>, PortError>;
}

type Job<I, O> = (I, oneshot::Sender<Result<O, PortError>>);
type Queue<S> = Arc<Mutex<mpsc::Receiver<Job<<S as BatchStatement>::Item, <S as BatchStatement>::Output>>>>;

pub struct Batcher<S: BatchStatement> {
    statement: Arc<S>,
    workers: usize,
    /// Started on first use, inside the runtime that uses it.
    sender: OnceLock<mpsc::Sender<Job<S::Item, S::Output>>>,
}

impl<S: BatchStatement> Batcher<S> {
    /// `workers`: batches in flight at once ([`WORKERS_SHORT`], [`WORKERS_VARIABLE`]).
    pub fn new(statement: S, workers: usize) -> Self {
        Self { statement: Arc::new(statement), workers: workers.max(1), sender: OnceLock::new() }
    }

    fn sender(&self) -> &mpsc::Sender<Job<S::Item, S::Output>> {
        self.sender.get_or_init(|| {
            let (sender, receiver) = mpsc::channel(QUEUE_MAX);
            let receiver = Arc::new(Mutex::new(receiver));
            for _ in 0..self.workers {
                tokio::spawn(work(self.statement.clone(), receiver.clone()));
            }
            sender
        })
    }

    /// Writes `item` together with whatever other items are queued; returns
    /// once its batch (or, after a batch failure, the item alone) is written.
    pub async fn submit(&self, item: S::Item) -> Result<S::Output, PortError> {
        let (reply, answer) = oneshot::channel();
        self.sender().send((item, reply)).await.map_err(|_| PortError::msg("batch worker stopped"))?;
        answer.await.unwrap_or_else(|_| Err(PortError::msg("batch worker stopped before answering")))
    }
}

async fn work<S: BatchStatement>(statement: Arc<S>, receiver: Queue<S>) {
    loop {
        let jobs = {
            let mut receiver = receiver.lock().await;
            let Some(first) = receiver.recv().await else { return };
            let mut jobs = vec![first];
            let mut yielded = false;
            while jobs.len() < BATCH_ITEMS_MAX {
                match receiver.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) if !yielded => {
                        yielded = true;
                        tokio::task::yield_now().await;
                    }
                    Err(_) => break,
                }
            }
            jobs
        };
        let (items, replies): (Vec<S::Item>, Vec<_>) = jobs.into_iter().unzip();
        match run_checked(&*statement, &items).await {
            Ok(outputs) => {
                for (reply, output) in replies.into_iter().zip(outputs) {
                    let _ = reply.send(Ok(output));
                }
            }
            Err(e) if items.len() > 1 => {
                tracing::debug!(items = items.len(), error = %e, "batch failed, writing its items one by one");
                for (item, reply) in items.into_iter().zip(replies) {
                    let alone = run_checked(&*statement, std::slice::from_ref(&item)).await;
                    let _ = reply.send(alone.and_then(|mut outputs| {
                        outputs.pop().ok_or_else(|| PortError::msg("batch statement returned no output"))
                    }));
                }
            }
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(PortError::msg(e.to_string())));
                }
            }
        }
    }
}

/// `run`, holding the statement to one output per item.
async fn run_checked<S: BatchStatement>(statement: &S, items: &[S::Item]) -> Result<Vec<S::Output>, PortError> {
    let outputs = statement.run(items).await?;
    if outputs.len() != items.len() {
        return Err(PortError::msg(format!("batch statement answered {} of {} items", outputs.len(), items.len())));
    }
    Ok(outputs)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    /// Doubles each item; fails a batch holding 13; is slow for 1000; counts statements.
    #[derive(Default)]
    struct Doubling {
        statements: AtomicUsize,
        largest_batch: AtomicUsize,
    }

    #[async_trait]
    impl BatchStatement for Doubling {
        type Item = u64;
        type Output = u64;

        async fn run(&self, items: &[u64]) -> Result<Vec<u64>, PortError> {
            self.statements.fetch_add(1, Ordering::SeqCst);
            self.largest_batch.fetch_max(items.len(), Ordering::SeqCst);
            // A round trip: callers arriving meanwhile queue for the next batch.
            tokio::time::sleep(Duration::from_millis(2)).await;
            if items.contains(&1000) {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            if items.contains(&13) {
                return Err(PortError::msg("13 refused"));
            }
            Ok(items.iter().map(|i| i * 2).collect())
        }
    }

    async fn submit_all(batcher: &Arc<Batcher<Doubling>>, items: Vec<u64>) -> Vec<Result<u64, PortError>> {
        let mut tasks = tokio::task::JoinSet::new();
        for item in items {
            let batcher = batcher.clone();
            tasks.spawn(async move { (item, batcher.submit(item).await) });
        }
        let mut answers = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            answers.push(joined.expect("task"));
        }
        answers.sort_by_key(|(item, _)| *item);
        answers.into_iter().map(|(_, answer)| answer).collect()
    }

    #[tokio::test]
    async fn concurrent_callers_share_statements_and_get_their_own_answers() {
        let batcher = Arc::new(Batcher::new(Doubling::default(), WORKERS_SHORT));
        let answers = submit_all(&batcher, (100..200).collect()).await;
        for (item, answer) in (100..200).zip(answers) {
            assert_eq!(answer.expect("answer"), item * 2);
        }
        let statements = batcher.statement.statements.load(Ordering::SeqCst);
        assert!(statements < 100, "100 callers, {statements} statements");
        assert!(batcher.statement.largest_batch.load(Ordering::SeqCst) > 1);
    }

    #[tokio::test]
    async fn a_failing_item_fails_alone() {
        let batcher = Arc::new(Batcher::new(Doubling::default(), WORKERS_SHORT));
        let answers = submit_all(&batcher, (0..40).collect()).await;
        for (item, answer) in answers.into_iter().enumerate() {
            match item {
                13 => assert!(answer.is_err(), "13 is refused"),
                _ => assert_eq!(answer.expect("the others are written"), item as u64 * 2),
            }
        }
    }

    #[tokio::test]
    async fn a_slow_batch_does_not_hold_back_the_others_with_variable_workers() {
        let batcher = Arc::new(Batcher::new(Doubling::default(), WORKERS_VARIABLE));
        let slow = {
            let batcher = batcher.clone();
            tokio::spawn(async move { batcher.submit(1000).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = std::time::Instant::now();
        assert_eq!(batcher.submit(21).await.expect("fast item"), 42);
        assert!(started.elapsed() < Duration::from_millis(300), "waited {:?} behind the slow batch", started.elapsed());
        assert_eq!(slow.await.expect("task").expect("slow item"), 2000);
    }
}
