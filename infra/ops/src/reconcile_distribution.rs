//! The distribution part of `wxcm audit reconcile`: folds every `distributor`
//! and `commission_account` stream of a tenant with the domain aggregates
//! (`Distributor::apply`, `CommissionAccount::apply`; neither the triggers'
//! SQL nor the projectors' code) and checks
//! - `distributors`: one row per distributor stream with its member, standing,
//!   route, reason and level;
//! - `commission_accounts`: one row per account with its distributor;
//! - `commissions`: one row per order and level with its distributor,
//!   account, buyer, basis, amount, state, rule and quantity;
//! - `commission_withdrawals`: one row per withdrawal with its distributor,
//!   account, amount, fee, payout, state, reason and payout reference;
//! - the distribution counters of `rm_daily_ops` per merchant day, metric and
//!   dimension (commissions accrued by level, settled by level, reversed
//!   before or after settlement, withdrawals requested, paid, given back; new
//!   distributors by route, applications).
//!
//! Timestamps the triggers copy from event bodies are not compared (Postgres
//! rounds their nanoseconds to microseconds). Binding counters are not in
//! `rm_daily_ops`: the report counts `distribution_bindings` itself.
//!
//! Read-only, on the caller's snapshot. A stream that cannot be folded is a
//! [`BrokenStream`] finding; its rows are not compared, and its counters only
//! up to the event before the break.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};
use chrono::{DateTime, NaiveDate, Utc};
use futures::TryStreamExt;
use serde::Serialize;
use sqlx::{PgConnection, Row};
use wxcm_domain::distribution::binding::DistributorStanding;
use wxcm_domain::distribution::{
    CommissionAccount, CommissionAccountEvent, Distributor, DistributorEvent, EnrolmentRoute,
};
use wxcm_domain::{EventSourced, TenantId};
use wxcm_projections::daily::{merchant_day, metric};
use wxcm_projections::distribution::{COMMISSION_METRICS, DISTRIBUTOR_METRICS};
use wxcm_store::jsonb_text;

use crate::reconcile::BrokenStream;
use crate::reconcile_coupons::Fold;

/// One distribution figure that differs; `expected` from the events, `found`
/// from the read model (`-`: missing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DistributionDifference {
    /// `distributor/<id>`, `commission_account/<id>`,
    /// `commission_account/<id>/commission/<order>/<level>`,
    /// `commission_account/<id>/withdrawal/<withdrawal>`, or
    /// `daily:<merchant day>:<dimension>` for a counter.
    pub stream: String,
    /// A column (`presence` for a missing or extra row), or a metric.
    pub field: &'static str,
    pub expected: String,
    pub found: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct DistributionReconcile {
    pub events: u64,
    pub distributors: u64,
    pub accounts: u64,
    pub commissions: u64,
    pub withdrawals: u64,
    pub broken_streams: Vec<BrokenStream>,
    pub differences: Vec<DistributionDifference>,
}

impl DistributionReconcile {
    pub fn is_clean(&self) -> bool {
        self.broken_streams.is_empty() && self.differences.is_empty()
    }
}

const EVENTS_SQL: &str = "SELECT aggregate_type, aggregate_id, sequence, recorded_at, payload FROM events
  WHERE tenant_id = $1 AND aggregate_type IN ('distributor', 'commission_account')
  ORDER BY aggregate_type, aggregate_id, sequence";

/// Counters: (merchant day, metric, dimension) → value.
type Counts = BTreeMap<(NaiveDate, &'static str, String), i64>;

/// A row's compared columns, as text, in a fixed order.
type Fields = Vec<(&'static str, String)>;

/// A distributor stream being folded, with what the aggregate does not keep.
struct DistributorFold {
    fold: Fold<Distributor>,
    route: Option<String>,
    reason: Option<String>,
}

/// What a commission account's events state beyond the aggregate's figures.
#[derive(Default)]
struct AccountExtras {
    /// (order, level) → what the accrual stated.
    accruals: BTreeMap<(String, u8), Accrual>,
    /// withdrawal → (payout, last reason given).
    withdrawals: BTreeMap<String, (i64, Option<String>)>,
}

/// The columns of a commission row that only its `CommissionAccrued` states.
#[derive(Clone)]
struct Accrual {
    buyer: String,
    basis_fen: i64,
    /// The rule as jsonb prints it (the trigger stores the event's `rule`).
    rule: String,
    quantity: String,
}

impl Accrual {
    fn unknown() -> Self {
        Self { buyer: "-".into(), basis_fen: 0, rule: "-".into(), quantity: "-".into() }
    }
}

struct AccountFold {
    fold: Fold<CommissionAccount>,
    extras: AccountExtras,
}

fn standing_name(standing: DistributorStanding) -> Option<&'static str> {
    match standing {
        DistributorStanding::NotDistributor => None,
        DistributorStanding::Applied => Some("applied"),
        DistributorStanding::Rejected => Some("rejected"),
        DistributorStanding::Active => Some("active"),
        DistributorStanding::Suspended => Some("suspended"),
    }
}

fn route_name(route: &EnrolmentRoute) -> &'static str {
    match route {
        EnrolmentRoute::Everyone => "everyone",
        EnrolmentRoute::SpendingThreshold { .. } => "spending_threshold",
        EnrolmentRoute::Designated => "designated",
    }
}

