//! Queries over the read models (`rm_members`, `rm_member_ledger`, `rm_daily_ops`), built with
//! sea-query: `PgReadModels` implements the `ReadModels` port for one shard.
//! Every query is bounded by the tenant and by a page or range limit.

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use sea_query::{Alias, Expr, ExprTrait, Func, Order, PostgresQueryBuilder, Query, SelectStatement};
use sea_query_sqlx::SqlxBinder;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use wxcm_commands::ports::{
    CouponCounts, CouponRow, CouponSearch, DailyOpsReport, DailyOpsRow, LedgerLinePage, LedgerLineRow, MemberCursor,
    MemberPage, MemberRow, MemberSearch, MemberSortKey, PortError, ReadModels, SortOrder, COUPON_PAGE_MAX,
    LEDGER_PAGE_MAX, MEMBER_PAGE_MAX, REPORT_DAYS_MAX,
};
use wxcm_domain::campaign::CampaignId;
use wxcm_domain::coupon::TemplateId;
use wxcm_domain::{MemberId, TenantId};

use crate::campaigns::CAMPAIGN_METRICS;
use crate::coupons::RmCoupons;
use crate::daily::{metric, RmDailyOps};
use crate::members::{RmMemberLedger, RmMembers, LEDGER_LINE_COLUMNS};

/// Rows a daily-operations report may return (its range is bounded too).
pub const DAILY_OPS_ROWS_MAX: u64 = 50_000;
/// Rows of one campaign's report: its three counters over more days than a campaign lasts.
pub const CAMPAIGN_REPORT_ROWS_MAX: u64 = 3 * 800;

/// Bindings per merchant day, kind (first binding or rebinding) and route, in
/// `[$2, $3)`; `$6` is the merchant offset from UTC in seconds. Served by the
/// index `distribution_bindings_bound` (migration 0043).
const BINDINGS_PER_DAY_SQL: &str = "
SELECT ((bound_at AT TIME ZONE 'UTC') + $6::int * interval '1 second')::date AS day,
       CASE WHEN replaces IS NULL THEN $4 ELSE $5 END AS metric,
       route AS dimension, count(*)::bigint AS value
  FROM distribution_bindings
 WHERE tenant_id = $1 AND bound_at >= $2 AND bound_at < $3
 GROUP BY 1, 2, 3
 ORDER BY 1, 2, 3";

/// The instant merchant day `day` starts.
fn merchant_day_start(day: NaiveDate) -> Result<DateTime<Utc>, PortError> {
    let midnight = day.and_hms_opt(0, 0, 0).ok_or_else(|| PortError::msg("no midnight"))?;
    Ok(midnight.and_utc() - chrono::Duration::seconds(i64::from(crate::daily::MERCHANT_UTC_OFFSET_SECS)))
}

/// The read models of one shard.
#[derive(Debug, Clone)]
pub struct PgReadModels {
    pool: PgPool,
}

