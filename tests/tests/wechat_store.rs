//! The WeChat store's housekeeping against real Postgres: old stored messages
//! are pruned in bounded batches, newer ones stay; claims likewise.

use std::sync::Arc;

use chrono::{Duration, Utc};
use wxcm_commands::wechat::{ClaimOutcome, StoredMessage};
use wxcm_domain::{AppId, OpenId, TenantId};
use wxcm_infra::app::Role;
use wxcm_tests::{build, fresh_settings, TestClock};

#[tokio::test]
async fn old_messages_and_claims_are_pruned_in_bounded_batches() {
    let application = build(fresh_settings(1).await, Role::Scheduler, Arc::new(TestClock::default())).await;
    let shard = application.app.router.shards().pop().expect("one shard");
    let tenant = TenantId::parse("prune").unwrap();
    let appid = AppId::parse("wx0123456789abcdef").unwrap();
    let now = Utc::now();
    for (i, age_days) in [400, 300, 200, 10, 0].into_iter().enumerate() {
        let at = now - Duration::days(age_days);
        shard
            .wechat
            .record_message(&StoredMessage {
                tenant: tenant.clone(),
                appid: appid.clone(),
                openid: OpenId::parse(&format!("oPrune{i:04}")).unwrap(),
                msg_type: "text".into(),
                event: None,
                event_key: None,
                sent_at: at,
                received_at: at,
                fields: serde_json::json!({"Content": "hi"}),
            })
            .await
            .unwrap();
    }
    let before = now - Duration::days(180);
    assert_eq!(shard.wechat.prune_messages(before, 2).await.unwrap(), 2, "a batch is bounded");
    assert_eq!(shard.wechat.prune_messages(before, 2).await.unwrap(), 1);
    assert_eq!(shard.wechat.prune_messages(before, 2).await.unwrap(), 0, "newer messages stay");

    let stale = Duration::seconds(15);
    let old = now - Duration::hours(72);
    let message = |at| StoredMessage {
        tenant: tenant.clone(),
        appid: appid.clone(),
        openid: OpenId::parse("oClaim0001").unwrap(),
        msg_type: "event".into(),
        event: Some("subscribe".into()),
        event_key: None,
        sent_at: at,
        received_at: at,
        fields: serde_json::json!({"Event": "subscribe"}),
    };
    let claimed_messages = || async {
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM wechat_messages WHERE openid = 'oClaim0001'")
            .fetch_one(&application.shards.all().next().expect("one shard").pool)
            .await
            .unwrap();
        count
    };
    assert_eq!(shard.wechat.claim_callback(&message(old), "msg:1", stale).await.unwrap(), ClaimOutcome::Claimed);
    assert_eq!(shard.wechat.claim_callback(&message(now), "msg:2", stale).await.unwrap(), ClaimOutcome::Claimed);
    assert_eq!(claimed_messages().await, 2, "a new claim stores its message");
    assert_eq!(shard.wechat.prune_callbacks(now - Duration::hours(48)).await.unwrap(), 1);
    assert_eq!(
        shard.wechat.claim_callback(&message(now), "msg:2", stale).await.unwrap(),
        ClaimOutcome::InProgress,
        "a recent claim stays"
    );
    assert_eq!(claimed_messages().await, 2, "a repeated callback is not stored again");
}
