//! Daily operations per tenant (`rm_daily_ops`): counters per merchant day
//! (UTC+8), metric and dimension, moved by member, coupon and mall events.
//! Projectors add their events' deltas to a [`Counters`] the runtime writes at
//! the end of the same transaction as the read model and the checkpoint, so an
//! event is counted exactly once (duplicates never reach `apply`).

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset, NaiveDate, Utc};
use sea_query::{Expr, ExprTrait, Iden, OnConflict, PostgresQueryBuilder, Query};
use sea_query_sqlx::SqlxBinder;
use sqlx::PgConnection;
use wxcm_domain::member::{LotTake, MemberEvent};

use crate::follows::{self, FollowChange};
use crate::runtime::ApplyError;

/// Merchant time is China Standard Time, UTC+8 all year.
pub const MERCHANT_UTC_OFFSET_SECS: i32 = 8 * 3600;

/// Metric names stored in `rm_daily_ops.metric` (the API and CSV show them as is).
pub mod metric {
    /// Dimension: registration source (`subscribe`, `oauth`, `staff`).
    pub const REGISTRATIONS: &str = "registrations";
    pub const POINTS_GRANTED: &str = "points_granted";
    /// Points spent directly and spent from holds.
    pub const POINTS_SPENT: &str = "points_spent";
    /// Corrections by admins.
    pub const POINTS_DEDUCTED: &str = "points_deducted";
    /// Expired by the scheduler and expired while held.
    pub const POINTS_EXPIRED: &str = "points_expired";
    /// Dimension: `deposit`, `recharge`, `refund`.
    pub const CASH_CREDITED_FEN: &str = "cash_credited_fen";
    /// Dimension: `charge`, `recharge_reversal` (a paid recharge refunded by WeChat Pay).
    pub const CASH_DEBITED_FEN: &str = "cash_debited_fen";
    /// Dimension: card level. Members joining minus members leaving the level that
    /// day; summed over all days up to D it is the members at that level on D.
    pub const CARD_LEVEL_NET: &str = "card_level_net";
    /// Dimension: follow source (`scene_qr`, `referral`, `other`). A registration by
    /// a subscribe counts, with its attribution, as does every later follow.
    pub const FOLLOWS: &str = "follows";
    /// Dimension: the follow source of the member when it unfollowed.
    pub const UNFOLLOWS: &str = "unfollows";
    /// Dimension: the issue channel (`IssueChannel::name`). Fed by `CouponProjector`.
    pub const COUPONS_ISSUED: &str = "coupons_issued";
    pub const COUPONS_REDEEMED: &str = "coupons_redeemed";
    pub const COUPONS_VOIDED: &str = "coupons_voided";
    pub const COUPONS_EXPIRED: &str = "coupons_expired";
    /// Mall orders paid (fed by `MallProjector`, like the three below).
    pub const MALL_ORDERS_PAID: &str = "mall_orders_paid";
    pub const MALL_ORDERS_DELIVERED: &str = "mall_orders_delivered";
    /// Points spent on mall orders, net of refunds.
    pub const MALL_POINTS_SPENT: &str = "mall_points_spent";
    /// Fen paid for mall orders (balance or WeChat Pay), net of refunds.
    pub const MALL_FEN_TAKEN: &str = "mall_fen_taken";
    /// Dimension: the campaign id. Entries, popularity tickets and shakes (fed
    /// by `CampaignProjector`, like the two below).
    pub const CAMPAIGN_PARTICIPATIONS: &str = "campaign_participations";
    /// Members taking part in the campaign for the first time.
    pub const CAMPAIGN_PARTICIPANTS_NEW: &str = "campaign_participants_new";
    /// Prizes won (shakes that were not "thanks", period draws' winners).
    pub const CAMPAIGN_WINNERS: &str = "campaign_winners";
    /// Commissions accrued (pending), and their fen; dimension: the level (`1`, `2`).
    /// Fed by `CommissionProjector`, like the seven below.
    pub const COMMISSIONS_ACCRUED: &str = "commissions_accrued";
    pub const COMMISSION_ACCRUED_FEN: &str = "commission_accrued_fen";
    /// Commission settled; dimension: the level.
    pub const COMMISSION_SETTLED_FEN: &str = "commission_settled_fen";
    /// Commission taken back after a refund; dimension: `reversed` (before
    /// settlement) or `clawed_back` (after it).
    pub const COMMISSION_REVERSED_FEN: &str = "commission_reversed_fen";
    /// Withdrawals requested, and the fen they took from the balance.
    pub const WITHDRAWALS_REQUESTED: &str = "withdrawals_requested";
    pub const WITHDRAWALS_REQUESTED_FEN: &str = "withdrawals_requested_fen";
    /// Withdrawals paid out, and their requested fen (the payout is that less the fee).
    pub const WITHDRAWALS_PAID: &str = "withdrawals_paid";
    pub const WITHDRAWALS_PAID_FEN: &str = "withdrawals_paid_fen";
    /// Withdrawn fen given back to the balance; dimension: `rejected` (by an
    /// admin) or `returned` (after a failed payout).
    pub const WITHDRAWALS_RETURNED_FEN: &str = "withdrawals_returned_fen";
    /// Members who became distributors; dimension: `everyone`,
    /// `spending_threshold`, `designated` (enrolled at once) or `application`
    /// (approved). Fed by `DistributorProjector`, like the one below.
    pub const DISTRIBUTORS_NEW: &str = "distributors_new";
    pub const DISTRIBUTOR_APPLICATIONS: &str = "distributor_applications";
    /// Members bound to a distributor for the first time, and members moved to
    /// another one; dimension: the route (`link`, `qr`, `code`). Counted from
    /// `distribution_bindings` (rows, not events) by the report's query, never
    /// stored in `rm_daily_ops`.
    pub const DISTRIBUTION_BINDINGS: &str = "distribution_bindings";
    pub const DISTRIBUTION_REBINDINGS: &str = "distribution_rebindings";
}

