-- Commission rules (issue 15, item 3): `commands::commissions`, `commands::mall::orders::change_price`.
--
-- - `distributors.level`: the distributor's level in the tenant's catalog
--   (`commission_settings.settings -> 'distributor_levels'`), kept by the
--   distributor stream's trigger from `DistributorLevelSet` (same transaction
--   as the event). The trigger function is replaced whole: only the
--   `DistributorLevelSet` branch is new.
-- - `commissions.rule` / `commissions.quantity`: the rule a commission was
--   computed with (`{"kind": "rate", "bps": …}` or `{"kind": "fixed_per_unit",
--   "fen": …}`) and the order's quantity, from `CommissionAccrued`; rows
--   written before are filled from their events here. The account trigger
--   function is replaced whole: only the insert's two columns are new.
-- - Mall orders: `MallOrderPriceChanged` / `MallOrderPaymentStarted` need no
--   trigger (no due work; the `mall` projector updates `rm_mall_orders.cash_due_fen`).

ALTER TABLE distributors ADD COLUMN level text NULL;
ALTER TABLE commissions ADD COLUMN rule jsonb NULL, ADD COLUMN quantity integer NULL CHECK (quantity > 0);

UPDATE commissions c
   SET rule = e.payload -> 'CommissionAccrued' -> 'rule',
       quantity = (e.payload -> 'CommissionAccrued' ->> 'quantity')::int
  FROM events e
 WHERE e.aggregate_type = 'commission_account' AND e.event_type = 'CommissionAccrued'
   AND e.tenant_id = c.tenant_id AND e.aggregate_id = c.account_id
   AND e.payload -> 'CommissionAccrued' -> 'key' ->> 'order_id' = c.order_id
   AND (CASE e.payload -> 'CommissionAccrued' -> 'key' ->> 'level' WHEN 'first' THEN 1 ELSE 2 END) = c.level;

CREATE OR REPLACE FUNCTION distributor_events_index() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    body jsonb := NEW.payload -> NEW.event_type;
    member text;
    attempt int := 0;
    done boolean := false;
BEGIN
    IF body IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation', MESSAGE = 'distributor event without its body';
    END IF;
    IF NEW.event_type IN ('DistributorApplied', 'DistributorEnrolled') THEN
        member := body ->> 'member_id';
        IF body ->> 'tenant_id' IS DISTINCT FROM NEW.tenant_id THEN
            RAISE EXCEPTION USING ERRCODE = 'check_violation', MESSAGE = 'distributor event of another tenant';
        END IF;
        UPDATE distributors
           SET standing = CASE NEW.event_type WHEN 'DistributorApplied' THEN 'applied' ELSE 'active' END,
               route = CASE NEW.event_type WHEN 'DistributorApplied' THEN 'application'
                                           ELSE body -> 'route' ->> 'kind' END,
               reason = NULL,
               applied_at = COALESCE((body ->> 'applied_at')::timestamptz, applied_at),
               enrolled_at = (body ->> 'enrolled_at')::timestamptz,
               updated_at = NEW.recorded_at
         WHERE tenant_id = NEW.tenant_id AND distributor_id = NEW.aggregate_id;
        IF FOUND THEN
            RETURN NULL;
        END IF;
        WHILE NOT done LOOP
            INSERT INTO distributors (tenant_id, member_id, distributor_id, standing, code, route, applied_at,
                                      enrolled_at, updated_at)
            VALUES (NEW.tenant_id, member, NEW.aggregate_id,
                    CASE NEW.event_type WHEN 'DistributorApplied' THEN 'applied' ELSE 'active' END,
                    distributor_code(NEW.tenant_id, member, attempt),
                    CASE NEW.event_type WHEN 'DistributorApplied' THEN 'application'
                                        ELSE body -> 'route' ->> 'kind' END,
                    (body ->> 'applied_at')::timestamptz, (body ->> 'enrolled_at')::timestamptz,
                    NEW.recorded_at)
            ON CONFLICT (tenant_id, code) DO NOTHING;
            done := FOUND;
            attempt := attempt + 1;
            IF attempt > 64 THEN
                RAISE EXCEPTION 'no free distributor code';
            END IF;
        END LOOP;
        RETURN NULL;
    END IF;
    IF NEW.event_type = 'DistributorLevelSet' THEN
        UPDATE distributors SET level = body ->> 'level', updated_at = NEW.recorded_at
         WHERE tenant_id = NEW.tenant_id AND distributor_id = NEW.aggregate_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION USING ERRCODE = 'check_violation', MESSAGE = 'distributor event before the distributor';
        END IF;
        RETURN NULL;
    END IF;
    UPDATE distributors
       SET standing = CASE NEW.event_type
                          WHEN 'DistributorApproved' THEN 'active'
                          WHEN 'DistributorRejected' THEN 'rejected'
                          WHEN 'DistributorSuspended' THEN 'suspended'
                          WHEN 'DistributorReinstated' THEN 'active'
                      END,
           reason = body ->> 'reason',
           enrolled_at = CASE NEW.event_type WHEN 'DistributorApproved' THEN (body ->> 'approved_at')::timestamptz
                                             ELSE enrolled_at END,
           updated_at = NEW.recorded_at
     WHERE tenant_id = NEW.tenant_id AND distributor_id = NEW.aggregate_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation', MESSAGE = 'distributor event before the distributor';
    END IF;
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION commission_account_index() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    body jsonb := NEW.payload -> NEW.event_type;
    distributor text;
    lvl smallint;
