-- The consumer asks, for an event found poison, whether another delivery
-- was dead-lettered under its event id already (then the id stays recorded:
-- a poison sent again and again is kept twice, not once per copy; the
-- first copy leaves the id free for the real event). The reconciliation
-- looks dead letters up by event id too.
CREATE INDEX dead_letters_event ON dead_letters (event_id) WHERE event_id IS NOT NULL;
