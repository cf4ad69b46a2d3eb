-- One AFTER INSERT trigger on events instead of nineteen (issue 11, section 3).
--
-- PostgreSQL parses and compiles every trigger's WHEN clause again for each
-- statement (stringToNode + ExecPrepareQual per trigger and statement), and
-- evaluates all of them for every row. With nineteen side-index triggers that
-- was ~12% of a backend's CPU in `wxcm bench ledger` phase (a) (perf, 7-row
-- group-commit statements that fire none of them), and a 7-row INSERT took
-- 0.37-0.44 ms with them against 0.27-0.31 ms without (rolled-back DO loop of
-- 1,500 statements, BENCHMARKS.md).
--
-- Now one trigger, whose WHEN is the union of the nineteen (a member's ledger
-- events other than registrations, grants and holds pass no trigger at all),
-- calls a dispatcher that tests each former WHEN clause and runs the former
-- function, in the order the triggers fired (by name). Each former trigger
-- function is now a plain function of the inserted row, `name(new events)`,
-- with the same body (`RETURN NULL;` became `RETURN;`), not executable by the
-- application role; it runs as the dispatcher's owner with its search_path, as
-- it did as a SECURITY DEFINER trigger. To change one of them, replace
-- `name(events)`; to add a side index, add a function and a branch here (and
-- widen the WHEN) instead of another trigger.

DROP TRIGGER campaign_entry_hold_due ON events;
DROP FUNCTION campaign_entry_hold_due();

DROP TRIGGER campaign_events_index ON events;
DROP FUNCTION campaign_events_index();

DROP TRIGGER campaign_member_periods_index ON events;
DROP FUNCTION campaign_member_periods_index();

DROP TRIGGER campaign_physical_awards_index ON events;
DROP FUNCTION campaign_physical_awards_index();

DROP TRIGGER campaign_refunds_due ON events;
DROP FUNCTION campaign_refunds_due();

DROP TRIGGER campaign_vote_reward_due ON events;
DROP FUNCTION campaign_vote_reward_due();

DROP TRIGGER commission_account_index ON events;
DROP FUNCTION commission_account_index();

DROP TRIGGER coupon_events_index ON events;
DROP FUNCTION coupon_events_index();

DROP TRIGGER coupon_welcome_index ON events;
DROP FUNCTION coupon_welcome_index();

DROP TRIGGER distributor_events_index ON events;
DROP FUNCTION distributor_events_index();

DROP TRIGGER mall_order_commission_due ON events;
DROP FUNCTION mall_order_commission_due();

DROP TRIGGER mall_order_events_index ON events;
DROP FUNCTION mall_order_events_index();

DROP TRIGGER mall_order_refund_request_index ON events;
DROP FUNCTION mall_order_refund_request_index();

DROP TRIGGER mall_reservation_index ON events;
DROP FUNCTION mall_reservation_index();

DROP TRIGGER member_events_index ON events;
DROP FUNCTION member_events_index();

DROP TRIGGER member_welcome_coupons ON events;
DROP FUNCTION member_welcome_coupons();

DROP TRIGGER payment_events_index ON events;
DROP FUNCTION payment_events_index();

DROP TRIGGER snatch_events_index ON events;
DROP FUNCTION snatch_events_index();

DROP TRIGGER tenant_events_index ON events;
DROP FUNCTION tenant_events_index();

-- Was the trigger campaign_entry_hold_due, WHEN (((NEW.aggregate_type = 'member'::text) AND (NEW.event_type = 'PointsHeld'::text))).
CREATE FUNCTION campaign_entry_hold_due(new events) RETURNS void
LANGUAGE plpgsql AS $fn$
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
    RETURN;
END;
$fn$;
REVOKE ALL ON FUNCTION campaign_entry_hold_due(events) FROM PUBLIC;

-- Was the trigger campaign_events_index, WHEN (((NEW.aggregate_type = 'campaign'::text) AND (NEW.event_type = ANY (ARRAY['CampaignScheduled'::text, 'CampaignShakesDrawn'::text, 'CampaignPeriodOpened'::text, 'CampaignPeriodDrawn'::text])))).
CREATE FUNCTION campaign_events_index(new events) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    body   jsonb;
    terms  jsonb;
    d      jsonb;
    w      jsonb;
    r      jsonb;
    v_rows bigint;
