//! The mall part of `wxcm audit reconcile`: folds every mall order stream of a
//! tenant with the domain aggregate (`MallOrder::apply`, not the projector's
//! code) and checks
//! - `rm_mall_orders`: one row per placed order with its member, product,
//!   quantity, totals, method, status, placement and last-change times, and
//!   version;
//! - the mall counters of `rm_daily_ops` per merchant day: orders paid and
//!   delivered, points spent and fen taken net of refunds (a refunded late
//!   payment never counted), recomputed from the fold's states.
//!
//! Read-only, on the caller's snapshot. A stream that cannot be folded is a
//! [`BrokenStream`] finding; its row is not compared, and its counters only up
//! to the event before the break.
//!
//! Order numbers are not compared: they come from the shard's sequence into
//! `mall_order_index`, not from events, so nothing here could recompute them.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};
use chrono::{DateTime, NaiveDate, SecondsFormat, SubsecRound, Utc};
use futures::TryStreamExt;
use serde::Serialize;
use sqlx::{PgConnection, Row};
use wxcm_domain::mall::{MallOrder, MallOrderEvent, OrderStatus, PlacedOrder, RecordedPayment};
use wxcm_domain::{EventSourced, TenantId};
use wxcm_projections::daily::{merchant_day, metric};
use wxcm_projections::rebuild_mall::MALL_METRICS;

use crate::reconcile::BrokenStream;
use crate::reconcile_coupons::Fold;

/// One mall figure that differs; `expected` from the events, `found` from the
/// read model (`-`: missing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MallDifference {
    /// `mall_order/<id>`, or `daily:<merchant day>` for a counter.
    pub stream: String,
    /// A column of `rm_mall_orders` (`presence` for a missing or extra row), or a metric.
    pub field: &'static str,
    pub expected: String,
    pub found: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct MallReconcile {
    pub events: u64,
    pub orders: u64,
    pub broken_streams: Vec<BrokenStream>,
    pub differences: Vec<MallDifference>,
}

impl MallReconcile {
    pub fn is_clean(&self) -> bool {
        self.broken_streams.is_empty() && self.differences.is_empty()
    }
}

const EVENTS_SQL: &str = "SELECT aggregate_id, sequence, recorded_at, payload FROM events
  WHERE tenant_id = $1 AND aggregate_type = 'mall_order'
  ORDER BY aggregate_id, sequence";

/// The compared columns of `rm_mall_orders`, as text (timestamps in RFC 3339
/// with microseconds, what Postgres keeps).
#[derive(Debug, Clone, PartialEq, Eq)]
struct OrderRow {
    member_id: String,
    product_id: String,
    product_name: String,
    quantity: i64,
    points_total: i64,
    cash_due_fen: i64,
    method: String,
    status: String,
    placed_at: String,
    updated_at: String,
    version: i64,
}

