-- Recovery that does not depend on retained outbox rows.
--
-- Quantities are 64-bit: `reserved` only grows over a SKU's life.
ALTER TABLE stock ALTER COLUMN available TYPE bigint,
                  ALTER COLUMN reserved TYPE bigint;

-- One decision per order, for ever: written in the same transaction as the
-- reservation; a later OrderCreated for the order (its processed id expired,
-- or a re-drive) gets this reply again, rebuilt from here with the same
-- event id, and changes nothing else.
CREATE TABLE order_decisions (
    order_id       uuid PRIMARY KEY,
    outcome        text NOT NULL CHECK (outcome IN ('reserved', 'rejected')),
    reason         text,
    reply_event_id uuid NOT NULL,
    decided_at     timestamptz NOT NULL DEFAULT now()
);

-- The decisions taken before this table existed: from the replies still in
-- the outbox, then (their reply row pruned) from the reservations.
INSERT INTO order_decisions (order_id, outcome, reason, reply_event_id, decided_at)
SELECT DISTINCT ON (aggregate_id) aggregate_id,
       CASE event_type WHEN 'InventoryReserved' THEN 'reserved' ELSE 'rejected' END,
       payload::jsonb->>'reason', event_id, created_at
FROM outbox
WHERE aggregate_id IS NOT NULL AND event_type IN ('InventoryReserved', 'InventoryRejected')
ORDER BY aggregate_id, id;
INSERT INTO order_decisions (order_id, outcome, reply_event_id, decided_at)
SELECT order_id, 'reserved', gen_random_uuid(), min(created_at)
FROM reservations GROUP BY order_id
ON CONFLICT (order_id) DO NOTHING;

-- How often the database refused each event (not how often it was
-- delivered): the consumer gives up on an event after repeated refusals.
CREATE TABLE inbox_refusals (
    event_id   uuid PRIMARY KEY,
    refusals   integer NOT NULL,
    last_error text,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX inbox_refusals_at ON inbox_refusals (updated_at);
