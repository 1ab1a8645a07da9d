-- GitHub may answer 404 for a job's log for a while after the job
-- completed: such a log is kept as missing (its placeholder text), and
-- lastmile looks for it again for a few minutes (pipeline.JobLogGrace).
ALTER TABLE job_logs ADD COLUMN missing INTEGER NOT NULL DEFAULT 0;
CREATE INDEX job_logs_missing ON job_logs (fetched_at) WHERE missing = 1;
