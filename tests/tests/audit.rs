//! `wxcm audit` as an operator runs it: the real binary, a settings file, fresh
//! databases, and tampering done the way an attacker with superuser access would
//! (`session_replication_role = replica` switches off the append-only trigger).
//! The audit must not need the secret key: every run removes it from the environment.

use std::process::Output;
use std::sync::Arc;

use serde_json::Value;
use sqlx::{Connection, PgConnection};
use wxcm_commands::members::{self, RegisterRequest};
use wxcm_commands::{tenants, App, CommandContext};
use wxcm_domain::member::{
    CardLevel, ExpiryPolicy, MemberCommand, PointsSource, Provenance, RegistrationSource, SpendPurpose,
};
use wxcm_domain::{Actor, AmountFen, IdempotencyKey, MemberId, PointsAmount, Reference, TenantId};
use wxcm_server::app::{Application, Role};
use wxcm_server::config::Settings;
use wxcm_tests::{build, fresh_settings, settings_file, wxcm_bin, TestClock};

const TENANT: &str = "acme";
const SHARD: &str = "s0";

struct Fixture {
    settings: Settings,
    application: Application,
}

impl Fixture {
    async fn new(tenants: &[&str]) -> Self {
        let settings = fresh_settings(1).await;
        let application = build(settings.clone(), Role::Scheduler, Arc::new(TestClock::default())).await;
        for tenant in tenants {
            let tenant = TenantId::parse(tenant).unwrap();
            let ctx = CommandContext::new(tenant.clone(), key(), "test".into());
            tenants::create(&application.app, &tenant, "Test Cinema", admin(), &ctx).await.unwrap();
        }
        Fixture { settings, application }
    }

    fn app(&self) -> &App {
        &self.application.app
    }

    async fn superuser(&self) -> PgConnection {
        PgConnection::connect(&self.settings.shards[SHARD].admin_url).await.expect("shard superuser connection")
    }

    /// Runs `wxcm --config <file> audit <args>` without the secret key.
    async fn audit(&self, args: &[&str]) -> Output {
        let file = settings_file(&self.settings);
        let output = tokio::process::Command::new(wxcm_bin())
            .arg("--config")
            .arg(file.path())
            .arg("audit")
            .args(args)
            .env_remove("WXCM_SECRET_KEY")
            .env_remove("WXCM_CONFIG")
            .output()
            .await
            .expect("wxcm runs");
        drop(file);
        output
    }

    async fn audit_member(&self, tenant: &str, member: MemberId, json: bool) -> Output {
        let member = member.to_string();
        let mut args = vec!["member", "--tenant", tenant, "--member", &member];
        if json {
            args.push("--json");
        }
        self.audit(&args).await
    }
}

fn key() -> IdempotencyKey {
    IdempotencyKey::parse(&format!("test-{}", uuid::Uuid::new_v4())).unwrap()
}

fn admin() -> Actor {
    Actor::Admin { username: "test".into() }
}

fn provenance(idempotency_key: IdempotencyKey) -> Provenance {
    Provenance { actor: admin(), reason: Reference::parse("counter").unwrap(), reference: None, idempotency_key }
}

async fn run(app: &App, tenant: &TenantId, member: MemberId, command: impl FnOnce(Provenance) -> MemberCommand) {
    let idempotency_key = key();
    let command = command(provenance(idempotency_key.clone()));
    let ctx = CommandContext::new(tenant.clone(), idempotency_key, "test".into());
    members::execute(app, tenant, member, command.clone(), &command, &ctx).await.unwrap();
}

