//! The member list and the daily-operations report through the admin API,
//! against real Postgres and NATS JetStream: commands → relay → member
//! projector (which also feeds `rm_daily_ops`) → read-model queries. Two
//! tenants share one shard; neither sees the other's rows.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::Context;
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};
use wxcm_commands::members::{self, RegisterRequest};
use wxcm_commands::ports::{Role as AdminRole, MEMBER_PAGE_MAX};
use wxcm_commands::{auth, tenants, CommandContext};
use wxcm_domain::member::SpendPurpose;
use wxcm_domain::member::{CardLevel, ExpiryPolicy, MemberCommand, PointsSource, Provenance, RegistrationSource};
use wxcm_domain::{Actor, AmountFen, IdempotencyKey, MemberId, OpenId, PointsAmount, Reference, TenantId};
use wxcm_projections::daily::merchant_day;
use wxcm_projections::{MemberProjector, ProjectorRuntime};
use wxcm_server::app::{Application, Role, RunningApp};
use wxcm_server::relay::{self, ShardRelay};
use wxcm_tests::{build, fresh_settings, TestClock};

const NATS_URL: &str = "nats://127.0.0.1:4222";
const DEADLINE: Duration = Duration::from_secs(30);
const PASSWORD: &str = "a-long-enough-password";

struct Harness {
    app: Arc<wxcm_commands::App>,
    clock: Arc<TestClock>,
    js: Context,
    prefix: String,
    relay: ShardRelay,
    projector: ProjectorRuntime<MemberProjector>,
    running: RunningApp,
    base_url: String,
    http: reqwest::Client,
    db: PgConnection,
}

impl Harness {
    async fn new() -> Self {
        let mut settings = fresh_settings(1).await;
        let url = settings.shards["s0"].admin_url.parse().expect("admin url");
        let db = PgConnection::connect_with(&url).await.expect("shard connection");
        let prefix = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        settings.nats.stream_prefix = prefix.clone();
        let clock = Arc::new(TestClock::default());
        let application: Application = build(settings, Role::Api, clock.clone()).await;
        let client = async_nats::connect(NATS_URL).await.expect("NATS with JetStream must run on 127.0.0.1:4222");
        let js = async_nats::jetstream::new(client);
        relay::ensure_stream(&js, &prefix, 1).await.expect("events stream");
        let relay = application.shard_relays(&js).pop().expect("one shard");
        let projector = application
            .shard_projectors(&js, |s| {
                s.ack_wait = Duration::from_secs(1);
                s.nak_delay = Duration::from_millis(50);
            })
            .pop()
            .expect("one shard");
        let app = application.app.clone();
        let running = application.spawn();
        let base_url = format!("http://{}", running.addr.expect("http address"));
        Self { app, clock, js, prefix, relay, projector, running, base_url, http: reqwest::Client::new(), db }
    }

    /// Relays every committed event, then projects until nothing is pending.
    async fn catch_up(&mut self) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let report = self.relay.tick().await.expect("relay step").expect("relay leads");
            // Rows of transactions still in some snapshot wait for a later tick.
            let unpublished: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
                .fetch_one(&mut self.db)
                .await
                .expect("count");
            if !report.more_pending && unpublished == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "outbox not drained within {DEADLINE:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        loop {
            let report = self.projector.run_batch(100, Duration::from_millis(200)).await.expect("projector step");
            assert_eq!((report.parked, report.failed), (0, 0), "{report:?}");
            let status = self.projector.status().await.expect("status");
            if report.received == 0 && status.num_pending == 0 && status.num_ack_pending == 0 {
                return;
            }
            assert!(Instant::now() < deadline, "projection not drained within {DEADLINE:?}: {status:?}");
        }
    }

    async fn tenant(&self, tenant: &TenantId) {
        let admin = Actor::Admin { username: "t".into() };
        tenants::create(&self.app, tenant, "Report Cinema", admin, &ctx(tenant)).await.expect("tenant");
    }

    /// Creates an admin of `role` and signs in; returns the bearer token.
    async fn admin(&self, tenant: &TenantId, username: &str, role: AdminRole) -> String {
        auth::create_admin(&self.app, tenant, username, PASSWORD, role).await.expect("admin");
        let res = self
            .http
            .post(format!("{}/admin/api/v1/login", self.base_url))
            .json(&json!({"tenant_id": tenant.as_str(), "username": username, "password": PASSWORD}))
            .send()
            .await
            .expect("login");
        assert_eq!(res.status(), StatusCode::OK, "login failed");
        let body: Value = res.json().await.expect("login body");
        body["token"].as_str().expect("token").to_owned()
    }

    async fn get(&self, token: &str, path: &str) -> reqwest::Response {
        self.http.get(format!("{}{path}", self.base_url)).bearer_auth(token).send().await.expect("request")
    }

    async fn get_json(&self, token: &str, path: &str) -> (StatusCode, Value) {
        let res = self.get(token, path).await;
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn finish(self) {
        self.running.stop().await;
        self.js.delete_stream(relay::stream_name(&self.prefix)).await.expect("delete the test stream");
    }
}

