-- Inserts :count pending OrderCreated rows into the order-service outbox, as
-- the service writes them (subject, type, the order id as aggregate_id, a
-- contract-format body of the same shape and size as bench/js_publish.c's:
-- 4 SKUs out of 5, ~305 bytes). Its ids are time-ordered (UUID version 7,
-- RFC 9562, bench/uuid7.sql's uuid7_nth) like the service's: five a
-- millisecond, about its intake.
--   psql -v count=100000 -f bench/drain_rows.sql orders
\ir uuid7.sql

INSERT INTO outbox (event_id, subject, event_type, aggregate_id, payload)
SELECT s.id, 'orders.created', 'OrderCreated', s.order_id,
       format('{"event_id":"%s","type":"OrderCreated","order_id":"%s",'
              '"customer_id":"customer-%s","items":[%s],"occurred_at":"%s"}',
              s.id, s.order_id, lpad((s.g % 1000000)::text, 6, '0'), it.items,
              to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
FROM (SELECT g, pg_temp.uuid7_nth(now(), g) AS id, pg_temp.uuid7_nth(now(), g) AS order_id
      FROM generate_series(0, :count - 1) AS g) AS s,
     LATERAL (SELECT string_agg(format('{"sku":"SKU-%s","qty":%s}', (s.g + k) % 5 + 1,
                                       (s.g + k) % 3 + 1), ',' ORDER BY k) AS items
              FROM generate_series(0, 3) AS k) AS it;