BEGIN
    IF NEW.event_type = 'CampaignScheduled' THEN
        SELECT coalesce(payload -> 'CampaignCreated' -> 'terms', payload -> 'CampaignEdited' -> 'terms')
          INTO terms
          FROM events
         WHERE aggregate_type = NEW.aggregate_type AND aggregate_id = NEW.aggregate_id
           AND event_type IN ('CampaignCreated', 'CampaignEdited')
         ORDER BY sequence DESC LIMIT 1;
        IF terms IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'check_violation',
                MESSAGE = 'CampaignScheduled without terms';
        END IF;
        INSERT INTO due_work (tenant_id, aggregate_type, aggregate_id, kind, due_at, source_event_id)
        VALUES (NEW.tenant_id, NEW.aggregate_type, NEW.aggregate_id, 'campaign_start',
                (terms ->> 'starts_at')::timestamptz, NEW.event_id),
               (NEW.tenant_id, NEW.aggregate_type, NEW.aggregate_id, 'campaign_end',
                (terms ->> 'ends_at')::timestamptz, NEW.event_id);
    ELSIF NEW.event_type = 'CampaignPeriodOpened' THEN
        body := NEW.payload -> 'CampaignPeriodOpened';
        INSERT INTO due_work (tenant_id, aggregate_type, aggregate_id, kind, due_at, source_event_id)
        VALUES (NEW.tenant_id, NEW.aggregate_type, NEW.aggregate_id || '/' || (body ->> 'period_no'),
                'campaign_period_draw', (body ->> 'ends_at')::timestamptz, NEW.event_id);
    ELSIF NEW.event_type = 'CampaignPeriodDrawn' THEN
        body := NEW.payload -> 'CampaignPeriodDrawn';
        FOR w IN SELECT * FROM jsonb_array_elements(body -> 'winners') LOOP
            IF w -> 'prize' ->> 'kind' IN ('points', 'coupon') THEN
                INSERT INTO due_work (tenant_id, aggregate_type, aggregate_id, kind, due_at, source_event_id)
                VALUES (NEW.tenant_id, NEW.aggregate_type,
                        NEW.aggregate_id || '/period/' || (body ->> 'period_no') || '/' || (w ->> 'rank'),
                        'campaign_prize', NEW.recorded_at + interval '30 seconds', NEW.event_id);
            END IF;
        END LOOP;
    ELSE
        body := NEW.payload -> 'CampaignShakesDrawn';
        IF body IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'check_violation',
                MESSAGE = 'CampaignShakesDrawn without its body';
        END IF;
        FOR d IN SELECT * FROM jsonb_array_elements(body -> 'draws') LOOP
            INSERT INTO campaign_shakes (tenant_id, campaign_id, member_id, nonce, sequence, draw, drawn_at)
            VALUES (NEW.tenant_id, NEW.aggregate_id, d ->> 'member_id', (d ->> 'nonce')::integer, NEW.sequence,
                    d, (body ->> 'drawn_at')::timestamptz);
            IF d -> 'prize' ->> 'kind' IN ('points', 'coupon') THEN
                INSERT INTO due_work (tenant_id, aggregate_type, aggregate_id, kind, due_at, source_event_id)
                VALUES (NEW.tenant_id, NEW.aggregate_type,
                        NEW.aggregate_id || '/' || (d ->> 'member_id') || '/' || (d ->> 'nonce'),
                        'campaign_prize', NEW.recorded_at + interval '30 seconds', NEW.event_id);
            END IF;
        END LOOP;
        FOR r IN SELECT * FROM jsonb_array_elements(coalesce((NEW.metadata ->> 'shake_requests')::jsonb, '[]'::jsonb)) LOOP
            IF coalesce(r ->> 'idempotency_key', '') = '' OR coalesce(r ->> 'request_hash', '') = '' THEN
                RAISE EXCEPTION USING ERRCODE = 'check_violation',
                    MESSAGE = 'shake request without idempotency_key or request_hash',
                    DETAIL  = format('%s/%s seq %s', NEW.aggregate_type, NEW.aggregate_id, NEW.sequence);
            END IF;
            INSERT INTO idempotency_keys (tenant_id, idempotency_key, request_hash, aggregate_type,
                                          aggregate_id, first_sequence, last_sequence)
            VALUES (NEW.tenant_id, r ->> 'idempotency_key', r ->> 'request_hash', NEW.aggregate_type,
                    NEW.aggregate_id, NEW.sequence, NEW.sequence)
            ON CONFLICT (tenant_id, idempotency_key) DO NOTHING;
            GET DIAGNOSTICS v_rows = ROW_COUNT;
            IF v_rows = 0 THEN
                RAISE EXCEPTION USING
                    ERRCODE    = 'unique_violation',
                    MESSAGE    = 'idempotency key already used',
                    CONSTRAINT = 'idempotency_keys_pkey';
            END IF;
        END LOOP;
    END IF;
    RETURN;
END;
$fn$;
REVOKE ALL ON FUNCTION campaign_events_index(events) FROM PUBLIC;

