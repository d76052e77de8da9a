-- What an order reserved is written with its decision, as one JSON value,
-- instead of one reservations row per item: a consumer batch of 512 orders
-- of 4 items wrote 2,048 rows and 2,048 primary-key entries for it, inside
-- the stretch where the batch holds its stock rows locked. The table it
-- replaces stays readable as a view of the same name and columns.
ALTER TABLE order_decisions ADD COLUMN reserved json; -- [{"sku","qty"}], reserved orders only
UPDATE order_decisions d SET reserved = r.items
FROM (SELECT order_id, json_agg(json_build_object('sku', sku, 'qty', qty) ORDER BY sku) AS items
      FROM reservations GROUP BY order_id) r
WHERE r.order_id = d.order_id;
DROP TABLE reservations;

-- Instances of the previous version still running during a rolling upgrade
-- insert into reservations: their rows land here (the view shows them), so
-- their batches are not refused on the way.
CREATE TABLE reservations_legacy (
    order_id   uuid NOT NULL,
    sku        text NOT NULL,
    qty        bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE VIEW reservations AS
SELECT d.order_id, x.sku, x.qty, d.decided_at AS created_at
FROM order_decisions d CROSS JOIN LATERAL json_to_recordset(d.reserved) AS x(sku text, qty bigint)
WHERE d.reserved IS NOT NULL
UNION ALL
SELECT order_id, sku, qty, created_at FROM reservations_legacy;

CREATE FUNCTION reservations_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO reservations_legacy (order_id, sku, qty) VALUES (NEW.order_id, NEW.sku, NEW.qty);
    RETURN NEW;
END
$$;
CREATE TRIGGER reservations_insert INSTEAD OF INSERT ON reservations
    FOR EACH ROW EXECUTE FUNCTION reservations_insert();
