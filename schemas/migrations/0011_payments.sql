-- WeChat Pay: the due work that makes crediting a paid order durable, an
-- index of payment orders for listing and reconciliation, the record of every
-- notification received, WeChat Pay platform keys, and member sessions.

-- payment_orders_index: one row per order, maintained by the trigger below
-- from the order's events (derived; the events stay the source of truth).
CREATE TABLE payment_orders_index (
    tenant_id   text        NOT NULL,
    order_id    text        NOT NULL,
    member_id   text        NOT NULL,
    amount_fen  bigint      NOT NULL,
    status      text        NOT NULL CHECK (status IN ('created', 'paid', 'closed')),
    refunded_total_fen bigint NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, order_id)
);
CREATE INDEX payment_orders_index_status ON payment_orders_index (tenant_id, status, order_id);
CREATE INDEX payment_orders_index_member ON payment_orders_index (tenant_id, member_id, created_at);

-- In the same transaction as the event (so a crash can never lose it):
-- - PaymentOrderCreated → due_work 'payment_expiry' at expires_at (query Pay, then credit or close);
-- - PaymentOrderPaid → due_work 'payment_credit' now (the process manager credits the member;
--   the notify handler does it inline too, the ledger's idempotency key makes it happen once);
-- - PaymentOrderRefunded → due_work 'payment_reversal' now (same, for the ledger reversal).
CREATE FUNCTION payment_events_index() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    body jsonb;
BEGIN
    IF NEW.aggregate_type <> 'payment_order' THEN
        RETURN NULL;
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
    RETURN NULL;
END;
$$;

CREATE TRIGGER payment_events_index
    AFTER INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION payment_events_index();

-- Every notification received on /pay/notify/*, verified or not, for the
-- admin detail view and for investigations. The raw body is not kept (it
-- may carry payer data); `summary` holds the decoded, non-secret fields.
CREATE TABLE pay_notifications (
    id           bigserial   PRIMARY KEY,
    appid        text        NOT NULL,
    tenant_id    text        NULL,
    order_id     text        NULL,
    channel      text        NOT NULL CHECK (channel IN ('v2', 'v3', 'refund_v2')),
    verified     boolean     NOT NULL,
    outcome      text        NOT NULL,
    detail       text        NOT NULL DEFAULT '',
    summary      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    received_at  timestamptz NOT NULL
);
CREATE INDEX pay_notifications_order ON pay_notifications (tenant_id, order_id, id);
CREATE INDEX pay_notifications_received ON pay_notifications (received_at);

-- WeChat Pay platform public keys by (merchant, serial), used to verify v3
-- notifications (loaded by operators or from the platform certificates API).
CREATE TABLE pay_platform_keys (
    mch_id         text        NOT NULL,
    serial         text        NOT NULL,
    public_key_pem text        NOT NULL,
    added_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (mch_id, serial)
);

-- Member sessions of /m/api/v1 (from WeChat OAuth); only the token's hash is stored.
CREATE TABLE member_sessions (
    token_hash  bytea       PRIMARY KEY,
    tenant_id   text        NOT NULL,
    member_id   text        NOT NULL,
    appid       text        NOT NULL,
    openid      text        NOT NULL,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX member_sessions_expires ON member_sessions (expires_at);

GRANT SELECT ON payment_orders_index TO wxcm_app;
GRANT SELECT, INSERT ON pay_notifications TO wxcm_app;
GRANT USAGE ON SEQUENCE pay_notifications_id_seq TO wxcm_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON pay_platform_keys, member_sessions TO wxcm_app;
