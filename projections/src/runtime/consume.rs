//! Consuming: the durable pull consumer, bounded pulls, the stall check, and one step over a batch.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::consumer::pull::Config as PullConfig;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::Message;
use futures::StreamExt;
use tracing::{debug, instrument, warn};

use crate::envelope::RelayedEvent;

use super::*;

impl<P: Projector> ProjectorRuntime<P> {
    pub(super) async fn consumer(&mut self) -> Result<&mut PullConsumer, ProjectionError> {
        if self.consumer.is_none() {
            let name = self.consumer_name();
            let stream = self.js.get_stream(&self.settings.stream).await.map_err(nats_error)?;
            let config = PullConfig {
                durable_name: Some(name.clone()),
                description: Some(format!("wxcm projector {} on shard {}", self.projector.name(), self.shard)),
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::Explicit,
                ack_wait: self.settings.ack_wait,
                max_deliver: self.settings.deliveries_before_park + DELIVERIES_AFTER_PARK_MAX,
                max_ack_pending: self.settings.max_ack_pending.clamp(1, ACK_PENDING_MAX),
                filter_subject: self.settings.filter_subject.clone(),
                ..Default::default()
            };
            let ack_wait = config.ack_wait;
            let mut consumer: PullConsumer =
                stream.get_or_create_consumer(&name, config.clone()).await.map_err(nats_error)?;
            if consumer.cached_info().config.ack_wait != ack_wait {
                // A consumer made by an earlier release keeps its old ack wait (30 s)
                // until updated: once, when found so; a failed update is retried at
                // the next lookup and never stops consuming.
                match stream.update_consumer(config).await {
                    Ok(updated) => consumer = updated,
                    Err(e) => warn!(consumer = %name, error = %e, "could not update the consumer's ack wait"),
                }
            }
            self.consumer = Some(consumer);
        }
        self.consumer.as_mut().ok_or_else(|| ProjectionError::Nats("no consumer".into()))
    }

