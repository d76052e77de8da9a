-- The outbox holds only what is still to be sent (pending) and what was
-- given up on (dead) since migration 010. Its index on aggregate_id was
-- written for every event and read only by /admin/orders/resend, which
-- now scans those few rows (published events are found by order id in
-- outbox_published, which keeps its own index).
DROP INDEX IF EXISTS outbox_aggregate;
