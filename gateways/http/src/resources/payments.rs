//! Payment orders of the session's tenant: `GET /admin/api/v1/payments`
//! (by order id, optionally one state, keyset pages) and
//! `GET /admin/api/v1/payments/{order_id}` (with its notification history).

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use tracing::instrument;
use utoipa::{IntoParams, ToSchema};
use wxcm_commands::pay_flows::{self, OrderDetail, ORDERS_PAGE_MAX};
use wxcm_commands::payments::PaymentView;
use wxcm_domain::payment::PaymentStatus;
use wxcm_domain::OutTradeNo;

use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiQuery, Authorized};
use crate::permissions::perm;
use crate::state::AppState;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PaymentListQuery {
    #[param(value_type = Option<crate::doc::PaymentState>)]
    state: Option<String>,
    /// The page starts after this order id (the previous page's last).
    #[param(value_type = Option<crate::doc::PayOrderId>)]
    after: Option<String>,
    /// Default 50.
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
}

#[derive(Debug, serde::Serialize, ToSchema)]
pub struct PaymentListPage {
    #[schema(value_type = Vec<PaymentOrderDoc>)]
    orders: Vec<PaymentView>,
    /// The last order id of a full page: pass it as `after` for the next page.
    next_after: Option<String>,
}

/// A payment order (mirrors `commands::payments::PaymentView`; documentation only).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct PaymentOrderDoc {
    /// Our `out_trade_no`.
    order_id: String,
    tenant_id: String,
    member_id: uuid::Uuid,
    openid: String,
    appid: String,
    mch_id: String,
    /// `balance_recharge`, `mall_order` or `snatch_purchase`.
    purpose: String,
    amount_fen: i64,
    /// `v2` or `v3`.
    api_version: String,
    /// `created`, `paid` or `closed`.
    status: String,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    /// Pay's transaction id once paid.
    transaction_id: Option<String>,
    paid_at: Option<DateTime<Utc>>,
    /// `notify_v2`, `notify_v3` or `query`.
    paid_via: Option<String>,
    closed_reason: Option<String>,
    closed_at: Option<DateTime<Utc>>,
    refunded_total_fen: i64,
    /// Refunds applied.
    refunds: u64,
    /// Sequence of the order's last event.
    version: u64,
}

/// One notification as received (mirrors `commands::pay_flows::NotificationRecord`; documentation only).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct PayNotificationDoc {
    appid: String,
    tenant_id: Option<String>,
    order_id: Option<String>,
    /// `v2`, `v3` or `refund_v2`.
    channel: String,
    /// The signature was verified.
    verified: bool,
    /// `applied`, `ignored`, `refused` or `retry`.
    outcome: String,
    detail: String,
    /// Decoded, non-secret fields (transaction id, totals, event type).
    #[schema(value_type = Object)]
    summary: serde_json::Value,
    received_at: DateTime<Utc>,
}

/// An order with its notification history, newest first (mirrors `commands::pay_flows::OrderDetail`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct PaymentDetailDoc {
    order: PaymentOrderDoc,
    notifications: Vec<PayNotificationDoc>,
}

fn parse_state(s: &str) -> Result<PaymentStatus, ApiError> {
    match s {
        "created" => Ok(PaymentStatus::Created),
        "paid" => Ok(PaymentStatus::Paid),
        "closed" => Ok(PaymentStatus::Closed),
        _ => Err(ApiError::bad_request("invalid_state", "state must be created, paid or closed")),
    }
}