    /// Up to `max` messages: those available now (`wait` None), or the first
    /// `max` to arrive within `wait`. Never takes longer than `wait` plus
    /// [`PULL_GRACE`]: past that the pull is abandoned (messages received so
    /// far are kept) and the consumer handle is made anew on the next step.
    pub(super) async fn pull(&mut self, max: usize, wait: Option<Duration>) -> Result<Vec<Message>, ProjectionError> {
        let deadline = tokio::time::Instant::now() + wait.unwrap_or(Duration::ZERO) + PULL_GRACE;
        let consumer = self.consumer().await?;
        let request = async {
            match wait {
                None => consumer.fetch().max_messages(max).messages().await,
                Some(wait) => consumer.batch().max_messages(max).expires(wait).messages().await,
            }
        };
        let mut messages = match tokio::time::timeout_at(deadline, request).await {
            Ok(Ok(messages)) => messages,
            Ok(Err(e)) => {
                let error = nats_error(e);
                self.forget_consumer_if_gone(&error);
                return Err(error);
            }
            // The handle stays: the next pull is a new request to the consumer, which
            // needs only its leader, while looking the consumer up again needs the
            // cluster's meta leader (the last thing a restarted cluster elects).
            Err(_) => return Err(ProjectionError::Nats("pull request not answered in time".into())),
        };
        let mut out = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, messages.next()).await {
                Ok(Some(Ok(message))) => out.push(message),
                Ok(Some(Err(e))) => {
                    let error = nats_error(e);
                    self.forget_consumer_if_gone(&error);
                    if out.is_empty() {
                        return Err(error);
                    }
                    warn!(projector = self.projector.name(), shard = %self.shard, error = %error, "pull ended early");
                    break;
                }
                Ok(None) => break,
                Err(_) => {
                    // The server never ended this pull: it forgot it. Keep what came.
                    warn!(projector = self.projector.name(), shard = %self.shard, received = out.len(),
                        "pull not ended by the server in time; pulling anew");
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Drops the consumer handle when `error` says the consumer (or its
    /// stream) is gone, so the next step looks it up or creates it again.
    fn forget_consumer_if_gone(&mut self, error: &ProjectionError) {
        let text = error.to_string().to_ascii_lowercase();
        let gone = ["not found", "deleted", "no responders", "10014", "10059"].iter().any(|m| text.contains(m));
        if gone {
            self.consumer = None;
        }
    }

    /// True when messages wait for this consumer (pending or unacked) although
    /// it received none lately: its pull is stuck. The consumer handle is then
    /// dropped so that the next step creates a new one (and a new pull).
    pub(super) async fn stalled(&mut self) -> bool {
        let info = match self.consumer().await {
            Ok(consumer) => tokio::time::timeout(STALL_CHECK_TIMEOUT, consumer.info()).await,
            Err(e) => {
                debug!(error = %e, "stall check: no consumer");
                return false;
            }
        };
        let waiting = match info {
            Ok(Ok(info)) => info.num_pending > 0 || info.num_ack_pending > 0,
            Ok(Err(e)) => {
                debug!(error = %e, "stall check: consumer info failed");
                self.forget_consumer_if_gone(&nats_error(e));
                return false;
            }
            Err(_) => return false,
        };
        if waiting {
            let name = self.consumer_name();
            count_stall(&name);
            warn!(projector = self.projector.name(), shard = %self.shard, consumer = %name,
                "projector stalled: messages wait but none arrived; re-creating the pull");
            self.consumer = None;
        }
        waiting
    }

    /// Fetches up to `max` messages (waiting at most `wait`) and handles each.
    #[instrument(skip_all, fields(projector = self.projector.name(), shard = %self.shard))]
    pub async fn run_batch(&mut self, max: usize, wait: Duration) -> Result<BatchReport, ProjectionError> {
        let max = max.clamp(1, BATCH_MAX);
        // What is already waiting, at once; else wait for one message, then take
        // whatever came with it. A pull of `max` with a wait would hold the first
        // message until `max` arrived or the wait ran out (latency for nothing).
        let mut fetched_messages = self.pull(max, None).await?;
        if fetched_messages.is_empty() {
            fetched_messages = self.pull(1, Some(wait)).await?;
            if !fetched_messages.is_empty() && max > 1 {
                let more = self.pull(max - 1, None).await?;
                fetched_messages.extend(more);
            }
        }
        let last_pending = fetched_messages.last().and_then(|m| m.info().ok()).map(|info| info.pending);
        let mut report = BatchReport { received: fetched_messages.len(), ..BatchReport::default() };
        // Messages that are not this shard's events of this projector are acked
        // (or terminated) at once; the rest is applied as one batch.
        let mut mine: Vec<(Message, RelayedEvent)> = Vec::with_capacity(fetched_messages.len());
        let mut others: Vec<(Message, AckKind)> = Vec::new();
        for message in fetched_messages {
            match serde_json::from_slice::<RelayedEvent>(&message.payload) {
                Ok(event) if event.aggregate_type == self.projector.aggregate_type() && self.owns(&event.tenant_id) => {
                    mine.push((message, event))
                }
                Ok(_) => others.push((message, AckKind::Ack)),
                Err(e) => {
                    // Without an envelope there is no stream to park; nothing will change
                    // on redelivery. Logged and terminated.
                    warn!(subject = %message.subject, error = %e, "message is not a relayed event; terminated");
                    others.push((message, AckKind::Term));
                }
            }
        }
        report.ignored = others.len();
        ack_all(others.iter().map(|(m, kind)| (m, *kind)).collect()).await?;
        if !mine.is_empty() {
            let events: Vec<RelayedEvent> = mine.iter().map(|(_, e)| e.clone()).collect();
            match self.project_batch(&events).await {
                Ok(outcomes) => self.settle_batch(&mine, &outcomes, &mut report).await?,
                Err(error) => {
                    // One event (or the database) failed: the batch rolled back. One by
                    // one, the failing event is found and recorded, the others applied.
                    debug!(error = %error_chain(&error), events = mine.len(), "batch failed; applying one by one");
                    self.handle_one_by_one(mine, &mut report).await?;
                }
            }
        }
        // JetStream numbers what remains after each delivered message.
        report.pending_after = last_pending;
        if report.received > 0 {
            debug!(?report, "projected batch");
        }
        Ok(report)
    }

    /// After a batch committed: records the parked ones and acks every message.
    async fn settle_batch(
        &self,
        batch: &[(Message, RelayedEvent)],
        outcomes: &[Outcome],
        report: &mut BatchReport,
    ) -> Result<(), ProjectionError> {
        for ((_, event), outcome) in batch.iter().zip(outcomes) {
            match outcome {
                Outcome::Applied { filled } => {
                    report.applied += 1;
                    report.filled += filled;
                }
                Outcome::Duplicate => report.duplicates += 1,
                Outcome::Parked => {
                    // Its ack below ends redelivery: the dead letter is the record.
                    self.record_failure(event, "an earlier event of this stream is parked", 1, true).await?;
                    report.parked += 1;
                }
            }
        }
        ack_all(batch.iter().map(|(m, _)| (m, AckKind::Ack)).collect()).await
    }

    /// The single path over a batch: streams concurrently, each stream's
    /// messages in order, one transaction per message.
    async fn handle_one_by_one(
        &self,
        batch: Vec<(Message, RelayedEvent)>,
        report: &mut BatchReport,
    ) -> Result<(), ProjectionError> {
        let mut groups: BTreeMap<String, Vec<(Message, RelayedEvent)>> = BTreeMap::new();
        for (message, event) in batch {
            groups.entry(stream_key(&event)).or_default().push((message, event));
        }
        let reports: Vec<Result<BatchReport, ProjectionError>> = futures::stream::iter(groups.into_values())
            .map(|mut group| async move {
                group.sort_by_key(|(_, e)| e.sequence);
                let mut report = BatchReport::default();
                for (message, event) in group {
                    self.handle(&message, event, &mut report).await?;
                }
                Ok(report)
            })
            .buffer_unordered(STREAMS_IN_FLIGHT_MAX)
            .collect()
            .await;
        for r in reports {
            report.add(&r?);
        }
        Ok(())
    }

    /// Handles one message (an event of this projector and shard) and acks
    /// or naks it. Errors are JetStream's (the ack or nak failed); the
    /// message is then redelivered.
    pub(super) async fn handle(
        &self,
        message: &Message,
        event: RelayedEvent,
        report: &mut BatchReport,
    ) -> Result<(), ProjectionError> {
        let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
        match self.project(&event).await {
            Ok(outcome) => {
                message.double_ack().await.map_err(nats_error)?;
                match outcome {
                    Outcome::Applied { filled } => {
                        report.applied += 1;
                        report.filled += filled;
                    }
                    Outcome::Duplicate => report.duplicates += 1,
                    Outcome::Parked => report.parked += 1,
                }
            }
            Err(error) => {
                let park = delivered >= self.settings.deliveries_before_park;
                let text = error_chain(&error);
                warn!(
                    stream = %stream_key(&event),
                    sequence = event.sequence,
                    delivered,
                    park,
                    error = %text,
                    "projection failed"
                );
                // If even recording fails, the nak below still gets it redelivered.
                if let Err(e) = self.record_failure(&event, &text, delivered, park).await {
                    warn!(error = %error_chain(&e), "cannot record the projection failure");
                    message.ack_with(AckKind::Nak(Some(self.settings.nak_delay))).await.map_err(nats_error)?;
                    report.failed += 1;
                } else if park {
                    message.double_ack().await.map_err(nats_error)?;
                    report.parked += 1;
                } else {
                    message.ack_with(AckKind::Nak(Some(self.settings.nak_delay))).await.map_err(nats_error)?;
                    report.failed += 1;
                }
            }
        }
        Ok(())
    }
}

/// Acks messages, [`ACKS_IN_FLIGHT_MAX`] at a time, each waiting for the
/// server (`double_ack` for plain acks). The first failure is returned; its
/// message is redelivered and then a duplicate.
async fn ack_all(acks: Vec<(&Message, AckKind)>) -> Result<(), ProjectionError> {
    let mut in_flight = futures::stream::FuturesUnordered::new();
    let mut first_error = None;
    for (message, kind) in acks {
        if in_flight.len() >= ACKS_IN_FLIGHT_MAX {
            if let Some(Err(e)) = in_flight.next().await {
                first_error.get_or_insert(e);
            }
        }
        in_flight.push(ack_one(message, kind));
    }
    while let Some(result) = in_flight.next().await {
        if let Err(e) = result {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

async fn ack_one(message: &Message, kind: AckKind) -> Result<(), ProjectionError> {
    match kind {
        AckKind::Ack => message.double_ack().await.map_err(nats_error),
        kind => message.ack_with(kind).await.map_err(nats_error),
    }
}

pub(super) fn stream_key(event: &RelayedEvent) -> String {
    format!("{}/{}", event.aggregate_type, event.aggregate_id)
}
