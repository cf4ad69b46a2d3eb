//! The operation log over HTTP against the real app and Postgres (two shards):
//! every admin and staff write is recorded with who, role, when, client
//! address, route, target and outcome; refused writes too; reads are not;
//! ledger writes link to the events they committed; owners and auditors read
//! it with filters and pages, managers and staff may not, and a tenant never
//! sees another tenant's entries.

use reqwest::StatusCode;
use serde_json::{json, Value};
use wxcm_commands::ports::Role;
use wxcm_commands::{auth, tenants, CommandContext};
use wxcm_domain::{Actor, TenantId};
use wxcm_tests::{fresh_settings, spawn_app_on, TestApp};

const PASSWORD: &str = "a-long-enough-password";
const LOG: &str = "/admin/api/v1/operation-log";

async fn tenant(t: &TestApp, tenant: &str) {
    let tenant_id = TenantId::parse(tenant).unwrap();
    let key = wxcm_commands::members::system_key(&["test-tenant", tenant]).unwrap();
    let ctx = CommandContext::new(tenant_id.clone(), key, "test".into());
    tenants::create(&t.app, &tenant_id, "Test Cinema", Actor::Admin { username: "test".into() }, &ctx).await.unwrap();
}

async fn user(t: &TestApp, tenant: &str, username: &str, role: Role) -> String {
    auth::create_admin(&t.app, &TenantId::parse(tenant).unwrap(), username, PASSWORD, role).await.unwrap();
    let res = t
        .http
        .post(t.url("/admin/api/v1/login"))
        .json(&json!({"tenant_id": tenant, "username": username, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    res.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned()
}

async fn post(t: &TestApp, token: &str, path: &str, key: &str, body: Value) -> (StatusCode, Value) {
    let res =
        t.http.post(t.url(path)).bearer_auth(token).header("Idempotency-Key", key).json(&body).send().await.unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn get(t: &TestApp, token: &str, path: &str) -> (StatusCode, Value) {
    let res = t.http.get(t.url(path)).bearer_auth(token).send().await.unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn every_write_is_recorded_and_owners_and_auditors_read_it() {
    let mut settings = fresh_settings(2).await;
    settings.http.login_attempts_per_minute = 1_000;
    settings.tenant_shards.insert("oplog-b".into(), "s1".into());
    let t = spawn_app_on(settings).await;
    tenant(&t, "oplog-a").await;
    tenant(&t, "oplog-b").await;
    let owner = user(&t, "oplog-a", "olga", Role::Owner).await;
    let staff = user(&t, "oplog-a", "sam", Role::Staff).await;
    let manager = user(&t, "oplog-a", "max", Role::Manager).await;
    let auditor = user(&t, "oplog-a", "ada", Role::Auditor).await;
    let other_owner = user(&t, "oplog-b", "otto", Role::Owner).await;

    // Writes: a registration by staff, a deposit (its events), a refused charge, a read.
    let (status, member) = post(&t, &staff, "/admin/api/v1/members", "oplog-register-1", json!({})).await;
    assert!(status.is_success(), "{status} {member}");
    let member_id = member["member_id"].as_str().unwrap().to_owned();
    let deposit_path = format!("/admin/api/v1/members/{member_id}/cash/deposits");
    let (status, deposit) =
        post(&t, &staff, &deposit_path, "oplog-deposit-1", json!({"amount_fen": 500, "reason": "counter"})).await;
    assert_eq!(status, StatusCode::OK, "{deposit}");
    let charge_path = format!("/admin/api/v1/members/{member_id}/cash/charges");
    let (status, _) =
        post(&t, &staff, &charge_path, "oplog-charge-1", json!({"amount_fen": 9_999, "reason": "too much"})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = get(&t, &staff, &format!("/admin/api/v1/members/{member_id}")).await;
    assert_eq!(status, StatusCode::OK);
    // A write of the other tenant.
    let (status, _) = post(&t, &other_owner, "/admin/api/v1/members", "oplog-register-b", json!({})).await;
    assert!(status.is_success());

    // The owner reads all of it, newest first; the read is not there.
    let (status, page) = get(&t, &owner, LOG).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let entries = page["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 3, "{page}");
    let (charge, deposit_entry, register) = (&entries[0], &entries[1], &entries[2]);
    assert_eq!(register["username"], "sam");
    assert_eq!(register["role"], "staff");
    assert_eq!(register["method"], "POST");
    assert_eq!(register["route"], "/admin/api/v1/members");
    assert_eq!(register["outcome"], "succeeded");
    assert_eq!(register["client_ip"], "127.0.0.1");
    assert_eq!(register["idempotency_key"], "oplog-register-1");
    assert!(register["correlation_id"].as_str().is_some_and(|c| c.len() == 36));
    assert_eq!(deposit_entry["route"], "/admin/api/v1/members/{member_id}/cash/deposits");
    assert_eq!(deposit_entry["target"], deposit_path.as_str());
    assert_eq!(deposit_entry["status"], 200);
    // The deposit links to the member stream's event it committed.
    let events = &deposit_entry["events"];
    assert_eq!(events["aggregate_type"], "member");
    assert_eq!(events["aggregate_id"], member_id.as_str());
    let sequence = deposit["entries"][0]["sequence"].as_i64().unwrap();
    assert_eq!((events["first_sequence"].as_i64(), events["last_sequence"].as_i64()), (Some(sequence), Some(sequence)));
    assert_eq!(charge["outcome"], "refused");
    assert_eq!(charge["status"], 409);
    assert!(charge["events"].is_null());

    // Filters and pages.
    let (_, refused) = get(&t, &auditor, &format!("{LOG}?outcome=refused")).await;
    assert_eq!(refused["entries"].as_array().unwrap().len(), 1);
    let (_, by_user) = get(&t, &auditor, &format!("{LOG}?username=olga")).await;
    assert_eq!(by_user["entries"].as_array().unwrap().len(), 0);
    let route = "/admin/api/v1/members/%7Bmember_id%7D/cash/deposits";
    let (_, by_route) = get(&t, &auditor, &format!("{LOG}?route={route}")).await;
    assert_eq!(by_route["entries"].as_array().unwrap().len(), 1, "{by_route}");
    let (_, first) = get(&t, &auditor, &format!("{LOG}?limit=2")).await;
    assert_eq!(first["entries"].as_array().unwrap().len(), 2);
    let next = first["next_before"].as_i64().expect("a next page");
    let (_, second) = get(&t, &auditor, &format!("{LOG}?limit=2&before={next}")).await;
    assert_eq!(second["entries"].as_array().unwrap().len(), 1);
    assert!(second["next_before"].is_null());
    let (_, future) = get(&t, &auditor, &format!("{LOG}?from=2999-01-01T00:00:00Z")).await;
    assert_eq!(future["entries"].as_array().unwrap().len(), 0);
    for bad in ["limit=0", "limit=101", "outcome=maybe", "from=yesterday", "before=-1"] {
        let (status, body) = get(&t, &auditor, &format!("{LOG}?{bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }

    // Managers and staff may not read it; another tenant sees only its own.
    assert_eq!(get(&t, &manager, LOG).await.0, StatusCode::FORBIDDEN);
    assert_eq!(get(&t, &staff, LOG).await.0, StatusCode::FORBIDDEN);
    let (_, theirs) = get(&t, &other_owner, LOG).await;
    let theirs = theirs["entries"].as_array().unwrap();
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0]["username"], "otto");
}

/// Writes that are not events are idempotent by key too: the same key and
/// request replay the first answer (the rules are not saved twice), another
/// request with the key is refused, and the key is required.
#[tokio::test]
async fn reply_rules_are_idempotent_by_key() {
    let mut settings = fresh_settings(1).await;
    settings.http.login_attempts_per_minute = 1_000;
    let t = spawn_app_on(settings).await;
    tenant(&t, "keyed-a").await;
    let owner = user(&t, "keyed-a", "olga", Role::Owner).await;
    let path = "/admin/api/v1/wechat/reply-rules";
    let put = |key: Option<&'static str>, body: Value| {
        let mut req = t.http.put(t.url(path)).bearer_auth(&owner).json(&body);
        if let Some(key) = key {
            req = req.header("Idempotency-Key", key);
        }
        async move {
            let res = req.send().await.unwrap();
            let replayed = res.headers().get("idempotent-replayed").is_some();
            (res.status(), replayed, res.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let rules = json!({"subscribe": {"type": "text", "content": "Welcome!"}, "keywords": []});
    let other = json!({"subscribe": {"type": "text", "content": "Hello!"}, "keywords": []});
    let (status, replayed, first) = put(Some("rules-key-0001"), rules.clone()).await;
    assert_eq!((status, replayed), (StatusCode::OK, false), "{first}");
    let (status, replayed, again) = put(Some("rules-key-0001"), rules.clone()).await;
    assert_eq!((status, replayed), (StatusCode::OK, true));
    assert_eq!(again, first, "the first answer, revision included");
    let (_, current) = get(&t, &owner, path).await;
    assert_eq!(current["revision"], first["revision"], "saved once");
    let (status, _, body) = put(Some("rules-key-0001"), other.clone()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("idempotency_key_reused")));
    let (status, _, body) = put(None, other).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("idempotency_key_missing")));
    // Both writes are in the operation log; the replay too (as a request that answered 200).
    let (_, log) = get(&t, &owner, "/admin/api/v1/operation-log").await;
    assert_eq!(log["entries"].as_array().unwrap().len(), 4);
}
