//! The clients of a fault run: deposits and charges over HTTP, round-robin
//! over the nodes, each operation retried with its idempotency key until it
//! gets a definite answer (or its retry budget runs out, counted). What was
//! acknowledged is kept to check against the event store afterwards.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Longest wait for one HTTP attempt.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest an operation is retried before it is given up (and counted).
pub const RETRY_BUDGET: Duration = Duration::from_secs(120);
/// Pause between attempts of one operation, at most.
const RETRY_PAUSE_MAX: Duration = Duration::from_secs(1);

/// A tenant the clients write to: its owner's session and members.
#[derive(Debug, Clone)]
pub struct Target {
    pub tenant: String,
    pub token: String,
    pub members: Vec<String>,
}

/// An acknowledged write (2xx).
#[derive(Debug, Clone)]
pub struct Acked {
    pub tenant: String,
    pub key: String,
    /// When the operation's first attempt was sent, and when it was acknowledged.
    pub started_at: Instant,
    pub acked_at: Instant,
}

#[derive(Debug, Default)]
pub struct Tally {
    pub acked: Mutex<Vec<Acked>>,
    /// Definite refusals (insufficient balance): (tenant, key).
    pub refused: Mutex<Vec<(String, String)>>,
    /// 500 answers: a transient failure must be a 503, never a 500.
    pub errors_5xx_internal: AtomicU64,
    /// 503 answers (retried).
    pub unavailable: AtomicU64,
    /// Connection refused, reset or timed out (retried).
    pub transport_errors: AtomicU64,
    /// Other unexpected answers (4xx other than refusals, 502, ...).
    pub unexpected: AtomicU64,
    /// Operations whose retry budget ran out: their outcome stayed unknown.
    pub given_up: AtomicU64,
}

impl Tally {
    pub fn acked_count(&self) -> usize {
        self.acked.lock().map(|a| a.len()).unwrap_or(0)
    }

    /// Seconds from `since` to the first acknowledgement of an operation
    /// started at or after `since` (None: none yet).
    pub fn first_success_after(&self, since: Instant) -> Option<f64> {
        let acked = self.acked.lock().ok()?;
        acked
            .iter()
            .filter(|a| a.started_at >= since)
            .map(|a| a.acked_at.saturating_duration_since(since).as_secs_f64())
            .min_by(|a, b| a.total_cmp(b))
    }
}

/// Runs `clients` loops until `stop` is set; each finishes its operation in
/// flight (retrying) before it returns. `rate_per_s`, when set, paces the
/// clients together to about that many operations per second.
pub struct Load {
    pub tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
    rate_per_s: Arc<AtomicU64>,
    handles: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(nodes: Vec<String>, targets: Vec<Target>, clients: usize, run_id: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder().timeout(ATTEMPT_TIMEOUT).pool_max_idle_per_host(clients).build()?;
        let tally = Arc::new(Tally::default());
        let stop = Arc::new(AtomicBool::new(false));
        let rate_per_s = Arc::new(AtomicU64::new(0));
        let nodes = Arc::new(nodes);
        let targets = Arc::new(targets);
        let handles = (0..clients)
            .map(|client| {
                let worker = Worker {
                    http: http.clone(),
                    nodes: nodes.clone(),
                    targets: targets.clone(),
                    tally: tally.clone(),
                    stop: stop.clone(),
                    rate_per_s: rate_per_s.clone(),
                    clients,
                    client,
                    run_id: run_id.to_owned(),
                };
                tokio::spawn(worker.run())
            })
            .collect();
        Ok(Self { tally, stop, rate_per_s, handles })
    }

    /// 0: as fast as the clients go.
    pub fn set_rate(&self, rate_per_s: u64) {
        self.rate_per_s.store(rate_per_s, Ordering::Relaxed);
    }

    pub async fn finish(self) -> Arc<Tally> {
        self.stop.store(true, Ordering::Relaxed);
        for handle in self.handles {
            let _ = handle.await;
        }
        self.tally
    }
}