fn ctx(tenant: &TenantId) -> CommandContext {
    let key = IdempotencyKey::parse(&format!("test-{}", uuid::Uuid::new_v4())).expect("key");
    CommandContext::new(tenant.clone(), key, "test".into())
}

async fn register(
    h: &Harness,
    tenant: &TenantId,
    openid: Option<&str>,
    source: RegistrationSource,
    level: &str,
) -> (MemberId, String) {
    let request = RegisterRequest {
        openid: openid.map(|o| OpenId::parse(o).expect("openid")),
        source,
        card_level: CardLevel::parse(level).expect("card level"),
    };
    let actor = Actor::Staff { username: "s".into() };
    let view = members::register(&h.app, tenant, request, actor, &ctx(tenant)).await.expect("register").0;
    (view.member_id, view.card_no.to_string())
}

async fn exec(h: &Harness, tenant: &TenantId, id: MemberId, command: impl FnOnce(Provenance) -> MemberCommand) {
    let c = ctx(tenant);
    let provenance = Provenance {
        actor: Actor::Admin { username: "a".into() },
        reason: Reference::parse("test").expect("reason"),
        reference: None,
        idempotency_key: c.idempotency_key.clone(),
    };
    let command = command(provenance);
    members::execute(&h.app, tenant, id, command.clone(), &command, &c).await.expect("command");
}

fn points(n: i64) -> PointsAmount {
    PointsAmount::new(n).expect("points")
}

fn fen(n: i64) -> AmountFen {
    AmountFen::new(n).expect("amount")
}

async fn grant(h: &Harness, tenant: &TenantId, id: MemberId, n: i64, expiry: ExpiryPolicy) {
    exec(h, tenant, id, |provenance| MemberCommand::GrantPoints {
        points: points(n),
        source: PointsSource::Manual,
        expiry,
        provenance,
    })
    .await;
}

async fn deposit(h: &Harness, tenant: &TenantId, id: MemberId, n: i64) {
    exec(h, tenant, id, |provenance| MemberCommand::DepositCash { amount_fen: fen(n), provenance }).await;
}

/// Member ids of a member-list response, in order.
fn ids(body: &Value) -> Vec<String> {
    body["members"].as_array().expect("members").iter().map(|m| m["member_id"].as_str().unwrap().to_owned()).collect()
}

fn set(ids: &[&MemberId]) -> BTreeSet<String> {
    ids.iter().map(|id| id.to_string()).collect()
}

/// Report rows summed per (metric, dimension) over the days of the range.
fn totals(rows: impl Iterator<Item = (String, String, i64)>) -> BTreeMap<(String, String), i64> {
    let mut totals = BTreeMap::new();
    for (metric, dimension, value) in rows {
        *totals.entry((metric, dimension)).or_insert(0) += value;
    }
    totals
}

fn expected(pairs: &[(&str, &str, i64)]) -> BTreeMap<(String, String), i64> {
    pairs.iter().map(|(m, d, v)| (((*m).to_owned(), (*d).to_owned()), *v)).collect()
}

