-- Per-campaign reports.
-- - `rm_campaigns`: one row per campaign, maintained by the `campaigns`
--   projector from the campaign events (rebuildable: `wxcm projections rebuild
--   campaigns`); its daily figures are `rm_daily_ops` rows whose dimension is
--   the campaign id (`campaign_participations`, `campaign_participants_new`,
--   `campaign_winners`).
-- - `campaign_traffic`: page visits and share-link requests per campaign and
--   merchant day, counted by the HTTP edge as they happen. They are traffic,
--   not ledger facts, so no event records them and no rebuild makes them.
CREATE TABLE rm_campaigns (
    tenant_id      text        NOT NULL,
    campaign_id    text        NOT NULL,
    kind           text        NOT NULL,
    name           text        NOT NULL,
    status         text        NOT NULL CHECK (status IN ('draft', 'scheduled', 'ongoing', 'ended')),
    participations bigint      NOT NULL DEFAULT 0 CHECK (participations >= 0),
    participants   bigint      NOT NULL DEFAULT 0 CHECK (participants >= 0),
    winners        bigint      NOT NULL DEFAULT 0 CHECK (winners >= 0),
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    -- The campaign's last applied event.
    version        bigint      NOT NULL,
    PRIMARY KEY (tenant_id, campaign_id)
);
GRANT SELECT, INSERT, UPDATE, DELETE ON rm_campaigns TO wxcm_app;

CREATE TABLE campaign_traffic (
    tenant_id   text   NOT NULL,
    campaign_id text   NOT NULL,
    day         date   NOT NULL,
    visits      bigint NOT NULL DEFAULT 0 CHECK (visits >= 0),
    shares      bigint NOT NULL DEFAULT 0 CHECK (shares >= 0),
    PRIMARY KEY (tenant_id, campaign_id, day)
);
GRANT SELECT, INSERT, UPDATE ON campaign_traffic TO wxcm_app;
