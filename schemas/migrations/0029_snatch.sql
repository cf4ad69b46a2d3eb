-- 1-yuan snatch (issue 14, `commands::campaigns::snatch`): shares of a
-- period reserved, paid, released or paid late, on the `campaign` stream.
--
-- In the same transaction as the events (AFTER INSERT trigger):
-- - `SnatchSharesReserved` → one `snatch_purchases` row (a member's
--   purchases and a purchase's campaign without scanning the stream) and due
--   work `snatch_reservation_expiry` (aggregate id `<campaign>/<purchase>`)
--   at the reservation's expiry: an unpaid reservation gives its shares back
--   (a balance charge its request made but never recorded is recorded then,
--   as late, and refunded);
-- - `SnatchSharesConfirmed` / `SnatchSharesReleased` → the row's status;
-- - `SnatchPaymentArrivedLate` → the row's status `refunded` and due work
--   `snatch_refund` (aggregate id
--   `<campaign>/<purchase>/<member>/<balance|wechat_pay>/<amount_fen>/<charge_sequence|0>`)
--   at once: the request refunds a balance payment inline under a key of the
--   purchase; the due item refunds again under the same key (a replay), or
--   asks WeChat Pay for the refund of the purchase's Pay order (one refund
--   number per purchase, so Pay refunds once however often asked).
-- - `SnatchPeriodCancelled` (a period not sold out when the campaign ended)
--   → each paid purchase it lists: status `refunded` and due work
--   `snatch_refund` as above (a purchase is refunded either as late or as
--   cancelled, never both: a late one was never paid into the period).
-- A payment for a purchase of another campaign's stream is impossible: the
-- purchase id derives from tenant, campaign, member and request key.

CREATE TABLE snatch_purchases (
    tenant_id   text        NOT NULL,
    purchase_id text        NOT NULL,
    campaign_id text        NOT NULL,
    member_id   text        NOT NULL,
    period_no   integer     NOT NULL CHECK (period_no > 0),
    quantity    integer     NOT NULL CHECK (quantity > 0),
    amount_fen  bigint      NOT NULL CHECK (amount_fen > 0),
    method      text        NOT NULL CHECK (method IN ('balance', 'wechat_pay')),
    status      text        NOT NULL CHECK (status IN ('reserved', 'paid', 'released', 'refunded')),
    expires_at  timestamptz NOT NULL,
    reserved_at timestamptz NOT NULL,
    sequence    bigint      NOT NULL,
    PRIMARY KEY (tenant_id, purchase_id)
);
-- A member's purchases in a campaign, newest first.
CREATE INDEX snatch_purchases_member ON snatch_purchases (tenant_id, campaign_id, member_id, sequence DESC);
GRANT SELECT ON snatch_purchases TO wxcm_app;

CREATE FUNCTION snatch_events_index() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
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
    RETURN NULL;
END;
$$;

CREATE TRIGGER snatch_events_index
    AFTER INSERT ON events
    FOR EACH ROW WHEN (NEW.aggregate_type = 'campaign'
                       AND NEW.event_type IN ('SnatchSharesReserved', 'SnatchSharesConfirmed',
                                              'SnatchSharesReleased', 'SnatchPaymentArrivedLate',
                                              'SnatchPeriodCancelled'))
    EXECUTE FUNCTION snatch_events_index();
