-- Which business object an outbox event is about (the order id), so that an
-- event can be sent again for an order that has not settled.
ALTER TABLE outbox ADD COLUMN aggregate_id uuid;
CREATE INDEX outbox_aggregate ON outbox (aggregate_id) WHERE aggregate_id IS NOT NULL;
-- The re-drive sweep looks for orders still PENDING after a while.
CREATE INDEX orders_pending ON orders (created_at) WHERE status = 'PENDING';