fn add(counts: &mut Counts, at: DateTime<Utc>, name: &'static str, dimension: &str, value: i64) {
    *counts.entry((merchant_day(at), name, dimension.to_owned())).or_default() += value;
}

/// Counts an accepted distributor event and keeps its route and reason.
fn count_distributor(d: &mut DistributorFold, event: &DistributorEvent, at: DateTime<Utc>, counts: &mut Counts) {
    use DistributorEvent as E;
    match event {
        E::DistributorApplied { .. } => {
            add(counts, at, metric::DISTRIBUTOR_APPLICATIONS, "", 1);
            d.route = Some("application".into());
            d.reason = None;
        }
        E::DistributorEnrolled { route, .. } => {
            add(counts, at, metric::DISTRIBUTORS_NEW, route_name(route), 1);
            d.route = Some(route_name(route).into());
            d.reason = None;
        }
        E::DistributorApproved { .. } => {
            add(counts, at, metric::DISTRIBUTORS_NEW, "application", 1);
            d.reason = None;
        }
        E::DistributorRejected { reason, .. } | E::DistributorSuspended { reason, .. } => {
            d.reason = Some(reason.to_string());
        }
        E::DistributorReinstated { .. } => d.reason = None,
        E::DistributorLevelSet { .. } => {}
    }
}

/// Counts an accepted commission account event (`before`: the account before
/// it) and keeps what the aggregate does not.
fn count_account(
    extras: &mut AccountExtras,
    before: &CommissionAccount,
    event: &CommissionAccountEvent,
    at: DateTime<Utc>,
    counts: &mut Counts,
) {
    use CommissionAccountEvent as E;
    let requested =
        |id: &wxcm_domain::distribution::WithdrawalId| before.withdrawals.get(id).map_or(0, |w| w.amount_fen);
    match event {
        E::CommissionAccrued { key, buyer_id, basis_fen, amount_fen, rule, quantity, .. } => {
            let level = key.level.number().to_string();
            add(counts, at, metric::COMMISSIONS_ACCRUED, &level, 1);
            add(counts, at, metric::COMMISSION_ACCRUED_FEN, &level, amount_fen.get());
            // jsonb's own text of the rule, so that it compares with the stored column's.
            let rule =
                serde_json::to_value(rule).ok().and_then(|v| jsonb_text::render(&v)).unwrap_or_else(|| "?".into());
            let accrual = Accrual {
                buyer: buyer_id.to_string(),
                basis_fen: basis_fen.get(),
                rule,
                quantity: quantity.get().to_string(),
            };
            extras.accruals.insert((key.order_id.to_string(), key.level.number()), accrual);
        }
        E::CommissionSettled { key, amount_fen, .. } => {
            add(counts, at, metric::COMMISSION_SETTLED_FEN, &key.level.number().to_string(), amount_fen.get());
        }
        E::CommissionReversed { amount_fen, .. } => {
            add(counts, at, metric::COMMISSION_REVERSED_FEN, "reversed", amount_fen.get());
        }
        E::CommissionClawedBack { amount_fen, .. } => {
            add(counts, at, metric::COMMISSION_REVERSED_FEN, "clawed_back", amount_fen.get());
        }
        E::WithdrawalRequested { withdrawal_id, amount_fen, payout_fen, .. } => {
            add(counts, at, metric::WITHDRAWALS_REQUESTED, "", 1);
            add(counts, at, metric::WITHDRAWALS_REQUESTED_FEN, "", amount_fen.get());
            extras.withdrawals.insert(withdrawal_id.to_string(), (payout_fen.get(), None));
        }
        E::WithdrawalPaid { withdrawal_id, .. } => {
            add(counts, at, metric::WITHDRAWALS_PAID, "", 1);
            add(counts, at, metric::WITHDRAWALS_PAID_FEN, "", requested(withdrawal_id));
        }
        E::WithdrawalRejected { withdrawal_id, reason, .. } => {
            add(counts, at, metric::WITHDRAWALS_RETURNED_FEN, "rejected", requested(withdrawal_id));
            if let Some(w) = extras.withdrawals.get_mut(&withdrawal_id.to_string()) {
                w.1 = Some(reason.to_string());
            }
        }
        E::WithdrawalFailed { withdrawal_id, reason, .. } => {
            if let Some(w) = extras.withdrawals.get_mut(&withdrawal_id.to_string()) {
                w.1 = Some(reason.to_string());
            }
        }
        E::WithdrawalReturned { withdrawal_id, .. } => {
            add(counts, at, metric::WITHDRAWALS_RETURNED_FEN, "returned", requested(withdrawal_id));
        }
        E::CommissionAccountOpened { .. }
        | E::WithdrawalApproved { .. }
        | E::WithdrawalTransferRequested { .. }
        | E::WithdrawalRetried { .. } => {}
    }
}

