//! Postgres side of distribution (migration 0033): settings, the
//! `distributors` table (kept by a trigger on the distributor streams), and
//! bindings decided and written under the tenant's binding lock.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};
use wxcm_commands::distribution::{
    BindOutcome, BindRequest, BindResult, BindingFacts, BindingRecord, Decide, DistributionStore, DistributorQr,
    DistributorQuery, DistributorView, PendingReward, Subordinate, DISTRIBUTOR_PAGE_MAX, SUBORDINATE_PAGE_MAX,
};
use wxcm_commands::ports::PortError;
use wxcm_domain::distribution::binding::{
    new_member_reward_due, Binding, BindingDecision, BindingRoute, DistributorStanding, CHAIN_LEN_MAX,
};
use wxcm_domain::distribution::DistributionSettings;
use wxcm_domain::{AppId, MemberId, PointsAmount, TenantId};

use crate::tenant_settings::{self, SettingsTable};

pub struct PgDistributionStore {
    pool: PgPool,
}

impl PgDistributionStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

fn member(s: &str) -> Result<MemberId, PortError> {
    MemberId::parse(s).map_err(PortError::new)
}

fn standing_str(s: DistributorStanding) -> &'static str {
    match s {
        DistributorStanding::NotDistributor => "not_distributor",
        DistributorStanding::Applied => "applied",
        DistributorStanding::Rejected => "rejected",
        DistributorStanding::Active => "active",
        DistributorStanding::Suspended => "suspended",
    }
}

fn standing(s: &str) -> Result<DistributorStanding, PortError> {
    match s {
        "applied" => Ok(DistributorStanding::Applied),
        "rejected" => Ok(DistributorStanding::Rejected),
        "active" => Ok(DistributorStanding::Active),
        "suspended" => Ok(DistributorStanding::Suspended),
        other => Err(PortError::msg(format!("unknown distributor standing {other:?}"))),
    }
}

type DistributorRow = (
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    DateTime<Utc>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

const DISTRIBUTOR_COLUMNS: &str = "member_id, standing, code, route, reason, applied_at, enrolled_at, updated_at, \
                                   qr_appid, qr_ticket, qr_url, level";

fn distributor_view(row: DistributorRow) -> Result<DistributorView, PortError> {
    let (member_id, standing_text, code, route, reason, applied_at, enrolled_at, updated_at, appid, ticket, url, level) =
        row;
    let qr = match (appid, ticket, url) {
        (Some(appid), Some(ticket), Some(url)) => {
            Some(DistributorQr { appid: AppId::parse(&appid).map_err(PortError::new)?, ticket, url })
        }
        _ => None,
    };
    Ok(DistributorView {
        member_id: member(&member_id)?,
        standing: standing(&standing_text)?,
        code,
        route,
        reason,
        applied_at,
        enrolled_at,
        updated_at,
        qr,
        level,
    })
}

type BindingRow = (i64, String, String, Option<String>, String, DateTime<Utc>);

const BINDING_COLUMNS: &str = "binding_id, member_id, distributor_id, replaces, route, bound_at";

fn binding_record(
    (binding_id, member_id, distributor_id, replaces, route, bound_at): BindingRow,
) -> Result<BindingRecord, PortError> {
    Ok(BindingRecord {
        binding_id,
        member_id: member(&member_id)?,
        distributor_id: member(&distributor_id)?,
        replaces: replaces.as_deref().map(member).transpose()?,
        route: BindingRoute::parse(&route).ok_or_else(|| PortError::msg(format!("unknown binding route {route:?}")))?,
        bound_at,
    })
}

/// The candidate's ancestors, nearest first, read by one recursive query
/// (bounded one past the domain's longest chain, so a corrupt ring ends).
async fn ancestors(
    tx: &mut Transaction<'_, Postgres>,
    tenant: &str,
    candidate: &str,
) -> Result<Vec<MemberId>, PortError> {
    let rows: Vec<String> = sqlx::query_scalar(
        "WITH RECURSIVE chain(member_id, depth) AS (
             SELECT distributor_id, 1 FROM distribution_current_bindings WHERE tenant_id = $1 AND member_id = $2
             UNION ALL
             SELECT b.distributor_id, c.depth + 1
               FROM chain c JOIN distribution_current_bindings b ON b.tenant_id = $1 AND b.member_id = c.member_id
              WHERE c.depth <= $3)
         SELECT member_id FROM chain ORDER BY depth",
    )
    .bind(tenant)
    .bind(candidate)
    .bind(i32::try_from(CHAIN_LEN_MAX).unwrap_or(i32::MAX))
    .fetch_all(&mut **tx)
    .await
    .map_err(PortError::new)?;
    rows.iter().map(|m| member(m)).collect()
}