#[derive(Iden)]
pub(crate) enum RmDailyOps {
    Table,
    TenantId,
    Day,
    Metric,
    Dimension,
    Value,
}

/// The merchant day of an instant.
pub fn merchant_day(at: DateTime<Utc>) -> NaiveDate {
    let offset = FixedOffset::east_opt(MERCHANT_UTC_OFFSET_SECS).expect("UTC+8 is a valid offset");
    at.with_timezone(&offset).date_naive()
}

/// One counter change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delta {
    pub metric: &'static str,
    pub dimension: String,
    pub value: i64,
}

pub(crate) fn delta(metric: &'static str, dimension: &str, value: i64) -> Delta {
    Delta { metric, dimension: dimension.to_owned(), value }
}

fn lots_total(lots: &[LotTake]) -> i64 {
    lots.iter().map(|l| l.points.get()).sum()
}

/// What `event` adds to the day's counters (empty for holds and releases that
/// only move points between spendable and held). `follow_source` is the
/// member's follow source when the event happens; only an unfollow needs it.
pub fn deltas(event: &MemberEvent, follow_source: Option<&str>) -> Result<Vec<Delta>, ApplyError> {
    let mut changes = money_and_level_deltas(event)?;
    match follows::change_of(event) {
        FollowChange::Follow { source, .. } => changes.push(delta(metric::FOLLOWS, source, 1)),
        FollowChange::Unfollow { .. } => {
            let source =
                follow_source.ok_or_else(|| ApplyError::Invalid("unfollow of a member that never followed".into()))?;
            changes.push(delta(metric::UNFOLLOWS, source, 1));
        }
        FollowChange::None => {}
    }
    Ok(changes)
}