impl OrderRow {
    fn fields(&self) -> [(&'static str, String); 11] {
        [
            ("member_id", self.member_id.clone()),
            ("product_id", self.product_id.clone()),
            ("product_name", self.product_name.clone()),
            ("quantity", self.quantity.to_string()),
            ("points_total", self.points_total.to_string()),
            ("cash_due_fen", self.cash_due_fen.to_string()),
            ("method", self.method.clone()),
            ("status", self.status.clone()),
            ("placed_at", self.placed_at.clone()),
            ("updated_at", self.updated_at.clone()),
            ("version", self.version.to_string()),
        ]
    }
}

fn micros(at: DateTime<Utc>) -> String {
    at.trunc_subsecs(6).to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// A serde unit variant's wire name (`awaiting_payment`, `balance`, …).
fn wire_name<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// One order stream being folded, and when its last folded event was recorded.
struct OrderFold {
    fold: Fold<MallOrder>,
    last_recorded_at: Option<DateTime<Utc>>,
}

/// Mall counters: (merchant day, metric, dimension) → value.
type MallCounts = BTreeMap<(NaiveDate, String, String), i64>;

fn count(counts: &mut MallCounts, day: NaiveDate, name: &str, value: i64) {
    *counts.entry((day, name.to_owned(), String::new())).or_default() += value;
}

/// What a folded `event` adds to the counters, given the order's status and
/// payment before it.
fn count_event(
    counts: &mut MallCounts,
    day: NaiveDate,
    event: &MallOrderEvent,
    status_before: Option<OrderStatus>,
    payment_before: Option<&RecordedPayment>,
) {
    let paid = |counts: &mut MallCounts, payment: &RecordedPayment, sign: i64| {
        if let Some(points) = payment.points {
            count(counts, day, metric::MALL_POINTS_SPENT, sign * points.get());
        }
        if let Some(cash) = &payment.cash {
            count(counts, day, metric::MALL_FEN_TAKEN, sign * cash.amount_fen().get());
        }
    };
    match event {
        MallOrderEvent::MallOrderPaid { points, cash, paid_at } => {
            count(counts, day, metric::MALL_ORDERS_PAID, 1);
            paid(counts, &RecordedPayment { points: *points, cash: cash.clone(), paid_at: *paid_at }, 1);
        }
        MallOrderEvent::MallOrderDelivered { .. } => count(counts, day, metric::MALL_ORDERS_DELIVERED, 1),
        // Net of refunds: a refund takes back what the payment added; a late
        // payment (refund due) never added anything.
        MallOrderEvent::MallOrderRefunded { .. } if status_before != Some(OrderStatus::RefundDue) => {
            if let Some(payment) = payment_before {
                paid(counts, payment, -1);
            }
        }
        MallOrderEvent::MallOrderPlaced(_)
        | MallOrderEvent::MallOrderPointsHeld { .. }
        | MallOrderEvent::MallOrderExpired { .. }
        | MallOrderEvent::MallOrderCancelled { .. }
        | MallOrderEvent::MallOrderPaymentArrivedLate { .. }
        | MallOrderEvent::MallOrderPriceChanged { .. }
        | MallOrderEvent::MallOrderPaymentStarted { .. }
        | MallOrderEvent::MallOrderRefunded { .. }
        | MallOrderEvent::MallOrderRefundRequested { .. }
        | MallOrderEvent::MallOrderRefundRequestRejected { .. } => {}
    }
}

/// Folds the tenant's order streams: (events read, each order, counters).
async fn fold_orders(
    snapshot: &mut PgConnection,
    tenant: &TenantId,
) -> Result<(u64, BTreeMap<String, OrderFold>, MallCounts)> {
    let mut orders: BTreeMap<String, OrderFold> = BTreeMap::new();
    let mut counts = MallCounts::new();
    let mut events = 0u64;
    let mut rows = sqlx::query(EVENTS_SQL).bind(tenant.as_str()).fetch(&mut *snapshot);
    while let Some(row) = rows.try_next().await.context("reading mall order events")? {
        let id: String = row.try_get("aggregate_id")?;
        let sequence: i64 = row.try_get("sequence")?;
        let recorded_at: DateTime<Utc> = row.try_get("recorded_at")?;
        let payload: serde_json::Value = row.try_get("payload")?;
        events += 1;
        let order = orders.entry(id.clone()).or_insert_with(|| OrderFold { fold: Fold::new(), last_recorded_at: None });
        if order.fold.broken.is_some() {
            continue;
        }
        let decoded: Option<MallOrderEvent> = serde_json::from_value(payload.clone()).ok();
        let status_before = order.fold.state.status;
        let payment_before = order.fold.state.payment.clone();
        order.fold.apply(&id, sequence, payload);
        if let (None, Some(event)) = (&order.fold.broken, decoded) {
            order.last_recorded_at = Some(recorded_at);
            count_event(&mut counts, merchant_day(recorded_at), &event, status_before, payment_before.as_ref());
        }
    }
    Ok((events, orders, counts))
}

/// The row the projector should have made of a folded order.
fn expected_row(placed: &PlacedOrder, state: &MallOrder, last_recorded_at: Option<DateTime<Utc>>) -> OrderRow {
    // The placement's row carries the order's own time; every later event
    // stamps the time it was recorded.
    let updated_at = match (state.version, last_recorded_at) {
        (2.., Some(at)) => at,
        _ => placed.placed_at,
    };
    OrderRow {
        member_id: placed.member_id.to_string(),
        product_id: placed.product_id.to_string(),
        product_name: placed.product_name.as_str().to_owned(),
        quantity: i64::from(placed.quantity.get()),
        points_total: placed.totals.points_total,
        // After an admin's price change, the cash due it set.
        cash_due_fen: state.cash_due_fen().unwrap_or(placed.totals.cash_due_fen),
        method: wire_name(&placed.method),
        status: state.status.as_ref().map(wire_name).unwrap_or_default(),
        placed_at: micros(placed.placed_at),
        updated_at: micros(updated_at),
        version: i64::try_from(state.version).unwrap_or(i64::MAX),
    }
}

async fn read_rows(snapshot: &mut PgConnection, tenant: &TenantId) -> Result<BTreeMap<String, OrderRow>> {
    let rows = sqlx::query(
        "SELECT order_id, member_id, product_id, product_name, quantity, points_total, cash_due_fen, method, status,
                placed_at, updated_at, version
           FROM rm_mall_orders WHERE tenant_id = $1",
    )
    .bind(tenant.as_str())
    .fetch_all(&mut *snapshot)
    .await
    .context("reading rm_mall_orders")?;
    let mut found = BTreeMap::new();
    for row in rows {
        let quantity: i32 = row.try_get("quantity")?;
        let order = OrderRow {
            member_id: row.try_get("member_id")?,
            product_id: row.try_get("product_id")?,
            product_name: row.try_get("product_name")?,
            quantity: i64::from(quantity),
            points_total: row.try_get("points_total")?,
            cash_due_fen: row.try_get("cash_due_fen")?,
            method: row.try_get("method")?,
            status: row.try_get("status")?,
            placed_at: micros(row.try_get("placed_at")?),
            updated_at: micros(row.try_get("updated_at")?),
            version: row.try_get("version")?,
        };
        found.insert(row.try_get("order_id")?, order);
    }
    Ok(found)
}

async fn read_counts(snapshot: &mut PgConnection, tenant: &TenantId) -> Result<MallCounts> {
    let rows: Vec<(NaiveDate, String, String, i64)> = sqlx::query_as(
        "SELECT day, metric, dimension, value FROM rm_daily_ops
          WHERE tenant_id = $1 AND metric = ANY($2) AND value <> 0",
    )
    .bind(tenant.as_str())
    .bind(&MALL_METRICS[..])
    .fetch_all(&mut *snapshot)
    .await
    .context("reading the mall counters of rm_daily_ops")?;
    Ok(rows.into_iter().map(|(day, name, dimension, value)| ((day, name, dimension), value)).collect())
}

fn compare_rows(
    orders: &BTreeMap<String, OrderFold>,
    found: &BTreeMap<String, OrderRow>,
    out: &mut Vec<MallDifference>,
) {
    let stream = |id: &str| format!("{}/{id}", MallOrder::TYPE);
    for (id, order) in orders {
        let Some(placed) = order.fold.state.placed.as_deref().filter(|_| order.fold.broken.is_none()) else {
            continue;
        };
        let expected = expected_row(placed, &order.fold.state, order.last_recorded_at);
        let Some(row) = found.get(id) else {
            out.push(MallDifference {
                stream: stream(id),
                field: "presence",
                expected: "row".into(),
                found: "-".into(),
            });
            continue;
        };
        for ((field, e), (_, f)) in expected.fields().into_iter().zip(row.fields()) {
            if e != f {
                out.push(MallDifference { stream: stream(id), field, expected: e, found: f });
            }
        }
    }
    for id in found.keys() {
        if orders.get(id).is_none_or(|o| o.fold.broken.is_none() && o.fold.state.placed.is_none()) {
            out.push(MallDifference {
                stream: stream(id),
                field: "presence",
                expected: "-".into(),
                found: "row".into(),
            });
        }
    }
}

fn compare_counts(expected: &MallCounts, found: &MallCounts, out: &mut Vec<MallDifference>) {
    let keys: BTreeSet<_> = expected.keys().chain(found.keys()).collect();
    for key in keys {
        let (e, f) = (expected.get(key).copied().unwrap_or(0), found.get(key).copied().unwrap_or(0));
        if e == f {
            continue;
        }
        let (day, name, dimension) = key;
        // Only the mall's metrics are read; a dimension (the mall writes none) shows in the stream.
        let field = MALL_METRICS.iter().find(|m| **m == name.as_str()).copied().unwrap_or("mall_counter");
        let stream = if dimension.is_empty() { format!("daily:{day}") } else { format!("daily:{day}:{dimension}") };
        out.push(MallDifference { stream, field, expected: e.to_string(), found: f.to_string() });
    }
}

/// Compares the tenant's mall read model and counters with its order streams.
pub async fn reconcile_mall(snapshot: &mut PgConnection, tenant: &TenantId) -> Result<MallReconcile> {
    let (events, orders, expected_counts) = fold_orders(snapshot, tenant).await?;
    let found_rows = read_rows(snapshot, tenant).await?;
    let found_counts = read_counts(snapshot, tenant).await?;
    let mut report = MallReconcile {
        events,
        orders: orders.len() as u64,
        broken_streams: orders.values().filter_map(|o| o.fold.broken.clone()).collect(),
        differences: Vec::new(),
    };
    compare_rows(&orders, &found_rows, &mut report.differences);
    // Days whose events net to nothing have no row worth comparing.
    let expected_counts: MallCounts = expected_counts.into_iter().filter(|(_, v)| *v != 0).collect();
    compare_counts(&expected_counts, &found_counts, &mut report.differences);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use wxcm_domain::mall::{CashPayment, CashRefund, OrderRefund};
    use wxcm_domain::{Actor, AmountFen, PointsAmount, Reference};

    use super::*;

    fn day() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 3, 1).unwrap()
    }

