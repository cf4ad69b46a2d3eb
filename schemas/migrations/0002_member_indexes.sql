-- Indexes the member aggregate needs to be consistent with in the same
-- transaction as its events (set validation and due work), maintained by a
-- trigger so no writer can bypass them. They are derived from events and
-- could be rebuilt from them; the events stay the source of truth.

-- (tenant, card number) and (tenant, openid) are unique: the trigger makes a
-- second registration fail with unique_violation, which the application
-- treats as an optimistic conflict and retries.
CREATE TABLE member_identities (
    tenant_id   text NOT NULL,
    member_id   text NOT NULL,
    card_no     text NOT NULL,
    openid      text NULL,
    registered_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, member_id)
);
CREATE UNIQUE INDEX member_identities_card ON member_identities (tenant_id, card_no);
CREATE UNIQUE INDEX member_identities_openid ON member_identities (tenant_id, openid) WHERE openid IS NOT NULL;

-- Card serials: unique per shard, hence per tenant. Gaps are harmless.
CREATE SEQUENCE card_serial START 1 MAXVALUE 999999999 NO CYCLE;

-- Work that becomes due at a time (points expiry now; later draws, coupon
-- expiry, payment reconciliation). Written with the event that causes it;
-- deleted by the scheduler only after the work's command committed.
CREATE TABLE due_work (
    id             bigserial PRIMARY KEY,
    tenant_id      text NOT NULL,
    aggregate_type text NOT NULL,
    aggregate_id   text NOT NULL,
    kind           text NOT NULL,
    due_at         timestamptz NOT NULL,
    source_event_id uuid NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX due_work_due ON due_work (due_at, id);

CREATE FUNCTION member_events_index() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    body jsonb;
BEGIN
    IF NEW.aggregate_type <> 'member' THEN
        RETURN NULL;
    END IF;
    IF NEW.event_type = 'MemberRegistered' THEN
        body := NEW.payload -> 'MemberRegistered';
        IF body IS NULL OR body ->> 'tenant_id' IS DISTINCT FROM NEW.tenant_id
           OR body ->> 'member_id' IS DISTINCT FROM NEW.aggregate_id THEN
            RAISE EXCEPTION USING ERRCODE = 'check_violation',
                MESSAGE = 'MemberRegistered does not match its stream';
        END IF;
        INSERT INTO member_identities (tenant_id, member_id, card_no, openid, registered_at)
        VALUES (NEW.tenant_id, NEW.aggregate_id, body ->> 'card_no', body ->> 'openid',
                (body ->> 'registered_at')::timestamptz);
    ELSIF NEW.event_type = 'PointsGranted' THEN
        body := NEW.payload -> 'PointsGranted';
        IF body ->> 'expires_at' IS NOT NULL THEN
            INSERT INTO due_work (tenant_id, aggregate_type, aggregate_id, kind, due_at, source_event_id)
            VALUES (NEW.tenant_id, NEW.aggregate_type, NEW.aggregate_id, 'points_expiry',
                    (body ->> 'expires_at')::timestamptz, NEW.event_id);
        END IF;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER member_events_index
    AFTER INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION member_events_index();

GRANT SELECT ON member_identities TO wxcm_app;
GRANT SELECT, DELETE ON due_work TO wxcm_app;
GRANT USAGE ON SEQUENCE card_serial TO wxcm_app;
