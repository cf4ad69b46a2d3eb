//! The tenant's card level catalog (`/admin/api/v1/card-levels`, tag
//! `card-levels`) and the member's own level (`/m/api/v1/card-level`).
//!
//! The catalog is read and replaced whole (an admin console edits the list
//! and its order at once); each replacement names the revision it edited, and
//! one made on a catalog replaced meanwhile is 409 `card_levels_changed`,
//! never a silent overwrite.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use tracing::instrument;
use utoipa::ToSchema;
use wxcm_commands::card_levels::{self, CatalogView, MemberLevelView};
use wxcm_domain::card_levels::{
    CardLevelCatalog, CardLevelDef, Colour, DowngradePolicy, LevelSource, LevelThreshold, PrivilegesText, LEVELS_MAX,
};
use wxcm_domain::mall::ImageUrl;
use wxcm_domain::{AmountFen, PointsAmount};

use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, Authorized, Correlation, IdempotencyHeader};
use crate::permissions::perm;
use crate::resources::member_api::MemberAuth;
use crate::resources::members::card_level;
use crate::state::AppState;

/// Revisions a catalog may reach (far beyond any tenant's edits; bounds the field).
pub const REVISION_MAX: u64 = u32::MAX as u64;

/// What earns a level; absent (`null`): staff set it by hand only.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LevelThresholdBody {
    /// Points ever granted reach `points` (spending and expiry do not lower them).
    LifetimePoints {
        /// Whole points, 1..=100,000,000 (a threshold, not an amount moved: the
        /// per-operation limits do not apply).
        #[schema(minimum = 1, maximum = 100_000_000)]
        points: i64,
    },
    /// Cash paid (balance charges at the counter, in the mall and for snatch shares, and mall
    /// orders paid by WeChat Pay), net of refunds, reaches `fen`.
    TotalPaid {
        /// Fen, 1..=100,000,000.
        #[schema(minimum = 1, maximum = 100_000_000)]
        fen: i64,
    },
}

/// One level of the catalog.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LevelEntryBody {
    /// Unique in the catalog.
    #[schema(value_type = crate::doc::CardLevelName)]
    pub name: String,
    #[schema(value_type = crate::doc::ImageUrl)]
    pub image_url: String,
    /// `#RRGGBB`.
    #[schema(pattern = "^#[0-9A-Fa-f]{6}$", min_length = 7, max_length = 7)]
    pub colour: String,
    /// What the level gives, as members read it: at most 1000 characters, line breaks allowed.
    #[schema(max_length = 1000, pattern = "^[^\\x00-\\x09\\x0B-\\x1F\\x7F-\\x9F]*$")]
    pub privileges: String,
    pub threshold: Option<LevelThresholdBody>,
}

/// Whether the rule may move a member down (refunds lowering the total paid, thresholds raised).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LevelDowngradeBody {
    /// The rule only ever upgrades.
    #[default]
    Never,
    /// Levels the rule gave may be taken back by it; levels staff set stay.
    RuleLevelsOnly,
    /// Staff-set levels too.
    Always,
}

/// A new catalog: the levels lowest first (a higher level's threshold is above every lower
/// one's of the same kind), replacing the one at `revision`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CardLevelsBody {
    /// The revision this edit was made on (`GET` answers it; 0 when there is no catalog yet).
    #[schema(minimum = 0, maximum = 4294967295_u64)]
    pub revision: u64,
    #[schema(min_items = 1, max_items = 32)]
    pub levels: Vec<LevelEntryBody>,
    #[serde(default)]
    pub downgrade: LevelDowngradeBody,
}

/// The catalog in force.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CardLevelsDto {
    /// Catalogs set so far (0: none yet); name it when replacing this one.
    pub revision: u64,
    /// Lowest first; empty when there is no catalog (levels are then free names set by staff).
    pub levels: Vec<LevelEntryBody>,
    pub downgrade: LevelDowngradeBody,
}

fn invalid(e: impl std::fmt::Display) -> ApiError {
    ApiError::invalid("invalid_card_levels", e.to_string())
}

impl LevelThresholdBody {
    fn validate(self) -> Result<LevelThreshold, ApiError> {
        Ok(match self {
            LevelThresholdBody::LifetimePoints { points } => {
                LevelThreshold::LifetimePoints { points: PointsAmount::new(points).map_err(invalid)? }
            }
            LevelThresholdBody::TotalPaid { fen } => {
                LevelThreshold::TotalPaid { fen: AmountFen::new(fen).map_err(invalid)? }
            }
        })
    }
}

impl LevelEntryBody {
    fn validate(&self) -> Result<CardLevelDef, ApiError> {
        Ok(CardLevelDef {
            name: card_level(&self.name)?,
            image_url: ImageUrl::parse(&self.image_url).map_err(invalid)?,
            colour: Colour::parse(&self.colour).map_err(invalid)?,
            privileges: PrivilegesText::parse(&self.privileges).map_err(invalid)?,
            threshold: self.threshold.map(LevelThresholdBody::validate).transpose()?,
        })
    }

