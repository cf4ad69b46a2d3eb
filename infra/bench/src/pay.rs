//! `wxcm bench pay`: WeChat Pay "paid" notifications through the whole path.
//!
//! The server runs in-process (the API role, HTTP on port 0) on a dedicated
//! database with one tenant whose official account has merchant settings (the
//! API v2 key, the API v3 key and the simulator's platform key registered in
//! the pay store, as the black-box tests do). Set-up, not timed: one member
//! and one balance-recharge order per notification to send, created through
//! the payment aggregate. Then one notification per order is offered
//! open-loop at `--rate` per second for `--duration-secs` (a tick finding
//! `--concurrency` already in flight is counted as skipped, not delayed):
//! - `--api v2`: XML signed (MD5) with the API key, to `/pay/notify/v2/{appid}`;
//! - `--api v3`: JSON with the resource AES-256-GCM encrypted with the API v3
//!   key, signed (RSA-SHA256) with the platform test key during set-up (Pay's
//!   work, kept off the two cores during the window; hence at most
//!   200 s, inside the handler's 300 s timestamp window), to
//!   `/pay/notify/v3/{appid}`.
//!
//! A notification counts as applied when the answer is the "applied" reply
//! (v2 SUCCESS XML, v3 2xx): the handler credits the member inline and answers
//! so only once the order is paid and the credit committed. Afterwards the
//! event log is checked: every member credited at most once, at least once per
//! applied notification, and a sample of orders is read back (paid, balance
//! equal to the amount). Latency runs from the tick's due instant to the answer.
//!
//! The last line of stdout is one JSON object. A notification not applied
//! (an error), a skipped tick or a failed check fails the run.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use chrono::Utc;
use comfy_table::{presets, Cell, Table};
use serde_json::json;
use wxcm_commands::members::{self, RegisterRequest};
use wxcm_commands::tenants::{AccountInput, PayInput};
use wxcm_commands::{pay_flows, payments, CommandContext};
use wxcm_domain::member::{CardLevel, Provenance, RegistrationSource};
use wxcm_domain::payment::{PayApiVersion, PaymentCommand, PaymentPurpose, PaymentStatus};
use wxcm_domain::{Actor, AmountFen, AppId, MemberId, OpenId, OutTradeNo, PayRef, Reference, TenantId};
use wxcm_protocol::pay::{v2, v3};

use wxcm_server::app::Role;
use wxcm_server::config::Settings;

use crate::driver::{self, open_loop, Outcome};
use crate::setup::{self, number, round, verdict, Target, DURATION_SECS_MAX, POOL_SPARE_CONNECTIONS};

pub const RATE_MAX: u32 = 5_000;
pub const CONCURRENCY_MAX: u32 = driver::CONCURRENCY_MAX;
/// Orders (and members) created up front, at most: rate × duration.
pub const ORDERS_MAX: u64 = 200_000;
/// Database connections of the server.
const POOL_MAX: u32 = 32;
/// Tasks creating the members and orders.
const SETUP_TASKS: u64 = 16;
/// Orders read back one by one after the run.
const SAMPLE_MAX: usize = 200;
const APPID: &str = "wx00000000000be4a7";
const MCH_ID: &str = "1900000109";
const AMOUNT_FEN: i64 = 1_000;
const API_V2_KEY: &str = "192006250b4c09247ec02edce69f6a2d";
const API_V3_KEY: &str = "0123456789abcdef0123456789abcdef";
const PLATFORM_SERIAL: &str = wxcm_simulator::pay::PLATFORM_SERIAL_DEFAULT;
const PLATFORM_PRIVATE_PEM: &str = include_str!("../../../gateways/testdata/platform_private.pem");
const PLATFORM_PUBLIC_PEM: &str = include_str!("../../../gateways/testdata/platform_public.pem");
const TARGET_P99_MS: f64 = 200.0;
const TARGET_OFFERED_RATE: u32 = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PayApiArg {
    V2,
    V3,
}

