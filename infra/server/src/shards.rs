//! The shard map: tenant → database, from configuration. Every read and
//! write for a tenant goes through `route`.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use wxcm_commands::campaigns::lanes::{ShakeLaneDeps, ShakeLanes};
use wxcm_commands::campaigns::CampaignStore;
use wxcm_commands::card_levels::LevelRules;
use wxcm_commands::coupons::claims::IssueLanes;
use wxcm_commands::coupons::CouponStore;
use wxcm_commands::ports::{AggregateRepository, Clock, RouteError, SecretSealer, ShardRouter, ShardServices};
use wxcm_commands::repository::CqrsRepository;
use wxcm_commands::Executor;
use wxcm_domain::campaign::Campaign;
use wxcm_domain::coupon::{Coupon, CouponTemplate};
use wxcm_domain::mall::{MallOrder, Product};
use wxcm_domain::member::Member;
use wxcm_domain::payment::PaymentOrder;
use wxcm_domain::tenant::Tenant;
use wxcm_domain::TenantId;
use wxcm_projections::PgReadModels;

use crate::config::{Settings, ShardConfig};
use wxcm_store::coupon_store::PgCouponStore;
use wxcm_store::group_commit::GroupCommitter;
use wxcm_store::pg_ports::PgShardPorts;
use wxcm_store::store::PgEventStore;

const ACQUIRE_TIMEOUT_MS: u64 = 5_000;
/// Payment orders kept in memory per shard: an order is hot only while it is paid and refunded.
const PAYMENT_CACHE_ENTRIES: usize = 1_000;
/// Templates are few and read on every claim (their limit and audience).
const COUPON_TEMPLATE_CACHE_ENTRIES: usize = 1_000;
/// Campaigns are few and hot (every shake of one meets on its stream).
const CAMPAIGN_CACHE_ENTRIES: usize = 1_000;
/// Mall products are few and hot (every order reserves on one).
const PRODUCT_CACHE_ENTRIES: usize = 1_000;

pub struct Shard {
    pub name: String,
    pub pool: PgPool,
    pub services: Arc<ShardServices>,
    /// Signalled after each event commit on this shard by this process.
    pub committed: Arc<tokio::sync::Notify>,
}

pub struct Shards {
    shards: BTreeMap<String, Shard>,
    tenant_shards: BTreeMap<String, String>,
    default_shard: String,
}

pub fn pool_for(url: &str, pool_max: u32) -> Result<PgPool, sqlx::Error> {
    let options = PgConnectOptions::from_str(url)?.application_name("wxcm");
    Ok(PgPoolOptions::new()
        .max_connections(pool_max)
        .acquire_timeout(Duration::from_millis(ACQUIRE_TIMEOUT_MS))
        // No ping per acquire (a round trip on every query): a dead connection
        // fails one query and is discarded by the pool.
        .test_before_acquire(false)
        .connect_lazy_with(options))
}

/// Connections for bookkeeping that may be lost in a server crash (see
/// [`relaxed_pool_for`]): few, the writes are short.
const RELAXED_POOL_MAX: u32 = 4;

/// A pool whose commits do not wait for the WAL flush (`synchronous_commit =
/// off`): for bookkeeping a retry rebuilds, never for events. A crash of the
/// server may lose its last ~0.6 s of commits; nothing else changes.
pub fn relaxed_pool_for(url: &str, pool_max: u32) -> Result<PgPool, sqlx::Error> {
    let options =
        PgConnectOptions::from_str(url)?.application_name("wxcm-relaxed").options([("synchronous_commit", "off")]);
    Ok(PgPoolOptions::new()
        .max_connections(pool_max)
        .acquire_timeout(Duration::from_millis(ACQUIRE_TIMEOUT_MS))
        .test_before_acquire(false)
        .connect_lazy_with(options))
}

