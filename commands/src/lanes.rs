//! Lanes: concurrent requests on one hot stream decided together.
//!
//! Some streams take most of the writes of a busy moment: a coupon template
//! everyone claims from, a shake lottery everyone shakes. Every request must
//! be decided on the stream's latest state (that is what keeps stock and
//! limits exact), so one command per request would serialize them behind one
//! commit each. A lane is a task that owns the hot streams hashed onto it: it
//! takes every request queued when it is free (at most `batch_max`), groups
//! them by stream and hands each group to its [`LaneWorker`], which decides
//! the group in one domain decision and commits it as one append.
//!
//! Bounds: `lanes` tasks per node and shard, each with a queue of at most
//! `queue_max` requests (a request finding it full is refused at once,
//! [`LaneError::Busy`], which the HTTP edge answers 503 with `Retry-After`),
//! and at most `batch_max` requests per round. A worker may hand requests
//! back (say a second request of a member whose first is in this round):
//! they are served first in the next round, within the same bound.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::OnceLock;

use async_trait::async_trait;
use cqrs_es::persist::SerializedEvent;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use wxcm_domain::DomainEventMeta;

/// Several streams in one transaction, each at its next sequence.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// A sequence was taken or an idempotency key was used: nothing was written.
    #[error("optimistic concurrency conflict")]
    Conflict,
    #[error("store failure: {0}")]
    Store(String),
    /// The store could not be reached or stopped answering: whether the rows
    /// were written is unknown (the caller's key tells, once it is back).
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// Appends events the application decided outside the executor (the lanes):
/// all rows in one transaction, each row's primary key (stream, sequence) its
/// optimistic check.
#[async_trait]
pub trait EventAppender: Send + Sync {
    async fn append(&self, rows: Vec<SerializedEvent>) -> Result<(), AppendError>;
}

/// One decided event as a row of `aggregate_type`/`aggregate_id` at `sequence`.
pub fn event_row<E: DomainEventMeta + serde::Serialize>(
    aggregate_type: &str,
    aggregate_id: &str,
    sequence: u64,
    event: &E,
    metadata: Value,
) -> Result<SerializedEvent, String> {
    Ok(SerializedEvent {
        aggregate_id: aggregate_id.to_owned(),
        sequence: usize::try_from(sequence).map_err(|e| e.to_string())?,
        aggregate_type: aggregate_type.to_owned(),
        event_type: event.event_type().to_owned(),
        event_version: event.event_version().to_owned(),
        payload: serde_json::to_value(event).map_err(|e| e.to_string())?,
        metadata,
    })
}

/// A request waiting in a lane, and where its answer goes.
pub struct Queued<J, A> {
    pub job: J,
    reply: oneshot::Sender<A>,
}

impl<J, A> Queued<J, A> {
    /// Answers the request (a caller that went away is not an error).
    pub fn answer(self, answer: A) {
        let _ = self.reply.send(answer);
    }
}

/// What a lane does with one stream's queued requests.
#[async_trait]
pub trait LaneWorker: Send + 'static {
    /// The hot stream a request is for: its lane, and the group it is decided with.
    type Key: Hash + Eq + Copy + Send + Sync;
    type Job: Send + 'static;
    type Answer: Send + 'static;

    fn key(job: &Self::Job) -> Self::Key;

    /// Decides and commits `group` (every request for `key` this round, in
    /// queue order) and answers each one, except those it hands back, which
    /// the lane serves first in its next round.
    async fn serve(
        &mut self,
        key: Self::Key,
        group: Vec<Queued<Self::Job, Self::Answer>>,
    ) -> Vec<Queued<Self::Job, Self::Answer>>;
}

/// How many lanes, how deep their queues, how large a round.
#[derive(Debug, Clone, Copy)]
pub struct LaneBounds {
    pub lanes: usize,
    pub queue_max: usize,
    pub batch_max: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LaneError {
    /// The lane's queue is full: refused at once, nothing decided.
    #[error("too many requests waiting, try again")]
    Busy,
    #[error("the lane stopped before answering")]
    Stopped,
}

/// A request queued for worker `W`.
type Request<W> = Queued<<W as LaneWorker>::Job, <W as LaneWorker>::Answer>;
type Sender<W> = mpsc::Sender<Request<W>>;
type Receiver<W> = mpsc::Receiver<Request<W>>;

pub struct Lanes<W: LaneWorker> {
    bounds: LaneBounds,
    make: Box<dyn Fn() -> W + Send + Sync>,
    /// Started on first use, inside the runtime that uses them.
    senders: OnceLock<Vec<Sender<W>>>,
}

impl<W: LaneWorker> Lanes<W> {
    /// `make` builds each lane's worker (its own cached state).
    pub fn new(bounds: LaneBounds, make: impl Fn() -> W + Send + Sync + 'static) -> Self {
        let bounds = LaneBounds {
            lanes: bounds.lanes.max(1),
            queue_max: bounds.queue_max.max(1),
            batch_max: bounds.batch_max.max(1),
        };
        Self { bounds, make: Box::new(make), senders: OnceLock::new() }
    }

    fn senders(&self) -> &[Sender<W>] {
        self.senders.get_or_init(|| {
            (0..self.bounds.lanes)
                .map(|_| {
                    let (sender, receiver) = mpsc::channel(self.bounds.queue_max);
                    tokio::spawn(run((self.make)(), receiver, self.bounds.batch_max));
                    sender
                })
                .collect()
        })
    }

