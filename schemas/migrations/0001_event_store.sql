-- Event store: postgres-es 0.5.0's `events` table plus a tenant column, an event id,
-- a record time and a SHA-256 hash chain per stream, all filled in by triggers so that
-- the application cannot choose them. The hash chain is specified in
-- schemas/event-hash-chain.md; infra/src/hashchain.rs recomputes it byte for byte.
--
-- Never edit this file once it has landed: add a new numbered migration instead.

-- The hash chain hashes text as UTF-8; jsonb only keeps every code point in a UTF-8
-- database, so refuse to build the store anywhere else.
DO $$
BEGIN
    IF current_setting('server_encoding') <> 'UTF8' THEN
        RAISE EXCEPTION 'the wxcm database must use UTF8 encoding, found %',
            current_setting('server_encoding');
    END IF;
END
$$;

-- Application role. Roles are cluster-wide while migrations run per database (tests
-- migrate many databases at once), so a concurrent creation is not an error.
-- Its password, if any, is set outside migrations.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'wxcm_app') THEN
        BEGIN
            CREATE ROLE wxcm_app LOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL; -- created by a concurrent migration of another database
        END;
    END IF;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO wxcm_app', current_database());
END
$$;
GRANT USAGE ON SCHEMA public TO wxcm_app;

-- ---------------------------------------------------------------------------------
-- events
-- ---------------------------------------------------------------------------------

