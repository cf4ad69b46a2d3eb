//! Reading payment orders (admin list and detail, a member's own order).

use serde::Serialize;
use wxcm_domain::payment::PaymentStatus;
use wxcm_domain::{MemberId, OutTradeNo, TenantId};

use crate::payments::{self, PaymentOpError, PaymentView};
use crate::ports::App;

use super::*;

/// A member's own order; another member's order is "not found".
pub async fn member_order(
    app: &App,
    tenant: &TenantId,
    member: &MemberId,
    order_id: &OutTradeNo,
) -> Result<PaymentView, PaymentOpError> {
    let view = payments::get(app, tenant, order_id).await?;
    if view.member_id != *member {
        return Err(PaymentOpError::NotFound);
    }
    Ok(view)
}

/// Orders of a tenant for the admin list: views, by order id after `after`.
pub async fn list_orders(
    app: &App,
    tenant: &TenantId,
    status: Option<PaymentStatus>,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<PaymentView>, PaymentOpError> {
    let shard = app.router.route(tenant)?;
    let ids = shard.pay.order_ids(tenant, status, after, limit.clamp(1, ORDERS_PAGE_MAX)).await?;
    let mut views = Vec::with_capacity(ids.len());
    for id in ids {
        let order_id = OutTradeNo::parse(&id).map_err(|e| PaymentOpError::Infra(e.to_string()))?;
        views.push(payments::get(app, tenant, &order_id).await?);
    }
    Ok(views)
}

/// An order with its notification history (newest first).
#[derive(Debug, Clone, Serialize)]
pub struct OrderDetail {
    pub order: PaymentView,
    pub notifications: Vec<NotificationRecord>,
}

pub async fn order_detail(app: &App, tenant: &TenantId, order_id: &OutTradeNo) -> Result<OrderDetail, PaymentOpError> {
    let order = payments::get(app, tenant, order_id).await?;
    let shard = app.router.route(tenant)?;
    let notifications = shard.pay.notifications(tenant, order_id.as_str(), NOTIFICATIONS_PER_ORDER_MAX).await?;
    Ok(OrderDetail { order, notifications })
}
