//! WeChat callbacks end to end: the simulator signs, encrypts and pushes
//! callbacks to the real server (real Postgres); the tests check members,
//! ledgers, scene counters and replies through the admin API and use cases.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;
use serde_json::{json, Value};
use wxcm_commands::members::system_key;
use wxcm_commands::ports::Role;
use wxcm_commands::wechat::{self as usecase, KeywordRule, MatchMode, ReplyContent, ReplyRules};
use wxcm_commands::{auth, tenants, CommandContext};
use wxcm_domain::member::{Attribution, ExpiryPolicy};
use wxcm_domain::tenant::{PointsRules, TenantCommand};
use wxcm_domain::{Actor, AppId, MemberId, OpenId, SceneKey, TenantId};
use wxcm_simulator::wechat::callbacks::{
    MessageKind, PushMessage, PushMode, PushRequest, PushResponse, Pusher, Tamper,
};
use wxcm_tests::{spawn_app_with_projections, TestApp};

const TENANT: &str = "moon-cinema";
const APPID: &str = "wx0123456789abcdef";
const TOKEN: &str = "callback-token-123";
const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
const PASSWORD: &str = "a-long-enough-password";
const INITIAL_POINTS: i64 = 100;
const LEVEL1_POINTS: i64 = 50;
const LEVEL2_POINTS: i64 = 20;

struct Fixture {
    t: TestApp,
    tenant: TenantId,
    admin_token: String,
    pusher: Pusher,
}

