-- Idempotency by key for writes that are not events (commands::keyed_requests):
-- the first request with a key claims it, runs, and keeps its answer here for
-- 24 hours; a retry with the same request replays the answer.
CREATE TABLE keyed_requests (
    tenant_id       text        NOT NULL,
    idempotency_key text        NOT NULL,
    request_hash    text        NOT NULL,
    claimed_at      timestamptz NOT NULL,
    status          smallint,
    body            bytea,
    completed_at    timestamptz,
    PRIMARY KEY (tenant_id, idempotency_key),
    CHECK ((status IS NULL) = (completed_at IS NULL))
);
CREATE INDEX keyed_requests_claimed ON keyed_requests (claimed_at);

GRANT SELECT, INSERT, UPDATE, DELETE ON keyed_requests TO wxcm_app;