    fn payment() -> RecordedPayment {
        RecordedPayment {
            points: Some(PointsAmount::new(20).unwrap()),
            cash: Some(CashPayment::Balance { amount_fen: AmountFen::new(150).unwrap(), charge_sequence: 4 }),
            paid_at: Utc.with_ymd_and_hms(2026, 3, 1, 2, 0, 0).unwrap(),
        }
    }

    fn refunded(points: Option<i64>) -> MallOrderEvent {
        MallOrderEvent::MallOrderRefunded {
            refund: OrderRefund {
                points_back: points.map(|p| PointsAmount::new(p).unwrap()),
                cash_back: Some(CashRefund::Balance { amount_fen: AmountFen::new(150).unwrap(), charge_sequence: 4 }),
                quantity_back: None,
                coupon_back: None,
            },
            actor: Actor::Admin { username: "a".into() },
            reason: Reference::parse("broken").unwrap(),
            refunded_at: Utc.with_ymd_and_hms(2026, 3, 1, 3, 0, 0).unwrap(),
            approves_request: None,
        }
    }

    fn value(counts: &MallCounts, name: &str) -> i64 {
        counts.get(&(day(), name.to_owned(), String::new())).copied().unwrap_or(0)
    }

    #[test]
    fn a_refunded_payment_nets_to_nothing_but_the_order_stays_paid() {
        let mut counts = MallCounts::new();
        let p = payment();
        let paid = MallOrderEvent::MallOrderPaid { points: p.points, cash: p.cash.clone(), paid_at: p.paid_at };
        count_event(&mut counts, day(), &paid, Some(OrderStatus::AwaitingPayment), None);
        assert_eq!((value(&counts, metric::MALL_POINTS_SPENT), value(&counts, metric::MALL_FEN_TAKEN)), (20, 150));
        count_event(&mut counts, day(), &refunded(Some(20)), Some(OrderStatus::Paid), Some(&p));
        assert_eq!(value(&counts, metric::MALL_ORDERS_PAID), 1);
        assert_eq!((value(&counts, metric::MALL_POINTS_SPENT), value(&counts, metric::MALL_FEN_TAKEN)), (0, 0));
    }

    #[test]
    fn a_refunded_late_payment_never_counts() {
        let mut counts = MallCounts::new();
        count_event(&mut counts, day(), &refunded(None), Some(OrderStatus::RefundDue), None);
        assert!(counts.values().all(|v| *v == 0), "{counts:?}");
    }

    #[test]
    fn counters_that_differ_name_their_day_and_metric() {
        let key = |name: &str, dimension: &str| (day(), name.to_owned(), dimension.to_owned());
        let expected = MallCounts::from([(key(metric::MALL_ORDERS_PAID, ""), 2)]);
        let found = MallCounts::from([(key(metric::MALL_ORDERS_PAID, ""), 3), (key(metric::MALL_FEN_TAKEN, "x"), 5)]);
        let mut out = Vec::new();
        compare_counts(&expected, &found, &mut out);
        assert_eq!(
            out,
            [
                MallDifference {
                    stream: "daily:2026-03-01:x".into(),
                    field: metric::MALL_FEN_TAKEN,
                    expected: "0".into(),
                    found: "5".into(),
                },
                MallDifference {
                    stream: "daily:2026-03-01".into(),
                    field: metric::MALL_ORDERS_PAID,
                    expected: "2".into(),
                    found: "3".into(),
                },
            ]
        );
    }
}
