//! `wxcm audit reconcile` and `wxcm projections rebuild` against real Postgres
//! and NATS JetStream: the read models built by relay → projector reconcile
//! with the events; a corrupted row is reported (non-zero exit); a rebuild,
//! whole or of one tenant, restores it and the projector goes on without
//! duplicates; a relay stopped while commands commit loses nothing. Each test
//! has its own databases and stream prefix.

use std::process::Output;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::Context;
use sqlx::{Connection, PgConnection};
use wxcm_commands::members::{self, RegisterRequest};
use wxcm_commands::ports::{MemberFilter, MemberSearch, MemberSortKey, SortOrder};
use wxcm_commands::{tenants, CommandContext};
use wxcm_domain::member::{
    Attribution, CardLevel, ExpiryPolicy, MemberCommand, PointsSource, Provenance, RegistrationSource, SpendPurpose,
};
use wxcm_domain::{Actor, AmountFen, IdempotencyKey, MemberId, OpenId, PointsAmount, Reference, SceneKey, TenantId};
use wxcm_ops::reconcile::{self, ReconcileReport};
use wxcm_projections::{BatchReport, MemberProjector, ProjectorRuntime};
use wxcm_server::app::{Application, Role};
use wxcm_server::projection_ops;
use wxcm_server::relay::{self, ShardRelay};
use wxcm_tests::{build, fresh_settings, settings_file, wxcm_bin, TestClock};

const NATS_URL: &str = "nats://127.0.0.1:4222";
/// Relay and projector steps are polled up to this long (other tests share the cluster).
const DEADLINE: Duration = Duration::from_secs(30);

struct Harness {
    application: Application,
    js: Context,
    prefix: String,
    db: PgConnection,
    tenant: TenantId,
}

impl Harness {
    async fn new() -> Self {
        let mut settings = fresh_settings(1).await;
        let prefix = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        settings.nats.stream_prefix = prefix.clone();
        let application = build(settings.clone(), Role::Scheduler, Arc::new(TestClock::default())).await;
        let client = async_nats::connect(NATS_URL).await.expect("NATS with JetStream must run on 127.0.0.1:4222");
        let js = async_nats::jetstream::new(client);
        relay::ensure_stream(&js, &prefix, 1).await.expect("events stream");
        let url = settings.shards["s0"].admin_url.parse().expect("admin url");
        let db = PgConnection::connect_with(&url).await.expect("shard connection");
        let tenant = TenantId::parse("rebuild-cinema").expect("tenant");
        let h = Self { application, js, prefix, db, tenant };
        h.create_tenant(&h.tenant).await;
        h
    }

    async fn create_tenant(&self, tenant: &TenantId) {
        let admin = Actor::Admin { username: "t".into() };
        tenants::create(&self.application.app, tenant, "Rebuild Cinema", admin, &ctx(tenant)).await.expect("tenant");
    }

    fn relay(&self) -> ShardRelay {
        self.application.shard_relays(&self.js).pop().expect("one shard")
    }

    fn projector(&self) -> ProjectorRuntime<MemberProjector> {
        self.application
            .shard_projectors(&self.js, |s| {
                s.ack_wait = Duration::from_secs(1);
                s.nak_delay = Duration::from_millis(50);
            })
            .pop()
            .expect("one shard")
    }

    /// Ticks `relay` until the outbox has no unpublished row (waiting for the
    /// lock while a dropped relay's session ends).
    async fn drain(&mut self, relay: &mut ShardRelay) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let report = relay.tick().await.expect("relay step");
            let unpublished: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
                .fetch_one(&mut self.db)
                .await
                .expect("count");
            if report.is_some_and(|r| !r.more_pending) && unpublished == 0 {
                return;
            }
            assert!(Instant::now() < deadline, "outbox not drained within {DEADLINE:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn drain_relay(&mut self) {
        let mut relay = self.relay();
        self.drain(&mut relay).await;
        relay.resign().await;
    }

