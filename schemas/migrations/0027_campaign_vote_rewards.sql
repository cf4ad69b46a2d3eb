-- Voting campaigns (issue 14, `commands::campaigns::voting`): a member's item
-- approved with a reward earns its points once.
--
-- In the same transaction as `CampaignVoteItemApproved` stating a reward,
-- this trigger writes due work `campaign_vote_reward` (aggregate id
-- `<campaign>/<item>`) 30 s later: the approving request grants the points at
-- once under a key of campaign and item, and the due item grants under the
-- same key (a replay, or the grant itself when that request died in between).
-- An item is approved once (the aggregate refuses a second approval), so one
-- event, and one due item, per item.

CREATE FUNCTION campaign_vote_reward_due() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    body jsonb;
BEGIN
    body := NEW.payload -> 'CampaignVoteItemApproved';
    IF body IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation',
            MESSAGE = 'CampaignVoteItemApproved without its body';
    END IF;
    IF jsonb_typeof(body -> 'reward') = 'number' THEN
        INSERT INTO due_work (tenant_id, aggregate_type, aggregate_id, kind, due_at, source_event_id)
        VALUES (NEW.tenant_id, NEW.aggregate_type, NEW.aggregate_id || '/' || (body ->> 'item_id'),
                'campaign_vote_reward', NEW.recorded_at + interval '30 seconds', NEW.event_id);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER campaign_vote_reward_due
    AFTER INSERT ON events
    FOR EACH ROW WHEN (NEW.aggregate_type = 'campaign' AND NEW.event_type = 'CampaignVoteItemApproved')
    EXECUTE FUNCTION campaign_vote_reward_due();
