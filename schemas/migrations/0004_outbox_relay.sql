-- Outbox relay (infra/src/relay.rs). The relay selects unpublished rows through the
-- partial index `outbox_unpublished` (0001); this index lets it prune published rows
-- older than the retention without scanning the whole table. Rows leave it again as
-- they are deleted, so it stays as small as the retention window.
--
-- Never edit this file once it has landed: add a new numbered migration instead.

CREATE INDEX outbox_published_at ON outbox (published_at) WHERE published_at IS NOT NULL;
