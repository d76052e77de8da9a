-- outbox.stream_seq is the sequence JetStream's publish ack reported, kept
-- as a debugging aid. It is not the event's position: a broker that lost
-- acknowledged messages (a wiped or diverged replica) re-uses sequences, so
-- the number may later name another message. Find an event in the stream by
-- its Nats-Msg-Id header (= event_id), never by this column.
COMMENT ON COLUMN outbox.stream_seq IS
    'sequence reported by the publish ack; informational only, may be re-used by a broker that lost data: look events up by event_id (Nats-Msg-Id)';