fn money_and_level_deltas(event: &MemberEvent) -> Result<Vec<Delta>, ApplyError> {
    Ok(match event {
        MemberEvent::MemberRegistered { card_level, source, .. } => {
            // The source's wire name, as `rm_members.source` stores it.
            let source = serde_json::to_value(source)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .ok_or_else(|| ApplyError::Invalid("registration source has no name".into()))?;
            vec![delta(metric::REGISTRATIONS, &source, 1), delta(metric::CARD_LEVEL_NET, card_level.as_str(), 1)]
        }
        MemberEvent::CardLevelChanged { from, to, .. } => {
            vec![delta(metric::CARD_LEVEL_NET, from.as_str(), -1), delta(metric::CARD_LEVEL_NET, to.as_str(), 1)]
        }
        MemberEvent::PointsGranted { points, .. } => vec![delta(metric::POINTS_GRANTED, "", points.get())],
        MemberEvent::PointsSpent { points, .. } | MemberEvent::HeldPointsSpent { points, .. } => {
            vec![delta(metric::POINTS_SPENT, "", points.get())]
        }
        MemberEvent::PointsDeducted { points, .. } => vec![delta(metric::POINTS_DEDUCTED, "", points.get())],
        MemberEvent::PointsExpired { points, .. } => vec![delta(metric::POINTS_EXPIRED, "", points.get())],
        MemberEvent::PointsHoldReleased { expired, .. } if !expired.is_empty() => {
            vec![delta(metric::POINTS_EXPIRED, "", lots_total(expired))]
        }
        MemberEvent::PointsHeld { .. } | MemberEvent::PointsHoldReleased { .. } => Vec::new(),
        MemberEvent::CashDeposited { amount_fen, .. } => {
            vec![delta(metric::CASH_CREDITED_FEN, "deposit", amount_fen.get())]
        }
        MemberEvent::RechargeCredited { amount_fen, .. } => {
            vec![delta(metric::CASH_CREDITED_FEN, "recharge", amount_fen.get())]
        }
        MemberEvent::ChargeRefunded { amount_fen, .. } => {
            vec![delta(metric::CASH_CREDITED_FEN, "refund", amount_fen.get())]
        }
        MemberEvent::CashCharged { amount_fen, .. } => {
            vec![delta(metric::CASH_DEBITED_FEN, "charge", amount_fen.get())]
        }
        MemberEvent::RechargeReversed { amount_fen, .. } => {
            vec![delta(metric::CASH_DEBITED_FEN, "recharge_reversal", amount_fen.get())]
        }
        // Follows (counted by `deltas`) and flagged reversals move no money or points; purchases
        // paid by WeChat Pay are counted by the mall's own counters (`mall_fen_taken`).
        MemberEvent::MemberFollowed { .. }
        | MemberEvent::MemberUnfollowed { .. }
        | MemberEvent::RechargeReversalFlagged { .. }
        | MemberEvent::PurchasePaid { .. }
        | MemberEvent::PurchaseRefunded { .. } => Vec::new(),
    })
}

/// Counter changes gathered over one transaction (one event, or a batch of
/// them) and written once at its end: summed per tenant, day, metric and
/// dimension, so a batch of a thousand deposits moves its counter row once.
#[derive(Debug, Default)]
pub struct Counters {
    sums: BTreeMap<(String, NaiveDate, &'static str, String), i64>,
}

/// Rows per upsert statement (5 binds each, well below Postgres' 65,535).
const COUNTER_ROWS_PER_STATEMENT: usize = 1_000;

impl Counters {
    /// Adds `event`'s deltas for the merchant day of `recorded_at`.
    pub fn add_event(
        &mut self,
        tenant_id: &str,
        recorded_at: DateTime<Utc>,
        event: &MemberEvent,
        follow_source: Option<&str>,
    ) -> Result<(), ApplyError> {
        let changes = deltas(event, follow_source)?;
        self.add(tenant_id, recorded_at, changes)
    }