    async fn project_all(&self, projector: &mut ProjectorRuntime<MemberProjector>) -> BatchReport {
        let deadline = Instant::now() + DEADLINE;
        let mut total = BatchReport::default();
        loop {
            let r = projector.run_batch(100, Duration::from_millis(200)).await.expect("projector step");
            total.received += r.received;
            total.applied += r.applied;
            total.filled += r.filled;
            total.duplicates += r.duplicates;
            total.parked += r.parked;
            total.failed += r.failed;
            let status = projector.status().await.expect("status");
            if r.received == 0 && status.num_pending == 0 && status.num_ack_pending == 0 {
                return total;
            }
            assert!(Instant::now() < deadline, "projection not drained within {DEADLINE:?}: {status:?}");
        }
    }

    async fn reconcile(&self, tenant: &TenantId) -> ReconcileReport {
        reconcile::reconcile(&self.application.settings, tenant).await.expect("reconcile runs")
    }

    /// Runs `wxcm --config <file> <args>` without the secret key.
    async fn wxcm(&self, args: &[&str]) -> Output {
        let file = settings_file(&self.application.settings);
        let output = tokio::process::Command::new(wxcm_bin())
            .arg("--config")
            .arg(file.path())
            .args(args)
            .env_remove("WXCM_SECRET_KEY")
            .env_remove("WXCM_CONFIG")
            .output()
            .await
            .expect("wxcm runs");
        drop(file);
        output
    }

    async fn ledger_sequences(&mut self, member: MemberId) -> Vec<i64> {
        sqlx::query_scalar("SELECT sequence FROM rm_member_ledger WHERE member_id = $1 ORDER BY sequence")
            .bind(member.to_string())
            .fetch_all(&mut self.db)
            .await
            .expect("ledger")
    }

    async fn sql(&mut self, statement: &str) {
        sqlx::query(statement).execute(&mut self.db).await.expect(statement);
    }

    async fn finish(self) {
        self.js.delete_stream(relay::stream_name(&self.prefix)).await.expect("delete the test stream");
    }
}

fn ctx(tenant: &TenantId) -> CommandContext {
    let key = IdempotencyKey::parse(&format!("test-{}", uuid::Uuid::new_v4())).expect("key");
    CommandContext::new(tenant.clone(), key, "test".into())
}

async fn register(h: &Harness, tenant: &TenantId) -> MemberId {
    let request =
        RegisterRequest { openid: None, source: RegistrationSource::Staff, card_level: CardLevel::standard() };
    let actor = Actor::Staff { username: "s".into() };
    members::register(&h.application.app, tenant, request, actor, &ctx(tenant)).await.expect("register").0.member_id
}

async fn exec(h: &Harness, tenant: &TenantId, id: MemberId, command: impl FnOnce(Provenance) -> MemberCommand) {
    let c = ctx(tenant);
    let provenance = Provenance {
        actor: Actor::Staff { username: "s".into() },
        reason: Reference::parse("test").expect("reason"),
        reference: None,
        idempotency_key: c.idempotency_key.clone(),
    };
    let command = command(provenance);
    members::execute(&h.application.app, tenant, id, command.clone(), &command, &c).await.expect("command");
}

async fn deposit(h: &Harness, tenant: &TenantId, id: MemberId, fen: i64) {
    exec(h, tenant, id, |provenance| MemberCommand::DepositCash {
        amount_fen: AmountFen::new(fen).expect("amount"),
        provenance,
    })
    .await;
}

