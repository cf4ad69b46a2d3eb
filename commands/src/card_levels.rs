//! Card levels: the tenant's catalog (read, replaced on the revision the
//! editor saw) and the rule's hook on member commands ([`LevelRules`]).
//!
//! Why the rule runs inside the member's own decision: every command of a
//! tenant with a catalog that can move the figures the rule reads (points
//! granted, cash charged or refunded, a purchase paid or refunded by WeChat
//! Pay, a registration with welcome points) is
//! wrapped in `MemberCommand::WithLevelRule`, so the grant and its
//! `CardLevelChanged` are decided on the same state and appended together.
//! Concurrent grants meet at the member stream's next sequence: the one that
//! crosses the threshold upgrades, the others are decided again on the
//! upgraded state and find nothing to change. There is no window in which a
//! crossing is missed, so no process manager or due work is needed.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use wxcm_domain::card_levels::{CardLevelCatalog, CardLevelDef, LevelSource, Missing};
use wxcm_domain::member::{Member, MemberCommand};
use wxcm_domain::tenant::{Tenant, TenantCommand};
use wxcm_domain::{Actor, EventSourced, MemberId, TenantId};

use crate::executor::{CommandContext, CommandRules};
use crate::members::MemberOpError;
use crate::ports::{AggregateRepository, App, PortError};
use crate::tenants::TenantOpError;

/// How old a node's copy of the catalog may be when the rule reads it: a
/// catalog just replaced applies to this node's grants at once (the edit
/// refreshed its cache) and to other nodes' within this bound.
pub const CATALOG_MAX_AGE: Duration = Duration::from_secs(5);

/// Wraps the member commands of tenants that have a catalog.
pub struct LevelRules {
    tenants: Arc<dyn AggregateRepository<Tenant>>,
}

impl LevelRules {
    pub fn new(tenants: Arc<dyn AggregateRepository<Tenant>>) -> Self {
        Self { tenants }
    }
}

/// Whether the rule has anything to say about `command`: it moves a figure
/// the rule reads, or it sets a level (which must be one of the catalog's).
fn concerns_levels(command: &MemberCommand) -> bool {
    match command {
        MemberCommand::Register { welcome, .. } => welcome.is_some(),
        MemberCommand::GrantPoints { .. }
        | MemberCommand::ChargeCash { .. }
        | MemberCommand::RefundCharge { .. }
        | MemberCommand::RecordPurchasePaid { .. }
        | MemberCommand::RecordPurchaseRefunded { .. }
        | MemberCommand::SetCardLevel { .. } => true,
        MemberCommand::Follow { .. }
        | MemberCommand::Unfollow { .. }
        | MemberCommand::DeductPoints { .. }
        | MemberCommand::SpendPoints { .. }
        | MemberCommand::HoldPoints { .. }
        | MemberCommand::SpendHeldPoints { .. }
        | MemberCommand::ReleaseHeldPoints { .. }
        | MemberCommand::ExpirePoints { .. }
        | MemberCommand::DepositCash { .. }
        | MemberCommand::CreditRecharge { .. }
        | MemberCommand::ReverseRecharge { .. }
        | MemberCommand::WithLevelRule { .. } => false,
    }
}

#[async_trait]
impl CommandRules<Member> for LevelRules {
    async fn prepare(&self, tenant: &TenantId, command: MemberCommand) -> Result<MemberCommand, PortError> {
        if !concerns_levels(&command) {
            return Ok(command);
        }
        let (state, _) = self.tenants.load_recent(tenant.as_str(), CATALOG_MAX_AGE).await?;
        if state.tenant() != Some(tenant) {
            return Ok(command);
        }
        Ok(match state.card_levels {
            Some(catalog) => MemberCommand::WithLevelRule { inner: Box::new(command), catalog },
            None => command,
        })
    }
}

/// The catalog in force and its revision (0 and none before the first).
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogView {
    pub catalog: Option<CardLevelCatalog>,
    pub revision: u64,
}

pub async fn catalog(app: &App, tenant: &TenantId) -> Result<CatalogView, TenantOpError> {
    let shard = app.router.route(tenant)?;
    let (state, _) = shard.tenants.load(tenant, tenant.as_str()).await?;
    if state.tenant_id.is_none() {
        return Err(TenantOpError::NotFound);
    }
    Ok(CatalogView { catalog: state.card_levels, revision: state.card_levels_revision })
}

