//! Consuming: the durable pull consumer, bounded pulls, the stall check, and one step over a batch.

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
            let consumer: PullConsumer = stream.get_or_create_consumer(&name, config).await.map_err(nats_error)?;
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
                // The consumer or stream may be gone: look it up again next time.
                self.consumer = None;
                return Err(nats_error(e));
            }
            Err(_) => {
                self.consumer = None;
                return Err(ProjectionError::Nats("pull request not answered in time".into()));
            }
        };
        let mut out = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, messages.next()).await {
                Ok(Some(Ok(message))) => out.push(message),
                Ok(Some(Err(e))) => {
                    self.consumer = None;
                    if out.is_empty() {
                        return Err(nats_error(e));
                    }
                    warn!(projector = self.projector.name(), shard = %self.shard, error = %e, "pull ended early");
                    break;
                }
                Ok(None) => break,
                Err(_) => {
                    // The server never ended this pull: it forgot it. Keep what came.
                    warn!(projector = self.projector.name(), shard = %self.shard, received = out.len(),
                        "pull not ended by the server in time; re-creating the consumer handle");
                    self.consumer = None;
                    break;
                }
            }
        }
        Ok(out)
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
                self.consumer = None;
                return false;
            }
            Err(_) => {
                self.consumer = None;
                return false;
            }
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
        // Streams are independent: their messages are handled concurrently (each
        // in its own transaction, so Postgres commits them as a group), while the
        // messages of one stream keep their order.
        let mut groups: Vec<(String, Vec<Message>)> = Vec::new();
        for message in fetched_messages {
            let key = serde_json::from_slice::<RelayedEvent>(&message.payload)
                .map(|e| stream_key(&e))
                .unwrap_or_else(|_| format!("undecodable/{}", groups.len()));
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, group)) => group.push(message),
                None => groups.push((key, vec![message])),
            }
        }
        let this = &*self;
        let reports: Vec<Result<BatchReport, ProjectionError>> = futures::stream::iter(groups)
            .map(|(_, group)| async move {
                let mut report = BatchReport::default();
                for message in group {
                    report.received += 1;
                    this.handle(&message, &mut report).await?;
                }
                Ok(report)
            })
            .buffer_unordered(STREAMS_IN_FLIGHT_MAX)
            .collect()
            .await;
        let mut report = BatchReport::default();
        for r in reports {
            report.add(&r?);
        }
        // JetStream numbers what remains after each delivered message.
        report.pending_after = last_pending;
        if report.received > 0 {
            debug!(?report, "projected batch");
        }
        Ok(report)
    }

    /// Handles one message and acks or naks it. Errors are JetStream's (the
    /// ack or nak failed); the message is then redelivered.
    pub(super) async fn handle(&self, message: &Message, report: &mut BatchReport) -> Result<(), ProjectionError> {
        let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
        let event: RelayedEvent = match serde_json::from_slice(&message.payload) {
            Ok(event) => event,
            Err(e) => {
                // Without an envelope there is no stream to park; nothing will change
                // on redelivery. Logged and terminated.
                warn!(subject = %message.subject, error = %e, "message is not a relayed event; terminated");
                message.ack_with(AckKind::Term).await.map_err(nats_error)?;
                report.ignored += 1;
                return Ok(());
            }
        };
        if event.aggregate_type != self.projector.aggregate_type() || !self.owns(&event.tenant_id) {
            message.double_ack().await.map_err(nats_error)?;
            report.ignored += 1;
            return Ok(());
        }
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

pub(super) fn stream_key(event: &RelayedEvent) -> String {
    format!("{}/{}", event.aggregate_type, event.aggregate_id)
}
