//! The member commands the ledger and pipeline benches send, through the real
//! command path (`wxcm_commands::members` → executor → `PgEventStore` → group
//! commit → INSERT + triggers), and the SQL seeding of long streams.

use std::sync::Arc;

use anyhow::{ensure, Context, Result};
use futures::StreamExt;
use sqlx::PgPool;
use wxcm_commands::ledger_requests::{self, LedgerRequest};
use wxcm_commands::members::{self, RegisterRequest};
use wxcm_commands::App;
use wxcm_domain::member::{CardLevel, MemberEvent, Provenance, RegistrationSource};
use wxcm_domain::{AmountFen, BalanceFen, DomainEventMeta, MemberId, Reference, TenantId};

use crate::setup::{bench_actor, context, key};

/// One durable DepositCash of 1 fen under a fresh idempotency key, through the
/// use case the admin API's deposits run (the same request is hashed); the
/// sequence of the event it committed.
pub async fn deposit(app: &App, tenant: &TenantId, member: MemberId, idempotency_key: &str) -> Result<u64> {
    let ctx = context(tenant, idempotency_key)?;
    let request = LedgerRequest::CashDeposit {
        amount_fen: AmountFen::new(1)?,
        reason: Reference::parse("bench")?,
        reference: None,
    };
    let outcome = ledger_requests::execute(app, tenant, member, request, bench_actor(), &ctx).await?;
    ensure!(outcome.events.len() == 1 && !outcome.replayed, "deposit committed {} events", outcome.events.len());
    Ok(outcome.events[0].sequence)
}

pub async fn register(app: &App, tenant: &TenantId, idempotency_key: &str) -> Result<MemberId> {
    let request =
        RegisterRequest { openid: None, source: RegistrationSource::Staff, card_level: CardLevel::standard() };
    let ctx = context(tenant, idempotency_key)?;
    let (view, _) = members::register(app, tenant, request, bench_actor(), &ctx).await?;
    Ok(view.member_id)
}

/// Registers `count` members; idempotency keys are `{key_prefix}-{i:08}`.
pub async fn register_members(
    app: &Arc<App>,
    tenant: &TenantId,
    key_prefix: &str,
    count: u32,
    concurrency: u32,
) -> Result<Vec<MemberId>> {
    futures::stream::iter(0..count)
        .map(|i| {
            let app = app.clone();
            let tenant = tenant.clone();
            async move { register(&app, &tenant, &format!("{key_prefix}-{i:08}")).await }
        })
        .buffer_unordered(concurrency as usize)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// The event the seed writes at `sequence`: 1 fen, balance after `sequence - 1`.
pub fn seeded_event(sequence: i64) -> Result<MemberEvent> {
    Ok(MemberEvent::CashDeposited {
        amount_fen: AmountFen::new(1)?,
        provenance: Provenance {
            actor: bench_actor(),
            reason: Reference::parse("bench-seed")?,
            reference: None,
            idempotency_key: key(&format!("bench-seed-{sequence}"))?,
        },
        balance_after_fen: BalanceFen::new(sequence - 1).context("balance")?,
    })
}

/// Appends `CashDeposited` events 2..=`events` to each registered member's stream
/// (whose only event is its registration) in one statement. The payload is serde's own serialization of [`seeded_event`] with
/// the balance and key replaced per row; the metadata has the tenant (the trigger
/// requires it and computes the hash chain) and no idempotency key (so the trigger
/// writes no idempotency rows).
pub async fn seed_deposits(admin: &PgPool, tenant: &TenantId, members: &[MemberId], events: u32) -> Result<()> {
    let Some(&member) = members.first() else { return Ok(()) };
    let ids: Vec<String> = members.iter().map(ToString::to_string).collect();
    let sample = seeded_event(1)?;
    let template = serde_json::to_value(&sample)?;
    for field in ["balance_after_fen", "idempotency_key"] {
        ensure!(template["CashDeposited"].get(field).is_some(), "CashDeposited serializes without {field}");
    }
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         SELECT 'member', m, g, $2, $3,
                jsonb_set(jsonb_set($4::jsonb, '{CashDeposited,balance_after_fen}', to_jsonb(g - 1)),
                          '{CashDeposited,idempotency_key}', to_jsonb('bench-seed-' || g)),
                jsonb_build_object('tenant_id', $5::text, 'actor', 'bench-seed')
           FROM unnest($1::text[]) AS m CROSS JOIN generate_series(2, $6::bigint) AS g
          ORDER BY m, g",
    )
    .bind(&ids)
    .bind(sample.event_type())
    .bind(sample.event_version())
    .bind(&template)
    .bind(tenant.as_str())
    .bind(i64::from(events))
    .execute(admin)
    .await
    .context("seeding deposits")?;
    // The last seeded row must read back as exactly the event serde would have written.
    let last: serde_json::Value = sqlx::query_scalar(
        "SELECT payload FROM events WHERE aggregate_type = 'member' AND aggregate_id = $1 AND sequence = $2",
    )
    .bind(member.to_string())
    .bind(i64::from(events))
    .fetch_one(admin)
    .await?;
    let decoded: MemberEvent = serde_json::from_value(last).context("a seeded event does not decode")?;
    ensure!(decoded == seeded_event(i64::from(events))?, "seeded event differs: {decoded:?}");
    Ok(())
}

/// Client `client`'s `n`-th session of `sessions`: spread over the members, so
/// one client's consecutive requests change member.
pub fn session_of(sessions: &[String], client: u32, n: u64) -> &str {
    let i = (u64::from(client).wrapping_mul(7919) + n) as usize % sessions.len().max(1);
    sessions.get(i).map_or("", String::as_str)
}

/// A member-API session token for each member (4 hours), as a member page
/// gets one through OAuth; openids are `{openid_prefix}{i:08}`.
pub async fn member_sessions(
    app: &App,
    tenant: &TenantId,
    members: &[MemberId],
    appid: &str,
    openid_prefix: &str,
) -> Result<Vec<String>> {
    let shard = app.router.route(tenant)?;
    let appid = wxcm_domain::AppId::parse(appid)?;
    let mut tokens = Vec::with_capacity(members.len());
    for (i, member) in members.iter().enumerate() {
        let token = format!("{tenant}.bench{i:08}{}", uuid::Uuid::new_v4().simple());
        let session = wxcm_commands::pay_flows::MemberSession {
            tenant_id: tenant.clone(),
            member_id: *member,
            appid: appid.clone(),
            openid: wxcm_domain::OpenId::parse(&format!("{openid_prefix}{i:08}"))?,
            expires_at: app.clock.now() + chrono::Duration::hours(4),
        };
        shard.pay.create_member_session(&wxcm_commands::auth::token_hash(&token), &session).await?;
        tokens.push(token);
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_event_has_the_fields_the_seed_sql_replaces() {
        let value = serde_json::to_value(seeded_event(5).unwrap()).unwrap();
        assert_eq!(value["CashDeposited"]["balance_after_fen"], 4);
        assert_eq!(value["CashDeposited"]["idempotency_key"], "bench-seed-5");
        assert_eq!(value["CashDeposited"]["amount_fen"], 1);
    }
}
