-- A dead letter is kept once per message, however often JetStream delivers
-- it: again after a process was killed between the dead letter's commit
-- and the ack, or after the ack wait ran out on a batch of large poison
-- bodies (a helper's probe kept 80 such messages as 113 rows, and counted
-- 113 poison). A message with no usable event_id has no other key: the
-- stream's sequence and the time the stream stored it name it, the same on
-- every delivery (a broker that lost data may give a later message the
-- same sequence, not the same time). Rows written before this (and by an
-- instance of an earlier version during a rolling upgrade) have none and
-- are not compared.
ALTER TABLE dead_letters ADD COLUMN stream_seq bigint, ADD COLUMN stored_ns bigint;
CREATE UNIQUE INDEX dead_letters_delivery ON dead_letters (stream_seq, stored_ns)
    WHERE stream_seq IS NOT NULL;
