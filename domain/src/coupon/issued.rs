//! The coupon aggregate: one issued coupon, from issue to its one end.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{rules, Benefit, CouponId, CouponText, RedemptionCode, TemplateId};
use crate::invariant::ensure;
use crate::{Actor, DomainEventMeta, EventSourced, InvariantViolation, MemberId, Reference, TenantId};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CouponError {
    #[error("coupon not found")]
    NotFound,
    #[error("coupon already issued")]
    AlreadyIssued,
    #[error("coupon already redeemed")]
    AlreadyRedeemed,
    #[error("coupon was voided")]
    Voided,
    #[error("coupon has expired")]
    Expired,
    #[error("coupon is not valid before {0}")]
    NotYetValid(DateTime<Utc>),
    #[error("the code does not match this coupon")]
    WrongCode,
    #[error("coupon is still valid until {0}")]
    StillValid(DateTime<Utc>),
}

/// How a coupon came to its member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum IssueChannel {
    /// The member claimed it: their `ordinal`-th claim of a template with a
    /// per-member limit (`None` when the template has none).
    MemberClaim { ordinal: Option<u16> },
    /// An operator gave it to the member.
    OperatorGrant { reason: Reference },
    /// A dispatch job gave it to each member of a list or filter (at most one
    /// per member and job: the stream derives from both).
    Dispatch { job_id: uuid::Uuid },
}

impl IssueChannel {
    /// The channel's name in reports (`member_claim`, `operator_grant`, `dispatch`).
    pub fn name(&self) -> &'static str {
        match self {
            IssueChannel::MemberClaim { .. } => "member_claim",
            IssueChannel::OperatorGrant { .. } => "operator_grant",
            IssueChannel::Dispatch { .. } => "dispatch",
        }
    }
}

