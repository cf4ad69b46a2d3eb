-- The WeChat token center (gateways::wechat_api::tokens, stored by infra/src/tokens.rs),
-- on the control shard (`default_shard`). One row per (kind, appid): the shared token,
-- a generation bumped by every refresh (compare-and-set), and the lease that lets
-- exactly one node of the cluster refresh it.
--
-- Never edit this file once it has landed: add a new numbered migration instead.

CREATE TABLE wechat_tokens (
    kind        text NOT NULL CHECK (kind IN ('access_token', 'authorizer_token', 'component_token', 'jsapi_ticket')),
    appid       text NOT NULL CHECK (length(appid) BETWEEN 1 AND 64),
    token       text CHECK (length(token) <= 1024),
    generation  bigint NOT NULL DEFAULT 0 CHECK (generation >= 0),
    expires_at  timestamptz,
    lease_owner text CHECK (length(lease_owner) <= 128),
    lease_until timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, appid),
    CHECK ((token IS NULL) = (expires_at IS NULL)),
    CHECK ((lease_owner IS NULL) = (lease_until IS NULL))
);

-- Losing an authorizer refresh token means the merchant must authorize again (61023):
-- it is kept durably, sealed with the tenant-secret key (SecretSealer).
CREATE TABLE wechat_authorizer_credentials (
    authorizer_appid     text PRIMARY KEY CHECK (length(authorizer_appid) BETWEEN 1 AND 64),
    component_appid      text NOT NULL CHECK (length(component_appid) BETWEEN 1 AND 64),
    refresh_token_sealed text NOT NULL CHECK (length(refresh_token_sealed) <= 2048),
    updated_at           timestamptz NOT NULL DEFAULT now()
);

-- The latest component_verify_ticket (pushed every 10 minutes, valid 12 hours).
CREATE TABLE wechat_component_tickets (
    component_appid text PRIMARY KEY CHECK (length(component_appid) BETWEEN 1 AND 64),
    ticket          text NOT NULL CHECK (length(ticket) BETWEEN 1 AND 512),
    received_at     timestamptz NOT NULL DEFAULT now()
);

GRANT SELECT, INSERT, UPDATE ON wechat_tokens TO wxcm_app;
GRANT SELECT, INSERT, UPDATE ON wechat_authorizer_credentials TO wxcm_app;
GRANT SELECT, INSERT, UPDATE ON wechat_component_tickets TO wxcm_app;
