-- A dead letter keeps whatever bytes it came with: the exact subject and the
-- NATS header block as bytea (`subject` holds a UTF-8 text form of it, any
-- byte that is not valid UTF-8 written as \xNN).
ALTER TABLE dead_letters ADD COLUMN subject_raw bytea, ADD COLUMN headers bytea;
