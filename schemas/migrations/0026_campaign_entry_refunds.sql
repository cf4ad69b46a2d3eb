-- Paid entries of a periodic lottery (issue 14, `commands::campaigns::periods`).
--
-- Cancels:
-- a cancelled period refunds every paid entry once. In the same transaction
-- as `CampaignPeriodCancelled`, this trigger writes one due item
-- `campaign_entry_refund` per refund the event lists (aggregate id
-- `<campaign>/<period>/<entry>/<member>/<points>`), due at once: the
-- cancelling request refunds inline under a key of campaign and entry, and
-- the due item grants under the same key (a replay, or the refund itself when
-- that request died in between). A period holds at most 100,000 entries
-- (`ENTRIES_PER_PERIOD_MAX`), so one event writes at most that many rows.

CREATE FUNCTION campaign_refunds_due() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    body jsonb;
    r    jsonb;
BEGIN
    body := NEW.payload -> 'CampaignPeriodCancelled';
    IF body IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation',
            MESSAGE = 'CampaignPeriodCancelled without its body';
    END IF;
    FOR r IN SELECT * FROM jsonb_array_elements(body -> 'refunds') LOOP
        INSERT INTO due_work (tenant_id, aggregate_type, aggregate_id, kind, due_at, source_event_id)
        VALUES (NEW.tenant_id, NEW.aggregate_type,
                NEW.aggregate_id || '/' || (body ->> 'period_no') || '/' || (r ->> 'entry_id') || '/'
                    || (r ->> 'member_id') || '/' || (r ->> 'points'),
                'campaign_entry_refund', NEW.recorded_at, NEW.event_id);
    END LOOP;
    RETURN NULL;
END;
$$;

CREATE TRIGGER campaign_refunds_due
    AFTER INSERT ON events
    FOR EACH ROW WHEN (NEW.aggregate_type = 'campaign' AND NEW.event_type = 'CampaignPeriodCancelled')
    EXECUTE FUNCTION campaign_refunds_due();

-- A paid entry holds its cost on the member's ledger (hold id
-- `campaign-entry:<entry>`), records the entry, then spends the hold. In the
-- same transaction as that `PointsHeld`, due work `campaign_entry_hold`
-- (aggregate id `<member>/<the hold's reference>`, the reference naming
-- campaign, period and entry) 10 minutes later settles a hold the request
-- left behind: spent when the entry was recorded, released when it never was,
-- nothing when the hold is gone already.

CREATE FUNCTION campaign_entry_hold_due() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    body jsonb;
BEGIN
    body := NEW.payload -> 'PointsHeld';
    IF body ->> 'hold_id' LIKE 'campaign-entry:%' AND body ->> 'reference' IS NOT NULL THEN
        INSERT INTO due_work (tenant_id, aggregate_type, aggregate_id, kind, due_at, source_event_id)
        VALUES (NEW.tenant_id, NEW.aggregate_type,
                NEW.aggregate_id || '/' || (body ->> 'reference'),
                'campaign_entry_hold', NEW.recorded_at + interval '10 minutes', NEW.event_id);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER campaign_entry_hold_due
    AFTER INSERT ON events
    FOR EACH ROW WHEN (NEW.aggregate_type = 'member' AND NEW.event_type = 'PointsHeld')
    EXECUTE FUNCTION campaign_entry_hold_due();
