//! Ports: what the application layer needs from the outside world.
//! `infra` implements them over Postgres; tests may use the same real ones.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use cqrs_es::{AggregateError, EventEnvelope};
use serde::{Deserialize, Serialize};
use wxcm_domain::member::Member;
use wxcm_domain::payment::PaymentOrder;
use wxcm_domain::tenant::{SealedSecret, Tenant};
use wxcm_domain::{CardNumber, EventSourced, MemberId, OpenId, TenantId};

use crate::adapter::{Agg, HandleError};
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
/// `AggregateError::AggregateConflict`; the executor retries. An event the
/// aggregate refuses comes back as `UserError(HandleError::Invariant)` (decided
/// by this command) or as a boxed `repository::BrokenInvariant` (stored).
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
    ) -> Result<Vec<EventEnvelope<Agg<T>>>, AggregateError<HandleError<T::Error>>>;

    /// Current state and version, caught up with the store.
    async fn load_state(&self, aggregate_id: &str) -> Result<(T, u64), PortError>;

    /// State at most `max_age` old: what this process last read or committed
    /// if that is recent enough, else a fresh read. For settings read on hot
    /// paths, where a change made on another node may take `max_age` to show.
    async fn load_recent(&self, aggregate_id: &str, max_age: std::time::Duration) -> Result<(T, u64), PortError>;

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

/// `Debug` leaves out the password hash (an offline guessing target).
#[derive(Clone)]
pub struct AdminUser {
    pub tenant_id: TenantId,
    pub username: String,
    pub password_hash: String,
    pub role: Role,
    pub disabled: bool,
}

impl std::fmt::Debug for AdminUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminUser")
            .field("tenant_id", &self.tenant_id)
            .field("username", &self.username)
            .field("role", &self.role)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct AdminSession {
    pub tenant_id: TenantId,
    pub username: String,
    pub role: Role,
    pub expires_at: DateTime<Utc>,
}

/// An admin user as management shows it (never its password hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminUserView {
    pub username: String,
    pub role: Role,
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
}

/// A user-management write's idempotency: its key and the fingerprint of
/// what it asked (`admin_users::request_hash`, never a password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminRequest {
    pub tenant_id: TenantId,
    pub key: wxcm_domain::IdempotencyKey,
    pub request_hash: String,
}

/// Why a user-management write changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminRefusal {
    /// No such user in the tenant.
    NotFound,
    UsernameTaken,
    /// The tenant has `admin_users::ADMIN_USERS_MAX` users.
    TooManyUsers,
    /// The change would leave the tenant without an active owner.
    LastOwner,
    /// The password changed since the current password was verified.
    PasswordChanged,
    /// The key was used for a different request.
    KeyReused,
}

/// What a user-management write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminWrite {
    /// Done now: the user as the write left it.
    Applied(AdminUserView),
    /// Done before under the same key and request: the user as that write left it.
    Replayed(AdminUserView),
    Refused(AdminRefusal),
}

#[async_trait]
pub trait AdminDirectory: Send + Sync {
    /// Fails with `Ok(false)` when the username is taken.
    async fn create_user(&self, user: &AdminUser) -> Result<bool, PortError>;
    async fn find_user(&self, tenant: &TenantId, username: &str) -> Result<Option<AdminUser>, PortError>;
    /// Stores a session unless the user's password is no longer
    /// `verified_password_hash` or it was disabled meanwhile (`Ok(false)`): a
    /// login racing a reset or a disable never outlives it.
    async fn create_session(
        &self,
        token_hash: &[u8],
        session: &AdminSession,
        verified_password_hash: &str,
    ) -> Result<bool, PortError>;
    async fn find_session(&self, token_hash: &[u8]) -> Result<Option<AdminSession>, PortError>;
    async fn delete_session(&self, token_hash: &[u8]) -> Result<(), PortError>;
    /// The tenant's users ordered by username, at most `limit`.
    async fn list_users(&self, tenant: &TenantId, limit: u32) -> Result<Vec<AdminUserView>, PortError>;
    /// What an earlier write with this request's key answered: `Replayed`,
    /// `Refused(KeyReused)` for another request, `None` if the key is unused.
    async fn find_request(&self, request: &AdminRequest) -> Result<Option<AdminWrite>, PortError>;
    /// In one transaction: claims the request's key (a used key replays or is
    /// refused), refuses at `users_max` users or a taken name, inserts `user`.
    async fn add_user(&self, user: &AdminUser, request: &AdminRequest, users_max: u32)
        -> Result<AdminWrite, PortError>;
    /// In one transaction: claims the request's key, locks the tenant's active
    /// owners and the user, applies `admin_users::decide` and, when it says so,
    /// deletes every session of the user.
    async fn change_user(
        &self,
        request: &AdminRequest,
        username: &str,
        change: &crate::admin_users::AdminUserChange,
    ) -> Result<AdminWrite, PortError>;
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
    /// Failed runs so far.
    pub attempts: i32,
}