fn build_shard(
    name: &str,
    config: &ShardConfig,
    clock: Arc<dyn Clock>,
    sealer: Arc<dyn SecretSealer>,
) -> Result<Shard, sqlx::Error> {
    let pool = pool_for(&config.url, config.pool_max)?;
    let relaxed = relaxed_pool_for(&config.url, RELAXED_POOL_MAX.min(config.pool_max))?;
    let ports = Arc::new(PgShardPorts::new(pool.clone()));
    let committer = Arc::new(GroupCommitter::new(pool.clone(), config.group_commit_workers));
    // One tenant repository (one cache) for the tenants' executor and the
    // card level rule, which reads the catalog on member commands.
    let tenant_repository: Arc<dyn AggregateRepository<Tenant>> =
        Arc::new(CqrsRepository::new(PgEventStore::<Tenant>::new(pool.clone(), committer.clone(), 1_000)));
    let members = Executor::<Member>::new(
        Arc::new(CqrsRepository::new(PgEventStore::<Member>::new(
            pool.clone(),
            committer.clone(),
            config.aggregate_cache_entries,
        ))),
        ports.clone(),
        clock.clone(),
    )
    .with_rules(Arc::new(LevelRules::new(tenant_repository.clone())));
    let tenants = Executor::<Tenant>::new(tenant_repository, ports.clone(), clock.clone());
    let payments = Executor::<PaymentOrder>::new(
        Arc::new(CqrsRepository::new(PgEventStore::<PaymentOrder>::new(
            pool.clone(),
            committer.clone(),
            PAYMENT_CACHE_ENTRIES,
        ))),
        ports.clone(),
        clock.clone(),
    );
    let coupon_templates = Arc::new(Executor::<CouponTemplate>::new(
        Arc::new(CqrsRepository::new(PgEventStore::<CouponTemplate>::new(
            pool.clone(),
            committer.clone(),
            COUPON_TEMPLATE_CACHE_ENTRIES,
        ))),
        ports.clone(),
        clock.clone(),
    ));
    let coupons = Executor::<Coupon>::new(
        Arc::new(CqrsRepository::new(PgEventStore::<Coupon>::new(
            pool.clone(),
            committer.clone(),
            config.aggregate_cache_entries,
        ))),
        ports.clone(),
        clock.clone(),
    );
    let products = Executor::<Product>::new(
        Arc::new(CqrsRepository::new(PgEventStore::<Product>::new(
            pool.clone(),
            committer.clone(),
            PRODUCT_CACHE_ENTRIES,
        ))),
        ports.clone(),
        clock.clone(),
    );
    let mall_orders = Executor::<MallOrder>::new(
        Arc::new(CqrsRepository::new(PgEventStore::<MallOrder>::new(
            pool.clone(),
            committer.clone(),
            config.aggregate_cache_entries,
        ))),
        ports.clone(),
        clock.clone(),
    );
    let campaigns = Arc::new(Executor::<Campaign>::new(
        Arc::new(CqrsRepository::new(PgEventStore::<Campaign>::new(
            pool.clone(),
            committer.clone(),
            CAMPAIGN_CACHE_ENTRIES,
        ))),
        ports.clone(),
        clock.clone(),
    ));
    let campaign_store: Arc<dyn CampaignStore> =
        Arc::new(wxcm_store::campaign_store::PgCampaignStore::new(pool.clone()));
    let shake_lanes = ShakeLanes::new(ShakeLaneDeps {
        campaigns: campaigns.clone(),
        appender: committer.clone(),
        store: campaign_store.clone(),
        sealer,
        clock: clock.clone(),
    });
    let distributors = Executor::<wxcm_domain::distribution::Distributor>::new(
        Arc::new(CqrsRepository::new(PgEventStore::<wxcm_domain::distribution::Distributor>::new(
            pool.clone(),
            committer.clone(),
            config.aggregate_cache_entries,
        ))),
        ports.clone(),
        clock.clone(),
    );
    let commission_accounts = Executor::<wxcm_domain::distribution::CommissionAccount>::new(
        Arc::new(CqrsRepository::new(PgEventStore::<wxcm_domain::distribution::CommissionAccount>::new(
            pool.clone(),
            committer.clone(),
            config.aggregate_cache_entries,
        ))),
        ports.clone(),
        clock.clone(),
    );
    let coupon_store: Arc<dyn CouponStore> = Arc::new(PgCouponStore::new(pool.clone(), committer.clone()));
    let coupon_issues = IssueLanes::new(coupon_templates.clone(), coupon_store.clone(), clock);
    let services = Arc::new(ShardServices {
        name: name.to_owned(),
        members,
        tenants,
        payments,
        coupon_templates,
        coupons,
        coupon_store,
        coupon_issues,
        coupon_dispatches: Arc::new(wxcm_store::dispatch_store::PgDispatchStore::new(pool.clone())),
        products,
        mall_orders,
        mall_store: Arc::new(wxcm_store::mall_store::PgMallStore::new(pool.clone())),
        campaigns,
        campaign_store,
        shake_lanes,
        event_log: ports.clone(),
        directory: ports.clone(),
        cards: ports.clone(),
        admins: ports.clone(),
        due_work: ports,
        read_models: Arc::new(PgReadModels::new(pool.clone())),
        vote_ranking: Arc::new(wxcm_projections::PgVoteRanking::new(pool.clone())),
        distributors,
        distribution: Arc::new(wxcm_store::distribution_store::PgDistributionStore::new(pool.clone())),
        commission_accounts,
        commissions: Arc::new(wxcm_store::commission_store::PgCommissionStore::new(pool.clone())),
        member_audit: Arc::new(wxcm_store::audit::PgMemberAudit::new(pool.clone())),
        draw_audit: Arc::new(wxcm_store::audit::PgDrawAudit::new(pool.clone())),
        wechat: Arc::new(wxcm_store::wechat_store::PgWechatStore::new(pool.clone(), relaxed)),
        pay: Arc::new(wxcm_store::pay_store::PgPayStore::new(pool.clone())),
        oplog: Arc::new(wxcm_store::oplog_store::PgOperationLog::new(pool.clone())),
        keyed_requests: Arc::new(wxcm_store::keyed_store::PgKeyedRequests::new(pool.clone())),
    });
    Ok(Shard { name: name.to_owned(), pool, services, committed: committer.committed() })
}