/// Sequences: 1 registered, 2 deposit 1000 fen, 3 charge 250 fen, 4 grant 100
/// points, 5 spend 30 points. Balances: 750 fen, 70 points, lifetime 100.
async fn member_with_history(app: &App, tenant: &str) -> MemberId {
    let tenant = TenantId::parse(tenant).unwrap();
    let request =
        RegisterRequest { openid: None, source: RegistrationSource::Staff, card_level: CardLevel::standard() };
    let ctx = CommandContext::new(tenant.clone(), key(), "test".into());
    let (view, _) = members::register(app, &tenant, request, admin(), &ctx).await.unwrap();
    let member = view.member_id;
    let fen = |n| AmountFen::new(n).unwrap();
    let points = |n| PointsAmount::new(n).unwrap();
    run(app, &tenant, member, |provenance| MemberCommand::DepositCash { amount_fen: fen(1000), provenance }).await;
    run(app, &tenant, member, |provenance| MemberCommand::ChargeCash { amount_fen: fen(250), provenance }).await;
    run(app, &tenant, member, |provenance| MemberCommand::GrantPoints {
        points: points(100),
        source: PointsSource::Manual,
        expiry: ExpiryPolicy::Never,
        provenance,
    })
    .await;
    run(app, &tenant, member, |provenance| MemberCommand::SpendPoints {
        points: points(30),
        purpose: SpendPurpose::Mall,
        provenance,
    })
    .await;
    member
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn all_output(output: &Output) -> String {
    format!("{}{}", stdout(output), String::from_utf8_lossy(&output.stderr))
}

fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", all_output(output)))
}

/// `(sequence, code)` of every violation in a JSON report.
fn violations(report: &Value) -> Vec<(Option<i64>, String)> {
    report["violations"]
        .as_array()
        .expect("violations")
        .iter()
        .map(|v| (v["sequence"].as_i64(), v["code"].as_str().unwrap().to_owned()))
        .collect()
}

async fn tamper(db: &mut PgConnection, statement: &str, member: MemberId) {
    sqlx::query("SET session_replication_role = replica").execute(&mut *db).await.unwrap();
    let done = sqlx::query(statement).bind(member.to_string()).execute(&mut *db).await.unwrap();
    assert_eq!(done.rows_affected(), 1, "{statement}");
    sqlx::query("SET session_replication_role = origin").execute(&mut *db).await.unwrap();
}

#[tokio::test]
async fn clean_member_audits_ok_with_its_ledger_and_balances() {
    let f = Fixture::new(&[TENANT]).await;
    let member = member_with_history(f.app(), TENANT).await;

    let output = f.audit_member(TENANT, member, false).await;
    let text = all_output(&output);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("verdict: OK"), "{text}");
    assert!(text.contains("750 fen (7.50 yuan)"), "{text}");
    assert!(text.contains("-2.50"), "the charge in yuan: {text}");
    assert!(!text.contains("WXCM_SECRET_KEY"), "{text}");
    for event in ["MemberRegistered", "CashDeposited", "CashCharged", "PointsGranted", "PointsSpent"] {
        assert!(text.contains(event), "{event} missing: {text}");
    }

    let output = f.audit_member(TENANT, member, true).await;
    assert!(output.status.success(), "{}", all_output(&output));
    let report = json(&output);
    assert_eq!(report["ok"], true);
    assert_eq!(violations(&report), []);
    assert_eq!(report["entries"].as_array().unwrap().len(), 5);
    assert_eq!(report["entries"][2]["cash_delta_fen"], -250);
    assert_eq!(report["entries"][2]["cash_delta_yuan"], "-2.50");
    let balances = &report["balances"];
    assert_eq!(balances["balance_fen"], 750);
    assert_eq!(balances["balance_yuan"], "7.50");
    assert_eq!(balances["points"], 70);
    assert_eq!(balances["held_points"], 0);
    assert_eq!(balances["lifetime_points"], 100);
    assert_eq!(balances["card_level"], "standard");
    assert_eq!(balances["complete"], true);
    let view = members::get(f.app(), &TenantId::parse(TENANT).unwrap(), member).await.unwrap();
    assert_eq!(balances["card_no"], view.card_no.as_str());
}

