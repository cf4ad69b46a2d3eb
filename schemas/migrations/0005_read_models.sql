-- Read models fed from JetStream by the projectors (projections/). Everything here is
-- derived from `events` and can be dropped and rebuilt from them.
--
-- Never edit this file once it has landed: add a new numbered migration instead.

-- Per projector and stream: the sequence of the last event applied. Written in the same
-- transaction as the read-model change, so "applied" and "recorded" cannot disagree.
CREATE TABLE projection_checkpoints (
    projector      text        NOT NULL,
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    tenant_id      text        NOT NULL,
    sequence       bigint      NOT NULL CHECK (sequence >= 0),
    event_id       uuid        NULL,
    -- recorded_at of the event at `sequence` (lag = now - max of it).
    recorded_at    timestamptz NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projector, aggregate_type, aggregate_id)
);
CREATE INDEX projection_checkpoints_recorded ON projection_checkpoints (projector, recorded_at);

-- Events a projector failed to apply. A row with parked_at NULL is still being retried
-- (redelivered by JetStream); a parked row stops its stream for that projector until an
-- operator retries it. Other streams are not affected.
CREATE TABLE projection_dead_letters (
    id               bigserial   PRIMARY KEY,
    projector        text        NOT NULL,
    event_id         uuid        NOT NULL,
    tenant_id        text        NOT NULL,
    aggregate_type   text        NOT NULL,
    aggregate_id     text        NOT NULL,
    sequence         bigint      NOT NULL,
    error            text        NOT NULL,
    attempts         int         NOT NULL CHECK (attempts >= 1),
    first_failed_at  timestamptz NOT NULL DEFAULT now(),
    last_failed_at   timestamptz NOT NULL DEFAULT now(),
    parked_at        timestamptz NULL,
    -- The message as received (the relayed event), for the operator.
    event            jsonb       NOT NULL,
    UNIQUE (projector, event_id)
);
CREATE INDEX projection_dead_letters_stream
    ON projection_dead_letters (projector, aggregate_type, aggregate_id, sequence);

-- One row per member: the card and the current figures.
CREATE TABLE rm_members (
    tenant_id       text        NOT NULL,
    member_id       text        NOT NULL,
    card_no         text        NOT NULL,
    openid          text        NULL,
    card_level      text        NOT NULL,
    source          text        NOT NULL,
    registered_at   timestamptz NOT NULL,
    points          bigint      NOT NULL CHECK (points >= 0),
    held_points     bigint      NOT NULL CHECK (held_points >= 0),
    balance_fen     bigint      NOT NULL CHECK (balance_fen >= 0),
    lifetime_points bigint      NOT NULL CHECK (lifetime_points >= 0),
    -- Sequence of the last event applied to this row.
    version         bigint      NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, member_id)
);
CREATE INDEX rm_members_card ON rm_members (tenant_id, card_no);
CREATE INDEX rm_members_openid ON rm_members (tenant_id, openid) WHERE openid IS NOT NULL;

-- Points and cash history per member, one line per event that moved points or cash,
-- with the figures after it.
CREATE TABLE rm_member_ledger (
    tenant_id         text        NOT NULL,
    member_id         text        NOT NULL,
    sequence          bigint      NOT NULL,
    event_id          uuid        NOT NULL,
    event_type        text        NOT NULL,
    recorded_at       timestamptz NOT NULL,
    points_delta      bigint      NOT NULL,
    held_delta        bigint      NOT NULL,
    cash_delta_fen    bigint      NOT NULL,
    points_after      bigint      NOT NULL,
    held_after        bigint      NOT NULL,
    balance_after_fen bigint      NOT NULL,
    actor             text        NOT NULL,
    reason            text        NOT NULL,
    reference         text        NULL,
    idempotency_key   text        NOT NULL,
    PRIMARY KEY (tenant_id, member_id, sequence)
);

GRANT SELECT, INSERT, UPDATE, DELETE ON projection_checkpoints TO wxcm_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON projection_dead_letters TO wxcm_app;
GRANT USAGE ON SEQUENCE projection_dead_letters_id_seq TO wxcm_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON rm_members TO wxcm_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON rm_member_ledger TO wxcm_app;
