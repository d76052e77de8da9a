-- Stock per SKU, and what each order reserved (for audit and for proving
-- that every order's stock is reserved exactly once).

CREATE TABLE stock (
    sku        text PRIMARY KEY,
    available  integer NOT NULL CHECK (available >= 0),
    reserved   integer NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE reservations (
    order_id   uuid NOT NULL,
    sku        text NOT NULL REFERENCES stock (sku),
    qty        integer NOT NULL CHECK (qty > 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, sku)
);