impl PayApiArg {
    fn as_str(self) -> &'static str {
        match self {
            Self::V2 => "v2",
            Self::V3 => "v3",
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct PayBenchArgs {
    /// Scratch database on the default shard's server; dropped and recreated.
    #[arg(long, default_value = "wxcm_bench_pay")]
    pub database: String,
    /// Offered notifications per second.
    #[arg(long, default_value_t = TARGET_OFFERED_RATE)]
    pub rate: u32,
    /// Length of the timed window.
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
    /// Notifications in flight at most.
    #[arg(long, default_value_t = 32)]
    pub concurrency: u32,
    /// Which notification protocol to send.
    #[arg(long, value_enum, default_value_t = PayApiArg::V2)]
    pub api: PayApiArg,
    /// Keep the bench database afterwards.
    #[arg(long)]
    pub keep: bool,
}

impl PayBenchArgs {
    fn validate(&self, settings: &Settings) -> Result<()> {
        ensure!((1..=RATE_MAX).contains(&self.rate), "--rate must be 1..={RATE_MAX}");
        ensure!(
            (1..=DURATION_SECS_MAX).contains(&self.duration_secs),
            "--duration-secs must be 1..={DURATION_SECS_MAX}"
        );
        ensure!((1..=CONCURRENCY_MAX).contains(&self.concurrency), "--concurrency must be 1..={CONCURRENCY_MAX}");
        ensure!(self.orders() <= ORDERS_MAX, "--rate × --duration-secs must be at most {ORDERS_MAX}");
        ensure!(
            self.api == PayApiArg::V2 || self.duration_secs <= V3_DURATION_SECS_MAX,
            "--api v3 signs its notifications up front: --duration-secs must be at most {V3_DURATION_SECS_MAX}"
        );
        ensure!(
            self.api == PayApiArg::V2 || self.orders() <= V3_ORDERS_MAX,
            "--api v3 signs its notifications up front: --rate × --duration-secs must be at most {V3_ORDERS_MAX}"
        );
        setup::check_database_name(&self.database, settings)
    }

    fn orders(&self) -> u64 {
        u64::from(self.rate) * self.duration_secs
    }
}

/// What the run measured and what the event log says afterwards.
struct Figures {
    sent: Outcome,
    setup: Duration,
    credits: i64,
    credited_members: i64,
    paid_orders: i64,
    sampled: usize,
    sample_failures: Vec<String>,
}

impl Figures {
    /// Every applied notification credited its member, nobody twice, the sample read back right.
    fn verified(&self) -> bool {
        let ok = i64::try_from(self.sent.ok).unwrap_or(i64::MAX);
        self.credits == self.credited_members
            && self.credits >= ok
            && self.paid_orders == self.credits
            && self.sample_failures.is_empty()
    }

    fn failed_checks(&self) -> Vec<String> {
        let mut failed: Vec<String> = self.sample_failures.iter().take(10).cloned().collect();
        if !self.verified() {
            failed.push(format!(
                "the event log does not show every applied notification credited exactly once: \
                 {} applied, {} credits, {} members credited, {} orders paid",
                self.sent.ok, self.credits, self.credited_members, self.paid_orders
            ));
        }
        failed
    }
}

fn order_id(i: u64) -> Result<OutTradeNo> {
    Ok(OutTradeNo::parse(&format!("bpay{i:010}"))?)
}

fn openid(i: u64) -> Result<OpenId> {
    Ok(OpenId::parse(&format!("oBenchPay_{i:010}"))?)
}

fn ctx(tenant: &TenantId, key: &str) -> Result<CommandContext> {
    setup::context(tenant, key)
}

async fn bind_account(app: &wxcm_commands::App, tenant: &TenantId) -> Result<()> {
    let input = AccountInput {
        appid: APPID.into(),
        name: "Bench Pay".into(),
        token: "bench-pay-token".into(),
        encoding_aes_key: "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG".into(),
        app_secret: "bench-app-secret".into(),
        pay: Some(PayInput {
            mch_id: MCH_ID.into(),
            api_v2_key: Some(API_V2_KEY.into()),
            api_v3_key: Some(API_V3_KEY.into()),
            merchant_cert_serial: None,
            merchant_private_key: None,
        }),
    };
    let actor = Actor::Admin { username: "bench".into() };
    wxcm_commands::tenants::bind_account(app, tenant, input, actor, &ctx(tenant, "bench-bind-account")?).await?;
    pay_flows::put_platform_key(app, tenant, MCH_ID, PLATFORM_SERIAL, PLATFORM_PUBLIC_PEM)
        .await
        .map_err(|e| anyhow::anyhow!("registering the platform key: {e}"))?;
    Ok(())
}

/// Member `i` and its unpaid recharge order `i`.
async fn member_and_order(app: &wxcm_commands::App, tenant: &TenantId, api: PayApiVersion, i: u64) -> Result<MemberId> {
    let openid = openid(i)?;
    let request = RegisterRequest {
        openid: Some(openid.clone()),
        source: RegistrationSource::Oauth,
        card_level: CardLevel::standard(),
    };
    let actor = Actor::Wechat { source: "bench".into() };
    let (view, _) = members::register(app, tenant, request, actor, &ctx(tenant, &format!("bench-member-{i}"))?)
        .await
        .map_err(|e| anyhow::anyhow!("registering member {i}: {e}"))?;
    let member = view.member_id;
    let order_id = order_id(i)?;
    let c = ctx(tenant, &format!("bench-order-{i}"))?;
    let command = PaymentCommand::Create {
        order_id: order_id.clone(),
        tenant_id: tenant.clone(),
        member_id: member,
        openid,
        appid: AppId::parse(APPID)?,
        mch_id: PayRef::parse(MCH_ID)?,
        purpose: PaymentPurpose::BalanceRecharge,
        amount_fen: AmountFen::new(AMOUNT_FEN)?,
        api_version: api,
        expires_at: app.clock.now() + chrono::Duration::hours(2),
        provenance: Provenance {
            actor: Actor::Member { member_id: member },
            reason: Reference::parse("balance recharge")?,
            reference: None,
            idempotency_key: c.idempotency_key.clone(),
        },
    };
    payments::execute(app, tenant, &order_id, command.clone(), &command, &c)
        .await
        .map_err(|e| anyhow::anyhow!("creating order {i}: {e}"))?;
    Ok(member)
}

/// Creates `n` members and orders with a few tasks; member ids by index.
async fn set_up_orders(
    app: &Arc<wxcm_commands::App>,
    tenant: &TenantId,
    api: PayApiVersion,
    n: u64,
) -> Result<Vec<MemberId>> {
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..SETUP_TASKS {
        let (app, tenant) = (app.clone(), tenant.clone());
        tasks.spawn(async move {
            let mut made = Vec::new();
            let mut i = worker;
            while i < n {
                made.push((i, member_and_order(&app, &tenant, api, i).await?));
                i += SETUP_TASKS;
            }
            anyhow::Ok(made)
        });
    }
    let mut members = vec![None; usize::try_from(n)?];
    while let Some(joined) = tasks.join_next().await {
        for (i, member) in joined.context("set-up task")?? {
            members[usize::try_from(i)?] = Some(member);
        }
    }
    members.into_iter().map(|m| m.context("a member was not created")).collect()
}

/// The v2 notification of order `i`, signed with the API key.
fn v2_body(i: u64) -> Result<String> {
    let order = order_id(i)?;
    let mut fields = std::collections::BTreeMap::from([
        ("return_code".to_owned(), "SUCCESS".to_owned()),
        ("result_code".to_owned(), "SUCCESS".to_owned()),
        ("appid".to_owned(), APPID.to_owned()),
        ("mch_id".to_owned(), MCH_ID.to_owned()),
        ("nonce_str".to_owned(), format!("benchnonce{i:022}")),
        ("openid".to_owned(), openid(i)?.to_string()),
        ("out_trade_no".to_owned(), order.to_string()),
        ("transaction_id".to_owned(), format!("42000{}", order.as_str())),
        ("total_fee".to_owned(), AMOUNT_FEN.to_string()),
        ("cash_fee".to_owned(), AMOUNT_FEN.to_string()),
        ("fee_type".to_owned(), "CNY".to_owned()),
        ("trade_type".to_owned(), "JSAPI".to_owned()),
        (
            "time_end".to_owned(),
            Utc::now()
                .with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).context("offset")?)
                .format("%Y%m%d%H%M%S")
                .to_string(),
        ),
    ]);
    let sign = v2::sign(&fields, API_V2_KEY, v2::SignType::Md5);
    fields.insert(v2::SIGN_FIELD.into(), sign);
    Ok(v2::build_xml(&fields))
}