#[tokio::test]
async fn member_list_and_daily_ops_come_from_the_read_models() {
    let mut h = Harness::new().await;
    let (a, b) = (TenantId::parse("rep-a").unwrap(), TenantId::parse("rep-b").unwrap());
    h.tenant(&a).await;
    h.tenant(&b).await;
    let owner = h.admin(&a, "owner", AdminRole::Owner).await;
    let staff = h.admin(&a, "staff", AdminRole::Staff).await;
    let auditor = h.admin(&a, "auditor", AdminRole::Auditor).await;
    let owner_b = h.admin(&b, "owner", AdminRole::Owner).await;

    // Tenant A: four members.
    let (m1, _) = register(&h, &a, Some("o_rep_a1"), RegistrationSource::Subscribe, "gold").await;
    grant(&h, &a, m1, 100, ExpiryPolicy::Never).await;
    deposit(&h, &a, m1, 500).await;
    exec(&h, &a, m1, |provenance| MemberCommand::ChargeCash { amount_fen: fen(200), provenance }).await;
    let (m2, _) = register(&h, &a, Some("o_rep_a2"), RegistrationSource::Oauth, "standard").await;
    grant(&h, &a, m2, 50, ExpiryPolicy::Days { days: 1 }).await;
    h.clock.advance(chrono::Duration::days(2));
    exec(&h, &a, m2, |provenance| MemberCommand::ExpirePoints { provenance }).await;
    let (m3, m3_card) = register(&h, &a, None, RegistrationSource::Staff, "standard").await;
    grant(&h, &a, m3, 300, ExpiryPolicy::Never).await;
    exec(&h, &a, m3, |provenance| MemberCommand::SpendPoints {
        points: points(20),
        purpose: SpendPurpose::Mall,
        provenance,
    })
    .await;
    deposit(&h, &a, m3, 1000).await;
    exec(&h, &a, m3, |provenance| MemberCommand::SetCardLevel {
        card_level: CardLevel::parse("gold").unwrap(),
        provenance,
    })
    .await;
    let (m4, _) = register(&h, &a, None, RegistrationSource::Staff, "standard").await;
    // Tenant B, same shard.
    let (b1, _) = register(&h, &b, Some("o_rep_b1"), RegistrationSource::Subscribe, "gold").await;
    grant(&h, &b, b1, 999, ExpiryPolicy::Never).await;
    deposit(&h, &b, b1, 77).await;
    h.catch_up().await;

    // ---- member list ----
    let list = "/admin/api/v1/members";
    let (status, body) = h.get_json(&staff, list).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(ids(&body).len(), 4);
    assert!(body["next_after"].is_null());
    let found = |q: &'static str| {
        let h = &h;
        let owner = &owner;
        async move {
            let (status, body) = h.get_json(owner, &format!("{list}?{q}")).await;
            assert_eq!(status, StatusCode::OK, "{q}: {body}");
            ids(&body).into_iter().collect::<BTreeSet<_>>()
        }
    };
    assert_eq!(found("card_level=gold").await, set(&[&m1, &m3]));
    assert_eq!(found("source=oauth").await, set(&[&m2]));
    assert_eq!(found("source=staff").await, set(&[&m3, &m4]));
    assert_eq!(found("points_min=100").await, set(&[&m1, &m3]));
    assert_eq!(found("points_min=100&points_max=200").await, set(&[&m1]));
    assert_eq!(found("balance_min=1").await, set(&[&m1, &m3]));
    assert_eq!(found("balance_max=0").await, set(&[&m2, &m4]));
    assert_eq!(found("balance_min=300&balance_max=300&card_level=gold").await, set(&[&m1]));
    assert_eq!(found("openid=o_rep_a1").await, set(&[&m1]));
    assert_eq!(found("openid=o_rep_b1").await, set(&[]), "another tenant's member");
    let (_, body) = h.get_json(&owner, &format!("{list}?card_no={m3_card}")).await;
    assert_eq!(ids(&body), vec![m3.to_string()]);
    let row = &body["members"][0];
    assert_eq!(
        (row["points"].as_i64(), row["balance_fen"].as_i64(), row["card_level"].as_str(), row["source"].as_str()),
        (Some(280), Some(1000), Some("gold"), Some("staff"))
    );

    // Sorted by points, descending: m3 (280), m1 (100), then the two at 0.
    let (_, body) = h.get_json(&owner, &format!("{list}?sort=points&order=desc")).await;
    assert_eq!(ids(&body)[..2], [m3.to_string(), m1.to_string()]);
    // Keyset pages of one, ascending by points then balance: every member once, in order.
    for (sort, field) in [("points", "points"), ("balance", "balance_fen"), ("registered_at", "registered_at")] {
        let mut seen = Vec::new();
        let mut values = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..10 {
            let mut path = format!("{list}?sort={sort}&order=asc&limit=1");
            if let Some(a) = &after {
                path.push_str(&format!("&after={a}"));
            }
            let (status, body) = h.get_json(&owner, &path).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            seen.extend(ids(&body));
            values.extend(body["members"].as_array().unwrap().iter().map(|m| m[field].to_string()));
            after = body["next_after"].as_str().map(str::to_owned);
            if after.is_none() {
                break;
            }
        }
        assert_eq!(seen.iter().cloned().collect::<BTreeSet<_>>(), set(&[&m1, &m2, &m3, &m4]), "{sort}");
        assert_eq!(seen.len(), 4, "{sort}: {seen:?}");
        if sort != "registered_at" {
            let numbers: Vec<i64> = values.iter().map(|v| v.parse().unwrap()).collect();
            assert!(numbers.windows(2).all(|w| w[0] <= w[1]), "{sort}: {numbers:?}");
        }
    }
    // Tenant B sees only its own member.
    let (_, body) = h.get_json(&owner_b, list).await;
    assert_eq!(ids(&body), vec![b1.to_string()]);
    // Bad query values are 400.
    let max = MEMBER_PAGE_MAX;
    assert_eq!(h.get_json(&owner, &format!("{list}?limit={max}")).await.0, StatusCode::OK);
    for (q, code) in [
        ("points_min=abc".to_owned(), "invalid_query"),
        ("color=red".to_owned(), "invalid_query"),
        ("sort=name".to_owned(), "invalid_sort"),
        ("order=up".to_owned(), "invalid_order"),
        (format!("limit={}", max + 1), "invalid_limit"),
        ("source=mall".to_owned(), "invalid_source"),
        ("points_min=5&points_max=4".to_owned(), "invalid_range"),
        ("card_no=123".to_owned(), "invalid_card_no"),
        ("sort=points&after=r.1.00000000-0000-0000-0000-000000000000".to_owned(), "invalid_after"),
    ] {
        let (status, body) = h.get_json(&owner, &format!("{list}?{q}")).await;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some(code)), "{q}");
    }

    // ---- daily operations ----
    let today = merchant_day(chrono::Utc::now());
    // A day either side, so a run across merchant midnight still sees every event.
    let (from, to) = (today.pred_opt().unwrap(), today.succ_opt().unwrap());
    let report = format!("/admin/api/v1/reports/daily-ops?from={from}&to={to}");
    let (status, body) = h.get_json(&auditor, &report).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let rows = body["rows"].as_array().expect("rows").iter().map(|r| {
        (
            r["metric"].as_str().unwrap().to_owned(),
            r["dimension"].as_str().unwrap().to_owned(),
            r["value"].as_i64().unwrap(),
        )
    });
    let want = expected(&[
        ("registrations", "subscribe", 1),
        ("registrations", "oauth", 1),
        ("registrations", "staff", 2),
        ("points_granted", "", 450),
        ("points_spent", "", 20),
        ("points_expired", "", 50),
        ("cash_credited_fen", "deposit", 1500),
        ("cash_debited_fen", "charge", 200),
        ("card_level_net", "gold", 2),
        ("card_level_net", "standard", 2),
        // The subscribe registration is a follow; it has no attribution: `other`.
        ("follows", "other", 1),
    ]);
    assert_eq!(totals(rows), want);
    assert_eq!(
        body["members_by_card_level"],
        json!([{"card_level": "gold", "members": 2}, {"card_level": "standard", "members": 2}])
    );
    let count =
        |source: &str, follows: i64| json!({"source": source, "follows": follows, "unfollows": 0, "net": follows});
    assert_eq!(
        body["follows_by_source"],
        json!([count("scene_qr", 0), count("referral", 0), count("other", 1), count("total", 1)])
    );

    // The same report as CSV.
    let res = h.get(&owner, &format!("{report}&format=csv")).await;
    assert_eq!(res.status(), StatusCode::OK);
    let content_type = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/csv"), "{content_type}");
    let csv = res.text().await.unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("day,metric,dimension,value"));
    let mut csv_rows = Vec::new();
    let mut levels = BTreeMap::new();
    let mut follows_in_range = BTreeMap::new();
    for line in lines {
        let cells: Vec<&str> = line.split(',').collect();
        assert_eq!(cells.len(), 4, "{line}");
        let day = chrono::NaiveDate::parse_from_str(cells[0], "%Y-%m-%d").expect("day");
        assert!(from <= day && day <= to, "{line}");
        let value: i64 = cells[3].parse().expect("value");
        if cells[1] == "members_by_card_level" {
            levels.insert(cells[2].to_owned(), value);
        } else if cells[1].ends_with("_in_range") {
            follows_in_range.insert((cells[1].to_owned(), cells[2].to_owned()), value);
        } else {
            csv_rows.push((cells[1].to_owned(), cells[2].to_owned(), value));
        }
    }
    assert_eq!(totals(csv_rows.into_iter()), want);
    assert_eq!(levels, BTreeMap::from([("gold".to_owned(), 2), ("standard".to_owned(), 2)]));
    assert_eq!(follows_in_range.len(), 12, "3 metrics x (3 sources + total): {follows_in_range:?}");
    assert_eq!(follows_in_range[&("follows_net_in_range".to_owned(), "total".to_owned())], 1);

    // Tenant B's report holds only tenant B's figures.
    let (status, body) = h.get_json(&owner_b, &report).await;
    assert_eq!(status, StatusCode::OK);
    let rows = body["rows"].as_array().unwrap().iter().map(|r| {
        (
            r["metric"].as_str().unwrap().to_owned(),
            r["dimension"].as_str().unwrap().to_owned(),
            r["value"].as_i64().unwrap(),
        )
    });
    assert_eq!(
        totals(rows),
        expected(&[
            ("registrations", "subscribe", 1),
            ("points_granted", "", 999),
            ("cash_credited_fen", "deposit", 77),
            ("card_level_net", "gold", 1),
            ("follows", "other", 1),
        ])
    );

    // Staff may list members but not read reports; bad ranges and dates are 400.
    let (status, body) = h.get_json(&staff, &report).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")));
    let past_max = to - chrono::Days::new(366);
    let at_max = to - chrono::Days::new(365);
    let path = |from: &str, to: &str| format!("/admin/api/v1/reports/daily-ops?from={from}&to={to}");
    assert_eq!(h.get_json(&owner, &path(&at_max.to_string(), &to.to_string())).await.0, StatusCode::OK);
    for (q, code) in [
        (path(&past_max.to_string(), &to.to_string()), "invalid_range"),
        (path(&to.to_string(), &from.to_string()), "invalid_range"),
        (path("2025-02-30", "2025-03-01"), "invalid_date"),
        (path("yesterday", "2025-03-01"), "invalid_date"),
        (format!("{report}&format=xml"), "invalid_format"),
        ("/admin/api/v1/reports/daily-ops?from=2025-01-01".to_owned(), "invalid_query"),
    ] {
        let (status, body) = h.get_json(&owner, &q).await;
        assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some(code)), "{q}");
    }

    h.finish().await;
}