#[async_trait]
pub trait DueWork: Send + Sync {
    /// Items due by `now` (a failed item: by its retry time), oldest first.
    async fn due(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<DueItem>, PortError>;
    async fn done(&self, id: i64) -> Result<(), PortError>;
    /// Records a failed run; the item is due again at `retry_at`.
    async fn failed(&self, id: i64, error: &str, retry_at: DateTime<Utc>) -> Result<(), PortError>;
}

/// Encrypts secrets at rest (key from the environment).
pub trait SecretSealer: Send + Sync {
    fn seal(&self, plaintext: &str) -> Result<SealedSecret, PortError>;
    fn open(&self, sealed: &SealedSecret) -> Result<String, PortError>;
    /// HMAC-SHA256 of `data` under a key derived from the secret key for
    /// `purpose` (member card codes): what only this deployment can produce.
    fn mac(&self, purpose: &str, data: &[u8]) -> Result<[u8; 32], PortError> {
        let _ = (purpose, data);
        Err(PortError::msg("this sealer has no key to sign with"))
    }
}

/// Everything that lives in one shard database.
pub struct ShardServices {
    pub name: String,
    pub members: Executor<Member>,
    pub tenants: Executor<Tenant>,
    pub payments: Executor<PaymentOrder>,
    /// Shared with `coupon_issues`, which decides issues outside the executor.
    pub coupon_templates: Arc<Executor<wxcm_domain::coupon::CouponTemplate>>,
    pub coupons: Executor<wxcm_domain::coupon::Coupon>,
    pub coupon_store: Arc<dyn crate::coupons::CouponStore>,
    pub coupon_issues: crate::coupons::claims::IssueLanes,
    pub coupon_dispatches: Arc<dyn crate::coupons::dispatch::DispatchStore>,
    pub products: Executor<wxcm_domain::mall::Product>,
    pub mall_orders: Executor<wxcm_domain::mall::MallOrder>,
    pub mall_store: Arc<dyn crate::mall::MallStore>,
    /// Campaigns (one stream each) and their sealed seeds and shake index.
    pub campaigns: Arc<Executor<wxcm_domain::campaign::Campaign>>,
    pub campaign_store: Arc<dyn crate::campaigns::CampaignStore>,
    /// Member shakes, batched per campaign (shares `campaigns`).
    pub shake_lanes: crate::campaigns::lanes::ShakeLanes,
    /// The voting campaigns' ranking read model (`rm_vote_items`).
    pub vote_ranking: Arc<dyn crate::campaigns::voting::VoteRanking>,
    /// One stream per distributor (`DistributorId::for_member`).
    pub distributors: Executor<wxcm_domain::distribution::Distributor>,
    pub distribution: Arc<dyn crate::distribution::DistributionStore>,
    /// One commission account stream per distributor (`CommissionAccountId::for_distributor`).
    pub commission_accounts: Executor<wxcm_domain::distribution::CommissionAccount>,
    /// Commission settings and the `commissions` / `commission_withdrawals` read models.
    pub commissions: Arc<dyn crate::commissions::CommissionStore>,
    pub event_log: Arc<dyn EventLog>,
    pub directory: Arc<dyn MemberDirectory>,
    pub cards: Arc<dyn CardNumberAllocator>,
    pub admins: Arc<dyn AdminDirectory>,
    pub due_work: Arc<dyn DueWork>,
    pub read_models: Arc<dyn ReadModels>,
    /// Checks one member's stream (hash chain, replay, stated balances) for the console.
    pub member_audit: Arc<dyn MemberAudit>,
    /// Recomputes one campaign's draws as `wxcm audit draw` does, for the console.
    pub draw_audit: Arc<dyn DrawAudit>,
    pub wechat: Arc<dyn crate::wechat::WechatStore>,
    /// Payment tables (notifications, platform keys, order index, member sessions).
    pub pay: Arc<dyn crate::pay_flows::PayStore>,
    /// The operation log of admin and staff writes.
    pub oplog: Arc<dyn crate::oplog::OperationLog>,
    /// Answers of writes idempotent by key that are not events.
    pub keyed_requests: Arc<dyn crate::keyed_requests::KeyedRequests>,
}

/// Events of a member stream the console's audit reads at most; longer streams
/// are audited with `wxcm audit member`, which has no such bound.
pub const MEMBER_AUDIT_EVENTS_MAX: usize = 100_000;

/// One finding of a stream audit: the row it concerns, a stable code, the
/// domain rule an event breaks when replay refuses it, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditFinding {
    pub sequence: Option<i64>,
    pub code: String,
    pub rule: Option<String>,
    pub message: String,
}

