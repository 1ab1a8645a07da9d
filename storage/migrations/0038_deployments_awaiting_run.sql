-- The deployments lastmile created that no workflow run has taken up yet
-- (no status, no run linked), read at every scrape for
-- lastmile_deployment_awaiting_run_since_timestamp_seconds: a handful,
-- however long the history.
CREATE INDEX deployments_awaiting_run ON deployments (repository_id) WHERE origin = 'lastmile' AND state = 'created' AND run_id = 0;
-- Whether a job's own deployment (a workflow that owns the environment's
-- deployments) was ever in an environment, asked of those deployments.
CREATE INDEX deployments_job_owned ON deployments (repository_id, environment COLLATE NOCASE) WHERE origin = 'external' AND run_id != 0;
