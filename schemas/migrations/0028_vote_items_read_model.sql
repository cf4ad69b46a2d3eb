-- The live ranking of voting campaigns (issue 14, `projections::votes`):
-- one row per item with its status and votes, fed by the `votes` projector
-- from the campaign events (its checkpoint covers the rows). `votes` is the
-- count the vote's event states (`item_votes_after`), so a replayed event
-- sets the same value. A campaign holds at most 200 items.

CREATE TABLE rm_vote_items (
    tenant_id    text        NOT NULL,
    campaign_id  text        NOT NULL,
    item_id      text        NOT NULL,
    title        text        NOT NULL,
    description  text,
    -- The submitting member (NULL: an operator).
    member_id    text,
    status       text        NOT NULL CHECK (status IN ('pending', 'approved', 'rejected')),
    reject_reason text,
    votes        integer     NOT NULL CHECK (votes >= 0),
    submitted_at timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    -- The campaign stream's last event applied to the row.
    version      bigint      NOT NULL,
    PRIMARY KEY (tenant_id, campaign_id, item_id)
);
CREATE INDEX rm_vote_items_ranking ON rm_vote_items (tenant_id, campaign_id, votes DESC, submitted_at, item_id);
GRANT SELECT, INSERT, UPDATE, DELETE ON rm_vote_items TO wxcm_app;