    /// Adds `changes` for the tenant's merchant day of `recorded_at`.
    pub fn add(&mut self, tenant_id: &str, recorded_at: DateTime<Utc>, changes: Vec<Delta>) -> Result<(), ApplyError> {
        let day = merchant_day(recorded_at);
        for change in changes {
            let sum = self.sums.entry((tenant_id.to_owned(), day, change.metric, change.dimension)).or_insert(0);
            *sum = sum
                .checked_add(change.value)
                .ok_or_else(|| ApplyError::Invalid(format!("counter {} overflows", change.metric)))?;
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.sums.values().all(|v| *v == 0)
    }

    /// Adds the gathered sums to `rm_daily_ops` on `conn` (a transaction) and
    /// empties this.
    pub async fn write(&mut self, conn: &mut PgConnection) -> Result<(), ApplyError> {
        let sums = std::mem::take(&mut self.sums);
        let rows: Vec<_> = sums.into_iter().filter(|(_, v)| *v != 0).collect();
        if rows.is_empty() {
            return Ok(());
        }
        // Transactions of several projectors (and the operator's retry) add to one
        // tenant's rows concurrently: each takes the tenants' locks, held to its
        // end, in tenant order, and then the rows in key order (the map's), so
        // two of them never wait on each other in a cycle.
        let mut tenants: Vec<&str> = rows.iter().map(|((tenant, ..), _)| tenant.as_str()).collect();
        tenants.dedup();
        for tenant in tenants {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                .bind(format!("wxcm_rm_daily_ops/{tenant}"))
                .execute(&mut *conn)
                .await?;
        }
        for chunk in rows.chunks(COUNTER_ROWS_PER_STATEMENT) {
            let mut insert = Query::insert();
            insert.into_table(RmDailyOps::Table).columns([
                RmDailyOps::TenantId,
                RmDailyOps::Day,
                RmDailyOps::Metric,
                RmDailyOps::Dimension,
                RmDailyOps::Value,
            ]);
            for ((tenant, day, metric, dimension), value) in chunk {
                insert.values_panic([
                    tenant.clone().into(),
                    (*day).into(),
                    (*metric).into(),
                    dimension.clone().into(),
                    (*value).into(),
                ]);
            }
            // The map's keys are distinct, so one statement never touches a row twice.
            insert.on_conflict(
                OnConflict::columns([RmDailyOps::TenantId, RmDailyOps::Day, RmDailyOps::Metric, RmDailyOps::Dimension])
                    .value(
                        RmDailyOps::Value,
                        Expr::col((RmDailyOps::Table, RmDailyOps::Value)).add(Expr::cust("EXCLUDED.value")),
                    )
                    .to_owned(),
            );
            let (sql, values) = insert.build_sqlx(PostgresQueryBuilder);
            sqlx::query_with(&sql, values).execute(&mut *conn).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use wxcm_domain::member::{Attribution, CardLevel, Provenance, RegistrationSource};
    use wxcm_domain::{
        Actor, AmountFen, BalanceFen, CardNumber, IdempotencyKey, MemberId, PointsAmount, PointsBalance, Reference,
        SceneKey, TenantId,
    };

    use super::*;

    fn provenance() -> Provenance {
        Provenance {
            actor: Actor::Admin { username: "a".into() },
            reason: Reference::parse("test").unwrap(),
            reference: None,
            idempotency_key: IdempotencyKey::parse("key-12345678").unwrap(),
        }
    }

    #[test]
    fn events_move_their_counters() {
        let level = |s: &str| CardLevel::parse(s).unwrap();
        let changed = MemberEvent::CardLevelChanged {
            from: level("standard"),
            to: level("gold"),
            source: Default::default(),
            provenance: provenance(),
        };
        assert_eq!(
            deltas(&changed, None).unwrap(),
            vec![delta(metric::CARD_LEVEL_NET, "standard", -1), delta(metric::CARD_LEVEL_NET, "gold", 1)]
        );
        let charged = MemberEvent::CashCharged {
            amount_fen: AmountFen::new(120).unwrap(),
            provenance: provenance(),
            balance_after_fen: BalanceFen::new(0).unwrap(),
        };
        assert_eq!(deltas(&charged, None).unwrap(), vec![delta(metric::CASH_DEBITED_FEN, "charge", 120)]);
        let take = |lot_no, n| LotTake { lot_no, points: PointsAmount::new(n).unwrap() };
        let released = |expired: Vec<LotTake>| MemberEvent::PointsHoldReleased {
            hold_id: Reference::parse("h").unwrap(),
            points: PointsAmount::new(10).unwrap(),
            returned: vec![take(1, 4)],
            expired,
            provenance: provenance(),
            points_after: PointsBalance::new(4).unwrap(),
            held_after: 0,
        };
        assert_eq!(deltas(&released(vec![take(2, 6)]), None).unwrap(), vec![delta(metric::POINTS_EXPIRED, "", 6)]);
        assert!(deltas(&released(Vec::new()), None).unwrap().is_empty());
    }

    fn registered(source: RegistrationSource, attribution: Option<Attribution>) -> MemberEvent {
        MemberEvent::MemberRegistered {
            member_id: MemberId::new_random(),
            tenant_id: TenantId::parse("t-1").unwrap(),
            card_no: CardNumber::from_serial(1).unwrap(),
            openid: None,
            source,
            card_level: CardLevel::standard(),
            registered_at: Utc::now(),
            actor: Actor::System { job: "test".into() },
            idempotency_key: IdempotencyKey::parse("key-12345678").unwrap(),
            attribution,
        }
    }

    #[test]
    fn follows_count_by_source_and_unfollows_by_the_current_source() {
        let scene = Attribution::SceneQr { scene: SceneKey::parse("poster-7").unwrap() };
        let by_subscribe = deltas(&registered(RegistrationSource::Subscribe, Some(scene)), None).unwrap();
        assert!(by_subscribe.contains(&delta(metric::FOLLOWS, "scene_qr", 1)), "{by_subscribe:?}");
        assert!(by_subscribe.contains(&delta(metric::REGISTRATIONS, "subscribe", 1)));
        // Before attribution was recorded: `other`.
        let old = deltas(&registered(RegistrationSource::Subscribe, None), None).unwrap();
        assert!(old.contains(&delta(metric::FOLLOWS, "other", 1)), "{old:?}");
        let by_staff = deltas(&registered(RegistrationSource::Staff, Some(Attribution::Direct)), None).unwrap();
        assert!(by_staff.iter().all(|d| d.metric != metric::FOLLOWS), "{by_staff:?}");

        let referral = Attribution::Referral { referrer: MemberId::new_random() };
        let followed =
            MemberEvent::MemberFollowed { attribution: referral, followed_at: Utc::now(), provenance: provenance() };
        assert_eq!(deltas(&followed, Some("other")).unwrap(), vec![delta(metric::FOLLOWS, "referral", 1)]);
        let unfollowed = MemberEvent::MemberUnfollowed { unfollowed_at: Utc::now(), provenance: provenance() };
        assert_eq!(deltas(&unfollowed, Some("referral")).unwrap(), vec![delta(metric::UNFOLLOWS, "referral", 1)]);
        assert!(deltas(&unfollowed, None).is_err(), "an unfollow needs the member's follow source");
    }

    #[test]
    fn reversals_are_debits_and_flagged_ones_move_nothing() {
        let reversed = MemberEvent::RechargeReversed {
            amount_fen: AmountFen::new(500).unwrap(),
            order_id: Reference::parse("o-1").unwrap(),
            refund_no: Reference::parse("r-1").unwrap(),
            provenance: provenance(),
            balance_after_fen: BalanceFen::new(0).unwrap(),
        };
        assert_eq!(deltas(&reversed, None).unwrap(), vec![delta(metric::CASH_DEBITED_FEN, "recharge_reversal", 500)]);
    }

    #[test]
    fn merchant_days_start_at_16_utc() {
        let before = Utc.with_ymd_and_hms(2026, 3, 1, 15, 59, 59).unwrap();
        let after = Utc.with_ymd_and_hms(2026, 3, 1, 16, 0, 0).unwrap();
        assert_eq!(merchant_day(before), NaiveDate::from_ymd_opt(2026, 3, 1).unwrap());
        assert_eq!(merchant_day(after), NaiveDate::from_ymd_opt(2026, 3, 2).unwrap());
    }
}
