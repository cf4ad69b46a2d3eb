//! Postgres implementations of the application's ports for one shard.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use wxcm_commands::admin_users::{self, AdminUserChange};
use wxcm_commands::ports::{
    AdminDirectory, AdminRefusal, AdminRequest, AdminSession, AdminUser, AdminUserView, AdminWrite,
    CardNumberAllocator, DueItem, DueWork, EventLog, IdempotencyRecord, LoggedEvent, MemberDirectory, PortError, Role,
};
use wxcm_domain::{CardNumber, MemberId, OpenId, TenantId};

/// Card serials taken from the shard's sequence per round trip. Registrations
/// use them from memory; a restart leaves at most this many unused (card
/// numbers have gaps, as a sequence's have after rollbacks anyway).
pub const CARD_SERIALS_PER_FETCH: i64 = 32;

pub struct PgShardPorts {
    pool: PgPool,
    /// Serials fetched and not yet handed out, highest first. Held across the
    /// fetch, so concurrent registrations wait for one block instead of each
    /// fetching (and leaving unused) their own.
    card_serials: tokio::sync::Mutex<Vec<u64>>,
}

impl PgShardPorts {
    pub fn new(pool: PgPool) -> Self {
        Self { pool, card_serials: tokio::sync::Mutex::new(Vec::new()) }
    }
}

fn port(e: sqlx::Error) -> PortError {
    PortError::new(e)
}

#[async_trait]
impl EventLog for PgShardPorts {
    async fn find_idempotency(&self, tenant: &TenantId, key: &str) -> Result<Option<IdempotencyRecord>, PortError> {
        let row: Option<(String, String, String, i64, i64)> = sqlx::query_as(
            "SELECT request_hash, aggregate_type, aggregate_id, first_sequence, last_sequence
               FROM idempotency_keys WHERE tenant_id = $1 AND idempotency_key = $2",
        )
        .bind(tenant.as_str())
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(port)?;
        Ok(row.map(|(request_hash, aggregate_type, aggregate_id, first, last)| IdempotencyRecord {
            request_hash,
            aggregate_type,
            aggregate_id,
            first_sequence: first as u64,
            last_sequence: last as u64,
        }))
    }

    async fn read_range(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        from: u64,
        to: u64,
        limit: u32,
    ) -> Result<Vec<LoggedEvent>, PortError> {
        type Row = (i64, uuid::Uuid, DateTime<Utc>, String, serde_json::Value, serde_json::Value);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT sequence, event_id, recorded_at, event_type, payload, metadata FROM events
              WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence BETWEEN $3 AND $4
              ORDER BY sequence LIMIT $5",
        )
        .bind(aggregate_type)
        .bind(aggregate_id)
        .bind(i64::try_from(from).unwrap_or(i64::MAX))
        .bind(i64::try_from(to).unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(port)?;
        Ok(rows
            .into_iter()
            .map(|(sequence, event_id, recorded_at, event_type, payload, metadata)| LoggedEvent {
                sequence: sequence as u64,
                event_id,
                recorded_at,
                event_type,
                payload,
                metadata,
            })
            .collect())
    }

