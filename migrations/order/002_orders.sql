-- Orders and their items. idempotency_key/request_hash serve the optional
-- Idempotency-Key header: NULL keys never conflict.

CREATE TABLE orders (
    id              uuid PRIMARY KEY,
    customer_id     text NOT NULL,
    status          text NOT NULL DEFAULT 'PENDING'
                    CHECK (status IN ('PENDING', 'CONFIRMED', 'REJECTED')),
    reason          text,
    idempotency_key text UNIQUE,
    request_hash    text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE order_items (
    order_id uuid NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    line     integer NOT NULL,
    sku      text NOT NULL,
    qty      integer NOT NULL CHECK (qty BETWEEN 1 AND 10000),
    PRIMARY KEY (order_id, line)
);
