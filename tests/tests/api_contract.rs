//! The published OpenAPI document against the live server: schemathesis (an
//! OpenAPI-driven fuzzer, installed by `scripts/schemathesis-venv.sh`) runs
//! every check it has against a running instance, once per admin role with
//! that role's session and once for the member API with a member session.
//! Any finding fails the test: the document must state every rule the server
//! enforces (ids, lengths, enums, bounds, every status it answers), and the
//! server must keep to it.
//!
//! The instance is the real application on its own database, with every
//! WeChat and Pay base URL pointed at the simulator, so routes that call
//! WeChat (QR codes, menus, OAuth, Pay orders) answer as in production.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use reqwest::StatusCode;
use serde_json::{json, Value};
use wxcm_commands::ledger_requests::{self, LedgerRequest};
use wxcm_commands::ports::Role;
use wxcm_commands::tenants::{self, AccountInput, PayInput};
use wxcm_commands::{auth, members, pay_flows, CommandContext};
use wxcm_domain::member::{CardLevel, ExpiryPolicy, RegistrationSource};
use wxcm_domain::{Actor, AmountFen, IdempotencyKey, PointsAmount, TenantId};
use wxcm_tests::{fresh_settings, spawn_app_on, Simulator, TestApp};

const TENANT: &str = "contract-cinema";
const APPID: &str = "wx5c0e7a11ab1e5eed";
const APP_SECRET: &str = "contract-app-secret";
const MCH_ID: &str = "1900000777";
const API_V2_KEY: &str = "192006250b4c09247ec02edce69f6a2d";
const API_V3_KEY: &str = "0123456789abcdef0123456789abcdef";
const MERCHANT_SERIAL: &str = "3775B6A45ACD588826D15E583A95F5DD2A9F7FA6";
const MERCHANT_PRIVATE_PEM: &str = include_str!("../../gateways/testdata/other_private.pem");
const MERCHANT_PUBLIC_PEM: &str = include_str!("../../gateways/testdata/other_public.pem");
const COMPONENT: &str = "wxcontractcomponent";
const COMPONENT_SECRET: &str = "contract-component-secret";
const COMPONENT_TOKEN: &str = "contract-component-token";
const COMPONENT_AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const LOGOUT: &str = "/admin/api/v1/logout";
const PASSWORD: &str = "contract-password-0001";
const MEMBER_OPENID: &str = "oContractMember0001";
/// Test cases per operation and phase: all runs together stay within a few
/// minutes on a 2-core machine (debug build).
const MAX_EXAMPLES: &str = "8";
/// Fixed, so a failure reproduces with the same inputs.
const SEED: &str = "20261205";

