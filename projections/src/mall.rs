//! The mall read model: `rm_mall_orders` (one row per placed order with its
//! current status, migration 0020) and the mall counters of `rm_daily_ops`
//! (orders paid and delivered, points spent, fen taken), in the same
//! transaction, so the checkpoint covers both.

use sqlx::PgConnection;
use wxcm_domain::mall::{CashRefund, MallOrderEvent, OrderStatus};
use wxcm_domain::DomainEventMeta;

use crate::daily::{delta, metric, Counters};
use crate::envelope::RelayedEvent;
use crate::runtime::{ApplyError, Projector};

/// Projects `mall_order` streams into `rm_mall_orders` and the daily mall counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct MallProjector;

impl MallProjector {
    pub const NAME: &'static str = "mall";
}

/// Decodes the order event of `event` and checks it against its envelope.
pub fn decode_order_event(event: &RelayedEvent) -> Result<MallOrderEvent, ApplyError> {
    let decoded: MallOrderEvent = serde_json::from_value(event.payload.clone())
        .map_err(|e| ApplyError::Invalid(format!("payload is not a mall order event: {e}")))?;
    if decoded.event_type() != event.event_type || decoded.event_version() != event.event_version {
        return Err(ApplyError::Invalid(format!(
            "payload is {} v{}, envelope says {} v{}",
            decoded.event_type(),
            decoded.event_version(),
            event.event_type,
            event.event_version
        )));
    }
    if let MallOrderEvent::MallOrderPlaced(o) = &decoded {
        if o.order_id.to_string() != event.aggregate_id || o.tenant_id.as_str() != event.tenant_id {
            return Err(ApplyError::Invalid("placement does not match its stream".into()));
        }
    }
    Ok(decoded)
}

fn status_name(status: OrderStatus) -> &'static str {
    match status {
        OrderStatus::AwaitingPayment => "awaiting_payment",
        OrderStatus::Paid => "paid",
        OrderStatus::Delivered => "delivered",
        OrderStatus::Expired => "expired",
        OrderStatus::Cancelled => "cancelled",
        OrderStatus::RefundDue => "refund_due",
        OrderStatus::Refunded => "refunded",
    }
}

impl Projector for MallProjector {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn aggregate_type(&self) -> &'static str {
        "mall_order"
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &RelayedEvent,
        counters: &mut Counters,
    ) -> Result<(), ApplyError> {
        let order_event = decode_order_event(event)?;
        let recorded_at = event
            .recorded_at_utc()
            .ok_or_else(|| ApplyError::Invalid(format!("recorded_at {:?} is not a timestamp", event.recorded_at)))?;
        let sequence = event.sequence;
        if let MallOrderEvent::MallOrderPlaced(o) = &order_event {
            let inserted = sqlx::query(
                "INSERT INTO rm_mall_orders (tenant_id, order_id, member_id, product_id, product_name, quantity,
                     points_total, cash_due_fen, method, status, placed_at, updated_at, version)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'awaiting_payment', $10, $10, $11)
                 ON CONFLICT (tenant_id, order_id) DO NOTHING",
            )
            .bind(&event.tenant_id)
            .bind(&event.aggregate_id)
            .bind(o.member_id.to_string())
            .bind(o.product_id.to_string())
            .bind(o.product_name.as_str())
            .bind(i64::from(o.quantity.get()))
            .bind(o.totals.points_total)
            .bind(o.totals.cash_due_fen)
            .bind(serde_json::to_value(o.method).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default())
            .bind(o.placed_at)
            .bind(sequence)
            .execute(&mut *conn)
            .await?;
            if inserted.rows_affected() != 1 {
                return Err(ApplyError::Invalid("order row exists before its placement".into()));
            }
            return Ok(());
        }
        // An admin's price change before payment: the row shows the cash due now.
        let cash_due_fen = match &order_event {
            MallOrderEvent::MallOrderPriceChanged { new_cash_due_fen, .. } => Some(new_cash_due_fen.get()),
            _ => None,
        };
        let (status, deltas) = match &order_event {
            MallOrderEvent::MallOrderPlaced(_) => return Ok(()),
            // Neither changes a status nor a count.
            MallOrderEvent::MallOrderPriceChanged { .. } | MallOrderEvent::MallOrderPaymentStarted { .. } => {
                (None, Vec::new())
            }
            // The hold and refund requests change nothing a report shows.
            MallOrderEvent::MallOrderPointsHeld { .. }
            | MallOrderEvent::MallOrderRefundRequested { .. }
            | MallOrderEvent::MallOrderRefundRequestRejected { .. } => (None, Vec::new()),
            MallOrderEvent::MallOrderPaid { points, cash, .. } => {
                let mut d = vec![delta(metric::MALL_ORDERS_PAID, "", 1)];
                if let Some(p) = points {
                    d.push(delta(metric::MALL_POINTS_SPENT, "", p.get()));
                }
                if let Some(c) = cash {
                    d.push(delta(metric::MALL_FEN_TAKEN, "", c.amount_fen().get()));
                }
                (Some(OrderStatus::Paid), d)
            }
            MallOrderEvent::MallOrderExpired { .. } => (Some(OrderStatus::Expired), Vec::new()),
            MallOrderEvent::MallOrderCancelled { .. } => (Some(OrderStatus::Cancelled), Vec::new()),
            MallOrderEvent::MallOrderDelivered { .. } => {
                (Some(OrderStatus::Delivered), vec![delta(metric::MALL_ORDERS_DELIVERED, "", 1)])
            }
            MallOrderEvent::MallOrderPaymentArrivedLate { .. } => (Some(OrderStatus::RefundDue), Vec::new()),
            MallOrderEvent::MallOrderRefunded { refund, .. } => {
                // Counters are net of refunds: a refunded payment takes back
                // what it added; a late payment (refund due) never added anything.
                let was: Option<String> =
                    sqlx::query_scalar("SELECT status FROM rm_mall_orders WHERE tenant_id = $1 AND order_id = $2")
                        .bind(&event.tenant_id)
                        .bind(&event.aggregate_id)
                        .fetch_optional(&mut *conn)
                        .await?;
                let mut d = Vec::new();
                if was.as_deref() != Some(status_name(OrderStatus::RefundDue)) {
                    if let Some(p) = refund.points_back {
                        d.push(delta(metric::MALL_POINTS_SPENT, "", -p.get()));
                    }
                    if let Some(c) = &refund.cash_back {
                        let fen = match c {
                            CashRefund::Balance { amount_fen, .. } | CashRefund::WechatPay { amount_fen, .. } => {
                                amount_fen.get()
                            }
                        };
                        d.push(delta(metric::MALL_FEN_TAKEN, "", -fen));
                    }
                }
                (Some(OrderStatus::Refunded), d)
            }
        };
        let updated = sqlx::query(
            "UPDATE rm_mall_orders SET status = coalesce($3, status), updated_at = $4, version = $5,
                    cash_due_fen = coalesce($6, cash_due_fen)
              WHERE tenant_id = $1 AND order_id = $2 AND version < $5",
        )
        .bind(&event.tenant_id)
        .bind(&event.aggregate_id)
        .bind(status.map(status_name))
        .bind(recorded_at)
        .bind(sequence)
        .bind(cash_due_fen)
        .execute(&mut *conn)
        .await?;
        if updated.rows_affected() != 1 {
            return Err(ApplyError::Invalid(format!("order {} is not in the read model", event.aggregate_id)));
        }
        counters.add(&event.tenant_id, recorded_at, deltas)
    }
}