/// Everything the tenant's distribution streams say.
#[derive(Default)]
struct Folded {
    events: u64,
    distributors: BTreeMap<String, DistributorFold>,
    accounts: BTreeMap<String, AccountFold>,
    counts: Counts,
}

async fn fold(snapshot: &mut PgConnection, tenant: &TenantId) -> Result<Folded> {
    let mut f = Folded::default();
    let mut rows = sqlx::query(EVENTS_SQL).bind(tenant.as_str()).fetch(&mut *snapshot);
    while let Some(row) = rows.try_next().await.context("reading distribution events")? {
        let kind: String = row.try_get("aggregate_type")?;
        let id: String = row.try_get("aggregate_id")?;
        let sequence: i64 = row.try_get("sequence")?;
        let at: DateTime<Utc> = row.try_get("recorded_at")?;
        let payload: serde_json::Value = row.try_get("payload")?;
        f.events += 1;
        if kind == Distributor::TYPE {
            let d = f.distributors.entry(id.clone()).or_insert_with(|| DistributorFold {
                fold: Fold::new(),
                route: None,
                reason: None,
            });
            if d.fold.broken.is_some() {
                continue;
            }
            let decoded: Option<DistributorEvent> = serde_json::from_value(payload.clone()).ok();
            d.fold.apply(&id, sequence, payload);
            if let (None, Some(event)) = (&d.fold.broken, decoded) {
                count_distributor(d, &event, at, &mut f.counts);
            }
        } else {
            let a = f
                .accounts
                .entry(id.clone())
                .or_insert_with(|| AccountFold { fold: Fold::new(), extras: AccountExtras::default() });
            if a.fold.broken.is_some() {
                continue;
            }
            let decoded: Option<CommissionAccountEvent> = serde_json::from_value(payload.clone()).ok();
            let before = a.fold.state.clone();
            a.fold.apply(&id, sequence, payload);
            if let (None, Some(event)) = (&a.fold.broken, decoded) {
                count_account(&mut a.extras, &before, &event, at, &mut f.counts);
            }
        }
    }
    Ok(f)
}

async fn read_rows(snapshot: &mut PgConnection, sql: &str, tenant: &TenantId) -> Result<Vec<sqlx::postgres::PgRow>> {
    sqlx::query(sql).bind(tenant.as_str()).fetch_all(&mut *snapshot).await.with_context(|| format!("reading: {sql}"))
}

fn text(value: Option<String>) -> String {
    value.unwrap_or_else(|| "-".into())
}

/// Keyed rows of the four tables, as the compared columns.
#[derive(Default)]
struct Found {
    distributors: BTreeMap<String, Fields>,
    accounts: BTreeMap<String, Fields>,
    /// (order, level) → (account, columns).
    commissions: BTreeMap<(String, u8), (String, Fields)>,
    /// withdrawal → (account, columns).
    withdrawals: BTreeMap<String, (String, Fields)>,
    counts: Counts,
}