-- Was the trigger campaign_member_periods_index, WHEN (((NEW.aggregate_type = 'campaign'::text) AND (NEW.event_type = ANY (ARRAY['CampaignEntryRecorded'::text, 'SnatchSharesConfirmed'::text])))).
CREATE FUNCTION campaign_member_periods_index(new events) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    body    jsonb;
    tickets integer;
    at      timestamptz;
BEGIN
    IF NEW.event_type = 'CampaignEntryRecorded' THEN
        body := NEW.payload -> 'CampaignEntryRecorded';
        tickets := (body ->> 'member_period_after')::integer;
        at := (body ->> 'entered_at')::timestamptz;
    ELSE
        body := NEW.payload -> 'SnatchSharesConfirmed';
        tickets := (body ->> 'member_shares_after')::integer;
        at := (body ->> 'confirmed_at')::timestamptz;
    END IF;
    IF body IS NULL OR tickets IS NULL OR at IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation',
            MESSAGE = NEW.event_type || ' without its member figures';
    END IF;
    INSERT INTO campaign_member_periods AS p
           (tenant_id, campaign_id, member_id, period_no, tickets, first_entry_at, last_entry_at)
    VALUES (NEW.tenant_id, NEW.aggregate_id, body ->> 'member_id', (body ->> 'period_no')::integer, tickets, at, at)
    ON CONFLICT (tenant_id, campaign_id, member_id, period_no) DO UPDATE
       SET tickets = GREATEST(p.tickets, EXCLUDED.tickets),
           first_entry_at = LEAST(p.first_entry_at, EXCLUDED.first_entry_at),
           last_entry_at = GREATEST(p.last_entry_at, EXCLUDED.last_entry_at);
    RETURN;
END;
$fn$;
REVOKE ALL ON FUNCTION campaign_member_periods_index(events) FROM PUBLIC;

-- Was the trigger campaign_physical_awards_index, WHEN (((NEW.aggregate_type = 'campaign'::text) AND (NEW.event_type = ANY (ARRAY['CampaignShakesDrawn'::text, 'CampaignPeriodDrawn'::text, 'CampaignPrizeHandedOver'::text])))).
CREATE FUNCTION campaign_physical_awards_index(new events) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM campaign_physical_awards_apply(NEW);
    RETURN;
END;
$fn$;
REVOKE ALL ON FUNCTION campaign_physical_awards_index(events) FROM PUBLIC;

-- Was the trigger campaign_refunds_due, WHEN (((NEW.aggregate_type = 'campaign'::text) AND (NEW.event_type = 'CampaignPeriodCancelled'::text))).
CREATE FUNCTION campaign_refunds_due(new events) RETURNS void
LANGUAGE plpgsql AS $fn$
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
    RETURN;
END;
$fn$;
REVOKE ALL ON FUNCTION campaign_refunds_due(events) FROM PUBLIC;

-- Was the trigger campaign_vote_reward_due, WHEN (((NEW.aggregate_type = 'campaign'::text) AND (NEW.event_type = 'CampaignVoteItemApproved'::text))).
CREATE FUNCTION campaign_vote_reward_due(new events) RETURNS void
LANGUAGE plpgsql AS $fn$
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
    RETURN;
END;
$fn$;
REVOKE ALL ON FUNCTION campaign_vote_reward_due(events) FROM PUBLIC;

-- Was the trigger commission_account_index, WHEN ((NEW.aggregate_type = 'commission_account'::text)).
CREATE FUNCTION commission_account_index(new events) RETURNS void
LANGUAGE plpgsql AS $fn$
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
        RETURN;
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
    RETURN;
END;
$fn$;
REVOKE ALL ON FUNCTION commission_account_index(events) FROM PUBLIC;

-- Was the trigger coupon_events_index, WHEN (((NEW.aggregate_type = 'coupon'::text) AND (NEW.event_type = 'CouponIssued'::text))).
CREATE FUNCTION coupon_events_index(new events) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    body jsonb;
BEGIN
    body := NEW.payload -> 'CouponIssued';
    IF body IS NULL OR body ->> 'tenant_id' IS DISTINCT FROM NEW.tenant_id
       OR body ->> 'coupon_id' IS DISTINCT FROM NEW.aggregate_id THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation',
            MESSAGE = 'CouponIssued does not match its stream';
    END IF;
    INSERT INTO coupon_codes (tenant_id, code, coupon_id, template_id, member_id, issued_at)
    VALUES (NEW.tenant_id, body ->> 'code', NEW.aggregate_id, body ->> 'template_id', body ->> 'member_id',
            (body ->> 'issued_at')::timestamptz);
    INSERT INTO due_work (tenant_id, aggregate_type, aggregate_id, kind, due_at, source_event_id)
    VALUES (NEW.tenant_id, NEW.aggregate_type, NEW.aggregate_id, 'coupon_expiry',
            (body ->> 'valid_until')::timestamptz, NEW.event_id);
    RETURN;
