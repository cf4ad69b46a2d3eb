-- The points mall (issue 13): products (`mall_product` streams) and orders
-- (`mall_order` streams), both in `events`.
--
-- In the same transaction as a `ProductStockReserved` event (the first step
-- of every order):
-- - `mall_order_index`: the order → its product, member and short number
--   (what staff type at the counter), known even if the order is never
--   placed (a placement that died after reserving);
-- - due work `mall_order_expiry` at the reservation's expiry: the scheduler
--   expires the unpaid order, or sweeps a reservation never placed, and gives
--   back its stock and points.
-- In the same transaction as an order event that other streams must follow
-- (paid, cancelled, paid late, refunded): due work `mall_order_settle`, so a
-- crash between the order's decision and the product's or the ledger's step
-- is finished by the scheduler (each step is keyed by order and step: once).

CREATE SEQUENCE mall_order_no_seq START WITH 100001;

CREATE TABLE mall_order_index (
    tenant_id   text        NOT NULL,
    order_id    text        NOT NULL,
    order_no    bigint      NOT NULL DEFAULT nextval('mall_order_no_seq'),
    product_id  text        NOT NULL,
    member_id   text        NOT NULL,
    reserved_at timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    placed      boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (tenant_id, order_id)
);
CREATE UNIQUE INDEX mall_order_index_no ON mall_order_index (tenant_id, order_no);
-- A member's orders, newest first, without waiting for projections.
CREATE INDEX mall_order_index_member ON mall_order_index (tenant_id, member_id, order_no DESC) WHERE placed;
GRANT SELECT ON mall_order_index TO wxcm_app;

CREATE FUNCTION mall_reservation_index() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
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
    RETURN NULL;
END;
$$;

CREATE TRIGGER mall_reservation_index
    AFTER INSERT ON events
    FOR EACH ROW WHEN (NEW.aggregate_type = 'mall_product' AND NEW.event_type = 'ProductStockReserved')
    EXECUTE FUNCTION mall_reservation_index();

CREATE FUNCTION mall_order_events_index() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
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
    RETURN NULL;
END;
$$;

CREATE TRIGGER mall_order_events_index
    AFTER INSERT ON events
    FOR EACH ROW WHEN (NEW.aggregate_type = 'mall_order' AND NEW.event_type IN (
        'MallOrderPlaced', 'MallOrderPaid', 'MallOrderCancelled', 'MallOrderPaymentArrivedLate',
        'MallOrderRefunded'))
    EXECUTE FUNCTION mall_order_events_index();

-- Read model: one row per placed order with its current status (projector `mall`).
CREATE TABLE rm_mall_orders (
    tenant_id    text        NOT NULL,
    order_id     text        NOT NULL,
    member_id    text        NOT NULL,
    product_id   text        NOT NULL,
    product_name text        NOT NULL,
    quantity     integer     NOT NULL CHECK (quantity > 0),
    points_total bigint      NOT NULL CHECK (points_total >= 0),
    cash_due_fen bigint      NOT NULL CHECK (cash_due_fen >= 0),
    method       text        NOT NULL,
    status       text        NOT NULL CHECK (status IN ('awaiting_payment', 'paid', 'delivered', 'expired',
                                                       'cancelled', 'refund_due', 'refunded')),
    placed_at    timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    -- The order's last applied event.
    version      bigint      NOT NULL,
    PRIMARY KEY (tenant_id, order_id)
);
CREATE INDEX rm_mall_orders_status ON rm_mall_orders (tenant_id, status, placed_at DESC);
CREATE INDEX rm_mall_orders_member ON rm_mall_orders (tenant_id, member_id, placed_at DESC);
GRANT SELECT, INSERT, UPDATE, DELETE ON rm_mall_orders TO wxcm_app;
