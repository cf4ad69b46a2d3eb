-- Daily operations per tenant, fed by the member projector in the same transaction as
-- rm_members (so the projector's checkpoint covers both). Days are merchant days
-- (UTC+8). Derived from `events`: can be dropped and rebuilt from them.
--
-- Never edit this file once it has landed: add a new numbered migration instead.

-- One counter per (tenant, day, metric, dimension); `dimension` is '' when the metric
-- has none. Metrics: registrations (by source), points_granted, points_spent,
-- points_deducted, points_expired, cash_credited (by kind: deposit, recharge,
-- refund), cash_debited (by kind: charge), card_level_net (by card level: members
-- joining minus members leaving the level that day).
CREATE TABLE rm_daily_ops (
    tenant_id text   NOT NULL,
    day       date   NOT NULL,
    metric    text   NOT NULL,
    dimension text   NOT NULL,
    value     bigint NOT NULL,
    PRIMARY KEY (tenant_id, day, metric, dimension)
);

GRANT SELECT, INSERT, UPDATE, DELETE ON rm_daily_ops TO wxcm_app;