END;
$fn$;
REVOKE ALL ON FUNCTION coupon_events_index(events) FROM PUBLIC;

-- Was the trigger coupon_welcome_index, WHEN (((NEW.aggregate_type = 'coupon_template'::text) AND (NEW.event_type = 'CouponWelcomeSet'::text))).
CREATE FUNCTION coupon_welcome_index(new events) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    IF (NEW.payload -> 'CouponWelcomeSet' ->> 'on')::boolean THEN
        INSERT INTO welcome_coupon_templates (tenant_id, template_id)
        VALUES (NEW.tenant_id, NEW.aggregate_id) ON CONFLICT DO NOTHING;
    ELSE
        DELETE FROM welcome_coupon_templates WHERE tenant_id = NEW.tenant_id AND template_id = NEW.aggregate_id;
    END IF;
    RETURN;
END;
$fn$;
REVOKE ALL ON FUNCTION coupon_welcome_index(events) FROM PUBLIC;

-- Was the trigger distributor_events_index, WHEN ((NEW.aggregate_type = 'distributor'::text)).
CREATE FUNCTION distributor_events_index(new events) RETURNS void
LANGUAGE plpgsql AS $fn$
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
            RETURN;
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
        RETURN;
    END IF;
    IF NEW.event_type = 'DistributorLevelSet' THEN
        UPDATE distributors SET level = body ->> 'level', updated_at = NEW.recorded_at
         WHERE tenant_id = NEW.tenant_id AND distributor_id = NEW.aggregate_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION USING ERRCODE = 'check_violation', MESSAGE = 'distributor event before the distributor';
        END IF;
        RETURN;
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
    RETURN;
END;
$fn$;
REVOKE ALL ON FUNCTION distributor_events_index(events) FROM PUBLIC;

-- Was the trigger mall_order_commission_due, WHEN (((NEW.aggregate_type = 'mall_order'::text) AND (NEW.event_type = ANY (ARRAY['MallOrderPaid'::text, 'MallOrderDelivered'::text, 'MallOrderRefunded'::text, 'MallOrderRefundRequestRejected'::text])))).
CREATE FUNCTION mall_order_commission_due(new events) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    body jsonb := NEW.payload -> NEW.event_type;
    hold int;
    delivered timestamptz;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM distribution_settings WHERE tenant_id = NEW.tenant_id) THEN
        RETURN;
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
    RETURN;
END;
$fn$;
REVOKE ALL ON FUNCTION mall_order_commission_due(events) FROM PUBLIC;

-- Was the trigger mall_order_events_index, WHEN (((NEW.aggregate_type = 'mall_order'::text) AND (NEW.event_type = ANY (ARRAY['MallOrderPlaced'::text, 'MallOrderPaid'::text, 'MallOrderCancelled'::text, 'MallOrderPaymentArrivedLate'::text, 'MallOrderRefunded'::text])))).
CREATE FUNCTION mall_order_events_index(new events) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    body jsonb;
BEGIN
    IF NEW.event_type = 'MallOrderPlaced' THEN
        body := NEW.payload -> 'MallOrderPlaced';
        IF body IS NULL OR body ->> 'tenant_id' IS DISTINCT FROM NEW.tenant_id
           OR body ->> 'order_id' IS DISTINCT FROM NEW.aggregate_id THEN
            RAISE EXCEPTION USING ERRCODE = 'check_violation',
                MESSAGE = 'MallOrderPlaced does not match its stream';
        END IF;
        -- Every placement follows its reservation (same application, earlier
        -- transaction): an order without an index row is refused.
        UPDATE mall_order_index SET placed = true
         WHERE tenant_id = NEW.tenant_id AND order_id = NEW.aggregate_id
           AND product_id = body ->> 'product_id' AND member_id = body ->> 'member_id';
        IF NOT FOUND THEN
            RAISE EXCEPTION USING ERRCODE = 'check_violation',
                MESSAGE = 'MallOrderPlaced without its reservation';
        END IF;
    ELSE
        INSERT INTO due_work (tenant_id, aggregate_type, aggregate_id, kind, due_at, source_event_id)
        VALUES (NEW.tenant_id, NEW.aggregate_type, NEW.aggregate_id, 'mall_order_settle', NEW.recorded_at,
                NEW.event_id);
    END IF;
    RETURN;
END;
$fn$;
REVOKE ALL ON FUNCTION mall_order_events_index(events) FROM PUBLIC;

-- Was the trigger mall_order_refund_request_index, WHEN (((NEW.aggregate_type = 'mall_order'::text) AND (NEW.event_type = ANY (ARRAY['MallOrderRefundRequested'::text, 'MallOrderRefundRequestRejected'::text, 'MallOrderRefunded'::text])))).
CREATE FUNCTION mall_order_refund_request_index(new events) RETURNS void
LANGUAGE plpgsql AS $fn$
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
    RETURN;