    fn from_def(def: &CardLevelDef) -> Self {
        Self {
            name: def.name.as_str().to_owned(),
            image_url: def.image_url.as_str().to_owned(),
            colour: def.colour.as_str().to_owned(),
            privileges: def.privileges.as_str().to_owned(),
            threshold: def.threshold.map(|t| match t {
                LevelThreshold::LifetimePoints { points } => {
                    LevelThresholdBody::LifetimePoints { points: points.get() }
                }
                LevelThreshold::TotalPaid { fen } => LevelThresholdBody::TotalPaid { fen: fen.get() },
            }),
        }
    }
}

impl CardLevelsBody {
    /// The catalog and the revision it replaces; shape, limits and the
    /// catalog's own rules (unique names, rising thresholds) are all 422.
    pub fn validate(&self) -> Result<(CardLevelCatalog, u64), ApiError> {
        if self.levels.is_empty() || self.levels.len() > LEVELS_MAX {
            return Err(invalid(format!("a catalog has 1..={LEVELS_MAX} levels")));
        }
        if self.revision > REVISION_MAX {
            return Err(invalid(format!("revision must be 0..={REVISION_MAX}")));
        }
        let levels = self.levels.iter().map(LevelEntryBody::validate).collect::<Result<Vec<_>, _>>()?;
        let downgrade = match self.downgrade {
            LevelDowngradeBody::Never => DowngradePolicy::Never,
            LevelDowngradeBody::RuleLevelsOnly => DowngradePolicy::RuleLevelsOnly,
            LevelDowngradeBody::Always => DowngradePolicy::Always,
        };
        Ok((CardLevelCatalog::new(levels, downgrade).map_err(invalid)?, self.revision))
    }
}

impl From<CatalogView> for CardLevelsDto {
    fn from(v: CatalogView) -> Self {
        let (levels, downgrade) = match &v.catalog {
            Some(c) => (
                c.levels().iter().map(LevelEntryBody::from_def).collect(),
                match c.downgrade() {
                    DowngradePolicy::Never => LevelDowngradeBody::Never,
                    DowngradePolicy::RuleLevelsOnly => LevelDowngradeBody::RuleLevelsOnly,
                    DowngradePolicy::Always => LevelDowngradeBody::Always,
                },
            ),
            None => (Vec::new(), LevelDowngradeBody::Never),
        };
        Self { revision: v.revision, levels, downgrade }
    }
}

/// The card level catalog and its revision.
#[utoipa::path(get, path = "/admin/api/v1/card-levels", tag = "card-levels",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The catalog in force (no levels and revision 0 before the first)", body = CardLevelsDto),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`tenant_not_found`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username))]
pub async fn get_card_levels(
    State(state): State<AppState>,
    auth: Authorized<perm::MemberRead>,
) -> Result<Json<CardLevelsDto>, ApiError> {
    Ok(Json(card_levels::catalog(&state.app, &auth.session.tenant_id).await?.into()))
}

/// Replaces the catalog. Members keep their levels; the rule applies the new thresholds at
/// each member's next grant, charge or refund.
#[utoipa::path(put, path = "/admin/api/v1/card-levels", tag = "card-levels",
    security(("bearer" = [])),
    params(("Idempotency-Key" = String, Header, description = "8..=128 printable ASCII characters")),
    request_body = CardLevelsBody,
    responses(
        (status = 200, description = "The catalog now in force", body = CardLevelsDto),
        (status = 400, description = "`idempotency_key_missing`, `idempotency_key_invalid`, `malformed_json`", body = ErrorBody),
        (status = 403, description = "`forbidden`", body = ErrorBody),
        (status = 404, description = "`tenant_not_found`", body = ErrorBody),
        (status = 409, description = "`card_levels_changed` (the catalog is no longer at `revision`), `idempotency_key_reused`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 422, description = "`invalid_body`, `invalid_card_levels` (a name twice, a threshold not above a lower level's, a limit), `invalid_card_level`", body = ErrorBody),
    ))]
#[instrument(skip_all, fields(tenant = %auth.session.tenant_id, username = %auth.session.username))]
pub async fn put_card_levels(
    State(state): State<AppState>,
    auth: Authorized<perm::CardLevelSettings>,
    key: IdempotencyHeader,
    correlation: Correlation,
    body: ApiJson<CardLevelsBody>,
) -> Result<Json<CardLevelsDto>, ApiError> {
    let (catalog, revision) = body.0.validate()?;
    let tenant = &auth.session.tenant_id;
    let ctx = auth.context(key.0, correlation);
    let view = card_levels::set_catalog(&state.app, tenant, catalog, revision, auth.actor(), &ctx).await?;
    Ok(Json(view.into()))
}