#[tokio::test]
async fn altered_payload_is_reported_at_its_sequence() {
    let f = Fixture::new(&[TENANT]).await;
    let member = member_with_history(f.app(), TENANT).await;
    let mut db = f.superuser().await;
    tamper(
        &mut db,
        "UPDATE events SET payload = jsonb_set(payload, '{CashDeposited,amount_fen}', '100000')
          WHERE aggregate_type = 'member' AND aggregate_id = $1 AND sequence = 2",
        member,
    )
    .await;

    let output = f.audit_member(TENANT, member, false).await;
    let text = all_output(&output);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains(&format!("member/{member} seq 2: hash mismatch (row changed)")), "{text}");
    assert!(text.contains("verdict: FAILED"), "{text}");

    let report = json(&f.audit_member(TENANT, member, true).await);
    assert_eq!(report["ok"], false);
    assert_eq!(
        violations(&report),
        [(Some(2), "hash_mismatch".to_owned()), (Some(2), "balance_after_mismatch".to_owned())]
    );
}

#[tokio::test]
async fn deleted_middle_row_is_reported_as_a_gap() {
    let f = Fixture::new(&[TENANT]).await;
    let member = member_with_history(f.app(), TENANT).await;
    let mut db = f.superuser().await;
    tamper(
        &mut db,
        "DELETE FROM events WHERE aggregate_type = 'member' AND aggregate_id = $1 AND sequence = 3",
        member,
    )
    .await;

    let output = f.audit_member(TENANT, member, false).await;
    let text = all_output(&output);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains(&format!("member/{member} seq 4: sequence gap, expected seq 3")), "{text}");
    let report = json(&f.audit_member(TENANT, member, true).await);
    assert_eq!(violations(&report), [(Some(4), "sequence_gap".to_owned())]);
}

#[tokio::test]
async fn forged_row_is_reported() {
    let f = Fixture::new(&[TENANT]).await;
    let member = member_with_history(f.app(), TENANT).await;
    let mut db = f.superuser().await;
    // A forger who links to the real head but cannot compute the hash: a deposit of
    // 10,000 yuan whose stated balance adds up, so only the chain gives it away.
    tamper(
        &mut db,
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata,
                             tenant_id, event_id, recorded_at, prev_hash, hash)
         SELECT e.aggregate_type, e.aggregate_id, 6, e.event_type, e.event_version,
                jsonb_set(jsonb_set(e.payload, '{CashDeposited,amount_fen}', '1000000'),
                          '{CashDeposited,balance_after_fen}', '1000750'),
                e.metadata, e.tenant_id, gen_random_uuid(), now(), head.hash, head.hash
           FROM events e
           JOIN events head ON head.aggregate_type = e.aggregate_type AND head.aggregate_id = e.aggregate_id
                           AND head.sequence = 5
          WHERE e.aggregate_type = 'member' AND e.aggregate_id = $1 AND e.sequence = 2",
        member,
    )
    .await;

    let output = f.audit_member(TENANT, member, false).await;
    let text = all_output(&output);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains(&format!("member/{member} seq 6: hash mismatch")), "{text}");
    let report = json(&f.audit_member(TENANT, member, true).await);
    assert_eq!(violations(&report), [(Some(6), "hash_mismatch".to_owned())]);
    assert_eq!(report["balances"]["balance_fen"], 1_000_750, "the ledger itself adds up");
}

