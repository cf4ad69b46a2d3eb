//! What each long-lived role on this node says about itself, for `/readyz`
//! and `/metrics`.
//!
//! Every role loop (relay, scheduler, projector — per shard — and the NATS
//! connection) owns a [`PartHealth`] and reports after each step: healthy
//! (with whether it leads) or failing (with why). A part is reported not ready
//! when it kept failing for longer than [`FAILING_GRACE`] (one failed step
//! during a leader change is not an outage), or when it has not reported for
//! [`SILENT_AFTER`] (its loop is stuck: nothing else would tell).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A part failing for longer than this is not ready.
pub const FAILING_GRACE: Duration = Duration::from_secs(3);
/// A part silent for longer than this is not ready (its loop is stuck).
pub const SILENT_AFTER: Duration = Duration::from_secs(20);
/// Longest detail kept per part.
pub const DETAIL_CHARS_MAX: usize = 300;

/// Which part: a role, its shard (empty for node-wide parts) and a name
/// within the role (the projector's name; empty when the role has one part).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartKey {
    pub role: &'static str,
    pub shard: String,
    pub name: String,
}

#[derive(Debug, Clone)]
struct PartState {
    leader: Option<bool>,
    last_report: Instant,
    last_ok: Option<Instant>,
    /// Set by a failing report, cleared by a healthy one.
    failure: Option<String>,
    /// What a healthy part last said (e.g. "leader", "standby").
    detail: String,
}

/// One part as `/readyz` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartReport {
    pub key: PartKey,
    pub ready: bool,
    /// `Some(true)` leads, `Some(false)` stands by, `None`: no leadership.
    pub leader: Option<bool>,
    /// Why it is not ready, or what it does.
    pub detail: String,
}

/// The node's board. Cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct HealthBoard {
    parts: Arc<Mutex<BTreeMap<PartKey, PartState>>>,
}

impl HealthBoard {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a part (reported healthy, "starting", until its first report).
    /// The parts are the configured roles × shards × projectors: bounded.
    pub fn part(&self, role: &'static str, shard: &str, name: &str) -> PartHealth {
        let key = PartKey { role, shard: shard.to_owned(), name: name.to_owned() };
        let now = Instant::now();
        self.lock().entry(key.clone()).or_insert(PartState {
            leader: None,
            last_report: now,
            last_ok: Some(now),
            failure: None,
            detail: "starting".into(),
        });
        PartHealth { board: self.clone(), key }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<PartKey, PartState>> {
        // A panic while holding the lock leaves plain data: still usable.
        self.parts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every part, judged at `now`.
    pub fn reports_at(&self, now: Instant) -> Vec<PartReport> {
        self.lock()
            .iter()
            .map(|(key, state)| {
                let silent = now.saturating_duration_since(state.last_report) > SILENT_AFTER;
                let failing_long = state.failure.is_some()
                    && state.last_ok.is_none_or(|ok| now.saturating_duration_since(ok) > FAILING_GRACE);
                let (ready, detail) = if silent {
                    let secs = now.saturating_duration_since(state.last_report).as_secs();
                    (false, format!("no report for {secs} s: its loop is stuck"))
                } else if failing_long {
                    (false, state.failure.clone().unwrap_or_default())
                } else {
                    (true, state.detail.clone())
                };
                PartReport { key: key.clone(), ready, leader: state.leader, detail }
            })
            .collect()
    }

    pub fn reports(&self) -> Vec<PartReport> {
        self.reports_at(Instant::now())
    }
}

/// One part's handle, owned by its loop.
#[derive(Debug, Clone)]
pub struct PartHealth {
    board: HealthBoard,
    key: PartKey,
}

impl PartHealth {
    /// A step went well.
    pub fn healthy(&self, leader: Option<bool>, detail: &str) {
        let now = Instant::now();
        if let Some(state) = self.board.lock().get_mut(&self.key) {
            state.leader = leader;
            state.last_report = now;
            state.last_ok = Some(now);
            state.failure = None;
            state.detail = bounded(detail);
        }
    }

    /// A step failed, or the part cannot do its work (`why`).
    pub fn failing(&self, leader: Option<bool>, why: &str) {
        let now = Instant::now();
        if let Some(state) = self.board.lock().get_mut(&self.key) {
            state.leader = leader;
            state.last_report = now;
            state.failure = Some(bounded(why));
        }
    }

    /// Still alive, nothing new (a standby waiting): keeps the part from
    /// looking stuck without changing its verdict.
    pub fn alive(&self) {
        if let Some(state) = self.board.lock().get_mut(&self.key) {
            state.last_report = Instant::now();
        }
    }
}

fn bounded(text: &str) -> String {
    text.chars().take(DETAIL_CHARS_MAX).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only(board: &HealthBoard, at: Instant) -> PartReport {
        let mut reports = board.reports_at(at);
        assert_eq!(reports.len(), 1);
        reports.remove(0)
    }

    #[test]
    fn a_part_is_ready_after_registration_and_healthy_reports() {
        let board = HealthBoard::new();
        let part = board.part("relay", "main", "");
        assert!(only(&board, Instant::now()).ready);
        part.healthy(Some(true), "leader");
        let report = only(&board, Instant::now());
        assert!(report.ready && report.leader == Some(true) && report.detail == "leader");
    }

    #[test]
    fn a_short_failure_is_tolerated_a_long_one_is_not() {
        let board = HealthBoard::new();
        let part = board.part("projector", "east", "members");
        part.healthy(Some(true), "consuming");
        part.failing(Some(true), "jetstream: timed out");
        assert!(only(&board, Instant::now()).ready, "within the grace");
        let later = Instant::now() + FAILING_GRACE + Duration::from_millis(10);
        let report = only(&board, later);
        assert!(!report.ready);
        assert_eq!(report.detail, "jetstream: timed out");
        part.healthy(Some(true), "consuming");
        assert!(only(&board, later).ready, "a healthy report clears the failure");
    }

    #[test]
    fn a_silent_part_is_stuck() {
        let board = HealthBoard::new();
        let part = board.part("scheduler", "main", "");
        part.healthy(Some(false), "standby");
        let later = Instant::now() + SILENT_AFTER + Duration::from_secs(1);
        let report = only(&board, later);
        assert!(!report.ready);
        assert!(report.detail.contains("stuck"), "{}", report.detail);
    }

    #[test]
    fn details_are_bounded() {
        let board = HealthBoard::new();
        let part = board.part("relay", "main", "");
        part.failing(None, &"x".repeat(10_000));
        let report = only(&board, Instant::now() + FAILING_GRACE * 2);
        assert_eq!(report.detail.chars().count(), DETAIL_CHARS_MAX);
    }
}
