//! The load driver every bench uses: closed loops (a fixed number of clients,
//! each issuing its next operation when the last one answered) and open loops
//! (operations issued on a fixed schedule, at most a fixed number in flight),
//! with latency histograms and the count of everything that went wrong.
//!
//! Nothing is left out quietly: an operation that fails is an error whenever it
//! ran (warm-up included), a tick of an open loop that finds every slot taken
//! is skipped (not delayed), and [`Counts`] carries both to the final JSON
//! line, where any of them fails the run (`setup::finish`). Open-loop latency
//! runs from the instant the tick was due, not from when the driver got to it,
//! so a driver falling behind shows in the figures.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use futures::StreamExt;
use hdrhistogram::Histogram;
use tokio::sync::Semaphore;

/// Latencies are recorded in microseconds, up to one minute (longer ones saturate).
pub const LATENCY_US_MAX: u64 = 60_000_000;
/// Clients of a closed loop, or operations in flight of an open loop, at most.
pub const CONCURRENCY_MAX: u32 = 1_024;
/// Ticks of one open loop at most (rate × seconds).
pub const TICKS_MAX: u64 = 100_000_000;

/// What went wrong during a run; any of it fails the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Operations that failed, in or out of the timed window.
    pub errors: u64,
    /// Ticks of an open loop that found no free slot and issued nothing.
    pub skipped: u64,
}

impl Counts {
    pub fn is_clean(&self) -> bool {
        self.errors == 0 && self.skipped == 0
    }
}

impl std::ops::Add for Counts {
    type Output = Counts;
    fn add(self, other: Counts) -> Counts {
        Counts { errors: self.errors + other.errors, skipped: self.skipped + other.skipped }
    }
}

impl std::iter::Sum for Counts {
    fn sum<I: Iterator<Item = Counts>>(iter: I) -> Counts {
        iter.fold(Counts::default(), |a, b| a + b)
    }
}

/// What one successful operation did, in the unit its rate is counted in:
/// one command, request or callback (`()`), or a number of rows ([`Rows`]).
pub trait Work: Send + 'static {
    fn units(&self) -> u64;
}

impl Work for () {
    fn units(&self) -> u64 {
        1
    }
}

/// An operation that wrote this many rows (a multi-row INSERT).
pub struct Rows(pub u64);

impl Work for Rows {
    fn units(&self) -> u64 {
        self.0
    }
}

/// What one driven phase measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Operations that succeeded inside the timed window: the rate and the latencies.
    pub ok: u64,
    /// Units of work ([`Work`]) of the operations counted in `ok`.
    pub units: u64,
    /// Operations that succeeded outside it (warm-up, or finishing after its end):
    /// not in the rate, but their effects are in the database.
    pub ok_outside: u64,
    pub errors: u64,
    pub skipped: u64,
    pub first_error: Option<String>,
    pub window: Duration,
    pub latency_us: Histogram<u64>,
}

impl Outcome {
    /// Nothing done yet, over `window`.
    pub fn new(window: Duration) -> Self {
        Outcome {
            ok: 0,
            units: 0,
            ok_outside: 0,
            errors: 0,
            skipped: 0,
            first_error: None,
            window,
            latency_us: histogram(),
        }
    }

    /// Operations per second of the window.
    pub fn per_second(&self) -> f64 {
        self.ok as f64 / self.window.as_secs_f64()
    }

    /// Units of work ([`Work`], e.g. rows) per second of the window.
    pub fn units_per_second(&self) -> f64 {
        self.units as f64 / self.window.as_secs_f64()
    }

    /// Latency at `quantile` of the operations counted in `ok`; 0 if none.
    pub fn latency_ms(&self, quantile: f64) -> f64 {
        self.latency_us.value_at_quantile(quantile) as f64 / 1000.0
    }

    /// Every operation that succeeded, in the window or not.
    pub fn succeeded(&self) -> u64 {
        self.ok + self.ok_outside
    }

    pub fn counts(&self) -> Counts {
        Counts { errors: self.errors, skipped: self.skipped }
    }