END;
$fn$;
REVOKE ALL ON FUNCTION mall_order_refund_request_index(events) FROM PUBLIC;

-- Was the trigger mall_reservation_index, WHEN (((NEW.aggregate_type = 'mall_product'::text) AND (NEW.event_type = 'ProductStockReserved'::text))).
CREATE FUNCTION mall_reservation_index(new events) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    body jsonb;
BEGIN
    body := NEW.payload -> 'ProductStockReserved';
    IF body IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation',
            MESSAGE = 'ProductStockReserved without its body';
    END IF;
    -- A reservation made again for the same order (a retried placement after
    -- its first was undone) keeps the order's number.
    INSERT INTO mall_order_index (tenant_id, order_id, product_id, member_id, reserved_at, expires_at)
    VALUES (NEW.tenant_id, body ->> 'order_id', NEW.aggregate_id, body ->> 'member_id',
            NEW.recorded_at, (body ->> 'expires_at')::timestamptz)
    ON CONFLICT (tenant_id, order_id) DO UPDATE SET expires_at = EXCLUDED.expires_at
        WHERE mall_order_index.product_id = EXCLUDED.product_id;
    INSERT INTO due_work (tenant_id, aggregate_type, aggregate_id, kind, due_at, source_event_id)
    VALUES (NEW.tenant_id, 'mall_order', body ->> 'order_id', 'mall_order_expiry',
            (body ->> 'expires_at')::timestamptz, NEW.event_id);
    RETURN;
END;
$fn$;
REVOKE ALL ON FUNCTION mall_reservation_index(events) FROM PUBLIC;

-- Was the trigger member_events_index, WHEN (((NEW.aggregate_type = 'member'::text) AND (NEW.event_type = ANY (ARRAY['MemberRegistered'::text, 'PointsGranted'::text])))).
CREATE FUNCTION member_events_index(new events) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    body jsonb;
BEGIN
    IF NEW.aggregate_type <> 'member' THEN
        RETURN;
    END IF;
    IF NEW.event_type = 'MemberRegistered' THEN
        body := NEW.payload -> 'MemberRegistered';
        IF body IS NULL OR body ->> 'tenant_id' IS DISTINCT FROM NEW.tenant_id
           OR body ->> 'member_id' IS DISTINCT FROM NEW.aggregate_id THEN
            RAISE EXCEPTION USING ERRCODE = 'check_violation',
                MESSAGE = 'MemberRegistered does not match its stream';
        END IF;
        INSERT INTO member_identities (tenant_id, member_id, card_no, openid, registered_at)
        VALUES (NEW.tenant_id, NEW.aggregate_id, body ->> 'card_no', body ->> 'openid',
                (body ->> 'registered_at')::timestamptz);
    ELSIF NEW.event_type = 'PointsGranted' THEN
        body := NEW.payload -> 'PointsGranted';
        IF body ->> 'expires_at' IS NOT NULL THEN
            INSERT INTO due_work (tenant_id, aggregate_type, aggregate_id, kind, due_at, source_event_id)
            VALUES (NEW.tenant_id, NEW.aggregate_type, NEW.aggregate_id, 'points_expiry',
                    (body ->> 'expires_at')::timestamptz, NEW.event_id);
        END IF;
    END IF;
    RETURN;
END;
$fn$;
REVOKE ALL ON FUNCTION member_events_index(events) FROM PUBLIC;

-- Was the trigger member_welcome_coupons, WHEN (((NEW.aggregate_type = 'member'::text) AND (NEW.event_type = 'MemberRegistered'::text))).
CREATE FUNCTION member_welcome_coupons(new events) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    IF EXISTS (SELECT 1 FROM welcome_coupon_templates WHERE tenant_id = NEW.tenant_id) THEN
        INSERT INTO due_work (tenant_id, aggregate_type, aggregate_id, kind, due_at, source_event_id)
        VALUES (NEW.tenant_id, NEW.aggregate_type, NEW.aggregate_id, 'welcome_coupons', NEW.recorded_at, NEW.event_id);
    END IF;
    RETURN;
END;
$fn$;
REVOKE ALL ON FUNCTION member_welcome_coupons(events) FROM PUBLIC;

