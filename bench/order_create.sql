-- pgbench script: the statement order-service runs for one POST /orders
-- ("order_create" in order-service/order_store.c), one order per transaction.
-- What differs from the service, and why:
--   $1, $6 (order id, event id): gen_random_uuid() here, uuid_v4() in C;
--   $2, $4, $5, $7: the pgbench variables customer_id, fingerprint, items,
--     payload, set by scripts/bench with -D, so that (in -M prepared) they are
--     bound parameters as in the service; payload is an OrderCreated body of
--     the same size as the service's;
--   $3, $8 (Idempotency-Key, traceparent): NULL, as for wrk's requests;
--   the to_char format is written E'..\x3a..' because pgbench reads every
--     ':name' as a variable, even inside quotes; the value is the same.
-- scripts/bench warns when order_store.c's statement changes (source-md5 below).
-- source-md5: 0f42926a9d89c57daaf2af8316f008e1
WITH o AS (INSERT INTO orders (id, customer_id, idempotency_key, request_hash)
  VALUES (gen_random_uuid(), :customer_id, NULL, md5(:fingerprint)) ON CONFLICT (idempotency_key) DO NOTHING
  RETURNING *),
i AS (INSERT INTO order_items (order_id, line, sku, qty)
  SELECT o.id, x.line, x.sku, x.qty FROM o, ROWS FROM
  (jsonb_to_recordset(:items::jsonb) AS (sku text, qty int)) WITH ORDINALITY AS x(sku, qty, line)),
e AS (INSERT INTO outbox (event_id, subject, event_type, payload, traceparent)
  SELECT gen_random_uuid(), 'orders.created', 'OrderCreated', :payload, NULL FROM o)
SELECT o.id, o.customer_id, o.status, o.reason,
  to_char(o.created_at AT TIME ZONE 'UTC', E'YYYY-MM-DD"T"HH24\x3aMI\x3aSS.US"Z"'),
  to_char(o.updated_at AT TIME ZONE 'UTC', E'YYYY-MM-DD"T"HH24\x3aMI\x3aSS.US"Z"')
FROM o;
