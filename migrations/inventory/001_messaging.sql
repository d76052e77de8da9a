-- The transactional outbox, the inbox of processed event ids, and the
-- dead-letter table. The same schema exists in every service's database.

CREATE TABLE outbox (
    id              bigserial PRIMARY KEY,
    event_id        uuid NOT NULL UNIQUE,
    subject         text NOT NULL,
    event_type      text NOT NULL,
    payload         text NOT NULL,
    traceparent     text,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'published', 'dead')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    published_at    timestamptz,
    stream_seq      bigint
);
-- The relay's claim reads only pending rows, in id order.
CREATE INDEX outbox_pending ON outbox (id) WHERE status = 'pending';
-- Retention deletes published rows by age.
CREATE INDEX outbox_published_at ON outbox (published_at) WHERE status = 'published';

CREATE TABLE processed_messages (
    event_id     uuid PRIMARY KEY,
    subject      text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX processed_messages_at ON processed_messages (processed_at);

CREATE TABLE dead_letters (
    id         bigserial PRIMARY KEY,
    subject    text NOT NULL,
    event_id   uuid,
    body       bytea NOT NULL,
    error      text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
