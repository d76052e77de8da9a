-- A published event leaves the outbox: the relay deletes its row and files
-- it here in the same statement, once JetStream acknowledged it. Marking it
-- in place rewrote the whole row into every index of the outbox (a status
-- change cannot be a HOT update while the claim's index is partial on
-- status); a delete touches no index, and this table's are cheap to feed.
-- The outbox now holds only what is still to be sent (pending) and what was
-- given up on (dead). Rows here are kept OUTBOX_RETENTION, for audit, the
-- reconciliation and re-sends by an operator; recovery never needs them.
CREATE TABLE outbox_published (
    id           bigint NOT NULL,      -- the outbox row's id
    event_id     uuid NOT NULL,        -- one row per event: its last publish
    subject      text NOT NULL,
    event_type   text NOT NULL,
    payload      text NOT NULL,
    traceparent  text,
    aggregate_id uuid,
    attempts     integer NOT NULL,     -- failed tries before the ack
    created_at   timestamptz NOT NULL,
    published_at timestamptz NOT NULL,
    stream_seq   bigint
);
CREATE UNIQUE INDEX outbox_published_event ON outbox_published (event_id);
CREATE INDEX outbox_published_aggregate ON outbox_published (aggregate_id)
    WHERE aggregate_id IS NOT NULL;
-- retention and reconciliation read an age range. Not a block range
-- (BRIN) index, though rows arrive in publish order: retention frees pages
-- that new rows then reuse, and a range's summary only ever widens, so
-- before long every range would look old. Appending to a btree on a
-- growing key costs little.
CREATE INDEX outbox_published_time ON outbox_published (published_at);
COMMENT ON COLUMN outbox_published.stream_seq IS
    'sequence reported by the publish ack; informational only, may be re-used by a broker that lost data: look events up by event_id (Nats-Msg-Id)';

INSERT INTO outbox_published (id, event_id, subject, event_type, payload, traceparent,
                              aggregate_id, attempts, created_at, published_at, stream_seq)
SELECT id, event_id, subject, event_type, payload, traceparent, aggregate_id, attempts,
       created_at, coalesce(published_at, now()), stream_seq
FROM outbox WHERE status = 'published';
DELETE FROM outbox WHERE status = 'published';
-- outbox_published_at (on outbox, partial: status = 'published') stays: it
-- costs nothing to the rows this version writes, and retention finds with
-- it the rows that an instance of an earlier version, still running during
-- a rolling upgrade, marks published in place.

-- Every event this service wrote and still keeps, wherever it stands: for
-- operators' queries (status 'published' rows come from outbox_published).
CREATE VIEW outbox_events AS
SELECT id, event_id, subject, event_type, payload, traceparent, aggregate_id, status,
       attempts, last_error, created_at, next_attempt_at, published_at, stream_seq
FROM outbox
UNION ALL
SELECT id, event_id, subject, event_type, payload, traceparent, aggregate_id, 'published',
       attempts, NULL, created_at, NULL, published_at, stream_seq
FROM outbox_published;
