//! The WeChat store's housekeeping against real Postgres: old stored messages
//! are pruned in bounded batches, newer ones stay; claims likewise.

use std::sync::Arc;

use chrono::{Duration, Utc};
use wxcm_commands::wechat::{ClaimOutcome, StoredMessage};
use wxcm_domain::{AppId, OpenId, TenantId};
use wxcm_server::app::Role;
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
    // A handler that failed gives its claim up: the next try takes it, and the
    // message stays stored once.
    shard.wechat.release_callback(&appid, "msg:2").await.unwrap();
    assert_eq!(shard.wechat.claim_callback(&message(now), "msg:2", stale).await.unwrap(), ClaimOutcome::Claimed);
    assert_eq!(
        shard.wechat.claim_callback(&message(now), "msg:2", stale).await.unwrap(),
        ClaimOutcome::InProgress,
        "the retry holds it now"
    );
    assert_eq!(claimed_messages().await, 2, "a released callback is not stored again");
}

/// Concurrent claims share statements: each key is claimed once (its message
/// stored once), every other try sees it in progress, then done with its reply.
#[tokio::test]
async fn concurrent_claims_take_each_callback_once() {
    let application = build(fresh_settings(1).await, Role::Api, Arc::new(TestClock::default())).await;
    let shard = application.app.router.shards().pop().expect("one shard");
    let tenant = TenantId::parse("claims").unwrap();
    let appid = AppId::parse("wx0123456789abcdef").unwrap();
    let now = Utc::now();
    let message = |i: usize| StoredMessage {
        tenant: tenant.clone(),
        appid: appid.clone(),
        openid: OpenId::parse(&format!("oBatch{i:04}")).unwrap(),
        msg_type: "event".into(),
        event: Some("subscribe".into()),
        event_key: None,
        sent_at: now,
        received_at: now,
        fields: serde_json::json!({"Event": "subscribe"}),
    };
    // 40 callbacks, each delivered 3 times at once.
    let mut tries = tokio::task::JoinSet::new();
    for copy in 0..3 {
        for i in 0..40 {
            let (wechat, message) = (shard.wechat.clone(), message(i));
            tries.spawn(async move {
                let outcome = wechat.claim_callback(&message, &format!("key-{i}"), Duration::seconds(15)).await;
                (i, copy, outcome.unwrap())
            });
        }
    }
    let mut claimed = vec![0; 40];
    while let Some(joined) = tries.join_next().await {
        let (i, _, outcome) = joined.unwrap();
        match outcome {
            ClaimOutcome::Claimed => claimed[i] += 1,
            ClaimOutcome::InProgress => {}
            other => panic!("callback {i}: {other:?} before any finish"),
        }
    }
    assert_eq!(claimed, vec![1; 40], "each callback claimed exactly once");
    let pool = &application.shards.all().next().expect("one shard").pool;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM wechat_messages WHERE openid LIKE 'oBatch%'")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(stored, 40, "one message per claim");

    // Finished concurrently (one statement for many): each retry then gets its own reply.
    let mut finishes = tokio::task::JoinSet::new();
    for i in 0..40 {
        let (wechat, appid) = (shard.wechat.clone(), appid.clone());
        finishes.spawn(async move {
            let reply = (i % 2 == 0).then(|| format!("<xml>{i}</xml>"));
            wechat.finish_callback(&appid, &format!("key-{i}"), reply.as_deref(), now).await.unwrap();
        });
    }
    while finishes.join_next().await.is_some() {}
    for i in 0..40 {
        let outcome =
            shard.wechat.claim_callback(&message(i), &format!("key-{i}"), Duration::seconds(15)).await.unwrap();
        let reply = (i % 2 == 0).then(|| format!("<xml>{i}</xml>"));
        assert_eq!(outcome, ClaimOutcome::Done { reply }, "callback {i}");
    }
}
