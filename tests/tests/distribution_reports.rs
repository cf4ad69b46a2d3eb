//! Distribution in the daily report, `wxcm audit reconcile`, `wxcm projections
//! rebuild distribution` and `wxcm audit verify` (issue 15 item 7), against
//! real Postgres and NATS: after a level-1/level-2 chain, a paid order that
//! settles and is clawed back, one reversed before settlement, a paid and a
//! rejected withdrawal and a rebinding, `/reports/daily-ops` shows every
//! distribution counter (JSON and CSV), only to the tenant's owner roles;
//! a clean run reconciles; tampered counters and rows are named by stream and
//! field; a rebuild restores the counters and the live projector goes on
//! without counting twice.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};
use wxcm_domain::distribution::CommissionAccountId;
use wxcm_domain::TenantId;
use wxcm_ops::reconcile::{self, ReconcileReport};
use wxcm_projections::daily::merchant_day;
use wxcm_server::projection_ops;
use wxcm_tests::distribution::*;
use wxcm_tests::{spawn_app_with_projections, TestApp};

/// Sums of the report's distribution rows over its days: (metric, dimension) → value.
type Sums = BTreeMap<(String, String), i64>;

const DISTRIBUTION_METRICS: [&str; 13] = [
    "commissions_accrued",
    "commission_accrued_fen",
    "commission_settled_fen",
    "commission_reversed_fen",
    "withdrawals_requested",
    "withdrawals_requested_fen",
    "withdrawals_paid",
    "withdrawals_paid_fen",
    "withdrawals_returned_fen",
    "distributors_new",
    "distributor_applications",
    "distribution_bindings",
    "distribution_rebindings",
];

fn range(t: &TestApp) -> (NaiveDate, NaiveDate) {
    let today = merchant_day(chrono::Utc::now());
    (today - chrono::Days::new(1), merchant_day(t.app.clock.now()) + chrono::Days::new(1))
}

async fn report(t: &TestApp, token: &str, format: &str) -> (StatusCode, reqwest::Response) {
    let (from, to) = range(t);
    let path = format!("/admin/api/v1/reports/daily-ops?from={from}&to={to}&format={format}");
    let res = t.http.get(t.url(&path)).bearer_auth(token).send().await.unwrap();
    (res.status(), res)
}