impl PgReadModels {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

fn sort_column(sort: MemberSortKey) -> RmMembers {
    match sort {
        MemberSortKey::RegisteredAt => RmMembers::RegisteredAt,
        MemberSortKey::Points => RmMembers::Points,
        MemberSortKey::Balance => RmMembers::BalanceFen,
    }
}

/// The sort value of a cursor as a SQL value of the sort column's type.
fn cursor_value(cursor: &MemberCursor) -> Result<Expr, PortError> {
    Ok(match cursor.sort {
        MemberSortKey::RegisteredAt => {
            let at = DateTime::<Utc>::from_timestamp_micros(cursor.key)
                .ok_or_else(|| PortError::msg("cursor time out of range"))?;
            Expr::val(at)
        }
        MemberSortKey::Points | MemberSortKey::Balance => Expr::val(cursor.key),
    })
}

/// The member search as a statement: tenant, filters, keyset, order, limit + 1.
pub fn member_search_statement(tenant: &TenantId, search: &MemberSearch) -> Result<SelectStatement, PortError> {
    if search.limit == 0 || search.limit > MEMBER_PAGE_MAX {
        return Err(PortError::msg(format!("member page size must be 1..={MEMBER_PAGE_MAX}")));
    }
    let filter = &search.filter;
    let mut select = Query::select();
    select
        .columns([
            RmMembers::MemberId,
            RmMembers::CardNo,
            RmMembers::Openid,
            RmMembers::CardLevel,
            RmMembers::Source,
            RmMembers::RegisteredAt,
            RmMembers::Points,
            RmMembers::HeldPoints,
            RmMembers::BalanceFen,
            RmMembers::LifetimePoints,
            RmMembers::Version,
            RmMembers::Followed,
            RmMembers::FollowSource,
            RmMembers::Scene,
            RmMembers::ReferrerId,
        ])
        .from(RmMembers::Table)
        .and_where(Expr::col(RmMembers::TenantId).eq(tenant.as_str()));
    let exact = [
        (RmMembers::CardNo, filter.card_no.as_ref().map(ToString::to_string)),
        (RmMembers::Openid, filter.openid.as_ref().map(ToString::to_string)),
        (RmMembers::CardLevel, filter.card_level.clone()),
        (RmMembers::Source, filter.source.clone()),
        (RmMembers::FollowSource, filter.follow_source.clone()),
    ];
    for (column, value) in exact {
        if let Some(value) = value {
            select.and_where(Expr::col(column).eq(value));
        }
    }
    if let Some(followed) = filter.followed {
        select.and_where(Expr::col(RmMembers::Followed).eq(followed));
    }
    let ranges = [
        (RmMembers::Points, filter.points_min, filter.points_max),
        (RmMembers::BalanceFen, filter.balance_fen_min, filter.balance_fen_max),
    ];
    for (column, min, max) in ranges {
        if let Some(min) = min {
            select.and_where(Expr::col(column).gte(min));
        }
        if let Some(max) = max {
            select.and_where(Expr::col(column).lte(max));
        }
    }
    let column = sort_column(search.sort);
    if let Some(cursor) = &search.after {
        if cursor.sort != search.sort {
            return Err(PortError::msg("cursor of another sort"));
        }
        let left = Expr::tuple([Expr::col(column), Expr::col(RmMembers::MemberId)]);
        let right = Expr::tuple([cursor_value(cursor)?, Expr::val(cursor.member_id.to_string())]);
        select.and_where(match search.order {
            SortOrder::Asc => left.gt(right),
            SortOrder::Desc => left.lt(right),
        });
    }
    let order = match search.order {
        SortOrder::Asc => Order::Asc,
        SortOrder::Desc => Order::Desc,
    };
    select.order_by(column, order.clone()).order_by(RmMembers::MemberId, order).limit(u64::from(search.limit) + 1);
    Ok(select)
}

fn member_row(row: &PgRow) -> Result<MemberRow, PortError> {
    let member_id: String = row.try_get("member_id").map_err(PortError::new)?;
    Ok(MemberRow {
        member_id: MemberId::parse(&member_id).map_err(PortError::new)?,
        card_no: row.try_get("card_no").map_err(PortError::new)?,
        openid: row.try_get("openid").map_err(PortError::new)?,
        card_level: row.try_get("card_level").map_err(PortError::new)?,
        source: row.try_get("source").map_err(PortError::new)?,
        registered_at: row.try_get("registered_at").map_err(PortError::new)?,
        points: row.try_get("points").map_err(PortError::new)?,
        held_points: row.try_get("held_points").map_err(PortError::new)?,
        balance_fen: row.try_get("balance_fen").map_err(PortError::new)?,
        lifetime_points: row.try_get("lifetime_points").map_err(PortError::new)?,
        version: row.try_get("version").map_err(PortError::new)?,
        followed: row.try_get("followed").map_err(PortError::new)?,
        follow_source: row.try_get("follow_source").map_err(PortError::new)?,
        scene: row.try_get("scene").map_err(PortError::new)?,
        referrer_id: row.try_get("referrer_id").map_err(PortError::new)?,
    })
}

fn cursor_of(sort: MemberSortKey, member: &MemberRow) -> MemberCursor {
    let key = match sort {
        MemberSortKey::RegisteredAt => member.registered_at.timestamp_micros(),
        MemberSortKey::Points => member.points,
        MemberSortKey::Balance => member.balance_fen,
    };
    MemberCursor { sort, key, member_id: member.member_id }
}

/// How far the read model has projected one member of `tenant`: its row's version.
pub fn member_version_statement(tenant: &TenantId, member_id: MemberId) -> SelectStatement {
    Query::select()
        .column(RmMembers::Version)
        .from(RmMembers::Table)
        .and_where(Expr::col(RmMembers::TenantId).eq(tenant.as_str()))
        .and_where(Expr::col(RmMembers::MemberId).eq(member_id.to_string()))
        .to_owned()
}

/// One ledger page of a member of `tenant`: lines in `after < sequence <= through`,
/// oldest first, limit + 1 (the extra line only says that more follow).
pub fn member_ledger_statement(
    tenant: &TenantId,
    member_id: MemberId,
    after: i64,
    through: i64,
    limit: u32,
) -> Result<SelectStatement, PortError> {
    if limit == 0 || limit > LEDGER_PAGE_MAX {
        return Err(PortError::msg(format!("ledger page size must be 1..={LEDGER_PAGE_MAX}")));
    }
    Ok(Query::select()
        .columns(LEDGER_LINE_COLUMNS)
        .from(RmMemberLedger::Table)
        .and_where(Expr::col(RmMemberLedger::TenantId).eq(tenant.as_str()))
        .and_where(Expr::col(RmMemberLedger::MemberId).eq(member_id.to_string()))
        .and_where(Expr::col(RmMemberLedger::Sequence).gt(after))
        .and_where(Expr::col(RmMemberLedger::Sequence).lte(through))
        .order_by(RmMemberLedger::Sequence, Order::Asc)
        .limit(u64::from(limit) + 1)
        .to_owned())
}

fn ledger_line(row: &PgRow) -> Result<LedgerLineRow, sqlx::Error> {
    Ok(LedgerLineRow {
        sequence: row.try_get("sequence")?,
        event_id: row.try_get("event_id")?,
        event_type: row.try_get("event_type")?,
        recorded_at: row.try_get("recorded_at")?,
        points_delta: row.try_get("points_delta")?,
        held_delta: row.try_get("held_delta")?,
        cash_delta_fen: row.try_get("cash_delta_fen")?,
        points_after: row.try_get("points_after")?,
        held_after: row.try_get("held_after")?,
        balance_after_fen: row.try_get("balance_after_fen")?,
        actor: row.try_get("actor")?,
        reason: row.try_get("reason")?,
        reference: row.try_get("reference")?,
        idempotency_key: row.try_get("idempotency_key")?,
    })
}

/// Checks a report range: `from <= to`, at most `REPORT_DAYS_MAX` days.
pub fn check_range(from: NaiveDate, to: NaiveDate) -> Result<(), PortError> {
    let days = (to - from).num_days() + 1;
    if !(1..=REPORT_DAYS_MAX).contains(&days) {
        return Err(PortError::msg(format!("report range must be 1..={REPORT_DAYS_MAX} days")));
    }
    Ok(())
}

#[async_trait]
impl ReadModels for PgReadModels {
    async fn search_members(&self, tenant: &TenantId, search: &MemberSearch) -> Result<MemberPage, PortError> {
        let (sql, values) = member_search_statement(tenant, search)?.build_sqlx(PostgresQueryBuilder);
        let rows = sqlx::query_with(&sql, values).fetch_all(&self.pool).await.map_err(PortError::new)?;
        let mut members = rows.iter().map(member_row).collect::<Result<Vec<_>, _>>()?;
        let limit = usize::try_from(search.limit).unwrap_or(usize::MAX);
        let more = members.len() > limit;
        members.truncate(limit);
        let next_after = if more { members.last().map(|m| cursor_of(search.sort, m)) } else { None };
        Ok(MemberPage { members, next_after })
    }