/// What a catalog edit asks for (hashed for idempotency).
#[derive(Debug, Clone, Serialize)]
struct SetCatalogRequest<'a> {
    op: &'static str,
    catalog: &'a CardLevelCatalog,
    expected_revision: u64,
}

/// Replaces the catalog if `expected_revision` is still in force; members
/// keep their levels (the rule applies the new thresholds at their next grant,
/// charge or refund).
pub async fn set_catalog(
    app: &App,
    tenant: &TenantId,
    catalog: CardLevelCatalog,
    expected_revision: u64,
    actor: Actor,
    ctx: &CommandContext,
) -> Result<CatalogView, TenantOpError> {
    let shard = app.router.route(tenant)?;
    let request = SetCatalogRequest { op: "set-card-levels", catalog: &catalog, expected_revision };
    let command = TenantCommand::SetCardLevels { catalog: catalog.clone(), expected_revision, actor };
    shard.tenants.execute(tenant.as_str(), command, &request, ctx).await?;
    tracing::info!(expected_revision, "card levels set");
    self::catalog(app, tenant).await
}

/// What a member lacks for the next level.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NextLevel {
    pub level: CardLevelDef,
    /// Points still to earn (a lifetime-points threshold) …
    pub missing_points: Option<i64>,
    /// … or fen still to pay (a total-paid threshold).
    pub missing_fen: Option<i64>,
}

/// A member's level as the member sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemberLevelView {
    pub card_level: String,
    pub source: LevelSource,
    /// The catalog's entry for the level (none: no catalog, or a level it no longer has).
    pub level: Option<CardLevelDef>,
    pub lifetime_points: i64,
    pub total_paid_fen: i64,
    /// None: no catalog, or no level above that a threshold earns.
    pub next: Option<NextLevel>,
}

pub async fn member_level(app: &App, tenant: &TenantId, member_id: MemberId) -> Result<MemberLevelView, MemberOpError> {
    let shard = app.router.route(tenant)?;
    let (member, _) = shard.members.load(tenant, &member_id.to_string()).await?;
    let registration = member.registration.as_ref().ok_or(MemberOpError::NotFound)?;
    let (tenant_state, _) = shard.tenants.load_recent(tenant, tenant.as_str(), CATALOG_MAX_AGE).await?;
    let current = &registration.card_level;
    let progress = member.progress();
    let catalog = tenant_state.card_levels.as_ref();
    let next = catalog.and_then(|c| c.next_level(current, progress)).map(|(level, missing)| {
        let (missing_points, missing_fen) = match missing {
            Missing::Points(p) => (Some(p), None),
            Missing::Fen(f) => (None, Some(f)),
        };
        NextLevel { level: level.clone(), missing_points, missing_fen }
    });
    Ok(MemberLevelView {
        card_level: current.as_str().to_owned(),
        source: member.card_level_source,
        level: catalog.and_then(|c| c.level(current)).cloned(),
        lifetime_points: progress.lifetime_points,
        total_paid_fen: progress.total_paid_fen,
        next,
    })
}

#[cfg(test)]
mod tests {
    use wxcm_domain::member::ExpiryPolicy;
    use wxcm_domain::member::{PointsSource, Provenance};
    use wxcm_domain::{IdempotencyKey, PointsAmount, Reference};

    use super::*;

    fn grant() -> MemberCommand {
        MemberCommand::GrantPoints {
            points: PointsAmount::new(5).unwrap(),
            source: PointsSource::Manual,
            expiry: ExpiryPolicy::Never,
            provenance: Provenance {
                actor: Actor::Admin { username: "a".into() },
                reason: Reference::parse("r").unwrap(),
                reference: None,
                idempotency_key: IdempotencyKey::parse("key-0001").unwrap(),
            },
        }
    }

    #[test]
    fn only_commands_that_move_the_figures_or_set_a_level_are_wrapped() {
        assert!(concerns_levels(&grant()));
        let provenance = grant().provenance().clone();
        assert!(!concerns_levels(&MemberCommand::Unfollow { provenance: provenance.clone() }));
        assert!(!concerns_levels(&MemberCommand::DepositCash {
            amount_fen: wxcm_domain::AmountFen::new(1).unwrap(),
            provenance
        }));
    }
}
