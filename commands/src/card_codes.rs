//! Member card codes: what a member's card QR holds, for the staff console to
//! scan. `wxcm:card:<tenant>:<member>:<expires unix s>:<mac>`, the MAC an
//! HMAC-SHA256 (128 bits kept) under a key only this deployment has
//! ([`SecretSealer::mac`](crate::ports::SecretSealer::mac)). A code lives
//! [`CARD_CODE_TTL_SECS`]: a screenshot is soon useless, and no code can be
//! made for another member or tenant without the key.

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;
use wxcm_domain::{MemberId, TenantId};

use crate::members::{self, MemberOpError, MemberView};
use crate::App;

pub const CARD_CODE_PREFIX: &str = "wxcm:card:";
pub const CARD_CODE_TTL_SECS: i64 = 300;
/// A scanned payload's length at most.
pub const CARD_CODE_BYTES_MAX: usize = 160;
const MAC_PURPOSE: &str = "member-card-code.v1";
const MAC_BYTES: usize = 16;

#[derive(Debug, Clone, Serialize)]
pub struct CardCode {
    pub payload: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum CardCodeError {
    #[error("not a member card code")]
    Malformed,
    #[error("this card code belongs to another merchant")]
    OtherTenant,
    #[error("the card code has expired; ask the member to refresh it")]
    Expired,
    #[error("the card code is not genuine")]
    Forged,
    #[error(transparent)]
    Member(#[from] MemberOpError),
}

fn mac(app: &App, tenant: &TenantId, member: &str, expires: i64) -> Result<String, MemberOpError> {
    let data = format!("{}\u{1f}{member}\u{1f}{expires}", tenant.as_str());
    let full = app.sealer.mac(MAC_PURPOSE, data.as_bytes())?;
    Ok(hex::encode(&full[..MAC_BYTES]))
}

/// A fresh code for the member's card.
pub async fn issue(app: &App, tenant: &TenantId, member_id: MemberId) -> Result<CardCode, MemberOpError> {
    members::get(app, tenant, member_id).await?;
    let expires_at = app.clock.now() + chrono::Duration::seconds(CARD_CODE_TTL_SECS);
    let expires = expires_at.timestamp();
    let member = member_id.to_string();
    let tag = mac(app, tenant, &member, expires)?;
    Ok(CardCode { payload: format!("{CARD_CODE_PREFIX}{tenant}:{member}:{expires}:{tag}"), expires_at })
}

/// The member a scanned code names, if it is genuine, current and this tenant's.
pub async fn lookup(app: &App, tenant: &TenantId, scanned: &str) -> Result<MemberView, CardCodeError> {
    if scanned.len() > CARD_CODE_BYTES_MAX {
        return Err(CardCodeError::Malformed);
    }
    let rest = scanned.strip_prefix(CARD_CODE_PREFIX).ok_or(CardCodeError::Malformed)?;
    let parts: Vec<&str> = rest.split(':').collect();
    let [owner, member, expires, tag] = parts[..] else { return Err(CardCodeError::Malformed) };
    if owner != tenant.as_str() {
        return Err(CardCodeError::OtherTenant);
    }
    let member_id = MemberId::parse(member).map_err(|_| CardCodeError::Malformed)?;
    let expires: i64 = expires.parse().map_err(|_| CardCodeError::Malformed)?;
    let expected = mac(app, tenant, member, expires)?;
    // Constant time, as the protocol crate compares signatures.
    if !bool::from(subtle::ConstantTimeEq::ct_eq(tag.as_bytes(), expected.as_bytes())) {
        return Err(CardCodeError::Forged);
    }
    let expires_at = Utc.timestamp_opt(expires, 0).single().ok_or(CardCodeError::Malformed)?;
    if app.clock.now() >= expires_at {
        return Err(CardCodeError::Expired);
    }
    Ok(members::get(app, tenant, member_id).await?)
}
