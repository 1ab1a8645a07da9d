-- The commits that have reached each environment: a commit's lead time is
-- observed once per environment, when the first deployment that contains it
-- succeeds there. A roll-forward after a rollback brings back commits that
-- the environment already ran; they are not observed a second time.
CREATE TABLE environment_commits (
    repository_id INTEGER NOT NULL REFERENCES repositories (id),
    environment   TEXT    NOT NULL,
    sha           TEXT    NOT NULL,
    deployment_id INTEGER NOT NULL REFERENCES deployments (id), -- the first successful deployment that brought it
    reached_at    INTEGER NOT NULL,                              -- that success, unix milliseconds
    PRIMARY KEY (repository_id, environment, sha)
) WITHOUT ROWID;

-- What earlier successes brought, the first success of each commit winning:
-- a successful deployment brought the commits of its release and of the
-- releases it builds on (superseded before they got there), back to one
-- that succeeded there itself.
WITH RECURSIVE brought(deployment_id, repository_id, environment, reached_at, release_id) AS (
    SELECT id, repository_id, environment, succeeded_at, release_id FROM deployments
    WHERE origin = 'lastmile' AND succeeded_at > 0 AND release_id IS NOT NULL
    UNION ALL
    SELECT b.deployment_id, b.repository_id, b.environment, b.reached_at, r.parent_id
    FROM brought b JOIN releases r ON r.id = b.release_id
    WHERE r.parent_id > 0 AND NOT EXISTS (SELECT 1 FROM deployments p WHERE p.release_id = r.parent_id
        AND p.environment = b.environment AND p.origin = 'lastmile' AND p.succeeded_at > 0)
)
INSERT INTO environment_commits (repository_id, environment, sha, deployment_id, reached_at)
SELECT b.repository_id, b.environment, c.sha, b.deployment_id, MIN(b.reached_at) -- SQLite: deployment_id from that row
FROM brought b JOIN release_commits c ON c.release_id = b.release_id
GROUP BY b.repository_id, b.environment, c.sha
ORDER BY b.repository_id, b.environment, c.sha; -- in key order: appended, not scattered