    fn record<W: Work>(&mut self, outcome: Result<W>, latency: Duration, counted: bool) {
        match outcome {
            Ok(work) if counted => {
                self.ok += 1;
                self.units += work.units();
                self.latency_us.saturating_record(micros(latency).max(1));
            }
            Ok(_) => self.ok_outside += 1,
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }

    fn merge(&mut self, other: Outcome) -> Result<()> {
        self.ok += other.ok;
        self.units += other.units;
        self.ok_outside += other.ok_outside;
        self.errors += other.errors;
        self.skipped += other.skipped;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.latency_us.add(&other.latency_us).context("merging latencies")
    }

    /// Logs the first error, if any (the count is in the JSON line).
    pub fn warn_errors(&self, phase: &str) {
        if let Some(first) = &self.first_error {
            tracing::warn!(phase, errors = self.errors, first = %first, "operations failed");
        }
        if self.skipped > 0 {
            tracing::warn!(phase, skipped = self.skipped, "ticks skipped: every slot was busy");
        }
    }
}

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("valid histogram bounds")
}

pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Closed loop: `clients` tasks repeat `op(client, n)` (n numbered from 0 per
/// client, across warm-up and window) for `warmup + window`. Only operations
/// that start after the warm-up and finish inside the window count in the rate
/// and latencies; every failure counts as an error.
pub async fn closed_loop<F, Fut, W>(clients: u32, warmup: Duration, window: Duration, op: F) -> Result<Outcome>
where
    F: Fn(u32, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<W>> + Send + 'static,
    W: Work,
{
    ensure!((1..=CONCURRENCY_MAX).contains(&clients), "clients must be 1..={CONCURRENCY_MAX}");
    ensure!(!window.is_zero(), "the window must not be empty");
    let op = Arc::new(op);
    let measure_from = Instant::now() + warmup;
    let end = measure_from + window;
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..clients {
        let op = op.clone();
        tasks.spawn(async move {
            let mut outcome = Outcome::new(window);
            for n in 0.. {
                let started = Instant::now();
                if started >= end {
                    break;
                }
                let result = op(client, n).await;
                let finished = Instant::now();
                outcome.record(result, finished - started, started >= measure_from && finished <= end);
            }
            outcome
        });
    }
    let mut total = Outcome::new(window);
    while let Some(part) = tasks.join_next().await {
        total.merge(part.context("a bench client panicked")?)?;
    }
    Ok(total)
}

/// Open loop: `ticks` operations, operation `n` due at start + n / `rate` s
/// whatever happened to the previous ones. A tick that finds `concurrency`
/// operations in flight is skipped. Latency runs from the due instant; the
/// window from the start to the last answer (at least the schedule's length).
pub async fn open_loop<F, Fut, W>(rate: u32, ticks: u64, concurrency: u32, op: F) -> Result<Outcome>
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<W>> + Send + 'static,
    W: Work,
{
    ensure!(rate > 0, "the rate must be positive");
    ensure!((1..=TICKS_MAX).contains(&ticks), "ticks must be 1..={TICKS_MAX}");
    ensure!((1..=CONCURRENCY_MAX).contains(&concurrency), "concurrency must be 1..={CONCURRENCY_MAX}");
    let op = Arc::new(op);
    let period = Duration::from_secs_f64(1.0 / f64::from(rate));
    let schedule = period.mul_f64(ticks as f64);
    let tally = Arc::new(Mutex::new(Outcome::new(schedule)));
    let slots = Arc::new(Semaphore::new(concurrency as usize));
    let started = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..ticks {
        let due = started + period.mul_f64(n as f64);
        tokio::time::sleep_until(due).await;
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tally.lock().expect("tally lock").skipped += 1;
            continue;
        };
        let (op, tally) = (op.clone(), tally.clone());
        tasks.spawn(async move {
            let result = op(n).await;
            let latency = due.elapsed();
            drop(permit);
            tally.lock().expect("tally lock").record(result, latency, true);
        });
        // Reap finished tasks so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    while let Some(joined) = tasks.join_next().await {
        joined.context("a bench operation panicked")?;
    }
    let mut outcome = std::mem::replace(&mut *tally.lock().expect("tally lock"), Outcome::new(schedule));
    outcome.window = schedule.max(started.elapsed());
    Ok(outcome)
}

/// `count` operations run by `clients` at a time; the window is their
/// elapsed time. `Ok(_)` is a success whatever it holds.
pub async fn fixed_count<F, Fut>(count: u64, clients: u32, op: F) -> Outcome
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let started = std::time::Instant::now();
    let results: Vec<(Result<bool>, Duration)> = futures::stream::iter(0..count)
        .map(|n| {
            let op = &op;
            async move {
                let at = std::time::Instant::now();
                let result = op(n).await;
                (result, at.elapsed())
            }
        })
        .buffer_unordered(clients as usize)
        .collect()
        .await;
    let mut outcome = Outcome::new(started.elapsed().max(Duration::from_millis(1)));
    for (result, latency) in results {
        match result {
            Ok(_) => {
                outcome.ok += 1;
                outcome.units += 1;
                let _ = outcome.latency_us.record(micros(latency).max(1));
            }
            Err(e) => {
                outcome.errors += 1;
                outcome.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[tokio::test]
    async fn closed_loop_counts_every_failure_and_only_window_successes() {
        let outcome = closed_loop(4, ms(30), ms(100), |_, n| async move {
            tokio::time::sleep(ms(2)).await;
            anyhow::ensure!(n % 3 != 2, "every third operation fails");
            Ok(())
        })
        .await
        .unwrap();
        assert!(outcome.ok > 0, "{outcome:?}");
        assert!(outcome.ok_outside > 0, "the warm-up's successes are kept apart: {outcome:?}");
        assert!(outcome.errors > 0 && outcome.first_error.as_deref() == Some("every third operation fails"));
        assert_eq!(outcome.skipped, 0, "a closed loop never skips");
        assert_eq!(outcome.latency_us.len(), outcome.ok, "latencies of counted successes only");
        assert_eq!(outcome.units, outcome.ok, "one unit per ()");
        assert!(!outcome.counts().is_clean());
    }

    #[tokio::test]
    async fn rows_are_counted_as_units() {
        let outcome = closed_loop(2, Duration::ZERO, ms(50), |_, n| async move {
            tokio::time::sleep(ms(1)).await;
            Ok(Rows(if n % 2 == 0 { 7 } else { 8 }))
        })
        .await
        .unwrap();
        assert!(outcome.ok > 4, "{outcome:?}");
        assert!(outcome.units >= outcome.ok * 7 && outcome.units <= outcome.ok * 8, "{outcome:?}");
        assert!(outcome.units_per_second() > outcome.per_second());
    }

    #[tokio::test]
    async fn open_loop_issues_every_tick_when_slots_are_free() {
        let outcome = open_loop(500, 50, 8, |_| async { anyhow::Ok(()) }).await.unwrap();
        assert_eq!((outcome.ok, outcome.errors, outcome.skipped), (50, 0, 0), "{outcome:?}");
        assert!(outcome.window >= ms(100), "the window is at least the schedule: {:?}", outcome.window);
        assert!(outcome.counts().is_clean());
    }

    #[tokio::test]
    async fn open_loop_skips_ticks_that_find_every_slot_busy() {
        let outcome = open_loop(1_000, 40, 2, |_| async {
            tokio::time::sleep(ms(20)).await;
            anyhow::Ok(())
        })
        .await
        .unwrap();
        assert!(outcome.skipped > 0, "{outcome:?}");
        assert_eq!(outcome.ok + outcome.skipped, 40, "each tick is issued or skipped: {outcome:?}");
        assert_eq!(outcome.counts(), Counts { errors: 0, skipped: outcome.skipped });
        assert!(outcome.latency_ms(1.0) >= 20.0, "latency runs from the due tick: {outcome:?}");
    }

    #[tokio::test]
    async fn open_loop_counts_failures() {
        let calls = Arc::new(AtomicU32::new(0));
        let seen = calls.clone();
        let outcome = open_loop(1_000, 10, 10, move |n| {
            seen.fetch_add(1, Ordering::Relaxed);
            async move {
                anyhow::ensure!(n != 3, "tick 3 fails");
                Ok(())
            }
        })
        .await
        .unwrap();
        assert_eq!(calls.load(Ordering::Relaxed), 10);
        assert_eq!((outcome.ok, outcome.errors), (9, 1));
        assert_eq!(outcome.counts(), Counts { errors: 1, skipped: 0 });
    }

    #[test]
    fn counts_add_up() {
        let total: Counts = [Counts { errors: 1, skipped: 0 }, Counts { errors: 0, skipped: 2 }].into_iter().sum();
        assert_eq!(total, Counts { errors: 1, skipped: 2 });
        assert!(!total.is_clean());
        assert!(Counts::default().is_clean());
    }
}
