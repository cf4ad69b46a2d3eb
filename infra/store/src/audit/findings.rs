//! Findings: a violation names its stream, sequence, kind and (for refused events) the broken rule.

use std::fmt;

use serde::Serialize;
use wxcm_domain::InvariantViolation;

use crate::hashchain::{ChainViolation, StoredEvent};

/// One finding, named by stream and (when it concerns one row) sequence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// `aggregate_type/aggregate_id`.
    pub stream: String,
    pub sequence: Option<i64>,
    /// Stable snake_case name: a [`hashchain::ViolationKind::code`] or one of the replay codes.
    pub code: &'static str,
    /// The domain rule the event breaks (e.g. `member.balance_after`) when the
    /// aggregate refuses it; replay stops at that event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<&'static str>,
    pub message: String,
}

impl Violation {
    pub fn at(event: &StoredEvent, code: &'static str, message: String) -> Self {
        Violation { stream: stream_name(event), sequence: Some(event.sequence), code, rule: None, message }
    }

    /// An event the aggregate refuses.
    pub fn refused(event: &StoredEvent, code: &'static str, broken: &InvariantViolation) -> Self {
        let message = format!("replay failed at seq {}: {broken}; later events not replayed", event.sequence);
        Violation { rule: Some(broken.rule), ..Violation::at(event, code, message) }
    }
}

impl From<ChainViolation> for Violation {
    fn from(v: ChainViolation) -> Self {
        Violation {
            stream: format!("{}/{}", v.aggregate_type, v.aggregate_id),
            sequence: Some(v.sequence),
            code: v.kind.code(),
            rule: None,
            message: v.kind.to_string(),
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.sequence {
            Some(sequence) => write!(f, "{} seq {sequence}: {}", self.stream, self.message),
            None => write!(f, "{}: {}", self.stream, self.message),
        }
    }
}

pub fn stream_name(event: &StoredEvent) -> String {
    format!("{}/{}", event.aggregate_type, event.aggregate_id)
}
