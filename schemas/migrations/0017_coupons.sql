-- Coupons (issue 13): templates (`coupon_template` streams) and issued coupons
-- (`coupon` streams), both in `events`.
--
-- In the same transaction as a `CouponIssued` event:
-- - `coupon_codes`: the redemption code → coupon, per tenant (a code is looked
--   up only within the staff member's tenant, so another tenant's code is
--   simply unknown); the primary key refuses a (2^-80 likely) duplicate;
-- - due work `coupon_expiry` at the end of the coupon's window.

CREATE TABLE coupon_codes (
    tenant_id   text NOT NULL,
    code        text NOT NULL,
    coupon_id   text NOT NULL,
    template_id text NOT NULL,
    member_id   text NOT NULL,
    issued_at   timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, code)
);
-- A member's coupons, newest first, without waiting for projections.
CREATE INDEX coupon_codes_member ON coupon_codes (tenant_id, member_id, issued_at DESC, coupon_id);

CREATE FUNCTION coupon_events_index() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    body jsonb;
BEGIN
    body := NEW.payload -> 'CouponIssued';
    IF body IS NULL OR body ->> 'tenant_id' IS DISTINCT FROM NEW.tenant_id
       OR body ->> 'coupon_id' IS DISTINCT FROM NEW.aggregate_id THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation',
            MESSAGE = 'CouponIssued does not match its stream';
    END IF;
    INSERT INTO coupon_codes (tenant_id, code, coupon_id, template_id, member_id, issued_at)
    VALUES (NEW.tenant_id, body ->> 'code', NEW.aggregate_id, body ->> 'template_id', body ->> 'member_id',
            (body ->> 'issued_at')::timestamptz);
    INSERT INTO due_work (tenant_id, aggregate_type, aggregate_id, kind, due_at, source_event_id)
    VALUES (NEW.tenant_id, NEW.aggregate_type, NEW.aggregate_id, 'coupon_expiry',
            (body ->> 'valid_until')::timestamptz, NEW.event_id);
    RETURN NULL;
END;
$$;

CREATE TRIGGER coupon_events_index
    AFTER INSERT ON events
    FOR EACH ROW WHEN (NEW.aggregate_type = 'coupon' AND NEW.event_type = 'CouponIssued')
    EXECUTE FUNCTION coupon_events_index();

GRANT SELECT ON coupon_codes TO wxcm_app;

-- Read model: one row per issued coupon (projector `coupons`).
CREATE TABLE rm_coupons (
    tenant_id    text        NOT NULL,
    coupon_id    text        NOT NULL,
    template_id  text        NOT NULL,
    member_id    text        NOT NULL,
    serial       bigint      NOT NULL,
    name         text        NOT NULL,
    benefit      jsonb       NOT NULL,
    channel      text        NOT NULL,
    state        text        NOT NULL CHECK (state IN ('active', 'redeemed', 'voided', 'expired')),
    valid_from   timestamptz NOT NULL,
    valid_until  timestamptz NOT NULL,
    issued_at    timestamptz NOT NULL,
    ended_at     timestamptz NULL,
    ended_by     text        NULL,
    store        text        NULL,
    PRIMARY KEY (tenant_id, coupon_id)
);
CREATE INDEX rm_coupons_member ON rm_coupons (tenant_id, member_id, issued_at DESC, coupon_id);
CREATE INDEX rm_coupons_template ON rm_coupons (tenant_id, template_id, state);
GRANT SELECT, INSERT, UPDATE, DELETE ON rm_coupons TO wxcm_app;

-- Dispatch jobs (operational state; the coupons they issue are events):
-- progress and report, moved one chunk at a time by the scheduler.
CREATE TABLE coupon_dispatch_jobs (
    job_id       uuid        PRIMARY KEY,
    tenant_id    text        NOT NULL,
    template_id  text        NOT NULL,
    target       jsonb       NOT NULL,
    request_hash text        NOT NULL,
    state        text        NOT NULL CHECK (state IN ('running', 'done')),
    cursor       text        NULL,
    processed    bigint      NOT NULL DEFAULT 0 CHECK (processed >= 0),
    issued       bigint      NOT NULL DEFAULT 0 CHECK (issued >= 0),
    refused      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    last_error   text        NULL,
    created_by   text        NOT NULL,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    finished_at  timestamptz NULL
);
CREATE INDEX coupon_dispatch_jobs_running ON coupon_dispatch_jobs (created_at) WHERE state = 'running';
GRANT SELECT, INSERT, UPDATE ON coupon_dispatch_jobs TO wxcm_app;

-- Welcome coupons: templates given to every newly registered member. The set
-- follows the templates' `CouponWelcomeSet` events; a registration of a tenant
-- that has one writes due work `welcome_coupons` in its own transaction (the
-- scheduler then grants each, keyed by template and member: once).
CREATE TABLE welcome_coupon_templates (
    tenant_id   text NOT NULL,
    template_id text NOT NULL,
    PRIMARY KEY (tenant_id, template_id)
);
GRANT SELECT ON welcome_coupon_templates TO wxcm_app;

CREATE FUNCTION coupon_welcome_index() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
BEGIN
    IF (NEW.payload -> 'CouponWelcomeSet' ->> 'on')::boolean THEN
        INSERT INTO welcome_coupon_templates (tenant_id, template_id)
        VALUES (NEW.tenant_id, NEW.aggregate_id) ON CONFLICT DO NOTHING;
    ELSE
        DELETE FROM welcome_coupon_templates WHERE tenant_id = NEW.tenant_id AND template_id = NEW.aggregate_id;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER coupon_welcome_index
    AFTER INSERT ON events
    FOR EACH ROW WHEN (NEW.aggregate_type = 'coupon_template' AND NEW.event_type = 'CouponWelcomeSet')
    EXECUTE FUNCTION coupon_welcome_index();

CREATE FUNCTION member_welcome_coupons() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM welcome_coupon_templates WHERE tenant_id = NEW.tenant_id) THEN
        INSERT INTO due_work (tenant_id, aggregate_type, aggregate_id, kind, due_at, source_event_id)
        VALUES (NEW.tenant_id, NEW.aggregate_type, NEW.aggregate_id, 'welcome_coupons', NEW.recorded_at, NEW.event_id);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER member_welcome_coupons
    AFTER INSERT ON events
    FOR EACH ROW WHEN (NEW.aggregate_type = 'member' AND NEW.event_type = 'MemberRegistered')
    EXECUTE FUNCTION member_welcome_coupons();
