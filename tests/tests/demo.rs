//! `wxcm demo seed` against the real system and the simulator: fans follow
//! from scene QR codes, members recharge through the simulated Pay, the
//! counter deposits and charges, staff grant points — all through the server's
//! own endpoints, so the report API counts exactly what the seed did. A second
//! run on a tenant with members changes nothing; `--again` adds another batch.

use reqwest::StatusCode;
use wxcm_commands::ports::Role;
use wxcm_tests::admin::{get, login, tenant_user, PASSWORD};
use wxcm_tests::{built_bin, fresh_settings, spawn_app_with_projections_on, Simulator, TestApp};

/// Runs the demo binary (asynchronously: the server under test runs on this test's runtime).
async fn seed(t: &TestApp, sim: &Simulator, tenant: &str, again: bool) -> String {
    let mut command = tokio::process::Command::new(built_bin("wxcm-demo", "wxcm-demo"));
    command.args(["seed", "--tenant", tenant, "--server", &t.base_url, "--simulator", &sim.base_url]);
    if again {
        command.arg("--again");
    }
    let output = command.env("WXCM_ADMIN_PASSWORD", PASSWORD).output().await.expect("wxcm-demo runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    stdout
}

/// Today's report rows summed per (metric, dimension).
async fn today(t: &TestApp, token: &str) -> std::collections::BTreeMap<(String, String), i64> {
    let day = wxcm_projections::daily::merchant_day(chrono::Utc::now()).to_string();
    let (status, report) = get(t, token, &format!("/admin/api/v1/reports/daily-ops?from={day}&to={day}")).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let mut sums = std::collections::BTreeMap::new();
    for row in report["rows"].as_array().unwrap() {
        let key = (row["metric"].as_str().unwrap().to_owned(), row["dimension"].as_str().unwrap().to_owned());
        *sums.entry(key).or_insert(0) += row["value"].as_i64().unwrap();
    }
    sums
}

fn at(sums: &std::collections::BTreeMap<(String, String), i64>, metric: &str, dimension: &str) -> i64 {
    sums.get(&(metric.to_owned(), dimension.to_owned())).copied().unwrap_or(0)
}

#[tokio::test]
async fn the_demo_seed_goes_through_the_real_paths_and_the_dashboard_counts_it() {
    let sim = Simulator::start().await;
    let mut settings = fresh_settings(1).await;
    for base in [
        &mut settings.wechat.api_base,
        &mut settings.wechat.open_base,
        &mut settings.wechat.mp_base,
        &mut settings.wechat.pay_base_url,
    ] {
        base.clone_from(&sim.base_url);
    }
    // Pay notifies the server where it listens: a port chosen now.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    settings.http.listen = format!("127.0.0.1:{port}");
    settings.wechat.public_base_url = format!("http://127.0.0.1:{port}");
    let t = spawn_app_with_projections_on(settings).await;
    tenant_user(&t, "demo", "Demo Cinema", "owner", Role::Owner).await;
    let owner = login(&t, "demo", "owner").await;

    let out = seed(&t, &sim, "demo", false).await;
    assert!(out.contains("40 fans followed"), "{out}");
    t.catch_up().await;
    let sums = today(&t, &owner).await;
    assert_eq!(at(&sums, "follows", "scene_qr"), 30, "{sums:?}");
    assert_eq!(at(&sums, "follows", "other"), 10);
    assert_eq!(at(&sums, "unfollows", "scene_qr") + at(&sums, "unfollows", "other"), 4);
    assert_eq!(at(&sums, "registrations", "subscribe"), 40);
    assert_eq!(at(&sums, "registrations", "staff"), 5);
    assert_eq!(at(&sums, "cash_credited_fen", "recharge"), 98_000, "six recharges paid through Pay");
    assert_eq!(at(&sums, "cash_credited_fen", "deposit"), 73_000);
    assert_eq!(at(&sums, "cash_debited_fen", "charge"), 28_850);
    // 100 welcome points to each of the 40 fans, then 3 × 200 + 3 × 50 by hand.
    assert_eq!(at(&sums, "points_granted", ""), 4_750);
    let (_, codes) = get(&t, &owner, "/admin/api/v1/wechat/qrcodes").await;
    let follows: i64 = codes["items"].as_array().unwrap().iter().map(|q| q["follows"].as_i64().unwrap()).sum();
    assert_eq!(follows, 30, "{codes}");

    // A tenant with members is left alone; --again adds another batch.
    let out = seed(&t, &sim, "demo", false).await;
    assert!(out.contains("already has members"), "{out}");
    t.catch_up().await;
    assert_eq!(today(&t, &owner).await, sums);
    seed(&t, &sim, "demo", true).await;
    t.catch_up().await;
    assert_eq!(at(&today(&t, &owner).await, "registrations", "subscribe"), 80);
    t.stop().await;
}
