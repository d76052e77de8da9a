-- make bench, end-to-end phase: one durable one-row transaction, paced by
-- pgbench --rate alongside the flow: what a commit costs under that load.
INSERT INTO bench_probe DEFAULT VALUES;
