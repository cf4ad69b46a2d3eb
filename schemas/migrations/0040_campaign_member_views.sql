-- A member's tickets per period of a periodic lottery, a popularity lottery or
-- a 1-yuan snatch, for the member's "my entries and prizes" page. The campaign
-- aggregate keeps a period's tickets only while the period is open (its state
-- stays small); this index keeps them, written by a trigger in the same
-- transaction as the event, so a member sees an entry as soon as it is
-- answered. The figure is the one the event states (`member_period_after`,
-- `member_shares_after`): replaying an event sets the same value, and rows
-- never go down. Winners and prizes come from the aggregate (the period's draw).
CREATE TABLE campaign_member_periods (
    tenant_id      text        NOT NULL,
    campaign_id    text        NOT NULL,
    member_id      text        NOT NULL,
    period_no      integer     NOT NULL CHECK (period_no >= 1),
    tickets        integer     NOT NULL CHECK (tickets >= 1),
    first_entry_at timestamptz NOT NULL,
    last_entry_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, campaign_id, member_id, period_no)
);
GRANT SELECT ON campaign_member_periods TO wxcm_app;

CREATE FUNCTION campaign_member_periods_index() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    body    jsonb;
    tickets integer;
    at      timestamptz;
BEGIN
    IF NEW.event_type = 'CampaignEntryRecorded' THEN
        body := NEW.payload -> 'CampaignEntryRecorded';
        tickets := (body ->> 'member_period_after')::integer;
        at := (body ->> 'entered_at')::timestamptz;
    ELSE
        body := NEW.payload -> 'SnatchSharesConfirmed';
        tickets := (body ->> 'member_shares_after')::integer;
        at := (body ->> 'confirmed_at')::timestamptz;
    END IF;
    IF body IS NULL OR tickets IS NULL OR at IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation',
            MESSAGE = NEW.event_type || ' without its member figures';
    END IF;
    INSERT INTO campaign_member_periods AS p
           (tenant_id, campaign_id, member_id, period_no, tickets, first_entry_at, last_entry_at)
    VALUES (NEW.tenant_id, NEW.aggregate_id, body ->> 'member_id', (body ->> 'period_no')::integer, tickets, at, at)
    ON CONFLICT (tenant_id, campaign_id, member_id, period_no) DO UPDATE
       SET tickets = GREATEST(p.tickets, EXCLUDED.tickets),
           first_entry_at = LEAST(p.first_entry_at, EXCLUDED.first_entry_at),
           last_entry_at = GREATEST(p.last_entry_at, EXCLUDED.last_entry_at);
    RETURN NULL;
END;
$$;

CREATE TRIGGER campaign_member_periods_index
    AFTER INSERT ON events
    FOR EACH ROW WHEN (NEW.aggregate_type = 'campaign'
                       AND NEW.event_type IN ('CampaignEntryRecorded', 'SnatchSharesConfirmed'))
    EXECUTE FUNCTION campaign_member_periods_index();

-- Campaigns that ran before this index: fill it from their events.
INSERT INTO campaign_member_periods (tenant_id, campaign_id, member_id, period_no, tickets, first_entry_at, last_entry_at)
SELECT tenant_id, aggregate_id, member_id, period_no, max(tickets), min(at), max(at)
  FROM (SELECT tenant_id, aggregate_id,
               coalesce(payload -> 'CampaignEntryRecorded', payload -> 'SnatchSharesConfirmed') ->> 'member_id' AS member_id,
               (coalesce(payload -> 'CampaignEntryRecorded', payload -> 'SnatchSharesConfirmed') ->> 'period_no')::integer AS period_no,
               coalesce((payload -> 'CampaignEntryRecorded' ->> 'member_period_after')::integer,
                        (payload -> 'SnatchSharesConfirmed' ->> 'member_shares_after')::integer) AS tickets,
               coalesce((payload -> 'CampaignEntryRecorded' ->> 'entered_at')::timestamptz,
                        (payload -> 'SnatchSharesConfirmed' ->> 'confirmed_at')::timestamptz) AS at
          FROM events
         WHERE aggregate_type = 'campaign' AND event_type IN ('CampaignEntryRecorded', 'SnatchSharesConfirmed')) e
 GROUP BY tenant_id, aggregate_id, member_id, period_no;

-- Physical prizes won, per member across campaigns, for the staff console's
-- "prizes to hand over" (a member shows up at the counter; staff see what is
-- waiting). Written by a trigger in the same transaction as the shake or the
-- draw that awarded it and marked handed over by `CampaignPrizeHandedOver`;
-- `award_key` is the campaign state's key of the award (`AwardRef::key`:
-- `period:<n>:rank:<r>` or `shake:<member>:<nonce>`). The campaign's name is
-- the one in force when the prize was won.
CREATE TABLE campaign_physical_awards (
    tenant_id      text        NOT NULL,
    campaign_id    text        NOT NULL,
    award_key      text        NOT NULL,
    member_id      text        NOT NULL,
    award          jsonb       NOT NULL,
    item           text        NOT NULL,
    campaign_name  text        NOT NULL,
    won_at         timestamptz NOT NULL,
    handed_over_at timestamptz,
    PRIMARY KEY (tenant_id, campaign_id, award_key)
);
CREATE INDEX campaign_physical_awards_member ON campaign_physical_awards (tenant_id, member_id, won_at DESC);
GRANT SELECT ON campaign_physical_awards TO wxcm_app;