/// The v3 notification body of order `i`, resource encrypted with the API v3 key.
fn v3_body(i: u64, key: &[u8; v3::API_V3_KEY_BYTES]) -> Result<Vec<u8>> {
    let order = order_id(i)?;
    let resource = json!({
        "appid": APPID, "mchid": MCH_ID, "out_trade_no": order.as_str(),
        "transaction_id": format!("43000{}", order.as_str()), "trade_type": "JSAPI", "trade_state": "SUCCESS",
        "success_time": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
        "amount": { "total": AMOUNT_FEN, "payer_total": AMOUNT_FEN, "currency": "CNY", "payer_currency": "CNY" },
        "payer": { "openid": openid(i)?.as_str() }
    });
    let nonce = format!("{i:012}");
    let ciphertext = v3::encrypt_resource(key, &nonce, "transaction", resource.to_string().as_bytes())?;
    Ok(serde_json::to_vec(&json!({
        "id": format!("EV-{}", order.as_str()), "create_time": Utc::now().to_rfc3339(),
        "event_type": "TRANSACTION.SUCCESS", "resource_type": "encrypt-resource", "summary": "ok",
        "resource": { "algorithm": v3::RESOURCE_ALGORITHM, "ciphertext": ciphertext,
                      "associated_data": "transaction", "original_type": "transaction", "nonce": nonce }
    }))?)
}