impl Shards {
    /// `sealer` opens the shake lotteries' seeds for the shake lanes.
    pub fn build(
        settings: &Settings,
        clock: Arc<dyn Clock>,
        sealer: Arc<dyn SecretSealer>,
    ) -> Result<Self, sqlx::Error> {
        let mut shards = BTreeMap::new();
        for (name, config) in &settings.shards {
            shards.insert(name.clone(), build_shard(name, config, clock.clone(), sealer.clone())?);
        }
        Ok(Self {
            shards,
            tenant_shards: settings.tenant_shards.clone(),
            default_shard: settings.default_shard.clone(),
        })
    }

    pub fn all(&self) -> impl Iterator<Item = &Shard> {
        self.shards.values()
    }

    pub fn shard_for(&self, tenant: &TenantId) -> Result<&Shard, RouteError> {
        let name = self.tenant_shards.get(tenant.as_str()).unwrap_or(&self.default_shard);
        self.shards.get(name).ok_or_else(|| RouteError::NoShard(tenant.to_string()))
    }
}

impl ShardRouter for Shards {
    fn route(&self, tenant: &TenantId) -> Result<Arc<ShardServices>, RouteError> {
        self.shard_for(tenant).map(|s| s.services.clone())
    }

    fn shards(&self) -> Vec<Arc<ShardServices>> {
        self.shards.values().map(|s| s.services.clone()).collect()
    }

    fn registry(&self) -> Result<Arc<ShardServices>, RouteError> {
        self.shards
            .get(&self.default_shard)
            .map(|s| s.services.clone())
            .ok_or_else(|| RouteError::NoShard(format!("default shard {}", self.default_shard)))
    }
}
