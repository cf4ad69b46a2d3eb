//! NATS restarted while commands keep arriving: commands only need Postgres,
//! the outbox keeps what NATS could not take, and once NATS is back the relay
//! and the projector catch up; `audit reconcile` then finds no difference.
//! The test runs its own nats-server (own port and store) so that stopping it
//! disturbs no other test.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wxcm_commands::members::{self, RegisterRequest};
use wxcm_commands::{tenants, CommandContext};
use wxcm_domain::member::{CardLevel, MemberCommand, Provenance, RegistrationSource};
use wxcm_domain::{Actor, AmountFen, IdempotencyKey, MemberId, Reference, TenantId};
use wxcm_ops::reconcile;
use wxcm_server::app::Role;
use wxcm_tests::{build, fresh_settings, TestClock};

const NATS_SERVER: &str = "/usr/sbin/nats-server";
const CATCH_UP_DEADLINE: Duration = Duration::from_secs(90);

struct Nats {
    port: u16,
    store: std::path::PathBuf,
    child: Option<Child>,
}

impl Nats {
    fn start(port: u16, store: &std::path::Path) -> Child {
        Command::new(NATS_SERVER)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts")
    }

    async fn new() -> Self {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let store = std::env::temp_dir().join(format!("wxcm-nats-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&store).unwrap();
        let child = Self::start(port, &store);
        let nats = Self { port, store, child: Some(child) };
        nats.wait_up().await;
        nats
    }

    async fn wait_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
            assert!(Instant::now() < deadline, "private nats-server did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server the way an operator's service manager does (SIGTERM,
    /// a clean shutdown), then starts it again with the same store.
    async fn restart_gracefully(&mut self) {
        if let Some(mut child) = self.child.take() {
            let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill runs");
            assert!(status.success(), "SIGTERM delivered");
            let _ = child.wait();
        }
        self.child = Some(Self::start(self.port, &self.store));
        self.wait_up().await;
    }

    async fn restart(&mut self) {
        self.stop();
        self.child = Some(Self::start(self.port, &self.store));
        self.wait_up().await;
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

fn ctx(tenant: &TenantId) -> CommandContext {
    let key = IdempotencyKey::parse(&format!("test-{}", uuid::Uuid::new_v4())).unwrap();
    CommandContext::new(tenant.clone(), key, "test".into())
}

async fn deposit(app: &wxcm_commands::App, tenant: &TenantId, member: MemberId, fen: i64) {
    let c = ctx(tenant);
    let command = MemberCommand::DepositCash {
        amount_fen: AmountFen::new(fen).unwrap(),
        provenance: Provenance {
            actor: Actor::Staff { username: "s".into() },
            reason: Reference::parse("counter").unwrap(),
            reference: None,
            idempotency_key: c.idempotency_key.clone(),
        },
    };
    members::execute(app, tenant, member, command, &fen, &c).await.expect("commands need only Postgres");
}

#[tokio::test]
async fn nats_restarted_while_commands_keep_arriving_loses_nothing() {
    let mut nats = Nats::new().await;
    let mut settings = fresh_settings(1).await;
    settings.nats.url = nats.url();
    settings.nats.stream_prefix = format!("r{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    settings.nats.relay_interval_ms = 50;
    let application = build(settings.clone(), Role::All, Arc::new(TestClock::default())).await;
    let app = application.app.clone();
    let running = application.spawn();

    let tenant = TenantId::parse("natsrestart").unwrap();
    tenants::create(&app, &tenant, "Restart Cinema", Actor::System { job: "test".into() }, &ctx(&tenant))
        .await
        .unwrap();
    let mut members_ = Vec::new();
    for _ in 0..3 {
        let request =
            RegisterRequest { openid: None, source: RegistrationSource::Staff, card_level: CardLevel::standard() };
        let (view, _) = members::register(&app, &tenant, request, Actor::Staff { username: "s".into() }, &ctx(&tenant))
            .await
            .unwrap();
        members_.push(view.member_id);
    }
    let mut expected = 0;
    for round in 0..3 {
        for (i, m) in members_.iter().enumerate() {
            deposit(&app, &tenant, *m, 100 + i as i64).await;
            expected += 1;
        }
        if round == 0 {
            // NATS goes away mid-stream; commands keep arriving.
            nats.stop();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // While NATS is down the relay cannot publish: the events wait in the outbox.
    let url = settings.shards["s0"].admin_url.parse::<sqlx::postgres::PgConnectOptions>().unwrap();
    let mut db = <sqlx::PgConnection as sqlx::Connection>::connect_with(&url).await.unwrap();
    let waiting: i64 =
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL").fetch_one(&mut db).await.unwrap();
    assert!(waiting > 0, "commands made while NATS was down must wait in the outbox");
    nats.restart().await;
    for m in &members_ {
        deposit(&app, &tenant, *m, 7).await;
        expected += 1;
    }

    let deadline = Instant::now() + CATCH_UP_DEADLINE;
    loop {
        let report = reconcile::reconcile(&settings, &tenant).await.expect("reconcile runs");
        if report.is_clean() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "read models did not catch up after the NATS restart ({expected} deposits): {report:#?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Rows are marked just after JetStream's ack: give the last mark a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            .fetch_one(&mut db)
            .await
            .unwrap();
        if waiting == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the relay left {waiting} rows unpublished after the restart");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    running.stop().await;
}

/// Reconcile until clean, or fail after `deadline`.
async fn wait_reconciled(settings: &wxcm_server::config::Settings, tenant: &TenantId, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    loop {
        let report = reconcile::reconcile(settings, tenant).await.expect("reconcile runs");
        if report.is_clean() {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: read models not caught up within {within:?}: {report:#?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Issue 17: a projector idle in a pull when NATS restarts (SIGTERM, same
/// store) was never answered and stopped for good. Its pulls are bounded now,
/// so events committed after the restart reach the read models within seconds.
#[tokio::test]
async fn a_projector_waiting_in_a_pull_when_nats_restarts_projects_what_comes_next() {
    let mut nats = Nats::new().await;
    let mut settings = fresh_settings(1).await;
    settings.nats.url = nats.url();
    settings.nats.stream_prefix = format!("r{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    settings.nats.relay_interval_ms = 50;
    let application = build(settings.clone(), Role::All, Arc::new(TestClock::default())).await;
    let app = application.app.clone();
    let running = application.spawn();

    let tenant = TenantId::parse("natsidle").unwrap();
    tenants::create(&app, &tenant, "Idle Cinema", Actor::System { job: "test".into() }, &ctx(&tenant)).await.unwrap();
    let request =
        RegisterRequest { openid: None, source: RegistrationSource::Staff, card_level: CardLevel::standard() };
    let (view, _) =
        members::register(&app, &tenant, request, Actor::Staff { username: "s".into() }, &ctx(&tenant)).await.unwrap();
    deposit(&app, &tenant, view.member_id, 100).await;
    wait_reconciled(&settings, &tenant, Duration::from_secs(30), "before the restart").await;

    // The projector now waits in a pull; restart NATS under it, twice.
    for round in 0..2 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        nats.restart_gracefully().await;
        deposit(&app, &tenant, view.member_id, 10 + round).await;
        // Reconnect (~1-2 s) + one bounded pull (fetch wait + PULL_GRACE) + projection.
        wait_reconciled(&settings, &tenant, Duration::from_secs(20), &format!("after restart {round}")).await;
    }
    // And while events stream in (the projector is mid-fetch most of the time).
    let mut others = Vec::new();
    for _ in 0..4 {
        let request =
            RegisterRequest { openid: None, source: RegistrationSource::Staff, card_level: CardLevel::standard() };
        let (v, _) = members::register(&app, &tenant, request, Actor::Staff { username: "s".into() }, &ctx(&tenant))
            .await
            .unwrap();
        others.push(v.member_id);
    }
    let load = {
        let (app, tenant, others) = (app.clone(), tenant.clone(), others.clone());
        tokio::spawn(async move {
            for n in 0..600i64 {
                deposit(&app, &tenant, others[n as usize % others.len()], 1 + n % 7).await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        nats.restart_gracefully().await;
    }
    load.await.unwrap();
    wait_reconciled(&settings, &tenant, Duration::from_secs(20), "after restarts under load").await;
    running.stop().await;
}
