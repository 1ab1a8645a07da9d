-- Deployment statuses kept for the audit record only (see
-- pipeline.DisregardedStatus): a success a person posted on a deployment
-- whose success proves its commit. They change no deployment, release or
-- metric, and no query but the audit record's reads them.
CREATE TABLE disregarded_statuses (
    github_id       INTEGER PRIMARY KEY,
    deployment_id   INTEGER NOT NULL REFERENCES deployments (id),
    state           TEXT    NOT NULL,
    description     TEXT    NOT NULL DEFAULT '',
    log_url         TEXT    NOT NULL DEFAULT '',
    environment_url TEXT    NOT NULL DEFAULT '',
    creator         TEXT    NOT NULL DEFAULT '',
    created_at      INTEGER NOT NULL, -- GitHub's time (milliseconds)
    why             TEXT    NOT NULL
);
CREATE INDEX disregarded_statuses_deployment ON disregarded_statuses (deployment_id);