-- Was the trigger payment_events_index, WHEN ((NEW.aggregate_type = 'payment_order'::text)).
CREATE FUNCTION payment_events_index(new events) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    body jsonb;
BEGIN
    IF NEW.aggregate_type <> 'payment_order' THEN
        RETURN;
    END IF;
    IF NEW.event_type = 'PaymentOrderCreated' THEN
        body := NEW.payload -> 'PaymentOrderCreated';
        IF body IS NULL OR body ->> 'tenant_id' IS DISTINCT FROM NEW.tenant_id
           OR body ->> 'order_id' IS DISTINCT FROM NEW.aggregate_id THEN
            RAISE EXCEPTION USING ERRCODE = 'check_violation',
                MESSAGE = 'PaymentOrderCreated does not match its stream';
        END IF;
        INSERT INTO payment_orders_index (tenant_id, order_id, member_id, amount_fen, status,
                                          created_at, expires_at, updated_at)
        VALUES (NEW.tenant_id, NEW.aggregate_id, body ->> 'member_id', (body ->> 'amount_fen')::bigint,
                'created', (body ->> 'created_at')::timestamptz, (body ->> 'expires_at')::timestamptz,
                NEW.recorded_at);
        INSERT INTO due_work (tenant_id, aggregate_type, aggregate_id, kind, due_at, source_event_id)
        VALUES (NEW.tenant_id, NEW.aggregate_type, NEW.aggregate_id, 'payment_expiry',
                (body ->> 'expires_at')::timestamptz, NEW.event_id);
    ELSIF NEW.event_type = 'PaymentOrderPaid' THEN
        UPDATE payment_orders_index SET status = 'paid', updated_at = NEW.recorded_at
        WHERE tenant_id = NEW.tenant_id AND order_id = NEW.aggregate_id;
        INSERT INTO due_work (tenant_id, aggregate_type, aggregate_id, kind, due_at, source_event_id)
        VALUES (NEW.tenant_id, NEW.aggregate_type, NEW.aggregate_id, 'payment_credit',
                NEW.recorded_at, NEW.event_id);
    ELSIF NEW.event_type = 'PaymentOrderClosed' THEN
        UPDATE payment_orders_index SET status = 'closed', updated_at = NEW.recorded_at
        WHERE tenant_id = NEW.tenant_id AND order_id = NEW.aggregate_id;
    ELSIF NEW.event_type = 'PaymentOrderRefunded' THEN
        UPDATE payment_orders_index
        SET refunded_total_fen = (NEW.payload -> 'PaymentOrderRefunded' ->> 'refunded_total_fen')::bigint,
            updated_at = NEW.recorded_at
        WHERE tenant_id = NEW.tenant_id AND order_id = NEW.aggregate_id;
        INSERT INTO due_work (tenant_id, aggregate_type, aggregate_id, kind, due_at, source_event_id)
        VALUES (NEW.tenant_id, NEW.aggregate_type, NEW.aggregate_id, 'payment_reversal',
                NEW.recorded_at, NEW.event_id);
    END IF;
    RETURN;
END;
$fn$;
REVOKE ALL ON FUNCTION payment_events_index(events) FROM PUBLIC;

-- Was the trigger snatch_events_index, WHEN (((NEW.aggregate_type = 'campaign'::text) AND (NEW.event_type = ANY (ARRAY['SnatchSharesReserved'::text, 'SnatchSharesConfirmed'::text, 'SnatchSharesReleased'::text, 'SnatchPaymentArrivedLate'::text, 'SnatchPeriodCancelled'::text])))).
CREATE FUNCTION snatch_events_index(new events) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    body jsonb;
    pay  jsonb;
    r    jsonb;
