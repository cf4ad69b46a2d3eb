//! Who may become a distributor, how a member binds to one, who earns on an
//! order, and when a referral reward is due. Pure decisions over facts the
//! application gathers.
//!
//! ## Atomicity the application must provide
//! [`decide_binding`] refuses every cycle *given the complete chain of the
//! candidate's ancestors*. Two bindings racing (A under B while B goes under
//! A, or a longer ring) each see a chain without the other and would both
//! pass, so the application must serialise the decision and the write per
//! tenant: read the chain and append the binding under one per-tenant binding
//! lock (a row lock or an advisory lock on the tenant's binding stream, or a
//! single per-tenant binding stream appended with an expected version), then
//! decide again inside it. Bindings change rarely; one lock per tenant is
//! cheap. The chain passed in must be complete up to a root, never truncated.
//!
//! ## Settlement timing
//! The holding period and "no refund open" are checked by the commission
//! account; the application passes the delivery time and whether a refund is
//! open, and a scheduler retries settlement after `delivered_at + hold_days`.

use chrono::{DateTime, Duration, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::CommissionLevel;
use crate::{AmountFen, MemberId, OpenId, TenantId};

/// Longest ancestor chain the domain walks (a deeper one is refused as corrupt).
pub const CHAIN_LEN_MAX: usize = 10_000;
/// Longest binding validity window.
pub const BINDING_DAYS_MAX: u16 = 3_660;

// ---------------------------------------------------------------- enrolment

/// How a member becomes a distributor (a tenant setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum EnrolmentPolicy {
    /// Every member is one from registration.
    Everyone,
    /// Members apply; an admin approves, or rejects with a reason.
    Application,
    /// Only an admin designates distributors.
    Designation,
    /// Members who have paid at least `paid_fen` in cash, net of refunds.
    SpendingThreshold { paid_fen: AmountFen },
}

/// What a member's request to become a distributor leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enrolment {
    /// A distributor now.
    Enrolled,
    /// Queued for an admin's approval.
    AwaitsApproval,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnrolmentRefusal {
    #[error("only an admin designates distributors")]
    DesignationOnly,
    #[error("{missing_fen} fen more must be paid first")]
    BelowThreshold { missing_fen: i64 },
    #[error("already a distributor")]
    AlreadyDistributor,
    #[error("suspended: only an admin reinstates")]
    Suspended,
    #[error("an application is already waiting")]
    ApplicationPending,
}

/// Where a member stands as a distributor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DistributorStanding {
    NotDistributor,
    Applied,
    /// Rejected applications may apply again.
    Rejected,
    Active,
    /// Earns nothing and binds nobody until reinstated.
    Suspended,
}