async fn distribution_sums(t: &TestApp, token: &str) -> Sums {
    let (status, res) = report(t, token, "json").await;
    assert_eq!(status, StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    let mut sums = Sums::new();
    for row in body["rows"].as_array().unwrap() {
        let metric = row["metric"].as_str().unwrap();
        if DISTRIBUTION_METRICS.contains(&metric) {
            let key = (metric.to_owned(), row["dimension"].as_str().unwrap().to_owned());
            *sums.entry(key).or_default() += row["value"].as_i64().unwrap();
        }
    }
    sums
}

fn sums(pairs: &[(&str, &str, i64)]) -> Sums {
    pairs.iter().map(|(m, d, v)| ((m.to_string(), d.to_string()), *v)).collect()
}

async fn shard_db(t: &TestApp, tenant: &TenantId) -> PgConnection {
    let shard = t.settings.shard_of(tenant.as_str()).to_owned();
    PgConnection::connect(&t.settings.shards[&shard].admin_url).await.unwrap()
}

/// (stream, field, expected, found) of the report's distribution differences.
fn differences(report: &ReconcileReport) -> Vec<(String, &'static str, String, String)> {
    report
        .distribution
        .differences
        .iter()
        .map(|d| (d.stream.clone(), d.field, d.expected.clone(), d.found.clone()))
        .collect()
}

#[tokio::test]
async fn the_daily_report_counts_commissions_withdrawals_distributors_and_bindings_and_reconcile_rebuild_cover_them() {
    let t = spawn_app_with_projections().await;
    let s = shop(&t, "dist-report").await;
    let c = chain(&t, &s, "rprt").await;

    // Order 1 is paid, delivered and settles after the hold; order 2 is refunded while pending.
    let first = buy(&t, &s, &c.c_session).await;
    step(&t, &s).await;
    deliver(&t, &s, &first).await;
    let second = buy(&t, &s, &c.c_session).await;
    step(&t, &s).await;
    refund(&t, &s, &second).await;
    step(&t, &s).await;
    t.clock.advance(chrono::Duration::days(HOLD_DAYS) + chrono::Duration::minutes(1));
    step(&t, &s).await;
    assert_eq!(fig(&account(&t, &s, c.b).await, "withdrawable"), 1_000);

    // B withdraws everything and is paid; A's withdrawal is rejected.
    let (status, w) = withdraw(&t, &c.b_session, json!(1_000)).await;
    assert_eq!(status, StatusCode::CREATED, "{w}");
    let paid_id = w["withdrawal_id"].as_str().unwrap().to_owned();
    let approve = format!("/admin/api/v1/commission-withdrawals/{paid_id}/approve");
    let (status, paid) = send(&t, Method::POST, &s.owner, &approve, None).await;
    assert_eq!((status, paid["state"].as_str()), (StatusCode::OK, Some("paid")), "{paid}");
    step(&t, &s).await;
    let (status, w) = withdraw(&t, &c.a_session, json!(500)).await;
    assert_eq!(status, StatusCode::CREATED, "{w}");
    let reject = format!("/admin/api/v1/commission-withdrawals/{}/reject", w["withdrawal_id"].as_str().unwrap());
    let (status, rejected) = send(&t, Method::POST, &s.owner, &reject, Some(json!({"reason": "bank details"}))).await;
    assert_eq!(status, StatusCode::OK, "{rejected}");

    // Order 1 refunded after settlement: clawed back at both levels.
    refund(&t, &s, &first).await;
    step(&t, &s).await;
    assert_eq!(fig(&account(&t, &s, c.b).await, "clawed_back"), 1_000);

    // A third distributor, and the buyer moved to them (the tenant now rebinds on every arrival).
    let (d, _) = member(&t, &s, "oD_rprt_000001", 0).await;
    let d_code = designate(&t, &s, d).await;
    let settings = json!({"enrolment": {"kind": "designation"}, "binding_mode": {"kind": "last_wins"},
        "commission_depth": 2, "default_rates": {"first_bps": 1000, "second_bps": 500},
        "new_member_reward_points": null});
    let (status, body) = send(&t, Method::PUT, &s.owner, "/admin/api/v1/distribution/settings", Some(settings)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    bind(&t, &c.c_session, &d_code).await;

    // Another tenant with its own distributor: none of it shows in the first tenant's report.
    let other = shop(&t, "dist-report-other").await;
    let (o, _) = member(&t, &other, "oO_rprt_000001", 0).await;
    designate(&t, &other, o).await;
    t.catch_up().await;

    let expected = sums(&[
        ("commissions_accrued", "1", 2),
        ("commissions_accrued", "2", 2),
        ("commission_accrued_fen", "1", 2_000),
        ("commission_accrued_fen", "2", 1_000),
        ("commission_settled_fen", "1", 1_000),
        ("commission_settled_fen", "2", 500),
        ("commission_reversed_fen", "reversed", 1_500),
        ("commission_reversed_fen", "clawed_back", 1_500),
        ("withdrawals_requested", "", 2),
        ("withdrawals_requested_fen", "", 1_500),
        ("withdrawals_paid", "", 1),
        ("withdrawals_paid_fen", "", 1_000),
        ("withdrawals_returned_fen", "rejected", 500),
        ("distributors_new", "designated", 3),
        ("distribution_bindings", "code", 2),
        ("distribution_rebindings", "code", 1),
    ]);
    assert_eq!(distribution_sums(&t, &s.owner).await, expected);
    assert_eq!(distribution_sums(&t, &s.auditor).await, expected);
    assert_eq!(distribution_sums(&t, &other.owner).await, sums(&[("distributors_new", "designated", 1)]));
    let (status, _) = report(&t, &s.staff, "json").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, res) = report(&t, &s.owner, "csv").await;
    assert_eq!(status, StatusCode::OK);
    let csv = res.text().await.unwrap();
    let settled_day = merchant_day(chrono::Utc::now());
    for line in [
        format!("{settled_day},commission_settled_fen,1,1000\r\n"),
        // A binding's day is that of its `bound_at`, the application clock's (moved on by the test).
        format!("{},distribution_rebindings,code,1\r\n", merchant_day(t.app.clock.now())),
    ] {
        assert!(csv.contains(&line), "{line:?} missing from {csv}");
    }

    // A clean run: nothing to report, and every distributor and account stream replays.
    let clean = reconcile::reconcile(&t.settings, &s.tenant).await.unwrap();
    assert!(clean.is_clean(), "{:#?}", clean.distribution);
    assert_eq!(
        (clean.distribution.distributors, clean.distribution.accounts, clean.distribution.commissions),
        (3, 2, 4)
    );
    assert_eq!(clean.distribution.withdrawals, 2);
    let out = wxcm(&t, &["audit", "verify", "--tenant", s.tenant.as_str()]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));

    // Tampering: two counters, two commissions, a withdrawal and a distributor's standing and level.
    let mut db = shard_db(&t, &s.tenant).await;
    let tenant = s.tenant.as_str();
    let b_account = CommissionAccountId::for_distributor(&s.tenant, c.b).to_string();
    let a_account = CommissionAccountId::for_distributor(&s.tenant, c.a).to_string();
    let distributor_stream: String =
        sqlx::query_scalar("SELECT distributor_id FROM distributors WHERE tenant_id = $1 AND member_id = $2")
            .bind(tenant)
            .bind(c.a.to_string())
            .fetch_one(&mut db)
            .await
            .unwrap();
    for statement in [
        "UPDATE rm_daily_ops SET value = value + 7
          WHERE tenant_id = $1 AND metric = 'commission_settled_fen' AND dimension = '1'",
        "DELETE FROM rm_daily_ops WHERE tenant_id = $1 AND metric = 'distributors_new'",
    ] {
        assert_eq!(sqlx::query(statement).bind(tenant).execute(&mut db).await.unwrap().rows_affected(), 1);
    }
    sqlx::query("UPDATE commissions SET amount_fen = 501 WHERE tenant_id = $1 AND order_id = $2 AND level = 2")
        .bind(tenant)
        .bind(&first)
        .execute(&mut db)
        .await
        .unwrap();
    // The rule and quantity columns (migration 0042) are compared too.
    sqlx::query("UPDATE commissions SET quantity = 9 WHERE tenant_id = $1 AND order_id = $2 AND level = 1")
        .bind(tenant)
        .bind(&first)
        .execute(&mut db)
        .await
        .unwrap();
    sqlx::query("UPDATE commission_withdrawals SET state = 'requested' WHERE tenant_id = $1 AND withdrawal_id = $2")
        .bind(tenant)
        .bind(&paid_id)
        .execute(&mut db)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE distributors SET standing = 'suspended', level = 'gold' WHERE tenant_id = $1 AND member_id = $2",
    )
    .bind(tenant)
    .bind(c.a.to_string())
    .execute(&mut db)
    .await
    .unwrap();
    let tampered = reconcile::reconcile(&t.settings, &s.tenant).await.unwrap();
    assert!(!tampered.is_clean());
    let found = differences(&tampered);
    let row = |stream: String, field: &'static str, e: &str, f: &str| (stream, field, e.to_owned(), f.to_owned());
    let day = |dimension: &str| format!("daily:{settled_day}:{dimension}");
    let rows_tampered = vec![
        row(format!("distributor/{distributor_stream}"), "standing", "active", "suspended"),
        row(format!("distributor/{distributor_stream}"), "level", "-", "gold"),
        row(format!("commission_account/{a_account}/commission/{first}/2"), "amount_fen", "500", "501"),
        row(format!("commission_account/{b_account}/commission/{first}/1"), "quantity", "1", "9"),
        row(format!("commission_account/{b_account}/withdrawal/{paid_id}"), "state", "paid", "requested"),
    ];
    let mut expected_found = rows_tampered.clone();
    expected_found.push(row(day("1"), "commission_settled_fen", "1000", "1007"));
    expected_found.push(row(day("designated"), "distributors_new", "3", "0"));
    let mut sorted = found.clone();
    sorted.sort();
    expected_found.sort();
    assert_eq!(sorted, expected_found, "{found:?}");
    let out = wxcm(&t, &["audit", "reconcile", "--tenant", tenant]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    for needed in ["distribution differences", "commission_settled_fen", "distributors_new", "amount_fen"] {
        assert!(text.contains(needed), "{needed} missing: {text}");
    }

    // The rebuild restores the counters (not the trigger-kept rows, which it never writes).
    projection_ops::rebuild(&t.settings, "distribution", Some(&s.tenant)).await.unwrap();
    let mut after = differences(&reconcile::reconcile(&t.settings, &s.tenant).await.unwrap());
    after.sort();
    let mut rows_only = rows_tampered;
    rows_only.sort();
    assert_eq!(after, rows_only);
    assert_eq!(distribution_sums(&t, &s.owner).await, expected);
    assert_eq!(distribution_sums(&t, &other.owner).await, sums(&[("distributors_new", "designated", 1)]));

    // The live projector goes on from the rebuilt checkpoints: a new accrual counts once.
    buy(&t, &s, &c.c_session).await;
    step(&t, &s).await;
    t.catch_up().await;
    let report = reconcile::reconcile(&t.settings, &s.tenant).await.unwrap();
    assert!(
        report.distribution.differences.iter().all(|d| !d.stream.starts_with("daily:")),
        "{:#?}",
        report.distribution.differences
    );
    let now = distribution_sums(&t, &s.owner).await;
    // D is level 1 now; D is bound to nobody, so no level 2.
    assert_eq!(now[&("commissions_accrued".to_owned(), "1".to_owned())], 3);
    assert_eq!(now[&("commissions_accrued".to_owned(), "2".to_owned())], 2);
    t.stop().await;
}
