-- pgbench script: the statement order-service runs to create orders
-- ("order_create" in order-service/order_store.c), here with ONE order per
-- transaction: the baseline is Postgres doing one order per commit with the
-- service's own SQL. What differs from the service, and why:
--   $1 (the JSON array of orders) is built in the statement with
--     json_build_array(json_build_object(..)), so that the order id and
--     the event id are fresh in every transaction, time-ordered (UUID
--     version 7) like the service's, to the millisecond: the unix time in
--     ms, '7', then a gen_random_uuid()'s last 18 digits (bench/uuid7.sql);
--   its customer_id, fingerprint, items and payload are the pgbench
--     variables set by scripts/bench with -D (bound parameters in -M prepared);
--     payload is an OrderCreated body of the service's size (~305 bytes);
--   idempotency_key and traceparent are NULL, as for wrk's requests;
--   the to_char format is written E'..\x3a..' because pgbench reads every
--     ':name' as a variable, even inside quotes; the value is the same.
-- scripts/bench warns when order_store.c's statement changes (source-md5 below).
-- source-md5: 214c3787f702b6fe43761e3e1515d1ce
WITH x AS (SELECT * FROM json_to_recordset(json_build_array(json_build_object(
    'id', (lpad(to_hex(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint), 12, '0')
           || '7' || substr(gen_random_uuid()::text, 16))::uuid,
    'customer_id', :customer_id::text, 'idempotency_key', NULL,
    'fingerprint', :fingerprint::text, 'items', :items::json,
    'event_id', (lpad(to_hex(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint), 12, '0')
           || '7' || substr(gen_random_uuid()::text, 16))::uuid,
    'payload', :payload::text, 'traceparent', NULL)))
  AS x(id uuid, customer_id text, idempotency_key text, fingerprint text, items json,
       event_id uuid, payload text, traceparent text)),
o AS (INSERT INTO orders (id, customer_id, idempotency_key, request_hash, event_id,
  traceparent)
  SELECT id, customer_id, idempotency_key, md5(fingerprint), event_id, traceparent FROM x
  ON CONFLICT (idempotency_key) DO NOTHING RETURNING *),
i AS (INSERT INTO order_items (order_id, line, sku, qty)
  SELECT o.id, it.line, it.sku, it.qty FROM o JOIN x ON x.id = o.id, ROWS FROM
  (json_to_recordset(x.items) AS (sku text, qty int)) WITH ORDINALITY AS it(sku, qty, line)),
e AS (INSERT INTO outbox (event_id, subject, event_type, payload, aggregate_id, traceparent)
  SELECT x.event_id, 'orders.created', 'OrderCreated', x.payload, x.id, x.traceparent
  FROM o JOIN x ON x.id = o.id)
SELECT o.id, o.customer_id, o.status, o.reason,
  to_char(o.created_at AT TIME ZONE 'UTC', E'YYYY-MM-DD"T"HH24\x3aMI\x3aSS.US"Z"'),
  to_char(o.updated_at AT TIME ZONE 'UTC', E'YYYY-MM-DD"T"HH24\x3aMI\x3aSS.US"Z"')
FROM o;
