-- Counters that every batch of ingestion adds to are append-only on PostgreSQL: one row per
-- batch and key, summed when read. An upsert on one row per day would make every concurrent
-- batch wait for the previous one's commit on that row (and deadlock on two such rows taken
-- in different orders).
ALTER TABLE ingest_counts DROP CONSTRAINT ingest_counts_pkey;
CREATE INDEX ingest_counts_key ON ingest_counts(source_id, day, outcome);
ALTER TABLE minimisation_counts DROP CONSTRAINT minimisation_counts_pkey;
CREATE INDEX minimisation_counts_key ON minimisation_counts(source_id, event, field, reason);