struct Worker {
    http: reqwest::Client,
    nodes: Arc<Vec<String>>,
    targets: Arc<Vec<Target>>,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
    rate_per_s: Arc<AtomicU64>,
    clients: usize,
    client: usize,
    run_id: String,
}

enum Answer {
    Acked,
    Refused,
    Retry,
}

impl Worker {
    async fn run(self) {
        let mut n: u64 = 0;
        while !self.stop.load(Ordering::Relaxed) {
            let began = Instant::now();
            self.operation(n).await;
            n += 1;
            let rate = self.rate_per_s.load(Ordering::Relaxed);
            if rate > 0 {
                let interval = Duration::from_secs_f64(self.clients as f64 / rate as f64);
                if let Some(rest) = interval.checked_sub(began.elapsed()) {
                    tokio::time::sleep(rest).await;
                }
            }
        }
    }

    async fn operation(&self, n: u64) {
        let target = &self.targets[(self.client + n as usize) % self.targets.len()];
        let member = &target.members[(n as usize * 7 + self.client) % target.members.len()];
        // Three deposits to one charge; charges are small so most succeed.
        let (path, amount_fen) = if n % 4 == 3 {
            (format!("/admin/api/v1/members/{member}/cash/charges"), 1 + (n % 50) as i64)
        } else {
            (format!("/admin/api/v1/members/{member}/cash/deposits"), 100 + (n % 400) as i64)
        };
        let key = format!("fault-{}-{}-{n}", self.run_id, self.client);
        let body = json!({"amount_fen": amount_fen, "reason": "fault run"});
        let started_at = Instant::now();
        let mut attempt: u32 = 0;
        loop {
            let node = &self.nodes[(self.client + n as usize + attempt as usize) % self.nodes.len()];
            match self.attempt(node, &path, target, &key, &body).await {
                Answer::Acked => {
                    let acked = Acked { tenant: target.tenant.clone(), key, started_at, acked_at: Instant::now() };
                    if let Ok(mut all) = self.tally.acked.lock() {
                        all.push(acked);
                    }
                    return;
                }
                Answer::Refused => {
                    if let Ok(mut all) = self.tally.refused.lock() {
                        all.push((target.tenant.clone(), key));
                    }
                    return;
                }
                Answer::Retry => {}
            }
            if started_at.elapsed() > RETRY_BUDGET {
                self.tally.given_up.fetch_add(1, Ordering::Relaxed);
                return;
            }
            attempt = attempt.saturating_add(1);
            let pause = Duration::from_millis(50).saturating_mul(2u32.saturating_pow(attempt.min(8)));
            tokio::time::sleep(pause.min(RETRY_PAUSE_MAX)).await;
        }
    }

    async fn attempt(&self, node: &str, path: &str, target: &Target, key: &str, body: &Value) -> Answer {
        let sent = self
            .http
            .post(format!("{node}{path}"))
            .bearer_auth(&target.token)
            .header("Idempotency-Key", key)
            .json(body)
            .send()
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(_) => {
                self.tally.transport_errors.fetch_add(1, Ordering::Relaxed);
                return Answer::Retry;
            }
        };
        let status = response.status().as_u16();
        match status {
            200 | 201 => Answer::Acked,
            409 => {
                let body: Value = response.json().await.unwrap_or(Value::Null);
                if body["error"]["code"] == "insufficient_balance" {
                    Answer::Refused
                } else {
                    tracing::warn!(%status, %body, "unexpected conflict");
                    self.tally.unexpected.fetch_add(1, Ordering::Relaxed);
                    Answer::Retry
                }
            }
            500 => {
                self.tally.errors_5xx_internal.fetch_add(1, Ordering::Relaxed);
                Answer::Retry
            }
            503 => {
                self.tally.unavailable.fetch_add(1, Ordering::Relaxed);
                Answer::Retry
            }
            _ => {
                let text = response.text().await.unwrap_or_default();
                tracing::warn!(%status, body = %text.chars().take(300).collect::<String>(), "unexpected answer");
                self.tally.unexpected.fetch_add(1, Ordering::Relaxed);
                Answer::Retry
            }
        }
    }
}