/// How the member's level was set.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LevelSourceDto {
    /// By the rule (a threshold reached).
    Rule,
    /// By staff, or at registration.
    Manual,
}

/// The next level and what the member lacks for it (one of the two figures).
#[derive(Debug, Serialize, ToSchema)]
pub struct NextLevelDto {
    pub level: LevelEntryBody,
    pub missing_points: Option<i64>,
    pub missing_fen: Option<i64>,
}

/// The member's card level with its catalog entry and the way to the next one.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemberLevelDto {
    #[schema(value_type = crate::doc::CardLevelName)]
    pub card_level: String,
    pub source: LevelSourceDto,
    /// The catalog's entry (null: no catalog, or a level it no longer lists).
    pub level: Option<LevelEntryBody>,
    pub lifetime_points: i64,
    /// Cash paid (balance charges, and mall orders and snatch shares paid by WeChat Pay), net of refunds.
    pub total_paid_fen: i64,
    /// Null: no level above is earned by a threshold.
    pub next: Option<NextLevelDto>,
}

impl From<MemberLevelView> for MemberLevelDto {
    fn from(v: MemberLevelView) -> Self {
        Self {
            card_level: v.card_level,
            source: match v.source {
                LevelSource::Rule => LevelSourceDto::Rule,
                LevelSource::Manual => LevelSourceDto::Manual,
            },
            level: v.level.as_ref().map(LevelEntryBody::from_def),
            lifetime_points: v.lifetime_points,
            total_paid_fen: v.total_paid_fen,
            next: v.next.map(|n| NextLevelDto {
                level: LevelEntryBody::from_def(&n.level),
                missing_points: n.missing_points,
                missing_fen: n.missing_fen,
            }),
        }
    }
}

/// `GET /m/api/v1/card-level`: the member's level, its privileges, and what the next one asks.
#[utoipa::path(get, path = "/m/api/v1/card-level", tag = "member",
    security(("member_bearer" = [])),
    responses(
        (status = 200, description = "The member's card level", body = MemberLevelDto),
        (status = 404, description = "`member_not_found`", body = ErrorBody),
    ))]
pub async fn member_card_level(
    State(state): State<AppState>,
    MemberAuth(s): MemberAuth,
) -> Result<Json<MemberLevelDto>, ApiError> {
    Ok(Json(card_levels::member_level(&state.app, &s.tenant_id, s.member_id).await?.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(name: &str, threshold: Option<LevelThresholdBody>) -> LevelEntryBody {
        LevelEntryBody {
            name: name.into(),
            image_url: "https://img.example.com/a.png".into(),
            colour: "#AABBCC".into(),
            privileges: "9 折\n生日礼".into(),
            threshold,
        }
    }

    fn body(levels: Vec<LevelEntryBody>) -> CardLevelsBody {
        CardLevelsBody { revision: 0, levels, downgrade: LevelDowngradeBody::Never }
    }

    fn code(b: CardLevelsBody) -> &'static str {
        b.validate().err().map_or("ok", |e| e.code())
    }

    #[test]
    fn catalogs_are_checked_whole() {
        let points = |points| Some(LevelThresholdBody::LifetimePoints { points });
        assert_eq!(code(body(vec![level("a", None), level("b", points(10))])), "ok");
        assert_eq!(code(body(vec![])), "invalid_card_levels");
        let many = (0..=LEVELS_MAX).map(|i| level(&format!("l{i}"), None)).collect();
        assert_eq!(code(body(many)), "invalid_card_levels");
        let at_max = (0..LEVELS_MAX).map(|i| level(&format!("l{i}"), None)).collect();
        assert_eq!(code(body(at_max)), "ok");
        assert_eq!(code(body(vec![level("a", None), level("a", None)])), "invalid_card_levels");
        assert_eq!(code(body(vec![level("a", points(10)), level("b", points(10))])), "invalid_card_levels");
        assert_eq!(code(body(vec![level("a", points(0))])), "invalid_card_levels");
        let over = PointsAmount::MAX + 1;
        assert_eq!(code(body(vec![level("a", points(over))])), "invalid_card_levels");
        assert_eq!(code(body(vec![level("", None)])), "invalid_card_level");
        let mut bad = level("a", None);
        bad.colour = "red".into();
        assert_eq!(code(body(vec![bad])), "invalid_card_levels");
        let mut bad = level("a", None);
        bad.image_url = "javascript:alert(1)".into();
        assert_eq!(code(body(vec![bad])), "invalid_card_levels");
        let mut late = body(vec![level("a", None)]);
        late.revision = REVISION_MAX + 1;
        assert_eq!(code(late), "invalid_card_levels");
    }
}
