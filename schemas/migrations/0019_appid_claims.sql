-- One appid, one tenant, across every shard. `official_account_directory`
-- (0009) is per shard and was checked then acted on; a claim here, on the
-- registry (default) shard, is taken before a bind, so concurrent binders of
-- two tenants on two shards cannot both win: the primary key decides.
-- Every shard gets the table; only the default shard's is used. It starts
-- from this shard's own bindings (other shards' older bindings are still
-- found by asking each shard).
CREATE TABLE appid_claims (
    appid      text        PRIMARY KEY,
    tenant_id  text        NOT NULL,
    claimed_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO appid_claims (appid, tenant_id, claimed_at)
SELECT appid, tenant_id, bound_at FROM official_account_directory
ON CONFLICT DO NOTHING;
GRANT SELECT, INSERT, UPDATE, DELETE ON appid_claims TO wxcm_app;
