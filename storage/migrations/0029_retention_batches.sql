-- Retention prunes in short batches and does not walk the whole history
-- at every prune:
--
-- The kept deploy logs by when they were fetched: a prune finds the logs
-- older than its cutoff without reading the pruned ones.
CREATE INDEX job_logs_kept ON job_logs (fetched_at) WHERE log IS NOT NULL;

-- The deliveries received before the point retention has pruned up to
-- (the setting retention.bodies) whose bodies it kept because they were
-- pending or dead then: a later prune drops their bodies once they are
-- handled, without walking the history again.
CREATE TABLE retention_held (
    seq INTEGER PRIMARY KEY -- deliveries.seq
);