/// A member stream audited: `ok` when the hash chain is intact, every event
/// replays into the member and every balance it states adds up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberAuditVerdict {
    pub ok: bool,
    pub events: u64,
    pub head_sequence: Option<i64>,
    /// Hex of the last event's hash.
    pub head_hash: Option<String>,
    pub findings: Vec<AuditFinding>,
}

#[derive(Debug, thiserror::Error)]
pub enum MemberAuditError {
    /// No event of the member in the tenant.
    #[error("member not found")]
    NotFound,
    #[error("the member has more than {MEMBER_AUDIT_EVENTS_MAX} events: use `wxcm audit member`")]
    TooLong,
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error(transparent)]
    Port(#[from] PortError),
}

/// The same checks as `wxcm audit member`, for one member of one tenant.
#[async_trait]
pub trait MemberAudit: Send + Sync {
    async fn audit_member(&self, tenant: &TenantId, member: &MemberId) -> Result<MemberAuditVerdict, MemberAuditError>;
}

/// Events of a campaign stream the console's draw audit reads at most; longer
/// streams are audited with `wxcm audit draw`, which has no such bound.
pub const DRAW_AUDIT_EVENTS_MAX: usize = 200_000;

/// One disagreement between a campaign event and its recomputation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrawDifference {
    /// The event's sequence (`None`: the campaign as a whole).
    pub sequence: Option<i64>,
    pub detail: String,
}

/// A campaign's draws recomputed from its events (`schemas/draws/SPEC.md`):
/// `ok` when every shake and period draw gives what its event states.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrawAuditVerdict {
    pub ok: bool,
    /// A shake lottery's seed is revealed when it ends: before that its
    /// shakes cannot be recomputed (`ok` is false with a difference saying so).
    pub revealed: bool,
    pub shakes_checked: u64,
    pub periods_checked: u64,
    pub differences: Vec<DrawDifference>,
}

#[derive(Debug, thiserror::Error)]
pub enum DrawAuditError {
    /// No event of the campaign in the tenant.
    #[error("campaign not found")]
    NotFound,
    /// `period` was given and the campaign has no draw of that period.
    #[error("period {0} was not drawn")]
    PeriodNotDrawn(u32),
    #[error("the campaign has more than {DRAW_AUDIT_EVENTS_MAX} events: use `wxcm audit draw`")]
    TooLong,
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error(transparent)]
    Port(#[from] PortError),
}

/// The same checks as `wxcm audit draw [--period P]`, for one campaign of one tenant.
#[async_trait]
pub trait DrawAudit: Send + Sync {
    async fn audit_draws(
        &self,
        tenant: &TenantId,
        campaign: wxcm_domain::campaign::CampaignId,
        period: Option<u32>,
    ) -> Result<DrawAuditVerdict, DrawAuditError>;
}

/// Members per page of a member search.
pub const MEMBER_PAGE_MAX: u32 = 200;
/// Days a daily-operations report may cover (`from..=to`).
pub const REPORT_DAYS_MAX: i64 = 366;
/// Lines per page of a member's ledger from the read model.
pub const LEDGER_PAGE_MAX: u32 = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberSortKey {
    RegisteredAt,
    Points,
    Balance,
}