BEGIN
    IF body IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation', MESSAGE = 'commission account event without its body';
    END IF;
    IF NEW.event_type = 'CommissionAccountOpened' THEN
        IF body ->> 'tenant_id' IS DISTINCT FROM NEW.tenant_id THEN
            RAISE EXCEPTION USING ERRCODE = 'check_violation', MESSAGE = 'commission account of another tenant';
        END IF;
        INSERT INTO commission_accounts (account_id, tenant_id, distributor_id, opened_at)
        VALUES (NEW.aggregate_id, NEW.tenant_id, body ->> 'distributor_id', (body ->> 'opened_at')::timestamptz);
        RETURN NULL;
    END IF;
    SELECT distributor_id INTO distributor FROM commission_accounts
     WHERE account_id = NEW.aggregate_id AND tenant_id = NEW.tenant_id;
    IF distributor IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation', MESSAGE = 'commission account event before the account';
    END IF;
    IF body ? 'key' THEN
        lvl := CASE body -> 'key' ->> 'level' WHEN 'first' THEN 1 ELSE 2 END;
    END IF;
    CASE NEW.event_type
    WHEN 'CommissionAccrued' THEN
        INSERT INTO commissions (tenant_id, order_id, level, distributor_id, account_id, buyer_id, basis_fen,
                                 amount_fen, state, accrued_at, rule, quantity)
        VALUES (NEW.tenant_id, body -> 'key' ->> 'order_id', lvl, distributor, NEW.aggregate_id,
                body ->> 'buyer_id', (body ->> 'basis_fen')::bigint, (body ->> 'amount_fen')::bigint, 'pending',
                (body ->> 'accrued_at')::timestamptz, body -> 'rule', (body ->> 'quantity')::int);
    WHEN 'CommissionSettled' THEN
        UPDATE commissions SET state = 'settled', settled_at = (body ->> 'settled_at')::timestamptz
         WHERE tenant_id = NEW.tenant_id AND order_id = body -> 'key' ->> 'order_id' AND level = lvl;
    WHEN 'CommissionReversed' THEN
        UPDATE commissions SET state = 'reversed', ended_at = (body ->> 'reversed_at')::timestamptz
         WHERE tenant_id = NEW.tenant_id AND order_id = body -> 'key' ->> 'order_id' AND level = lvl;
    WHEN 'CommissionClawedBack' THEN
        UPDATE commissions SET state = 'clawed_back', ended_at = (body ->> 'clawed_back_at')::timestamptz
         WHERE tenant_id = NEW.tenant_id AND order_id = body -> 'key' ->> 'order_id' AND level = lvl;
    WHEN 'WithdrawalRequested' THEN
        INSERT INTO commission_withdrawals (withdrawal_id, tenant_id, distributor_id, account_id, amount_fen,
                                            fee_fen, payout_fen, state, requested_at, updated_at)
        VALUES (body ->> 'withdrawal_id', NEW.tenant_id, distributor, NEW.aggregate_id,
                (body ->> 'amount_fen')::bigint, (body ->> 'fee_fen')::bigint, (body ->> 'payout_fen')::bigint,
                'requested', (body ->> 'requested_at')::timestamptz, NEW.recorded_at);
    ELSE
        UPDATE commission_withdrawals
           SET state = CASE NEW.event_type
                           WHEN 'WithdrawalApproved' THEN 'approved'
                           WHEN 'WithdrawalRetried' THEN 'approved'
                           WHEN 'WithdrawalRejected' THEN 'rejected'
                           WHEN 'WithdrawalPaid' THEN 'paid'
                           WHEN 'WithdrawalFailed' THEN 'failed'
                           WHEN 'WithdrawalReturned' THEN 'returned'
                       END,
               reason = COALESCE(body ->> 'reason', reason),
               payout_ref = COALESCE(body ->> 'payout_ref', payout_ref),
               updated_at = NEW.recorded_at
         WHERE withdrawal_id = body ->> 'withdrawal_id' AND tenant_id = NEW.tenant_id;
        IF NEW.event_type IN ('WithdrawalApproved', 'WithdrawalRetried') THEN
            INSERT INTO due_work (tenant_id, aggregate_type, aggregate_id, kind, due_at, source_event_id)
            VALUES (NEW.tenant_id, NEW.aggregate_type, NEW.aggregate_id || '/' || (body ->> 'withdrawal_id'),
                    'commission_payout', NEW.recorded_at + interval '30 seconds', NEW.event_id);
        END IF;
    END CASE;
    RETURN NULL;
END;
$$;
