-- The relay's gauges count rows given up on; keep that cheap.
CREATE INDEX outbox_dead ON outbox (id) WHERE status = 'dead';
