//! Follows of the official account as the read models see them: the follow
//! source of an attribution, and what an event does to a member's follow
//! columns (`rm_members.followed`, `follow_source`, `scene`, `referrer_id`,
//! `followed_at`, `unfollowed_at`). Shared by the projector, the rebuild and the
//! daily counters so all three agree.

use chrono::{DateTime, Utc};
use wxcm_domain::member::{Attribution, MemberEvent, RegistrationSource};

/// Follow sources stored in `rm_members.follow_source` and as the dimension of the
/// daily `follows` / `unfollows` counters.
pub mod source {
    /// A parametric QR code (scene) brought the member.
    pub const SCENE_QR: &str = "scene_qr";
    /// Another member's referral brought the member.
    pub const REFERRAL: &str = "referral";
    /// Nothing traceable (direct follow, or an event recorded before attribution).
    pub const OTHER: &str = "other";
    pub const ALL: [&str; 3] = [SCENE_QR, REFERRAL, OTHER];
}

/// The follow source of an attribution; none recorded counts as `other`.
pub fn source_of(attribution: Option<&Attribution>) -> &'static str {
    match attribution {
        Some(Attribution::SceneQr { .. }) => source::SCENE_QR,
        Some(Attribution::Referral { .. }) => source::REFERRAL,
        Some(Attribution::Direct) | None => source::OTHER,
    }
}

/// The scene and referrer an attribution names.
pub fn scene_and_referrer(attribution: Option<&Attribution>) -> (Option<String>, Option<String>) {
    match attribution {
        Some(Attribution::SceneQr { scene }) => (Some(scene.as_str().to_owned()), None),
        Some(Attribution::Referral { referrer }) => (None, Some(referrer.to_string())),
        Some(Attribution::Direct) | None => (None, None),
    }
}

/// What an event does to the follow columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowChange {
    /// The member follows now, brought by `source`.
    Follow { source: &'static str, scene: Option<String>, referrer_id: Option<String>, at: DateTime<Utc> },
    /// The member stopped following; the follow source stays.
    Unfollow { at: DateTime<Utc> },
    /// Nothing about following changes.
    None,
}

/// The follow change of `event`. A registration by a subscribe is a follow with
/// the registration's attribution; other registrations follow nothing.
pub fn change_of(event: &MemberEvent) -> FollowChange {
    match event {
        MemberEvent::MemberRegistered { source: RegistrationSource::Subscribe, attribution, registered_at, .. } => {
            follow(attribution.as_ref(), *registered_at)
        }
        MemberEvent::MemberFollowed { attribution, followed_at, .. } => follow(Some(attribution), *followed_at),
        MemberEvent::MemberUnfollowed { unfollowed_at, .. } => FollowChange::Unfollow { at: *unfollowed_at },
        _ => FollowChange::None,
    }
}

fn follow(attribution: Option<&Attribution>, at: DateTime<Utc>) -> FollowChange {
    let (scene, referrer_id) = scene_and_referrer(attribution);
    FollowChange::Follow { source: source_of(attribution), scene, referrer_id, at }
}

#[cfg(test)]
mod tests {
    use wxcm_domain::{MemberId, SceneKey};

    use super::*;

    #[test]
    fn attributions_map_to_their_sources() {
        let scene = Attribution::SceneQr { scene: SceneKey::parse("poster-7").unwrap() };
        let referrer = MemberId::new_random();
        let referral = Attribution::Referral { referrer };
        assert_eq!(source_of(Some(&scene)), source::SCENE_QR);
        assert_eq!(source_of(Some(&referral)), source::REFERRAL);
        assert_eq!(source_of(Some(&Attribution::Direct)), source::OTHER);
        assert_eq!(source_of(None), source::OTHER);
        assert_eq!(scene_and_referrer(Some(&scene)), (Some("poster-7".into()), None));
        assert_eq!(scene_and_referrer(Some(&referral)), (None, Some(referrer.to_string())));
    }
}