impl MemberSortKey {
    fn tag(self) -> char {
        match self {
            MemberSortKey::RegisteredAt => 'r',
            MemberSortKey::Points => 'p',
            MemberSortKey::Balance => 'b',
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortOrder {
    Asc,
    Desc,
}

/// Where a member page ends: the sort value of its last member (microseconds
/// since the epoch for `registered_at`) and its id, which breaks ties.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberCursor {
    pub sort: MemberSortKey,
    pub key: i64,
    pub member_id: MemberId,
}

impl MemberCursor {
    /// Opaque text for clients: `<sort tag>.<key>.<member id>`.
    pub fn encode(&self) -> String {
        format!("{}.{}.{}", self.sort.tag(), self.key, self.member_id)
    }

    /// Parses a cursor made by `encode` for the same sort key, and only such
    /// text: other spellings of the same values (`+5`, `007`, an uppercase or
    /// unhyphenated id) are refused, so the cursor's documented pattern is exact.
    pub fn parse(text: &str, sort: MemberSortKey) -> Option<Self> {
        let mut parts = text.splitn(3, '.');
        let tag = parts.next()?;
        let key = parts.next()?.parse().ok()?;
        let member_id = MemberId::parse(parts.next()?).ok()?;
        let cursor = (tag.len() == 1 && tag.starts_with(sort.tag())).then_some(Self { sort, key, member_id })?;
        (cursor.encode() == text).then_some(cursor)
    }
}

/// Filters of a member search; every present one must hold. Ranges are inclusive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberFilter {
    pub card_no: Option<CardNumber>,
    pub openid: Option<OpenId>,
    /// A valid card level name.
    pub card_level: Option<String>,
    /// A registration source name (`subscribe`, `oauth`, `staff`).
    pub source: Option<String>,
    /// Following the official account now (or not).
    pub followed: Option<bool>,
    /// A follow source name (`scene_qr`, `referral`, `other`).
    pub follow_source: Option<String>,
    pub points_min: Option<i64>,
    pub points_max: Option<i64>,
    pub balance_fen_min: Option<i64>,
    pub balance_fen_max: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSearch {
    pub filter: MemberFilter,
    pub sort: MemberSortKey,
    pub order: SortOrder,
    /// 1..=`MEMBER_PAGE_MAX`.
    pub limit: u32,
    /// The page starts after this member (from the previous page's `next_after`).
    pub after: Option<MemberCursor>,
}

/// A row of `rm_members`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRow {
    pub member_id: MemberId,
    pub card_no: String,
    pub openid: Option<String>,
    pub card_level: String,
    pub source: String,
    pub registered_at: DateTime<Utc>,
    pub points: i64,
    pub held_points: i64,
    pub balance_fen: i64,
    pub lifetime_points: i64,
    pub version: i64,
    pub followed: bool,
    /// `scene_qr`, `referral` or `other`; none when the member never followed.
    pub follow_source: Option<String>,
    pub scene: Option<String>,
    pub referrer_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberPage {
    pub members: Vec<MemberRow>,
    /// Present when more members may follow.
    pub next_after: Option<MemberCursor>,
}

/// One counter of `rm_daily_ops`: a merchant day (UTC+8), a metric, a dimension
/// (`""` when the metric has none) and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DailyOpsRow {
    pub day: NaiveDate,
    pub metric: String,
    pub dimension: String,
    pub value: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DailyOpsReport {
    /// Non-zero counters of the range, by day, metric, dimension.
    pub rows: Vec<DailyOpsRow>,
    /// Members per card level at the end of the range's last day, by level.
    pub members_by_card_level: Vec<(String, i64)>,
}

/// A line of `rm_member_ledger`: an event that moved points or cash, with the
/// member's figures after it (all three, whichever moved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerLineRow {
    pub sequence: i64,
    pub event_id: uuid::Uuid,
    pub event_type: String,
    pub recorded_at: DateTime<Utc>,
    pub points_delta: i64,
    pub held_delta: i64,
    pub cash_delta_fen: i64,
    pub points_after: i64,
    pub held_after: i64,
    pub balance_after_fen: i64,
    pub actor: String,
    pub reason: String,
    pub reference: Option<String>,
    pub idempotency_key: String,
}

/// One page of a member's ledger from the read model, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerLinePage {
    pub lines: Vec<LedgerLineRow>,
    /// Present when more lines may follow (pass as `after`).
    pub next_after: Option<i64>,
    /// The member's last event the read model has applied (0: not even the
    /// registration yet). The page holds no line past it, so a client can
    /// compare it with the member's version to see how stale the page is.
    pub projected_through_sequence: i64,
}

/// Coupons of one template per state, from `rm_coupons`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CouponCounts {
    pub active: i64,
    /// Held by mall orders awaiting payment.
    pub held: i64,
    pub redeemed: i64,
    pub voided: i64,
    pub expired: i64,
}

/// Coupons per page of a template's coupon list.
pub const COUPON_PAGE_MAX: u32 = 200;