CREATE TABLE events (
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    sequence       bigint      NOT NULL CHECK (sequence >= 1),
    event_type     text        NOT NULL,
    event_version  text        NOT NULL,
    payload        jsonb       NOT NULL,
    metadata       jsonb       NOT NULL,
    -- Filled in by events_before_insert; whatever the client sends is overwritten.
    tenant_id      text        NOT NULL DEFAULT '',
    event_id       uuid        NOT NULL DEFAULT gen_random_uuid() UNIQUE,
    recorded_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    prev_hash      bytea       NOT NULL DEFAULT ''::bytea,
    hash           bytea       NOT NULL DEFAULT ''::bytea,
    -- postgres-es reports a violation of this key (SQLSTATE 23505) as an optimistic
    -- concurrency conflict.
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

COMMENT ON TABLE events IS
    'Append-only event store; hash chain per stream, see schemas/event-hash-chain.md';

-- Lists a tenant's streams: every stream has exactly one row with sequence 1.
CREATE INDEX events_streams_by_tenant
    ON events (tenant_id, aggregate_type, aggregate_id)
    WHERE sequence = 1;

-- F(s) of the hash-chain specification: 4-byte big-endian length, then the UTF-8 bytes.
CREATE FUNCTION event_hash_field(s text) RETURNS bytea
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
    SELECT int4send(octet_length(convert_to(s, 'UTF8'))) || convert_to(s, 'UTF8')
$$;

CREATE FUNCTION events_before_insert() RETURNS trigger
    LANGUAGE plpgsql VOLATILE
    -- pg_temp last: a temporary table must never shadow `events` in the lookup below.
    SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_prev_hash   bytea;
    v_prev_tenant text;
    v_canonical   bytea;
BEGIN
    -- Leave incomplete rows to the NOT NULL and CHECK constraints, which name the column.
    IF NEW.aggregate_type IS NULL OR NEW.aggregate_id IS NULL OR NEW.sequence IS NULL
       OR NEW.sequence < 1 OR NEW.event_type IS NULL OR NEW.event_version IS NULL
       OR NEW.payload IS NULL OR NEW.metadata IS NULL THEN
        RETURN NEW;
    END IF;

    NEW.tenant_id := NEW.metadata->>'tenant_id';
    IF NEW.tenant_id IS NULL OR NEW.tenant_id = '' THEN
        RAISE EXCEPTION USING
            ERRCODE = 'check_violation',
            MESSAGE = 'event without tenant_id',
            DETAIL  = format('%s/%s seq %s: metadata has no tenant_id',
                             NEW.aggregate_type, NEW.aggregate_id, NEW.sequence);
    END IF;
    NEW.event_id := gen_random_uuid();
    NEW.recorded_at := clock_timestamp();

    IF NEW.sequence = 1 THEN
        v_prev_hash := decode(repeat('00', 32), 'hex');
    ELSE
        SELECT e.hash, e.tenant_id INTO v_prev_hash, v_prev_tenant
          FROM events e
         WHERE e.aggregate_type = NEW.aggregate_type
           AND e.aggregate_id = NEW.aggregate_id
           AND e.sequence = NEW.sequence - 1;
        IF NOT FOUND THEN
            RAISE EXCEPTION USING
                ERRCODE = 'check_violation',
                MESSAGE = 'sequence gap',
                DETAIL  = format('%s/%s seq %s: seq %s does not exist',
                                 NEW.aggregate_type, NEW.aggregate_id, NEW.sequence,
                                 NEW.sequence - 1);
        END IF;
        IF v_prev_tenant <> NEW.tenant_id THEN
            RAISE EXCEPTION USING
                ERRCODE = 'check_violation',
                MESSAGE = 'stream belongs to another tenant',
                DETAIL  = format('%s/%s seq %s: event tenant differs from the stream''s',
                                 NEW.aggregate_type, NEW.aggregate_id, NEW.sequence);
        END IF;
    END IF;

    -- Canonical bytes, exactly as in schemas/event-hash-chain.md.
    v_canonical := convert_to('wxcm.event.v1', 'UTF8')
        || event_hash_field(NEW.tenant_id)
        || event_hash_field(NEW.aggregate_type)
        || event_hash_field(NEW.aggregate_id)
        || event_hash_field(NEW.sequence::text)
        || event_hash_field(NEW.event_id::text)
        || event_hash_field(to_char(NEW.recorded_at AT TIME ZONE 'UTC',
                                    'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
        || event_hash_field(NEW.event_type)
        || event_hash_field(NEW.event_version)
        || event_hash_field(NEW.payload::text)
        || event_hash_field(NEW.metadata::text);

    NEW.prev_hash := v_prev_hash;
    NEW.hash := sha256(v_prev_hash || v_canonical);
    RETURN NEW;
END
$$;

CREATE TRIGGER events_before_insert
    BEFORE INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION events_before_insert();

-- Append-only. Privileges already keep wxcm_app from changing rows; this also stops
-- the owner and superusers, short of disabling triggers on purpose.
CREATE FUNCTION events_reject_change() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION USING
        ERRCODE = 'restrict_violation',
        MESSAGE = 'events are append-only',
        HINT    = 'stored events are never rewritten: append a new event or upcast on read';
END
$$;

CREATE TRIGGER events_append_only
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_reject_change();

CREATE TRIGGER events_append_only_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_reject_change();

-- ---------------------------------------------------------------------------------
-- outbox and idempotency keys, written in the same transaction as the events
-- ---------------------------------------------------------------------------------

CREATE TABLE outbox (
    id             bigserial   PRIMARY KEY,
    event_id       uuid        NOT NULL UNIQUE,
    tenant_id      text        NOT NULL,
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    sequence       bigint      NOT NULL,
    event_type     text        NOT NULL,
    recorded_at    timestamptz NOT NULL,
    txid           xid8        NOT NULL DEFAULT pg_current_xact_id(),
    published_at   timestamptz NULL
);

CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;

CREATE TABLE idempotency_keys (
    tenant_id       text        NOT NULL,
    idempotency_key text        NOT NULL,
    request_hash    text        NOT NULL,
    aggregate_type  text        NOT NULL,
    aggregate_id    text        NOT NULL,
    first_sequence  bigint      NOT NULL,
    last_sequence   bigint      NOT NULL,
    txid            xid8        NOT NULL DEFAULT pg_current_xact_id(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, idempotency_key)
);

CREATE FUNCTION events_after_insert() RETURNS trigger
    LANGUAGE plpgsql VOLATILE
    SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    v_idempotency_key text := NEW.metadata->>'idempotency_key';
    v_request_hash    text := NEW.metadata->>'request_hash';
    v_rows            bigint;
BEGIN
    INSERT INTO outbox (event_id, tenant_id, aggregate_type, aggregate_id, sequence,
                        event_type, recorded_at)
    VALUES (NEW.event_id, NEW.tenant_id, NEW.aggregate_type, NEW.aggregate_id,
            NEW.sequence, NEW.event_type, NEW.recorded_at);

    IF v_idempotency_key IS NULL THEN
        RETURN NULL;
    END IF;
    IF v_request_hash IS NULL OR v_request_hash = '' THEN
        RAISE EXCEPTION USING
            ERRCODE = 'check_violation',
            MESSAGE = 'idempotency key without request_hash',
            DETAIL  = format('%s/%s seq %s', NEW.aggregate_type, NEW.aggregate_id,
                             NEW.sequence);
    END IF;

    -- The events of one command share their metadata: the first one claims the key,
    -- the following ones of the same transaction and stream extend the range.
    INSERT INTO idempotency_keys (tenant_id, idempotency_key, request_hash,
                                  aggregate_type, aggregate_id,
                                  first_sequence, last_sequence)
    VALUES (NEW.tenant_id, v_idempotency_key, v_request_hash,
            NEW.aggregate_type, NEW.aggregate_id, NEW.sequence, NEW.sequence)
    ON CONFLICT (tenant_id, idempotency_key) DO UPDATE
        SET last_sequence = EXCLUDED.last_sequence
        WHERE idempotency_keys.txid = pg_current_xact_id()
          AND idempotency_keys.aggregate_type = EXCLUDED.aggregate_type
          AND idempotency_keys.aggregate_id = EXCLUDED.aggregate_id;
    GET DIAGNOSTICS v_rows = ROW_COUNT;
    IF v_rows = 0 THEN
        -- An earlier command used the key. 23505 rolls the whole command back and
        -- postgres-es reports a conflict; the caller then looks the key up. The
        -- constraint name tells this apart from a sequence conflict (events_pkey).
        RAISE EXCEPTION USING
            ERRCODE    = 'unique_violation',
            MESSAGE    = 'idempotency key already used',
            CONSTRAINT = 'idempotency_keys_pkey';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER events_after_insert
    AFTER INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION events_after_insert();

-- ---------------------------------------------------------------------------------
-- aggregate snapshots: a cache of aggregate state, not part of the audit
-- ---------------------------------------------------------------------------------

CREATE TABLE aggregate_snapshots (
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    sequence       bigint      NOT NULL,
    state_version  int         NOT NULL,
    state          jsonb       NOT NULL,
    taken_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (aggregate_type, aggregate_id)
);

-- ---------------------------------------------------------------------------------
-- privileges of the application role
-- ---------------------------------------------------------------------------------

GRANT SELECT, INSERT ON events TO wxcm_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON outbox TO wxcm_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON idempotency_keys TO wxcm_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON aggregate_snapshots TO wxcm_app;
GRANT USAGE ON SEQUENCE outbox_id_seq TO wxcm_app;