/// Two members with points, holds, cash and a level change; returns them.
async fn some_history(h: &Harness) -> (MemberId, MemberId) {
    let t = h.tenant.clone();
    let (a, b) = (register(h, &t).await, register(h, &t).await);
    let points = |n| PointsAmount::new(n).expect("points");
    exec(h, &t, a, |provenance| MemberCommand::GrantPoints {
        points: points(100),
        source: PointsSource::Manual,
        expiry: ExpiryPolicy::Never,
        provenance,
    })
    .await;
    deposit(h, &t, a, 500).await;
    exec(h, &t, a, |provenance| MemberCommand::ChargeCash {
        amount_fen: AmountFen::new(200).expect("fen"),
        provenance,
    })
    .await;
    exec(h, &t, a, |provenance| MemberCommand::HoldPoints {
        hold_id: Reference::parse("order-1").expect("hold id"),
        points: points(30),
        provenance,
    })
    .await;
    exec(h, &t, a, |provenance| MemberCommand::SpendPoints {
        points: points(20),
        purpose: SpendPurpose::Mall,
        provenance,
    })
    .await;
    exec(h, &t, b, |provenance| MemberCommand::SetCardLevel {
        card_level: CardLevel::parse("gold").expect("level"),
        provenance,
    })
    .await;
    deposit(h, &t, b, 7).await;
    (a, b)
}

fn assert_clean(report: &ReconcileReport) {
    assert!(report.is_clean(), "reconcile differences: {report:#?}");
}

#[tokio::test]
async fn the_projected_read_models_reconcile_with_the_events() {
    let mut h = Harness::new().await;
    let (a, _) = some_history(&h).await;
    h.drain_relay().await;
    let mut projector = h.projector();
    h.project_all(&mut projector).await;

    let report = h.reconcile(&h.tenant).await;
    assert_clean(&report);
    assert_eq!((report.members_in_events, report.members_in_read_model, report.events), (2, 2, 9), "{report:#?}");

    let output = h.wxcm(&["audit", "reconcile", "--tenant", h.tenant.as_str(), "--json"]).await;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json report");
    assert_eq!(json["differences"], serde_json::json!([]));
    assert_eq!(json["members_in_events"], 2);

    let output = h.wxcm(&["projections", "status", "--json"]).await;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json status");
    // The CLI's settings also hold the default shard `main`, which this test does not use.
    let s0 = status.as_array().and_then(|lines| lines.iter().find(|l| l["shard"] == "s0")).expect("shard s0");
    assert_eq!(s0["consumer"], "members_s0");
    assert_eq!((s0["num_pending"].as_u64(), s0["parked"].as_i64()), (Some(0), Some(0)), "{status}");
    assert!(s0["lag_s"].as_f64().is_some() && s0["database_error"].is_null(), "{status}");
    assert_eq!(h.ledger_sequences(a).await, vec![2, 3, 4, 5, 6]);
    h.finish().await;
}

#[tokio::test]
async fn a_stream_the_aggregate_refuses_is_reported_with_stream_sequence_and_rule() {
    let mut h = Harness::new().await;
    let (a, _) = some_history(&h).await;
    h.drain_relay().await;
    let mut projector = h.projector();
    h.project_all(&mut projector).await;
    assert_clean(&h.reconcile(&h.tenant).await);

    // Inserted with the triggers on, so the hash chain is intact: a charge of 10
    // yuan from a balance of 3 yuan, which would make the balance negative.
    h.sql(&format!(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         SELECT aggregate_type, aggregate_id, 7, event_type, event_version,
                jsonb_set(jsonb_set(payload, '{{CashCharged,amount_fen}}', '1000'),
                          '{{CashCharged,balance_after_fen}}', '0'),
                jsonb_build_object('tenant_id', tenant_id)
           FROM events WHERE aggregate_type = 'member' AND aggregate_id = '{a}' AND sequence = 4"
    ))
    .await;
    let report = h.reconcile(&h.tenant).await;
    assert!(!report.is_clean());
    let broken: Vec<(&str, i64, &str)> =
        report.broken_streams.iter().map(|b| (b.stream.as_str(), b.sequence, b.rule)).collect();
    assert_eq!(broken, [(format!("member/{a}").as_str(), 7, "member.balance_covers_debit")], "{report:#?}");
    assert!(report.broken_streams[0].detail.starts_with("CashCharged: "), "{report:#?}");
    // Its figures are not compared (the fold stopped); nothing else differs.
    assert!(report.differences.is_empty(), "{report:#?}");

    let output = h.wxcm(&["audit", "reconcile", "--tenant", h.tenant.as_str(), "--json"]).await;
    assert_eq!(output.status.code(), Some(1), "{}", String::from_utf8_lossy(&output.stderr));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json report");
    assert_eq!(json["broken_streams"][0]["stream"], format!("member/{a}").as_str());
    assert_eq!(json["broken_streams"][0]["sequence"], 7);
    assert_eq!(json["broken_streams"][0]["rule"], "member.balance_covers_debit");
    let output = h.wxcm(&["audit", "reconcile", "--tenant", h.tenant.as_str()]).await;
    assert_eq!(output.status.code(), Some(1));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("member.balance_covers_debit") && text.contains("streams that cannot be folded: 1"),
        "{text}"
    );
    h.finish().await;
}

