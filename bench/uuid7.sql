-- pg_temp.uuid7(ms): an id as the services make them (UUID version 7,
-- RFC 9562): unix_ts_ms, version 7, then a random UUID's last 18 digits
-- (12 random bits, variant 10, 62 random bits). Ordered to the
-- millisecond; the services' own ids are ordered within it too. For the
-- bench's row generators: \ir uuid7.sql
CREATE FUNCTION pg_temp.uuid7(ms bigint) RETURNS uuid LANGUAGE sql VOLATILE AS $$
    SELECT (lpad(to_hex(ms), 12, '0') || '7' || substr(gen_random_uuid()::text, 16))::uuid
$$;

-- pg_temp.uuid7_nth(at, n): the n-th of a run of ids made from the time at
-- on, five a millisecond (about the intake's rate).
CREATE FUNCTION pg_temp.uuid7_nth(at timestamptz, n bigint) RETURNS uuid LANGUAGE sql VOLATILE AS $$
    SELECT pg_temp.uuid7((extract(epoch FROM at) * 1000)::bigint + n / 5)
$$;
