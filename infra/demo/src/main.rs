//! `wxcm demo seed`: gives a demo tenant realistic activity through the real
//! paths of a running wxcm — its admin API, its member API, its WeChat callback
//! and Pay notification endpoints — with the WeChat/Pay simulator playing
//! WeChat: fans follow from several scene QR codes (some leave again), members
//! recharge through the simulated Pay, the counter deposits and charges, staff
//! grant points. Nothing is written behind the server's back, so the dashboard,
//! the ledgers and `wxcm audit` all agree with it.
//!
//! Every event is stamped with the database's time (the hash chain forbids
//! writing history backwards), so one run is one day of activity; run it again
//! on later days (`--again`) to build a history.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::{Parser, Subcommand};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

/// The demo's official account and merchant (the simulator accepts any).
const APPID: &str = "wxd3e0000000000a01";
const ACCOUNT_TOKEN: &str = "demo-callback-token";
const ENCODING_AES_KEY: &str = "DemoEncodingAesKey0123456789abcdefghijklmno";
const APP_SECRET: &str = "demo-app-secret-0123456789abcdef";
const MCH_ID: &str = "1900000109";
const PAY_API_V2_KEY: &str = "DemoPayApiV2Key0123456789abcdefg";
/// Scene QR codes fans follow from: (scene, name).
const SCENES: [(&str, &str); 3] =
    [("lobby-poster", "Lobby poster"), ("ticket-counter", "Ticket counter"), ("popcorn-stand", "Popcorn stand")];
/// Fans who follow (every fourth without a scene: search, a shared article, …).
const FANS: usize = 40;
/// Fans who unfollow again the same day.
const LEAVERS: usize = 4;
/// Fans who recharge through WeChat Pay, and how much (fen).
const RECHARGES_FEN: [i64; 6] = [10_000, 5_000, 20_000, 3_000, 10_000, 50_000];
/// Walk-in customers registered at the counter: (deposit, charge) in fen.
const COUNTER_FEN: [(i64, i64); 5] = [(20_000, 4_550), (10_000, 9_800), (5_000, 0), (30_000, 12_000), (8_000, 2_500)];
/// How long to wait for the server to apply a payment.
const PAYMENT_DEADLINE: Duration = Duration::from_secs(30);

#[derive(Parser)]
#[command(name = "wxcm demo", about = "Demo data through the real paths of a running wxcm")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// One day of realistic activity for a tenant (members, follows, recharges, counter, points).
    Seed {
        #[arg(long, default_value = "demo")]
        tenant: String,
        /// The wxcm server (its admin, member, callback and notification endpoints).
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        server: String,
        /// The WeChat/Pay simulator the server's base URLs point at.
        #[arg(long, default_value = "http://127.0.0.1:9100")]
        simulator: String,
        /// An owner or manager of the tenant.
        #[arg(long, default_value = "owner")]
        username: String,
        #[arg(long, env = "WXCM_ADMIN_PASSWORD", hide_env_values = true)]
        password: String,
        /// Seed even when the tenant already has members (another day of activity).
        #[arg(long)]
        again: bool,
    },
}

struct Demo {
    http: Client,
    server: String,
    simulator: String,
    token: String,
    /// Makes this run's openids and idempotency keys its own.
    run: String,
}

fn key() -> String {
    format!("demo-{}", uuid::Uuid::new_v4())
}

async fn answer(response: reqwest::Response) -> Result<(StatusCode, Value)> {
    let status = response.status();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    Ok((status, body))
}

impl Demo {
    async fn sign_in(http: Client, server: &str, simulator: &str, tenant: &str, user: &str, pw: &str) -> Result<Self> {
        let response = http
            .post(format!("{server}/admin/api/v1/login"))
            .json(&json!({"tenant_id": tenant, "username": user, "password": pw}))
            .send()
            .await
            .with_context(|| format!("is wxcm serving on {server}?"))?;
        let (status, body) = answer(response).await?;
        ensure!(status == StatusCode::OK, "signing in as {user} of {tenant}: {status} {body}");
        let token = body["token"].as_str().context("login answer without a token")?.to_owned();
        let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
        Ok(Self { http, server: server.to_owned(), simulator: simulator.to_owned(), token, run })
    }

