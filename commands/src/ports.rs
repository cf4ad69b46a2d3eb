//! Ports: what the application layer needs from the outside world.
//! `infra` implements them over Postgres; tests may use the same real ones.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_es::{AggregateError, EventEnvelope};
use serde::{Deserialize, Serialize};
use wxcm_domain::member::Member;
use wxcm_domain::tenant::{SealedSecret, Tenant};
use wxcm_domain::{CardNumber, EventSourced, MemberId, OpenId, TenantId};

use crate::adapter::Agg;
use crate::executor::Executor;

pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Errors of the infrastructure, opaque to the application.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PortError(pub Box<dyn std::error::Error + Send + Sync>);

impl PortError {
    pub fn new(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self(Box::new(e))
    }
    pub fn msg(s: impl Into<String>) -> Self {
        Self(s.into().into())
    }
}

/// One attempt of a command against the event store (a cqrs-es `EventStore`
/// behind it): load, handle, commit. Conflicts come back as
/// `AggregateError::AggregateConflict`; the executor retries.
#[async_trait]
pub trait AggregateRepository<T: EventSourced>: Send + Sync
where
    T::Command: Send,
{
    async fn execute_once(
        &self,
        aggregate_id: &str,
        command: T::Command,
        now: DateTime<Utc>,
        metadata: HashMap<String, String>,
    ) -> Result<Vec<EventEnvelope<Agg<T>>>, AggregateError<T::Error>>;

    /// Current state and version, caught up with the store.
    async fn load_state(&self, aggregate_id: &str) -> Result<(T, u64), PortError>;

    /// Drops any cached state (after a conflict).
    fn invalidate(&self, aggregate_id: &str);
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub request_hash: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub first_sequence: u64,
    pub last_sequence: u64,
}

/// A stored event as the log holds it.
#[derive(Debug, Clone)]
pub struct LoggedEvent {
    pub sequence: u64,
    pub event_id: uuid::Uuid,
    pub recorded_at: DateTime<Utc>,
    pub event_type: String,
    pub payload: serde_json::Value,
    pub metadata: serde_json::Value,
}

#[async_trait]
pub trait EventLog: Send + Sync {
    async fn find_idempotency(&self, tenant: &TenantId, key: &str) -> Result<Option<IdempotencyRecord>, PortError>;
    /// Events of one stream with `from <= sequence <= to`, ascending, at most `limit`.
    async fn read_range(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        from: u64,
        to: u64,
        limit: u32,
    ) -> Result<Vec<LoggedEvent>, PortError>;
    /// The tenant a stream belongs to, if it exists.
    async fn stream_tenant(&self, aggregate_type: &str, aggregate_id: &str) -> Result<Option<String>, PortError>;
    /// Aggregate ids of one type across all tenants of this shard (paged by id).
    async fn all_stream_ids(
        &self,
        aggregate_type: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, PortError>;
    /// Aggregate ids of one type that belong to the tenant (paged by id).
    async fn stream_ids(
        &self,
        tenant: &TenantId,
        aggregate_type: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, PortError>;
}

#[async_trait]
pub trait MemberDirectory: Send + Sync {
    async fn by_card(&self, tenant: &TenantId, card: &CardNumber) -> Result<Option<MemberId>, PortError>;
    async fn by_openid(&self, tenant: &TenantId, openid: &OpenId) -> Result<Option<MemberId>, PortError>;
}

#[async_trait]
pub trait CardNumberAllocator: Send + Sync {
    async fn next_serial(&self) -> Result<u64, PortError>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Owner,
    Manager,
    Staff,
    Auditor,
}

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Manager => "manager",
            Role::Staff => "staff",
            Role::Auditor => "auditor",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "owner" => Some(Role::Owner),
            "manager" => Some(Role::Manager),
            "staff" => Some(Role::Staff),
            "auditor" => Some(Role::Auditor),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct AdminUser {
    pub tenant_id: TenantId,
    pub username: String,
    pub password_hash: String,
    pub role: Role,
    pub disabled: bool,
}

#[derive(Debug, Clone)]
pub struct AdminSession {
    pub tenant_id: TenantId,
    pub username: String,
    pub role: Role,
    pub expires_at: DateTime<Utc>,
}

#[async_trait]
pub trait AdminDirectory: Send + Sync {
    /// Fails with `Ok(false)` when the username is taken.
    async fn create_user(&self, user: &AdminUser) -> Result<bool, PortError>;
    async fn find_user(&self, tenant: &TenantId, username: &str) -> Result<Option<AdminUser>, PortError>;
    async fn create_session(&self, token_hash: &[u8], session: &AdminSession) -> Result<(), PortError>;
    async fn find_session(&self, token_hash: &[u8]) -> Result<Option<AdminSession>, PortError>;
    async fn delete_session(&self, token_hash: &[u8]) -> Result<(), PortError>;
}

/// A due piece of scheduled work (written in the same transaction as the
/// event that made it due, so none is ever lost).
#[derive(Debug, Clone)]
pub struct DueItem {
    pub id: i64,
    pub tenant_id: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub kind: String,
    pub due_at: DateTime<Utc>,
}

#[async_trait]
pub trait DueWork: Send + Sync {
    async fn due(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<DueItem>, PortError>;
    async fn done(&self, id: i64) -> Result<(), PortError>;
}

/// Encrypts secrets at rest (key from the environment).
pub trait SecretSealer: Send + Sync {
    fn seal(&self, plaintext: &str) -> Result<SealedSecret, PortError>;
    fn open(&self, sealed: &SealedSecret) -> Result<String, PortError>;
}

/// Everything that lives in one shard database.
pub struct ShardServices {
    pub name: String,
    pub members: Executor<Member>,
    pub tenants: Executor<Tenant>,
    pub event_log: Arc<dyn EventLog>,
    pub directory: Arc<dyn MemberDirectory>,
    pub cards: Arc<dyn CardNumberAllocator>,
    pub admins: Arc<dyn AdminDirectory>,
    pub due_work: Arc<dyn DueWork>,
}

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("tenant {0} has no shard")]
    NoShard(String),
}

/// Tenant → shard, from configuration.
pub trait ShardRouter: Send + Sync {
    fn route(&self, tenant: &TenantId) -> Result<Arc<ShardServices>, RouteError>;
    fn shards(&self) -> Vec<Arc<ShardServices>>;
}

/// Operator-configured limits (never above the domain's hard ceilings).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Limits {
    pub amount_fen_max: i64,
    pub points_max: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Self { amount_fen_max: 5_000_000, points_max: 10_000_000 }
    }
}

/// The application: what every edge (HTTP, CLI, scheduler) is given.
pub struct App {
    pub router: Arc<dyn ShardRouter>,
    pub clock: Arc<dyn Clock>,
    pub sealer: Arc<dyn SecretSealer>,
    pub limits: Limits,
}
