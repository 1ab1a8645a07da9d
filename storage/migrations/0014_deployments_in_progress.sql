-- The deployments in progress, which hold their environment for the next
-- release (pipeline.HoldRunning): the sweep looks each minute for the holds
-- that ended, and reads these few rather than every lastmile deployment of
-- every repository with an active release.
CREATE INDEX deployments_in_progress ON deployments (repository_id) WHERE origin = 'lastmile' AND state = 'in_progress';
