-- Which business object an outbox event is about (the order id), so that an
-- event can be sent again for an order that has not settled.
ALTER TABLE outbox ADD COLUMN aggregate_id uuid;
CREATE INDEX outbox_aggregate ON outbox (aggregate_id) WHERE aggregate_id IS NOT NULL;
