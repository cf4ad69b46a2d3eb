-- Refund requests (售后, issue 15): `commands::mall::orders::{request_refund,
-- reject_refund_request, approve_refund_request}` on the mall order stream.
--
-- - `mall_order_index.refund_request`: the order's latest request as the
--   admin list filters it (`open`, `rejected`, `approved`), kept by a trigger
--   on the order's events in their transaction (so an open request is listed
--   at once).
-- - Commission settlement waits while a request is open: the settle due work
--   finds the request open and leaves the commission pending (the account
--   refuses `refund_open`). A rejection writes `commission_settle` again, at
--   max(delivered_at + hold_days, rejected_at), when the order was delivered
--   (an undelivered order's delivery writes it). An approval is a refund,
--   whose `commission_reverse` reverses or claws back as before.

ALTER TABLE mall_order_index
    ADD COLUMN refund_request text NULL CHECK (refund_request IN ('open', 'rejected', 'approved'));
CREATE INDEX mall_order_index_refund_requests ON mall_order_index (tenant_id, refund_request, order_no DESC)
    WHERE refund_request IS NOT NULL;

CREATE FUNCTION mall_order_refund_request_index() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    body jsonb := NEW.payload -> NEW.event_type;
    next_state text;
BEGIN
    IF body IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation', MESSAGE = 'mall order event without its body';
    END IF;
    next_state := CASE NEW.event_type
                      WHEN 'MallOrderRefundRequested' THEN 'open'
                      WHEN 'MallOrderRefundRequestRejected' THEN 'rejected'
                      WHEN 'MallOrderRefunded' THEN
                          CASE WHEN body ? 'approves_request' THEN 'approved' END
                  END;
    IF next_state IS NOT NULL THEN
        UPDATE mall_order_index SET refund_request = next_state
         WHERE tenant_id = NEW.tenant_id AND order_id = NEW.aggregate_id;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER mall_order_refund_request_index
    AFTER INSERT ON events
    FOR EACH ROW WHEN (NEW.aggregate_type = 'mall_order'
                       AND NEW.event_type IN ('MallOrderRefundRequested', 'MallOrderRefundRequestRejected',
                                              'MallOrderRefunded'))
    EXECUTE FUNCTION mall_order_refund_request_index();

CREATE OR REPLACE FUNCTION mall_order_commission_due() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    body jsonb := NEW.payload -> NEW.event_type;
    hold int;
    delivered timestamptz;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM distribution_settings WHERE tenant_id = NEW.tenant_id) THEN
        RETURN NULL;
    END IF;
    IF body IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation', MESSAGE = 'mall order event without its body';
    END IF;
    SELECT (settings ->> 'hold_days')::int INTO hold FROM commission_settings WHERE tenant_id = NEW.tenant_id;
    IF NEW.event_type = 'MallOrderPaid' THEN
        INSERT INTO due_work (tenant_id, aggregate_type, aggregate_id, kind, due_at, source_event_id)
        VALUES (NEW.tenant_id, NEW.aggregate_type, NEW.aggregate_id, 'commission_accrue', NEW.recorded_at,
                NEW.event_id);
    ELSIF NEW.event_type = 'MallOrderDelivered' THEN
        INSERT INTO due_work (tenant_id, aggregate_type, aggregate_id, kind, due_at, source_event_id)
        VALUES (NEW.tenant_id, NEW.aggregate_type, NEW.aggregate_id, 'commission_settle',
                (body ->> 'delivered_at')::timestamptz + make_interval(days => COALESCE(hold, 7)), NEW.event_id);
    ELSIF NEW.event_type = 'MallOrderRefundRequestRejected' THEN
        SELECT (payload -> 'MallOrderDelivered' ->> 'delivered_at')::timestamptz INTO delivered
          FROM events
         WHERE aggregate_type = 'mall_order' AND aggregate_id = NEW.aggregate_id AND tenant_id = NEW.tenant_id
           AND event_type = 'MallOrderDelivered'
         LIMIT 1;
        IF delivered IS NOT NULL THEN
            INSERT INTO due_work (tenant_id, aggregate_type, aggregate_id, kind, due_at, source_event_id)
            VALUES (NEW.tenant_id, NEW.aggregate_type, NEW.aggregate_id, 'commission_settle',
                    GREATEST(delivered + make_interval(days => COALESCE(hold, 7)),
                             (body ->> 'rejected_at')::timestamptz),
                    NEW.event_id);
        END IF;
    ELSIF NEW.event_type = 'MallOrderRefunded' THEN
        INSERT INTO due_work (tenant_id, aggregate_type, aggregate_id, kind, due_at, source_event_id)
        VALUES (NEW.tenant_id, NEW.aggregate_type, NEW.aggregate_id, 'commission_reverse', NEW.recorded_at,
                NEW.event_id);
    END IF;
    RETURN NULL;
END;
$$;

DROP TRIGGER mall_order_commission_due ON events;
CREATE TRIGGER mall_order_commission_due
    AFTER INSERT ON events
    FOR EACH ROW WHEN (NEW.aggregate_type = 'mall_order'
                       AND NEW.event_type IN ('MallOrderPaid', 'MallOrderDelivered', 'MallOrderRefunded',
                                              'MallOrderRefundRequestRejected'))
    EXECUTE FUNCTION mall_order_commission_due();

-- Withdrawals paid by WeChat Pay transfer (商家转账到零钱, `commands::commissions`):
-- `WithdrawalApproved` states the payout method; `WithdrawalTransferRequested`
-- (state `transferring`) the transfer's `out_batch_no`/`out_detail_no`, recorded
-- before Pay is asked. The read model shows both. The `commission_payout` due
-- work written with the approval (0041) asks Pay about a transfer until it is
-- paid or failed. The function below is 0042's (an accrual's rule and
-- quantity) with the transfer's two columns added.
ALTER TABLE commission_withdrawals DROP CONSTRAINT commission_withdrawals_state_check;
ALTER TABLE commission_withdrawals ADD CONSTRAINT commission_withdrawals_state_check
    CHECK (state IN ('requested', 'approved', 'transferring', 'paid', 'rejected', 'failed', 'returned'));
ALTER TABLE commission_withdrawals
    ADD COLUMN payout_method text NULL CHECK (payout_method IN ('balance', 'wechat_transfer')),
    ADD COLUMN transfer_no   text NULL;

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
                           WHEN 'WithdrawalTransferRequested' THEN 'transferring'
                           WHEN 'WithdrawalRejected' THEN 'rejected'
                           WHEN 'WithdrawalPaid' THEN 'paid'
                           WHEN 'WithdrawalFailed' THEN 'failed'
                           WHEN 'WithdrawalReturned' THEN 'returned'
                       END,
               reason = COALESCE(body ->> 'reason', reason),
               payout_ref = COALESCE(body ->> 'payout_ref', payout_ref),
               payout_method = COALESCE(body ->> 'method', payout_method),
               transfer_no = COALESCE(body ->> 'out_detail_no', transfer_no),
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

