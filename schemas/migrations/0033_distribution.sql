-- Distribution (issue 15, items 1 and 2): distributors and bindings.
--
-- - `distribution_settings`: one row per tenant (enrolment policy, binding
--   mode, commission depth, default rates, new-member reward), written by the
--   admin API (not events; idempotent by key in `keyed_requests`).
-- - `distributors`: a distributor stream's standing, its short code and its
--   scene QR, written by a trigger on the `distributor` stream's events in
--   the same transaction (so the audit queue, the list and the code lookup are
--   never behind the events); the QR ticket is filled by the application once
--   WeChat made it.
-- - `distribution_bindings`: every binding ever made (append-only history:
--   who was bound to whom, when, by which route, replacing whom), and
--   `distribution_current_bindings`, each member's current distributor. Both
--   are written only under the tenant's binding lock
--   (`pg_advisory_xact_lock(hashtextextended('wxcm_binding/' || tenant, 0))`),
--   in the transaction that read the candidate's whole ancestor chain.
-- - `distribution_rewards`: the one new-member reward a person (tenant,
--   openid) ever earns a distributor, keyed by
--   `binding::new_member_reward_key`; never deleted with a member.

CREATE TABLE distribution_settings (
    tenant_id  text        PRIMARY KEY,
    settings   jsonb       NOT NULL,
    updated_at timestamptz NOT NULL,
    updated_by text        NOT NULL
);
GRANT SELECT, INSERT, UPDATE ON distribution_settings TO wxcm_app;

CREATE TABLE distributors (
    tenant_id      text        NOT NULL,
    member_id      text        NOT NULL,
    distributor_id text        NOT NULL,
    standing       text        NOT NULL CHECK (standing IN ('applied', 'rejected', 'active', 'suspended')),
    code           text        NOT NULL,
    route          text        NULL,
    reason         text        NULL,
    applied_at     timestamptz NULL,
    enrolled_at    timestamptz NULL,
    updated_at     timestamptz NOT NULL,
    qr_appid       text        NULL,
    qr_ticket      text        NULL,
    qr_url         text        NULL,
    PRIMARY KEY (tenant_id, member_id),
    UNIQUE (tenant_id, code),
    UNIQUE (distributor_id)
);
-- The audit queue (oldest application first) and the list by standing.
CREATE INDEX distributors_standing ON distributors (tenant_id, standing, updated_at, member_id);
GRANT SELECT ON distributors TO wxcm_app;
GRANT UPDATE (qr_appid, qr_ticket, qr_url) ON distributors TO wxcm_app;

-- 8 characters of Crockford's alphabet from SHA-256 over (tenant, member,
-- attempt): deterministic, retried with the next attempt on a collision.
CREATE FUNCTION distributor_code(tenant text, member text, attempt int) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    alphabet constant text := '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
    h bytea := sha256(convert_to(tenant || chr(31) || member || chr(31) || attempt::text, 'UTF8'));
    out text := '';
BEGIN
    FOR i IN 0..7 LOOP
        out := out || substr(alphabet, (get_byte(h, i) % 32) + 1, 1);
    END LOOP;
    RETURN out;
END;
$$;

CREATE FUNCTION distributor_events_index() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    body jsonb := NEW.payload -> NEW.event_type;
    member text;
    attempt int := 0;
    done boolean := false;
