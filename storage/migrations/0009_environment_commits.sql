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

-- What earlier successes brought, the first success of each commit winning.
INSERT OR IGNORE INTO environment_commits (repository_id, environment, sha, deployment_id, reached_at)
SELECT d.repository_id, d.environment, c.sha, d.id, d.succeeded_at
FROM deployments d JOIN release_commits c ON c.release_id = d.release_id
WHERE d.origin = 'lastmile' AND d.succeeded_at > 0
ORDER BY d.succeeded_at, d.id;
