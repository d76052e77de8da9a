-- One row per event in outbox_events. An event sent again (an operator's
-- re-send, or the recovery's) has a pending row in the outbox while its
-- earlier publish is still filed in outbox_published, until JetStream
-- acknowledges it again; the view listed it twice meanwhile. It now shows
-- where the event stands: the outbox row, while there is one (a re-send
-- that goes dead shows as dead; its earlier publish is in outbox_published).
CREATE OR REPLACE VIEW outbox_events AS
SELECT id, event_id, subject, event_type, payload, traceparent, aggregate_id, status,
       attempts, last_error, created_at, next_attempt_at, published_at, stream_seq
FROM outbox
UNION ALL
SELECT id, event_id, subject, event_type, payload, traceparent, aggregate_id, 'published',
       attempts, NULL, created_at, NULL, published_at, stream_seq
FROM outbox_published p
WHERE NOT EXISTS (SELECT 1 FROM outbox o WHERE o.event_id = p.event_id);
