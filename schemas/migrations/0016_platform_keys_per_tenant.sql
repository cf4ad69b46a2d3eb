-- Pay platform public keys belong to a tenant: one tenant registering a key for
-- a merchant id must never change how another tenant's notifications verify.
-- Keys stored before this migration are given to every tenant of this shard
-- that has bound an account with that merchant id (the tenant's own events say
-- which); a key no tenant claims is dropped (register it again with
-- `wxcm pay platform-key --tenant`).

ALTER TABLE pay_platform_keys DROP CONSTRAINT pay_platform_keys_pkey;
ALTER TABLE pay_platform_keys ADD COLUMN tenant_id text;

INSERT INTO pay_platform_keys (tenant_id, mch_id, serial, public_key_pem, added_at)
SELECT DISTINCT e.tenant_id, k.mch_id, k.serial, k.public_key_pem, k.added_at
  FROM pay_platform_keys k
  JOIN events e
    ON e.aggregate_type = 'tenant'
   AND e.event_type = 'OfficialAccountBound'
   AND e.payload -> 'OfficialAccountBound' -> 'account' -> 'pay' ->> 'mch_id' = k.mch_id
 WHERE k.tenant_id IS NULL;

DELETE FROM pay_platform_keys WHERE tenant_id IS NULL;
ALTER TABLE pay_platform_keys ALTER COLUMN tenant_id SET NOT NULL;
ALTER TABLE pay_platform_keys ADD PRIMARY KEY (tenant_id, mch_id, serial);