async fn record_by_key(
    tx: &mut Transaction<'_, Postgres>,
    tenant: &str,
    key: &str,
) -> Result<Option<BindingRecord>, PortError> {
    let sql = format!("SELECT {BINDING_COLUMNS} FROM distribution_bindings WHERE tenant_id = $1 AND request_key = $2");
    let row: Option<BindingRow> =
        sqlx::query_as(&sql).bind(tenant).bind(key).fetch_optional(&mut **tx).await.map_err(PortError::new)?;
    row.map(binding_record).transpose()
}

async fn current_in(
    tx: &mut Transaction<'_, Postgres>,
    tenant: &str,
    member_id: &str,
) -> Result<Option<BindingRecord>, PortError> {
    let sql = "SELECT b.binding_id, b.member_id, b.distributor_id, b.replaces, b.route, b.bound_at
                 FROM distribution_current_bindings c JOIN distribution_bindings b ON b.binding_id = c.binding_id
                WHERE c.tenant_id = $1 AND c.member_id = $2";
    let row: Option<BindingRow> =
        sqlx::query_as(sql).bind(tenant).bind(member_id).fetch_optional(&mut **tx).await.map_err(PortError::new)?;
    row.map(binding_record).transpose()
}

#[async_trait]
impl DistributionStore for PgDistributionStore {
    async fn settings(&self, tenant: &TenantId) -> Result<Option<DistributionSettings>, PortError> {
        tenant_settings::load(&self.pool, SettingsTable::Distribution, tenant).await
    }

    async fn save_settings(
        &self,
        tenant: &TenantId,
        settings: &DistributionSettings,
        at: DateTime<Utc>,
        by: &str,
    ) -> Result<(), PortError> {
        tenant_settings::save(&self.pool, SettingsTable::Distribution, tenant, settings, at, by).await
    }

