//! WeChat callbacks as use cases: the gateway verifies, decrypts and parses a
//! callback into an [`InboundCallback`]; this module finds the tenant, dedups
//! the callback across nodes, runs the commands it implies and picks the reply.
//!
//! Exactly-once effects rest on two layers: the callback claim (one handler per
//! WeChat retry series, shared by all nodes) and idempotency keys derived from
//! the callback, so a handler that dies half-way is finished by a retry
//! without doubling anything.

pub mod rules;
pub mod store;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use wxcm_domain::member::{
    Attribution, CardLevel, MemberCommand, PointsSource, Provenance, RegistrationSource, WelcomePoints,
};
use wxcm_domain::tenant::{PointsRules, Tenant};
use wxcm_domain::{Actor, AppId, EventSourced, MemberId, OpenId, PointsAmount, Reference, SceneKey, TenantId};

use crate::executor::CommandContext;
use crate::members::{self, system_key, MemberOpError, RegisterRequest};
use crate::ports::{App, PortError, RouteError};
pub use rules::{KeywordRule, MatchMode, NewsArticle, ReplyContent, ReplyRules, RulesError};
pub use store::{
    AccountMode, ClaimOutcome, DeliveryKind, DeliveryResult, SceneHit, SceneQrCode, StoredMenu, StoredMessage,
    WechatStore,
};

/// A referral link counts if it was opened at most this long before following.
pub const REFERRAL_WINDOW_DAYS: i64 = 30;
/// Registrations younger than this still get their welcome rewards when a
/// retried callback finds the member already registered (the first handler died
/// between registering and rewarding).
pub const REWARD_RECOVERY_WINDOW_MINUTES: i64 = 60;
/// A claim not finished after this long is taken over by a retry.
pub const CLAIM_STALE_AFTER_S: i64 = 15;
/// Tenant settings a callback reads (callback secrets, points rules) may be
/// this old on a node that did not make the change.
pub const TENANT_SETTINGS_MAX_AGE_MS: u64 = 5_000;
/// How long an appid → tenant answer is reused by this node.
pub const DIRECTORY_CACHE_TTL_MS: u64 = 10_000;
pub const DIRECTORY_CACHE_ENTRIES_MAX: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum WechatOpError {
    #[error("official account {0} is not bound to any tenant")]
    UnknownAccount(String),
    #[error("invalid input: {0}")]
    Invalid(String),
    #[error(transparent)]
    Member(#[from] MemberOpError),
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error("infrastructure failure: {0}")]
    Infra(String),
    /// The database or broker is unreachable for now; a write's outcome is unknown.
    #[error("infrastructure unavailable: {0}")]
    Unavailable(String),
}

impl From<PortError> for WechatOpError {
    fn from(e: PortError) -> Self {
        if e.is_transient() {
            WechatOpError::Unavailable(e.to_string())
        } else {
            WechatOpError::Infra(e.to_string())
        }
    }
}

/// What a callback asks for, already validated by the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundKind {
    Subscribe {
        scene: Option<SceneKey>,
    },
    Unsubscribe,
    Scan {
        scene: Option<SceneKey>,
    },
    Click {
        key: String,
    },
    Text {
        content: String,
    },
    TemplateJobFinish {
        msg_id: u64,
        status: String,
    },
    MassJobFinish {
        msg_id: u64,
        status: String,
        counts: serde_json::Value,
    },
    /// Stored only (VIEW, LOCATION, media messages, unknown types).
    Other,
}

#[derive(Debug, Clone)]
pub struct InboundCallback {
    pub tenant: TenantId,
    pub appid: AppId,
    pub openid: OpenId,
    /// WeChat's CreateTime.
    pub sent_at: DateTime<Utc>,
    /// MsgId, or FromUserName + CreateTime + Event (+ EventKey) for events.
    pub dedup_key: String,
    pub msg_type: String,
    pub event: Option<String>,
    pub event_key: Option<String>,
    pub kind: InboundKind,
    pub fields: serde_json::Value,
}

type DirectoryEntry = (Instant, Option<(TenantId, AccountMode)>);

