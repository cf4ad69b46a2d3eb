//! The coupon aggregate: one issued coupon, from issue to its one end.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{rules, Benefit, CouponId, CouponText, RedemptionCode, TemplateId};
use crate::invariant::ensure;
use crate::mall::MallOrderId;
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
    /// Taken by a mall order awaiting payment: not usable elsewhere until
    /// the order is paid (used) or ends (released).
    #[error("coupon is held by mall order {0}")]
    HeldByOrder(MallOrderId),
    #[error("coupon is not held by mall order {0}")]
    NotHeldByOrder(MallOrderId),
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
    /// It came with a paid mall order (the product's gift coupon): at most one
    /// per order (the stream derives from the order).
    MallPurchase { order_id: MallOrderId },
    /// A campaign awarded it: at most one per campaign and award (the stream
    /// derives from both).
    CampaignPrize { campaign_id: uuid::Uuid, award: Reference },
}

impl IssueChannel {
    /// The channel's name in reports (`member_claim`, `operator_grant`,
    /// `dispatch`, `mall_purchase`, `campaign_prize`).
    pub fn name(&self) -> &'static str {
        match self {
            IssueChannel::MemberClaim { .. } => "member_claim",
            IssueChannel::OperatorGrant { .. } => "operator_grant",
            IssueChannel::Dispatch { .. } => "dispatch",
            IssueChannel::MallPurchase { .. } => "mall_purchase",
            IssueChannel::CampaignPrize { .. } => "campaign_prize",
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
    /// A mall order of the coupon's member takes it (until paid or ended).
    HoldForOrder {
        order_id: MallOrderId,
        member_id: MemberId,
    },
    /// The order holding it was paid: the coupon is used.
    UseOnOrder {
        order_id: MallOrderId,
    },
    /// The order holding it ended unpaid: back to the member (expired if its
    /// window has passed meanwhile).
    ReleaseFromOrder {
        order_id: MallOrderId,
    },
    /// The order it was used on was refunded: back to the member (expired if
    /// its window has passed).
    ReturnFromOrder {
        order_id: MallOrderId,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum CouponEvent {
    CouponIssued(Box<IssuedCoupon>),
    CouponRedeemed { store: Option<Reference>, actor: Actor, redeemed_at: DateTime<Utc> },
    CouponVoided { reason: Reference, actor: Actor, voided_at: DateTime<Utc> },
    CouponExpired { expired_at: DateTime<Utc> },
    CouponHeld { order_id: MallOrderId, held_at: DateTime<Utc> },
    CouponUsed { order_id: MallOrderId, used_at: DateTime<Utc> },
    CouponReleased { order_id: MallOrderId, released_at: DateTime<Utc> },
    CouponReturned { order_id: MallOrderId, returned_at: DateTime<Utc> },
}

impl DomainEventMeta for CouponEvent {
    fn event_type(&self) -> &'static str {
        match self {
            CouponEvent::CouponIssued(_) => "CouponIssued",
            CouponEvent::CouponRedeemed { .. } => "CouponRedeemed",
            CouponEvent::CouponVoided { .. } => "CouponVoided",
            CouponEvent::CouponExpired { .. } => "CouponExpired",
            CouponEvent::CouponHeld { .. } => "CouponHeld",
            CouponEvent::CouponUsed { .. } => "CouponUsed",
            CouponEvent::CouponReleased { .. } => "CouponReleased",
            CouponEvent::CouponReturned { .. } => "CouponReturned",
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
    /// Held by a mall order awaiting payment.
    Held,
    Redeemed,
    Voided,
    Expired,
}

impl CouponState {
    pub fn as_str(self) -> &'static str {
        match self {
            CouponState::Active => "active",
            CouponState::Held => "held",
            CouponState::Redeemed => "redeemed",
            CouponState::Voided => "voided",
            CouponState::Expired => "expired",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coupon {
    pub issued: Option<(Box<IssuedCoupon>, CouponState)>,
    /// The mall order holding it (state `Held`) or it was used on
    /// (`Redeemed` by an order).
    #[serde(default)]
    pub order: Option<MallOrderId>,
}

impl Coupon {
    fn active(&self, now: DateTime<Utc>) -> Result<&IssuedCoupon, CouponError> {
        let (coupon, state) = self.issued.as_ref().ok_or(CouponError::NotFound)?;
        match state {
            CouponState::Held => Err(self.held_error()),
            CouponState::Redeemed => Err(CouponError::AlreadyRedeemed),
            CouponState::Voided => Err(CouponError::Voided),
            CouponState::Expired => Err(CouponError::Expired),
            CouponState::Active if now >= coupon.valid_until => Err(CouponError::Expired),
            CouponState::Active => Ok(coupon),
        }
    }

    fn held_error(&self) -> CouponError {
        self.order.map_or(CouponError::NotFound, CouponError::HeldByOrder)
    }

    /// The events that give the coupon back from `order_id`: `back`, then its
    /// expiry when the window has passed meanwhile.
    fn back(coupon: &IssuedCoupon, back: CouponEvent, now: DateTime<Utc>) -> Vec<CouponEvent> {
        let mut events = vec![back];
        if now >= coupon.valid_until {
            events.push(CouponEvent::CouponExpired { expired_at: now });
        }
        events
    }

    /// Moves the coupon between `from` and `to` for `order_id` (the order
    /// events: held, used, released, returned).
    fn move_for_order(
        &mut self,
        order_id: &MallOrderId,
        from: CouponState,
        to: CouponState,
    ) -> Result<(), InvariantViolation> {
        let (_, state) = self
            .issued
            .as_mut()
            .ok_or_else(|| InvariantViolation::new(rules::COUPON_EXISTS, "event before the coupon was issued"))?;
        ensure(*state == from, rules::COUPON_ORDER_STATES, || {
            format!("{} → {} for order {order_id} while {}", from.as_str(), to.as_str(), state.as_str())
        })?;
        let held_by = if from == CouponState::Active { Some(*order_id) } else { self.order };
        ensure(held_by == Some(*order_id), rules::COUPON_ORDER_STATES, || {
            format!("order {order_id} moves a coupon of order {:?}", self.order)
        })?;
        *state = to;
        self.order = if to == CouponState::Active { None } else { Some(*order_id) };
        Ok(())
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
    /// 2: the holding order and the `Held` state.
    const STATE_VERSION: i32 = 2;
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
                    CouponState::Held => Err(self.held_error()),
                    CouponState::Redeemed => Err(CouponError::AlreadyRedeemed),
                    CouponState::Voided => Err(CouponError::Voided),
                    CouponState::Expired => Err(CouponError::Expired),
                }
            }
            CouponCommand::Expire => {
                let (coupon, state) = self.issued.as_ref().ok_or(CouponError::NotFound)?;
                match state {
                    // Due work may run for a coupon that already ended: nothing to do.
                    // A held coupon expires when its order releases it.
                    CouponState::Held | CouponState::Redeemed | CouponState::Voided | CouponState::Expired => {
                        Ok(Vec::new())
                    }
                    CouponState::Active if now < coupon.valid_until => Err(CouponError::StillValid(coupon.valid_until)),
                    CouponState::Active => Ok(vec![CouponEvent::CouponExpired { expired_at: now }]),
                }
            }
            CouponCommand::HoldForOrder { order_id, member_id } => {
                if self.order == Some(order_id) && self.state() == Some(CouponState::Held) {
                    return Ok(Vec::new());
                }
                let coupon = self.active(now)?;
                // Another member's coupon is not theirs to see.
                if coupon.member_id != member_id {
                    return Err(CouponError::NotFound);
                }
                if now < coupon.valid_from {
                    return Err(CouponError::NotYetValid(coupon.valid_from));
                }
                Ok(vec![CouponEvent::CouponHeld { order_id, held_at: now }])
            }
            CouponCommand::UseOnOrder { order_id } => match (self.state(), self.order) {
                (Some(CouponState::Held), Some(held)) if held == order_id => {
                    Ok(vec![CouponEvent::CouponUsed { order_id, used_at: now }])
                }
                (Some(CouponState::Redeemed), Some(used)) if used == order_id => Ok(Vec::new()),
                (None, _) => Err(CouponError::NotFound),
                _ => Err(CouponError::NotHeldByOrder(order_id)),
            },
            CouponCommand::ReleaseFromOrder { order_id } => {
                let (coupon, state) = self.issued.as_ref().ok_or(CouponError::NotFound)?;
                match (state, self.order) {
                    (CouponState::Held, Some(held)) if held == order_id => {
                        Ok(Self::back(coupon, CouponEvent::CouponReleased { order_id, released_at: now }, now))
                    }
                    (CouponState::Redeemed, Some(used)) if used == order_id => Err(CouponError::AlreadyRedeemed),
                    // Never held by this order (or already released): nothing to give back.
                    _ => Ok(Vec::new()),
                }
            }
            CouponCommand::ReturnFromOrder { order_id } => {
                let (coupon, state) = self.issued.as_ref().ok_or(CouponError::NotFound)?;
                match (state, self.order) {
                    (CouponState::Redeemed, Some(used)) if used == order_id => {
                        Ok(Self::back(coupon, CouponEvent::CouponReturned { order_id, returned_at: now }, now))
                    }
                    (CouponState::Held, Some(held)) if held == order_id => {
                        Ok(Self::back(coupon, CouponEvent::CouponReleased { order_id, released_at: now }, now))
                    }
                    // Already back (or never used by this order).
                    _ => Ok(Vec::new()),
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
            CouponEvent::CouponHeld { order_id, .. } => {
                self.move_for_order(order_id, CouponState::Active, CouponState::Held)
            }
            CouponEvent::CouponUsed { order_id, .. } => {
                self.move_for_order(order_id, CouponState::Held, CouponState::Redeemed)
            }
            CouponEvent::CouponReleased { order_id, .. } => {
                self.move_for_order(order_id, CouponState::Held, CouponState::Active)
            }
            CouponEvent::CouponReturned { order_id, .. } => {
                self.move_for_order(order_id, CouponState::Redeemed, CouponState::Active)
            }
        }
    }

    fn tenant(&self) -> Option<&TenantId> {
        self.issued.as_ref().map(|(c, _)| &c.tenant_id)
    }
}

impl Coupon {
    pub fn state(&self) -> Option<CouponState> {
        self.issued.as_ref().map(|(_, s)| *s)
    }
}
