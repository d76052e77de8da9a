-- The retention phase's backlog (scripts/bench): :count events' worth of
-- expired rows in the inventory database, each a processed id 8 days old
-- (past PROCESSED_RETENTION, 7 d) and a published reply (outbox_published) 2 hours old (past
-- OUTBOX_RETENTION, 1 h), copied with new ids from the rows the consumer phase
-- has just written (the same subjects, bodies, traceparents and indexes).
-- The new ids are time-ordered like the services' (bench/uuid7.sql), at
-- the rows' own age.
-- Plus :keep fresh rows of each, which retention must leave alone.
--   psql -v count=300000 -v keep=1000 -f bench/retention_rows.sql inventory
\ir uuid7.sql
BEGIN;
CREATE TEMP TABLE tpl_processed ON COMMIT DROP AS
    SELECT row_number() OVER () - 1 AS k, subject FROM processed_messages LIMIT 1000;
CREATE TEMP TABLE tpl_outbox ON COMMIT DROP AS
    SELECT row_number() OVER () - 1 AS k, subject, event_type, payload, traceparent, attempts,
           stream_seq
    FROM outbox_published LIMIT 1000;
TRUNCATE processed_messages, outbox_published;

INSERT INTO processed_messages (event_id, subject, processed_at)
SELECT pg_temp.uuid7_nth(a.at, g), t.subject, a.at
FROM generate_series(0, :count + :keep - 1) AS g
JOIN tpl_processed AS t ON t.k = g % (SELECT count(*) FROM tpl_processed),
     LATERAL (SELECT CASE WHEN g < :count THEN now() - interval '8 days'
                          ELSE now() END AS at) AS a
ORDER BY g;

INSERT INTO outbox_published (id, event_id, subject, event_type, aggregate_id, payload,
                              traceparent, attempts, created_at, published_at, stream_seq)
SELECT g + 1, pg_temp.uuid7_nth(a.at, g), t.subject, t.event_type, pg_temp.uuid7_nth(a.at, g), t.payload,
       t.traceparent, t.attempts, a.at, a.at, t.stream_seq
FROM generate_series(0, :count + :keep - 1) AS g
JOIN tpl_outbox AS t ON t.k = g % (SELECT count(*) FROM tpl_outbox),
     LATERAL (SELECT CASE WHEN g < :count THEN now() - interval '2 hours'
                          ELSE now() END AS at) AS a
ORDER BY g;
COMMIT;
VACUUM ANALYZE processed_messages, outbox_published;
