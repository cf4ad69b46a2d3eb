-- Admin user management over HTTP (owner only).

-- Idempotency of its writes, which are not events: a write claims its key in
-- its own transaction and stores its answer (the user as it left it; never a
-- password) there, so a retry replays it. Keys are kept 24 hours.
CREATE TABLE admin_user_requests (
    tenant_id       text NOT NULL,
    idempotency_key text NOT NULL,
    request_hash    text NOT NULL,
    outcome         jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, idempotency_key)
);
CREATE INDEX admin_user_requests_created ON admin_user_requests (created_at);

-- Disabling a user, changing its role or password deletes all its sessions.
CREATE INDEX admin_sessions_user ON admin_sessions (tenant_id, username);

GRANT SELECT, INSERT, UPDATE, DELETE ON admin_user_requests TO wxcm_app;