#[utoipa::path(get, path = "/admin/api/v1/payments", tag = "payments",
    security(("bearer" = [])),
    params(PaymentListQuery),
    responses(
        (status = 200, description = "One page of payment orders, by order id", body = PaymentListPage),
        (status = 400, description = "`invalid_query`, `invalid_state`, `invalid_after`, `invalid_limit`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username))]
pub async fn list_payments(
    State(state): State<AppState>,
    auth: Authorized<perm::PaymentRead>,
    ApiQuery(q): ApiQuery<PaymentListQuery>,
) -> Result<Json<PaymentListPage>, ApiError> {
    let status = q.state.as_deref().map(parse_state).transpose()?;
    let after = q
        .after
        .as_deref()
        .map(|a| OutTradeNo::parse(a).map_err(|e| ApiError::bad_request("invalid_after", e.to_string())))
        .transpose()?;
    let limit = q.limit.unwrap_or(50);
    if limit == 0 || limit > ORDERS_PAGE_MAX {
        return Err(ApiError::bad_request("invalid_limit", format!("limit must be 1..={ORDERS_PAGE_MAX}")));
    }
    let orders = pay_flows::list_orders(
        &state.app,
        &auth.session.tenant_id,
        status,
        after.as_ref().map(OutTradeNo::as_str),
        limit,
    )
    .await?;
    let next_after = (orders.len() == limit as usize).then(|| orders.last().map(|o| o.order_id.to_string())).flatten();
    Ok(Json(PaymentListPage { orders, next_after }))
}

#[utoipa::path(get, path = "/admin/api/v1/payments/{order_id}", tag = "payments",
    security(("bearer" = [])),
    params(("order_id" = crate::doc::PayOrderId, Path, description = "Our `out_trade_no`")),
    responses(
        (status = 200, description = "The order and its notifications", body = PaymentDetailDoc),
        (status = 400, description = "`invalid_order_id`, `invalid_path`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`payment_not_found` (also for orders of other tenants)", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username))]
pub async fn get_payment(
    State(state): State<AppState>,
    auth: Authorized<perm::PaymentRead>,
    axum::extract::Path(order_id): axum::extract::Path<String>,
) -> Result<Json<OrderDetail>, ApiError> {
    let order_id =
        OutTradeNo::parse(&order_id).map_err(|e| ApiError::bad_request("invalid_order_id", e.to_string()))?;
    Ok(Json(pay_flows::order_detail(&state.app, &auth.session.tenant_id, &order_id).await?))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use utoipa::openapi::schema::Schema;
    use utoipa::openapi::RefOr;
    use utoipa::PartialSchema;
    use wxcm_domain::payment::{PaidVia, PayApiVersion, PaymentPurpose};
    use wxcm_domain::{AppId, MemberId, OpenId, TenantId};

    use super::*;

    fn doc_fields(schema: RefOr<Schema>) -> BTreeSet<String> {
        match schema {
            RefOr::T(Schema::Object(o)) => o.properties.keys().cloned().collect(),
            _ => panic!("not an object schema"),
        }
    }

    /// The documentation-only mirror has exactly the fields the API serializes.
    #[test]
    fn payment_order_doc_mirrors_the_view() {
        let view = PaymentView {
            order_id: OutTradeNo::parse("rc0000000001").unwrap(),
            tenant_id: TenantId::parse("acme").unwrap(),
            member_id: MemberId::new_random(),
            openid: OpenId::parse("oPay_member_0001").unwrap(),
            appid: AppId::parse("wx0123456789abcdef").unwrap(),
            mch_id: "1900000109".into(),
            purpose: PaymentPurpose::BalanceRecharge,
            amount_fen: 1_000,
            api_version: PayApiVersion::V3,
            status: PaymentStatus::Paid,
            created_at: Utc::now(),
            expires_at: Utc::now(),
            transaction_id: Some("4200000001".into()),
            paid_at: Some(Utc::now()),
            paid_via: Some(PaidVia::NotifyV3),
            closed_reason: None,
            closed_at: None,
            refunded_total_fen: 0,
            refunds: 0,
            version: 2,
        };
        let serialized = serde_json::to_value(&view).unwrap();
        let keys: BTreeSet<String> = serialized.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, doc_fields(PaymentOrderDoc::schema()));
    }
}
