-- Coupons on mall orders (issue 13): a coupon held by an order awaiting
-- payment is `held` in the read model until the order is paid (redeemed) or
-- ends (active again, or expired).
ALTER TABLE rm_coupons DROP CONSTRAINT rm_coupons_state_check;
ALTER TABLE rm_coupons ADD CONSTRAINT rm_coupons_state_check
    CHECK (state IN ('active', 'held', 'redeemed', 'voided', 'expired'));
