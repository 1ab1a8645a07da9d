-- GitHub's environment names ignore case: "Production" and "production" are
-- one environment. A configuration that respelled an environment in case
-- only gave the new spelling state of its own, with no record of what had
-- reached the environment: its first success observed again the lead time
-- of every commit since the environment joined the pipeline, and its
-- restore clock and last success started afresh. environment_state and
-- environment_commits now compare environment names without case (SQLite's
-- NOCASE, as the ledger's other lookups of an environment): the tables are
-- rebuilt, SQLite's way of changing a column's collation.
--
-- environment_state keeps one row per environment. Of the spellings a
-- database holds already, the row keeps the live one (the configuration's),
-- else the one with the latest success; the environment is live if a
-- spelling is, its watermark and last success are the latest, and its
-- restore clock runs from the first failure after that last success that
-- a spelling's clock recorded (a failure heard of before that success
-- under one spelling and restored by it under the other was not measured
-- then, and is not now).
CREATE TABLE environment_state_new (
    repository_id   INTEGER NOT NULL,
    environment     TEXT    NOT NULL COLLATE NOCASE, -- the configuration's spelling
    repository      TEXT    NOT NULL,
    production      INTEGER NOT NULL DEFAULT 0, -- as the latest configuration says
    lead_watermark  INTEGER NOT NULL DEFAULT 0, -- newest release whose commits count as deployed here
    failing_since   INTEGER NOT NULL DEFAULT 0, -- first failure since the last success
    last_success_at INTEGER NOT NULL DEFAULT 0,
    retired         INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (repository_id, environment)
) WITHOUT ROWID;
INSERT INTO environment_state_new (repository_id, environment, repository, production, lead_watermark, failing_since,
    last_success_at, retired)
SELECT k.repository_id, k.environment, k.repository, k.production, g.lead_watermark,
    COALESCE((SELECT MIN(s.failing_since) FROM environment_state s WHERE s.repository_id = k.repository_id
        AND s.environment = k.environment COLLATE NOCASE AND s.failing_since > g.last_success_at), 0),
    g.last_success_at, g.retired
FROM (SELECT repository_id, environment, repository, production, ROW_NUMBER() OVER (
        PARTITION BY repository_id, environment COLLATE NOCASE
        ORDER BY retired, last_success_at DESC, environment) AS n
    FROM environment_state) k
JOIN (SELECT repository_id, environment COLLATE NOCASE AS environment, MAX(lead_watermark) AS lead_watermark,
        MAX(last_success_at) AS last_success_at, MIN(retired) AS retired
    FROM environment_state GROUP BY repository_id, environment COLLATE NOCASE) g
    ON g.repository_id = k.repository_id AND g.environment = k.environment COLLATE NOCASE
WHERE k.n = 1;
DROP TABLE environment_state;
ALTER TABLE environment_state_new RENAME TO environment_state;

-- environment_commits keeps each commit's first arrival in the environment,
-- whatever the spelling it arrived under.
CREATE TABLE environment_commits_new (
    repository_id INTEGER NOT NULL REFERENCES repositories (id),
    environment   TEXT    NOT NULL COLLATE NOCASE,
    sha           TEXT    NOT NULL,
    deployment_id INTEGER NOT NULL REFERENCES deployments (id), -- the first successful deployment that brought it
    reached_at    INTEGER NOT NULL,                              -- that success, unix milliseconds
    PRIMARY KEY (repository_id, environment, sha)
) WITHOUT ROWID;
INSERT INTO environment_commits_new (repository_id, environment, sha, deployment_id, reached_at)
SELECT repository_id, environment, sha, deployment_id, MIN(reached_at) -- SQLite: the other columns from that row
FROM environment_commits
GROUP BY repository_id, environment COLLATE NOCASE, sha
ORDER BY repository_id, environment COLLATE NOCASE, sha; -- in key order: appended, not scattered
DROP TABLE environment_commits;
ALTER TABLE environment_commits_new RENAME TO environment_commits;

-- The restore clock's lookups of an environment's deployments compare its
-- name without case too, by this index.
DROP INDEX deployments_reached;
CREATE INDEX deployments_reached ON deployments (repository_id, environment COLLATE NOCASE, release_id) WHERE origin = 'lastmile';
