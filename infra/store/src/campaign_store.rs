//! Postgres side of the campaign use cases (migration 0024): the sealed
//! seeds (`campaign_seeds`, first writer wins), beacon values
//! (`campaign_beacon_values`, 0031, first writer wins) and the shake index
//! (`campaign_shakes`, written by a trigger with each `CampaignShakesDrawn`);
//! a member's tickets per period and physical prizes (`campaign_member_periods`,
//! `campaign_physical_awards`, 0040, both written by triggers).

use async_trait::async_trait;
use sqlx::PgPool;
use wxcm_commands::campaigns::snatch::{PurchaseRecord, MEMBER_PURCHASES_MAX};
use wxcm_commands::campaigns::{
    CampaignStore, PhysicalAwardRecord, MEMBER_AWARDS_MAX, MEMBER_PERIODS_MAX, MEMBER_SHAKES_MAX,
};
use wxcm_commands::ports::PortError;
use wxcm_domain::campaign::{BeaconValue, CampaignId, PurchaseId, ShakeDraw, SharePayMethod};
use wxcm_domain::tenant::SealedSecret;
use wxcm_domain::{MemberId, TenantId};

pub struct PgCampaignStore {
    pool: PgPool,
}

impl PgCampaignStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl CampaignStore for PgCampaignStore {
    async fn put_seed(
        &self,
        tenant: &TenantId,
        campaign: CampaignId,
        period_no: u32,
        sealed: &SealedSecret,
    ) -> Result<SealedSecret, PortError> {
        // Two schedules racing: the first seed stays, both commit to it.
        sqlx::query(
            "INSERT INTO campaign_seeds (tenant_id, campaign_id, period_no, sealed) VALUES ($1, $2, $3, $4)
             ON CONFLICT (tenant_id, campaign_id, period_no) DO NOTHING",
        )
        .bind(tenant.as_str())
        .bind(campaign.to_string())
        .bind(i32::try_from(period_no).map_err(PortError::new)?)
        .bind(sealed.ciphertext())
        .execute(&self.pool)
        .await
        .map_err(PortError::new)?;
        self.seed(tenant, campaign, period_no)
            .await?
            .ok_or_else(|| PortError::msg("campaign seed vanished after its insert"))
    }

    async fn seed(
        &self,
        tenant: &TenantId,
        campaign: CampaignId,
        period_no: u32,
    ) -> Result<Option<SealedSecret>, PortError> {
        let sealed: Option<String> = sqlx::query_scalar(
            "SELECT sealed FROM campaign_seeds WHERE tenant_id = $1 AND campaign_id = $2 AND period_no = $3",
        )
        .bind(tenant.as_str())
        .bind(campaign.to_string())
        .bind(i32::try_from(period_no).map_err(PortError::new)?)
        .fetch_optional(&self.pool)
        .await
        .map_err(PortError::new)?;
        Ok(sealed.map(SealedSecret::from_ciphertext))
    }

    async fn put_beacon_value(
        &self,
        tenant: &TenantId,
        campaign: CampaignId,
        period_no: u32,
        value: &BeaconValue,
        recorded_by: &str,
    ) -> Result<BeaconValue, PortError> {
        sqlx::query(
            "INSERT INTO campaign_beacon_values (tenant_id, campaign_id, period_no, value_hex, recorded_by)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, campaign_id, period_no) DO NOTHING",
        )
        .bind(tenant.as_str())
        .bind(campaign.to_string())
        .bind(i32::try_from(period_no).map_err(PortError::new)?)
        .bind(String::from(value.clone()))
        .bind(recorded_by)
        .execute(&self.pool)
        .await
        .map_err(PortError::new)?;
        self.beacon_value(tenant, campaign, period_no)
            .await?
            .ok_or_else(|| PortError::msg("beacon value vanished after its insert"))
    }

