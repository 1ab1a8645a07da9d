-- The kept deploy logs by when they were fetched, without the placeholders
-- of logs lastmile could not download (missing): retention leaves those,
-- a line each, and a prune batch walked past every old one again.
DROP INDEX job_logs_kept;
CREATE INDEX job_logs_kept ON job_logs (fetched_at) WHERE log IS NOT NULL AND missing = 0;
