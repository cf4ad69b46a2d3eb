//! The coupon read model: `rm_coupons` (one row per issued coupon with its
//! current state, migration 0017) and the coupon counters of `rm_daily_ops`,
//! in the same transaction, so the checkpoint covers both.

use sea_query::{Alias, Expr, ExprTrait, Iden, OnConflict, PostgresQueryBuilder, Query};
use sea_query_sqlx::SqlxBinder;
use sqlx::PgConnection;
use wxcm_domain::coupon::{CouponEvent, CouponState};
use wxcm_domain::DomainEventMeta;

use crate::daily::{delta, metric, Counters};
use crate::envelope::RelayedEvent;
use crate::runtime::{ApplyError, Projector};

#[derive(Iden, Clone, Copy)]
pub(crate) enum RmCoupons {
    Table,
    TenantId,
    CouponId,
    TemplateId,
    MemberId,
    Serial,
    Name,
    Benefit,
    Channel,
    State,
    ValidFrom,
    ValidUntil,
    IssuedAt,
    EndedAt,
    EndedBy,
    Store,
}

/// Projects `coupon` streams into `rm_coupons` and the daily coupon counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct CouponProjector;

impl CouponProjector {
    pub const NAME: &'static str = "coupons";
}

/// Decodes the coupon event of `event` and checks it against its envelope.
pub fn decode_coupon_event(event: &RelayedEvent) -> Result<CouponEvent, ApplyError> {
    let decoded: CouponEvent = serde_json::from_value(event.payload.clone())
        .map_err(|e| ApplyError::Invalid(format!("payload is not a coupon event: {e}")))?;
    if decoded.event_type() != event.event_type || decoded.event_version() != event.event_version {
        return Err(ApplyError::Invalid(format!(
            "payload is {} v{}, envelope says {} v{}",
            decoded.event_type(),
            decoded.event_version(),
            event.event_type,
            event.event_version
        )));
    }
    if let CouponEvent::CouponIssued(c) = &decoded {
        if c.coupon_id.to_string() != event.aggregate_id || c.tenant_id.as_str() != event.tenant_id {
            return Err(ApplyError::Invalid("issue does not match its stream".into()));
        }
    }
    Ok(decoded)
}

async fn execute(conn: &mut PgConnection, sql: String, values: sea_query_sqlx::SqlxValues) -> Result<u64, ApplyError> {
    Ok(sqlx::query_with(&sql, values).execute(&mut *conn).await?.rows_affected())
}