async fn owner_token(t: &TestApp, tenant: &TenantId) -> String {
    let key = system_key(&["test-tenant", tenant.as_str()]).unwrap();
    let ctx = CommandContext::new(tenant.clone(), key, "test".into());
    tenants::create(&t.app, tenant, "Moon Cinema", Actor::Admin { username: "t".into() }, &ctx).await.unwrap();
    auth::create_admin(&t.app, tenant, "owner", PASSWORD, Role::Owner).await.unwrap();
    let res = t
        .http
        .post(t.url("/admin/api/v1/login"))
        .json(&json!({"tenant_id": tenant.as_str(), "username": "owner", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    res.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned()
}

/// A tenant with a direct-mode account bound through the admin API and points rules set.
async fn fixture_on(t: TestApp) -> Fixture {
    let tenant = TenantId::parse(TENANT).unwrap();
    let admin_token = owner_token(&t, &tenant).await;
    let res = t
        .http
        .put(t.url(&format!("/admin/api/v1/tenant/official-accounts/{APPID}")))
        .bearer_auth(&admin_token)
        .header("Idempotency-Key", "bind-account-0001")
        .json(&json!({"name": "Main", "token": TOKEN, "encoding_aes_key": AES_KEY, "app_secret": "app-secret-0123456789"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK, "{}", res.text().await.unwrap());
    let rules = PointsRules {
        initial_points: INITIAL_POINTS,
        referral_level1_points: LEVEL1_POINTS,
        referral_level2_points: LEVEL2_POINTS,
        expiry: ExpiryPolicy::Never,
    };
    let ctx = CommandContext::new(tenant.clone(), system_key(&["test-rules", TENANT]).unwrap(), "test".into());
    let command = TenantCommand::SetPointsRules { rules, actor: Actor::Admin { username: "t".into() } };
    let shard = t.app.router.route(&tenant).unwrap();
    shard.tenants.execute(tenant.as_str(), command, &"points-rules", &ctx).await.unwrap();
    Fixture { t, tenant, admin_token, pusher: Pusher::new().unwrap() }
}

async fn fixture() -> Fixture {
    // The ledger API reads the read model: `grants` catches the projection up first.
    fixture_on(spawn_app_with_projections().await).await
}

impl Fixture {
    fn request(&self, message: PushMessage) -> PushRequest {
        PushRequest::safe(&self.t.base_url, APPID, TOKEN, AES_KEY, message)
    }

    async fn push(&self, req: &PushRequest) -> Vec<PushResponse> {
        self.pusher.push(req).await.unwrap()
    }

    async fn subscribe(&self, openid: &str) -> PushResponse {
        let r = self.push(&self.request(PushMessage::new(MessageKind::Subscribe, openid))).await;
        assert_eq!(r[0].status, Some(200), "{r:?}");
        r[0].clone()
    }

    async fn admin_get(&self, path: &str) -> (StatusCode, Value) {
        let res = self.t.http.get(self.t.url(path)).bearer_auth(&self.admin_token).send().await.unwrap();
        (res.status(), res.json().await.unwrap_or(Value::Null))
    }

    async fn member(&self, openid: &str) -> Value {
        let (status, body) = self.admin_get(&format!("/admin/api/v1/members/by-openid/{openid}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// Points granted to the member, one entry per grant (from the ledger API,
    /// once the read model has every event committed so far).
    async fn grants(&self, openid: &str) -> Vec<i64> {
        let id = self.member(openid).await["member_id"].as_str().unwrap().to_owned();
        self.t.catch_up().await;
        let (status, page) = self.admin_get(&format!("/admin/api/v1/members/{id}/ledger")).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        page["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["event_type"] == "PointsGranted")
            .map(|e| e["points_delta"].as_i64().unwrap())
            .collect()
    }

    async fn state(&self, openid: &str) -> wxcm_domain::member::Member {
        let member_id = MemberId::for_openid(&self.tenant, &OpenId::parse(openid).unwrap());
        let shard = self.t.app.router.route(&self.tenant).unwrap();
        shard.members.load(&self.tenant, &member_id.to_string()).await.unwrap().0
    }

    async fn events(&self) -> i64 {
        let mut total = 0;
        for shard in self.t.settings.shards.keys() {
            let mut db = self.t.shard_db(shard).await;
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM events").fetch_one(&mut db).await.unwrap();
            total += n;
        }
        total
    }
}

#[tokio::test]
async fn the_same_subscribe_three_times_at_once_makes_one_member_with_one_welcome() {
    let f = fixture().await;
    let mut req = f.request(PushMessage::new(MessageKind::Subscribe, "o-dup-1"));
    req.copies = 3;
    req.concurrent = true;
    let responses = f.push(&req).await;
    assert!(responses.iter().all(|r| r.status == Some(200)), "{responses:?}");
    assert_eq!(f.grants("o-dup-1").await, vec![INITIAL_POINTS]);
    assert_eq!(f.member("o-dup-1").await["points"], INITIAL_POINTS);
    // A late retry of the same message changes nothing either.
    req.copies = 1;
    f.push(&req).await;
    assert_eq!(f.grants("o-dup-1").await, vec![INITIAL_POINTS]);
    f.t.stop().await;
}

#[tokio::test]
async fn a_scene_qr_subscribe_is_attributed_to_that_qr_and_counted() {
    let f = fixture().await;
    let mut scan = PushMessage::new(MessageKind::Scan, "o-scene-1");
    scan.scene = Some("lobby-poster".into());
    f.push(&f.request(scan)).await;
    let mut message = PushMessage::new(MessageKind::Subscribe, "o-scene-1");
    message.scene = Some("lobby-poster".into());
    let r = f.push(&f.request(message)).await;
    assert_eq!(r[0].status, Some(200));
    let state = f.state("o-scene-1").await;
    assert_eq!(state.attribution, Some(Attribution::SceneQr { scene: SceneKey::parse("lobby-poster").unwrap() }));
    let scenes = usecase::list_scenes(&f.t.app, &f.tenant).await.unwrap();
    let scene = scenes.iter().find(|s| s.scene == "lobby-poster").expect("scene counted");
    // Every scan lands (SCAN by a follower, subscribe by a new one); only the subscribe follows.
    assert_eq!((scene.landings, scene.follows), (2, 1));
    assert_eq!(f.grants("o-scene-1").await, vec![INITIAL_POINTS]);
    f.t.stop().await;
}

#[tokio::test]
async fn a_referral_follow_rewards_levels_one_and_two_exactly_once() {
    let f = fixture().await;
    f.subscribe("o-ref-a").await;
    let a = MemberId::for_openid(&f.tenant, &OpenId::parse("o-ref-a").unwrap());
    usecase::record_referral_visit(&f.t.app, &f.tenant, &OpenId::parse("o-ref-b").unwrap(), a).await.unwrap();
    f.subscribe("o-ref-b").await;
    let b = MemberId::for_openid(&f.tenant, &OpenId::parse("o-ref-b").unwrap());
    assert_eq!(f.state("o-ref-b").await.attribution, Some(Attribution::Referral { referrer: a }));
    usecase::record_referral_visit(&f.t.app, &f.tenant, &OpenId::parse("o-ref-c").unwrap(), b).await.unwrap();
    // C's follow arrives twice at once (WeChat retry racing the first try).
    let mut req = f.request(PushMessage::new(MessageKind::Subscribe, "o-ref-c"));
    req.copies = 2;
    req.concurrent = true;
    f.push(&req).await;
    assert_eq!(f.grants("o-ref-c").await, vec![INITIAL_POINTS]);
    let mut b_grants = f.grants("o-ref-b").await;
    b_grants.sort_unstable();
    assert_eq!(b_grants, vec![LEVEL1_POINTS, INITIAL_POINTS], "B: initial + level 1 for C");
    let mut a_grants = f.grants("o-ref-a").await;
    a_grants.sort_unstable();
    assert_eq!(
        a_grants,
        vec![LEVEL2_POINTS, LEVEL1_POINTS, INITIAL_POINTS],
        "A: initial + level 1 for B + level 2 for C"
    );
    f.t.stop().await;
}

#[tokio::test]
async fn unsubscribe_marks_unfollowed_and_resubscribe_reactivates_without_new_points() {
    let f = fixture().await;
    let mut first = PushMessage::new(MessageKind::Subscribe, "o-back-1");
    first.create_time = Some(chrono::Utc::now().timestamp() - 20);
    f.push(&f.request(first)).await;
    let mut unsubscribe = PushMessage::new(MessageKind::Unsubscribe, "o-back-1");
    unsubscribe.create_time = Some(chrono::Utc::now().timestamp() - 10);
    f.push(&f.request(unsubscribe)).await;
    assert!(!f.state("o-back-1").await.followed);
    f.subscribe("o-back-1").await;
    assert!(f.state("o-back-1").await.followed);
    assert_eq!(f.grants("o-back-1").await, vec![INITIAL_POINTS]);
    f.t.stop().await;
}

#[tokio::test]
async fn tampered_callbacks_are_refused_and_write_nothing() {
    let f = fixture().await;
    let before = f.events().await;
    let cases = [
        (Tamper::Signature, PushMode::Safe, 403),
        (Tamper::Signature, PushMode::Plaintext, 403),
        (Tamper::TimestampStale, PushMode::Safe, 403),
        (Tamper::AppidTail, PushMode::Safe, 400),
        (Tamper::AppidTail, PushMode::Compat, 400),
        (Tamper::Doctype, PushMode::Safe, 400),
        (Tamper::Doctype, PushMode::Plaintext, 400),
        (Tamper::Oversized, PushMode::Safe, 413),
        (Tamper::Oversized, PushMode::Plaintext, 413),
    ];
    for (i, (tamper, mode, status)) in cases.into_iter().enumerate() {
        let mut req = f.request(PushMessage::new(MessageKind::Subscribe, &format!("o-tamper-{i}")));
        req.mode = mode;
        req.tamper = tamper;
        let r = f.push(&req).await;
        assert_eq!(r[0].status, Some(status), "{tamper:?} in {mode:?}: {r:?}");
        let (found, _) = f.admin_get(&format!("/admin/api/v1/members/by-openid/o-tamper-{i}")).await;
        assert_eq!(found, StatusCode::NOT_FOUND, "{tamper:?} in {mode:?} registered a member");
    }
    assert_eq!(f.events().await, before, "no event written by a refused callback");
    f.t.stop().await;
}

#[tokio::test]
async fn keyword_and_default_replies_in_every_mode() {
    let f = fixture().await;
    let rules = ReplyRules {
        subscribe: Some(ReplyContent::Text { content: "Welcome to Moon Cinema".into() }),
        default: Some(ReplyContent::Text { content: "Type 'showtimes'".into() }),
        keywords: vec![KeywordRule {
            keywords: vec!["showtimes".into()],
            mode: MatchMode::Contains,
            reply: ReplyContent::Text { content: "Tonight: 19:30 and 21:45".into() },
        }],
    };
    usecase::save_reply_rules(&f.t.app, &f.tenant, &rules, "test").await.unwrap();
    let welcome = f.subscribe("o-reply-1").await;
    let reply = welcome.reply.expect("welcome reply");
    assert_eq!((reply.encrypted, reply.signature_valid), (true, Some(true)));
    assert_eq!(reply.content(), Some("Welcome to Moon Cinema"));
    assert_eq!(reply.fields.get("ToUserName").map(String::as_str), Some("o-reply-1"));
    for (mode, encrypted) in [(PushMode::Safe, true), (PushMode::Compat, true), (PushMode::Plaintext, false)] {
        for (text, expected) in [("What are the SHOWTIMES?", "Tonight: 19:30 and 21:45"), ("hello", "Type 'showtimes'")]
        {
            let mut message = PushMessage::new(MessageKind::Text, "o-reply-1");
            message.content = Some(text.into());
            let mut req = f.request(message);
            req.mode = mode;
            let r = f.push(&req).await;
            let reply = r[0].reply.as_ref().unwrap_or_else(|| panic!("{mode:?} {text}: {r:?}"));
            assert_eq!(reply.encrypted, encrypted, "{mode:?}");
            assert_ne!(reply.signature_valid, Some(false), "{mode:?}");
            assert_eq!(reply.content(), Some(expected), "{mode:?} {text}");
        }
    }
    f.t.stop().await;
}

#[tokio::test]
async fn url_verification_echoes_and_unknown_accounts_are_404() {
    let f = fixture().await;
    let (ts, nonce) = (chrono::Utc::now().timestamp().to_string(), "12345");
    let sig = wxcm_protocol::wechat::crypto::signature(TOKEN, &ts, nonce);
    let url = format!("/wechat/mp/{APPID}?signature={sig}&timestamp={ts}&nonce={nonce}&echostr=echo-4711");
    let res = f.t.http.get(f.t.url(&url)).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.text().await.unwrap(), "echo-4711");
    let bad = url.replace(&sig, &"0".repeat(40));
    assert_eq!(f.t.http.get(f.t.url(&bad)).send().await.unwrap().status(), StatusCode::FORBIDDEN);
    let mut req = f.request(PushMessage::new(MessageKind::Subscribe, "o-nobody"));
    req.appid = "wxffffffffffffffff".into();
    assert_eq!(f.push(&req).await[0].status, Some(404));
    f.t.stop().await;
}

#[tokio::test]
async fn other_messages_and_events_are_accepted_and_stored() {
    let f = fixture().await;
    f.subscribe("o-misc-1").await;
    for kind in [
        MessageKind::Click,
        MessageKind::View,
        MessageKind::Location,
        MessageKind::TemplateFinish,
        MessageKind::MassFinish,
        MessageKind::Image,
    ] {
        let mut message = PushMessage::new(kind, "o-misc-1");
        message.key = Some(if kind == MessageKind::View { "https://example.com/menu".into() } else { "MENU_A".into() });
        let r = f.push(&f.request(message)).await;
        assert_eq!(r[0].status, Some(200), "{kind:?}: {r:?}");
    }
    f.t.stop().await;
}

/// WeChat's documented deep events (official samples, kept beside the protocol's unit tests).
const DEEP_EVENTS: [(&str, &str); 4] = [
    ("pic_sysphoto", include_str!("../../gateways/protocol/src/wechat/fixtures/pic_sysphoto.xml")),
    ("pic_photo_or_album", include_str!("../../gateways/protocol/src/wechat/fixtures/pic_photo_or_album.xml")),
    ("location_select", include_str!("../../gateways/protocol/src/wechat/fixtures/location_select.xml")),
    ("masssendjobfinish", include_str!("../../gateways/protocol/src/wechat/fixtures/masssendjobfinish_copyright.xml")),
];

/// Posts `plaintext` as WeChat would in `mode`, signed with the account's token.
async fn post_raw(f: &Fixture, plaintext: &str, mode: PushMode) -> (StatusCode, String) {
    use wxcm_protocol::wechat::crypto::{self, AesKey, MsgCrypt};
    let timestamp = chrono::Utc::now().timestamp().to_string();
    let nonce = "deep-event-nonce";
    let mut query =
        format!("signature={}&timestamp={timestamp}&nonce={nonce}", crypto::signature(TOKEN, &timestamp, nonce));
    let body = if mode == PushMode::Plaintext {
        plaintext.to_owned()
    } else {
        let crypt = MsgCrypt::new(AesKey::from_encoding_aes_key(AES_KEY).unwrap(), APPID).unwrap();
        let encrypt = crypt.encrypt_random(plaintext).unwrap();
        query.push_str(&format!(
            "&encrypt_type=aes&msg_signature={}",
            crypto::msg_signature(TOKEN, &timestamp, nonce, &encrypt)
        ));
        // Compatibility mode sends the plaintext fields beside the ciphertext.
        let fields = if mode == PushMode::Compat {
            plaintext.trim().trim_start_matches("<xml>").trim_end_matches("</xml>").to_owned()
        } else {
            "<ToUserName><![CDATA[gh_e136c6e50636]]></ToUserName>".to_owned()
        };
        format!("<xml>{fields}<Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>")
    };
    let res = f.t.http.post(f.t.url(&format!("/wechat/mp/{APPID}?{query}"))).body(body).send().await.unwrap();
    (res.status(), res.text().await.unwrap())
}

/// The same body with another CreateTime, so that WeChat's dedup sees a new event.
fn at_time(body: &str, create_time: i64) -> String {
    let start = body.find("<CreateTime>").unwrap() + "<CreateTime>".len();
    let end = body.find("</CreateTime>").unwrap();
    format!("{}{create_time}{}", &body[..start], &body[end..])
}

#[tokio::test]
async fn documented_deep_events_get_success_in_every_mode_and_mass_results_keep_their_lists() {
    let f = fixture_on(wxcm_tests::spawn_app().await).await;
    let mut create_time = 1_700_000_000;
    for (name, body) in DEEP_EVENTS {
        for mode in [PushMode::Plaintext, PushMode::Compat, PushMode::Safe] {
            create_time += 1;
            let (status, reply) = post_raw(&f, &at_time(body, create_time), mode).await;
            assert_eq!((status, reply.as_str()), (StatusCode::OK, "success"), "{name} in {mode:?}");
        }
    }
    let mut stored = Vec::new();
    for shard in f.t.settings.shards.keys() {
        let mut db = f.t.shard_db(shard).await;
        let rows: Vec<(String, Value)> = sqlx::query_as(
            "SELECT event, fields FROM wechat_messages WHERE event LIKE 'pic_%' OR event = 'location_select'",
        )
        .fetch_all(&mut db)
        .await
        .unwrap();
        stored.extend(rows);
        let counts: Vec<Value> = sqlx::query_scalar(
            "SELECT counts FROM wechat_delivery_results WHERE kind = 'mass' AND msg_id = 1000001625",
        )
        .fetch_all(&mut db)
        .await
        .unwrap();
        for counts in counts {
            assert_eq!(counts["total"], 0);
            assert_eq!(counts["copyright_check"]["check_state"], 2);
            let results = counts["copyright_check"]["results"].as_array().unwrap();
            assert_eq!(results.len(), 2);
            assert_eq!(results[1]["original_article_url"], "Url_2");
            assert_eq!(results[1]["can_reprint"], true);
            assert_eq!(counts["article_urls"], json!([{"article_idx": 1, "article_url": null}]));
            stored.push(("masssendjobfinish".into(), Value::Null));
        }
    }
    assert_eq!(stored.iter().filter(|(event, _)| event == "masssendjobfinish").count(), 1, "one delivery result");
    // Each picture of an album selection is kept with the stored message.
    let album = stored.iter().find(|(event, _)| event == "pic_photo_or_album").map(|(_, fields)| fields).unwrap();
    assert_eq!(album["SendPicsInfo/PicList/item/PicMd5Sum"].as_array().map(Vec::len), Some(9));
    assert_eq!(stored.iter().filter(|(event, _)| event != "masssendjobfinish").count(), 9);
    f.t.stop().await;
}

/// Records the replies the gateway hands to the customer-service API.
#[derive(Default)]
struct RecordingOutbound {
    sent: Mutex<Vec<(String, ReplyContent)>>,
}

#[async_trait]
impl wxcm_http::WechatOutbound for RecordingOutbound {
    async fn send_custom_message(&self, _appid: &AppId, openid: &OpenId, reply: &ReplyContent) -> Result<(), String> {
        self.sent.lock().map_err(|e| e.to_string())?.push((openid.as_str().to_owned(), reply.clone()));
        Ok(())
    }
    async fn store_verify_ticket(&self, _ticket: &str) -> Result<(), String> {
        Ok(())
    }
    async fn query_auth(&self, _code: &str) -> Result<(String, wxcm_domain::tenant::SealedSecret), String> {
        Err("not used".into())
    }
    async fn forget_authorizer(&self, _appid: &AppId) -> Result<(), String> {
        Ok(())
    }
}

struct AlwaysReady;

#[async_trait]
impl wxcm_http::Readiness for AlwaysReady {
    async fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

/// The composition root does not wire `reply_budget_ms` or an outbound client yet, so this test
/// serves the same application through `router_with` with a 1 ms budget and a recording outbound.
#[tokio::test]
async fn a_slow_reply_is_answered_success_in_time_and_sent_through_customer_service() {
    let f = fixture().await;
    let rules = ReplyRules {
        subscribe: Some(ReplyContent::Text { content: "Welcome (late)".into() }),
        default: None,
        keywords: vec![],
    };
    usecase::save_reply_rules(&f.t.app, &f.tenant, &rules, "test").await.unwrap();
    let outbound = Arc::new(RecordingOutbound::default());
    let settings = wxcm_http::WechatSettings { reply_budget_ms: 1, ..Default::default() };
    let edge = Arc::new(wxcm_http::WechatEdge::new(settings, Some(outbound.clone()), f.t.app.clock.clone()));
    let router =
        wxcm_http::router_with(f.t.app.clone(), Arc::new(AlwaysReady), wxcm_http::HttpSettings::default(), edge);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum_serve(listener, router).await });
    let mut req = PushRequest::safe(&base, APPID, TOKEN, AES_KEY, PushMessage::new(MessageKind::Subscribe, "o-late-1"));
    req.timeout_ms = Some(5_000);
    let r = f.pusher.push(&req).await.unwrap();
    assert_eq!((r[0].status, r[0].body.as_str()), (Some(200), "success"), "{r:?}");
    assert!(r[0].elapsed_ms < 1_000, "answered in {} ms", r[0].elapsed_ms);
    let mut sent = Vec::new();
    for _ in 0..100 {
        sent = outbound.sent.lock().unwrap().clone();
        if !sent.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sent, vec![("o-late-1".to_owned(), ReplyContent::Text { content: "Welcome (late)".into() })]);
    assert_eq!(f.grants("o-late-1").await, vec![INITIAL_POINTS], "the work finished after the answer");
    server.abort();
    f.t.stop().await;
}

async fn axum_serve(listener: tokio::net::TcpListener, router: axum::Router) {
    let _ = axum::serve(listener, router).await;
}

/// A handler that registered a referred follower and died before any reward
/// (a registration of the older two-step kind, without welcome points): the
/// next try grants the initial and the referral points, each once.
#[tokio::test]
async fn a_retry_after_a_dead_handler_grants_the_missing_rewards_once() {
    use wxcm_commands::members::{register_attributed, RegisterRequest};
    use wxcm_domain::member::{CardLevel, RegistrationSource};
    let f = fixture().await;
    f.subscribe("o-rec-a").await;
    let a = MemberId::for_openid(&f.tenant, &OpenId::parse("o-rec-a").unwrap());
    let b_openid = OpenId::parse("o-rec-b").unwrap();
    let key = system_key(&["wechat-register", f.tenant.as_str(), b_openid.as_str()]).unwrap();
    let ctx = CommandContext::new(f.tenant.clone(), key, format!("wechat:{APPID}"));
    let request = RegisterRequest {
        openid: Some(b_openid.clone()),
        source: RegistrationSource::Subscribe,
        card_level: CardLevel::standard(),
    };
    let actor = Actor::Wechat { source: APPID.into() };
    register_attributed(&f.t.app, &f.tenant, request, Some(Attribution::Referral { referrer: a }), actor, &ctx)
        .await
        .unwrap();
    assert_eq!(f.grants("o-rec-b").await, Vec::<i64>::new(), "the handler died before the rewards");
    // WeChat's retries (another CreateTime: another dedup key, so each is processed).
    for age_s in [3, 1] {
        let mut retry = PushMessage::new(MessageKind::Subscribe, "o-rec-b");
        retry.create_time = Some(chrono::Utc::now().timestamp() - age_s);
        let r = f.push(&f.request(retry)).await;
        assert_eq!(r[0].status, Some(200), "{r:?}");
    }
    assert_eq!(f.grants("o-rec-b").await, vec![INITIAL_POINTS]);
    let mut a_grants = f.grants("o-rec-a").await;
    a_grants.sort_unstable();
    assert_eq!(a_grants, vec![LEVEL1_POINTS, INITIAL_POINTS], "A: initial + level 1 for B, once");
    f.t.stop().await;
}