CREATE FUNCTION campaign_physical_awards_apply(e events) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    body  jsonb;
    d     jsonb;
    name  text;
BEGIN
    IF e.event_type = 'CampaignPrizeHandedOver' THEN
        body := e.payload -> 'CampaignPrizeHandedOver';
        UPDATE campaign_physical_awards
           SET handed_over_at = (body ->> 'handed_over_at')::timestamptz
         WHERE tenant_id = e.tenant_id AND campaign_id = e.aggregate_id
           AND award_key = CASE body -> 'award' ->> 'kind'
                   WHEN 'period' THEN 'period:' || (body -> 'award' ->> 'period_no') || ':rank:' || (body -> 'award' ->> 'rank')
                   ELSE 'shake:' || (body -> 'award' ->> 'member_id') || ':' || (body -> 'award' ->> 'nonce')
               END
           AND handed_over_at IS NULL;
        RETURN;
    END IF;
    SELECT coalesce(payload -> 'CampaignCreated' -> 'terms', payload -> 'CampaignEdited' -> 'terms') ->> 'name'
      INTO name
      FROM events
     WHERE aggregate_type = e.aggregate_type AND aggregate_id = e.aggregate_id
       AND event_type IN ('CampaignCreated', 'CampaignEdited') AND sequence < e.sequence
     ORDER BY sequence DESC LIMIT 1;
    IF e.event_type = 'CampaignShakesDrawn' THEN
        body := e.payload -> 'CampaignShakesDrawn';
        FOR d IN SELECT * FROM jsonb_array_elements(body -> 'draws') LOOP
            IF d -> 'prize' ->> 'kind' = 'physical' THEN
                INSERT INTO campaign_physical_awards
                       (tenant_id, campaign_id, award_key, member_id, award, item, campaign_name, won_at)
                VALUES (e.tenant_id, e.aggregate_id, 'shake:' || (d ->> 'member_id') || ':' || (d ->> 'nonce'),
                        d ->> 'member_id',
                        jsonb_build_object('kind', 'shake', 'member_id', d -> 'member_id', 'nonce', d -> 'nonce'),
                        d -> 'prize' ->> 'item', coalesce(name, ''), (body ->> 'drawn_at')::timestamptz)
                ON CONFLICT DO NOTHING;
            END IF;
        END LOOP;
    ELSIF e.event_type = 'CampaignPeriodDrawn' THEN
        body := e.payload -> 'CampaignPeriodDrawn';
        FOR d IN SELECT * FROM jsonb_array_elements(body -> 'winners') LOOP
            IF d -> 'prize' ->> 'kind' = 'physical' THEN
                INSERT INTO campaign_physical_awards
                       (tenant_id, campaign_id, award_key, member_id, award, item, campaign_name, won_at)
                VALUES (e.tenant_id, e.aggregate_id,
                        'period:' || (body ->> 'period_no') || ':rank:' || (d ->> 'rank'), d ->> 'member_id',
                        jsonb_build_object('kind', 'period', 'period_no', body -> 'period_no', 'rank', d -> 'rank'),
                        d -> 'prize' ->> 'item', coalesce(name, ''), (body ->> 'drawn_at')::timestamptz)
                ON CONFLICT DO NOTHING;
            END IF;
        END LOOP;
    END IF;
END;
$$;

CREATE FUNCTION campaign_physical_awards_index() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
BEGIN
    PERFORM campaign_physical_awards_apply(NEW);
    RETURN NULL;
END;
$$;

CREATE TRIGGER campaign_physical_awards_index
    AFTER INSERT ON events
    FOR EACH ROW WHEN (NEW.aggregate_type = 'campaign'
                       AND NEW.event_type IN ('CampaignShakesDrawn', 'CampaignPeriodDrawn', 'CampaignPrizeHandedOver'))
    EXECUTE FUNCTION campaign_physical_awards_index();

-- Prizes won before this index, in stream order (a hand-over after its award).
DO $$
DECLARE
    e events;
BEGIN
    FOR e IN SELECT * FROM events
              WHERE aggregate_type = 'campaign'
                AND event_type IN ('CampaignShakesDrawn', 'CampaignPeriodDrawn', 'CampaignPrizeHandedOver')
              ORDER BY aggregate_id, sequence LOOP
        PERFORM campaign_physical_awards_apply(e);
    END LOOP;
END;
$$;
