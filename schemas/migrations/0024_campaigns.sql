-- Campaigns (issue 14): `campaign` streams in `events`.
--
-- - `campaign_seeds`: draw seeds sealed with the deployment's secret key
--   (`SecretSealer`), written once before the event that records their
--   commitment: a shake lottery's (period 0) before `CampaignScheduled`, a
--   periodic lottery's one per period before `CampaignPeriodOpened`; a seed
--   reaches an event only in `CampaignShakeSeedRevealed` (after the campaign
--   ended) or `CampaignPeriodDrawn`.
-- - In the same transaction as the events (AFTER INSERT triggers):
--   - `CampaignScheduled` → due work `campaign_start` at `starts_at` and
--     `campaign_end` at `ends_at` (the terms in force: the last
--     `CampaignCreated`/`CampaignEdited` of the stream);
--   - `CampaignShakesDrawn` → one `campaign_shakes` row per draw (a member's
--     shakes without scanning the stream), and for each points or coupon prize
--     due work `campaign_prize` (aggregate id `<campaign>/<member>/<nonce>`)
--     30 s later: the shake's request issues the prize at once, keyed by
--     campaign and award; the due item issues it again under the same key
--     (a replay) or for the first time when that request died in between;
--   - `CampaignPeriodOpened` → due work `campaign_period_draw` (aggregate id
--     `<campaign>/<period>`) at the period's end;
--   - `CampaignPeriodDrawn` → due work `campaign_prize` (aggregate id
--     `<campaign>/period/<period>/<rank>`) 30 s later per points or coupon
--     prize, like a shake's.

CREATE TABLE campaign_seeds (
    tenant_id   text        NOT NULL,
    campaign_id text        NOT NULL,
    -- 0: a shake lottery's seed; n: period n's.
    period_no   integer     NOT NULL CHECK (period_no >= 0),
    sealed      text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, campaign_id, period_no)
);
GRANT SELECT, INSERT ON campaign_seeds TO wxcm_app;

CREATE TABLE campaign_shakes (
    tenant_id   text        NOT NULL,
    campaign_id text        NOT NULL,
    member_id   text        NOT NULL,
    nonce       integer     NOT NULL,
    sequence    bigint      NOT NULL,
    draw        jsonb       NOT NULL,
    drawn_at    timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, campaign_id, member_id, nonce)
);
GRANT SELECT ON campaign_shakes TO wxcm_app;

CREATE FUNCTION campaign_events_index() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    body  jsonb;
    terms jsonb;
    d     jsonb;
    w     jsonb;
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
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER campaign_events_index
    AFTER INSERT ON events
    FOR EACH ROW WHEN (NEW.aggregate_type = 'campaign'
                       AND NEW.event_type IN ('CampaignScheduled', 'CampaignShakesDrawn',
                                              'CampaignPeriodOpened', 'CampaignPeriodDrawn'))
    EXECUTE FUNCTION campaign_events_index();
