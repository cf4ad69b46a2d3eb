//! The distributor aggregate: one member's standing as a distributor and its
//! history (applied, approved or rejected with a reason, enrolled, designated,
//! suspended, reinstated). Decisions use [`decide_enrolment`] and
//! [`change_standing`]; `apply` checks the same transitions again.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::binding::{change_standing, decide_enrolment, DistributorStanding, Enrolment, EnrolmentPolicy};
use super::binding::{EnrolmentRefusal, StandingChange};
use super::{rules, DistributorLevelCode};
use crate::invariant::ensure;
use crate::{Actor, AmountFen, DomainEventMeta, EventSourced, InvariantViolation, MemberId, Reference, TenantId};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DistributorError {
    #[error(transparent)]
    Enrolment(#[from] EnrolmentRefusal),
    #[error("not possible while the distributor is {0:?}")]
    Standing(DistributorStanding),
    #[error("the stream belongs to another tenant or member")]
    WrongMember,
}

/// How a member became a distributor without an application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum EnrolmentRoute {
    /// The tenant makes everyone a distributor.
    Everyone,
    /// Paid at least the threshold (cash, net of refunds).
    SpendingThreshold {
        threshold_fen: AmountFen,
        #[schemars(range(min = 0))]
        paid_net_fen: i64,
    },
    /// An admin designated them.
    Designated,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum DistributorCommand {
    /// The member asks, under the tenant's policy (`paid_net_fen`: cash paid
    /// on orders less refunds, for a spending threshold).
    Apply {
        tenant_id: TenantId,
        member_id: MemberId,
        policy: EnrolmentPolicy,
        paid_net_fen: i64,
        actor: Actor,
    },
    Approve {
        actor: Actor,
    },
    Reject {
        reason: Reference,
        actor: Actor,
    },
    Designate {
        tenant_id: TenantId,
        member_id: MemberId,
        actor: Actor,
    },
    Suspend {
        reason: Reference,
        actor: Actor,
    },
    Reinstate {
        actor: Actor,
    },
    /// Sets the distributor's level in the tenant's catalog (`None`: no
    /// level, the tenant's default rates apply). The application checks the
    /// code is in the catalog; the same level again changes nothing.
    SetLevel {
        level: Option<DistributorLevelCode>,
        actor: Actor,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DistributorEvent {
    DistributorApplied {
        tenant_id: TenantId,
        member_id: MemberId,
        actor: Actor,
        applied_at: DateTime<Utc>,
    },
    DistributorEnrolled {
        tenant_id: TenantId,
        member_id: MemberId,
        route: EnrolmentRoute,
        actor: Actor,
        enrolled_at: DateTime<Utc>,
    },
    DistributorApproved {
        actor: Actor,
        approved_at: DateTime<Utc>,
    },
    DistributorRejected {
        reason: Reference,
        actor: Actor,
        rejected_at: DateTime<Utc>,
    },
    DistributorSuspended {
        reason: Reference,
        actor: Actor,
        suspended_at: DateTime<Utc>,
    },
    DistributorReinstated {
        actor: Actor,
        reinstated_at: DateTime<Utc>,
    },
    DistributorLevelSet {
        level: Option<DistributorLevelCode>,
        previous: Option<DistributorLevelCode>,
        actor: Actor,
        set_at: DateTime<Utc>,
    },
}

impl DomainEventMeta for DistributorEvent {
    fn event_type(&self) -> &'static str {
        match self {
            DistributorEvent::DistributorApplied { .. } => "DistributorApplied",
            DistributorEvent::DistributorEnrolled { .. } => "DistributorEnrolled",
            DistributorEvent::DistributorApproved { .. } => "DistributorApproved",
            DistributorEvent::DistributorRejected { .. } => "DistributorRejected",
            DistributorEvent::DistributorSuspended { .. } => "DistributorSuspended",
            DistributorEvent::DistributorReinstated { .. } => "DistributorReinstated",
            DistributorEvent::DistributorLevelSet { .. } => "DistributorLevelSet",
        }
    }
    fn event_version(&self) -> &'static str {
        "1"
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Distributor {
    pub member: Option<(TenantId, MemberId)>,
    pub standing: DistributorStanding,
    /// The distributor's level in the tenant's catalog.
    #[serde(default)]
    pub level: Option<DistributorLevelCode>,
}

impl Default for Distributor {
    fn default() -> Self {
        Self { member: None, standing: DistributorStanding::NotDistributor, level: None }
    }
}

impl Distributor {
    pub fn is_active(&self) -> bool {
        self.standing == DistributorStanding::Active
    }

    fn same_member(&self, tenant_id: &TenantId, member_id: MemberId) -> Result<(), DistributorError> {
        match &self.member {
            Some((t, m)) if t != tenant_id || *m != member_id => Err(DistributorError::WrongMember),
            _ => Ok(()),
        }
    }

    fn change(&self, change: StandingChange) -> Result<(), DistributorError> {
        change_standing(self.standing, change).map(|_| ()).ok_or(DistributorError::Standing(self.standing))
    }

    fn move_to(&mut self, change: StandingChange) -> Result<(), InvariantViolation> {
        let next = change_standing(self.standing, change);
        ensure(self.member.is_some() && next.is_some(), rules::DISTRIBUTOR_STANDING, || {
            format!("{change:?} while {:?}", self.standing)
        })?;
        self.standing = next.unwrap_or(self.standing);
        Ok(())
    }

    fn enter(
        &mut self,
        tenant_id: &TenantId,
        member_id: MemberId,
        from: &[DistributorStanding],
        to: DistributorStanding,
    ) -> Result<(), InvariantViolation> {
        let same = self.member.as_ref().is_none_or(|(t, m)| t == tenant_id && *m == member_id);
        ensure(same && from.contains(&self.standing), rules::DISTRIBUTOR_STANDING, || {
            format!("{:?} → {to:?} for {member_id}", self.standing)
        })?;
        self.member = Some((tenant_id.clone(), member_id));
        self.standing = to;
        Ok(())
    }
}

impl EventSourced for Distributor {
    const TYPE: &'static str = "distributor";
    const STATE_VERSION: i32 = 1;
    type Command = DistributorCommand;
    type Event = DistributorEvent;
    type Error = DistributorError;

    fn handle(&self, command: Self::Command, now: DateTime<Utc>) -> Result<Vec<Self::Event>, Self::Error> {
        use DistributorCommand as C;
        use DistributorEvent as E;
        let event = match command {
            C::Apply { tenant_id, member_id, policy, paid_net_fen, actor } => {
                self.same_member(&tenant_id, member_id)?;
                match decide_enrolment(policy, self.standing, paid_net_fen)? {
                    Enrolment::AwaitsApproval => E::DistributorApplied { tenant_id, member_id, actor, applied_at: now },
                    Enrolment::Enrolled => {
                        let route = match policy {
                            EnrolmentPolicy::SpendingThreshold { paid_fen } => {
                                EnrolmentRoute::SpendingThreshold { threshold_fen: paid_fen, paid_net_fen }
                            }
                            _ => EnrolmentRoute::Everyone,
                        };
                        E::DistributorEnrolled { tenant_id, member_id, route, actor, enrolled_at: now }
                    }
                }
            }
            C::Designate { tenant_id, member_id, actor } => {
                self.same_member(&tenant_id, member_id)?;
                self.change(StandingChange::Designate)?;
                E::DistributorEnrolled {
                    tenant_id,
                    member_id,
                    route: EnrolmentRoute::Designated,
                    actor,
                    enrolled_at: now,
                }
            }
            C::Approve { actor } => {
                self.change(StandingChange::Approve)?;
                E::DistributorApproved { actor, approved_at: now }
            }
            C::Reject { reason, actor } => {
                self.change(StandingChange::Reject)?;
                E::DistributorRejected { reason, actor, rejected_at: now }
            }
            C::Suspend { reason, actor } => {
                self.change(StandingChange::Suspend)?;
                E::DistributorSuspended { reason, actor, suspended_at: now }
            }
            C::Reinstate { actor } => {
                self.change(StandingChange::Reinstate)?;
                E::DistributorReinstated { actor, reinstated_at: now }
            }
            C::SetLevel { level, actor } => {
                if self.member.is_none() || self.standing == DistributorStanding::NotDistributor {
                    return Err(DistributorError::Standing(self.standing));
                }
                if level == self.level {
                    return Ok(Vec::new());
                }
                E::DistributorLevelSet { level, previous: self.level.clone(), actor, set_at: now }
            }
        };
        Ok(vec![event])
    }

    fn apply(&mut self, event: &Self::Event) -> Result<(), InvariantViolation> {
        use DistributorEvent as E;
        use DistributorStanding as S;
        match event {
            E::DistributorApplied { tenant_id, member_id, .. } => {
                self.enter(tenant_id, *member_id, &[S::NotDistributor, S::Rejected], S::Applied)
            }
            E::DistributorEnrolled { tenant_id, member_id, .. } => {
                self.enter(tenant_id, *member_id, &[S::NotDistributor, S::Applied, S::Rejected], S::Active)
            }
            E::DistributorApproved { .. } => self.move_to(StandingChange::Approve),
            E::DistributorRejected { .. } => self.move_to(StandingChange::Reject),
            E::DistributorSuspended { .. } => self.move_to(StandingChange::Suspend),
            E::DistributorReinstated { .. } => self.move_to(StandingChange::Reinstate),
            E::DistributorLevelSet { level, previous, .. } => {
                ensure(self.member.is_some() && *previous == self.level, rules::DISTRIBUTOR_STANDING, || {
                    format!("level {previous:?} → {level:?} while {:?} at {:?}", self.standing, self.level)
                })?;
                self.level = level.clone();
                Ok(())
            }
        }
    }

    fn tenant(&self) -> Option<&TenantId> {
        self.member.as_ref().map(|(t, _)| t)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use uuid::Uuid;

    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 5, 10, 0, 0).unwrap()
    }
    fn tenant() -> TenantId {
        TenantId::parse("acme").unwrap()
    }
    fn member() -> MemberId {
        MemberId::from_uuid(Uuid::from_u128(1))
    }
    fn admin() -> Actor {
        Actor::Admin { username: "boss".into() }
    }
    fn apply_cmd(policy: EnrolmentPolicy, paid_net_fen: i64) -> DistributorCommand {
        DistributorCommand::Apply {
            tenant_id: tenant(),
            member_id: member(),
            policy,
            paid_net_fen,
            actor: Actor::Member { member_id: member() },
        }
    }
    fn reason(s: &str) -> Reference {
        Reference::parse(s).unwrap()
    }

    fn run(commands: Vec<DistributorCommand>) -> Result<Distributor, DistributorError> {
        let mut d = Distributor::default();
        for c in commands {
            for e in d.handle(c, now())? {
                d.apply(&e).unwrap();
            }
        }
        Ok(d)
    }

    #[test]
    fn an_application_is_approved_or_rejected_with_a_reason_and_may_be_made_again() {
        use DistributorCommand as C;
        let applied = run(vec![apply_cmd(EnrolmentPolicy::Application, 0)]).unwrap();
        assert_eq!(applied.standing, DistributorStanding::Applied);
        let approved = run(vec![apply_cmd(EnrolmentPolicy::Application, 0), C::Approve { actor: admin() }]).unwrap();
        assert!(approved.is_active());
        let rejected = run(vec![
            apply_cmd(EnrolmentPolicy::Application, 0),
            C::Reject { reason: reason("incomplete profile"), actor: admin() },
        ])
        .unwrap();
        assert_eq!(rejected.standing, DistributorStanding::Rejected);
        let events = rejected.handle(apply_cmd(EnrolmentPolicy::Application, 0), now()).unwrap();
        assert!(matches!(events[0], DistributorEvent::DistributorApplied { .. }));
        assert_eq!(
            run(vec![C::Approve { actor: admin() }]),
            Err(DistributorError::Standing(DistributorStanding::NotDistributor))
        );
    }

    #[test]
    fn everyone_threshold_and_designation_enrol_at_once() {
        let everyone = run(vec![apply_cmd(EnrolmentPolicy::Everyone, 0)]).unwrap();
        assert!(everyone.is_active());
        let threshold = EnrolmentPolicy::SpendingThreshold { paid_fen: AmountFen::new(5_000).unwrap() };
        assert_eq!(
            run(vec![apply_cmd(threshold, 4_999)]),
            Err(DistributorError::Enrolment(EnrolmentRefusal::BelowThreshold { missing_fen: 1 }))
        );
        let events = Distributor::default().handle(apply_cmd(threshold, 5_000), now()).unwrap();
        let DistributorEvent::DistributorEnrolled { route, .. } = &events[0] else { panic!() };
        assert_eq!(
            *route,
            EnrolmentRoute::SpendingThreshold { threshold_fen: AmountFen::new(5_000).unwrap(), paid_net_fen: 5_000 }
        );
        assert_eq!(
            run(vec![apply_cmd(EnrolmentPolicy::Designation, 0)]),
            Err(DistributorError::Enrolment(EnrolmentRefusal::DesignationOnly))
        );
        let designate = DistributorCommand::Designate { tenant_id: tenant(), member_id: member(), actor: admin() };
        assert!(run(vec![designate]).unwrap().is_active());
    }

    #[test]
    fn a_distributor_is_suspended_and_reinstated() {
        use DistributorCommand as C;
        let suspended = run(vec![
            apply_cmd(EnrolmentPolicy::Everyone, 0),
            C::Suspend { reason: reason("fraud review"), actor: admin() },
        ])
        .unwrap();
        assert_eq!(suspended.standing, DistributorStanding::Suspended);
        assert_eq!(
            suspended.handle(apply_cmd(EnrolmentPolicy::Everyone, 0), now()),
            Err(DistributorError::Enrolment(EnrolmentRefusal::Suspended))
        );
        let events = suspended.handle(C::Reinstate { actor: admin() }, now()).unwrap();
        let mut reinstated = suspended.clone();
        reinstated.apply(&events[0]).unwrap();
        assert!(reinstated.is_active());
        assert!(reinstated.handle(C::Reinstate { actor: admin() }, now()).is_err());
    }

    #[test]
    fn given_a_distributor_when_an_admin_sets_a_level_then_it_is_recorded_with_the_previous_one() {
        use DistributorCommand as C;
        let gold = DistributorLevelCode::parse("gold").unwrap();
        let set = |level: Option<&DistributorLevelCode>| C::SetLevel { level: level.cloned(), actor: admin() };
        // Given an active distributor, when set to gold, then the event names no previous level.
        let d = run(vec![apply_cmd(EnrolmentPolicy::Everyone, 0), set(Some(&gold))]).unwrap();
        assert_eq!(d.level, Some(gold.clone()));
        // The same level again changes nothing; clearing names gold as the previous level.
        assert_eq!(d.handle(set(Some(&gold)), now()), Ok(vec![]));
        let events = d.handle(set(None), now()).unwrap();
        assert_eq!(
            events,
            vec![DistributorEvent::DistributorLevelSet {
                level: None,
                previous: Some(gold.clone()),
                actor: admin(),
                set_at: now()
            }]
        );
        // A suspended distributor keeps (and may change) a level; a non-distributor has none.
        let suspended = run(vec![
            apply_cmd(EnrolmentPolicy::Everyone, 0),
            C::Suspend { reason: reason("review"), actor: admin() },
            set(Some(&gold)),
        ])
        .unwrap();
        assert_eq!(suspended.level, Some(gold.clone()));
        assert_eq!(
            Distributor::default().handle(set(Some(&gold)), now()),
            Err(DistributorError::Standing(DistributorStanding::NotDistributor))
        );
        // Apply refuses a level change that does not follow the stream.
        let mut fresh = run(vec![apply_cmd(EnrolmentPolicy::Everyone, 0)]).unwrap();
        let wrong =
            DistributorEvent::DistributorLevelSet { level: None, previous: Some(gold), actor: admin(), set_at: now() };
        assert_eq!(fresh.apply(&wrong).unwrap_err().rule, rules::DISTRIBUTOR_STANDING);
    }

    #[test]
    fn the_stream_serves_one_member_and_apply_refuses_impossible_steps() {
        let d = run(vec![apply_cmd(EnrolmentPolicy::Application, 0)]).unwrap();
        let other = DistributorCommand::Designate {
            tenant_id: tenant(),
            member_id: MemberId::from_uuid(Uuid::from_u128(2)),
            actor: admin(),
        };
        assert_eq!(d.handle(other, now()), Err(DistributorError::WrongMember));
        assert_eq!(d.tenant(), Some(&tenant()));
        let mut fresh = Distributor::default();
        let approved = DistributorEvent::DistributorApproved { actor: admin(), approved_at: now() };
        assert_eq!(fresh.apply(&approved).unwrap_err().rule, rules::DISTRIBUTOR_STANDING);
        let mut active = run(vec![apply_cmd(EnrolmentPolicy::Everyone, 0)]).unwrap();
        let applied = DistributorEvent::DistributorApplied {
            tenant_id: tenant(),
            member_id: member(),
            actor: admin(),
            applied_at: now(),
        };
        assert_eq!(active.apply(&applied).unwrap_err().rule, rules::DISTRIBUTOR_STANDING);
    }
}
