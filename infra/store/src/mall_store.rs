//! Postgres side of the mall use cases: the order index (`mall_order_index`,
//! migration 0020, written by triggers with the reservation and the placement;
//! its `refund_request` column, migration 0044, with the order's refund requests).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use wxcm_commands::mall::{MallStore, OrderEntry, OrderQuery, ORDER_PAGE_MAX};
use wxcm_commands::ports::PortError;
use wxcm_domain::mall::{MallOrderId, ProductId, RefundRequestStatus};
use wxcm_domain::{MemberId, TenantId};

pub struct PgMallStore {
    pool: PgPool,
}

impl PgMallStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

type Row = (String, i64, String, String, DateTime<Utc>, bool);

const COLUMNS: &str = "order_id, order_no, product_id, member_id, expires_at, placed";

fn entry((order_id, order_no, product_id, member_id, expires_at, placed): Row) -> Result<OrderEntry, PortError> {
    Ok(OrderEntry {
        order_id: MallOrderId::parse(&order_id).map_err(PortError::new)?,
        order_no,
        product_id: ProductId::parse(&product_id).map_err(PortError::new)?,
        member_id: MemberId::parse(&member_id).map_err(PortError::new)?,
        expires_at,
        placed,
    })
}

#[async_trait]
impl MallStore for PgMallStore {
    async fn order_entry(&self, tenant: &TenantId, order_id: MallOrderId) -> Result<Option<OrderEntry>, PortError> {
        let sql = format!("SELECT {COLUMNS} FROM mall_order_index WHERE tenant_id = $1 AND order_id = $2");
        let row: Option<Row> = sqlx::query_as(&sql)
            .bind(tenant.as_str())
            .bind(order_id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(PortError::new)?;
        row.map(entry).transpose()
    }

    async fn order_by_no(&self, tenant: &TenantId, order_no: i64) -> Result<Option<OrderEntry>, PortError> {
        let sql = format!("SELECT {COLUMNS} FROM mall_order_index WHERE tenant_id = $1 AND order_no = $2 AND placed");
        let row: Option<Row> = sqlx::query_as(&sql)
            .bind(tenant.as_str())
            .bind(order_no)
            .fetch_optional(&self.pool)
            .await
            .map_err(PortError::new)?;
        row.map(entry).transpose()
    }

    async fn orders(&self, tenant: &TenantId, query: &OrderQuery) -> Result<Vec<OrderEntry>, PortError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM mall_order_index
              WHERE tenant_id = $1 AND placed
                AND ($2::text IS NULL OR member_id = $2)
                AND ($3::bigint IS NULL OR order_no < $3)
                AND ($5::text IS NULL OR refund_request = $5)
              ORDER BY order_no DESC LIMIT $4"
        );
        let rows: Vec<Row> = sqlx::query_as(&sql)
            .bind(tenant.as_str())
            .bind(query.member_id.map(|m| m.to_string()))
            .bind(query.before_no)
            .bind(i64::from(query.limit.clamp(1, ORDER_PAGE_MAX)))
            .bind(query.refund_request.map(|r| match r {
                RefundRequestStatus::Open => "open",
                RefundRequestStatus::Rejected => "rejected",
                RefundRequestStatus::Approved => "approved",
            }))
            .fetch_all(&self.pool)
            .await
            .map_err(PortError::new)?;
        rows.into_iter().map(entry).collect()
    }
}