fn ctx(tenant: &TenantId, what: &str) -> CommandContext {
    let key = IdempotencyKey::parse(&format!("contract-{what}")).unwrap();
    CommandContext::new(tenant.clone(), key, "test".into())
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The pinned schemathesis, installed on first use.
fn schemathesis() -> PathBuf {
    let out = std::process::Command::new(repo_root().join("scripts/schemathesis-venv.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("running scripts/schemathesis-venv.sh");
    assert!(out.status.success(), "scripts/schemathesis-venv.sh failed");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

struct World {
    t: TestApp,
    sim: Simulator,
    http: reqwest::Client,
}

async fn world() -> World {
    let sim = Simulator::start().await;
    let http = reqwest::Client::new();
    let control = |path: &str, body: Value| {
        let req = http.post(format!("{}{path}", sim.base_url)).json(&body);
        async move {
            let res = req.send().await.unwrap();
            assert!(res.status().is_success(), "simulator {}", res.status());
            res.json::<Value>().await.unwrap_or(Value::Null)
        }
    };
    control("/sandbox/apps", json!({"appid": APPID, "secret": APP_SECRET})).await;
    // A third-party platform, so its authorization start answers as in production.
    control("/sandbox/apps", json!({"appid": COMPONENT, "secret": COMPONENT_SECRET})).await;
    control(
        "/sandbox/pay/merchants",
        json!({"mch_id": MCH_ID, "appid": APPID, "api_v2_key": API_V2_KEY, "api_v3_key": API_V3_KEY,
               "merchant_public_key_pem": MERCHANT_PUBLIC_PEM}),
    )
    .await;
    let mut settings = fresh_settings(1).await;
    settings.wechat.api_base = sim.base_url.clone();
    settings.wechat.open_base = sim.base_url.clone();
    settings.wechat.mp_base = sim.base_url.clone();
    settings.wechat.pay_base_url = sim.base_url.clone();
    settings.wechat.component_appid = COMPONENT.into();
    settings.wechat.component_token = COMPONENT_TOKEN.into();
    settings.wechat.component_encoding_aes_key = COMPONENT_AES_KEY.into();
    settings.wechat.component_app_secret = COMPONENT_SECRET.into();
    let t = spawn_app_on(settings).await;
    // The verify ticket WeChat pushes every ten minutes, pushed once through the real callback.
    let ticket = "ticket@@@contract";
    control("/sandbox/component/ticket", json!({"component_appid": COMPONENT, "ticket": ticket})).await;
    let pushed = control(
        "/sandbox/callbacks/component",
        json!({"target_base_url": t.base_url, "component_appid": COMPONENT, "token": COMPONENT_TOKEN,
               "encoding_aes_key": COMPONENT_AES_KEY, "info": {"verify_ticket": {"ticket": ticket}}}),
    )
    .await;
    assert_eq!(pushed["response"]["status"], 200, "{pushed}");
    let tenant = TenantId::parse(TENANT).unwrap();
    let admin = Actor::Admin { username: "test".into() };
    tenants::create(&t.app, &tenant, "Contract Cinema", admin.clone(), &ctx(&tenant, "tenant")).await.unwrap();
    let account = AccountInput {
        appid: APPID.into(),
        name: "Contract".into(),
        token: "contract-token".into(),
        encoding_aes_key: "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG".into(),
        app_secret: APP_SECRET.into(),
        pay: Some(PayInput {
            mch_id: MCH_ID.into(),
            api_v2_key: Some(API_V2_KEY.into()),
            api_v3_key: Some(API_V3_KEY.into()),
            merchant_cert_serial: Some(MERCHANT_SERIAL.into()),
            merchant_private_key: Some(MERCHANT_PRIVATE_PEM.into()),
        }),
    };
    tenants::bind_account(&t.app, &tenant, account, admin.clone(), &ctx(&tenant, "bind")).await.unwrap();
    let platform: Value =
        http.get(format!("{}/sandbox/pay/platform", sim.base_url)).send().await.unwrap().json().await.unwrap();
    let (serial, pem) = (platform["serial"].as_str().unwrap(), platform["public_key_pem"].as_str().unwrap());
    pay_flows::put_platform_key(&t.app, &tenant, MCH_ID, serial, pem).await.unwrap();
    // A member with a little of everything, so lookups by the fuzzer's ids meet one.
    let request = members::RegisterRequest {
        openid: Some(wxcm_domain::OpenId::parse(MEMBER_OPENID).unwrap()),
        source: RegistrationSource::Staff,
        card_level: CardLevel::standard(),
    };
    let (member, _) =
        members::register(&t.app, &tenant, request, admin.clone(), &ctx(&tenant, "member")).await.unwrap();
    // Points and balance enough for the member run's orders to be paid.
    let reason = wxcm_domain::Reference::parse("contract").unwrap();
    let grant = LedgerRequest::PointsGrant {
        points: PointsAmount::new(1_000_000).unwrap(),
        expiry: ExpiryPolicy::Never,
        reason: reason.clone(),
        reference: None,
    };
    ledger_requests::execute(&t.app, &tenant, member.member_id, grant, admin.clone(), &ctx(&tenant, "points"))
        .await
        .unwrap();
    let deposit =
        LedgerRequest::CashDeposit { amount_fen: AmountFen::new(10_000_000).unwrap(), reason, reference: None };
    ledger_requests::execute(&t.app, &tenant, member.member_id, deposit, admin, &ctx(&tenant, "cash")).await.unwrap();
    World { t, sim, http }
}

impl World {
    /// Products of every price kind, on sale with a large stock, for the member
    /// run to order (the hooks put their ids into positive cases): as
    /// `id:kind,…` for `WXCM_CONTRACT_PRODUCTS`.
    async fn products(&self, owner: &str) -> String {
        let prices = [
            ("points", json!({"kind": "points", "points": 10})),
            ("fen", json!({"kind": "fen", "amount_fen": 100})),
            ("points_and_fen", json!({"kind": "points_and_fen", "points": 5, "amount_fen": 50})),
        ];
        let mut listed = Vec::new();
        for (kind, price) in prices {
            let body = json!({"name": format!("contract {kind}"), "description": "for the fuzzer", "images": [],
                "price": price, "stock": {"kind": "finite", "total": 100_000}, "per_member_limit": null});
            let res = self
                .http
                .post(self.t.url("/admin/api/v1/mall/products"))
                .bearer_auth(owner)
                .header("Idempotency-Key", format!("contract-product-{kind}"))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::CREATED);
            let product: Value = res.json().await.unwrap();
            listed.push(format!("{}:{kind}", product["product_id"].as_str().unwrap()));
        }
        listed.join(",")
    }

    /// A fresh session of a fresh user of `role`.
    async fn admin_session(&self, role: Role, n: usize) -> String {
        let tenant = TenantId::parse(TENANT).unwrap();
        let username = format!("contract-{}-{n}", role.as_str());
        auth::create_admin(&self.t.app, &tenant, &username, PASSWORD, role).await.unwrap();
        let body = json!({"tenant_id": TENANT, "username": username, "password": PASSWORD});
        let res = self.http.post(self.t.url("/admin/api/v1/login")).json(&body).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        res.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned()
    }

    /// A member session through WeChat OAuth, as a member page gets one.
    async fn member_session(&self) -> String {
        let res = self
            .http
            .post(format!("{}/sandbox/oauth/codes", self.sim.base_url))
            .json(&json!({"appid": APPID, "openid": MEMBER_OPENID}))
            .send()
            .await
            .unwrap();
        let code = res.json::<Value>().await.unwrap()["code"].as_str().unwrap().to_owned();
        let res = self
            .http
            .post(self.t.url("/m/api/v1/sessions"))
            .json(&json!({"appid": APPID, "code": code}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::CREATED);
        res.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned()
    }
}

/// One schemathesis run over the operations whose path matches `paths`;
/// returns its report (output) when it found something.
async fn run(
    bin: &Path,
    base_url: &str,
    name: &str,
    token: &str,
    paths: &str,
    except: Option<&str>,
    products: Option<&str>,
) -> Result<(), String> {
    let report_dir = std::env::temp_dir().join(format!("wxcm-schemathesis-{}", uuid::Uuid::new_v4().simple()));
    // Its working directory too: schemathesis keeps a cache of crashes there, which must not land in the clone.
    std::fs::create_dir_all(&report_dir).expect("report dir");
    let mut cmd = tokio::process::Command::new(bin);
    cmd.current_dir(&report_dir);
    cmd.arg("--config-file")
        .arg(repo_root().join("tests/schemathesis/schemathesis.toml"))
        .arg("run")
        .arg(format!("{base_url}/openapi.json"))
        .args(["--url", base_url])
        .args(["--checks", "all"])
        .args(["--max-examples", MAX_EXAMPLES])
        .args(["--seed", SEED])
        // One worker (runs go side by side as processes instead): CPython 3.11's `ast.parse`, which
        // hypothesis calls to describe filters, fails at random ("AST constructor recursion depth
        // mismatch") when two threads of one process use it at once.
        .args(["--workers", "1"])
        .args(["--include-path-regex", paths])
        .args(except.map(|path| ["--exclude-path", path]).into_iter().flatten())
        .args(["--generation-database", "none"])
        .args(["--no-color"])
        // The tokens and keys are a throwaway database's; a report must show what was sent.
        .args(["--output-sanitize", "false"])
        .arg("--report-dir")
        .arg(&report_dir)
        .env("SCHEMATHESIS_HOOKS", "hooks")
        .env("PYTHONPATH", repo_root().join("tests/schemathesis"))
        .env("WXCM_CONTRACT_PRODUCTS", products.unwrap_or_default())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd.arg("--header").arg(format!("Authorization: Bearer {token}"));
    let started = Instant::now();
    let out = cmd.output().await.expect("running schemathesis");
    let _ = std::fs::remove_dir_all(&report_dir);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("schemathesis {name}: exit {:?} in {:.0?}", out.status.code(), started.elapsed());
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("=== schemathesis {name} ===\n{text}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schemathesis_finds_nothing_for_any_role() {
    let bin = tokio::task::spawn_blocking(schemathesis).await.unwrap();
    let w = world().await;
    let started = Instant::now();
    let mut failures = Vec::new();
    // Every session first: the fuzzer's calls of `login` trip its rate limit (429) for a while.
    let mut sessions = Vec::new();
    for (n, role) in [Role::Owner, Role::Manager, Role::Staff, Role::Auditor].into_iter().enumerate() {
        sessions.push((role, w.admin_session(role, n).await));
    }
    let member = w.member_session().await;
    let products = w.products(&sessions[0].1).await;
    let base_url = w.t.base_url.as_str();
    let bin = bin.as_path();
    // The member API first, on the world as built: run beside the owner, what it meets (products the
    // owner run happens to have made) would depend on timing. Its positive orders name the world's
    // products of every price kind (the hooks), so placing, paying and listing orders are fuzzed
    // against real products, not only unknown ids.
    let member_result = run(bin, base_url, "member", &member, "^/m/api/v1/", None, Some(&products)).await;
    // Then the roles side by side, each in its own process (one worker each); a role's logout run
    // follows its main run.
    let role_runs = sessions.into_iter().map(|(role, token)| async move {
        // Logout ends the session it is called with, so it runs last.
        let main = run(bin, base_url, role.as_str(), &token, "^/admin/api/v1/", Some(LOGOUT), None).await;
        let logout =
            run(bin, base_url, &format!("{} logout", role.as_str()), &token, "^/admin/api/v1/logout$", None, None)
                .await;
        [main, logout]
    });
    let role_results = futures::future::join_all(role_runs).await;
    failures.extend([member_result].into_iter().chain(role_results.into_iter().flatten()).filter_map(Result::err));
    eprintln!("schemathesis: all runs in {:.0?}", started.elapsed());
    let World { t, sim, .. } = w;
    sim.stop().await;
    t.stop().await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