BEGIN
    IF body IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation', MESSAGE = 'distributor event without its body';
    END IF;
    IF NEW.event_type IN ('DistributorApplied', 'DistributorEnrolled') THEN
        member := body ->> 'member_id';
        IF body ->> 'tenant_id' IS DISTINCT FROM NEW.tenant_id THEN
            RAISE EXCEPTION USING ERRCODE = 'check_violation', MESSAGE = 'distributor event of another tenant';
        END IF;
        UPDATE distributors
           SET standing = CASE NEW.event_type WHEN 'DistributorApplied' THEN 'applied' ELSE 'active' END,
               route = CASE NEW.event_type WHEN 'DistributorApplied' THEN 'application'
                                           ELSE body -> 'route' ->> 'kind' END,
               reason = NULL,
               applied_at = COALESCE((body ->> 'applied_at')::timestamptz, applied_at),
               enrolled_at = (body ->> 'enrolled_at')::timestamptz,
               updated_at = NEW.recorded_at
         WHERE tenant_id = NEW.tenant_id AND distributor_id = NEW.aggregate_id;
        IF FOUND THEN
            RETURN NULL;
        END IF;
        WHILE NOT done LOOP
            INSERT INTO distributors (tenant_id, member_id, distributor_id, standing, code, route, applied_at,
                                      enrolled_at, updated_at)
            VALUES (NEW.tenant_id, member, NEW.aggregate_id,
                    CASE NEW.event_type WHEN 'DistributorApplied' THEN 'applied' ELSE 'active' END,
                    distributor_code(NEW.tenant_id, member, attempt),
                    CASE NEW.event_type WHEN 'DistributorApplied' THEN 'application'
                                        ELSE body -> 'route' ->> 'kind' END,
                    (body ->> 'applied_at')::timestamptz, (body ->> 'enrolled_at')::timestamptz,
                    NEW.recorded_at)
            ON CONFLICT (tenant_id, code) DO NOTHING;
            done := FOUND;
            attempt := attempt + 1;
            IF attempt > 64 THEN
                RAISE EXCEPTION 'no free distributor code';
            END IF;
        END LOOP;
        RETURN NULL;
    END IF;
    UPDATE distributors
       SET standing = CASE NEW.event_type
                          WHEN 'DistributorApproved' THEN 'active'
                          WHEN 'DistributorRejected' THEN 'rejected'
                          WHEN 'DistributorSuspended' THEN 'suspended'
                          WHEN 'DistributorReinstated' THEN 'active'
                      END,
           reason = body ->> 'reason',
           enrolled_at = CASE NEW.event_type WHEN 'DistributorApproved' THEN (body ->> 'approved_at')::timestamptz
                                             ELSE enrolled_at END,
           updated_at = NEW.recorded_at
     WHERE tenant_id = NEW.tenant_id AND distributor_id = NEW.aggregate_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation', MESSAGE = 'distributor event before the distributor';
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER distributor_events_index
    AFTER INSERT ON events
    FOR EACH ROW WHEN (NEW.aggregate_type = 'distributor')
    EXECUTE FUNCTION distributor_events_index();

CREATE TABLE distribution_bindings (
    binding_id     bigserial   PRIMARY KEY,
    tenant_id      text        NOT NULL,
    member_id      text        NOT NULL,
    distributor_id text        NOT NULL,
    replaces       text        NULL,
    route          text        NOT NULL CHECK (route IN ('link', 'qr', 'code')),
    request_key    text        NOT NULL,
    bound_at       timestamptz NOT NULL,
    UNIQUE (tenant_id, request_key)
);
CREATE INDEX distribution_bindings_member ON distribution_bindings (tenant_id, member_id, binding_id);
GRANT SELECT, INSERT ON distribution_bindings TO wxcm_app;
GRANT USAGE ON SEQUENCE distribution_bindings_binding_id_seq TO wxcm_app;

CREATE TABLE distribution_current_bindings (
    tenant_id      text        NOT NULL,
    member_id      text        NOT NULL,
    distributor_id text        NOT NULL,
    bound_at       timestamptz NOT NULL,
    binding_id     bigint      NOT NULL REFERENCES distribution_bindings (binding_id),
    PRIMARY KEY (tenant_id, member_id)
);
-- A distributor's subordinates, in member id order.
CREATE INDEX distribution_current_bindings_distributor
    ON distribution_current_bindings (tenant_id, distributor_id, member_id);
GRANT SELECT, INSERT, UPDATE ON distribution_current_bindings TO wxcm_app;

CREATE TABLE distribution_rewards (
    tenant_id      text        NOT NULL,
    reward_key     uuid        NOT NULL,
    openid         text        NULL,
    member_id      text        NOT NULL,
    distributor_id text        NOT NULL,
    binding_id     bigint      NOT NULL REFERENCES distribution_bindings (binding_id),
    points         bigint      NULL CHECK (points IS NULL OR points > 0),
    created_at     timestamptz NOT NULL,
    granted_at     timestamptz NULL,
    PRIMARY KEY (tenant_id, reward_key)
);
GRANT SELECT, INSERT ON distribution_rewards TO wxcm_app;
GRANT UPDATE (granted_at) ON distribution_rewards TO wxcm_app;