    /// Queues `job` on its stream's lane and waits for its answer.
    pub async fn submit(&self, job: W::Job) -> Result<W::Answer, LaneError> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        W::key(&job).hash(&mut h);
        let senders = self.senders();
        let sender = &senders[(h.finish() as usize) % senders.len()];
        let (reply, answer) = oneshot::channel();
        sender.try_send(Queued { job, reply }).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => LaneError::Busy,
            mpsc::error::TrySendError::Closed(_) => LaneError::Stopped,
        })?;
        answer.await.map_err(|_| LaneError::Stopped)
    }
}

async fn run<W: LaneWorker>(mut worker: W, mut receiver: Receiver<W>, batch_max: usize) {
    let mut handed_back = Vec::new();
    loop {
        let mut queued = std::mem::take(&mut handed_back);
        if queued.is_empty() {
            match receiver.recv().await {
                Some(q) => queued.push(q),
                None => return,
            }
        } else {
            // Never spin on handed-back requests without letting others run.
            tokio::task::yield_now().await;
        }
        while queued.len() < batch_max {
            match receiver.try_recv() {
                Ok(q) => queued.push(q),
                Err(_) => break,
            }
        }
        for (key, group) in by_key::<W>(queued) {
            handed_back.extend(worker.serve(key, group).await);
        }
    }
}

/// Groups by stream, streams in order of their first request, requests in queue order.
fn by_key<W: LaneWorker>(queued: Vec<Request<W>>) -> Vec<(W::Key, Vec<Request<W>>)> {
    let mut index: HashMap<W::Key, usize> = HashMap::new();
    let mut groups: Vec<(W::Key, Vec<Request<W>>)> = Vec::new();
    for q in queued {
        let key = W::key(&q.job);
        match index.get(&key) {
            Some(&i) => groups[i].1.push(q),
            None => {
                index.insert(key, groups.len());
                groups.push((key, vec![q]));
            }
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    /// Answers each request with the size of the group it was decided in;
    /// hands back a request whose value was already seen in the group.
    struct Counting {
        rounds: Arc<std::sync::Mutex<Vec<usize>>>,
        gate: Arc<tokio::sync::Semaphore>,
    }

    #[async_trait]
    impl LaneWorker for Counting {
        type Key = u8;
        type Job = (u8, u32);
        type Answer = usize;

        fn key(job: &(u8, u32)) -> u8 {
            job.0
        }

        async fn serve(&mut self, _key: u8, group: Vec<Queued<(u8, u32), usize>>) -> Vec<Queued<(u8, u32), usize>> {
            let _permit = self.gate.acquire().await;
            let mut seen = std::collections::HashSet::new();
            let (now, later): (Vec<_>, Vec<_>) = group.into_iter().partition(|q| seen.insert(q.job.1));
            if let Ok(mut rounds) = self.rounds.lock() {
                rounds.push(now.len());
            }
            let n = now.len();
            for q in now {
                q.answer(n);
            }
            later
        }
    }

    fn lanes(batch_max: usize, queue_max: usize) -> (Arc<Lanes<Counting>>, Arc<tokio::sync::Semaphore>) {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let rounds = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (g, r) = (gate.clone(), rounds.clone());
        let bounds = LaneBounds { lanes: 1, queue_max, batch_max };
        (Arc::new(Lanes::new(bounds, move || Counting { rounds: r.clone(), gate: g.clone() })), gate)
    }

    #[tokio::test]
    async fn requests_queued_while_the_lane_is_busy_are_decided_together_within_the_batch_bound() {
        let (lanes, gate) = lanes(4, 64);
        let first = tokio::spawn({
            let lanes = lanes.clone();
            async move { lanes.submit((1, 0)).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let rest: Vec<_> = (1..=6)
            .map(|n| {
                let lanes = lanes.clone();
                tokio::spawn(async move { lanes.submit((1, n)).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        gate.add_permits(100);
        assert_eq!(first.await.unwrap(), Ok(1));
        let mut sizes = Vec::new();
        for r in rest {
            sizes.push(r.await.unwrap().unwrap());
        }
        sizes.sort_unstable();
        assert_eq!(sizes, [2, 2, 4, 4, 4, 4], "one round of 4 (the bound), then the 2 left");
    }

    #[tokio::test]
    async fn a_handed_back_request_is_served_in_a_later_round() {
        let (lanes, gate) = lanes(8, 64);
        gate.add_permits(100);
        let both = futures::future::join(lanes.submit((2, 7)), lanes.submit((2, 7))).await;
        assert_eq!(both, (Ok(1), Ok(1)));
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once() {
        let (lanes, gate) = lanes(1, 1);
        let mut waiting = Vec::new();
        for n in 0..3 {
            let lanes = lanes.clone();
            waiting.push(tokio::spawn(async move { lanes.submit((3, n)).await }));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // One in the lane (blocked at the gate), one queued: the third is refused.
        assert_eq!(waiting.pop().unwrap().await.unwrap(), Err(LaneError::Busy));
        gate.add_permits(100);
        for w in waiting {
            assert_eq!(w.await.unwrap(), Ok(1));
        }
    }
}