#[tokio::test]
async fn a_corrupted_read_model_is_reported_and_a_rebuild_restores_it() {
    let mut h = Harness::new().await;
    let (a, b) = some_history(&h).await;
    let other = TenantId::parse("rebuild-other").expect("tenant");
    h.create_tenant(&other).await;
    let c = register(&h, &other).await;
    deposit(&h, &other, c, 11).await;
    h.drain_relay().await;
    let mut projector = h.projector();
    h.project_all(&mut projector).await;

    // Corruption: a balance, a lost ledger line, a row nobody registered.
    h.sql(&format!("UPDATE rm_members SET balance_fen = balance_fen + 1 WHERE member_id = '{a}'")).await;
    h.sql(&format!("DELETE FROM rm_member_ledger WHERE member_id = '{b}' AND sequence = 3")).await;
    h.sql(
        "INSERT INTO rm_members (tenant_id, member_id, card_no, card_level, source, registered_at, points,
                                 held_points, balance_fen, lifetime_points, version)
         VALUES ('rebuild-cinema', 'ghost', '1', 'standard', 'staff', now(), 0, 0, 0, 0, 1)",
    )
    .await;
    let report = h.reconcile(&h.tenant).await;
    let found: Vec<(String, &str, String, String)> = report
        .differences
        .iter()
        .map(|d| (d.member_id.clone(), d.field, d.expected.clone(), d.found.clone()))
        .collect();
    assert!(found.contains(&(a.to_string(), "balance_fen", "300".into(), "301".into())), "{found:?}");
    assert!(found.contains(&(b.to_string(), "ledger_lines", "1".into(), "0".into())), "{found:?}");
    assert!(found.contains(&("ghost".into(), "presence", "-".into(), "row".into())), "{found:?}");
    assert_eq!(report.only_in_read_model, 1);
    let output = h.wxcm(&["audit", "reconcile", "--tenant", h.tenant.as_str()]).await;
    assert_eq!(output.status.code(), Some(1), "{}", String::from_utf8_lossy(&output.stdout));
    assert!(String::from_utf8_lossy(&output.stdout).contains("balance_fen"));

    // Whole rebuild: tables swapped, index names kept, everything clean.
    let reports = projection_ops::rebuild(&h.application.settings, "members", None).await.expect("rebuild");
    assert_eq!(reports.len(), 1);
    assert_eq!((reports[0].1.events, reports[0].1.members), (11, 3), "{reports:?}");
    assert_clean(&h.reconcile(&h.tenant).await);
    assert_clean(&h.reconcile(&other).await);
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT indexname::text FROM pg_indexes WHERE tablename IN ('rm_members', 'rm_member_ledger') ORDER BY 1",
    )
    .fetch_all(&mut h.db)
    .await
    .expect("indexes");
    assert_eq!(
        indexes,
        ["rm_member_ledger_pkey", "rm_members_card", "rm_members_follow", "rm_members_openid", "rm_members_pkey"]
    );

    // Tenant rebuild through the binary: only that tenant's rows are replaced.
    h.sql(&format!("UPDATE rm_members SET points = 999 WHERE member_id = '{a}'")).await;
    h.sql(&format!("UPDATE rm_members SET points = 5 WHERE member_id = '{c}'")).await;
    let output = h.wxcm(&["projections", "rebuild", "members", "--tenant", h.tenant.as_str()]).await;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("events/s"),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert_clean(&h.reconcile(&h.tenant).await);
    let other_report = h.reconcile(&other).await;
    assert_eq!(other_report.differences.len(), 1, "the other tenant was left alone: {other_report:#?}");
    projection_ops::rebuild(&h.application.settings, "members", Some(&other)).await.expect("rebuild other");
    assert_clean(&h.reconcile(&other).await);

    // New events: relayed but not yet projected when a rebuild runs. The rebuild
    // includes them and moves the checkpoints, so they arrive as duplicates.
    deposit(&h, &h.tenant.clone(), a, 40).await;
    deposit(&h, &h.tenant.clone(), b, 2).await;
    h.drain_relay().await;
    projection_ops::rebuild(&h.application.settings, "members", None).await.expect("rebuild");
    let report = h.project_all(&mut projector).await;
    assert_eq!((report.applied, report.duplicates, report.parked, report.failed), (0, 2, 0, 0), "{report:?}");
    // And the projector goes on from there.
    deposit(&h, &h.tenant.clone(), a, 1).await;
    h.drain_relay().await;
    let report = h.project_all(&mut projector).await;
    assert_eq!((report.applied, report.duplicates, report.filled), (1, 0, 0), "{report:?}");
    assert_eq!(h.ledger_sequences(a).await, vec![2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(h.ledger_sequences(b).await, vec![3, 4]);
    assert_clean(&h.reconcile(&h.tenant).await);
    // The daily counters, fed by the same projector, counted every deposit once.
    let credited: i64 = sqlx::query_scalar(
        "SELECT sum(value)::bigint FROM rm_daily_ops WHERE tenant_id = $1 AND metric = 'cash_credited_fen'",
    )
    .bind(h.tenant.as_str())
    .fetch_one(&mut h.db)
    .await
    .expect("daily ops");
    assert_eq!(credited, 500 + 7 + 40 + 2 + 1);
    h.finish().await;
}

#[tokio::test]
async fn commands_committed_while_the_relay_is_down_are_projected_after_restart() {
    let mut h = Harness::new().await;
    let t = h.tenant.clone();
    let members = [register(&h, &t).await, register(&h, &t).await, register(&h, &t).await];
    let mut relay = h.relay();
    h.drain(&mut relay).await;
    let mut projector = h.projector();
    h.project_all(&mut projector).await;

    // The relay and projector stop (dropped, no resign) while 50 commands commit.
    drop(relay);
    drop(projector);
    for i in 0..50 {
        deposit(&h, &t, members[i % members.len()], 1 + i as i64).await;
    }
    let mut relay = h.relay();
    h.drain(&mut relay).await;
    relay.resign().await;
    let mut projector = h.projector();
    let report = h.project_all(&mut projector).await;
    assert_eq!((report.applied + report.filled, report.parked, report.failed), (50, 0, 0), "{report:?}");
    let report = h.reconcile(&t).await;
    assert_clean(&report);
    assert_eq!(report.events, 53);
    h.finish().await;
}

#[tokio::test]
async fn a_rebuild_while_the_relay_and_projector_run_leaves_nothing_behind() {
    let mut h = Harness::new().await;
    let t = h.tenant.clone();
    let members = [register(&h, &t).await, register(&h, &t).await, register(&h, &t).await];
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let relay_task = tokio::spawn(h.relay().run(Duration::from_millis(20), stopped.clone()));
    let projector_task = tokio::spawn(h.projector().run(stopped.clone()));

    // Commands keep committing while whole and tenant rebuilds swap the tables.
    let writes = async {
        for i in 0..60 {
            deposit(&h, &t, members[i % members.len()], 1 + i as i64).await;
        }
    };
    let rebuilds = async {
        for round in 0..4 {
            let tenant = (round % 2 == 1).then_some(&t);
            projection_ops::rebuild(&h.application.settings, "members", tenant).await.expect("rebuild");
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    };
    tokio::join!(writes, rebuilds);

    let deadline = Instant::now() + DEADLINE;
    loop {
        let report = h.reconcile(&t).await;
        if report.is_clean() && report.events == 63 {
            break;
        }
        assert!(Instant::now() < deadline, "not reconciled within {DEADLINE:?}: {report:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop.send(true);
    let _ = tokio::join!(relay_task, projector_task);
    let credited: i64 = sqlx::query_scalar(
        "SELECT sum(value)::bigint FROM rm_daily_ops WHERE tenant_id = $1 AND metric = 'cash_credited_fen'",
    )
    .bind(t.as_str())
    .fetch_one(&mut h.db)
    .await
    .expect("daily ops");
    assert_eq!(credited, (1..=60).sum::<i64>(), "every deposit counted once in the daily counters");
    for (i, member) in members.into_iter().enumerate() {
        let expected: Vec<i64> = (2..=(1 + (60 - i as i64 + 2) / 3)).collect();
        assert_eq!(h.ledger_sequences(member).await, expected, "one ledger line per deposit, no duplicate");
    }
    h.finish().await;
}

async fn register_subscribed(h: &Harness, openid: &str, attribution: Option<Attribution>) -> MemberId {
    let t = &h.tenant;
    let request = RegisterRequest {
        openid: Some(OpenId::parse(openid).expect("openid")),
        source: RegistrationSource::Subscribe,
        card_level: CardLevel::standard(),
    };
    let actor = Actor::System { job: "wechat".into() };
    members::register_attributed(&h.application.app, t, request, attribution, actor, &ctx(t))
        .await
        .expect("register")
        .0
        .member_id
}

#[derive(Debug, PartialEq, Eq, sqlx::FromRow)]
struct FollowRow {
    member_id: String,
    followed: bool,
    follow_source: Option<String>,
    scene: Option<String>,
    referrer_id: Option<String>,
    followed_at: Option<chrono::DateTime<chrono::Utc>>,
    unfollowed_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl Harness {
    async fn follow_rows(&mut self) -> Vec<FollowRow> {
        sqlx::query_as(
            "SELECT member_id, followed, follow_source, scene, referrer_id, followed_at, unfollowed_at
               FROM rm_members ORDER BY member_id",
        )
        .fetch_all(&mut self.db)
        .await
        .expect("follow rows")
    }
}

#[tokio::test]
async fn follows_by_source_are_projected_counted_rebuilt_and_reconciled() {
    let mut h = Harness::new().await;
    let t = h.tenant.clone();
    let scene = Attribution::SceneQr { scene: SceneKey::parse("poster-7").expect("scene") };
    let by_scene = register_subscribed(&h, "o6_bmjrPTlm6_2sgVt7hMZOPfL2M", Some(scene)).await;
    let by_referral =
        register_subscribed(&h, "o6_bmjrPTlm6_2sgVt7hMZOPfL2N", Some(Attribution::Referral { referrer: by_scene }))
            .await;
    let unattributed = register_subscribed(&h, "o6_bmjrPTlm6_2sgVt7hMZOPfL2P", None).await;
    let by_staff = register(&h, &t).await;
    // The scene member leaves; the staff member follows later through a referral, leaves and comes back directly.
    exec(&h, &t, by_scene, |provenance| MemberCommand::Unfollow { provenance }).await;
    exec(&h, &t, by_staff, |provenance| MemberCommand::Follow {
        attribution: Attribution::Referral { referrer: by_referral },
        provenance,
    })
    .await;
    exec(&h, &t, by_staff, |provenance| MemberCommand::Unfollow { provenance }).await;
    exec(&h, &t, by_staff, |provenance| MemberCommand::Follow { attribution: Attribution::Direct, provenance }).await;
    h.drain_relay().await;
    let mut projector = h.projector();
    h.project_all(&mut projector).await;

    let rows = h.follow_rows().await;
    let row = |id: MemberId| rows.iter().find(|r| r.member_id == id.to_string()).expect("member row");
    let shape = |r: &FollowRow| (r.followed, r.follow_source.clone(), r.scene.clone(), r.referrer_id.clone());
    assert_eq!(shape(row(by_scene)), (false, Some("scene_qr".into()), Some("poster-7".into()), None));
    assert!(row(by_scene).unfollowed_at.is_some());
    assert_eq!(shape(row(by_referral)), (true, Some("referral".into()), None, Some(by_scene.to_string())));
    assert_eq!(shape(row(unattributed)), (true, Some("other".into()), None, None));
    assert_eq!(shape(row(by_staff)), (true, Some("other".into()), None, None));

    // Search by follow state and source.
    let read_models = h.application.app.router.route(&t).expect("shard").read_models.clone();
    let search = |followed: Option<bool>, follow_source: Option<&str>| MemberSearch {
        filter: MemberFilter { followed, follow_source: follow_source.map(Into::into), ..MemberFilter::default() },
        sort: MemberSortKey::RegisteredAt,
        order: SortOrder::Asc,
        limit: 10,
        after: None,
    };
    let found = read_models.search_members(&t, &search(Some(true), Some("other"))).await.expect("search");
    let ids: Vec<MemberId> = found.members.iter().map(|m| m.member_id).collect();
    assert_eq!(ids, vec![unattributed, by_staff]);
    let found = read_models.search_members(&t, &search(Some(false), None)).await.expect("search");
    assert_eq!(found.members.iter().map(|m| m.member_id).collect::<Vec<_>>(), vec![by_scene]);

    // The daily report: follows by their attribution, unfollows under the source the member had.
    let today = chrono::Utc::now().date_naive();
    let (from, to) = (today - chrono::Days::new(1), today + chrono::Days::new(1));
    let report = read_models.daily_ops(&t, from, to).await.expect("report");
    let mut follows: Vec<(String, String, i64)> = report
        .rows
        .iter()
        .filter(|r| r.metric == "follows" || r.metric == "unfollows")
        .map(|r| (r.metric.clone(), r.dimension.clone(), r.value))
        .collect();
    follows.sort();
    let expected = [
        ("follows", "other", 2),
        ("follows", "referral", 2),
        ("follows", "scene_qr", 1),
        ("unfollows", "referral", 1),
        ("unfollows", "scene_qr", 1),
    ]
    .map(|(m, d, v)| (m.to_owned(), d.to_owned(), v));
    assert_eq!(follows, expected.to_vec());
    assert_clean(&h.reconcile(&t).await);

    // A follow counter off by one is a difference; the rebuild leaves rm_daily_ops alone, so fix it back.
    h.sql("UPDATE rm_daily_ops SET value = value + 1 WHERE metric = 'follows' AND dimension = 'other'").await;
    let report = h.reconcile(&t).await;
    assert!(report.differences.iter().any(|d| d.field == "follows:other"), "{report:#?}");
    h.sql("UPDATE rm_daily_ops SET value = value - 1 WHERE metric = 'follows' AND dimension = 'other'").await;
    // A wrong follow state is a difference too, and a rebuild produces the projector's rows.
    h.sql(&format!("UPDATE rm_members SET followed = true, follow_source = 'other' WHERE member_id = '{by_scene}'"))
        .await;
    let report = h.reconcile(&t).await;
    let fields: Vec<&str> = report.differences.iter().map(|d| d.field).collect();
    assert!(fields.contains(&"followed") && fields.contains(&"follow_source"), "{report:#?}");
    h.sql(&format!(
        "UPDATE rm_members SET followed = false, follow_source = 'scene_qr' WHERE member_id = '{by_scene}'"
    ))
    .await;
    projection_ops::rebuild(&h.application.settings, "members", None).await.expect("rebuild");
    assert_eq!(h.follow_rows().await, rows);
    assert_clean(&h.reconcile(&t).await);
    h.finish().await;
}
