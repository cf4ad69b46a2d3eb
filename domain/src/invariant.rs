//! Broken invariants: what `apply` returns for an event that cannot follow the
//! state it is applied to.
//!
//! `handle` refuses what must never happen; `apply` checks it again (paired
//! checks) and recomputes every figure an event states (balances after,
//! totals). A violation therefore means a corrupted or inconsistent stream, or
//! a `handle` that disagrees with `apply`: never a client's mistake. Callers
//! name the stream and sequence; the domain names the rule.

use std::fmt;

/// An event that breaks a rule of its aggregate. The state it was applied to
/// is unspecified afterwards and must be discarded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invariant {rule} broken: {detail}")]
pub struct InvariantViolation {
    /// Stable name, `<aggregate>.<rule>` (see each aggregate's `rules` module).
    pub rule: &'static str,
    pub detail: String,
}

impl InvariantViolation {
    pub fn new(rule: &'static str, detail: impl Into<String>) -> Self {
        Self { rule, detail: detail.into() }
    }
}

/// `Ok` when `holds`; the detail is only built for a violation.
pub fn ensure(holds: bool, rule: &'static str, detail: impl FnOnce() -> String) -> Result<(), InvariantViolation> {
    if holds {
        Ok(())
    } else {
        Err(InvariantViolation::new(rule, detail()))
    }
}

/// A figure the event states against the one the state recomputes.
pub fn ensure_figure<V: PartialEq + fmt::Display>(
    rule: &'static str,
    field: &str,
    stated: V,
    recomputed: V,
) -> Result<(), InvariantViolation> {
    ensure(stated == recomputed, rule, || format!("{field} is {stated} but the state gives {recomputed}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_violation_names_its_rule_and_what_broke_it() {
        assert_eq!(ensure(true, "x.rule", || unreachable!()), Ok(()));
        let broken = ensure_figure("member.balance_after", "balance_after_fen", 5, 7).unwrap_err();
        assert_eq!(broken.rule, "member.balance_after");
        assert_eq!(
            broken.to_string(),
            "invariant member.balance_after broken: balance_after_fen is 5 but the state gives 7"
        );
    }
}