/// Longest v3 run: its notifications are signed during set-up, and the handler
/// refuses timestamps more than `v3::TIMESTAMP_SKEW_SECS_MAX` old (set-up and margin kept).
pub const V3_DURATION_SECS_MAX: u64 = 200;
/// Most v3 notifications: signing them (~2 ms each) must also stay well inside that window.
pub const V3_ORDERS_MAX: u64 = 40_000;

/// One notification ready to send; v3 carries the platform's `Wechatpay-*` headers.
struct Prepared {
    body: Vec<u8>,
    v3_headers: Option<(String, String, String)>,
}

/// Signs a v3 body as Pay does, now (timestamp, nonce, signature). Done in set-up:
/// RSA signing is Pay's work, and on a 2-core machine it would compete with the server.
fn sign_v3(key: &v3::PrivateKey, i: u64, body: &[u8]) -> Result<(String, String, String)> {
    let ts = Utc::now().timestamp().to_string();
    let nonce = format!("BENCHNONCE{i:022}");
    let signature = v3::sign_message(key, &ts, &nonce, body)?;
    Ok((ts, nonce, signature))
}

/// What a sender needs: the client and the URL.
struct Sender {
    http: reqwest::Client,
    url: String,
}

impl Sender {
    /// Sends one prepared notification; Ok when the answer is the "applied" reply.
    async fn send(&self, n: &Prepared) -> Result<()> {
        match &n.v3_headers {
            None => {
                let res = self.http.post(&self.url).body(n.body.clone()).send().await?;
                let status = res.status();
                let text = res.text().await?;
                ensure!(status.is_success() && text == v2::REPLY_SUCCESS, "status {status}: {text}");
                Ok(())
            }
            Some((ts, nonce, signature)) => {
                let res = self
                    .http
                    .post(&self.url)
                    .header("Wechatpay-Timestamp", ts)
                    .header("Wechatpay-Nonce", nonce)
                    .header("Wechatpay-Signature", signature)
                    .header("Wechatpay-Serial", PLATFORM_SERIAL)
                    .header("Content-Type", "application/json")
                    .body(n.body.clone())
                    .send()
                    .await?;
                let status = res.status();
                ensure!(status.is_success(), "status {status}: {}", res.text().await.unwrap_or_default());
                Ok(())
            }
        }
    }
}

/// Notification `i` at tick `i`; the indexes of those applied.
async fn send_all(sender: Arc<Sender>, bodies: Vec<Prepared>, args: &PayBenchArgs) -> Result<(Outcome, Vec<u64>)> {
    let bodies = Arc::new(bodies);
    let applied = Arc::new(Mutex::new(Vec::new()));
    let ticks = u64::try_from(bodies.len())?;
    let recorded = applied.clone();
    let outcome = open_loop(args.rate, ticks, args.concurrency, move |i| {
        let (sender, bodies, applied) = (sender.clone(), bodies.clone(), recorded.clone());
        async move {
            let body = bodies.get(usize::try_from(i)?).context("a body per tick")?;
            sender.send(body).await?;
            applied.lock().expect("applied lock").push(i);
            Ok(())
        }
    })
    .await?;
    let mut applied = std::mem::take(&mut *applied.lock().expect("applied lock"));
    applied.sort_unstable();
    Ok((outcome, applied))
}

