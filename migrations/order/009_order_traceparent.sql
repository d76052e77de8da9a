-- The trace an order was created in (W3C traceparent of the intake's span),
-- kept with the order itself: an OrderCreated rebuilt by the re-drive after
-- its outbox row was pruned continues the same trace. NULL for orders made
-- before this migration (their re-drive starts no trace, as before).
ALTER TABLE orders ADD COLUMN traceparent text;
