//! Who caused a change. Recorded on every ledger event.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ids::MemberId;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Actor {
    /// The member acting on their own account (member pages).
    Member { member_id: MemberId },
    /// A store staff member (counter operations).
    Staff { username: String },
    /// A merchant admin (admin console).
    Admin { username: String },
    /// A background job such as the scheduler.
    System { job: String },
    /// WeChat or WeChat Pay, through a verified callback.
    Wechat { source: String },
}

impl Actor {
    pub fn label(&self) -> String {
        match self {
            Actor::Member { member_id } => format!("member:{member_id}"),
            Actor::Staff { username } => format!("staff:{username}"),
            Actor::Admin { username } => format!("admin:{username}"),
            Actor::System { job } => format!("system:{job}"),
            Actor::Wechat { source } => format!("wechat:{source}"),
        }
    }
}
