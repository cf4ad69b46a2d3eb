//! Card levels by rule: a tenant's catalog of levels and the pure decision
//! whether a member moves to another level.
//!
//! The catalog lists levels lowest first; a level's rank is its position. A
//! level with a threshold is earned when the member's lifetime points, or the
//! cash they paid in total (net of refunds), reach it; a level without one is
//! set by staff only. The decision is taken on the member's stream with the
//! member's current level, so concurrent grants that cross a threshold
//! together upgrade once: the second decides on the upgraded state and finds
//! nothing to change. The change is the member's `CardLevelChanged` event.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::mall::ImageUrl;
use crate::member::CardLevel;
use crate::{AmountFen, IdError, PointsAmount};

/// Levels one catalog may hold.
pub const LEVELS_MAX: usize = 32;

/// A colour as `#RRGGBB`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "String", into = "String")]
#[schemars(extend("pattern" = "^#[0-9A-Fa-f]{6}$"))]
pub struct Colour(String);

impl Colour {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let ok = s.len() == 7 && s.starts_with('#') && s[1..].chars().all(|c| c.is_ascii_hexdigit());
        if !ok {
            return Err(IdError::Charset { what: "colour", allowed: "#RRGGBB" });
        }
        Ok(Self(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Colour {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(&s)
    }
}

impl From<Colour> for String {
    fn from(c: Colour) -> String {
        c.0
    }
}

/// What a level gives, as shown to members: text with line breaks allowed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "String", into = "String")]
#[schemars(extend("maxLength" = 1000))]
pub struct PrivilegesText(String);

impl PrivilegesText {
    pub const LEN_MAX: usize = 1_000;
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let len = s.chars().count();
        if len > Self::LEN_MAX {
            return Err(IdError::Length { what: "privileges", min: 0, max: Self::LEN_MAX, len });
        }
        if s.chars().any(|c| c.is_control() && c != '\n') {
            return Err(IdError::Charset { what: "privileges", allowed: "text and line breaks" });
        }
        Ok(Self(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for PrivilegesText {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(&s)
    }
}

impl From<PrivilegesText> for String {
    fn from(t: PrivilegesText) -> String {
        t.0
    }
}

/// What earns a level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LevelThreshold {
    /// Points ever granted (spending and expiry do not lower them).
    LifetimePoints { points: PointsAmount },
    /// Cash paid in total, net of refunds.
    TotalPaid { fen: AmountFen },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CardLevelDef {
    pub name: CardLevel,
    pub image_url: ImageUrl,
    pub colour: Colour,
    pub privileges: PrivilegesText,
    /// `None`: set by staff only.
    pub threshold: Option<LevelThreshold>,
}

/// Whether the rule may move a member down (when refunds lower the total
/// paid, or the catalog's thresholds were raised).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DowngradePolicy {
    /// The rule only ever upgrades.
    #[default]
    Never,
    /// Levels the rule gave may be taken back by it; levels staff set stay.
    RuleLevelsOnly,
    /// Staff-set levels too.
    Always,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    #[error("a catalog has 1..={LEVELS_MAX} levels, got {0}")]
    Size(usize),
    #[error("level {0} appears twice")]
    DuplicateName(String),
    #[error("level {0} asks no more than a lower level of the same kind")]
    ThresholdNotIncreasing(String),
}

/// A tenant's levels, lowest first, and its downgrade policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "CatalogShape", into = "CatalogShape")]
pub struct CardLevelCatalog {
    levels: Vec<CardLevelDef>,
    downgrade: DowngradePolicy,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CatalogShape {
    pub levels: Vec<CardLevelDef>,
    #[serde(default)]
    pub downgrade: DowngradePolicy,
}

impl TryFrom<CatalogShape> for CardLevelCatalog {
    type Error = CatalogError;
    fn try_from(shape: CatalogShape) -> Result<Self, CatalogError> {
        Self::new(shape.levels, shape.downgrade)
    }
}

impl From<CardLevelCatalog> for CatalogShape {
    fn from(c: CardLevelCatalog) -> Self {
        CatalogShape { levels: c.levels, downgrade: c.downgrade }
    }
}

impl CardLevelCatalog {
    /// Names unique; each threshold above every lower level's of its kind, so
    /// a higher rank is always harder to reach.
    pub fn new(levels: Vec<CardLevelDef>, downgrade: DowngradePolicy) -> Result<Self, CatalogError> {
        if levels.is_empty() || levels.len() > LEVELS_MAX {
            return Err(CatalogError::Size(levels.len()));
        }
        let (mut points_max, mut paid_max) = (0, 0);
        for (i, level) in levels.iter().enumerate() {
            if levels[..i].iter().any(|l| l.name == level.name) {
                return Err(CatalogError::DuplicateName(level.name.as_str().to_owned()));
            }
            let (max, value) = match level.threshold {
                None => continue,
                Some(LevelThreshold::LifetimePoints { points }) => (&mut points_max, points.get()),
                Some(LevelThreshold::TotalPaid { fen }) => (&mut paid_max, fen.get()),
            };
            if value <= *max {
                return Err(CatalogError::ThresholdNotIncreasing(level.name.as_str().to_owned()));
            }
            *max = value;
        }
        Ok(Self { levels, downgrade })
    }

    pub fn levels(&self) -> &[CardLevelDef] {
        &self.levels
    }

    pub fn downgrade(&self) -> DowngradePolicy {
        self.downgrade
    }

    /// The level named `name`, if the catalog has it.
    pub fn level(&self, name: &CardLevel) -> Option<&CardLevelDef> {
        self.levels.iter().find(|l| l.name == *name)
    }

    /// The first level above `current` that a threshold earns (the lowest
    /// such level when `current` is not in the catalog), and what the member
    /// still lacks for it (0 when reached but not yet applied).
    pub fn next_level(&self, current: &CardLevel, progress: Progress) -> Option<(&CardLevelDef, Missing)> {
        let from = self.rank(current).map_or(0, |r| r + 1);
        self.levels.iter().skip(from).find_map(|l| {
            let missing = match l.threshold? {
                LevelThreshold::LifetimePoints { points } => {
                    Missing::Points((points.get() - progress.lifetime_points).max(0))
                }
                LevelThreshold::TotalPaid { fen } => Missing::Fen((fen.get() - progress.total_paid_fen).max(0)),
            };
            Some((l, missing))
        })
    }

    fn rank(&self, name: &CardLevel) -> Option<usize> {
        self.levels.iter().position(|l| l.name == *name)
    }

    /// The highest level the member's figures reach.
    fn earned(&self, progress: Progress) -> Option<usize> {
        self.levels.iter().rposition(|l| match l.threshold {
            None => false,
            Some(LevelThreshold::LifetimePoints { points }) => progress.lifetime_points >= points.get(),
            Some(LevelThreshold::TotalPaid { fen }) => progress.total_paid_fen >= fen.get(),
        })
    }
}

/// What a member lacks for a level: points or fen, never negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    Points(i64),
    Fen(i64),
}

/// A member's figures the rule reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub lifetime_points: i64,
    /// Net of refunds.
    pub total_paid_fen: i64,
}

/// How the member's current level was set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LevelSource {
    Rule,
    /// By staff, or at registration (events written before the rule existed too).
    #[default]
    Manual,
}

impl LevelSource {
    pub fn is_manual(&self) -> bool {
        *self == LevelSource::Manual
    }
}

/// The level the rule moves a member to, if any.
///
/// Up: to the highest level reached, when above the current one (a level
/// missing from the catalog ranks below all). Down (only as the policy
/// allows): to the highest level reached, or to the lowest level set by staff
/// only when none is reached.
pub fn decide_level(
    catalog: &CardLevelCatalog,
    current: &CardLevel,
    source: LevelSource,
    progress: Progress,
) -> Option<CardLevel> {
    let current_rank = catalog.rank(current);
    let earned = catalog.earned(progress);
    match (earned, current_rank) {
        (Some(e), None) => return Some(catalog.levels[e].name.clone()),
        (Some(e), Some(c)) if e > c => return Some(catalog.levels[e].name.clone()),
        (_, None) => return None,
        _ => {}
    }
    let may_downgrade = match catalog.downgrade {
        DowngradePolicy::Never => false,
        DowngradePolicy::RuleLevelsOnly => source == LevelSource::Rule,
        DowngradePolicy::Always => true,
    };
    let current_rank = current_rank?;
    if !may_downgrade {
        return None;
    }
    let target = earned.or_else(|| catalog.levels.iter().position(|l| l.threshold.is_none()))?;
    (target < current_rank).then(|| catalog.levels[target].name.clone())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn level(name: &str, threshold: Option<LevelThreshold>) -> CardLevelDef {
        CardLevelDef {
            name: CardLevel::parse(name).unwrap(),
            image_url: ImageUrl::parse("https://img.example.com/card.png").unwrap(),
            colour: Colour::parse("#C0A060").unwrap(),
            privileges: PrivilegesText::parse("9.5 折\n生日双倍积分").unwrap(),
            threshold,
        }
    }

    fn points(n: i64) -> Option<LevelThreshold> {
        Some(LevelThreshold::LifetimePoints { points: PointsAmount::new(n).unwrap() })
    }

    fn paid(n: i64) -> Option<LevelThreshold> {
        Some(LevelThreshold::TotalPaid { fen: AmountFen::new(n).unwrap() })
    }

    fn catalog(downgrade: DowngradePolicy) -> CardLevelCatalog {
        CardLevelCatalog::new(
            vec![
                level("standard", None),
                level("silver", points(1_000)),
                level("gold", points(5_000)),
                level("black", paid(1_000_000)),
            ],
            downgrade,
        )
        .unwrap()
    }

    fn name(s: &str) -> CardLevel {
        CardLevel::parse(s).unwrap()
    }

    fn progress(lifetime_points: i64, total_paid_fen: i64) -> Progress {
        Progress { lifetime_points, total_paid_fen }
    }

    #[test]
    fn a_catalog_has_unique_names_and_rising_thresholds() {
        assert_eq!(CardLevelCatalog::new(vec![], DowngradePolicy::Never), Err(CatalogError::Size(0)));
        let many = (0..=LEVELS_MAX).map(|i| level(&format!("l{i}"), None)).collect();
        assert_eq!(CardLevelCatalog::new(many, DowngradePolicy::Never), Err(CatalogError::Size(LEVELS_MAX + 1)));
        let twice = vec![level("gold", None), level("gold", points(5))];
        assert_eq!(
            CardLevelCatalog::new(twice, DowngradePolicy::Never),
            Err(CatalogError::DuplicateName("gold".into()))
        );
        let falling = vec![level("gold", points(5_000)), level("silver", points(1_000))];
        assert_eq!(
            CardLevelCatalog::new(falling, DowngradePolicy::Never),
            Err(CatalogError::ThresholdNotIncreasing("silver".into()))
        );
        let equal = vec![level("a", paid(10)), level("b", paid(10))];
        assert!(CardLevelCatalog::new(equal, DowngradePolicy::Never).is_err());
        let json = serde_json::to_value(catalog(DowngradePolicy::Never)).unwrap();
        assert_eq!(serde_json::from_value::<CardLevelCatalog>(json).unwrap(), catalog(DowngradePolicy::Never));
        let bad = serde_json::json!({ "levels": [], "downgrade": "never" });
        assert!(serde_json::from_value::<CardLevelCatalog>(bad).is_err(), "validated when read back too");
    }

    #[test]
    fn colours_and_privileges_are_checked() {
        assert!(Colour::parse("#a0B1c2").is_ok());
        for bad in ["a0b1c2", "#a0b1c", "#a0b1c2d", "#g0b1c2", "#ＡＡＡＡＡＡ"] {
            assert!(Colour::parse(bad).is_err(), "{bad}");
        }
        assert!(PrivilegesText::parse(&"x".repeat(PrivilegesText::LEN_MAX)).is_ok());
        assert!(PrivilegesText::parse(&"x".repeat(PrivilegesText::LEN_MAX + 1)).is_err());
        assert!(PrivilegesText::parse("tab\there").is_err());
    }

    #[test]
    fn crossing_a_threshold_upgrades_once_to_the_highest_level_reached() {
        let c = catalog(DowngradePolicy::Never);
        assert_eq!(decide_level(&c, &name("standard"), LevelSource::Manual, progress(999, 0)), None);
        assert_eq!(decide_level(&c, &name("standard"), LevelSource::Manual, progress(1_000, 0)), Some(name("silver")));
        // Two grants crossing together: the first upgrade, then nothing.
        assert_eq!(decide_level(&c, &name("standard"), LevelSource::Manual, progress(6_000, 0)), Some(name("gold")));
        assert_eq!(decide_level(&c, &name("gold"), LevelSource::Rule, progress(6_000, 0)), None);
        assert_eq!(decide_level(&c, &name("gold"), LevelSource::Rule, progress(6_000, 1_000_000)), Some(name("black")));
        assert_eq!(decide_level(&c, &name("retired"), LevelSource::Manual, progress(1_000, 0)), Some(name("silver")));
        assert_eq!(decide_level(&c, &name("retired"), LevelSource::Manual, progress(0, 0)), None);
    }

    #[test]
    fn manual_levels_are_not_downgraded_unless_the_tenant_says_so() {
        let low = progress(1_500, 0);
        let never = catalog(DowngradePolicy::Never);
        assert_eq!(decide_level(&never, &name("gold"), LevelSource::Manual, low), None);
        assert_eq!(decide_level(&never, &name("gold"), LevelSource::Rule, low), None);
        let rule_only = catalog(DowngradePolicy::RuleLevelsOnly);
        assert_eq!(decide_level(&rule_only, &name("gold"), LevelSource::Manual, low), None);
        assert_eq!(decide_level(&rule_only, &name("gold"), LevelSource::Rule, low), Some(name("silver")));
        let always = catalog(DowngradePolicy::Always);
        assert_eq!(decide_level(&always, &name("gold"), LevelSource::Manual, low), Some(name("silver")));
        assert_eq!(
            decide_level(&always, &name("gold"), LevelSource::Manual, progress(0, 0)),
            Some(name("standard")),
            "nothing reached: back to the staff-only entry level"
        );
        assert_eq!(decide_level(&always, &name("standard"), LevelSource::Manual, progress(0, 0)), None);
    }

    #[test]
    fn the_next_level_is_the_first_earnable_one_above() {
        let c = catalog(DowngradePolicy::Never);
        let (next, missing) = c.next_level(&name("standard"), progress(400, 0)).unwrap();
        assert_eq!((next.name.as_str(), missing), ("silver", Missing::Points(600)));
        let (next, missing) = c.next_level(&name("gold"), progress(6_000, 250)).unwrap();
        assert_eq!((next.name.as_str(), missing), ("black", Missing::Fen(999_750)));
        assert_eq!(c.next_level(&name("silver"), progress(9_000, 0)).unwrap().1, Missing::Points(0));
        assert!(c.next_level(&name("black"), progress(0, 0)).is_none());
        assert_eq!(c.next_level(&name("retired"), progress(0, 0)).unwrap().0.name.as_str(), "silver");
        assert_eq!(c.level(&name("gold")).map(|l| l.name.as_str()), Some("gold"));
        assert!(c.level(&name("retired")).is_none());
    }

    fn policy() -> impl Strategy<Value = DowngradePolicy> {
        prop_oneof![Just(DowngradePolicy::Never), Just(DowngradePolicy::RuleLevelsOnly), Just(DowngradePolicy::Always)]
    }

    proptest! {
        /// Whatever the figures: a decision is final (deciding again on the
        /// level it gives changes nothing, so concurrent grants move a member
        /// once), the rule never moves down under `Never`, and never moves a
        /// staff-set level down unless the policy is `Always`.
        #[test]
        fn a_level_decision_is_final_and_downgrades_only_as_allowed(
            downgrade in policy(),
            start in 0usize..4,
            manual in any::<bool>(),
            points in 0i64..8_000,
            paid in 0i64..2_000_000,
        ) {
            let c = catalog(downgrade);
            let current = c.levels()[start].name.clone();
            let source = if manual { LevelSource::Manual } else { LevelSource::Rule };
            let figures = progress(points, paid);
            if let Some(to) = decide_level(&c, &current, source, figures) {
                prop_assert_ne!(&to, &current);
                prop_assert_eq!(decide_level(&c, &to, LevelSource::Rule, figures), None);
                let rank = |l: &CardLevel| c.levels().iter().position(|d| d.name == *l);
                if rank(&to) < rank(&current) {
                    prop_assert!(downgrade == DowngradePolicy::Always
                        || (downgrade == DowngradePolicy::RuleLevelsOnly && !manual));
                }
            }
        }
    }
}
