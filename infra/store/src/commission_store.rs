//! Postgres side of commissions (migration 0041): the tenant's commission
//! settings and the `commissions` / `commission_withdrawals` read models,
//! which a trigger on the `commission_account` events keeps.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use wxcm_commands::commissions::{
    CommissionRecord, CommissionStore, RankBy, WithdrawalQuery, WithdrawalRecord, COMMISSION_PAGE_MAX, RANK_LIMIT_MAX,
    WITHDRAWAL_PAGE_MAX,
};
use wxcm_commands::ports::PortError;
use wxcm_domain::distribution::{CommissionSettings, WithdrawalId};
use wxcm_domain::mall::MallOrderId;
use wxcm_domain::{MemberId, TenantId};

use crate::tenant_settings::{self, SettingsTable};

pub struct PgCommissionStore {
    pool: PgPool,
}

impl PgCommissionStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

type CommissionRow = (
    i64,
    String,
    i16,
    String,
    String,
    i64,
    i64,
    String,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Option<serde_json::Value>,
    Option<i32>,
);

const COMMISSION_COLUMNS: &str = "seq, order_id, level, distributor_id, buyer_id, basis_fen, amount_fen, state, \
                                  accrued_at, settled_at, ended_at, rule, quantity";

fn commission(row: CommissionRow) -> Result<CommissionRecord, PortError> {
    let (
        cursor,
        order_id,
        level,
        distributor_id,
        buyer_id,
        basis_fen,
        amount_fen,
        state,
        accrued_at,
        settled_at,
        ended_at,
        rule,
        quantity,
    ) = row;
    // Written by the trigger from `CommissionAccrued` (migration 0042); rows
    // from before it were filled from their events.
    let rule = rule.map(serde_json::from_value).transpose().map_err(PortError::new)?;
    let quantity = quantity.map(u32::try_from).transpose().map_err(PortError::new)?;
    Ok(CommissionRecord {
        cursor,
        order_id: MallOrderId::parse(&order_id).map_err(PortError::new)?,
        level: u8::try_from(level).map_err(PortError::new)?,
        distributor_id: MemberId::parse(&distributor_id).map_err(PortError::new)?,
        buyer_id: MemberId::parse(&buyer_id).map_err(PortError::new)?,
        basis_fen,
        amount_fen,
        state,
        accrued_at,
        settled_at,
        ended_at,
        rule,
        quantity,
    })
}

type WithdrawalRow = (
    i64,
    String,
    String,
    i64,
    i64,
    i64,
    String,
    Option<String>,
    Option<String>,
    DateTime<Utc>,
    DateTime<Utc>,
    Option<String>,
    Option<String>,
);

const WITHDRAWAL_COLUMNS: &str = "seq, withdrawal_id, distributor_id, amount_fen, fee_fen, payout_fen, state, reason, \
                                  payout_ref, requested_at, updated_at, payout_method, transfer_no";

fn withdrawal(row: WithdrawalRow) -> Result<WithdrawalRecord, PortError> {
    let (
        cursor,
        id,
        distributor_id,
        amount_fen,
        fee_fen,
        payout_fen,
        state,
        reason,
        payout_ref,
        requested_at,
        updated_at,
        payout_method,
        transfer_no,
    ) = row;
    Ok(WithdrawalRecord {
        cursor,
        withdrawal_id: WithdrawalId::parse(&id).map_err(PortError::new)?,
        distributor_id: MemberId::parse(&distributor_id).map_err(PortError::new)?,
        amount_fen,
        fee_fen,
        payout_fen,
        state,
        reason,
        payout_ref,
        requested_at,
        updated_at,
        payout_method,
        transfer_no,
    })
}

