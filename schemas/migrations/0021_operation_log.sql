-- The operation log: every admin and staff write through the admin API
-- (commands::oplog). Append-only for the application: it may insert and read,
-- and delete entries past the retention; never update one.
CREATE TABLE operation_log (
    id                    bigserial   PRIMARY KEY,
    tenant_id             text        NOT NULL,
    at                    timestamptz NOT NULL,
    username              text        NOT NULL,
    role                  text        NOT NULL CHECK (role IN ('owner', 'manager', 'staff', 'auditor')),
    client_ip             text,
    method                text        NOT NULL,
    route                 text        NOT NULL,
    target                text        NOT NULL,
    status                smallint    NOT NULL,
    outcome               text        NOT NULL CHECK (outcome IN ('succeeded', 'refused', 'failed')),
    idempotency_key       text,
    correlation_id        text,
    event_aggregate_type  text,
    event_aggregate_id    text,
    event_first_sequence  bigint,
    event_last_sequence   bigint,
    CHECK ((event_aggregate_type IS NULL) = (event_aggregate_id IS NULL)
       AND (event_aggregate_id IS NULL) = (event_first_sequence IS NULL)
       AND (event_first_sequence IS NULL) = (event_last_sequence IS NULL))
);
-- Pages are newest first per tenant, optionally per user.
CREATE INDEX operation_log_tenant ON operation_log (tenant_id, id DESC);
CREATE INDEX operation_log_tenant_user ON operation_log (tenant_id, username, id DESC);
CREATE INDEX operation_log_at ON operation_log (at);

GRANT SELECT, INSERT, DELETE ON operation_log TO wxcm_app;
GRANT USAGE ON SEQUENCE operation_log_id_seq TO wxcm_app;
