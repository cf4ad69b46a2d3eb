//! The coupon template aggregate: an offer's terms, its switch and its stock.
//!
//! Issuing is decided here for many coupons at once ([`CouponTemplate::decide_issues`]):
//! one event per decision carries every coupon it grants, so a hot template
//! commits one event for a whole batch of concurrent claims.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{rules, CouponId, CouponTerms, Stock, TemplateId, ISSUES_PER_EVENT_MAX, STOCK_MAX};
use crate::invariant::{ensure, ensure_figure};
use crate::member::CardLevel;
use crate::{Actor, DomainEventMeta, EventSourced, InvariantViolation, MemberId, TenantId};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("coupon template not found")]
    NotFound,
    #[error("coupon template already exists")]
    AlreadyExists,
    #[error("invalid coupon terms: {0}")]
    InvalidTerms(&'static str),
    #[error("stock of {requested} is below the {issued} already issued")]
    StockBelowIssued { requested: u32, issued: u64 },
    #[error("stock must be 1..={STOCK_MAX}")]
    InvalidStock,
    #[error("coupon template is already {0}")]
    SameSwitch(&'static str),
    #[error("{0}")]
    Refused(IssueRefusal),
    #[error("an issue decision carries 1..={ISSUES_PER_EVENT_MAX} coupons")]
    BatchSize,
}

/// Why one coupon of a batch was not issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum IssueRefusal {
    #[error("sold out")]
    SoldOut,
    #[error("coupon template is disabled")]
    Disabled,
    #[error("the coupon's validity window has ended")]
    WindowEnded,
    #[error("the member's card level may not claim this coupon")]
    NotInAudience,
    #[error("the member has claimed this coupon as often as allowed")]
    LimitReached,
}

impl IssueRefusal {
    /// Stable name, as API error codes and report keys use it.
    pub fn code(self) -> &'static str {
        match self {
            IssueRefusal::SoldOut => "sold_out",
            IssueRefusal::Disabled => "template_disabled",
            IssueRefusal::WindowEnded => "window_ended",
            IssueRefusal::NotInAudience => "not_in_audience",
            IssueRefusal::LimitReached => "limit_reached",
        }
    }
}

/// One coupon someone asks the template for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IssueAsk {
    pub coupon_id: CouponId,
    pub member_id: MemberId,
    /// The member's card level, checked against the audience (claims only;
    /// `None` for an operator's grant, which neither the audience nor the
    /// per-member limit restricts).
    pub card_level: Option<CardLevel>,
    /// A claim's slot (the member's n-th claim) under a per-member limit,
    /// chosen from terms read earlier: refused when beyond the current limit.
    pub claim_ordinal: Option<u16>,
}

/// One coupon granted by an issue decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IssueGrant {
    pub coupon_id: CouponId,
    pub member_id: MemberId,
    /// 1-based position among the template's issues.
    pub serial: u64,
}