async fn read_model(snapshot: &mut PgConnection, tenant: &TenantId) -> Result<Found> {
    let mut found = Found::default();
    let sql = "SELECT distributor_id, member_id, standing, route, reason, level FROM distributors WHERE tenant_id = $1";
    for row in read_rows(snapshot, sql, tenant).await? {
        let fields = vec![
            ("member_id", row.try_get::<String, _>("member_id")?),
            ("standing", row.try_get::<String, _>("standing")?),
            ("route", text(row.try_get("route")?)),
            ("reason", text(row.try_get("reason")?)),
            ("level", text(row.try_get("level")?)),
        ];
        found.distributors.insert(row.try_get("distributor_id")?, fields);
    }
    let sql = "SELECT account_id, distributor_id FROM commission_accounts WHERE tenant_id = $1";
    for row in read_rows(snapshot, sql, tenant).await? {
        found.accounts.insert(row.try_get("account_id")?, vec![("distributor_id", row.try_get("distributor_id")?)]);
    }
    let sql = "SELECT order_id, level, distributor_id, account_id, buyer_id, basis_fen, amount_fen, state,
                      rule::text AS rule, quantity
                 FROM commissions WHERE tenant_id = $1";
    for row in read_rows(snapshot, sql, tenant).await? {
        let level: i16 = row.try_get("level")?;
        let account: String = row.try_get("account_id")?;
        let fields = vec![
            ("distributor_id", row.try_get::<String, _>("distributor_id")?),
            ("account_id", account.clone()),
            ("buyer_id", row.try_get::<String, _>("buyer_id")?),
            ("basis_fen", row.try_get::<i64, _>("basis_fen")?.to_string()),
            ("amount_fen", row.try_get::<i64, _>("amount_fen")?.to_string()),
            ("state", row.try_get::<String, _>("state")?),
            ("rule", text(row.try_get("rule")?)),
            ("quantity", text(row.try_get::<Option<i32>, _>("quantity")?.map(|q| q.to_string()))),
        ];
        let level = u8::try_from(level).unwrap_or(u8::MAX);
        found.commissions.insert((row.try_get("order_id")?, level), (account, fields));
    }
    let sql = "SELECT withdrawal_id, distributor_id, account_id, amount_fen, fee_fen, payout_fen, state, reason,
                      payout_ref
                 FROM commission_withdrawals WHERE tenant_id = $1";
    for row in read_rows(snapshot, sql, tenant).await? {
        let account: String = row.try_get("account_id")?;
        let fields = vec![
            ("distributor_id", row.try_get::<String, _>("distributor_id")?),
            ("account_id", account.clone()),
            ("amount_fen", row.try_get::<i64, _>("amount_fen")?.to_string()),
            ("fee_fen", row.try_get::<i64, _>("fee_fen")?.to_string()),
            ("payout_fen", row.try_get::<i64, _>("payout_fen")?.to_string()),
            ("state", row.try_get::<String, _>("state")?),
            ("reason", text(row.try_get("reason")?)),
            ("payout_ref", text(row.try_get("payout_ref")?)),
        ];
        found.withdrawals.insert(row.try_get("withdrawal_id")?, (account, fields));
    }
    let metrics: Vec<&str> = COMMISSION_METRICS.iter().chain(DISTRIBUTOR_METRICS.iter()).copied().collect();
    let rows: Vec<(NaiveDate, String, String, i64)> = sqlx::query_as(
        "SELECT day, metric, dimension, value FROM rm_daily_ops
          WHERE tenant_id = $1 AND metric = ANY($2) AND value <> 0",
    )
    .bind(tenant.as_str())
    .bind(&metrics)
    .fetch_all(&mut *snapshot)
    .await
    .context("reading the distribution counters of rm_daily_ops")?;
    for (day, name, dimension, value) in rows {
        let name = metrics.iter().find(|m| **m == name.as_str()).copied().unwrap_or("distribution_counter");
        *found.counts.entry((day, name, dimension)).or_default() += value;
    }
    Ok(found)
}

fn presence(stream: String, expected: &str, found: &str) -> DistributionDifference {
    DistributionDifference { stream, field: "presence", expected: expected.into(), found: found.into() }
}

/// Compares one row both ways: missing, extra, or column by column.
fn compare_row(
    stream: String,
    expected: Option<&Fields>,
    found: Option<&Fields>,
    out: &mut Vec<DistributionDifference>,
) {
    match (expected, found) {
        (None, None) => {}
        (Some(_), None) => out.push(presence(stream, "row", "-")),
        (None, Some(_)) => out.push(presence(stream, "-", "row")),
        (Some(e), Some(f)) => {
            for ((field, e), (_, f)) in e.iter().zip(f.iter()) {
                if e != f {
                    out.push(DistributionDifference {
                        stream: stream.clone(),
                        field,
                        expected: e.clone(),
                        found: f.clone(),
                    });
                }
            }
        }
    }
}