/// Reads back a spread of applied orders: paid, and the member's balance is exactly one credit.
async fn check_sample(
    app: &wxcm_commands::App,
    tenant: &TenantId,
    members: &[MemberId],
    applied: &[u64],
) -> Result<(usize, Vec<String>)> {
    let step = applied.len().div_ceil(SAMPLE_MAX).max(1);
    let mut failures = Vec::new();
    let mut sampled = 0;
    for &i in applied.iter().step_by(step) {
        sampled += 1;
        let order = payments::get(app, tenant, &order_id(i)?).await.map_err(|e| anyhow::anyhow!("order {i}: {e}"))?;
        if order.status != PaymentStatus::Paid {
            failures.push(format!("order {i} is {:?}", order.status));
        }
        let member = members.get(usize::try_from(i)?).context("member index")?;
        let balance = members::get(app, tenant, *member).await.map_err(|e| anyhow::anyhow!("member {i}: {e}"))?;
        if balance.balance_fen != AMOUNT_FEN {
            failures.push(format!("member {i} has {} fen", balance.balance_fen));
        }
    }
    Ok((sampled, failures))
}

async fn count(pool: &sqlx::PgPool, sql: &str) -> Result<i64> {
    sqlx::query_scalar(sql).fetch_one(pool).await.with_context(|| format!("counting: {sql}"))
}

