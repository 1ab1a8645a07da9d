-- Deployments a workflow owns count in the delivery metrics as lastmile's
-- do: Actions' own deployment for a job of a run that no deployment
-- triggered (on push, by hand), of a commit of a release whose
-- configuration names the environment, with no twin of lastmile's, whose
-- job asked lastmile as the environment's custom protection rule.
-- run_event is what triggered the job's run, '' while not known.
ALTER TABLE deployments ADD COLUMN run_event TEXT NOT NULL DEFAULT '';
ALTER TABLE deployments ADD COLUMN workflow_owned INTEGER NOT NULL DEFAULT 0;

-- Which jobs asked lastmile, by run.
CREATE INDEX protection_decisions_run ON protection_decisions (run_id);

-- The runs lastmile has heard of tell the event of the jobs' deployments
-- recorded so far.
UPDATE deployments SET run_event = (SELECT w.event FROM workflow_runs w WHERE w.run_id = deployments.run_id)
    WHERE origin = 'external' AND run_id != 0
    AND EXISTS (SELECT 1 FROM workflow_runs w WHERE w.run_id = deployments.run_id);

-- A job of a run on another event than a deployment deploys none of
-- lastmile's deployments: no twin of one (one with no run known was taken
-- for its twin before).
UPDATE deployments SET twin_of = NULL
    WHERE origin = 'external' AND run_id != 0 AND run_event NOT IN ('', 'deployment') AND twin_of IS NOT NULL;

-- Those not ended yet count from now on; those that ended before the
-- upgrade are not counted, but their successes are the environment's:
-- its last success, and the newest release whose commits reached it (a
-- success after the upgrade does not count their commits' lead times
-- again).
UPDATE deployments SET workflow_owned = 1
    WHERE origin = 'external' AND run_id != 0 AND run_event NOT IN ('', 'deployment') AND twin_of IS NULL
    AND release_id IS NOT NULL AND stage >= 0 AND terminal_at = 0 AND succeeded_at = 0
    AND EXISTS (SELECT 1 FROM protection_decisions p WHERE p.run_id = deployments.run_id
        AND p.repository_id = deployments.repository_id AND p.environment = deployments.environment COLLATE NOCASE);

UPDATE environment_state SET
    lead_watermark = MAX(lead_watermark, COALESCE((SELECT MAX(d.release_id) FROM deployments d
        WHERE d.repository_id = environment_state.repository_id AND d.environment = environment_state.environment COLLATE NOCASE
        AND d.origin = 'external' AND d.run_id != 0 AND d.run_event NOT IN ('', 'deployment') AND d.twin_of IS NULL
        AND d.release_id IS NOT NULL AND d.stage >= 0 AND d.succeeded_at > 0
        AND EXISTS (SELECT 1 FROM protection_decisions p WHERE p.run_id = d.run_id
            AND p.repository_id = d.repository_id AND p.environment = d.environment COLLATE NOCASE)), 0)),
    last_success_at = MAX(last_success_at, COALESCE((SELECT MAX(d.succeeded_at) FROM deployments d
        WHERE d.repository_id = environment_state.repository_id AND d.environment = environment_state.environment COLLATE NOCASE
        AND d.origin = 'external' AND d.run_id != 0 AND d.run_event NOT IN ('', 'deployment') AND d.twin_of IS NULL
        AND d.release_id IS NOT NULL AND d.stage >= 0 AND d.succeeded_at > 0
        AND EXISTS (SELECT 1 FROM protection_decisions p WHERE p.run_id = d.run_id
            AND p.repository_id = d.repository_id AND p.environment = d.environment COLLATE NOCASE)), 0));

-- The deployments that count, by environment: time to restore looks for
-- their failures and successes. (Not by release too: the planner's reads
-- of lastmile's own take deployments_reached, whose columns those would
-- be.) Those a workflow owns (a few), by environment and release, and by
-- release, for lastmile status and history.
CREATE INDEX deployments_counted ON deployments (repository_id, environment COLLATE NOCASE)
    WHERE origin = 'lastmile' OR workflow_owned = 1;
CREATE INDEX deployments_workflow_owned ON deployments (repository_id, environment COLLATE NOCASE, release_id)
    WHERE workflow_owned = 1;
CREATE INDEX deployments_workflow_owned_release ON deployments (release_id) WHERE workflow_owned = 1;
