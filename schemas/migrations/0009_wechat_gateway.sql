-- The WeChat gateway's own records (issue 4). Ledger-relevant outcomes of
-- callbacks (registrations, follows, points) are events in `events`; what is
-- kept here is either derived from events (the account directory) or is
-- operational data that reports read (messages, scene counters, delivery
-- results) or settings that do not touch the ledger (reply rules, menus).

-- appid → tenant, maintained from the tenant's own events in the same
-- transaction, so a callback can find its tenant without scanning tenants.
-- An appid belongs to at most one tenant of a shard (the application checks
-- the other shards before binding).
CREATE TABLE official_account_directory (
    appid      text PRIMARY KEY,
    tenant_id  text NOT NULL,
    mode       text NOT NULL CHECK (mode IN ('direct', 'component')),
    bound_at   timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION tenant_events_index() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    account_appid text;
    mode text;
BEGIN
    IF NEW.event_type = 'OfficialAccountBound' THEN
        account_appid := NEW.payload -> 'OfficialAccountBound' -> 'account' ->> 'appid';
        mode := 'direct';
    ELSIF NEW.event_type = 'ComponentAccountAuthorized' THEN
        account_appid := NEW.payload -> 'ComponentAccountAuthorized' ->> 'appid';
        mode := 'component';
    ELSIF NEW.event_type = 'OfficialAccountUnbound' THEN
        DELETE FROM official_account_directory
         WHERE appid = NEW.payload -> 'OfficialAccountUnbound' ->> 'appid' AND tenant_id = NEW.tenant_id;
        RETURN NULL;
    ELSIF NEW.event_type = 'ComponentAccountDeauthorized' THEN
        DELETE FROM official_account_directory
         WHERE appid = NEW.payload -> 'ComponentAccountDeauthorized' ->> 'appid' AND tenant_id = NEW.tenant_id;
        RETURN NULL;
    ELSE
        RETURN NULL;
    END IF;
    IF account_appid IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation', MESSAGE = NEW.event_type || ' without an appid';
    END IF;
    INSERT INTO official_account_directory AS d (appid, tenant_id, mode, bound_at)
    VALUES (account_appid, NEW.tenant_id, mode, NEW.recorded_at)
    ON CONFLICT (appid) DO UPDATE SET mode = EXCLUDED.mode, bound_at = EXCLUDED.bound_at
     WHERE d.tenant_id = EXCLUDED.tenant_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'unique_violation',
            MESSAGE = 'appid ' || account_appid || ' is bound to another tenant';
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER tenant_events_index
    AFTER INSERT ON events
    FOR EACH ROW WHEN (NEW.aggregate_type = 'tenant')
    EXECUTE FUNCTION tenant_events_index();

-- Accounts bound before this migration: replay the tenant events in order.
DO $$
DECLARE
    e record;
BEGIN
    FOR e IN SELECT tenant_id, event_type, payload, recorded_at FROM events
              WHERE aggregate_type = 'tenant'
                AND event_type IN ('OfficialAccountBound', 'OfficialAccountUnbound')
              ORDER BY recorded_at, aggregate_id, sequence LOOP
        IF e.event_type = 'OfficialAccountBound' THEN
            INSERT INTO official_account_directory (appid, tenant_id, mode, bound_at)
            VALUES (e.payload -> 'OfficialAccountBound' -> 'account' ->> 'appid', e.tenant_id, 'direct', e.recorded_at)
            ON CONFLICT (appid) DO NOTHING;
        ELSE
            DELETE FROM official_account_directory
             WHERE appid = e.payload -> 'OfficialAccountUnbound' ->> 'appid' AND tenant_id = e.tenant_id;
        END IF;
    END LOOP;
END;
$$;

-- WeChat retries a callback it got no answer to within 5 s (3 tries), and any
-- node may receive any try. The first node to insert the claim handles it; a
-- claim whose handler died (not done after a while) can be taken over.
CREATE TABLE wechat_callback_claims (
    appid       text NOT NULL,
    dedup_key   text NOT NULL,
    tenant_id   text NOT NULL,
    claimed_at  timestamptz NOT NULL,
    done_at     timestamptz NULL,
    -- The plaintext passive reply that was produced, served again to a retry.
    reply       text NULL,
    PRIMARY KEY (appid, dedup_key)
);
CREATE INDEX wechat_callback_claims_age ON wechat_callback_claims (claimed_at);

-- Every message and event received (after dedup), for reports and support.
CREATE TABLE wechat_messages (
    id          bigserial PRIMARY KEY,
    tenant_id   text NOT NULL,
    appid       text NOT NULL,
    openid      text NOT NULL,
    msg_type    text NOT NULL,
    event       text NULL,
    event_key   text NULL,
    sent_at     timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    fields      jsonb NOT NULL
);
CREATE INDEX wechat_messages_tenant_time ON wechat_messages (tenant_id, received_at);
CREATE INDEX wechat_messages_openid ON wechat_messages (tenant_id, openid, received_at);

-- Auto-reply rules of a tenant as one ordered document (first keyword rule wins).
CREATE TABLE wechat_reply_rules (
    tenant_id   text PRIMARY KEY,
    rules       jsonb NOT NULL,
    revision    bigint NOT NULL,
    updated_at  timestamptz NOT NULL,
    updated_by  text NOT NULL
);

-- Menus as last saved and as last published, per account.
CREATE TABLE wechat_menus (
    tenant_id     text NOT NULL,
    appid         text NOT NULL,
    menu          jsonb NOT NULL,
    updated_at    timestamptz NOT NULL,
    updated_by    text NOT NULL,
    published_at  timestamptz NULL,
    PRIMARY KEY (tenant_id, appid)
);

-- Scene QR codes and what came through them. `landings` counts every arrival
-- (a follower's SCAN or a subscribe through the code), `follows` subscribes.
CREATE TABLE wechat_scene_qrcodes (
    tenant_id   text NOT NULL,
    appid       text NOT NULL,
    scene       text NOT NULL,
    name        text NULL,
    permanent   boolean NOT NULL DEFAULT false,
    ticket      text NULL,
    url         text NULL,
    expires_at  timestamptz NULL,
    created_at  timestamptz NOT NULL,
    landings    bigint NOT NULL DEFAULT 0 CHECK (landings >= 0),
    follows     bigint NOT NULL DEFAULT 0 CHECK (follows >= 0),
    PRIMARY KEY (tenant_id, appid, scene)
);

-- The last referral link an openid opened (through OAuth) before following.
CREATE TABLE referral_visits (
    tenant_id    text NOT NULL,
    openid       text NOT NULL,
    referrer_id  text NOT NULL,
    visited_at   timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, openid)
);

-- TEMPLATESENDJOBFINISH (one per recipient) and MASSSENDJOBFINISH (one per job).
CREATE TABLE wechat_delivery_results (
    tenant_id    text NOT NULL,
    appid        text NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('template', 'mass')),
    msg_id       bigint NOT NULL,
    openid       text NOT NULL,
    status       text NOT NULL,
    counts       jsonb NULL,
    received_at  timestamptz NOT NULL,
    PRIMARY KEY (appid, kind, msg_id, openid)
);
CREATE INDEX wechat_delivery_results_tenant ON wechat_delivery_results (tenant_id, received_at);

-- Third-party authorizations started from the admin API: the pre-auth code
-- names the tenant the authorized account will be bound to. Platform data,
-- used on the default shard only.
CREATE TABLE component_auth_requests (
    pre_auth_code  text PRIMARY KEY,
    tenant_id      text NOT NULL,
    created_at     timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL
);

GRANT SELECT ON official_account_directory TO wxcm_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON wechat_callback_claims, wechat_reply_rules, wechat_menus,
    wechat_scene_qrcodes, referral_visits, wechat_delivery_results, component_auth_requests TO wxcm_app;
GRANT SELECT, INSERT, DELETE ON wechat_messages TO wxcm_app;
GRANT USAGE ON SEQUENCE wechat_messages_id_seq TO wxcm_app;