/// Everything an issued coupon is: its copy of the terms included.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IssuedCoupon {
    pub coupon_id: CouponId,
    pub tenant_id: TenantId,
    pub template_id: TemplateId,
    pub member_id: MemberId,
    pub serial: u64,
    pub code: RedemptionCode,
    pub name: CouponText,
    pub benefit: Benefit,
    pub valid_from: DateTime<Utc>,
    pub valid_until: DateTime<Utc>,
    pub channel: IssueChannel,
    pub actor: Actor,
    pub issued_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum CouponCommand {
    Issue(Box<IssuedCoupon>),
    /// Write-off at the counter: the code as scanned or typed must match.
    Redeem {
        code: RedemptionCode,
        store: Option<Reference>,
        actor: Actor,
    },
    Void {
        reason: Reference,
        actor: Actor,
    },
    /// The scheduler, at or after the end of the window.
    Expire,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum CouponEvent {
    CouponIssued(Box<IssuedCoupon>),
    CouponRedeemed { store: Option<Reference>, actor: Actor, redeemed_at: DateTime<Utc> },
    CouponVoided { reason: Reference, actor: Actor, voided_at: DateTime<Utc> },
    CouponExpired { expired_at: DateTime<Utc> },
}

impl DomainEventMeta for CouponEvent {
    fn event_type(&self) -> &'static str {
        match self {
            CouponEvent::CouponIssued(_) => "CouponIssued",
            CouponEvent::CouponRedeemed { .. } => "CouponRedeemed",
            CouponEvent::CouponVoided { .. } => "CouponVoided",
            CouponEvent::CouponExpired { .. } => "CouponExpired",
        }
    }
    fn event_version(&self) -> &'static str {
        "1"
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CouponState {
    Active,
    Redeemed,
    Voided,
    Expired,
}

impl CouponState {
    pub fn as_str(self) -> &'static str {
        match self {
            CouponState::Active => "active",
            CouponState::Redeemed => "redeemed",
            CouponState::Voided => "voided",
            CouponState::Expired => "expired",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coupon {
    pub issued: Option<(Box<IssuedCoupon>, CouponState)>,
}

impl Coupon {
    fn active(&self, now: DateTime<Utc>) -> Result<&IssuedCoupon, CouponError> {
        let (coupon, state) = self.issued.as_ref().ok_or(CouponError::NotFound)?;
        match state {
            CouponState::Redeemed => Err(CouponError::AlreadyRedeemed),
            CouponState::Voided => Err(CouponError::Voided),
            CouponState::Expired => Err(CouponError::Expired),
            CouponState::Active if now >= coupon.valid_until => Err(CouponError::Expired),
            CouponState::Active => Ok(coupon),
        }
    }

    fn end(&mut self, to: CouponState, at: Option<DateTime<Utc>>) -> Result<(), InvariantViolation> {
        let (coupon, state) = self
            .issued
            .as_mut()
            .ok_or_else(|| InvariantViolation::new(rules::COUPON_EXISTS, "event before the coupon was issued"))?;
        ensure(*state == CouponState::Active, rules::COUPON_ENDS_ONCE, || {
            format!("{} after it was {}", to.as_str(), state.as_str())
        })?;
        if let Some(at) = at {
            ensure(at >= coupon.valid_from && at < coupon.valid_until, rules::REDEEMED_WHILE_VALID, || {
                format!("redeemed at {at} outside {}..{}", coupon.valid_from, coupon.valid_until)
            })?;
        }
        *state = to;
        Ok(())
    }
}

impl EventSourced for Coupon {
    const TYPE: &'static str = "coupon";
    const STATE_VERSION: i32 = 1;
    type Command = CouponCommand;
    type Event = CouponEvent;
    type Error = CouponError;

    fn handle(&self, command: CouponCommand, now: DateTime<Utc>) -> Result<Vec<CouponEvent>, CouponError> {
        match command {
            CouponCommand::Issue(coupon) => {
                if self.issued.is_some() {
                    return Err(CouponError::AlreadyIssued);
                }
                Ok(vec![CouponEvent::CouponIssued(coupon)])
            }
            CouponCommand::Redeem { code, store, actor } => {
                let coupon = self.active(now)?;
                if coupon.code != code {
                    return Err(CouponError::WrongCode);
                }
                if now < coupon.valid_from {
                    return Err(CouponError::NotYetValid(coupon.valid_from));
                }
                Ok(vec![CouponEvent::CouponRedeemed { store, actor, redeemed_at: now }])
            }
            CouponCommand::Void { reason, actor } => {
                let (_, state) = self.issued.as_ref().ok_or(CouponError::NotFound)?;
                match state {
                    CouponState::Active => Ok(vec![CouponEvent::CouponVoided { reason, actor, voided_at: now }]),
                    CouponState::Redeemed => Err(CouponError::AlreadyRedeemed),
                    CouponState::Voided => Err(CouponError::Voided),
                    CouponState::Expired => Err(CouponError::Expired),
                }
            }
            CouponCommand::Expire => {
                let (coupon, state) = self.issued.as_ref().ok_or(CouponError::NotFound)?;
                match state {
                    // Due work may run for a coupon that already ended: nothing to do.
                    CouponState::Redeemed | CouponState::Voided | CouponState::Expired => Ok(Vec::new()),
                    CouponState::Active if now < coupon.valid_until => Err(CouponError::StillValid(coupon.valid_until)),
                    CouponState::Active => Ok(vec![CouponEvent::CouponExpired { expired_at: now }]),
                }
            }
        }
    }

    fn apply(&mut self, event: &CouponEvent) -> Result<(), InvariantViolation> {
        match event {
            CouponEvent::CouponIssued(coupon) => {
                ensure(self.issued.is_none(), rules::COUPON_ISSUED_ONCE, || "issued twice".into())?;
                ensure(coupon.valid_from < coupon.valid_until, rules::VALIDITY_ORDERED, || {
                    format!("window {}..{} is empty", coupon.valid_from, coupon.valid_until)
                })?;
                self.issued = Some((coupon.clone(), CouponState::Active));
                Ok(())
            }
            CouponEvent::CouponRedeemed { redeemed_at, .. } => self.end(CouponState::Redeemed, Some(*redeemed_at)),
            CouponEvent::CouponVoided { .. } => self.end(CouponState::Voided, None),
            CouponEvent::CouponExpired { .. } => self.end(CouponState::Expired, None),
        }
    }

    fn tenant(&self) -> Option<&TenantId> {
        self.issued.as_ref().map(|(c, _)| &c.tenant_id)
    }
}
