-- Follows of the official account in the member read model, and their daily counts
-- (rm_daily_ops metrics `follows` / `unfollows`, dimension = follow source; no schema
-- change is needed there). Derived from `events`: rebuilt by `wxcm projections rebuild`,
-- which creates its tables LIKE these, so the shape stays the same.
--
-- Never edit this file once it has landed: add a new numbered migration instead.

-- followed:      following the official account now.
-- follow_source: what brought the latest follow: scene_qr | referral | other; NULL when
--                the member never followed. Kept after an unfollow (unfollows are
--                counted under it).
-- scene / referrer_id: the attribution of the latest follow (or of the registration).
ALTER TABLE rm_members
    ADD COLUMN followed      boolean     NOT NULL DEFAULT false,
    ADD COLUMN follow_source text        NULL
        CHECK (follow_source IN ('scene_qr', 'referral', 'other')),
    ADD COLUMN scene         text        NULL,
    ADD COLUMN referrer_id   text        NULL,
    ADD COLUMN followed_at   timestamptz NULL,
    ADD COLUMN unfollowed_at timestamptz NULL;

-- Existing rows: members registered by a subscribe before attribution was recorded.
UPDATE rm_members SET followed = true, follow_source = 'other', followed_at = registered_at
 WHERE source = 'subscribe';

CREATE INDEX rm_members_follow ON rm_members (tenant_id, follow_source, followed);

-- Their follows, counted on the merchant day (UTC+8) of the registration.
INSERT INTO rm_daily_ops (tenant_id, day, metric, dimension, value)
SELECT tenant_id, (registered_at AT TIME ZONE INTERVAL '+08:00')::date, 'follows', 'other', count(*)
  FROM rm_members WHERE source = 'subscribe'
 GROUP BY 1, 2
ON CONFLICT (tenant_id, day, metric, dimension) DO UPDATE SET value = rm_daily_ops.value + EXCLUDED.value;
