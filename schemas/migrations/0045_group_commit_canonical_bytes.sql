-- The group committer computes the canonical bytes (issue 11, section 3).
--
-- Measured per row (20,000 deposits into 20,000 streams by one INSERT ...
-- SELECT, rolled back; BENCHMARKS.md): 73-85 us with 0014's trigger, of which
-- building the canonical bytes of schemas/event-hash-chain.md in PL/pgSQL
-- (both jsonb texts, to_char, ten length-prefixed fields) was ~16 us and the
-- outbox and idempotency rows, one SPI statement each, ~34 us; 43-50 us with
-- this migration's path. The group committer
-- (infra/store/src/group_commit.rs) now sends, for the rows it can render
-- exactly (infra/store/src/jsonb_text.rs), the event id, the record time and
-- the canonical bytes (in `canonical`, an input-only column), and writes the
-- outbox and idempotency rows of its batch in the same statement as the
-- events (data-modifying CTEs: one statement, one transaction).
--
-- For such a row this trigger still sets tenant_id from the metadata and still
-- checks the predecessor (gap, tenant) with the same index probe, then sets
-- prev_hash to the predecessor's hash, and hash := sha256(prev_hash ||
-- canonical); it clears `canonical` (a NOT VALID check keeps it NULL in every
-- stored row, old rows being NULL already) and leaves the outbox and key rows
-- to the statement. Every other row (canonical NULL: postgres-es, tests,
-- anything else) is handled exactly as in 0014. The chain is the same
-- (`wxcm.event.v1`): old and new rows verify with the same audit query.

ALTER TABLE events ADD COLUMN canonical bytea;
ALTER TABLE events ADD CONSTRAINT events_canonical_is_input_only CHECK (canonical IS NULL) NOT VALID;
COMMENT ON COLUMN events.canonical IS
    'Input only, NULL in every stored row: the canonical bytes (schemas/event-hash-chain.md) '
    'computed by the group committer; events_before_insert hashes them and clears them';

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
    IF NEW.canonical IS NULL THEN
        NEW.event_id := gen_random_uuid();
        NEW.recorded_at := clock_timestamp();
    END IF;

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

    NEW.prev_hash := v_prev_hash;
    IF NEW.canonical IS NOT NULL THEN
        -- The group committer's row: its statement writes the outbox and key rows.
        NEW.hash := sha256(v_prev_hash || NEW.canonical);
        NEW.canonical := NULL;
        RETURN NEW;
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