/// appid → tenant across shards, cached briefly per node.
#[derive(Default)]
pub struct AccountDirectory {
    cache: Mutex<HashMap<String, DirectoryEntry>>,
}

impl AccountDirectory {
    pub async fn lookup(&self, app: &App, appid: &AppId) -> Result<Option<(TenantId, AccountMode)>, WechatOpError> {
        let ttl = Duration::from_millis(DIRECTORY_CACHE_TTL_MS);
        if let Ok(cache) = self.cache.lock() {
            if let Some((at, answer)) = cache.get(appid.as_str()) {
                if at.elapsed() < ttl {
                    return Ok(answer.clone());
                }
            }
        }
        let mut answer = None;
        for shard in app.router.shards() {
            if let Some(found) = shard.wechat.account_tenant(appid).await? {
                answer = Some(found);
                break;
            }
        }
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= DIRECTORY_CACHE_ENTRIES_MAX {
                cache.retain(|_, (at, _)| at.elapsed() < ttl);
                if cache.len() >= DIRECTORY_CACHE_ENTRIES_MAX {
                    cache.clear();
                }
            }
            cache.insert(appid.as_str().to_owned(), (Instant::now(), answer.clone()));
        }
        Ok(answer)
    }

    pub fn forget(&self, appid: &AppId) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.remove(appid.as_str());
        }
    }
}

/// Claims the callback (see [`WechatStore::claim_callback`]); a new claim
/// also stores the message.
pub async fn claim(app: &App, cb: &InboundCallback) -> Result<ClaimOutcome, WechatOpError> {
    let shard = app.router.route(&cb.tenant)?;
    let message = StoredMessage {
        tenant: cb.tenant.clone(),
        appid: cb.appid.clone(),
        openid: cb.openid.clone(),
        msg_type: cb.msg_type.clone(),
        event: cb.event.clone(),
        event_key: cb.event_key.clone(),
        sent_at: cb.sent_at,
        received_at: app.clock.now(),
        fields: cb.fields.clone(),
    };
    Ok(shard.wechat.claim_callback(&message, &cb.dedup_key, chrono::Duration::seconds(CLAIM_STALE_AFTER_S)).await?)
}

/// Marks the callback handled with the passive reply it produced (plaintext XML).
pub async fn finish(app: &App, cb: &InboundCallback, reply: Option<&str>) -> Result<(), WechatOpError> {
    let shard = app.router.route(&cb.tenant)?;
    shard.wechat.finish_callback(&cb.appid, &cb.dedup_key, reply, app.clock.now()).await?;
    Ok(())
}

/// Gives the claim up after a failure, so that WeChat's retry runs the callback again.
pub async fn release(app: &App, cb: &InboundCallback) -> Result<(), WechatOpError> {
    let shard = app.router.route(&cb.tenant)?;
    shard.wechat.release_callback(&cb.appid, &cb.dedup_key).await?;
    Ok(())
}

fn reference(text: &str) -> Result<Reference, WechatOpError> {
    Reference::parse(text).map_err(|e| WechatOpError::Infra(e.to_string()))
}

fn wechat_actor(appid: &AppId) -> Actor {
    Actor::Wechat { source: appid.as_str().to_owned() }
}

fn context(cb: &InboundCallback, parts: &[&str]) -> Result<CommandContext, WechatOpError> {
    let key = system_key(parts)?;
    Ok(CommandContext::new(cb.tenant.clone(), key, format!("wechat:{}", cb.appid.as_str())))
}

