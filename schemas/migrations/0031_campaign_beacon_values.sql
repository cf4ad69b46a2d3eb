-- Beacon values of periods that named an external randomness beacon round
-- (`CampaignPeriodOpened.beacon`, e.g. a drand round fixed before entries
-- close). The value is public once the beacon publishes it; an operator (or a
-- fetcher, where the beacon can be reached) records it here, first writer
-- wins, and the period's draw mixes it into the seed and states it in
-- `CampaignPeriodDrawn`, where an auditor checks it against the beacon.
CREATE TABLE campaign_beacon_values (
    tenant_id   text        NOT NULL,
    campaign_id text        NOT NULL,
    period_no   integer     NOT NULL CHECK (period_no >= 1),
    -- 1..=64 bytes, lowercase hex (for drand: the round's 32-byte randomness).
    value_hex   text        NOT NULL CHECK (value_hex ~ '^([0-9a-f]{2}){1,64}$'),
    recorded_by text        NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, campaign_id, period_no)
);
GRANT SELECT, INSERT ON campaign_beacon_values TO wxcm_app;
