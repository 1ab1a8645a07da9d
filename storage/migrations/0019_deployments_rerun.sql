-- A re-run of a deployment's workflow ("Re-run failed jobs") deploys the
-- deployment again after its final status: its in_progress does not move
-- the deployment back from that state, and such a deploy held neither its
-- environment nor a protection-rule request waiting for it. rerun is 1
-- while it runs: the deployment's newest in_progress, in GitHub's order
-- (its IDs grow), comes after its newest final status (success, failure,
-- error or inactive).
ALTER TABLE deployments ADD COLUMN rerun INTEGER NOT NULL DEFAULT 0;
UPDATE deployments SET rerun = 1 WHERE state IN ('success', 'failure', 'error', 'inactive') AND EXISTS (
    SELECT 1 FROM deployment_statuses p WHERE p.deployment_id = deployments.id AND p.state = 'in_progress'
        AND p.github_id = (SELECT MAX(github_id) FROM deployment_statuses WHERE deployment_id = deployments.id AND state = 'in_progress')
        AND NOT EXISTS (SELECT 1 FROM deployment_statuses f WHERE f.deployment_id = deployments.id
            AND f.state IN ('success', 'failure', 'error', 'inactive')
            AND (f.github_id > p.github_id OR f.github_id IS NULL AND f.id > p.id)));
-- The sweep of the holds that ended (pipeline.HoldRunning) reads re-runs in
-- progress too.
DROP INDEX deployments_in_progress;
CREATE INDEX deployments_in_progress ON deployments (repository_id) WHERE origin = 'lastmile' AND (state = 'in_progress' OR rerun = 1);