    async fn beacon_value(
        &self,
        tenant: &TenantId,
        campaign: CampaignId,
        period_no: u32,
    ) -> Result<Option<BeaconValue>, PortError> {
        let hex: Option<String> = sqlx::query_scalar(
            "SELECT value_hex FROM campaign_beacon_values WHERE tenant_id = $1 AND campaign_id = $2 AND period_no = $3",
        )
        .bind(tenant.as_str())
        .bind(campaign.to_string())
        .bind(i32::try_from(period_no).map_err(PortError::new)?)
        .fetch_optional(&self.pool)
        .await
        .map_err(PortError::new)?;
        hex.map(|h| BeaconValue::parse(&h).map_err(PortError::new)).transpose()
    }

    async fn count_traffic(
        &self,
        tenant: &TenantId,
        campaign: CampaignId,
        day: chrono::NaiveDate,
        visits: i64,
        shares: i64,
    ) -> Result<(), PortError> {
        sqlx::query(
            "INSERT INTO campaign_traffic (tenant_id, campaign_id, day, visits, shares) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (tenant_id, campaign_id, day)
             DO UPDATE SET visits = campaign_traffic.visits + $4, shares = campaign_traffic.shares + $5",
        )
        .bind(tenant.as_str())
        .bind(campaign.to_string())
        .bind(day)
        .bind(visits)
        .bind(shares)
        .execute(&self.pool)
        .await
        .map_err(PortError::new)?;
        Ok(())
    }

    async fn traffic(
        &self,
        tenant: &TenantId,
        campaign: CampaignId,
        limit: u32,
    ) -> Result<Vec<(chrono::NaiveDate, i64, i64)>, PortError> {
        sqlx::query_as(
            "SELECT day, visits, shares FROM campaign_traffic WHERE tenant_id = $1 AND campaign_id = $2
              ORDER BY day LIMIT $3",
        )
        .bind(tenant.as_str())
        .bind(campaign.to_string())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(PortError::new)
    }

    async fn member_shakes(
        &self,
        tenant: &TenantId,
        campaign: CampaignId,
        member: MemberId,
        limit: u32,
    ) -> Result<Vec<ShakeDraw>, PortError> {
        let rows: Vec<serde_json::Value> = sqlx::query_scalar(
            "SELECT draw FROM campaign_shakes WHERE tenant_id = $1 AND campaign_id = $2 AND member_id = $3
              ORDER BY nonce LIMIT $4",
        )
        .bind(tenant.as_str())
        .bind(campaign.to_string())
        .bind(member.to_string())
        .bind(i64::from(limit.clamp(1, MEMBER_SHAKES_MAX)))
        .fetch_all(&self.pool)
        .await
        .map_err(PortError::new)?;
        rows.into_iter().map(|v| serde_json::from_value(v).map_err(PortError::new)).collect()
    }

    async fn member_periods(
        &self,
        tenant: &TenantId,
        campaign: CampaignId,
        member: MemberId,
        limit: u32,
    ) -> Result<Vec<(u32, u32)>, PortError> {
        let rows: Vec<(i32, i32)> = sqlx::query_as(
            "SELECT period_no, tickets FROM campaign_member_periods
              WHERE tenant_id = $1 AND campaign_id = $2 AND member_id = $3
              ORDER BY period_no DESC LIMIT $4",
        )
        .bind(tenant.as_str())
        .bind(campaign.to_string())
        .bind(member.to_string())
        .bind(i64::from(limit.clamp(1, MEMBER_PERIODS_MAX)))
        .fetch_all(&self.pool)
        .await
        .map_err(PortError::new)?;
        rows.into_iter()
            .map(|(period, tickets)| {
                let period = u32::try_from(period).map_err(PortError::new)?;
                Ok((period, u32::try_from(tickets).map_err(PortError::new)?))
            })
            .collect()
    }

