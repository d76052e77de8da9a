-- A poison message no longer keeps its event id recorded (common/inbox.c,
-- unrecord_poison). Under the rule before, an id with a dead letter already
-- stayed recorded when another copy was dead-lettered, and the real event
-- after it was taken for a duplicate: its order PENDING for good. Those
-- records were made by the transaction that kept that copy's dead letter,
-- at the same now(); they go, so that the re-drive's copy (or the real
-- event, delivered again) is applied. A dead letter re-applied since
-- recorded its id in a later transaction of its own: kept.
DELETE FROM processed_messages p USING dead_letters d
WHERE p.event_id = d.event_id AND p.processed_at = d.created_at AND d.reapplied_at IS NULL;