async fn run(base: &Settings, target: &Target, args: &PayBenchArgs) -> Result<Figures> {
    target.recreate().await?;
    let mut settings = target.settings(base, POOL_MAX + POOL_SPARE_CONNECTIONS, setup::cache_for(1_000));
    settings.http.listen = "127.0.0.1:0".into();
    let application = setup::build(&settings, Role::Api).await?;
    let app = application.app.clone();
    let tenant = setup::create_tenant(&app).await?;
    bind_account(&app, &tenant).await?;
    let api = match args.api {
        PayApiArg::V2 => PayApiVersion::V2,
        PayApiArg::V3 => PayApiVersion::V3,
    };
    let n = args.orders();
    tracing::info!(orders = n, "set-up: members and unpaid orders");
    let setup_started = Instant::now();
    let members = set_up_orders(&app, &tenant, api, n).await?;
    let api_v3_key = v3::api_v3_key(API_V3_KEY)?;
    let platform_key = v3::load_private_key_pem(PLATFORM_PRIVATE_PEM)?;
    let bodies = (0..n)
        .map(|i| match args.api {
            PayApiArg::V2 => Ok(Prepared { body: v2_body(i)?.into_bytes(), v3_headers: None }),
            PayApiArg::V3 => {
                let body = v3_body(i, &api_v3_key)?;
                let v3_headers = Some(sign_v3(&platform_key, i, &body)?);
                Ok(Prepared { body, v3_headers })
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let setup = setup_started.elapsed();
    let running = application.spawn();
    let addr = running.addr.context("the API role listens")?;
    let outcome = async {
        let sender = Arc::new(Sender {
            http: reqwest::Client::builder().pool_max_idle_per_host(CONCURRENCY_MAX as usize).build()?,
            url: format!("http://{addr}/pay/notify/{}/{APPID}", args.api.as_str()),
        });
        tracing::info!(rate = args.rate, api = args.api.as_str(), "paid notifications at a fixed offered load");
        let (sent, applied) = send_all(sender, bodies, args).await?;
        let admin = target.admin_pool(1).await?;
        let credits = count(
            &admin,
            "SELECT count(*) FROM events WHERE aggregate_type = 'member' AND event_type = 'RechargeCredited'",
        )
        .await?;
        let credited_members = count(
            &admin,
            "SELECT count(DISTINCT aggregate_id) FROM events \
             WHERE aggregate_type = 'member' AND event_type = 'RechargeCredited'",
        )
        .await?;
        let paid_orders = count(&admin, "SELECT count(*) FROM events WHERE event_type = 'PaymentOrderPaid'").await?;
        admin.close().await;
        let (sampled, sample_failures) = check_sample(&app, &tenant, &members, &applied).await?;
        anyhow::Ok(Figures { sent, setup, credits, credited_members, paid_orders, sampled, sample_failures })
    }
    .await;
    running.stop().await;
    outcome
}

pub async fn bench_pay(base: &Settings, args: PayBenchArgs) -> Result<()> {
    args.validate(base)?;
    let target = Target::new(base, &args.database)?;
    wxcm_server::app::install_crypto_provider();
    let outcome = run(base, &target, &args).await;
    target.finish(args.keep).await;
    let figures = outcome?;
    figures.sent.warn_errors("notifications");
    let failed = figures.failed_checks();
    setup::finish("pay", &report_table(&figures, &args), report_json(&figures, &args), figures.sent.counts(), &failed)
}

fn report_table(f: &Figures, args: &PayBenchArgs) -> Table {
    let mut table = Table::new();
    table.load_preset(presets::UTF8_FULL_CONDENSED).set_header(vec!["figure", "value", "unit", "target"]);
    let row = |table: &mut Table, figure: String, value: String, unit: &str, target: String| {
        table.add_row(vec![Cell::new(figure), number(value), Cell::new(unit), Cell::new(target)]);
    };
    row(
        &mut table,
        format!("{} paid notifications offered at {}/s", args.api.as_str(), args.rate),
        format!("{:.1}", f.sent.per_second()),
        "notifications/s",
        String::new(),
    );
    let sent = &f.sent;
    let p99_met = sent.latency_ms(0.99) <= TARGET_P99_MS;
    row(
        &mut table,
        "latency p50 / p99 / max".into(),
        format!("{:.2} / {:.2} / {:.2}", sent.latency_ms(0.5), sent.latency_ms(0.99), sent.latency_ms(1.0)),
        "ms",
        format!("p99 <= {TARGET_P99_MS} ms at {TARGET_OFFERED_RATE}/s ({})", verdict(p99_met)),
    );
    row(
        &mut table,
        "applied / errors / skipped".into(),
        format!("{} / {} / {}", sent.ok, sent.errors, sent.skipped),
        "",
        format!("all applied ({})", verdict(sent.counts().is_clean())),
    );
    row(
        &mut table,
        "credits / members credited / orders paid".into(),
        format!("{} / {} / {}", f.credits, f.credited_members, f.paid_orders),
        "",
        format!("all equal, >= {} ({})", sent.ok, verdict(f.verified())),
    );
    row(
        &mut table,
        "orders read back (paid, credited once)".into(),
        format!("{} ({} failed)", f.sampled, f.sample_failures.len()),
        "",
        String::new(),
    );
    row(
        &mut table,
        "set-up (members, orders, bodies; not timed)".into(),
        format!("{:.1}", f.setup.as_secs_f64()),
        "s",
        String::new(),
    );
    table
}

fn report_json(f: &Figures, args: &PayBenchArgs) -> serde_json::Value {
    json!({
        "api": args.api.as_str(),
        "notifications_per_s": round(f.sent.per_second(), 1),
        "offered_rate": args.rate,
        "p50_ms": round(f.sent.latency_ms(0.5), 2),
        "p99_ms": round(f.sent.latency_ms(0.99), 2),
        "max_ms": round(f.sent.latency_ms(1.0), 2),
        "applied": f.sent.ok,
        "credits": f.credits,
        "members_credited": f.credited_members,
        "orders_paid": f.paid_orders,
        "sampled": f.sampled,
        "verified": f.verified(),
        "target_p99_ms": TARGET_P99_MS,
        "target_offered_rate": TARGET_OFFERED_RATE,
        "target": format!("p99_ms <= {TARGET_P99_MS} at {TARGET_OFFERED_RATE}/s"),
        "duration_secs": args.duration_secs,
        "concurrency": args.concurrency,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use super::*;

    #[test]
    fn v2_bodies_carry_a_valid_signature() {
        let xml = v2_body(7).unwrap();
        let doc = wxcm_protocol::wechat::xml::parse(xml.as_bytes(), &Default::default()).unwrap();
        let fields: BTreeMap<String, String> = doc.fields.into_iter().collect();
        assert_eq!(fields.get("out_trade_no").map(String::as_str), Some("bpay0000000007"));
        v2::verify(&fields, API_V2_KEY).unwrap();
    }

    #[test]
    fn v3_bodies_verify_and_decrypt_with_the_platform_and_api_keys() {
        let key = v3::api_v3_key(API_V3_KEY).unwrap();
        let body = v3_body(3, &key).unwrap();
        let (timestamp, nonce, signature_b64) =
            sign_v3(&v3::load_private_key_pem(PLATFORM_PRIVATE_PEM).unwrap(), 3, &body).unwrap();
        let headers = v3::V3Headers { timestamp, nonce, signature_b64, serial: PLATFORM_SERIAL.into() };
        let keys = HashMap::from([(PLATFORM_SERIAL.to_owned(), v3::load_public_key_pem(PLATFORM_PUBLIC_PEM).unwrap())]);
        v3::verify_notification(&headers, &body, &keys, Utc::now().timestamp()).unwrap();
        let envelope: v3::NotificationEnvelope = serde_json::from_slice(&body).unwrap();
        let plain: serde_json::Value = serde_json::from_slice(&envelope.resource.decrypt(&key).unwrap()).unwrap();
        assert_eq!(plain["out_trade_no"], "bpay0000000003");
        assert_eq!(plain["amount"]["total"], AMOUNT_FEN);
    }
}