/// A member asks to become a distributor. `paid_net_fen` is the cash the
/// member paid on orders minus what was refunded: a refunded order does not
/// count towards a spending threshold, a partly refunded one counts what was
/// kept. Admin designation goes around this (it needs no request).
pub fn decide_enrolment(
    policy: EnrolmentPolicy,
    standing: DistributorStanding,
    paid_net_fen: i64,
) -> Result<Enrolment, EnrolmentRefusal> {
    match standing {
        DistributorStanding::Active => return Err(EnrolmentRefusal::AlreadyDistributor),
        DistributorStanding::Suspended => return Err(EnrolmentRefusal::Suspended),
        DistributorStanding::Applied => return Err(EnrolmentRefusal::ApplicationPending),
        DistributorStanding::NotDistributor | DistributorStanding::Rejected => {}
    }
    match policy {
        EnrolmentPolicy::Everyone => Ok(Enrolment::Enrolled),
        EnrolmentPolicy::Application => Ok(Enrolment::AwaitsApproval),
        EnrolmentPolicy::Designation => Err(EnrolmentRefusal::DesignationOnly),
        EnrolmentPolicy::SpendingThreshold { paid_fen } => {
            let missing_fen = paid_fen.get().saturating_sub(paid_net_fen.max(0));
            if missing_fen > 0 {
                Err(EnrolmentRefusal::BelowThreshold { missing_fen })
            } else {
                Ok(Enrolment::Enrolled)
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StandingChange {
    Approve,
    Reject,
    Designate,
    Suspend,
    Reinstate,
}

/// An admin's decision on a distributor's standing: the standing after it,
/// or `None` when it does not apply to the current one.
pub fn change_standing(standing: DistributorStanding, change: StandingChange) -> Option<DistributorStanding> {
    use DistributorStanding as S;
    match (standing, change) {
        (S::Applied, StandingChange::Approve) => Some(S::Active),
        (S::Applied, StandingChange::Reject) => Some(S::Rejected),
        (S::NotDistributor | S::Applied | S::Rejected, StandingChange::Designate) => Some(S::Active),
        (S::Active, StandingChange::Suspend) => Some(S::Suspended),
        (S::Suspended, StandingChange::Reinstate) => Some(S::Active),
        _ => None,
    }
}

// ---------------------------------------------------------------- binding

/// When a member already bound may be bound to another distributor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum BindingMode {
    /// The first binding holds forever.
    FirstWins,
    /// A binding holds `days` days; after that a new one may replace it.
    ValidFor {
        #[schemars(range(min = 1, max = BINDING_DAYS_MAX))]
        days: u16,
    },
    /// Every new arrival through a distributor rebinds.
    LastWins,
}

/// How a member arrived through a distributor (kept with every binding, for
/// the auditor).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BindingRoute {
    /// The distributor's promotion link (opened through WeChat OAuth).
    Link,
    /// The distributor's scene QR code (subscribe or scan callback).
    Qr,
    /// The distributor's short code, typed by the member.
    Code,
}

impl BindingRoute {
    pub fn as_str(self) -> &'static str {
        match self {
            BindingRoute::Link => "link",
            BindingRoute::Qr => "qr",
            BindingRoute::Code => "code",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "link" => Some(BindingRoute::Link),
            "qr" => Some(BindingRoute::Qr),
            "code" => Some(BindingRoute::Code),
            _ => None,
        }
    }
}

/// A member's current binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Binding {
    pub distributor_id: MemberId,
    pub bound_at: DateTime<Utc>,
}