fn compare_distributors(folded: &Folded, found: &Found, out: &mut Vec<DistributionDifference>) -> u64 {
    let mut expected: BTreeMap<&str, Fields> = BTreeMap::new();
    let mut broken: BTreeSet<&str> = BTreeSet::new();
    for (id, d) in &folded.distributors {
        if d.fold.broken.is_some() {
            broken.insert(id);
            continue;
        }
        let (Some((_, member)), Some(standing)) = (&d.fold.state.member, standing_name(d.fold.state.standing)) else {
            continue;
        };
        expected.insert(
            id,
            vec![
                ("member_id", member.to_string()),
                ("standing", standing.to_owned()),
                ("route", text(d.route.clone())),
                ("reason", text(d.reason.clone())),
                ("level", text(d.fold.state.level.as_ref().map(|l| l.as_str().to_owned()))),
            ],
        );
    }
    let ids: BTreeSet<&str> = expected.keys().copied().chain(found.distributors.keys().map(String::as_str)).collect();
    for id in ids.into_iter().filter(|id| !broken.contains(id)) {
        let stream = format!("{}/{id}", Distributor::TYPE);
        compare_row(stream, expected.get(id), found.distributors.get(id), out);
    }
    expected.len() as u64
}

/// Compares accounts, commissions and withdrawals; returns how many of each the events hold.
fn compare_accounts(folded: &Folded, found: &Found, out: &mut Vec<DistributionDifference>) -> (u64, u64, u64) {
    let mut accounts: BTreeMap<String, Fields> = BTreeMap::new();
    let mut commissions: BTreeMap<(String, u8), (String, Fields)> = BTreeMap::new();
    let mut withdrawals: BTreeMap<String, (String, Fields)> = BTreeMap::new();
    let broken: BTreeSet<&str> =
        folded.accounts.iter().filter(|(_, a)| a.fold.broken.is_some()).map(|(id, _)| id.as_str()).collect();
    for (id, a) in folded.accounts.iter().filter(|(_, a)| a.fold.broken.is_none()) {
        let Some(owner) = &a.fold.state.owner else { continue };
        let distributor = owner.distributor_id.to_string();
        accounts.insert(id.clone(), vec![("distributor_id", distributor.clone())]);
        for (key, c) in &a.fold.state.commissions {
            let k = (key.order_id.to_string(), key.level.number());
            let accrual = a.extras.accruals.get(&k).cloned().unwrap_or_else(Accrual::unknown);
            let fields = vec![
                ("distributor_id", distributor.clone()),
                ("account_id", id.clone()),
                ("buyer_id", accrual.buyer),
                ("basis_fen", accrual.basis_fen.to_string()),
                ("amount_fen", c.amount_fen.to_string()),
                ("state", c.state.as_str().to_owned()),
                ("rule", accrual.rule),
                ("quantity", accrual.quantity),
            ];
            commissions.insert(k, (id.clone(), fields));
        }
        for (wid, w) in &a.fold.state.withdrawals {
            let wid = wid.to_string();
            let (payout, reason) = a.extras.withdrawals.get(&wid).cloned().unwrap_or((0, None));
            let fields = vec![
                ("distributor_id", distributor.clone()),
                ("account_id", id.clone()),
                ("amount_fen", w.amount_fen.to_string()),
                ("fee_fen", w.fee_fen.to_string()),
                ("payout_fen", payout.to_string()),
                ("state", w.state.as_str().to_owned()),
                ("reason", text(reason)),
                ("payout_ref", text(w.payout_ref.as_ref().map(ToString::to_string))),
            ];
            withdrawals.insert(wid, (id.clone(), fields));
        }
    }
    let account_stream = |id: &str| format!("{}/{id}", CommissionAccount::TYPE);
    let ids: BTreeSet<&String> = accounts.keys().chain(found.accounts.keys()).collect();
    for id in ids.into_iter().filter(|id| !broken.contains(id.as_str())) {
        compare_row(account_stream(id), accounts.get(id), found.accounts.get(id), out);
    }
    let keys: BTreeSet<&(String, u8)> = commissions.keys().chain(found.commissions.keys()).collect();
    for key in keys {
        let (e, f) = (commissions.get(key), found.commissions.get(key));
        let account = e.or(f).map(|(a, _)| a.as_str()).unwrap_or_default();
        if broken.contains(account) || f.is_some_and(|(a, _)| broken.contains(a.as_str())) {
            continue;
        }
        let stream = format!("{}/commission/{}/{}", account_stream(account), key.0, key.1);
        compare_row(stream, e.map(|(_, x)| x), f.map(|(_, x)| x), out);
    }
    let keys: BTreeSet<&String> = withdrawals.keys().chain(found.withdrawals.keys()).collect();
    for key in keys {
        let (e, f) = (withdrawals.get(key), found.withdrawals.get(key));
        let account = e.or(f).map(|(a, _)| a.as_str()).unwrap_or_default();
        if broken.contains(account) || f.is_some_and(|(a, _)| broken.contains(a.as_str())) {
            continue;
        }
        let stream = format!("{}/withdrawal/{key}", account_stream(account));
        compare_row(stream, e.map(|(_, x)| x), f.map(|(_, x)| x), out);
    }
    (accounts.len() as u64, commissions.len() as u64, withdrawals.len() as u64)
}