impl Projector for CouponProjector {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn aggregate_type(&self) -> &'static str {
        "coupon"
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        event: &RelayedEvent,
        counters: &mut Counters,
    ) -> Result<(), ApplyError> {
        let coupon_event = decode_coupon_event(event)?;
        let recorded_at = event
            .recorded_at_utc()
            .ok_or_else(|| ApplyError::Invalid(format!("recorded_at {:?} is not a timestamp", event.recorded_at)))?;
        let (to, at, by, store, counter) = match &coupon_event {
            CouponEvent::CouponIssued(c) => {
                let benefit = serde_json::to_value(&c.benefit).map_err(|e| ApplyError::Invalid(e.to_string()))?;
                let (sql, values) = Query::insert()
                    .into_table(RmCoupons::Table)
                    .columns([
                        RmCoupons::TenantId,
                        RmCoupons::CouponId,
                        RmCoupons::TemplateId,
                        RmCoupons::MemberId,
                        RmCoupons::Serial,
                        RmCoupons::Name,
                        RmCoupons::Benefit,
                        RmCoupons::Channel,
                        RmCoupons::State,
                        RmCoupons::ValidFrom,
                        RmCoupons::ValidUntil,
                        RmCoupons::IssuedAt,
                    ])
                    .values_panic([
                        event.tenant_id.clone().into(),
                        event.aggregate_id.clone().into(),
                        c.template_id.to_string().into(),
                        c.member_id.to_string().into(),
                        i64::try_from(c.serial).map_err(|e| ApplyError::Invalid(e.to_string()))?.into(),
                        c.name.as_str().to_owned().into(),
                        Expr::val(benefit.to_string()).cast_as(Alias::new("jsonb")),
                        c.channel.name().into(),
                        CouponState::Active.as_str().into(),
                        c.valid_from.into(),
                        c.valid_until.into(),
                        c.issued_at.into(),
                    ])
                    .on_conflict(
                        OnConflict::columns([RmCoupons::TenantId, RmCoupons::CouponId]).do_nothing().to_owned(),
                    )
                    .build_sqlx(PostgresQueryBuilder);
                if execute(conn, sql, values).await? != 1 {
                    return Err(ApplyError::Invalid("coupon row exists before its issue".into()));
                }
                let issued = vec![delta(metric::COUPONS_ISSUED, c.channel.name(), 1)];
                return counters.add(&event.tenant_id, recorded_at, issued);
            }
            CouponEvent::CouponRedeemed { store, actor, redeemed_at } => (
                CouponState::Redeemed,
                *redeemed_at,
                Some(actor.label()),
                store.as_ref().map(|s| s.to_string()),
                metric::COUPONS_REDEEMED,
            ),
            CouponEvent::CouponVoided { actor, voided_at, .. } => {
                (CouponState::Voided, *voided_at, Some(actor.label()), None, metric::COUPONS_VOIDED)
            }
            CouponEvent::CouponExpired { expired_at } => {
                (CouponState::Expired, *expired_at, None, None, metric::COUPONS_EXPIRED)
            }
            CouponEvent::CouponHeld { .. } => {
                return move_state(conn, event, CouponState::Active, CouponState::Held, None).await;
            }
            CouponEvent::CouponReleased { .. } => {
                return move_state(conn, event, CouponState::Held, CouponState::Active, None).await;
            }
            CouponEvent::CouponUsed { order_id, used_at } => {
                let ended = (*used_at, format!("mall order {order_id}"));
                move_state(conn, event, CouponState::Held, CouponState::Redeemed, Some(ended)).await?;
                return counters.add(&event.tenant_id, recorded_at, vec![delta(metric::COUPONS_REDEEMED, "", 1)]);
            }
            CouponEvent::CouponReturned { .. } => {
                move_state(conn, event, CouponState::Redeemed, CouponState::Active, None).await?;
                // Counters are net: a coupon given back from a refunded order was not used.
                return counters.add(&event.tenant_id, recorded_at, vec![delta(metric::COUPONS_REDEEMED, "", -1)]);
            }
        };
        let (sql, values) = Query::update()
            .table(RmCoupons::Table)
            .values([
                (RmCoupons::State, to.as_str().into()),
                (RmCoupons::EndedAt, at.into()),
                (RmCoupons::EndedBy, by.into()),
                (RmCoupons::Store, store.into()),
            ])
            .and_where(Expr::col(RmCoupons::TenantId).eq(event.tenant_id.as_str()))
            .and_where(Expr::col(RmCoupons::CouponId).eq(event.aggregate_id.as_str()))
            .and_where(Expr::col(RmCoupons::State).eq(CouponState::Active.as_str()))
            .build_sqlx(PostgresQueryBuilder);
        // Pair check: only an active coupon's row ends, once.
        if execute(conn, sql, values).await? != 1 {
            return Err(ApplyError::Invalid(format!("coupon {} is not active in the read model", event.aggregate_id)));
        }
        counters.add(&event.tenant_id, recorded_at, vec![delta(counter, "", 1)])
    }
}

/// Moves a coupon's row from `from` to `to` (the mall order's hold, use,
/// release and return); `ended` is when and by what it was used, cleared
/// otherwise. Pair check: the row is in `from`.
async fn move_state(
    conn: &mut PgConnection,
    event: &RelayedEvent,
    from: CouponState,
    to: CouponState,
    ended: Option<(chrono::DateTime<chrono::Utc>, String)>,
) -> Result<(), ApplyError> {
    let (ended_at, ended_by) = ended.map_or((None, None), |(at, by)| (Some(at), Some(by)));
    let (sql, values) = Query::update()
        .table(RmCoupons::Table)
        .values([
            (RmCoupons::State, to.as_str().into()),
            (RmCoupons::EndedAt, ended_at.into()),
            (RmCoupons::EndedBy, ended_by.into()),
            (RmCoupons::Store, Option::<String>::None.into()),
        ])
        .and_where(Expr::col(RmCoupons::TenantId).eq(event.tenant_id.as_str()))
        .and_where(Expr::col(RmCoupons::CouponId).eq(event.aggregate_id.as_str()))
        .and_where(Expr::col(RmCoupons::State).eq(from.as_str()))
        .build_sqlx(PostgresQueryBuilder);
    if execute(conn, sql, values).await? != 1 {
        return Err(ApplyError::Invalid(format!(
            "coupon {} is not {} in the read model",
            event.aggregate_id,
            from.as_str()
        )));
    }
    Ok(())
}