/// A member arrives through `candidate`'s link, QR or code.
#[derive(Debug, Clone, Copy)]
pub struct BindingAsk<'a> {
    pub member_id: MemberId,
    pub candidate: MemberId,
    pub candidate_standing: DistributorStanding,
    /// The candidate's ancestors, nearest first (their distributor, theirs,
    /// …) up to a member bound to nobody: the whole chain, read under the
    /// tenant's binding lock.
    pub candidate_ancestors: &'a [MemberId],
    pub current: Option<Binding>,
    pub mode: BindingMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingDecision {
    /// Bind to the candidate (replacing `replaces`, if any).
    Bind { replaces: Option<MemberId> },
    /// Already bound to the candidate: nothing to write.
    AlreadyBound,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindingRefusal {
    #[error("a member cannot bind to themself")]
    SelfBinding,
    #[error("the binding would close a cycle of length {length}")]
    Cycle { length: usize },
    #[error("the candidate is not an active distributor")]
    NotActiveDistributor,
    #[error("bound to another distributor (until {0:?})")]
    Bound(Option<DateTime<Utc>>),
    #[error("the validity window must be 1..={BINDING_DAYS_MAX} days, got {0}")]
    WindowDays(u16),
    #[error("the ancestor chain is longer than {CHAIN_LEN_MAX} or repeats a member")]
    CorruptChain,
}

/// Whether `ask.member_id` binds to `ask.candidate` (see the module
/// documentation for the lock the application holds around it).
pub fn decide_binding(ask: BindingAsk<'_>, now: DateTime<Utc>) -> Result<BindingDecision, BindingRefusal> {
    if ask.member_id == ask.candidate {
        return Err(BindingRefusal::SelfBinding);
    }
    if ask.candidate_standing != DistributorStanding::Active {
        return Err(BindingRefusal::NotActiveDistributor);
    }
    check_chain(ask.member_id, ask.candidate_ancestors)?;
    let Some(current) = ask.current else {
        return Ok(BindingDecision::Bind { replaces: None });
    };
    if current.distributor_id == ask.candidate {
        return Ok(BindingDecision::AlreadyBound);
    }
    let replaces = Some(current.distributor_id);
    match ask.mode {
        BindingMode::FirstWins => Err(BindingRefusal::Bound(None)),
        BindingMode::LastWins => Ok(BindingDecision::Bind { replaces }),
        BindingMode::ValidFor { days } => {
            if days == 0 || days > BINDING_DAYS_MAX {
                return Err(BindingRefusal::WindowDays(days));
            }
            let until = current.bound_at + Duration::days(i64::from(days));
            if now < until {
                Err(BindingRefusal::Bound(Some(until)))
            } else {
                Ok(BindingDecision::Bind { replaces })
            }
        }
    }
}

/// Binding `member` under the first of `ancestors` closes a cycle when
/// `member` is among them (the cycle is member → candidate → … → member).
fn check_chain(member: MemberId, ancestors: &[MemberId]) -> Result<(), BindingRefusal> {
    if ancestors.len() > CHAIN_LEN_MAX {
        return Err(BindingRefusal::CorruptChain);
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, ancestor) in ancestors.iter().enumerate() {
        if *ancestor == member {
            // member → candidate (1) → ancestors[0] (2) … → ancestors[i] = member.
            return Err(BindingRefusal::Cycle { length: i + 2 });
        }
        if !seen.insert(*ancestor) {
            return Err(BindingRefusal::CorruptChain);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- who earns

/// How many levels of the buyer's chain earn commission (a tenant setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CommissionDepth {
    One,
    Two,
}

/// Who earns on an order of a buyer whose ancestors are `chain` (nearest
/// first, with their standing). Level 1 is the buyer's distributor, level 2
/// theirs. A level whose member is not an active distributor earns nothing,
/// and nobody moves up into its place. The buyer never earns on their own
/// order.
pub fn beneficiaries(
    buyer: MemberId,
    chain: &[(MemberId, DistributorStanding)],
    depth: CommissionDepth,
) -> Vec<(CommissionLevel, MemberId)> {
    let levels: &[CommissionLevel] = match depth {
        CommissionDepth::One => &[CommissionLevel::First],
        CommissionDepth::Two => &[CommissionLevel::First, CommissionLevel::Second],
    };
    levels
        .iter()
        .zip(chain)
        .filter(|(_, (member, standing))| *standing == DistributorStanding::Active && *member != buyer)
        .map(|(level, (member, _))| (*level, *member))
        .collect()
}

// ---------------------------------------------------------------- new-member reward

const REWARD_NAMESPACE: Uuid = Uuid::from_u128(0x3b8e_11c5_6d2f_4a97_b0e4_58c1_9f72_ad06);

/// The key of the one new-member reward a referral may earn for a person.
///
/// Derived from (tenant, openid), not from the member id: a member deleted
/// and re-created with the same openid has the same key, so the reward's
/// ledger entry (idempotent on this key) is written once. What the domain
/// needs to know is the openid that arrived; the application keeps the key
/// with the reward and must never forget it when a member is deleted. A
/// member without an openid (registered by hand) keys on the member id.
pub fn new_member_reward_key(tenant: &TenantId, openid: Option<&OpenId>, member: MemberId) -> Uuid {
    let name = match openid {
        Some(openid) => format!("openid\u{1f}{}\u{1f}{}", tenant.as_str(), openid.as_str()),
        None => format!("member\u{1f}{}\u{1f}{}", tenant.as_str(), member),
    };
    Uuid::new_v5(&REWARD_NAMESPACE, name.as_bytes())
}

/// Whether a new member's arrival earns the referrer their reward: only for
/// a person never rewarded before (`already_rewarded` tells whether a key was
/// already paid in the tenant; the application looks it up, and the ledger's
/// idempotency on the key settles a race) and never for one's own arrival.
pub fn new_member_reward_due(
    key: Uuid,
    referrer: MemberId,
    member: MemberId,
    already_rewarded: impl Fn(Uuid) -> bool,
) -> bool {
    referrer != member && !already_rewarded(key)
}