    /// An admin API call; `write` adds an Idempotency-Key.
    async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<(StatusCode, Value)> {
        let write = method != reqwest::Method::GET;
        let mut request =
            self.http.request(method, format!("{}/admin/api/v1{path}", self.server)).bearer_auth(&self.token);
        if write {
            request = request.header("Idempotency-Key", key());
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        answer(request.send().await.with_context(|| format!("calling {path}"))?).await
    }

    async fn admin_ok(&self, method: reqwest::Method, path: &str, body: Value) -> Result<Value> {
        let (status, answered) = self.admin(method, path, Some(body)).await?;
        ensure!(status.is_success(), "{path}: {status} {answered}");
        Ok(answered)
    }

    async fn simulator(&self, path: &str, body: Value) -> Result<Value> {
        let response = self
            .http
            .post(format!("{}{path}", self.simulator))
            .json(&body)
            .send()
            .await
            .with_context(|| format!("is the simulator running on {}?", self.simulator))?;
        let (status, body) = answer(response).await?;
        ensure!(status.is_success(), "simulator {path}: {status} {body}");
        Ok(body)
    }

    /// The official account with its Pay merchant (v2), at wxcm and at the simulator.
    async fn bind_account(&self) -> Result<()> {
        self.simulator("/sandbox/apps", json!({"appid": APPID, "secret": APP_SECRET})).await?;
        self.simulator(
            "/sandbox/pay/merchants",
            json!({"mch_id": MCH_ID, "appid": APPID, "api_v2_key": PAY_API_V2_KEY}),
        )
        .await?;
        let account = json!({
            "name": "Demo Cinema", "token": ACCOUNT_TOKEN, "encoding_aes_key": ENCODING_AES_KEY,
            "app_secret": APP_SECRET, "pay": {"mch_id": MCH_ID, "api_v2_key": PAY_API_V2_KEY},
        });
        self.admin_ok(reqwest::Method::PUT, &format!("/tenant/official-accounts/{APPID}"), account).await?;
        let rules = json!({"initial_points": 100, "referral_level1_points": 50, "referral_level2_points": 20,
                           "expiry": {"kind": "days", "days": 365}});
        self.admin_ok(reqwest::Method::PUT, "/tenant/points-rules", rules).await?;
        Ok(())
    }

    /// The scene QR codes (created through WeChat's API, once per scene).
    async fn scene_codes(&self) -> Result<()> {
        let (status, list) = self.admin(reqwest::Method::GET, "/wechat/qrcodes", None).await?;
        ensure!(status == StatusCode::OK, "listing QR codes: {status} {list}");
        let existing: Vec<&str> = list["items"]
            .as_array()
            .map(|items| items.iter().filter_map(|q| q["scene"].as_str()).collect())
            .unwrap_or_default();
        for (scene, name) in SCENES {
            if !existing.contains(&scene) {
                let body = json!({"appid": APPID, "scene": scene, "name": name, "permanent": true});
                self.admin_ok(reqwest::Method::POST, "/wechat/qrcodes", body).await?;
            }
        }
        Ok(())
    }

    fn openid(&self, i: usize) -> String {
        format!("o_demo_{}_{i:03}", self.run)
    }

    /// WeChat pushes a (safe-mode) callback to wxcm, as it does when a fan acts.
    async fn push(&self, kind: &str, openid: &str, scene: Option<&str>) -> Result<()> {
        let body = json!({
            "target_base_url": self.server, "appid": APPID, "token": ACCOUNT_TOKEN,
            "encoding_aes_key": ENCODING_AES_KEY, "mode": "safe",
            "message": {"kind": kind, "openid": openid, "scene": scene}, "retry": true,
        });
        self.simulator("/sandbox/callbacks/push", body).await?;
        Ok(())
    }

    async fn follows(&self) -> Result<()> {
        for i in 0..FANS {
            let scene = (i % 4 < 3).then(|| SCENES[i % SCENES.len()].0);
            self.push("subscribe", &self.openid(i), scene).await?;
        }
        for i in 0..LEAVERS {
            self.push("unsubscribe", &self.openid(FANS - 1 - i), None).await?;
        }
        Ok(())
    }

    /// A fan opens the member page (OAuth through the simulator) and recharges with WeChat Pay.
    async fn recharge(&self, openid: &str, amount_fen: i64) -> Result<()> {
        let code = self.simulator("/sandbox/oauth/codes", json!({"appid": APPID, "openid": openid})).await?;
        let code = code["code"].as_str().context("no OAuth code")?;
        let response = self
            .http
            .post(format!("{}/m/api/v1/sessions", self.server))
            .json(&json!({"appid": APPID, "code": code}))
            .send()
            .await?;
        let (status, session) = answer(response).await?;
        ensure!(status.is_success(), "member session: {status} {session}");
        let member_token = session["token"].as_str().context("no member token")?;
        let response = self
            .http
            .post(format!("{}/m/api/v1/recharges", self.server))
            .bearer_auth(member_token)
            .header("Idempotency-Key", key())
            .json(&json!({"amount_fen": amount_fen, "api": "v2"}))
            .send()
            .await?;
        let (status, created) = answer(response).await?;
        ensure!(status.is_success(), "recharge: {status} {created}");
        let order_id = created["order_id"].as_str().context("no order id")?;
        self.simulator(&format!("/sandbox/pay/orders/{order_id}/pay"), json!({})).await?;
        // The notification credits the balance; the order says when.
        let deadline = Instant::now() + PAYMENT_DEADLINE;
        loop {
            let response = self
                .http
                .get(format!("{}/m/api/v1/recharges/{order_id}", self.server))
                .bearer_auth(member_token)
                .send()
                .await?;
            let (_, order) = answer(response).await?;
            let status = order["status"].as_str().or_else(|| order["order"]["status"].as_str());
            if status == Some("paid") {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("recharge {order_id} not credited within {PAYMENT_DEADLINE:?}: {order}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn member_by_openid(&self, openid: &str) -> Result<Value> {
        let (status, member) = self.admin(reqwest::Method::GET, &format!("/members/by-openid/{openid}"), None).await?;
        ensure!(status == StatusCode::OK, "member {openid}: {status} {member}");
        Ok(member)
    }

    /// Walk-in customers at the counter: registered by hand, cash deposited, purchases charged.
    async fn counter(&self) -> Result<()> {
        for (deposit_fen, charge_fen) in COUNTER_FEN {
            let member = self.admin_ok(reqwest::Method::POST, "/members", json!({})).await?;
            let id = member["member_id"].as_str().context("no member id")?;
            let body = json!({"amount_fen": deposit_fen, "reason": "Cash at the counter", "reference": format!("R-{}", self.run)});
            self.admin_ok(reqwest::Method::POST, &format!("/members/{id}/cash/deposits"), body).await?;
            if charge_fen > 0 {
                let body = json!({"amount_fen": charge_fen, "reason": "Tickets and snacks"});
                self.admin_ok(reqwest::Method::POST, &format!("/members/{id}/cash/charges"), body).await?;
            }
        }
        Ok(())
    }

    /// Points by hand: a birthday gift (a year) and a trial bonus that expires tomorrow.
    async fn points(&self) -> Result<()> {
        for i in 0..6 {
            let member = self.member_by_openid(&self.openid(i)).await?;
            let id = member["member_id"].as_str().context("no member id")?;
            let (points, reason, days) = if i % 2 == 0 { (200, "Birthday gift", 365) } else { (50, "Trial bonus", 1) };
            let body = json!({"points": points, "reason": reason, "expiry": {"kind": "days", "days": days}});
            self.admin_ok(reqwest::Method::POST, &format!("/members/{id}/points/grants"), body).await?;
        }
        Ok(())
    }
}

async fn seed(demo: &Demo, tenant: &str, again: bool) -> Result<()> {
    let (status, page) = demo.admin(reqwest::Method::GET, "/members?limit=1", None).await?;
    ensure!(status == StatusCode::OK, "listing members: {status} {page}");
    if !again && page["members"].as_array().is_some_and(|m| !m.is_empty()) {
        println!("tenant {tenant} already has members: not seeding (`wxcm demo seed --again` adds another day)");
        return Ok(());
    }
    println!("seeding tenant {tenant} through {} (simulator {})", demo.server, demo.simulator);
    demo.bind_account().await.context("binding the demo official account")?;
    demo.scene_codes().await.context("creating scene QR codes")?;
    demo.follows().await.context("fans following")?;
    println!("  {FANS} fans followed ({LEAVERS} left again) from {} scene QR codes and elsewhere", SCENES.len());
    for (i, amount_fen) in RECHARGES_FEN.iter().enumerate() {
        demo.recharge(&demo.openid(i), *amount_fen).await.context("a recharge through WeChat Pay")?;
    }
    println!("  {} recharges paid through the simulated WeChat Pay", RECHARGES_FEN.len());
    demo.counter().await.context("counter deposits and charges")?;
    println!("  {} walk-in members with counter deposits and charges", COUNTER_FEN.len());
    demo.points().await.context("points grants")?;
    println!("  points granted by hand (some expire tomorrow)");
    println!("done: open {}/console/ (the dashboard shows it once the projectors catch up, in a second)", demo.server);
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Seed { tenant, server, simulator, username, password, again } => {
            let http = Client::builder().timeout(Duration::from_secs(30)).build()?;
            let server = server.trim_end_matches('/');
            let simulator = simulator.trim_end_matches('/');
            let demo = Demo::sign_in(http, server, simulator, &tenant, &username, &password).await?;
            seed(&demo, &tenant, again).await
        }
    }
}
