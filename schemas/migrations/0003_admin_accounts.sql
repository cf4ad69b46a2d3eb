-- Admin users and sessions per tenant. Not ledger data, so plain tables.
CREATE TABLE admin_users (
    tenant_id     text NOT NULL,
    username      text NOT NULL,
    password_hash text NOT NULL,
    role          text NOT NULL CHECK (role IN ('owner', 'manager', 'staff', 'auditor')),
    disabled      boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, username)
);

-- Only the SHA-256 of a bearer token is stored.
CREATE TABLE admin_sessions (
    token_hash bytea PRIMARY KEY,
    tenant_id  text NOT NULL,
    username   text NOT NULL,
    role       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    FOREIGN KEY (tenant_id, username) REFERENCES admin_users (tenant_id, username) ON DELETE CASCADE
);
CREATE INDEX admin_sessions_expiry ON admin_sessions (expires_at);

GRANT SELECT, INSERT, UPDATE ON admin_users TO wxcm_app;
GRANT SELECT, INSERT, DELETE ON admin_sessions TO wxcm_app;
