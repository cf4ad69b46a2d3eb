//! Ledger operations on a member as a caller asks for them: the use-case
//! requests behind the admin API's points and cash routes (and the ledger
//! benchmark).
//!
//! A [`LedgerRequest`] is the one thing idempotency hashes for these
//! operations ([`execute`] hands it to the executor as the request): it is
//! tagged with the operation, so one key cannot be replayed across operations
//! whose fields happen to look alike, and it carries no server-made value
//! (time, actor, the key itself). Its serialized form is what stored
//! idempotency records were hashed from: changing a variant or field name, or
//! the order of fields, makes retries of earlier requests answer
//! `IdempotencyMismatch` (pinned by the tests below).
//!
//! Edges parse their input into the domain values a request holds (the
//! configured limits are theirs to check); past this point nothing re-checks.

use serde::Serialize;
use wxcm_domain::member::{CardLevel, ExpiryPolicy, MemberCommand, MemberEvent, PointsSource, Provenance};
use wxcm_domain::{Actor, AmountFen, IdempotencyKey, MemberId, PointsAmount, Reference, TenantId};

use crate::executor::{CommandContext, Outcome};
use crate::members::{self, MemberOpError};
use crate::ports::App;

/// A validated ledger operation on one member, tagged with the operation.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum LedgerRequest {
    /// Points granted by hand (source `manual`) as a new lot.
    PointsGrant {
        points: PointsAmount,
        expiry: ExpiryPolicy,
        reason: Reference,
        reference: Option<Reference>,
    },
    /// A correction taking points away, oldest lots first.
    PointsDeduction {
        points: PointsAmount,
        reason: Reference,
        reference: Option<Reference>,
    },
    /// Cash paid at the counter.
    CashDeposit {
        amount_fen: AmountFen,
        reason: Reference,
        reference: Option<Reference>,
    },
    /// A counter charge against the balance.
    CashCharge {
        amount_fen: AmountFen,
        reason: Reference,
        reference: Option<Reference>,
    },
    /// (Part of) an earlier counter charge given back, named by its sequence.
    CashRefund {
        charge_sequence: u64,
        amount_fen: AmountFen,
        reason: Reference,
        reference: Option<Reference>,
    },
    CardLevel {
        card_level: CardLevel,
        reason: Reference,
    },
}

impl LedgerRequest {
    /// The member command, with who asked and under which key.
    pub fn into_command(self, actor: Actor, idempotency_key: IdempotencyKey) -> MemberCommand {
        let provenance = |reason, reference| Provenance { actor, reason, reference, idempotency_key };
        match self {
            LedgerRequest::PointsGrant { points, expiry, reason, reference } => MemberCommand::GrantPoints {
                points,
                source: PointsSource::Manual,
                expiry,
                provenance: provenance(reason, reference),
            },
            LedgerRequest::PointsDeduction { points, reason, reference } => {
                MemberCommand::DeductPoints { points, provenance: provenance(reason, reference) }
            }
            LedgerRequest::CashDeposit { amount_fen, reason, reference } => {
                MemberCommand::DepositCash { amount_fen, provenance: provenance(reason, reference) }
            }
            LedgerRequest::CashCharge { amount_fen, reason, reference } => {
                MemberCommand::ChargeCash { amount_fen, provenance: provenance(reason, reference) }
            }
            LedgerRequest::CashRefund { charge_sequence, amount_fen, reason, reference } => {
                MemberCommand::RefundCharge { charge_sequence, amount_fen, provenance: provenance(reason, reference) }
            }
            LedgerRequest::CardLevel { card_level, reason } => {
                MemberCommand::SetCardLevel { card_level, provenance: provenance(reason, None) }
            }
        }
    }
}

/// Runs `request` on a member of `tenant` under `ctx`'s idempotency key; the
/// request (never the command) is what the key's fingerprint is taken of.
pub async fn execute(
    app: &App,
    tenant: &TenantId,
    member_id: MemberId,
    request: LedgerRequest,
    actor: Actor,
    ctx: &CommandContext,
) -> Result<Outcome<MemberEvent>, MemberOpError> {
    let command = request.clone().into_command(actor, ctx.idempotency_key.clone());
    members::execute(app, tenant, member_id, command, &request, ctx).await
}