/// Runs what the callback implies and returns the reply to send, if any.
/// Safe to run again for the same callback (every command is keyed by it).
/// The message itself was stored by [`claim`].
pub async fn process(app: &App, cb: &InboundCallback) -> Result<Option<ReplyContent>, WechatOpError> {
    let shard = app.router.route(&cb.tenant)?;
    let now = app.clock.now();
    let rules = || async { Ok::<_, WechatOpError>(shard.wechat.reply_rules(&cb.tenant).await?.map(|(r, _)| r)) };
    match &cb.kind {
        InboundKind::Subscribe { scene } => {
            subscribe(app, cb, scene.as_ref()).await?;
            if let Some(scene) = scene {
                shard.wechat.count_scene(&cb.tenant, &cb.appid, scene.as_str(), SceneHit::Follow, now).await?;
                distribution_arrival(app, cb, scene).await?;
            }
            Ok(rules().await?.and_then(|r| r.subscribe))
        }
        InboundKind::Unsubscribe => {
            unsubscribe(app, cb).await?;
            Ok(None)
        }
        InboundKind::Scan { scene } => {
            if let Some(scene) = scene {
                shard.wechat.count_scene(&cb.tenant, &cb.appid, scene.as_str(), SceneHit::Landing, now).await?;
                distribution_arrival(app, cb, scene).await?;
            }
            Ok(None)
        }
        InboundKind::Click { key } => Ok(rules().await?.and_then(|r| r.reply_to(key).cloned())),
        InboundKind::Text { content } => Ok(rules().await?.and_then(|r| r.reply_to(content).cloned())),
        InboundKind::TemplateJobFinish { msg_id, status } => {
            record_delivery(app, cb, DeliveryKind::Template, *msg_id, status, None).await?;
            Ok(None)
        }
        InboundKind::MassJobFinish { msg_id, status, counts } => {
            record_delivery(app, cb, DeliveryKind::Mass, *msg_id, status, Some(counts.clone())).await?;
            Ok(None)
        }
        InboundKind::Other => Ok(None),
    }
}

/// A follow or scan through a distributor's scene QR (`dist_<code>`) binds
/// the member to the distributor under the tenant's binding mode, keyed by
/// the callback (a retried callback binds once). A refusal (self, cycle,
/// bound elsewhere, unknown or suspended distributor) is the answer, not a
/// failure: logged, and the callback stands.
async fn distribution_arrival(app: &App, cb: &InboundCallback, scene: &SceneKey) -> Result<(), WechatOpError> {
    use crate::distribution::{self as distribution, DistributionError};
    let Some(code) = distribution::code_in_scene(scene.as_str()) else { return Ok(()) };
    let member = MemberId::for_openid(&cb.tenant, &cb.openid);
    let key = format!("qr:{}:{}", cb.appid.as_str(), cb.dedup_key);
    let route = wxcm_domain::distribution::binding::BindingRoute::Qr;
    match distribution::bind_by_code(app, &cb.tenant, member, &code, route, &key).await {
        Ok(_) => Ok(()),
        Err(DistributionError::Unavailable(detail)) => Err(WechatOpError::Unavailable(detail)),
        Err(DistributionError::Infra(detail)) => Err(WechatOpError::Infra(detail)),
        Err(DistributionError::Route(e)) => Err(e.into()),
        Err(refused) => {
            tracing::info!(tenant = %cb.tenant, %member, reason = %refused, "qr arrival not bound");
            Ok(())
        }
    }
}

async fn record_delivery(
    app: &App,
    cb: &InboundCallback,
    kind: DeliveryKind,
    msg_id: u64,
    status: &str,
    counts: Option<serde_json::Value>,
) -> Result<(), WechatOpError> {
    let shard = app.router.route(&cb.tenant)?;
    shard
        .wechat
        .record_delivery(&DeliveryResult {
            tenant: cb.tenant.clone(),
            appid: cb.appid.clone(),
            kind,
            msg_id,
            openid: cb.openid.clone(),
            status: status.to_owned(),
            counts,
            received_at: app.clock.now(),
        })
        .await?;
    Ok(())
}

/// The tenant as this node last saw it, at most [`TENANT_SETTINGS_MAX_AGE_MS`] old.
async fn tenant_settings(app: &App, tenant: &TenantId) -> Result<Tenant, WechatOpError> {
    let shard = app.router.route(tenant)?;
    let max_age = Duration::from_millis(TENANT_SETTINGS_MAX_AGE_MS);
    let (state, _): (Tenant, u64) = shard.tenants.load_recent(tenant, tenant.as_str(), max_age).await?;
    Ok(state)
}