#[tokio::test]
async fn an_inconsistent_event_is_reported_with_stream_sequence_and_rule() {
    let f = Fixture::new(&[TENANT]).await;
    let tenant = TenantId::parse(TENANT).unwrap();
    let member = member_with_history(f.app(), TENANT).await;
    let mut db = f.superuser().await;
    // Inserted with the triggers on, so the hash chain is intact: a charge of 10
    // yuan from a balance of 7.50 yuan, which would make the balance negative.
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         SELECT aggregate_type, aggregate_id, 6, event_type, event_version,
                jsonb_set(jsonb_set(payload, '{CashCharged,amount_fen}', '1000'),
                          '{CashCharged,balance_after_fen}', '0'),
                jsonb_build_object('tenant_id', tenant_id)
           FROM events WHERE aggregate_type = 'member' AND aggregate_id = $1 AND sequence = 3",
    )
    .bind(member.to_string())
    .execute(&mut db)
    .await
    .unwrap();

    let output = f.audit_member(TENANT, member, false).await;
    let text = all_output(&output);
    assert!(!output.status.success(), "{text}");
    let refusal =
        format!("member/{member} seq 6: replay failed at seq 6: invariant member.balance_covers_debit broken");
    assert!(text.contains(&refusal), "{text}");
    assert!(!text.contains("hash mismatch"), "the chain is intact: {text}");

    let report = json(&f.audit_member(TENANT, member, true).await);
    assert_eq!(
        violations(&report),
        [(Some(6), "balance_after_mismatch".to_owned()), (Some(6), "replay_failed".to_owned())]
    );
    let refused = &report["violations"][1];
    assert_eq!(refused["stream"], format!("member/{member}").as_str());
    assert_eq!(refused["rule"], "member.balance_covers_debit");
    assert_eq!(
        (report["balances"]["complete"].clone(), report["balances"]["balance_fen"].clone()),
        (false.into(), 750.into())
    );

    let verify = json(&f.audit(&["verify", "--tenant", TENANT, "--json"]).await);
    assert_eq!(verify["ok"], false);
    let found: Vec<(&str, Option<i64>, &str)> = verify["violations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["rule"].is_string())
        .map(|v| (v["stream"].as_str().unwrap(), v["sequence"].as_i64(), v["rule"].as_str().unwrap()))
        .collect();
    assert_eq!(found, [(format!("member/{member}").as_str(), Some(6), "member.balance_covers_debit")]);

    // The application refuses to work on the stream: an internal error naming
    // stream, sequence and rule (the API answers 500), never a panic, 404 or 409.
    let idempotency_key = key();
    let command = MemberCommand::DepositCash {
        amount_fen: AmountFen::new(1).unwrap(),
        provenance: provenance(idempotency_key.clone()),
    };
    let ctx = CommandContext::new(tenant.clone(), idempotency_key, "test".into());
    match members::execute(f.app(), &tenant, member, command.clone(), &command, &ctx).await {
        Err(members::MemberOpError::Infra(detail)) => {
            assert!(detail.contains(&format!("member/{member} seq 6")), "{detail}");
            assert!(detail.contains("member.balance_covers_debit"), "{detail}");
        }
        other => panic!("expected an internal error, got {other:?}"),
    }
    match members::get(f.app(), &tenant, member).await {
        Err(members::MemberOpError::Infra(detail)) => {
            assert!(detail.contains("member.balance_covers_debit"), "{detail}")
        }
        other => panic!("expected an internal error, got {other:?}"),
    }
}

#[tokio::test]
async fn verify_passes_a_clean_tenant_and_names_every_tampered_stream() {
    let f = Fixture::new(&[TENANT, "other"]).await;
    let first = member_with_history(f.app(), TENANT).await;
    let second = member_with_history(f.app(), TENANT).await;
    member_with_history(f.app(), "other").await;

    let output = f.audit(&["verify", "--tenant", TENANT]).await;
    let text = all_output(&output);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("verdict: OK"), "{text}");
    let output = f.audit(&["verify", "--tenant", TENANT, "--json"]).await;
    assert!(output.status.success(), "{}", all_output(&output));
    let clean = json(&output);
    assert_eq!(clean["ok"], true);
    assert_eq!(clean["streams"], 3, "the tenant's own stream and two members, not the other tenant's");
    assert_eq!(clean["events"], 11);
    let mut db = f.superuser().await;
    let digest: String =
        sqlx::query_scalar(wxcm_ops::audit::TENANT_DIGEST_SQL).bind(TENANT).fetch_one(&mut db).await.unwrap();
    assert_eq!(clean["digest"], digest.as_str(), "the SQL recipe computes the same digest");
    let again = json(&f.audit(&["verify", "--tenant", TENANT, "--json"]).await);
    assert_eq!(again["digest"], clean["digest"], "stable between runs");

    tamper(
        &mut db,
        "UPDATE events SET payload = jsonb_set(payload, '{CashCharged,amount_fen}', '1')
          WHERE aggregate_type = 'member' AND aggregate_id = $1 AND sequence = 3",
        first,
    )
    .await;
    // Without its first row the stream has no row with sequence 1: still found.
    tamper(
        &mut db,
        "DELETE FROM events WHERE aggregate_type = 'member' AND aggregate_id = $1 AND sequence = 1",
        second,
    )
    .await;

    let output = f.audit(&["verify", "--tenant", TENANT]).await;
    let text = all_output(&output);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains(&format!("member/{first} seq 3: hash mismatch (row changed)")), "{text}");
    assert!(text.contains(&format!("member/{second} seq 2: stream does not start at seq 1")), "{text}");
    let tampered = json(&f.audit(&["verify", "--tenant", TENANT, "--json"]).await);
    assert_eq!(tampered["ok"], false);
    assert_eq!(tampered["streams"], 3);
    // The digest covers stream heads (appends, truncation); edits behind the head are
    // the chain's job, and it named them above.
    assert_eq!(tampered["digest"], clean["digest"]);
    let streams: Vec<&str> =
        tampered["violations"].as_array().unwrap().iter().map(|v| v["stream"].as_str().unwrap()).collect();
    assert!(
        streams.contains(&format!("member/{first}").as_str()) && streams.contains(&format!("member/{second}").as_str())
    );

    let other = f.audit(&["verify", "--tenant", "other"]).await;
    assert!(other.status.success(), "the other tenant is untouched: {}", all_output(&other));
}