#[async_trait]
impl CommissionStore for PgCommissionStore {
    async fn ranks(
        &self,
        tenant: &TenantId,
        by: RankBy,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<(MemberId, i64)>, PortError> {
        let sql = match by {
            // Settled in the window and still settled (a claw-back takes it out again).
            RankBy::SettledCommission => {
                "SELECT distributor_id, sum(amount_fen)::bigint AS value FROM commissions
                  WHERE tenant_id = $1 AND state = 'settled' AND settled_at >= $2 AND settled_at < $3
                  GROUP BY distributor_id ORDER BY value DESC, distributor_id LIMIT $4"
            }
            RankBy::NewSubordinates => {
                "SELECT distributor_id, count(DISTINCT member_id)::bigint AS value FROM distribution_bindings
                  WHERE tenant_id = $1 AND bound_at >= $2 AND bound_at < $3
                  GROUP BY distributor_id ORDER BY value DESC, distributor_id LIMIT $4"
            }
        };
        let rows: Vec<(String, i64)> = sqlx::query_as(sql)
            .bind(tenant.as_str())
            .bind(from)
            .bind(to)
            .bind(i64::from(limit.clamp(1, RANK_LIMIT_MAX)))
            .fetch_all(&self.pool)
            .await
            .map_err(PortError::new)?;
        rows.into_iter().map(|(id, value)| Ok((MemberId::parse(&id).map_err(PortError::new)?, value))).collect()
    }

    async fn settings(&self, tenant: &TenantId) -> Result<Option<CommissionSettings>, PortError> {
        tenant_settings::load(&self.pool, SettingsTable::Commission, tenant).await
    }

    async fn save_settings(
        &self,
        tenant: &TenantId,
        settings: &CommissionSettings,
        at: DateTime<Utc>,
        by: &str,
    ) -> Result<(), PortError> {
        tenant_settings::save(&self.pool, SettingsTable::Commission, tenant, settings, at, by).await
    }

    async fn of_order(&self, tenant: &TenantId, order: MallOrderId) -> Result<Vec<CommissionRecord>, PortError> {
        let rows: Vec<CommissionRow> = sqlx::query_as(&format!(
            "SELECT {COMMISSION_COLUMNS} FROM commissions WHERE tenant_id = $1 AND order_id = $2 ORDER BY level"
        ))
        .bind(tenant.as_str())
        .bind(order.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(PortError::new)?;
        rows.into_iter().map(commission).collect()
    }

    async fn of_distributor(
        &self,
        tenant: &TenantId,
        distributor: MemberId,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<CommissionRecord>, PortError> {
        let rows: Vec<CommissionRow> = sqlx::query_as(&format!(
            "SELECT {COMMISSION_COLUMNS} FROM commissions
              WHERE tenant_id = $1 AND distributor_id = $2 AND ($3::bigint IS NULL OR seq < $3)
              ORDER BY seq DESC LIMIT $4"
        ))
        .bind(tenant.as_str())
        .bind(distributor.to_string())
        .bind(before)
        .bind(i64::from(limit.clamp(1, COMMISSION_PAGE_MAX)))
        .fetch_all(&self.pool)
        .await
        .map_err(PortError::new)?;
        rows.into_iter().map(commission).collect()
    }

    async fn withdrawal(&self, tenant: &TenantId, id: WithdrawalId) -> Result<Option<WithdrawalRecord>, PortError> {
        let row: Option<WithdrawalRow> = sqlx::query_as(&format!(
            "SELECT {WITHDRAWAL_COLUMNS} FROM commission_withdrawals WHERE tenant_id = $1 AND withdrawal_id = $2"
        ))
        .bind(tenant.as_str())
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(PortError::new)?;
        row.map(withdrawal).transpose()
    }

    async fn withdrawals(
        &self,
        tenant: &TenantId,
        query: &WithdrawalQuery,
    ) -> Result<Vec<WithdrawalRecord>, PortError> {
        let rows: Vec<WithdrawalRow> = sqlx::query_as(&format!(
            "SELECT {WITHDRAWAL_COLUMNS} FROM commission_withdrawals
              WHERE tenant_id = $1 AND ($2::text IS NULL OR state = $2)
                AND ($3::text IS NULL OR distributor_id = $3) AND ($4::bigint IS NULL OR seq < $4)
              ORDER BY seq DESC LIMIT $5"
        ))
        .bind(tenant.as_str())
        .bind(query.state.map(|s| s.as_str()))
        .bind(query.distributor.map(|d| d.to_string()))
        .bind(query.before)
        .bind(i64::from(query.limit.clamp(1, WITHDRAWAL_PAGE_MAX)))
        .fetch_all(&self.pool)
        .await
        .map_err(PortError::new)?;
        rows.into_iter().map(withdrawal).collect()
    }
}