/// Where a new member came from: a scene QR first, else a referral link
/// opened before following, else direct.
async fn attribution(
    app: &App,
    cb: &InboundCallback,
    member_id: MemberId,
    scene: Option<&SceneKey>,
) -> Result<Attribution, WechatOpError> {
    if let Some(scene) = scene {
        return Ok(Attribution::SceneQr { scene: scene.clone() });
    }
    let shard = app.router.route(&cb.tenant)?;
    let since = app.clock.now() - chrono::Duration::days(REFERRAL_WINDOW_DAYS);
    if let Some(referrer) = shard.wechat.referral_visit(&cb.tenant, &cb.openid, since).await? {
        let (state, _) = shard.members.load(&cb.tenant, &referrer.to_string()).await?;
        if referrer != member_id && state.registration.is_some() && state.tenant() == Some(&cb.tenant) {
            return Ok(Attribution::Referral { referrer });
        }
    }
    Ok(Attribution::Direct)
}

#[derive(Serialize)]
struct FollowRequest<'a> {
    attribution: &'a Attribution,
}

async fn subscribe(app: &App, cb: &InboundCallback, scene: Option<&SceneKey>) -> Result<(), WechatOpError> {
    let shard = app.router.route(&cb.tenant)?;
    let member_id = MemberId::for_openid(&cb.tenant, &cb.openid);
    let (state, _) = shard.members.load(&cb.tenant, &member_id.to_string()).await?;
    let now = app.clock.now();
    let Some(registration) = &state.registration else {
        // A new follower: registered with its initial points in one command.
        let attribution = attribution(app, cb, member_id, scene).await?;
        let referrer = attribution.referrer();
        let rules = tenant_settings(app, &cb.tenant).await?.points_rules;
        let welcome =
            PointsAmount::new(rules.initial_points).ok().map(|points| WelcomePoints { points, expiry: rules.expiry });
        let ctx = context(cb, &["wechat-register", cb.tenant.as_str(), cb.openid.as_str()])?;
        let request = RegisterRequest {
            openid: Some(cb.openid.clone()),
            source: RegistrationSource::Subscribe,
            card_level: CardLevel::standard(),
        };
        members::register_new(app, &cb.tenant, &request, Some(attribution), welcome, wechat_actor(&cb.appid), &ctx)
            .await?;
        if let Some(level1) = referrer {
            referral_rewards(app, cb, member_id, level1, &rules).await?;
        }
        return Ok(());
    };
    if !state.followed {
        let attribution = match scene {
            Some(scene) => Attribution::SceneQr { scene: scene.clone() },
            None => Attribution::Direct,
        };
        let ctx = context(cb, &["wechat-follow", cb.appid.as_str(), &cb.dedup_key])?;
        let command = MemberCommand::Follow {
            attribution: attribution.clone(),
            provenance: Provenance {
                actor: wechat_actor(&cb.appid),
                reason: reference("subscribe")?,
                reference: None,
                idempotency_key: ctx.idempotency_key.clone(),
            },
        };
        members::execute(app, &cb.tenant, member_id, command, &FollowRequest { attribution: &attribution }, &ctx)
            .await?;
    }
    let recent = now - registration.registered_at < chrono::Duration::minutes(REWARD_RECOVERY_WINDOW_MINUTES);
    if state.attribution.is_some() && recent {
        // A retry after a handler that registered the member but died before
        // the rewards on other members (or, before welcome points were part
        // of the registration, before its own initial points).
        let rules = tenant_settings(app, &cb.tenant).await?.points_rules;
        if !state.initial_points_granted {
            grant_welcome(app, cb, member_id, member_id, Welcome::Initial, &rules).await?;
        }
        if let Some(level1) = state.referrer {
            referral_rewards(app, cb, member_id, level1, &rules).await?;
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct GrantRequest<'a> {
    points: i64,
    source: &'a str,
    beneficiary: MemberId,
    new_member: MemberId,
}

/// Referral points for the new member's referrer (level 1) and the
/// referrer's referrer (level 2); each once per new member.
async fn referral_rewards(
    app: &App,
    cb: &InboundCallback,
    member_id: MemberId,
    level1: MemberId,
    rules: &PointsRules,
) -> Result<(), WechatOpError> {
    let shard = app.router.route(&cb.tenant)?;
    grant_welcome(app, cb, member_id, level1, Welcome::ReferralLevel1, rules).await?;
    let (referrer, _) = shard.members.load(&cb.tenant, &level1.to_string()).await?;
    if let Some(level2) = referrer.referrer.filter(|level2| *level2 != member_id) {
        grant_welcome(app, cb, member_id, level2, Welcome::ReferralLevel2, rules).await?;
    }
    Ok(())
}

/// The grants a new member's arrival makes.
#[derive(Clone, Copy)]
enum Welcome {
    Initial,
    ReferralLevel1,
    ReferralLevel2,
}

impl Welcome {
    /// Points under `rules`, the lot's source, and the label in keys and reasons.
    fn grant(self, rules: &PointsRules) -> (i64, PointsSource, &'static str) {
        match self {
            Welcome::Initial => (rules.initial_points, PointsSource::Initial, "initial"),
            Welcome::ReferralLevel1 => (rules.referral_level1_points, PointsSource::Referral, "referral-1"),
            Welcome::ReferralLevel2 => (rules.referral_level2_points, PointsSource::Referral, "referral-2"),
        }
    }
}

/// One welcome grant to `beneficiary` for `member_id`'s arrival, keyed by the
/// arrival, so a retried callback grants it once.
async fn grant_welcome(
    app: &App,
    cb: &InboundCallback,
    member_id: MemberId,
    beneficiary: MemberId,
    welcome: Welcome,
    rules: &PointsRules,
) -> Result<(), WechatOpError> {
    let (points, source, label) = welcome.grant(rules);
    let Ok(amount) = PointsAmount::new(points) else { return Ok(()) };
    let ctx = context(cb, &["wechat-reward", label, cb.tenant.as_str(), &member_id.to_string()])?;
    let command = MemberCommand::GrantPoints {
        points: amount,
        source,
        expiry: rules.expiry,
        provenance: Provenance {
            actor: wechat_actor(&cb.appid),
            reason: reference(label)?,
            reference: Some(reference(&member_id.to_string())?),
            idempotency_key: ctx.idempotency_key.clone(),
        },
    };
    let request = GrantRequest { points, source: label, beneficiary, new_member: member_id };
    match members::execute(app, &cb.tenant, beneficiary, command, &request, &ctx).await {
        // A retry after the rules changed: the grant was made with the old rules.
        // Initial points granted meanwhile (by a concurrent handler): once is enough.
        Ok(_)
        | Err(MemberOpError::IdempotencyMismatch)
        | Err(MemberOpError::Rejected(wxcm_domain::member::MemberError::InitialPointsGranted)) => Ok(()),
        // The referrer left the tenant or cannot take more lots: the new member's welcome stands.
        Err(MemberOpError::NotFound | MemberOpError::Rejected(_)) if beneficiary != member_id => {
            tracing::warn!(tenant = %cb.tenant, %beneficiary, "referral reward not granted");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

async fn unsubscribe(app: &App, cb: &InboundCallback) -> Result<(), WechatOpError> {
    let shard = app.router.route(&cb.tenant)?;
    let member_id = MemberId::for_openid(&cb.tenant, &cb.openid);
    let (state, _) = shard.members.load(&cb.tenant, &member_id.to_string()).await?;
    if state.registration.is_none() || !state.followed {
        return Ok(());
    }
    let ctx = context(cb, &["wechat-unfollow", cb.appid.as_str(), &cb.dedup_key])?;
    let command = MemberCommand::Unfollow {
        provenance: Provenance {
            actor: wechat_actor(&cb.appid),
            reason: reference("unsubscribe")?,
            reference: None,
            idempotency_key: ctx.idempotency_key.clone(),
        },
    };
    members::execute(app, &cb.tenant, member_id, command, &"unfollow", &ctx).await?;
    Ok(())
}

/// Records that `openid` opened `referrer`'s referral link (after OAuth).
pub async fn record_referral_visit(
    app: &App,
    tenant: &TenantId,
    openid: &OpenId,
    referrer: MemberId,
) -> Result<(), WechatOpError> {
    let shard = app.router.route(tenant)?;
    let (state, _) = shard.members.load(tenant, &referrer.to_string()).await?;
    if state.registration.is_none() || state.tenant() != Some(tenant) {
        return Err(WechatOpError::Invalid("unknown referrer".into()));
    }
    shard.wechat.record_referral_visit(tenant, openid, referrer, app.clock.now()).await?;
    Ok(())
}

pub async fn reply_rules(app: &App, tenant: &TenantId) -> Result<(ReplyRules, i64), WechatOpError> {
    let shard = app.router.route(tenant)?;
    Ok(shard.wechat.reply_rules(tenant).await?.unwrap_or_default())
}

pub async fn save_reply_rules(
    app: &App,
    tenant: &TenantId,
    rules: &ReplyRules,
    actor: &str,
) -> Result<i64, WechatOpError> {
    rules.validate().map_err(|e| WechatOpError::Invalid(e.to_string()))?;
    let shard = app.router.route(tenant)?;
    Ok(shard.wechat.save_reply_rules(tenant, rules, actor, app.clock.now()).await?)
}

pub async fn list_scenes(app: &App, tenant: &TenantId) -> Result<Vec<SceneQrCode>, WechatOpError> {
    let shard = app.router.route(tenant)?;
    Ok(shard.wechat.list_scenes(tenant, store::SCENES_PAGE_MAX).await?)
}

/// The token and EncodingAESKey of a developer-mode account, opened.
pub async fn callback_secrets(
    app: &App,
    tenant: &TenantId,
    appid: &AppId,
) -> Result<Option<(String, Option<String>)>, WechatOpError> {
    let state = tenant_settings(app, tenant).await?;
    let Some(account) = state.accounts.get(appid.as_str()) else {
        return Ok(None);
    };
    let token = app.sealer.open(&account.token)?;
    let aes_key = app.sealer.open(&account.encoding_aes_key)?;
    Ok(Some((token, Some(aes_key))))
}

/// Pre-auth codes live this long at WeChat (api_create_preauthcode: 600 s).
pub const PRE_AUTH_CODE_TTL_S: i64 = 600;

/// Remembers which tenant started a third-party authorization.
pub async fn save_auth_request(app: &App, tenant: &TenantId, pre_auth_code: &str) -> Result<(), WechatOpError> {
    if pre_auth_code.is_empty() || pre_auth_code.len() > 512 {
        return Err(WechatOpError::Invalid("pre_auth_code must be 1..=512 bytes".into()));
    }
    let shard = app.router.route(tenant)?;
    let now = app.clock.now();
    shard
        .wechat
        .save_auth_request(pre_auth_code, tenant, now, now + chrono::Duration::seconds(PRE_AUTH_CODE_TTL_S))
        .await?;
    Ok(())
}

/// The tenant that started the authorization with this pre-auth code, on any shard.
pub async fn auth_request_tenant(app: &App, pre_auth_code: &str) -> Result<Option<TenantId>, WechatOpError> {
    let now = app.clock.now();
    for shard in app.router.shards() {
        if let Some(tenant) = shard.wechat.auth_request_tenant(pre_auth_code, now).await? {
            return Ok(Some(tenant));
        }
    }
    Ok(None)
}

/// Fails when `appid` is bound to a tenant other than `tenant` on any shard.
/// A claim of an appid not bound by its holder after this long is stale
/// (its bind failed or it was unbound before releases existed): taken over.
const APPID_CLAIM_STALE_MINUTES: i64 = 10;

/// Makes `appid` this tenant's across the cluster before it is bound: a claim
/// on the registry shard that concurrent binders of other tenants, on any
/// shard, cannot both win. Accounts bound before claims existed are found by
/// asking every shard's own index too.
pub async fn ensure_appid_free(app: &App, tenant: &TenantId, appid: &AppId) -> Result<(), WechatOpError> {
    let taken = || WechatOpError::Invalid(format!("appid {} is bound to another tenant", appid.as_str()));
    // An unknown tenant is that, before anything is claimed for it.
    app.router.route(tenant)?;
    for shard in app.router.shards() {
        if let Some((owner, _)) = shard.wechat.account_tenant(appid).await? {
            if &owner != tenant {
                return Err(taken());
            }
        }
    }
    let registry = app.router.registry()?;
    let stale_before = app.clock.now() - chrono::Duration::minutes(APPID_CLAIM_STALE_MINUTES);
    let Some((holder, claimed_at)) = registry.wechat.claim_appid(appid, tenant).await? else {
        return Ok(());
    };
    // Another tenant claimed it. Taken over only when that claim is old and
    // its tenant does not have the account bound (checked on its own shard).
    let holder_bound = match app.router.route(&holder) {
        Ok(shard) => shard.wechat.account_tenant(appid).await?.is_some_and(|(owner, _)| owner == holder),
        Err(_) => false,
    };
    if claimed_at >= stale_before || holder_bound {
        return Err(taken());
    }
    if registry.wechat.take_over_appid(appid, &holder, tenant).await? {
        tracing::warn!(appid = %appid, %holder, %tenant, "stale appid claim taken over");
        Ok(())
    } else {
        Err(taken())
    }
}

/// Gives up `tenant`'s claim of `appid` once it is no longer bound there.
pub async fn release_appid(app: &App, tenant: &TenantId, appid: &AppId) -> Result<(), WechatOpError> {
    let shard = app.router.route(tenant)?;
    if shard.wechat.account_tenant(appid).await?.is_some_and(|(owner, _)| &owner == tenant) {
        return Ok(());
    }
    app.router.registry()?.wechat.release_appid(appid, tenant).await?;
    Ok(())
}

fn tenant_error(e: crate::executor::ExecuteError<wxcm_domain::tenant::TenantError>) -> WechatOpError {
    match e {
        crate::executor::ExecuteError::Domain(d) => WechatOpError::Invalid(d.to_string()),
        crate::executor::ExecuteError::Unavailable(s) => WechatOpError::Unavailable(s),
        other => WechatOpError::Infra(other.to_string()),
    }
}

pub async fn authorize_component_account(
    app: &App,
    tenant: &TenantId,
    appid: &AppId,
    refresh_token: &str,
) -> Result<(), WechatOpError> {
    ensure_appid_free(app, tenant, appid).await?;
    let shard = app.router.route(tenant)?;
    let sealed = app.sealer.seal(refresh_token)?;
    use sha2::{Digest, Sha256};
    // The key changes with the refresh token, so a re-authorization is a new command.
    let token_digest = hex::encode(&Sha256::digest(refresh_token.as_bytes())[..16]);
    let key = system_key(&["component-authorize", tenant.as_str(), appid.as_str(), &token_digest])?;
    let ctx = CommandContext::new(tenant.clone(), key, "wechat:component".to_owned());
    let command = wxcm_domain::tenant::TenantCommand::AuthorizeComponentAccount {
        appid: appid.clone(),
        refresh_token: sealed,
        actor: Actor::Wechat { source: "component".to_owned() },
    };
    shard
        .tenants
        .execute(tenant.as_str(), command, &(appid.as_str(), &token_digest), &ctx)
        .await
        .map_err(tenant_error)?;
    Ok(())
}

pub async fn deauthorize_component_account(app: &App, tenant: &TenantId, appid: &AppId) -> Result<(), WechatOpError> {
    let shard = app.router.route(tenant)?;
    let (state, version): (Tenant, u64) = shard.tenants.load(tenant, tenant.as_str()).await?;
    if !state.component_accounts.contains_key(appid.as_str()) {
        return Ok(());
    }
    let key = system_key(&["component-deauthorize", tenant.as_str(), appid.as_str(), &version.to_string()])?;
    let ctx = CommandContext::new(tenant.clone(), key, "wechat:component".to_owned());
    let command = wxcm_domain::tenant::TenantCommand::DeauthorizeComponentAccount {
        appid: appid.clone(),
        actor: Actor::Wechat { source: "component".to_owned() },
    };
    shard.tenants.execute(tenant.as_str(), command, &(appid.as_str(), version), &ctx).await.map_err(tenant_error)?;
    release_appid(app, tenant, appid).await
}