/// The outcome of deciding a batch: the event (when anything was granted)
/// and, per ask in order, its grant or refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueBatch {
    pub event: Option<TemplateEvent>,
    pub outcomes: Vec<Result<IssueGrant, IssueRefusal>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum TemplateCommand {
    Create {
        template_id: TemplateId,
        tenant_id: TenantId,
        terms: CouponTerms,
        stock: Stock,
        actor: Actor,
    },
    Edit {
        terms: CouponTerms,
        actor: Actor,
    },
    SetStock {
        stock: Stock,
        actor: Actor,
    },
    Enable {
        actor: Actor,
    },
    Disable {
        actor: Actor,
    },
    /// Whether every newly registered member gets one of these (as an operator grant).
    SetWelcome {
        on: bool,
        actor: Actor,
    },
    Issue {
        asks: Vec<IssueAsk>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TemplateEvent {
    CouponTemplateCreated {
        template_id: TemplateId,
        tenant_id: TenantId,
        terms: CouponTerms,
        stock: Stock,
        actor: Actor,
        created_at: DateTime<Utc>,
    },
    CouponTemplateEdited {
        terms: CouponTerms,
        actor: Actor,
        edited_at: DateTime<Utc>,
    },
    CouponStockSet {
        stock: Stock,
        actor: Actor,
        set_at: DateTime<Utc>,
    },
    CouponTemplateSwitched {
        enabled: bool,
        actor: Actor,
        switched_at: DateTime<Utc>,
    },
    CouponWelcomeSet {
        on: bool,
        actor: Actor,
        set_at: DateTime<Utc>,
    },
    CouponsIssued {
        grants: Vec<IssueGrant>,
        /// Coupons the template has issued, these included.
        issued_after: u64,
        issued_at: DateTime<Utc>,
    },
}

impl DomainEventMeta for TemplateEvent {
    fn event_type(&self) -> &'static str {
        match self {
            TemplateEvent::CouponTemplateCreated { .. } => "CouponTemplateCreated",
            TemplateEvent::CouponTemplateEdited { .. } => "CouponTemplateEdited",
            TemplateEvent::CouponStockSet { .. } => "CouponStockSet",
            TemplateEvent::CouponTemplateSwitched { .. } => "CouponTemplateSwitched",
            TemplateEvent::CouponWelcomeSet { .. } => "CouponWelcomeSet",
            TemplateEvent::CouponsIssued { .. } => "CouponsIssued",
        }
    }
    fn event_version(&self) -> &'static str {
        "1"
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CouponTemplate {
    pub created: Option<TemplateState>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateState {
    pub template_id: TemplateId,
    pub tenant_id: TenantId,
    pub terms: CouponTerms,
    pub stock: Stock,
    pub enabled: bool,
    pub issued: u64,
    pub created_at: DateTime<Utc>,
    /// Given to every newly registered member.
    #[serde(default)]
    pub welcome: bool,
}

impl TemplateState {
    /// Coupons still to issue; `None` for an unlimited stock.
    pub fn stock_left(&self) -> Option<u64> {
        match self.stock {
            Stock::Finite { total } => Some(u64::from(total).saturating_sub(self.issued)),
            Stock::Unlimited => None,
        }
    }
}

fn switch(
    state: &TemplateState,
    enabled: bool,
    actor: Actor,
    now: DateTime<Utc>,
) -> Result<Vec<TemplateEvent>, TemplateError> {
    if state.enabled == enabled {
        return Err(TemplateError::SameSwitch(if enabled { "enabled" } else { "disabled" }));
    }
    Ok(vec![TemplateEvent::CouponTemplateSwitched { enabled, actor, switched_at: now }])
}

fn check_stock(stock: Stock) -> Result<(), TemplateError> {
    match stock {
        Stock::Finite { total } if total == 0 || total > STOCK_MAX => Err(TemplateError::InvalidStock),
        _ => Ok(()),
    }
}

impl CouponTemplate {
    fn state(&self) -> Result<&TemplateState, TemplateError> {
        self.created.as_ref().ok_or(TemplateError::NotFound)
    }

    /// Decides a batch of asks in order: each is granted while stock lasts
    /// and its member is in the audience; the rest are refused with a reason.
    pub fn decide_issues(&self, asks: &[IssueAsk], now: DateTime<Utc>) -> Result<IssueBatch, TemplateError> {
        let state = self.state()?;
        if asks.is_empty() || asks.len() > ISSUES_PER_EVENT_MAX {
            return Err(TemplateError::BatchSize);
        }
        let refuse_all = |why| IssueBatch { event: None, outcomes: asks.iter().map(|_| Err(why)).collect() };
        if !state.enabled {
            return Ok(refuse_all(IssueRefusal::Disabled));
        }
        if let super::Validity::Window { until, .. } = state.terms.validity {
            if now >= until {
                return Ok(refuse_all(IssueRefusal::WindowEnded));
            }
        }
        let mut issued = state.issued;
        let mut grants = Vec::new();
        let mut outcomes = Vec::with_capacity(asks.len());
        for ask in asks {
            let in_audience = ask.card_level.as_ref().is_none_or(|level| state.terms.audience.admits(level));
            let is_claim = ask.card_level.is_some();
            let beyond_limit = match (state.terms.per_member_limit, ask.claim_ordinal) {
                (Some(limit), Some(ordinal)) => ordinal == 0 || ordinal > limit,
                // A slot chosen while the template had no limit.
                (Some(_), None) => is_claim,
                (None, _) => false,
            };
            let outcome = if !in_audience {
                Err(IssueRefusal::NotInAudience)
            } else if beyond_limit {
                Err(IssueRefusal::LimitReached)
            } else if matches!(state.stock, Stock::Finite { total } if issued >= u64::from(total)) {
                Err(IssueRefusal::SoldOut)
            } else if grants.iter().any(|g: &IssueGrant| g.coupon_id == ask.coupon_id) {
                // The same stream twice in one decision: the caller's slot logic failed.
                Err(IssueRefusal::LimitReached)
            } else {
                issued += 1;
                let grant = IssueGrant { coupon_id: ask.coupon_id, member_id: ask.member_id, serial: issued };
                grants.push(grant.clone());
                Ok(grant)
            };
            outcomes.push(outcome);
        }
        let event = (!grants.is_empty()).then_some(TemplateEvent::CouponsIssued {
            grants,
            issued_after: issued,
            issued_at: now,
        });
        Ok(IssueBatch { event, outcomes })
    }
}

impl EventSourced for CouponTemplate {
    const TYPE: &'static str = "coupon_template";
    const STATE_VERSION: i32 = 1;
    type Command = TemplateCommand;
    type Event = TemplateEvent;
    type Error = TemplateError;

    fn handle(&self, command: TemplateCommand, now: DateTime<Utc>) -> Result<Vec<TemplateEvent>, TemplateError> {
        match command {
            TemplateCommand::Create { template_id, tenant_id, terms, stock, actor } => {
                if self.created.is_some() {
                    return Err(TemplateError::AlreadyExists);
                }
                terms.check()?;
                check_stock(stock)?;
                Ok(vec![TemplateEvent::CouponTemplateCreated {
                    template_id,
                    tenant_id,
                    terms,
                    stock,
                    actor,
                    created_at: now,
                }])
            }
            TemplateCommand::Edit { terms, actor } => {
                self.state()?;
                terms.check()?;
                Ok(vec![TemplateEvent::CouponTemplateEdited { terms, actor, edited_at: now }])
            }
            TemplateCommand::SetStock { stock, actor } => {
                let state = self.state()?;
                check_stock(stock)?;
                if let Stock::Finite { total } = stock {
                    if u64::from(total) < state.issued {
                        return Err(TemplateError::StockBelowIssued { requested: total, issued: state.issued });
                    }
                }
                Ok(vec![TemplateEvent::CouponStockSet { stock, actor, set_at: now }])
            }
            TemplateCommand::SetWelcome { on, actor } => {
                let state = self.state()?;
                if state.welcome == on {
                    return Err(TemplateError::SameSwitch(if on {
                        "a welcome coupon"
                    } else {
                        "not a welcome coupon"
                    }));
                }
                Ok(vec![TemplateEvent::CouponWelcomeSet { on, actor, set_at: now }])
            }
            TemplateCommand::Enable { actor } => switch(self.state()?, true, actor, now),
            TemplateCommand::Disable { actor } => switch(self.state()?, false, actor, now),
            TemplateCommand::Issue { asks } => {
                let batch = self.decide_issues(&asks, now)?;
                match batch.event {
                    Some(event) => Ok(vec![event]),
                    None => {
                        let why = batch.outcomes.into_iter().find_map(Result::err).unwrap_or(IssueRefusal::SoldOut);
                        Err(TemplateError::Refused(why))
                    }
                }
            }
        }
    }

    fn apply(&mut self, event: &TemplateEvent) -> Result<(), InvariantViolation> {
        match event {
            TemplateEvent::CouponTemplateCreated { template_id, tenant_id, terms, stock, created_at, .. } => {
                ensure(self.created.is_none(), rules::TEMPLATE_CREATED_ONCE, || "created twice".into())?;
                self.created = Some(TemplateState {
                    template_id: *template_id,
                    tenant_id: tenant_id.clone(),
                    terms: terms.clone(),
                    stock: *stock,
                    enabled: true,
                    issued: 0,
                    created_at: *created_at,
                    welcome: false,
                });
            }
            TemplateEvent::CouponTemplateEdited { terms, .. } => self.existing()?.terms = terms.clone(),
            TemplateEvent::CouponStockSet { stock, .. } => {
                let state = self.existing()?;
                if let Stock::Finite { total } = stock {
                    ensure(u64::from(*total) >= state.issued, rules::STOCK_COVERS_ISSUED, || {
                        format!("stock {total} below {} issued", state.issued)
                    })?;
                }
                state.stock = *stock;
            }
            TemplateEvent::CouponTemplateSwitched { enabled, .. } => self.existing()?.enabled = *enabled,
            TemplateEvent::CouponWelcomeSet { on, .. } => self.existing()?.welcome = *on,
            TemplateEvent::CouponsIssued { grants, issued_after, .. } => {
                let state = self.existing()?;
                let issued = state.issued + grants.len() as u64;
                ensure_figure(rules::ISSUED_AFTER, "issued_after", *issued_after, issued)?;
                for (i, grant) in grants.iter().enumerate() {
                    ensure_figure(rules::ISSUED_AFTER, "serial", grant.serial, state.issued + i as u64 + 1)?;
                }
                if let Stock::Finite { total } = state.stock {
                    ensure(issued <= u64::from(total), rules::ISSUED_WITHIN_STOCK, || {
                        format!("{issued} issued of a stock of {total}")
                    })?;
                }
                state.issued = issued;
            }
        }
        Ok(())
    }

    fn tenant(&self) -> Option<&TenantId> {
        self.created.as_ref().map(|s| &s.tenant_id)
    }
}

impl CouponTemplate {
    fn existing(&mut self) -> Result<&mut TemplateState, InvariantViolation> {
        self.created
            .as_mut()
            .ok_or_else(|| InvariantViolation::new(rules::TEMPLATE_EXISTS, "event before the template was created"))
    }
}