/// A template's coupons in serial order, after `after_serial`, optionally in one state.
#[derive(Debug, Clone)]
pub struct CouponSearch {
    pub template_id: wxcm_domain::coupon::TemplateId,
    pub state: Option<wxcm_domain::coupon::CouponState>,
    pub after_serial: Option<u64>,
    pub limit: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CouponRow {
    pub coupon_id: String,
    pub member_id: String,
    pub serial: i64,
    pub state: String,
    pub channel: String,
    pub issued_at: DateTime<Utc>,
    pub valid_until: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub ended_by: Option<String>,
    pub store: Option<String>,
}

/// Queries over the shard's read models (eventually consistent with the events).
#[async_trait]
pub trait ReadModels: Send + Sync {
    async fn search_members(&self, tenant: &TenantId, search: &MemberSearch) -> Result<MemberPage, PortError>;
    /// The member's ledger lines with `sequence > after`, at most `limit`
    /// (1..=`LEDGER_PAGE_MAX`). Lines of another tenant's member are never returned.
    async fn member_ledger(
        &self,
        tenant: &TenantId,
        member_id: MemberId,
        after: i64,
        limit: u32,
    ) -> Result<LedgerLinePage, PortError>;
    /// Counters of `from..=to` (the caller bounds the range by `REPORT_DAYS_MAX`).
    async fn daily_ops(&self, tenant: &TenantId, from: NaiveDate, to: NaiveDate) -> Result<DailyOpsReport, PortError>;
    /// One campaign's daily counters (`campaign_*` metrics, dimension the campaign), by day.
    async fn campaign_days(
        &self,
        tenant: &TenantId,
        campaign: wxcm_domain::campaign::CampaignId,
    ) -> Result<Vec<DailyOpsRow>, PortError>;
    async fn coupon_counts(
        &self,
        tenant: &TenantId,
        template: wxcm_domain::coupon::TemplateId,
    ) -> Result<CouponCounts, PortError>;
    /// One page; `limit` at most [`COUPON_PAGE_MAX`].
    async fn search_coupons(&self, tenant: &TenantId, search: &CouponSearch) -> Result<Vec<CouponRow>, PortError>;
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
    /// The shard holding cluster-wide registries (appid claims): the default shard.
    fn registry(&self) -> Result<Arc<ShardServices>, RouteError>;
}

/// Operator-configured limits (never above the domain's hard ceilings).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Limits {
    pub amount_fen_max: i64,
    pub points_max: i64,
    /// Minutes an unpaid mall order holds its stock and points (1..=2880).
    #[serde(default = "default_pay_window")]
    pub mall_pay_window_minutes: i64,
}

fn default_pay_window() -> i64 {
    crate::mall::PAY_WINDOW_DEFAULT_MINUTES
}

impl Default for Limits {
    fn default() -> Self {
        Self { amount_fen_max: 5_000_000, points_max: 10_000_000, mall_pay_window_minutes: default_pay_window() }
    }
}

/// The application: what every edge (HTTP, CLI, scheduler) is given.
pub struct App {
    pub router: Arc<dyn ShardRouter>,
    pub clock: Arc<dyn Clock>,
    pub sealer: Arc<dyn SecretSealer>,
    pub limits: Limits,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_cursors_round_trip_for_their_sort_only() {
        let cursor = MemberCursor { sort: MemberSortKey::Points, key: -5, member_id: MemberId::new_random() };
        let text = cursor.encode();
        assert_eq!(MemberCursor::parse(&text, MemberSortKey::Points), Some(cursor));
        assert_eq!(MemberCursor::parse(&text, MemberSortKey::Balance), None);
        assert_eq!(MemberCursor::parse("p.x.y", MemberSortKey::Points), None);
        assert_eq!(MemberCursor::parse("pp.1.00000000-0000-0000-0000-000000000000", MemberSortKey::Points), None);
        assert_eq!(MemberCursor::parse("", MemberSortKey::Points), None);
        // Only the spelling `encode` makes.
        let id = "0b8e1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d";
        assert!(MemberCursor::parse(&format!("p.5.{id}"), MemberSortKey::Points).is_some());
        for other in [
            format!("p.+5.{id}"),
            format!("p.05.{id}"),
            format!("p.5.{}", id.to_uppercase()),
            format!("p.5.{}", id.replace('-', "")),
        ] {
            assert_eq!(MemberCursor::parse(&other, MemberSortKey::Points), None, "{other}");
        }
    }
}
