//! Points granted by the ledger itself: at registration and for referrals
//! (levels 1 and 2), and when they expire (`/tenant/points-rules`, tag `wechat`).

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use tracing::instrument;
use utoipa::ToSchema;
use wxcm_commands::tenants::TenantOpError;
use wxcm_domain::member::ExpiryPolicy;
use wxcm_domain::tenant::{PointsRules, TenantCommand};

use super::tenant_state;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, Authorized, Correlation, IdempotencyHeader};
use crate::permissions::perm;
use crate::resources::ledger::ExpiryBody;
use crate::state::AppState;

/// Points granted by the ledger itself; 0 means none.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PointsRulesBody {
    /// Granted to a new member at registration.
    #[schema(minimum = 0, maximum = 1_000_000)]
    pub initial_points: i64,
    /// Granted to the referrer of a new member.
    #[schema(minimum = 0, maximum = 1_000_000)]
    pub referral_level1_points: i64,
    /// Granted to the referrer's referrer.
    #[schema(minimum = 0, maximum = 1_000_000)]
    pub referral_level2_points: i64,
    pub expiry: ExpiryBody,
}

impl PointsRulesBody {
    pub fn validate(self) -> Result<PointsRules, ApiError> {
        let rules = PointsRules {
            initial_points: self.initial_points,
            referral_level1_points: self.referral_level1_points,
            referral_level2_points: self.referral_level2_points,
            expiry: self.expiry.validate()?,
        };
        if !rules.is_valid() {
            return Err(ApiError::invalid(
                "invalid_points_rules",
                format!("points must be 0..={}", wxcm_domain::tenant::RULE_POINTS_MAX),
            ));
        }
        Ok(rules)
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExpiryDto {
    Never,
    Days { days: u32 },
    EndOfMonth,
    EndOfYear,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PointsRulesDto {
    pub initial_points: i64,
    pub referral_level1_points: i64,
    pub referral_level2_points: i64,
    pub expiry: ExpiryDto,
}

impl From<PointsRules> for PointsRulesDto {
    fn from(r: PointsRules) -> Self {
        Self {
            initial_points: r.initial_points,
            referral_level1_points: r.referral_level1_points,
            referral_level2_points: r.referral_level2_points,
            expiry: match r.expiry {
                ExpiryPolicy::Never => ExpiryDto::Never,
                ExpiryPolicy::Days { days } => ExpiryDto::Days { days },
                ExpiryPolicy::EndOfMonth => ExpiryDto::EndOfMonth,
                ExpiryPolicy::EndOfYear => ExpiryDto::EndOfYear,
            },
        }
    }
}

/// Initial and referral points, and their expiry.
#[utoipa::path(get, path = "/admin/api/v1/tenant/points-rules", tag = "wechat",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The points rules", body = PointsRulesDto),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`tenant_not_found`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username))]
pub async fn get_points_rules(
    State(state): State<AppState>,
    auth: Authorized<perm::WechatRead>,
) -> Result<Json<PointsRulesDto>, ApiError> {
    let tenant = &auth.session.tenant_id;
    let shard = state.app.router.route(tenant)?;
    Ok(Json(tenant_state(&shard, tenant).await?.points_rules.into()))
}

/// Sets the points granted at registration and for referrals (levels 1 and 2).
#[utoipa::path(put, path = "/admin/api/v1/tenant/points-rules", tag = "wechat",
    security(("bearer" = [])),
    params(("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters")),
    request_body = PointsRulesBody,
    responses(
        (status = 200, description = "The rules now in force", body = PointsRulesDto),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`tenant_not_found`", body = ErrorBody),
        (status = 409, description = "`idempotency_key_reused`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_points_rules`, `invalid_expiry`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username))]
pub async fn put_points_rules(
    State(state): State<AppState>,
    auth: Authorized<perm::WechatSettings>,
    key: IdempotencyHeader,
    correlation: Correlation,
    body: ApiJson<PointsRulesBody>,
) -> Result<Json<PointsRulesDto>, ApiError> {
    let rules = body.0.validate()?;
    let tenant = &auth.session.tenant_id;
    let shard = state.app.router.route(tenant)?;
    let ctx = auth.context(key.0, correlation);
    let command = TenantCommand::SetPointsRules { rules, actor: auth.actor() };
    shard
        .tenants
        .execute(tenant.as_str(), command, &("set-points-rules", rules), &ctx)
        .await
        .map_err(TenantOpError::from)?;
    tracing::info!("points rules set");
    Ok(Json(tenant_state(&shard, tenant).await?.points_rules.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_rules_are_bounded() {
        let body = |initial: i64| PointsRulesBody {
            initial_points: initial,
            referral_level1_points: 0,
            referral_level2_points: 0,
            expiry: ExpiryBody::Never {},
        };
        assert!(body(10).validate().is_ok());
        assert_eq!(body(-1).validate().err().unwrap().code(), "invalid_points_rules");
    }
}