BEGIN
    body := NEW.payload -> NEW.event_type;
    IF body IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation',
            MESSAGE = NEW.event_type || ' without its body';
    END IF;
    IF NEW.event_type = 'SnatchSharesReserved' THEN
        INSERT INTO snatch_purchases (tenant_id, purchase_id, campaign_id, member_id, period_no, quantity,
                                      amount_fen, method, status, expires_at, reserved_at, sequence)
        VALUES (NEW.tenant_id, body ->> 'purchase_id', NEW.aggregate_id, body ->> 'member_id',
                (body ->> 'period_no')::integer, (body ->> 'quantity')::integer, (body ->> 'amount_fen')::bigint,
                body ->> 'method', 'reserved', (body ->> 'expires_at')::timestamptz,
                (body ->> 'reserved_at')::timestamptz, NEW.sequence);
        INSERT INTO due_work (tenant_id, aggregate_type, aggregate_id, kind, due_at, source_event_id)
        VALUES (NEW.tenant_id, NEW.aggregate_type, NEW.aggregate_id || '/' || (body ->> 'purchase_id'),
                'snatch_reservation_expiry', (body ->> 'expires_at')::timestamptz, NEW.event_id);
    ELSIF NEW.event_type IN ('SnatchSharesConfirmed', 'SnatchSharesReleased') THEN
        UPDATE snatch_purchases
           SET status = CASE NEW.event_type WHEN 'SnatchSharesConfirmed' THEN 'paid' ELSE 'released' END
         WHERE tenant_id = NEW.tenant_id AND purchase_id = body ->> 'purchase_id'
           AND campaign_id = NEW.aggregate_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION USING ERRCODE = 'check_violation',
                MESSAGE = NEW.event_type || ' without its reservation';
        END IF;
    ELSIF NEW.event_type = 'SnatchPeriodCancelled' THEN
        FOR r IN SELECT * FROM jsonb_array_elements(body -> 'refunds') LOOP
            pay := r -> 'payment';
            UPDATE snatch_purchases SET status = 'refunded'
             WHERE tenant_id = NEW.tenant_id AND purchase_id = r ->> 'purchase_id'
               AND campaign_id = NEW.aggregate_id;
            INSERT INTO due_work (tenant_id, aggregate_type, aggregate_id, kind, due_at, source_event_id)
            VALUES (NEW.tenant_id, NEW.aggregate_type,
                    NEW.aggregate_id || '/' || (r ->> 'purchase_id') || '/' || (r ->> 'member_id') || '/'
                        || (pay ->> 'kind') || '/' || (pay ->> 'amount_fen') || '/'
                        || coalesce(pay ->> 'charge_sequence', '0'),
                    'snatch_refund', NEW.recorded_at, NEW.event_id);
        END LOOP;
    ELSE
        pay := body -> 'payment';
        UPDATE snatch_purchases SET status = 'refunded'
         WHERE tenant_id = NEW.tenant_id AND purchase_id = body ->> 'purchase_id'
           AND campaign_id = NEW.aggregate_id;
        INSERT INTO due_work (tenant_id, aggregate_type, aggregate_id, kind, due_at, source_event_id)
        VALUES (NEW.tenant_id, NEW.aggregate_type,
                NEW.aggregate_id || '/' || (body ->> 'purchase_id') || '/' || (body ->> 'member_id') || '/'
                    || (pay ->> 'kind') || '/' || (pay ->> 'amount_fen') || '/'
                    || coalesce(pay ->> 'charge_sequence', '0'),
                'snatch_refund', NEW.recorded_at, NEW.event_id);
    END IF;
    RETURN;
END;
$fn$;
REVOKE ALL ON FUNCTION snatch_events_index(events) FROM PUBLIC;

-- Was the trigger tenant_events_index, WHEN ((NEW.aggregate_type = 'tenant'::text)).
CREATE FUNCTION tenant_events_index(new events) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    account_appid text;
    mode text;
BEGIN
    IF NEW.event_type = 'OfficialAccountBound' THEN
        account_appid := NEW.payload -> 'OfficialAccountBound' -> 'account' ->> 'appid';
        mode := 'direct';
    ELSIF NEW.event_type = 'ComponentAccountAuthorized' THEN
        account_appid := NEW.payload -> 'ComponentAccountAuthorized' ->> 'appid';
        mode := 'component';
    ELSIF NEW.event_type = 'OfficialAccountUnbound' THEN
        DELETE FROM official_account_directory
         WHERE appid = NEW.payload -> 'OfficialAccountUnbound' ->> 'appid' AND tenant_id = NEW.tenant_id;
        RETURN;
    ELSIF NEW.event_type = 'ComponentAccountDeauthorized' THEN
        DELETE FROM official_account_directory
         WHERE appid = NEW.payload -> 'ComponentAccountDeauthorized' ->> 'appid' AND tenant_id = NEW.tenant_id;
        RETURN;
    ELSE
        RETURN;
    END IF;
    IF account_appid IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation', MESSAGE = NEW.event_type || ' without an appid';
    END IF;
    INSERT INTO official_account_directory AS d (appid, tenant_id, mode, bound_at)
    VALUES (account_appid, NEW.tenant_id, mode, NEW.recorded_at)
    ON CONFLICT (appid) DO UPDATE SET mode = EXCLUDED.mode, bound_at = EXCLUDED.bound_at
     WHERE d.tenant_id = EXCLUDED.tenant_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'unique_violation',
            MESSAGE = 'appid ' || account_appid || ' is bound to another tenant';
    END IF;
    RETURN;
END;
$fn$;
REVOKE ALL ON FUNCTION tenant_events_index(events) FROM PUBLIC;