    async fn stream_tenant(&self, aggregate_type: &str, aggregate_id: &str) -> Result<Option<String>, PortError> {
        sqlx::query_scalar(
            "SELECT tenant_id FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = 1",
        )
        .bind(aggregate_type)
        .bind(aggregate_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(port)
    }

    async fn all_stream_ids(
        &self,
        aggregate_type: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, PortError> {
        sqlx::query_scalar(
            "SELECT aggregate_id FROM events WHERE aggregate_type = $1 AND sequence = 1 AND aggregate_id > $2
              ORDER BY aggregate_id LIMIT $3",
        )
        .bind(aggregate_type)
        .bind(after.unwrap_or(""))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(port)
    }

    async fn stream_ids(
        &self,
        tenant: &TenantId,
        aggregate_type: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, PortError> {
        sqlx::query_scalar(
            "SELECT aggregate_id FROM events
              WHERE tenant_id = $1 AND aggregate_type = $2 AND sequence = 1 AND aggregate_id > $3
              ORDER BY aggregate_id LIMIT $4",
        )
        .bind(tenant.as_str())
        .bind(aggregate_type)
        .bind(after.unwrap_or(""))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(port)
    }
}

impl PgShardPorts {
    /// One member-identity lookup; `sql` selects member_id by tenant ($1) and one key ($2).
    async fn member_by(&self, sql: &'static str, tenant: &TenantId, key: &str) -> Result<Option<MemberId>, PortError> {
        let id: Option<String> =
            sqlx::query_scalar(sql).bind(tenant.as_str()).bind(key).fetch_optional(&self.pool).await.map_err(port)?;
        id.map(|s| MemberId::parse(&s).map_err(PortError::new)).transpose()
    }
}

#[async_trait]
impl MemberDirectory for PgShardPorts {
    async fn by_card(&self, tenant: &TenantId, card: &CardNumber) -> Result<Option<MemberId>, PortError> {
        self.member_by(
            "SELECT member_id FROM member_identities WHERE tenant_id = $1 AND card_no = $2",
            tenant,
            card.as_str(),
        )
        .await
    }

    async fn by_openid(&self, tenant: &TenantId, openid: &OpenId) -> Result<Option<MemberId>, PortError> {
        self.member_by(
            "SELECT member_id FROM member_identities WHERE tenant_id = $1 AND openid = $2",
            tenant,
            openid.as_str(),
        )
        .await
    }
}

#[async_trait]
impl CardNumberAllocator for PgShardPorts {
    async fn next_serial(&self) -> Result<u64, PortError> {
        let mut spare = self.card_serials.lock().await;
        if let Some(serial) = spare.pop() {
            return Ok(serial);
        }
        let block: Vec<i64> = sqlx::query_scalar("SELECT nextval('card_serial') FROM generate_series(1, $1)")
            .bind(CARD_SERIALS_PER_FETCH)
            .fetch_all(&self.pool)
            .await
            .map_err(port)?;
        let mut block =
            block.into_iter().map(u64::try_from).collect::<Result<Vec<u64>, _>>().map_err(PortError::new)?;
        block.sort_unstable_by(|a, b| b.cmp(a));
        let first = block.pop().ok_or_else(|| PortError::msg("card_serial gave no value"))?;
        *spare = block;
        Ok(first)
    }
}

#[async_trait]
impl AdminDirectory for PgShardPorts {
    async fn create_user(&self, user: &AdminUser) -> Result<bool, PortError> {
        let done = sqlx::query(
            "INSERT INTO admin_users (tenant_id, username, password_hash, role, disabled) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT DO NOTHING",
        )
        .bind(user.tenant_id.as_str())
        .bind(&user.username)
        .bind(&user.password_hash)
        .bind(user.role.as_str())
        .bind(user.disabled)
        .execute(&self.pool)
        .await
        .map_err(port)?;
        Ok(done.rows_affected() == 1)
    }

    async fn find_user(&self, tenant: &TenantId, username: &str) -> Result<Option<AdminUser>, PortError> {
        let row: Option<(String, String, bool)> = sqlx::query_as(
            "SELECT password_hash, role, disabled FROM admin_users WHERE tenant_id = $1 AND username = $2",
        )
        .bind(tenant.as_str())
        .bind(username)
        .fetch_optional(&self.pool)
        .await
        .map_err(port)?;
        let Some((password_hash, role, disabled)) = row else { return Ok(None) };
        let role = Role::parse(&role).ok_or_else(|| PortError::msg(format!("unknown role {role}")))?;
        Ok(Some(AdminUser { tenant_id: tenant.clone(), username: username.to_owned(), password_hash, role, disabled }))
    }

    async fn create_session(
        &self,
        token_hash: &[u8],
        session: &AdminSession,
        verified_password_hash: &str,
    ) -> Result<bool, PortError> {
        // Expired sessions are swept on the way (bounded work per login).
        sqlx::query(
            "DELETE FROM admin_sessions WHERE token_hash IN
               (SELECT token_hash FROM admin_sessions WHERE expires_at < now() LIMIT 100)",
        )
        .execute(&self.pool)
        .await
        .map_err(port)?;
        // FOR SHARE waits for a password change or disable in flight, then
        // re-reads the row: a session is never born after the change ended the
        // user's sessions, from a password verified before it.
        let created = sqlx::query(
            "INSERT INTO admin_sessions (token_hash, tenant_id, username, role, expires_at)
             SELECT $1, tenant_id, username, $4, $5 FROM admin_users
              WHERE tenant_id = $2 AND username = $3 AND password_hash = $6 AND NOT disabled
              FOR SHARE",
        )
        .bind(token_hash)
        .bind(session.tenant_id.as_str())
        .bind(&session.username)
        .bind(session.role.as_str())
        .bind(session.expires_at)
        .bind(verified_password_hash)
        .execute(&self.pool)
        .await
        .map_err(port)?;
        Ok(created.rows_affected() == 1)
    }

    async fn find_session(&self, token_hash: &[u8]) -> Result<Option<AdminSession>, PortError> {
        let row: Option<(String, String, String, DateTime<Utc>, bool)> = sqlx::query_as(
            "SELECT s.tenant_id, s.username, u.role, s.expires_at, u.disabled
               FROM admin_sessions s JOIN admin_users u USING (tenant_id, username)
              WHERE s.token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(port)?;
        let Some((tenant, username, role, expires_at, disabled)) = row else { return Ok(None) };
        if disabled {
            return Ok(None);
        }
        let tenant_id = TenantId::parse(&tenant).map_err(PortError::new)?;
        // The user's current role counts, not the one at login.
        let role = Role::parse(&role).ok_or_else(|| PortError::msg(format!("unknown role {role}")))?;
        Ok(Some(AdminSession { tenant_id, username, role, expires_at }))
    }

    async fn delete_session(&self, token_hash: &[u8]) -> Result<(), PortError> {
        sqlx::query("DELETE FROM admin_sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&self.pool)
            .await
            .map_err(port)?;
        Ok(())
    }

    async fn list_users(&self, tenant: &TenantId, limit: u32) -> Result<Vec<AdminUserView>, PortError> {
        let rows: Vec<(String, String, bool, DateTime<Utc>)> = sqlx::query_as(
            "SELECT username, role, disabled, created_at FROM admin_users WHERE tenant_id = $1
              ORDER BY username LIMIT $2",
        )
        .bind(tenant.as_str())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(port)?;
        rows.into_iter()
            .map(|(username, role, disabled, created_at)| {
                Ok(AdminUserView { username, role: parse_role(&role)?, disabled, created_at })
            })
            .collect()
    }

    async fn find_request(&self, request: &AdminRequest) -> Result<Option<AdminWrite>, PortError> {
        let mut conn = self.pool.acquire().await.map_err(port)?;
        admin_requests::earlier(&mut conn, request).await
    }

    async fn add_user(
        &self,
        user: &AdminUser,
        request: &AdminRequest,
        users_max: u32,
    ) -> Result<AdminWrite, PortError> {
        let mut tx = self.pool.begin().await.map_err(port)?;
        if !admin_requests::claim(&mut tx, request).await? {
            drop(tx);
            return self.earlier_answer(request).await;
        }
        // Creations of one tenant one at a time, so the count holds.
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .bind(ADMIN_USERS_LOCK_CLASS)
            .bind(user.tenant_id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(port)?;
        let users: i64 = sqlx::query_scalar("SELECT count(*) FROM admin_users WHERE tenant_id = $1")
            .bind(user.tenant_id.as_str())
            .fetch_one(&mut *tx)
            .await
            .map_err(port)?;
        if users >= i64::from(users_max) {
            return Ok(AdminWrite::Refused(AdminRefusal::TooManyUsers));
        }
        let created_at: Option<DateTime<Utc>> = sqlx::query_scalar(
            "INSERT INTO admin_users (tenant_id, username, password_hash, role, disabled) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT DO NOTHING RETURNING created_at",
        )
        .bind(user.tenant_id.as_str())
        .bind(&user.username)
        .bind(&user.password_hash)
        .bind(user.role.as_str())
        .bind(user.disabled)
        .fetch_optional(&mut *tx)
        .await
        .map_err(port)?;
        let Some(created_at) = created_at else { return Ok(AdminWrite::Refused(AdminRefusal::UsernameTaken)) };
        let view =
            AdminUserView { username: user.username.clone(), role: user.role, disabled: user.disabled, created_at };
        admin_requests::answer(&mut tx, request, &view).await?;
        tx.commit().await.map_err(port)?;
        Ok(AdminWrite::Applied(view))
    }

    async fn change_user(
        &self,
        request: &AdminRequest,
        username: &str,
        change: &AdminUserChange,
    ) -> Result<AdminWrite, PortError> {
        let tenant = request.tenant_id.as_str();
        let mut tx = self.pool.begin().await.map_err(port)?;
        if !admin_requests::claim(&mut tx, request).await? {
            drop(tx);
            return self.earlier_answer(request).await;
        }
        // Owners first, in username order, then the user: every writer locks
        // in this order, and a racing disable sees the other's commit here.
        let active_owners = if change.may_remove_an_owner() {
            let owners: Vec<String> = sqlx::query_scalar(
                "SELECT username FROM admin_users WHERE tenant_id = $1 AND role = 'owner' AND NOT disabled
                  ORDER BY username FOR UPDATE",
            )
            .bind(tenant)
            .fetch_all(&mut *tx)
            .await
            .map_err(port)?;
            owners.len()
        } else {
            0
        };
        let row: Option<(String, String, bool, DateTime<Utc>)> = sqlx::query_as(
            "SELECT password_hash, role, disabled, created_at FROM admin_users
              WHERE tenant_id = $1 AND username = $2 FOR UPDATE",
        )
        .bind(tenant)
        .bind(username)
        .fetch_optional(&mut *tx)
        .await
        .map_err(port)?;
        let Some((password_hash, role, disabled, created_at)) = row else {
            return Ok(AdminWrite::Refused(AdminRefusal::NotFound));
        };
        let user = AdminUser {
            tenant_id: request.tenant_id.clone(),
            username: username.to_owned(),
            password_hash,
            role: parse_role(&role)?,
            disabled,
        };
        let decision = match admin_users::decide(&user, change, active_owners) {
            Ok(decision) => decision,
            Err(refusal) => return Ok(AdminWrite::Refused(refusal)),
        };
        sqlx::query(
            "UPDATE admin_users SET role = $3, disabled = $4, password_hash = coalesce($5, password_hash)
              WHERE tenant_id = $1 AND username = $2",
        )
        .bind(tenant)
        .bind(username)
        .bind(decision.role.as_str())
        .bind(decision.disabled)
        .bind(decision.password_hash.as_deref())
        .execute(&mut *tx)
        .await
        .map_err(port)?;
        if decision.ends_sessions {
            let ended = sqlx::query("DELETE FROM admin_sessions WHERE tenant_id = $1 AND username = $2")
                .bind(tenant)
                .bind(username)
                .execute(&mut *tx)
                .await
                .map_err(port)?;
            tracing::info!(tenant, username, sessions = ended.rows_affected(), "admin sessions ended");
        }
        let view = AdminUserView {
            username: username.to_owned(),
            role: decision.role,
            disabled: decision.disabled,
            created_at,
        };
        admin_requests::answer(&mut tx, request, &view).await?;
        tx.commit().await.map_err(port)?;
        Ok(AdminWrite::Applied(view))
    }
}

impl PgShardPorts {
    /// The answer for a key another write holds (committed by now: the claim waited for it).
    async fn earlier_answer(&self, request: &AdminRequest) -> Result<AdminWrite, PortError> {
        let mut conn = self.pool.acquire().await.map_err(port)?;
        admin_requests::earlier(&mut conn, request)
            .await?
            .ok_or_else(|| PortError::msg("an admin request key was claimed, then vanished"))
    }
}

fn parse_role(role: &str) -> Result<Role, PortError> {
    Role::parse(role).ok_or_else(|| PortError::msg(format!("unknown role {role}")))
}

/// First class of the two-key advisory locks (`pg_advisory_xact_lock(class, key)`):
/// one tenant's admin user creations. The one-key locks (relay, scheduler,
/// rebuild) live in another key space.
const ADMIN_USERS_LOCK_CLASS: i32 = 1;

/// `admin_user_requests` (migration 0018): the idempotency of user
/// management, whose writes are not events.
mod admin_requests {
    use sqlx::PgConnection;
    use wxcm_commands::ports::{AdminRefusal, AdminRequest, AdminUserView, AdminWrite, PortError};

    use super::port;

    /// Hours a key is remembered; after that it may be used again.
    pub const RETENTION_HOURS: i32 = 24;
    /// Expired keys deleted per write (bounded work).
    const SWEEP_ROWS_MAX: i64 = 100;

    /// Claims the request's key in the caller's transaction: true if it is
    /// ours now (new, or expired and taken over). A key another transaction
    /// holds makes this wait for it; false then means it committed.
    pub async fn claim(conn: &mut PgConnection, request: &AdminRequest) -> Result<bool, PortError> {
        sqlx::query(
            "DELETE FROM admin_user_requests WHERE (tenant_id, idempotency_key) IN
               (SELECT tenant_id, idempotency_key FROM admin_user_requests
                 WHERE created_at < now() - make_interval(hours => $1) LIMIT $2)",
        )
        .bind(RETENTION_HOURS)
        .bind(SWEEP_ROWS_MAX)
        .execute(&mut *conn)
        .await
        .map_err(port)?;
        let claimed: Option<i32> = sqlx::query_scalar(
            "INSERT INTO admin_user_requests (tenant_id, idempotency_key, request_hash) VALUES ($1, $2, $3)
             ON CONFLICT (tenant_id, idempotency_key) DO UPDATE
                SET request_hash = EXCLUDED.request_hash, outcome = NULL, created_at = now()
              WHERE admin_user_requests.created_at < now() - make_interval(hours => $4)
             RETURNING 1",
        )
        .bind(request.tenant_id.as_str())
        .bind(request.key.as_str())
        .bind(&request.request_hash)
        .bind(RETENTION_HOURS)
        .fetch_optional(&mut *conn)
        .await
        .map_err(port)?;
        Ok(claimed.is_some())
    }

    /// Stores the answer with the change (same transaction).
    pub async fn answer(
        conn: &mut PgConnection,
        request: &AdminRequest,
        view: &AdminUserView,
    ) -> Result<(), PortError> {
        let outcome = serde_json::to_value(view).map_err(PortError::new)?;
        sqlx::query("UPDATE admin_user_requests SET outcome = $3 WHERE tenant_id = $1 AND idempotency_key = $2")
            .bind(request.tenant_id.as_str())
            .bind(request.key.as_str())
            .bind(outcome)
            .execute(&mut *conn)
            .await
            .map_err(port)?;
        Ok(())
    }

    /// A live earlier write under the request's key: replayed, or refused if it asked something else.
    pub async fn earlier(conn: &mut PgConnection, request: &AdminRequest) -> Result<Option<AdminWrite>, PortError> {
        let row: Option<(String, Option<serde_json::Value>)> = sqlx::query_as(
            "SELECT request_hash, outcome FROM admin_user_requests
              WHERE tenant_id = $1 AND idempotency_key = $2 AND created_at >= now() - make_interval(hours => $3)",
        )
        .bind(request.tenant_id.as_str())
        .bind(request.key.as_str())
        .bind(RETENTION_HOURS)
        .fetch_optional(&mut *conn)
        .await
        .map_err(port)?;
        let Some((request_hash, outcome)) = row else { return Ok(None) };
        if request_hash != request.request_hash {
            return Ok(Some(AdminWrite::Refused(AdminRefusal::KeyReused)));
        }
        let outcome = outcome.ok_or_else(|| PortError::msg("a committed admin request without its answer"))?;
        let view = serde_json::from_value(outcome).map_err(PortError::new)?;
        Ok(Some(AdminWrite::Replayed(view)))
    }
}

/// Characters of a due item's last error kept for the operator.
const DUE_ERROR_CHARS_MAX: i32 = 1_000;

#[async_trait]
impl DueWork for PgShardPorts {
    async fn due(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<DueItem>, PortError> {
        type Row = (i64, String, String, String, String, DateTime<Utc>, i32);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT id, tenant_id, aggregate_type, aggregate_id, kind, due_at, attempts FROM due_work
              WHERE coalesce(retry_at, due_at) <= $1 ORDER BY coalesce(retry_at, due_at), id LIMIT $2",
        )
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(port)?;
        Ok(rows
            .into_iter()
            .map(|(id, tenant_id, aggregate_type, aggregate_id, kind, due_at, attempts)| DueItem {
                id,
                tenant_id,
                aggregate_type,
                aggregate_id,
                kind,
                due_at,
                attempts,
            })
            .collect())
    }

    async fn done(&self, id: i64) -> Result<(), PortError> {
        sqlx::query("DELETE FROM due_work WHERE id = $1").bind(id).execute(&self.pool).await.map_err(port)?;
        Ok(())
    }

    async fn failed(&self, id: i64, error: &str, retry_at: DateTime<Utc>) -> Result<(), PortError> {
        sqlx::query(
            "UPDATE due_work SET attempts = attempts + 1, retry_at = $2, last_error = left($3, $4) WHERE id = $1",
        )
        .bind(id)
        .bind(retry_at)
        .bind(error)
        .bind(DUE_ERROR_CHARS_MAX)
        .execute(&self.pool)
        .await
        .map_err(port)?;
        Ok(())
    }
}
