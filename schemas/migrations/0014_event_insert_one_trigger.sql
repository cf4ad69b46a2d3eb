-- Performance of the event INSERT, the ledger's hot path. Same rows, same
-- errors, same hash chain (schemas/event-hash-chain.md); two changes:
--
-- 1. The outbox row and the idempotency key are written by the BEFORE trigger
--    instead of a second, AFTER trigger: one PL/pgSQL call per event instead
--    of two, and no queued after-trigger event. Safe because every insert is
--    one statement: if the row then fails (a taken sequence, a constraint),
--    the statement fails and takes the outbox and key rows with it.
-- 2. No `SET search_path` on the function: a SET clause makes every call save,
--    set and restore the setting and recompute the namespace search path.
--    Every table is schema-qualified instead (tables are the only names
--    pg_temp could shadow; functions and operators resolve in pg_catalog
--    first), as 0007 did for event_hash_field.

CREATE OR REPLACE FUNCTION events_before_insert() RETURNS trigger
    LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_prev_hash       bytea;
    v_prev_tenant     text;
    v_canonical       bytea;
    v_idempotency_key text;
    v_request_hash    text;
    v_rows            bigint;
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
          FROM public.events e
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
        || public.event_hash_field(NEW.tenant_id)
        || public.event_hash_field(NEW.aggregate_type)
        || public.event_hash_field(NEW.aggregate_id)
        || public.event_hash_field(NEW.sequence::text)
        || public.event_hash_field(NEW.event_id::text)
        || public.event_hash_field(to_char(NEW.recorded_at AT TIME ZONE 'UTC',
                                           'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
        || public.event_hash_field(NEW.event_type)
        || public.event_hash_field(NEW.event_version)
        || public.event_hash_field(NEW.payload::text)
        || public.event_hash_field(NEW.metadata::text);

    NEW.prev_hash := v_prev_hash;
    NEW.hash := sha256(v_prev_hash || v_canonical);

    INSERT INTO public.outbox (event_id, tenant_id, aggregate_type, aggregate_id, sequence,
                               event_type, recorded_at)
    VALUES (NEW.event_id, NEW.tenant_id, NEW.aggregate_type, NEW.aggregate_id,
            NEW.sequence, NEW.event_type, NEW.recorded_at);

    v_idempotency_key := NEW.metadata->>'idempotency_key';
    IF v_idempotency_key IS NULL THEN
        RETURN NEW;
    END IF;
    v_request_hash := NEW.metadata->>'request_hash';
    IF v_request_hash IS NULL OR v_request_hash = '' THEN
        RAISE EXCEPTION USING
            ERRCODE = 'check_violation',
            MESSAGE = 'idempotency key without request_hash',
            DETAIL  = format('%s/%s seq %s', NEW.aggregate_type, NEW.aggregate_id,
                             NEW.sequence);
    END IF;

    -- The events of one command share their metadata: the first one claims the key,
    -- the following ones of the same transaction and stream extend the range.
    INSERT INTO public.idempotency_keys AS k (tenant_id, idempotency_key, request_hash,
                                              aggregate_type, aggregate_id,
                                              first_sequence, last_sequence)
    VALUES (NEW.tenant_id, v_idempotency_key, v_request_hash,
            NEW.aggregate_type, NEW.aggregate_id, NEW.sequence, NEW.sequence)
    ON CONFLICT (tenant_id, idempotency_key) DO UPDATE
        SET last_sequence = EXCLUDED.last_sequence
        WHERE k.txid = pg_current_xact_id()
          AND k.aggregate_type = EXCLUDED.aggregate_type
          AND k.aggregate_id = EXCLUDED.aggregate_id;
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
    RETURN NEW;
END
$$;

DROP TRIGGER events_after_insert ON events;
DROP FUNCTION events_after_insert();
