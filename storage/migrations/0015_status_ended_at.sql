-- A status lastmile writes itself, for a run that ended without reporting
-- (cancelled, timed out), is written when lastmile handles the run's end:
-- seconds later, or hours after a backlog or a downtime. The metrics (time
-- to restore, deployment duration) date it by the run's end instead.
-- deployments.notify_at: when the run that the owed status (notify)
-- reports on ended; deployment_statuses.ended_at: that time, kept with
-- the status once written (0: its created_at is when it happened).
ALTER TABLE deployments ADD COLUMN notify_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE deployment_statuses ADD COLUMN ended_at INTEGER NOT NULL DEFAULT 0;
