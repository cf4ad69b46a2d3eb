-- Shake lanes (issue 14, `commands::campaigns::lanes`): one `CampaignShakesDrawn`
-- carries the shakes of many requests, each with its own Idempotency-Key. The
-- event's metadata lists them (`shake_requests`: key, request hash, member and
-- nonce of each drawn shake, a JSON array in a string since metadata values are
-- strings) instead of one `idempotency_key`, and this trigger
-- claims every key in `idempotency_keys` (pointing at the event) in the same
-- statement. A key used before raises 23505 naming `idempotency_keys_pkey`, as
-- `events_before_insert` does: the whole batch is rolled back, the lane decides
-- it again shake by shake, and the request with the used key answers its first
-- result. Everything else is 0024's function unchanged.

CREATE OR REPLACE FUNCTION campaign_events_index() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    body   jsonb;
    terms  jsonb;
    d      jsonb;
    w      jsonb;
    r      jsonb;
    v_rows bigint;
BEGIN
    IF NEW.event_type = 'CampaignScheduled' THEN
        SELECT coalesce(payload -> 'CampaignCreated' -> 'terms', payload -> 'CampaignEdited' -> 'terms')
          INTO terms
          FROM events
         WHERE aggregate_type = NEW.aggregate_type AND aggregate_id = NEW.aggregate_id
           AND event_type IN ('CampaignCreated', 'CampaignEdited')
         ORDER BY sequence DESC LIMIT 1;
        IF terms IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'check_violation',
                MESSAGE = 'CampaignScheduled without terms';
        END IF;
        INSERT INTO due_work (tenant_id, aggregate_type, aggregate_id, kind, due_at, source_event_id)
        VALUES (NEW.tenant_id, NEW.aggregate_type, NEW.aggregate_id, 'campaign_start',
                (terms ->> 'starts_at')::timestamptz, NEW.event_id),
               (NEW.tenant_id, NEW.aggregate_type, NEW.aggregate_id, 'campaign_end',
                (terms ->> 'ends_at')::timestamptz, NEW.event_id);
    ELSIF NEW.event_type = 'CampaignPeriodOpened' THEN
        body := NEW.payload -> 'CampaignPeriodOpened';
        INSERT INTO due_work (tenant_id, aggregate_type, aggregate_id, kind, due_at, source_event_id)
        VALUES (NEW.tenant_id, NEW.aggregate_type, NEW.aggregate_id || '/' || (body ->> 'period_no'),
                'campaign_period_draw', (body ->> 'ends_at')::timestamptz, NEW.event_id);
    ELSIF NEW.event_type = 'CampaignPeriodDrawn' THEN
        body := NEW.payload -> 'CampaignPeriodDrawn';
        FOR w IN SELECT * FROM jsonb_array_elements(body -> 'winners') LOOP
            IF w -> 'prize' ->> 'kind' IN ('points', 'coupon') THEN
                INSERT INTO due_work (tenant_id, aggregate_type, aggregate_id, kind, due_at, source_event_id)
                VALUES (NEW.tenant_id, NEW.aggregate_type,
                        NEW.aggregate_id || '/period/' || (body ->> 'period_no') || '/' || (w ->> 'rank'),
                        'campaign_prize', NEW.recorded_at + interval '30 seconds', NEW.event_id);
            END IF;
        END LOOP;
    ELSE
        body := NEW.payload -> 'CampaignShakesDrawn';
        IF body IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'check_violation',
                MESSAGE = 'CampaignShakesDrawn without its body';
        END IF;
        FOR d IN SELECT * FROM jsonb_array_elements(body -> 'draws') LOOP
            INSERT INTO campaign_shakes (tenant_id, campaign_id, member_id, nonce, sequence, draw, drawn_at)
            VALUES (NEW.tenant_id, NEW.aggregate_id, d ->> 'member_id', (d ->> 'nonce')::integer, NEW.sequence,
                    d, (body ->> 'drawn_at')::timestamptz);
            IF d -> 'prize' ->> 'kind' IN ('points', 'coupon') THEN
                INSERT INTO due_work (tenant_id, aggregate_type, aggregate_id, kind, due_at, source_event_id)
                VALUES (NEW.tenant_id, NEW.aggregate_type,
                        NEW.aggregate_id || '/' || (d ->> 'member_id') || '/' || (d ->> 'nonce'),
                        'campaign_prize', NEW.recorded_at + interval '30 seconds', NEW.event_id);
            END IF;
        END LOOP;
        FOR r IN SELECT * FROM jsonb_array_elements(coalesce((NEW.metadata ->> 'shake_requests')::jsonb, '[]'::jsonb)) LOOP
            IF coalesce(r ->> 'idempotency_key', '') = '' OR coalesce(r ->> 'request_hash', '') = '' THEN
                RAISE EXCEPTION USING ERRCODE = 'check_violation',
                    MESSAGE = 'shake request without idempotency_key or request_hash',
                    DETAIL  = format('%s/%s seq %s', NEW.aggregate_type, NEW.aggregate_id, NEW.sequence);
            END IF;
            INSERT INTO idempotency_keys (tenant_id, idempotency_key, request_hash, aggregate_type,
                                          aggregate_id, first_sequence, last_sequence)
            VALUES (NEW.tenant_id, r ->> 'idempotency_key', r ->> 'request_hash', NEW.aggregate_type,
                    NEW.aggregate_id, NEW.sequence, NEW.sequence)
            ON CONFLICT (tenant_id, idempotency_key) DO NOTHING;
            GET DIAGNOSTICS v_rows = ROW_COUNT;
            IF v_rows = 0 THEN
                RAISE EXCEPTION USING
                    ERRCODE    = 'unique_violation',
                    MESSAGE    = 'idempotency key already used',
                    CONSTRAINT = 'idempotency_keys_pkey';
            END IF;
        END LOOP;
    END IF;
    RETURN NULL;
END;
$$;