    async fn distributor(&self, tenant: &TenantId, member_id: MemberId) -> Result<Option<DistributorView>, PortError> {
        let sql = format!("SELECT {DISTRIBUTOR_COLUMNS} FROM distributors WHERE tenant_id = $1 AND member_id = $2");
        let row: Option<DistributorRow> = sqlx::query_as(&sql)
            .bind(tenant.as_str())
            .bind(member_id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(PortError::new)?;
        row.map(distributor_view).transpose()
    }

    async fn distributor_by_code(&self, tenant: &TenantId, code: &str) -> Result<Option<DistributorView>, PortError> {
        let sql = format!("SELECT {DISTRIBUTOR_COLUMNS} FROM distributors WHERE tenant_id = $1 AND code = $2");
        let row: Option<DistributorRow> = sqlx::query_as(&sql)
            .bind(tenant.as_str())
            .bind(code)
            .fetch_optional(&self.pool)
            .await
            .map_err(PortError::new)?;
        row.map(distributor_view).transpose()
    }

    async fn distributors(
        &self,
        tenant: &TenantId,
        query: &DistributorQuery,
    ) -> Result<Vec<DistributorView>, PortError> {
        let sql = format!(
            "SELECT {DISTRIBUTOR_COLUMNS} FROM distributors
              WHERE tenant_id = $1 AND ($2::text IS NULL OR standing = $2) AND ($3::text IS NULL OR member_id > $3)
              ORDER BY member_id LIMIT $4"
        );
        let rows: Vec<DistributorRow> = sqlx::query_as(&sql)
            .bind(tenant.as_str())
            .bind(query.standing.map(standing_str))
            .bind(query.after.map(|m| m.to_string()))
            .bind(i64::from(query.limit.clamp(1, DISTRIBUTOR_PAGE_MAX)))
            .fetch_all(&self.pool)
            .await
            .map_err(PortError::new)?;
        rows.into_iter().map(distributor_view).collect()
    }

    async fn save_qr(&self, tenant: &TenantId, member_id: MemberId, qr: &DistributorQr) -> Result<(), PortError> {
        sqlx::query(
            "UPDATE distributors SET qr_appid = $3, qr_ticket = $4, qr_url = $5 WHERE tenant_id = $1 AND member_id = $2",
        )
        .bind(tenant.as_str())
        .bind(member_id.to_string())
        .bind(qr.appid.as_str())
        .bind(&qr.ticket)
        .bind(&qr.url)
        .execute(&self.pool)
        .await
        .map_err(PortError::new)?;
        Ok(())
    }

    async fn bind(&self, request: &BindRequest, decide: Decide<'_>) -> Result<BindResult, PortError> {
        let tenant = request.tenant.as_str();
        let member_id = request.member_id.to_string();
        let candidate = request.candidate.to_string();
        let mut tx = self.pool.begin().await.map_err(PortError::new)?;
        // One binding decision at a time per tenant: the chain read below is
        // then the chain the binding is written against.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('wxcm_binding/' || $1, 0))")
            .bind(tenant)
            .execute(&mut *tx)
            .await
            .map_err(PortError::new)?;
        if let Some(record) = record_by_key(&mut tx, tenant, &request.request_key).await? {
            let same = record.member_id == request.member_id && record.distributor_id == request.candidate;
            tx.rollback().await.map_err(PortError::new)?;
            return Ok(if same { BindResult::Done(BindOutcome::Replayed { record }) } else { BindResult::KeyReused });
        }
        let current = current_in(&mut tx, tenant, &member_id).await?;
        let candidate_standing: Option<String> =
            sqlx::query_scalar("SELECT standing FROM distributors WHERE tenant_id = $1 AND member_id = $2")
                .bind(tenant)
                .bind(&candidate)
                .fetch_optional(&mut *tx)
                .await
                .map_err(PortError::new)?;
        let candidate_standing =
            candidate_standing.as_deref().map(standing).transpose()?.unwrap_or(DistributorStanding::NotDistributor);
        let chain = ancestors(&mut tx, tenant, &candidate).await?;
        let facts = BindingFacts {
            current: current.as_ref().map(|r| Binding { distributor_id: r.distributor_id, bound_at: r.bound_at }),
            candidate_standing,
            candidate_ancestors: &chain,
        };
        let replaces = match decide(facts) {
            Err(refusal) => {
                tx.rollback().await.map_err(PortError::new)?;
                return Ok(BindResult::Refused(refusal));
            }
            Ok(BindingDecision::AlreadyBound) => {
                tx.rollback().await.map_err(PortError::new)?;
                let record = current.ok_or_else(|| PortError::msg("already bound without a binding"))?;
                return Ok(BindResult::Done(BindOutcome::AlreadyBound { record }));
            }
            Ok(BindingDecision::Bind { replaces }) => replaces,
        };
        let (binding_id,): (i64,) = sqlx::query_as(
            "INSERT INTO distribution_bindings (tenant_id, member_id, distributor_id, replaces, route, request_key, bound_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING binding_id",
        )
        .bind(tenant)
        .bind(&member_id)
        .bind(&candidate)
        .bind(replaces.map(|m| m.to_string()))
        .bind(request.route.as_str())
        .bind(&request.request_key)
        .bind(request.now)
        .fetch_one(&mut *tx)
        .await
        .map_err(PortError::new)?;
        sqlx::query(
            "INSERT INTO distribution_current_bindings (tenant_id, member_id, distributor_id, bound_at, binding_id)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (tenant_id, member_id) DO UPDATE
                SET distributor_id = EXCLUDED.distributor_id, bound_at = EXCLUDED.bound_at,
                    binding_id = EXCLUDED.binding_id",
        )
        .bind(tenant)
        .bind(&member_id)
        .bind(&candidate)
        .bind(request.now)
        .bind(binding_id)
        .execute(&mut *tx)
        .await
        .map_err(PortError::new)?;
        let mut new_member_reward = false;
        if let Some(reward) = &request.reward {
            let rewarded: Option<i32> =
                sqlx::query_scalar("SELECT 1 FROM distribution_rewards WHERE tenant_id = $1 AND reward_key = $2")
                    .bind(tenant)
                    .bind(reward.key)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(PortError::new)?;
            if new_member_reward_due(reward.key, request.candidate, request.member_id, |_| rewarded.is_some()) {
                sqlx::query(
                    "INSERT INTO distribution_rewards (tenant_id, reward_key, openid, member_id, distributor_id,
                                                       binding_id, points, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(tenant)
                .bind(reward.key)
                .bind(reward.openid.as_ref().map(|o| o.as_str().to_owned()))
                .bind(&member_id)
                .bind(&candidate)
                .bind(binding_id)
                .bind(reward.points.map(PointsAmount::get))
                .bind(request.now)
                .execute(&mut *tx)
                .await
                .map_err(PortError::new)?;
                new_member_reward = true;
            }
        }
        tx.commit().await.map_err(PortError::new)?;
        let record = BindingRecord {
            binding_id,
            member_id: request.member_id,
            distributor_id: request.candidate,
            replaces,
            route: request.route,
            bound_at: request.now,
        };
        Ok(BindResult::Done(BindOutcome::Bound { record, new_member_reward }))
    }

    async fn current_binding(
        &self,
        tenant: &TenantId,
        member_id: MemberId,
    ) -> Result<Option<BindingRecord>, PortError> {
        let mut tx = self.pool.begin().await.map_err(PortError::new)?;
        let record = current_in(&mut tx, tenant.as_str(), &member_id.to_string()).await?;
        tx.rollback().await.map_err(PortError::new)?;
        Ok(record)
    }

    async fn binding_history(
        &self,
        tenant: &TenantId,
        member_id: MemberId,
        limit: u32,
    ) -> Result<Vec<BindingRecord>, PortError> {
        let sql = format!(
            "SELECT {BINDING_COLUMNS} FROM distribution_bindings WHERE tenant_id = $1 AND member_id = $2
              ORDER BY binding_id DESC LIMIT $3"
        );
        let rows: Vec<BindingRow> = sqlx::query_as(&sql)
            .bind(tenant.as_str())
            .bind(member_id.to_string())
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(PortError::new)?;
        rows.into_iter().map(binding_record).collect()
    }

    async fn subordinates(
        &self,
        tenant: &TenantId,
        distributor: MemberId,
        level: u8,
        after: Option<MemberId>,
        limit: u32,
    ) -> Result<Vec<Subordinate>, PortError> {
        let sql = if level == 2 {
            "SELECT c.member_id, c.distributor_id, c.bound_at
               FROM distribution_current_bindings c
               JOIN distribution_current_bindings l1
                 ON l1.tenant_id = c.tenant_id AND l1.member_id = c.distributor_id
              WHERE c.tenant_id = $1 AND l1.distributor_id = $2 AND ($3::text IS NULL OR c.member_id > $3)
              ORDER BY c.member_id LIMIT $4"
        } else {
            "SELECT member_id, distributor_id, bound_at FROM distribution_current_bindings
              WHERE tenant_id = $1 AND distributor_id = $2 AND ($3::text IS NULL OR member_id > $3)
              ORDER BY member_id LIMIT $4"
        };
        let rows: Vec<(String, String, DateTime<Utc>)> = sqlx::query_as(sql)
            .bind(tenant.as_str())
            .bind(distributor.to_string())
            .bind(after.map(|m| m.to_string()))
            .bind(i64::from(limit.clamp(1, SUBORDINATE_PAGE_MAX)))
            .fetch_all(&self.pool)
            .await
            .map_err(PortError::new)?;
        rows.into_iter()
            .map(|(m, d, bound_at)| Ok(Subordinate { member_id: member(&m)?, distributor_id: member(&d)?, bound_at }))
            .collect()
    }

    async fn pending_rewards(&self, tenant: &TenantId, member_id: MemberId) -> Result<Vec<PendingReward>, PortError> {
        let rows: Vec<(uuid::Uuid, String, String, i64)> = sqlx::query_as(
            "SELECT reward_key, distributor_id, member_id, points FROM distribution_rewards
              WHERE tenant_id = $1 AND member_id = $2 AND points IS NOT NULL AND granted_at IS NULL",
        )
        .bind(tenant.as_str())
        .bind(member_id.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(PortError::new)?;
        rows.into_iter()
            .map(|(key, d, m, points)| {
                Ok(PendingReward {
                    key,
                    distributor_id: member(&d)?,
                    member_id: member(&m)?,
                    points: PointsAmount::new(points).map_err(PortError::new)?,
                })
            })
            .collect()
    }

    async fn reward_granted(&self, tenant: &TenantId, key: uuid::Uuid, at: DateTime<Utc>) -> Result<(), PortError> {
        sqlx::query("UPDATE distribution_rewards SET granted_at = $3 WHERE tenant_id = $1 AND reward_key = $2")
            .bind(tenant.as_str())
            .bind(key)
            .bind(at)
            .execute(&self.pool)
            .await
            .map_err(PortError::new)?;
        Ok(())
    }
}