-- The former triggers' conditions and functions, in the order they fired (by name).
CREATE FUNCTION events_after_insert_index() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $fn$
BEGIN
    IF ((NEW.aggregate_type = 'member'::text) AND (NEW.event_type = 'PointsHeld'::text)) THEN
        PERFORM campaign_entry_hold_due(NEW);
    END IF;
    IF ((NEW.aggregate_type = 'campaign'::text) AND (NEW.event_type = ANY (ARRAY['CampaignScheduled'::text, 'CampaignShakesDrawn'::text, 'CampaignPeriodOpened'::text, 'CampaignPeriodDrawn'::text]))) THEN
        PERFORM campaign_events_index(NEW);
    END IF;
    IF ((NEW.aggregate_type = 'campaign'::text) AND (NEW.event_type = ANY (ARRAY['CampaignEntryRecorded'::text, 'SnatchSharesConfirmed'::text]))) THEN
        PERFORM campaign_member_periods_index(NEW);
    END IF;
    IF ((NEW.aggregate_type = 'campaign'::text) AND (NEW.event_type = ANY (ARRAY['CampaignShakesDrawn'::text, 'CampaignPeriodDrawn'::text, 'CampaignPrizeHandedOver'::text]))) THEN
        PERFORM campaign_physical_awards_index(NEW);
    END IF;
    IF ((NEW.aggregate_type = 'campaign'::text) AND (NEW.event_type = 'CampaignPeriodCancelled'::text)) THEN
        PERFORM campaign_refunds_due(NEW);
    END IF;
    IF ((NEW.aggregate_type = 'campaign'::text) AND (NEW.event_type = 'CampaignVoteItemApproved'::text)) THEN
        PERFORM campaign_vote_reward_due(NEW);
    END IF;
    IF (NEW.aggregate_type = 'commission_account'::text) THEN
        PERFORM commission_account_index(NEW);
    END IF;
    IF ((NEW.aggregate_type = 'coupon'::text) AND (NEW.event_type = 'CouponIssued'::text)) THEN
        PERFORM coupon_events_index(NEW);
    END IF;
    IF ((NEW.aggregate_type = 'coupon_template'::text) AND (NEW.event_type = 'CouponWelcomeSet'::text)) THEN
        PERFORM coupon_welcome_index(NEW);
    END IF;
    IF (NEW.aggregate_type = 'distributor'::text) THEN
        PERFORM distributor_events_index(NEW);
    END IF;
    IF ((NEW.aggregate_type = 'mall_order'::text) AND (NEW.event_type = ANY (ARRAY['MallOrderPaid'::text, 'MallOrderDelivered'::text, 'MallOrderRefunded'::text, 'MallOrderRefundRequestRejected'::text]))) THEN
        PERFORM mall_order_commission_due(NEW);
    END IF;
    IF ((NEW.aggregate_type = 'mall_order'::text) AND (NEW.event_type = ANY (ARRAY['MallOrderPlaced'::text, 'MallOrderPaid'::text, 'MallOrderCancelled'::text, 'MallOrderPaymentArrivedLate'::text, 'MallOrderRefunded'::text]))) THEN
        PERFORM mall_order_events_index(NEW);
    END IF;
    IF ((NEW.aggregate_type = 'mall_order'::text) AND (NEW.event_type = ANY (ARRAY['MallOrderRefundRequested'::text, 'MallOrderRefundRequestRejected'::text, 'MallOrderRefunded'::text]))) THEN
        PERFORM mall_order_refund_request_index(NEW);
    END IF;
    IF ((NEW.aggregate_type = 'mall_product'::text) AND (NEW.event_type = 'ProductStockReserved'::text)) THEN
        PERFORM mall_reservation_index(NEW);
    END IF;
    IF ((NEW.aggregate_type = 'member'::text) AND (NEW.event_type = ANY (ARRAY['MemberRegistered'::text, 'PointsGranted'::text]))) THEN
        PERFORM member_events_index(NEW);
    END IF;
    IF ((NEW.aggregate_type = 'member'::text) AND (NEW.event_type = 'MemberRegistered'::text)) THEN
        PERFORM member_welcome_coupons(NEW);
    END IF;
    IF (NEW.aggregate_type = 'payment_order'::text) THEN
        PERFORM payment_events_index(NEW);
    END IF;
    IF ((NEW.aggregate_type = 'campaign'::text) AND (NEW.event_type = ANY (ARRAY['SnatchSharesReserved'::text, 'SnatchSharesConfirmed'::text, 'SnatchSharesReleased'::text, 'SnatchPaymentArrivedLate'::text, 'SnatchPeriodCancelled'::text]))) THEN
        PERFORM snatch_events_index(NEW);
    END IF;
    IF (NEW.aggregate_type = 'tenant'::text) THEN
        PERFORM tenant_events_index(NEW);
    END IF;
    RETURN NULL;
END;
$fn$;

CREATE TRIGGER events_after_insert_index
    AFTER INSERT ON events
    FOR EACH ROW WHEN (
        NEW.aggregate_type IN ('campaign', 'commission_account', 'coupon', 'coupon_template', 'distributor',
                               'mall_order', 'mall_product', 'payment_order', 'tenant')
        OR (NEW.aggregate_type = 'member' AND NEW.event_type IN ('MemberRegistered', 'PointsGranted', 'PointsHeld'))
    )
    EXECUTE FUNCTION events_after_insert_index();
