-- A protection-rule request names the job's deployment (GitHub's payload
-- has it): a decision is the one of that deployment, not of every attempt
-- of the run in the environment — a re-run of a job asks again, for a
-- deployment of its own. 0 where not known (decisions recorded before).
ALTER TABLE protection_decisions ADD COLUMN deployment_id INTEGER NOT NULL DEFAULT 0;

-- A job's deployment counts as a workflow's own only if GitHub took
-- lastmile's approval of the job: one not withdrawn, or, withdrawn, one
-- whose job started (GitHub's refusal of the rejection sent instead does
-- not say which answer it took). One it refused, or has not answered
-- yet, never deployed — or has not yet.
-- Migration 0042 counted any job that asked; those not ended are judged
-- again (those that ended were counted already: counters only grow).
UPDATE deployments SET workflow_owned = 0
    WHERE workflow_owned = 1 AND terminal_at = 0 AND succeeded_at = 0
    AND NOT EXISTS (SELECT 1 FROM protection_decisions p WHERE p.run_id = deployments.run_id
        AND p.repository_id = deployments.repository_id AND p.environment = deployments.environment COLLATE NOCASE
        AND p.state = 'approved' AND (p.withdrawn_at IS NULL
            OR EXISTS (SELECT 1 FROM deployment_statuses s WHERE s.deployment_id = deployments.id AND s.state = 'in_progress')));

-- History reads a release's deployments that workflows own among its
-- commit's (deployments_sha), counted or not.
DROP INDEX deployments_workflow_owned_release;