    async fn member_awards(
        &self,
        tenant: &TenantId,
        member: MemberId,
        waiting_only: bool,
        limit: u32,
    ) -> Result<Vec<PhysicalAwardRecord>, PortError> {
        let rows: Vec<AwardRow> = sqlx::query_as(
            "SELECT campaign_id, campaign_name, award, item, won_at, handed_over_at FROM campaign_physical_awards
              WHERE tenant_id = $1 AND member_id = $2 AND (NOT $3 OR handed_over_at IS NULL)
              ORDER BY won_at DESC, campaign_id, award_key LIMIT $4",
        )
        .bind(tenant.as_str())
        .bind(member.to_string())
        .bind(waiting_only)
        .bind(i64::from(limit.clamp(1, MEMBER_AWARDS_MAX)))
        .fetch_all(&self.pool)
        .await
        .map_err(PortError::new)?;
        rows.into_iter()
            .map(|r| {
                Ok(PhysicalAwardRecord {
                    campaign_id: CampaignId::parse(&r.campaign_id).map_err(PortError::new)?,
                    campaign_name: r.campaign_name,
                    award: serde_json::from_value(r.award).map_err(PortError::new)?,
                    item: r.item,
                    won_at: r.won_at,
                    handed_over_at: r.handed_over_at,
                })
            })
            .collect()
    }

    async fn purchase(&self, tenant: &TenantId, purchase: PurchaseId) -> Result<Option<PurchaseRecord>, PortError> {
        let row: Option<PurchaseRow> = sqlx::query_as(&format!(
            "SELECT {PURCHASE_COLUMNS} FROM snatch_purchases WHERE tenant_id = $1 AND purchase_id = $2"
        ))
        .bind(tenant.as_str())
        .bind(purchase.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(PortError::new)?;
        row.map(PurchaseRow::record).transpose()
    }

    async fn member_purchases(
        &self,
        tenant: &TenantId,
        campaign: CampaignId,
        member: MemberId,
        limit: u32,
    ) -> Result<Vec<PurchaseRecord>, PortError> {
        let rows: Vec<PurchaseRow> = sqlx::query_as(&format!(
            "SELECT {PURCHASE_COLUMNS} FROM snatch_purchases
              WHERE tenant_id = $1 AND campaign_id = $2 AND member_id = $3 ORDER BY sequence DESC LIMIT $4"
        ))
        .bind(tenant.as_str())
        .bind(campaign.to_string())
        .bind(member.to_string())
        .bind(i64::from(limit.clamp(1, MEMBER_PURCHASES_MAX)))
        .fetch_all(&self.pool)
        .await
        .map_err(PortError::new)?;
        rows.into_iter().map(PurchaseRow::record).collect()
    }
}

const PURCHASE_COLUMNS: &str =
    "purchase_id, campaign_id, member_id, period_no, quantity, amount_fen, method, status, expires_at, reserved_at";

#[derive(sqlx::FromRow)]
struct AwardRow {
    campaign_id: String,
    campaign_name: String,
    award: serde_json::Value,
    item: String,
    won_at: chrono::DateTime<chrono::Utc>,
    handed_over_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(sqlx::FromRow)]
struct PurchaseRow {
    purchase_id: String,
    campaign_id: String,
    member_id: String,
    period_no: i32,
    quantity: i32,
    amount_fen: i64,
    method: String,
    status: String,
    expires_at: chrono::DateTime<chrono::Utc>,
    reserved_at: chrono::DateTime<chrono::Utc>,
}

impl PurchaseRow {
    fn record(self) -> Result<PurchaseRecord, PortError> {
        let method = match self.method.as_str() {
            "balance" => SharePayMethod::Balance,
            "wechat_pay" => SharePayMethod::WechatPay,
            other => return Err(PortError::msg(format!("snatch purchase method {other:?}"))),
        };
        Ok(PurchaseRecord {
            purchase_id: PurchaseId::parse(&self.purchase_id).map_err(PortError::new)?,
            campaign_id: CampaignId::parse(&self.campaign_id).map_err(PortError::new)?,
            member_id: MemberId::parse(&self.member_id).map_err(PortError::new)?,
            period_no: u32::try_from(self.period_no).map_err(PortError::new)?,
            quantity: u32::try_from(self.quantity).map_err(PortError::new)?,
            amount_fen: self.amount_fen,
            method,
            status: self.status,
            expires_at: self.expires_at,
            reserved_at: self.reserved_at,
        })
    }
}
