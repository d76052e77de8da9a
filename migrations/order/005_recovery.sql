-- Recovery that does not depend on retained outbox rows.
--
-- Each order keeps the id of its OrderCreated event, so that the re-drive
-- rebuilds the event from the order itself (same event id) when its outbox
-- row is gone; and when it last re-sent it, so that it re-sends at most
-- once per REDRIVE_AFTER.
ALTER TABLE orders ADD COLUMN event_id uuid, ADD COLUMN redriven_at timestamptz;
UPDATE orders o SET event_id = x.event_id
FROM outbox x WHERE x.aggregate_id = o.id AND x.event_type = 'OrderCreated';
-- an order whose row was already pruned: any new id (the inventory service
-- decides once per order, whatever the event id)
UPDATE orders SET event_id = gen_random_uuid() WHERE event_id IS NULL;
ALTER TABLE orders ALTER COLUMN event_id SET NOT NULL;

-- The re-drive pages through the PENDING orders by (created_at, id).
CREATE INDEX orders_pending_page ON orders (created_at, id) WHERE status = 'PENDING';
DROP INDEX orders_pending;

-- How often the database refused each event (not how often it was
-- delivered): the consumer gives up on an event after repeated refusals.
CREATE TABLE inbox_refusals (
    event_id   uuid PRIMARY KEY,
    refusals   integer NOT NULL,
    last_error text,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX inbox_refusals_at ON inbox_refusals (updated_at);