#[tokio::test]
async fn member_of_another_tenant_is_not_found() {
    let f = Fixture::new(&[TENANT, "other"]).await;
    let member = member_with_history(f.app(), TENANT).await;

    let output = f.audit_member("other", member, false).await;
    let text = all_output(&output);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("not found"), "{text}");
    assert!(!text.contains("CashDeposited"), "nothing of the member is shown: {text}");

    let report = json(&f.audit_member("other", member, true).await);
    assert_eq!((report["ok"].clone(), report["found"].clone()), (Value::Bool(false), Value::Bool(false)));
    assert_eq!(violations(&report), [(None, "not_found".to_owned())]);
    assert_eq!(report["entries"].as_array().unwrap().len(), 0);

    let unknown = f.audit_member(TENANT, MemberId::new_random(), false).await;
    assert!(!unknown.status.success());
    assert!(all_output(&unknown).contains("not found"));
}

/// The admin API's audit (`GET /members/{id}/audit`, `members::audit`) gives the CLI's verdict:
/// clean → ok, tampered → the same findings at the same sequences; another tenant's member is not found.
#[tokio::test]
async fn the_apis_member_audit_agrees_with_the_cli() {
    let f = Fixture::new(&[TENANT, "other"]).await;
    let tenant = TenantId::parse(TENANT).unwrap();
    let member = member_with_history(f.app(), TENANT).await;
    let verdict = members::audit(f.app(), &tenant, &member).await.unwrap();
    assert!(verdict.ok && verdict.findings.is_empty(), "{verdict:?}");
    assert_eq!((verdict.events, verdict.head_sequence), (5, Some(5)));
    let cli = json(&f.audit_member(TENANT, member, true).await);
    assert_eq!(verdict.head_hash.as_deref(), cli["head"]["hash"].as_str());
    let other = members::audit(f.app(), &TenantId::parse("other").unwrap(), &member).await;
    assert!(matches!(other, Err(wxcm_commands::ports::MemberAuditError::NotFound)), "{other:?}");

    let mut db = f.superuser().await;
    tamper(
        &mut db,
        "UPDATE events SET payload = jsonb_set(payload, '{CashDeposited,amount_fen}', '100000')
          WHERE aggregate_type = 'member' AND aggregate_id = $1 AND sequence = 2",
        member,
    )
    .await;
    let verdict = members::audit(f.app(), &tenant, &member).await.unwrap();
    assert!(!verdict.ok);
    let found: Vec<(Option<i64>, String)> = verdict.findings.iter().map(|v| (v.sequence, v.code.clone())).collect();
    assert_eq!(found, violations(&json(&f.audit_member(TENANT, member, true).await)));
}
