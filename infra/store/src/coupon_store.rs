//! Postgres side of the coupon use cases: multi-stream appends through the
//! shard's group committer, and the code index (`coupon_codes`, migration 0017).

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use cqrs_es::persist::SerializedEvent;
use sqlx::PgPool;
use wxcm_commands::coupons::{AppendError, CouponStore};
use wxcm_commands::ports::PortError;
use wxcm_domain::coupon::{CouponId, RedemptionCode, TemplateId};
use wxcm_domain::{MemberId, TenantId};

use wxcm_commands::lanes::EventAppender;

use crate::group_commit::GroupCommitter;

pub struct PgCouponStore {
    pool: PgPool,
    committer: Arc<GroupCommitter>,
}

impl PgCouponStore {
    /// `committer` must write to `pool`'s database.
    pub fn new(pool: PgPool, committer: Arc<GroupCommitter>) -> Self {
        Self { pool, committer }
    }
}

fn coupon_id(text: &str) -> Result<CouponId, PortError> {
    CouponId::parse(text).map_err(PortError::new)
}

#[async_trait]
impl CouponStore for PgCouponStore {
    async fn append(&self, rows: Vec<SerializedEvent>) -> Result<(), AppendError> {
        self.committer.append(rows).await
    }

    async fn existing_coupons(&self, ids: &[CouponId]) -> Result<HashSet<CouponId>, PortError> {
        let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
        let found: Vec<(String,)> = sqlx::query_as(
            "SELECT aggregate_id FROM events
              WHERE aggregate_type = 'coupon' AND aggregate_id = ANY($1) AND sequence = 1",
        )
        .bind(&ids)
        .fetch_all(&self.pool)
        .await
        .map_err(PortError::new)?;
        found.iter().map(|(id,)| coupon_id(id)).collect()
    }

    async fn by_code(&self, tenant: &TenantId, code: &RedemptionCode) -> Result<Option<CouponId>, PortError> {
        let found: Option<(String,)> =
            sqlx::query_as("SELECT coupon_id FROM coupon_codes WHERE tenant_id = $1 AND code = $2")
                .bind(tenant.as_str())
                .bind(code.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(PortError::new)?;
        found.map(|(id,)| coupon_id(&id)).transpose()
    }

    async fn member_coupons(
        &self,
        tenant: &TenantId,
        member: MemberId,
        limit: u32,
    ) -> Result<Vec<CouponId>, PortError> {
        let found: Vec<(String,)> = sqlx::query_as(
            "SELECT coupon_id FROM coupon_codes WHERE tenant_id = $1 AND member_id = $2
              ORDER BY issued_at DESC, coupon_id LIMIT $3",
        )
        .bind(tenant.as_str())
        .bind(member.to_string())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(PortError::new)?;
        found.iter().map(|(id,)| coupon_id(id)).collect()
    }

    async fn welcome_templates(&self, tenant: &TenantId) -> Result<Vec<TemplateId>, PortError> {
        let found: Vec<(String,)> = sqlx::query_as(
            "SELECT template_id FROM welcome_coupon_templates WHERE tenant_id = $1 ORDER BY template_id LIMIT $2",
        )
        .bind(tenant.as_str())
        .bind(WELCOME_TEMPLATES_MAX)
        .fetch_all(&self.pool)
        .await
        .map_err(PortError::new)?;
        found.iter().map(|(id,)| TemplateId::parse(id).map_err(PortError::new)).collect()
    }
}

/// Welcome templates given per registration at most.
const WELCOME_TEMPLATES_MAX: i64 = 20;
