-- Dead letters re-applied through the admin API: when, and what came of it
-- (the row stays, for the record). Open ones are counted often: keep it cheap.
ALTER TABLE dead_letters ADD COLUMN reapplied_at timestamptz, ADD COLUMN reapply_result text;
CREATE INDEX dead_letters_open ON dead_letters (id) WHERE reapplied_at IS NULL;
