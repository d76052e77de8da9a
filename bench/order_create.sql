-- pgbench script: the statement order-service runs to create orders
-- ("order_create" in order-service/order_store.c), here with ONE order per
-- transaction: the baseline is Postgres doing one order per commit with the
-- service's own SQL. What differs from the service, and why:
--   the service sends each column as a binary array ($1..$11); pgbench can
--     only send text, so the arrays are built in the statement: ARRAY[..]
--     of one element per order column, the items' columns from the pgbench
--     variables :skus and :qtys (array literals of the 4 items wrk sends);
--   the order id and the event id (k) are fresh in every transaction,
--     time-ordered (UUID version 7) like the service's, to the millisecond:
--     the unix time in ms, '7', then a gen_random_uuid()'s last 18 digits
--     (bench/uuid7.sql);
--   its customer_id, fingerprint, skus, qtys and payload are the pgbench
--     variables set by scripts/bench with -D (bound parameters in -M prepared);
--     the items' lines (1..4) are written here: wrk's orders have 4 items;
--     payload is an OrderCreated body of the service's size (~305 bytes);
--   idempotency_key and traceparent are NULL, as for wrk's requests;
--   the to_char format is written E'..\x3a..' because pgbench reads every
--     ':name' as a variable, even inside quotes; the value is the same.
-- scripts/bench warns when order_store.c's statement changes (source-md5 below).
-- source-md5: addec6dfa33cfbfb53278462af3ddf51
WITH k AS (SELECT
    (lpad(to_hex(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint), 12, '0')
     || '7' || substr(gen_random_uuid()::text, 16))::uuid AS id,
    (lpad(to_hex(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint), 12, '0')
     || '7' || substr(gen_random_uuid()::text, 16))::uuid AS event_id),
x AS (SELECT x.* FROM k, unnest(ARRAY[k.id], ARRAY[:customer_id::text], ARRAY[NULL::text],
    ARRAY[:fingerprint::text], ARRAY[k.event_id], ARRAY[:payload::text], ARRAY[NULL::text])
  AS x(id, customer_id, idempotency_key, fingerprint, event_id, payload, traceparent)),
o AS (INSERT INTO orders (id, customer_id, idempotency_key, request_hash, event_id,
  traceparent)
  SELECT id, customer_id, idempotency_key, md5(fingerprint), event_id, traceparent FROM x
  ON CONFLICT (idempotency_key) DO NOTHING RETURNING *),
i AS (INSERT INTO order_items (order_id, line, sku, qty)
  SELECT it.order_id, it.line, it.sku, it.qty FROM k, unnest(array_fill(k.id, ARRAY[4]),
    ARRAY[1, 2, 3, 4], :skus::text[], :qtys::int[]) AS it(order_id, line, sku, qty)
  JOIN o ON o.id = it.order_id),
e AS (INSERT INTO outbox (event_id, subject, event_type, payload, aggregate_id, traceparent)
  SELECT x.event_id, 'orders.created', 'OrderCreated', x.payload, x.id, x.traceparent
  FROM o JOIN x ON x.id = o.id)
SELECT o.id, o.customer_id, o.status, o.reason,
  to_char(o.created_at AT TIME ZONE 'UTC', E'YYYY-MM-DD"T"HH24\x3aMI\x3aSS.US"Z"'),
  to_char(o.updated_at AT TIME ZONE 'UTC', E'YYYY-MM-DD"T"HH24\x3aMI\x3aSS.US"Z"')
FROM o;