    async fn member_ledger(
        &self,
        tenant: &TenantId,
        member_id: MemberId,
        after: i64,
        limit: u32,
    ) -> Result<LedgerLinePage, PortError> {
        // The version first, then only lines up to it: the projector writes a line and
        // the version in one transaction, so the page is exactly the ledger as of that
        // version, whatever the projector commits between the two reads.
        let (sql, values) = member_version_statement(tenant, member_id).build_sqlx(PostgresQueryBuilder);
        let through: i64 = sqlx::query_scalar_with(&sql, values)
            .fetch_optional(&self.pool)
            .await
            .map_err(PortError::new)?
            .unwrap_or(0);
        let (sql, values) =
            member_ledger_statement(tenant, member_id, after, through, limit)?.build_sqlx(PostgresQueryBuilder);
        let rows = sqlx::query_with(&sql, values).fetch_all(&self.pool).await.map_err(PortError::new)?;
        let mut lines = rows.iter().map(ledger_line).collect::<Result<Vec<_>, _>>().map_err(PortError::new)?;
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let more = lines.len() > limit;
        lines.truncate(limit);
        let next_after = if more { lines.last().map(|l| l.sequence) } else { None };
        Ok(LedgerLinePage { lines, next_after, projected_through_sequence: through })
    }

    async fn daily_ops(&self, tenant: &TenantId, from: NaiveDate, to: NaiveDate) -> Result<DailyOpsReport, PortError> {
        check_range(from, to)?;
        let (sql, values) = Query::select()
            .columns([RmDailyOps::Day, RmDailyOps::Metric, RmDailyOps::Dimension, RmDailyOps::Value])
            .from(RmDailyOps::Table)
            .and_where(Expr::col(RmDailyOps::TenantId).eq(tenant.as_str()))
            .and_where(Expr::col(RmDailyOps::Day).between(from, to))
            .and_where(Expr::col(RmDailyOps::Value).ne(0))
            .and_where(Expr::col(RmDailyOps::Metric).is_not_in(CAMPAIGN_METRICS))
            .order_by(RmDailyOps::Day, Order::Asc)
            .order_by(RmDailyOps::Metric, Order::Asc)
            .order_by(RmDailyOps::Dimension, Order::Asc)
            .limit(DAILY_OPS_ROWS_MAX)
            .build_sqlx(PostgresQueryBuilder);
        let mut rows = sqlx::query_with(&sql, values).fetch_all(&self.pool).await.map_err(PortError::new)?;
        // Per-campaign counters (dimension: the campaign) summed over the
        // tenant's campaigns, one row per day and metric with dimension "".
        let (sql, values) = Query::select()
            .columns([RmDailyOps::Day, RmDailyOps::Metric])
            .expr_as(Expr::val(""), Alias::new("dimension"))
            .expr_as(Func::sum(Expr::col(RmDailyOps::Value)).cast_as(Alias::new("bigint")), Alias::new("value"))
            .from(RmDailyOps::Table)
            .and_where(Expr::col(RmDailyOps::TenantId).eq(tenant.as_str()))
            .and_where(Expr::col(RmDailyOps::Day).between(from, to))
            .and_where(Expr::col(RmDailyOps::Metric).is_in(CAMPAIGN_METRICS))
            .group_by_col(RmDailyOps::Day)
            .group_by_col(RmDailyOps::Metric)
            .and_having(Func::sum(Expr::col(RmDailyOps::Value)).ne(0))
            .order_by(RmDailyOps::Day, Order::Asc)
            .order_by(RmDailyOps::Metric, Order::Asc)
            .build_sqlx(PostgresQueryBuilder);
        rows.extend(sqlx::query_with(&sql, values).fetch_all(&self.pool).await.map_err(PortError::new)?);
        // Bindings are rows, not events: counted from the append-only history
        // when asked, per merchant day of `bound_at` and route (first bindings
        // apart from rebindings), so they never drift from the table.
        let (start, end) = (merchant_day_start(from)?, merchant_day_start(to + chrono::Days::new(1))?);
        rows.extend(
            sqlx::query(BINDINGS_PER_DAY_SQL)
                .bind(tenant.as_str())
                .bind(start)
                .bind(end)
                .bind(metric::DISTRIBUTION_BINDINGS)
                .bind(metric::DISTRIBUTION_REBINDINGS)
                .bind(crate::daily::MERCHANT_UTC_OFFSET_SECS)
                .fetch_all(&self.pool)
                .await
                .map_err(PortError::new)?,
        );
        let rows = rows
            .iter()
            .map(|r| {
                Ok(DailyOpsRow {
                    day: r.try_get("day")?,
                    metric: r.try_get("metric")?,
                    dimension: r.try_get("dimension")?,
                    value: r.try_get("value")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(PortError::new)?;
        let total = Alias::new("total");
        let (sql, values) = Query::select()
            .column(RmDailyOps::Dimension)
            .expr_as(Func::sum(Expr::col(RmDailyOps::Value)).cast_as(Alias::new("bigint")), total.clone())
            .from(RmDailyOps::Table)
            .and_where(Expr::col(RmDailyOps::TenantId).eq(tenant.as_str()))
            .and_where(Expr::col(RmDailyOps::Metric).eq(metric::CARD_LEVEL_NET))
            .and_where(Expr::col(RmDailyOps::Day).lte(to))
            .group_by_col(RmDailyOps::Dimension)
            .and_having(Func::sum(Expr::col(RmDailyOps::Value)).ne(0))
            .order_by(RmDailyOps::Dimension, Order::Asc)
            .build_sqlx(PostgresQueryBuilder);
        let levels = sqlx::query_with(&sql, values).fetch_all(&self.pool).await.map_err(PortError::new)?;
        let members_by_card_level = levels
            .iter()
            .map(|r| Ok((r.try_get("dimension")?, r.try_get("total")?)))
            .collect::<Result<Vec<(String, i64)>, sqlx::Error>>()
            .map_err(PortError::new)?;
        Ok(DailyOpsReport { rows, members_by_card_level })
    }

    async fn campaign_days(&self, tenant: &TenantId, campaign: CampaignId) -> Result<Vec<DailyOpsRow>, PortError> {
        let (sql, values) = Query::select()
            .columns([RmDailyOps::Day, RmDailyOps::Metric, RmDailyOps::Dimension, RmDailyOps::Value])
            .from(RmDailyOps::Table)
            .and_where(Expr::col(RmDailyOps::TenantId).eq(tenant.as_str()))
            .and_where(Expr::col(RmDailyOps::Dimension).eq(campaign.to_string()))
            .and_where(Expr::col(RmDailyOps::Metric).is_in(CAMPAIGN_METRICS))
            .and_where(Expr::col(RmDailyOps::Value).ne(0))
            .order_by(RmDailyOps::Day, Order::Asc)
            .order_by(RmDailyOps::Metric, Order::Asc)
            .limit(CAMPAIGN_REPORT_ROWS_MAX)
            .build_sqlx(PostgresQueryBuilder);
        let rows = sqlx::query_with(&sql, values).fetch_all(&self.pool).await.map_err(PortError::new)?;
        rows.iter()
            .map(|r| {
                Ok(DailyOpsRow {
                    day: r.try_get("day")?,
                    metric: r.try_get("metric")?,
                    dimension: r.try_get("dimension")?,
                    value: r.try_get("value")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(PortError::new)
    }

    async fn coupon_counts(&self, tenant: &TenantId, template: TemplateId) -> Result<CouponCounts, PortError> {
        let count = Alias::new("count");
        let (sql, values) = Query::select()
            .column(RmCoupons::State)
            .expr_as(Func::count(Expr::col(RmCoupons::CouponId)), count)
            .from(RmCoupons::Table)
            .and_where(Expr::col(RmCoupons::TenantId).eq(tenant.as_str()))
            .and_where(Expr::col(RmCoupons::TemplateId).eq(template.to_string()))
            .group_by_col(RmCoupons::State)
            .build_sqlx(PostgresQueryBuilder);
        let rows = sqlx::query_with(&sql, values).fetch_all(&self.pool).await.map_err(PortError::new)?;
        let mut counts = CouponCounts::default();
        for row in rows {
            let state: String = row.try_get("state").map_err(PortError::new)?;
            let n: i64 = row.try_get("count").map_err(PortError::new)?;
            match state.as_str() {
                "active" => counts.active = n,
                "held" => counts.held = n,
                "redeemed" => counts.redeemed = n,
                "voided" => counts.voided = n,
                "expired" => counts.expired = n,
                other => return Err(PortError::msg(format!("rm_coupons state {other}"))),
            }
        }
        Ok(counts)
    }

    async fn search_coupons(&self, tenant: &TenantId, search: &CouponSearch) -> Result<Vec<CouponRow>, PortError> {
        let mut select = Query::select();
        select
            .columns([
                RmCoupons::CouponId,
                RmCoupons::MemberId,
                RmCoupons::Serial,
                RmCoupons::State,
                RmCoupons::Channel,
                RmCoupons::IssuedAt,
                RmCoupons::ValidUntil,
                RmCoupons::EndedAt,
                RmCoupons::EndedBy,
                RmCoupons::Store,
            ])
            .from(RmCoupons::Table)
            .and_where(Expr::col(RmCoupons::TenantId).eq(tenant.as_str()))
            .and_where(Expr::col(RmCoupons::TemplateId).eq(search.template_id.to_string()))
            .order_by(RmCoupons::Serial, Order::Asc)
            .limit(u64::from(search.limit.clamp(1, COUPON_PAGE_MAX)));
        if let Some(state) = search.state {
            select.and_where(Expr::col(RmCoupons::State).eq(state.as_str()));
        }
        if let Some(after) = search.after_serial {
            select.and_where(Expr::col(RmCoupons::Serial).gt(i64::try_from(after).map_err(PortError::new)?));
        }
        let (sql, values) = select.build_sqlx(PostgresQueryBuilder);
        let rows = sqlx::query_with(&sql, values).fetch_all(&self.pool).await.map_err(PortError::new)?;
        rows.iter()
            .map(|r| {
                Ok(CouponRow {
                    coupon_id: r.try_get("coupon_id")?,
                    member_id: r.try_get("member_id")?,
                    serial: r.try_get("serial")?,
                    state: r.try_get("state")?,
                    channel: r.try_get("channel")?,
                    issued_at: r.try_get("issued_at")?,
                    valid_until: r.try_get("valid_until")?,
                    ended_at: r.try_get("ended_at")?,
                    ended_by: r.try_get("ended_by")?,
                    store: r.try_get("store")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(PortError::new)
    }
}

#[cfg(test)]
mod tests {
    use wxcm_commands::ports::MemberFilter;

    use super::*;

    fn search(limit: u32) -> MemberSearch {
        MemberSearch {
            filter: MemberFilter {
                points_min: Some(10),
                source: Some("staff".into()),
                followed: Some(true),
                follow_source: Some("referral".into()),
                ..MemberFilter::default()
            },
            sort: MemberSortKey::Points,
            order: SortOrder::Desc,
            limit,
            after: Some(MemberCursor { sort: MemberSortKey::Points, key: 50, member_id: MemberId::new_random() }),
        }
    }

    #[test]
    fn member_search_is_tenant_bound_and_keyset_paged() {
        let tenant = TenantId::parse("acme").unwrap();
        let sql = member_search_statement(&tenant, &search(MEMBER_PAGE_MAX)).unwrap().to_string(PostgresQueryBuilder);
        assert!(sql.contains(r#""tenant_id" = 'acme'"#), "{sql}");
        assert!(sql.contains(r#"("points", "member_id") < (50, "#), "{sql}");
        assert!(sql.contains(&format!("LIMIT {}", MEMBER_PAGE_MAX + 1)), "{sql}");
        assert!(sql.contains(r#""follow_source" = 'referral'"#), "{sql}");
        assert!(sql.contains(r#""followed" = TRUE"#), "{sql}");
        assert!(member_search_statement(&tenant, &search(MEMBER_PAGE_MAX + 1)).is_err());
        assert!(member_search_statement(&tenant, &search(0)).is_err());
    }

    #[test]
    fn member_ledger_is_tenant_bound_and_keyset_paged() {
        let tenant = TenantId::parse("acme").unwrap();
        let member = MemberId::new_random();
        let sql =
            member_ledger_statement(&tenant, member, 7, 42, LEDGER_PAGE_MAX).unwrap().to_string(PostgresQueryBuilder);
        assert!(sql.contains(r#""tenant_id" = 'acme'"#), "{sql}");
        assert!(sql.contains(&format!(r#""member_id" = '{member}'"#)), "{sql}");
        assert!(sql.contains(r#""sequence" > 7"#), "{sql}");
        assert!(sql.contains(r#""sequence" <= 42"#), "{sql}");
        assert!(sql.contains(r#"ORDER BY "sequence" ASC"#), "{sql}");
        assert!(sql.contains(&format!("LIMIT {}", LEDGER_PAGE_MAX + 1)), "{sql}");
        assert!(member_ledger_statement(&tenant, member, 0, 1, LEDGER_PAGE_MAX + 1).is_err());
        assert!(member_ledger_statement(&tenant, member, 0, 1, 0).is_err());
        let sql = member_version_statement(&tenant, member).to_string(PostgresQueryBuilder);
        assert!(sql.contains(r#""tenant_id" = 'acme'"#), "{sql}");
        assert!(sql.contains(&format!(r#""member_id" = '{member}'"#)), "{sql}");
    }

    #[test]
    fn report_ranges_are_bounded() {
        let day = |d: u32| NaiveDate::from_ymd_opt(2026, 1, 1).unwrap() + chrono::Days::new(u64::from(d));
        assert!(check_range(day(0), day(0)).is_ok());
        assert!(check_range(day(0), day(365)).is_ok());
        assert!(check_range(day(0), day(366)).is_err());
        assert!(check_range(day(1), day(0)).is_err());
    }
}
