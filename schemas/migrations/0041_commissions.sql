-- Commissions (issue 15, items 3-5): `commands::commissions`.
--
-- - `commission_settings`: one row per tenant (holding days after delivery,
--   withdrawal minimum and fee), written by the admin API (not events;
--   idempotent by key in `keyed_requests`). A tenant without a row has the
--   defaults of `CommissionSettings::default`.
-- - Process manager triggers on the mall order streams, in the same
--   transaction as the event (so no paid, delivered or refunded order is
--   missed), only in tenants that saved distribution settings:
--     `MallOrderPaid`      → due work `commission_accrue` (aggregate id: the order), at once;
--     `MallOrderDelivered` → `commission_settle` at delivered_at + hold_days;
--     `MallOrderRefunded`  → `commission_reverse`, at once.
--   The scheduler runs each as idempotent commands on the distributors'
--   `commission_account` streams (keys derived from order and level).
-- - `WithdrawalApproved` / `WithdrawalRetried` on a commission account →
--   due work `commission_payout` (aggregate id `<account>/<withdrawal>`) 30 s
--   later: the approving request pays out at once under the withdrawal's key;
--   the due item finishes a payout that request left behind.
-- - Read models kept by a trigger on the `commission_account` events in the
--   same transaction (never behind the stream): `commission_accounts`
--   (account → distributor), `commissions` (one row per order and level: the
--   order's split) and `commission_withdrawals` (the approval queue).

CREATE TABLE commission_settings (
    tenant_id  text        PRIMARY KEY,
    settings   jsonb       NOT NULL,
    updated_at timestamptz NOT NULL,
    updated_by text        NOT NULL
);
GRANT SELECT, INSERT, UPDATE ON commission_settings TO wxcm_app;

CREATE TABLE commission_accounts (
    account_id     text        PRIMARY KEY,
    tenant_id      text        NOT NULL,
    distributor_id text        NOT NULL,
    opened_at      timestamptz NOT NULL,
    UNIQUE (tenant_id, distributor_id)
);
GRANT SELECT ON commission_accounts TO wxcm_app;

CREATE TABLE commissions (
    tenant_id      text        NOT NULL,
    order_id       text        NOT NULL,
    level          smallint    NOT NULL CHECK (level IN (1, 2)),
    distributor_id text        NOT NULL,
    account_id     text        NOT NULL,
    buyer_id       text        NOT NULL,
    basis_fen      bigint      NOT NULL,
    amount_fen     bigint      NOT NULL,
    state          text        NOT NULL CHECK (state IN ('pending', 'settled', 'reversed', 'clawed_back')),
    accrued_at     timestamptz NOT NULL,
    settled_at     timestamptz NULL,
    ended_at       timestamptz NULL,
    seq            bigserial,
    PRIMARY KEY (tenant_id, order_id, level)
);
-- A distributor's commissions, newest first.
CREATE INDEX commissions_distributor ON commissions (tenant_id, distributor_id, seq);
GRANT SELECT ON commissions TO wxcm_app;

CREATE TABLE commission_withdrawals (
    withdrawal_id  text        PRIMARY KEY,
    tenant_id      text        NOT NULL,
    distributor_id text        NOT NULL,
    account_id     text        NOT NULL,
    amount_fen     bigint      NOT NULL,
    fee_fen        bigint      NOT NULL,
    payout_fen     bigint      NOT NULL,
    state          text        NOT NULL
        CHECK (state IN ('requested', 'approved', 'paid', 'rejected', 'failed', 'returned')),
    reason         text        NULL,
    payout_ref     text        NULL,
    requested_at   timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    seq            bigserial
);
CREATE INDEX commission_withdrawals_state ON commission_withdrawals (tenant_id, state, seq);
CREATE INDEX commission_withdrawals_distributor ON commission_withdrawals (tenant_id, distributor_id, seq);
GRANT SELECT ON commission_withdrawals TO wxcm_app;

CREATE FUNCTION mall_order_commission_due() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    body jsonb := NEW.payload -> NEW.event_type;
    hold int;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM distribution_settings WHERE tenant_id = NEW.tenant_id) THEN
        RETURN NULL;
    END IF;
    IF body IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation', MESSAGE = 'mall order event without its body';
    END IF;
    IF NEW.event_type = 'MallOrderPaid' THEN
        INSERT INTO due_work (tenant_id, aggregate_type, aggregate_id, kind, due_at, source_event_id)
        VALUES (NEW.tenant_id, NEW.aggregate_type, NEW.aggregate_id, 'commission_accrue', NEW.recorded_at,
                NEW.event_id);
    ELSIF NEW.event_type = 'MallOrderDelivered' THEN
        SELECT (settings ->> 'hold_days')::int INTO hold FROM commission_settings WHERE tenant_id = NEW.tenant_id;
        INSERT INTO due_work (tenant_id, aggregate_type, aggregate_id, kind, due_at, source_event_id)
        VALUES (NEW.tenant_id, NEW.aggregate_type, NEW.aggregate_id, 'commission_settle',
                (body ->> 'delivered_at')::timestamptz + make_interval(days => COALESCE(hold, 7)), NEW.event_id);
    ELSIF NEW.event_type = 'MallOrderRefunded' THEN
        INSERT INTO due_work (tenant_id, aggregate_type, aggregate_id, kind, due_at, source_event_id)
        VALUES (NEW.tenant_id, NEW.aggregate_type, NEW.aggregate_id, 'commission_reverse', NEW.recorded_at,
                NEW.event_id);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER mall_order_commission_due
    AFTER INSERT ON events
    FOR EACH ROW WHEN (NEW.aggregate_type = 'mall_order'
                       AND NEW.event_type IN ('MallOrderPaid', 'MallOrderDelivered', 'MallOrderRefunded'))
    EXECUTE FUNCTION mall_order_commission_due();

CREATE FUNCTION commission_account_index() RETURNS trigger
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
                                 amount_fen, state, accrued_at)
        VALUES (NEW.tenant_id, body -> 'key' ->> 'order_id', lvl, distributor, NEW.aggregate_id,
                body ->> 'buyer_id', (body ->> 'basis_fen')::bigint, (body ->> 'amount_fen')::bigint, 'pending',
                (body ->> 'accrued_at')::timestamptz);
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

CREATE TRIGGER commission_account_index
    AFTER INSERT ON events
    FOR EACH ROW WHEN (NEW.aggregate_type = 'commission_account')
    EXECUTE FUNCTION commission_account_index();
