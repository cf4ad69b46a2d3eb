//! The scheduler role: per shard, the instance holding the shard's advisory
//! lock runs due work; the others wait and take over when its session dies.

use std::sync::Arc;
use std::time::Duration;

use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::watch;
use tracing::{info, warn};
use wxcm_commands::health::PartHealth;
use wxcm_commands::pay_port::{PayAccess, PayGateway};
use wxcm_commands::ports::{App, ShardServices};
use wxcm_commands::scheduler::{self, StepReport};

/// Advisory lock key of the scheduler on a shard database.
pub const SCHEDULER_LOCK_KEY: i64 = 0x7778_636d_5f73_6368; // "wxcm_sch"

/// One shard's scheduler instance. `tick` is the step function tests drive.
pub struct ShardScheduler {
    app: Arc<App>,
    services: Arc<ShardServices>,
    pool: PgPool,
    leader: Option<PgConnection>,
    /// WeChat Pay, for expired payment orders (queried before they are closed)
    /// and mall order refunds, with where its notifications reach this server.
    pay: Option<(Arc<dyn PayGateway>, String)>,
    /// Where each tick is reported (`/readyz`, `/metrics`).
    health: Option<PartHealth>,
}

impl ShardScheduler {
    pub fn new(app: Arc<App>, services: Arc<ShardServices>, pool: PgPool) -> Self {
        Self { app, services, pool, leader: None, pay: None, health: None }
    }

    /// Lets the scheduler query and close expired payment orders at WeChat Pay
    /// and ask it for mall order refunds (notified at `notify_base_url`).
    pub fn with_pay(mut self, pay: Arc<dyn PayGateway>, notify_base_url: impl Into<String>) -> Self {
        self.pay = Some((pay, notify_base_url.into()));
        self
    }

    /// Reports every tick to `health`.
    pub fn with_health(mut self, health: PartHealth) -> Self {
        self.health = Some(health);
        self
    }

    pub fn shard_name(&self) -> String {
        self.services.name.to_string()
    }

    pub fn is_leader(&self) -> bool {
        self.leader.is_some()
    }

    /// Keeps or tries to take leadership, then runs one step if leader.
    pub async fn tick(&mut self) -> Result<Option<StepReport>, sqlx::Error> {
        if let Some(conn) = self.leader.as_mut() {
            // The lock lives as long as this session; a dead session means lost leadership.
            if sqlx::query("SELECT 1").execute(&mut *conn).await.is_err() {
                warn!(shard = %self.services.name, "scheduler lost its lock session");
                self.leader = None;
            }
        }
        if self.leader.is_none() {
            let mut conn = self.pool.acquire().await?;
            let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(SCHEDULER_LOCK_KEY)
                .fetch_one(&mut *conn)
                .await?;
            if !got {
                self.report(|h| h.healthy(Some(false), "standby"));
                return Ok(None);
            }
            info!(shard = %self.services.name, "scheduler is leader");
            // Detached: the session must never go back to the pool holding the lock;
            // dropping it closes it, which releases the lock.
            self.leader = Some(conn.detach());
        }
        let pay = self.pay.as_ref().map(|(gateway, notify_base_url)| PayAccess {
            gateway: gateway.as_ref(),
            notify_base_url: notify_base_url.as_str(),
        });
        match scheduler::step_with_pay(&self.app, &self.services, pay).await {
            Ok(report) => {
                self.report(|h| h.healthy(Some(true), "leader: running due work"));
                Ok(Some(report))
            }
            Err(e) => {
                warn!(shard = %self.services.name, error = %e, "scheduler step failed");
                self.report(|h| h.failing(Some(true), &format!("due work failed: {e}")));
                Ok(Some(StepReport::default()))
            }
        }
    }

    fn report(&self, f: impl FnOnce(&PartHealth)) {
        if let Some(health) = &self.health {
            f(health);
        }
    }

    /// Gives up leadership (closing the session releases the lock).
    pub async fn resign(&mut self) {
        if let Some(conn) = self.leader.take() {
            let _ = conn.close().await;
        }
    }

    pub async fn run(mut self, interval: Duration, mut shutdown: watch::Receiver<bool>) {
        loop {
            if let Err(e) = self.tick().await {
                warn!(shard = %self.services.name, error = %e, "scheduler tick failed");
                let leader = Some(self.is_leader());
                self.report(|h| h.failing(leader, &format!("database: {e}")));
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => break,
            }
        }
        self.resign().await;
    }
}