#[cfg(test)]
mod tests {
    use wxcm_domain::member::Member;
    use wxcm_domain::EventSourced;

    use super::*;
    use crate::executor::request_hash;

    fn text(s: &str) -> Reference {
        Reference::parse(s).unwrap()
    }

    fn deposit(amount_fen: i64) -> LedgerRequest {
        LedgerRequest::CashDeposit {
            amount_fen: AmountFen::new(amount_fen).unwrap(),
            reason: text("counter"),
            reference: None,
        }
    }

    /// The serialized bytes stored idempotency records were hashed from; a change
    /// here turns every retry of an earlier request into a mismatch.
    #[test]
    fn the_hashed_form_is_stable() {
        let points = PointsAmount::new(5).unwrap();
        let amount_fen = AmountFen::new(10).unwrap();
        let cases = [
            (
                LedgerRequest::PointsGrant {
                    points,
                    expiry: ExpiryPolicy::Days { days: 30 },
                    reason: text("gift"),
                    reference: Some(text("ticket-1")),
                },
                r#"{"op":"points_grant","points":5,"expiry":{"kind":"days","days":30},"reason":"gift","reference":"ticket-1"}"#,
            ),
            (
                LedgerRequest::PointsDeduction { points, reason: text("fix"), reference: None },
                r#"{"op":"points_deduction","points":5,"reason":"fix","reference":null}"#,
            ),
            (deposit(10), r#"{"op":"cash_deposit","amount_fen":10,"reason":"counter","reference":null}"#),
            (
                LedgerRequest::CashCharge { amount_fen, reason: text("counter"), reference: None },
                r#"{"op":"cash_charge","amount_fen":10,"reason":"counter","reference":null}"#,
            ),
            (
                LedgerRequest::CashRefund { charge_sequence: 3, amount_fen, reason: text("r"), reference: None },
                r#"{"op":"cash_refund","charge_sequence":3,"amount_fen":10,"reason":"r","reference":null}"#,
            ),
            (
                LedgerRequest::CardLevel { card_level: CardLevel::parse("gold").unwrap(), reason: text("promo") },
                r#"{"op":"card_level","card_level":"gold","reason":"promo"}"#,
            ),
        ];
        for (request, expected) in cases {
            assert_eq!(serde_json::to_string(&request).unwrap(), expected);
        }
    }

    #[test]
    fn the_hash_names_the_operation_not_the_command() {
        let charge = LedgerRequest::CashCharge {
            amount_fen: AmountFen::new(10).unwrap(),
            reason: text("counter"),
            reference: None,
        };
        let id = MemberId::new_random().to_string();
        let hash = |r: &LedgerRequest| request_hash(Member::TYPE, &id, r).unwrap();
        assert_ne!(hash(&deposit(10)), hash(&charge));
        assert_eq!(hash(&deposit(10)), hash(&deposit(10)));
        assert_ne!(hash(&deposit(10)), hash(&deposit(11)));
    }

    #[test]
    fn commands_take_the_sign_from_the_operation() {
        let key = IdempotencyKey::parse("key-0001").unwrap();
        let actor = Actor::Staff { username: "amy".into() };
        let charge = LedgerRequest::CashCharge {
            amount_fen: AmountFen::new(10).unwrap(),
            reason: text("counter"),
            reference: None,
        };
        match charge.into_command(actor.clone(), key.clone()) {
            MemberCommand::ChargeCash { amount_fen, provenance } => {
                assert_eq!(amount_fen.get(), 10);
                assert_eq!(provenance.actor, actor);
                assert_eq!(provenance.idempotency_key, key);
                assert_eq!(provenance.reason.as_str(), "counter");
            }
            other => panic!("unexpected {other:?}"),
        }
        let grant = LedgerRequest::PointsGrant {
            points: PointsAmount::new(5).unwrap(),
            expiry: ExpiryPolicy::EndOfYear,
            reason: text("gift"),
            reference: Some(text("ticket-1")),
        };
        match grant.into_command(actor, key) {
            MemberCommand::GrantPoints { source, expiry, provenance, .. } => {
                assert_eq!(source, PointsSource::Manual);
                assert_eq!(expiry, ExpiryPolicy::EndOfYear);
                assert_eq!(provenance.reference.unwrap().as_str(), "ticket-1");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
