//! Payment orders of the session's tenant: `GET /admin/api/v1/payments`
//! (by order id, optionally one state, keyset pages) and
//! `GET /admin/api/v1/payments/{order_id}` (with its notification history).

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use tracing::instrument;
use wxcm_commands::pay_flows::{self, OrderDetail, ORDERS_PAGE_MAX};
use wxcm_commands::payments::{PaymentOpError, PaymentView};
use wxcm_domain::payment::PaymentStatus;
use wxcm_domain::OutTradeNo;

use crate::error::ApiError;
use crate::extract::{ApiQuery, Authorized};
use crate::permissions::perm;
use crate::state::AppState;

impl From<PaymentOpError> for ApiError {
    fn from(e: PaymentOpError) -> Self {
        match e {
            PaymentOpError::NotFound => ApiError::not_found("payment_not_found", "payment order not found"),
            PaymentOpError::Rejected(d) => ApiError::conflict("payment_rejected", d.to_string()),
            PaymentOpError::Invalid(m) => ApiError::invalid("invalid_payment", m),
            PaymentOpError::IdempotencyMismatch => {
                ApiError::conflict("idempotency_key_reused", "idempotency key was already used with another request")
            }
            PaymentOpError::Contention => ApiError::Contention,
            PaymentOpError::Route(r) => ApiError::not_found("tenant_not_found", r.to_string()),
            PaymentOpError::Infra(detail) => ApiError::internal("payment operation", &detail),
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct PaymentListQuery {
    /// `created`, `paid` or `closed`.
    state: Option<String>,
    /// The page starts after this order id (the previous page's last).
    after: Option<String>,
    /// 1..=200, default 50.
    limit: Option<u32>,
}

#[derive(Debug, serde::Serialize)]
pub struct PaymentListPage {
    orders: Vec<PaymentView>,
    next_after: Option<String>,
}

fn parse_state(s: &str) -> Result<PaymentStatus, ApiError> {
    match s {
        "created" => Ok(PaymentStatus::Created),
        "paid" => Ok(PaymentStatus::Paid),
        "closed" => Ok(PaymentStatus::Closed),
        _ => Err(ApiError::bad_request("invalid_state", "state must be created, paid or closed")),
    }
}

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