fn compare_counts(expected: &Counts, found: &Counts, out: &mut Vec<DistributionDifference>) {
    let keys: BTreeSet<_> = expected.keys().chain(found.keys()).collect();
    for key in keys {
        let (e, f) = (expected.get(key).copied().unwrap_or(0), found.get(key).copied().unwrap_or(0));
        if e == f {
            continue;
        }
        let (day, name, dimension) = key;
        out.push(DistributionDifference {
            stream: format!("daily:{day}:{dimension}"),
            field: name,
            expected: e.to_string(),
            found: f.to_string(),
        });
    }
}

/// Compares the tenant's distribution tables and counters with its distributor
/// and commission account streams.
pub async fn reconcile_distribution(snapshot: &mut PgConnection, tenant: &TenantId) -> Result<DistributionReconcile> {
    let folded = fold(snapshot, tenant).await?;
    let found = read_model(snapshot, tenant).await?;
    let mut report = DistributionReconcile {
        events: folded.events,
        broken_streams: folded
            .distributors
            .values()
            .filter_map(|d| d.fold.broken.clone())
            .chain(folded.accounts.values().filter_map(|a| a.fold.broken.clone()))
            .collect(),
        ..Default::default()
    };
    report.distributors = compare_distributors(&folded, &found, &mut report.differences);
    (report.accounts, report.commissions, report.withdrawals) =
        compare_accounts(&folded, &found, &mut report.differences);
    let expected: Counts = folded.counts.into_iter().filter(|(_, v)| *v != 0).collect();
    compare_counts(&expected, &found.counts, &mut report.differences);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_that_differ_name_their_day_dimension_and_metric() {
        let day = NaiveDate::from_ymd_opt(2026, 12, 5).unwrap();
        let expected = Counts::from([((day, metric::COMMISSION_SETTLED_FEN, "1".to_owned()), 1_000)]);
        let found = Counts::from([
            ((day, metric::COMMISSION_SETTLED_FEN, "1".to_owned()), 1_001),
            ((day, metric::WITHDRAWALS_PAID, String::new()), 1),
        ]);
        let mut out = Vec::new();
        compare_counts(&expected, &found, &mut out);
        let d = |stream: &str, field, e: &str, f: &str| DistributionDifference {
            stream: stream.into(),
            field,
            expected: e.into(),
            found: f.into(),
        };
        assert_eq!(
            out,
            [
                d("daily:2026-12-05:1", metric::COMMISSION_SETTLED_FEN, "1000", "1001"),
                d("daily:2026-12-05:", metric::WITHDRAWALS_PAID, "0", "1"),
            ]
        );
    }

    #[test]
    fn rows_are_compared_both_ways_and_column_by_column() {
        let row = |state: &str| vec![("member_id", "m".to_owned()), ("standing", state.to_owned())];
        let mut out = Vec::new();
        compare_row("distributor/d".into(), Some(&row("active")), Some(&row("suspended")), &mut out);
        compare_row("distributor/e".into(), Some(&row("active")), None, &mut out);
        compare_row("distributor/f".into(), None, Some(&row("active")), &mut out);
        let got: Vec<(&str, &str, &str, &str)> =
            out.iter().map(|d| (d.stream.as_str(), d.field, d.expected.as_str(), d.found.as_str())).collect();
        assert_eq!(
            got,
            [
                ("distributor/d", "standing", "active", "suspended"),
                ("distributor/e", "presence", "row", "-"),
                ("distributor/f", "presence", "-", "row"),
            ]
        );
    }
}
