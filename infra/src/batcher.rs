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

/// Batches in flight at once per statement kind. One: the statements are
/// short, and callers queueing behind the running batch leave together in
/// the next (fewer, larger batches; two measured no better on 2 cores).
pub const WORKERS: usize = 1;
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
    /// Started on first use, inside the runtime that uses it.
    sender: OnceLock<mpsc::Sender<Job<S::Item, S::Output>>>,
}

impl<S: BatchStatement> Batcher<S> {
    pub fn new(statement: S) -> Self {
        Self { statement: Arc::new(statement), sender: OnceLock::new() }
    }

    fn sender(&self) -> &mpsc::Sender<Job<S::Item, S::Output>> {
        self.sender.get_or_init(|| {
            let (sender, receiver) = mpsc::channel(QUEUE_MAX);
            let receiver = Arc::new(Mutex::new(receiver));
            for _ in 0..WORKERS {
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
