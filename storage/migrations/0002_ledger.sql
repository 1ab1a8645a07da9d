-- The release ledger: the audit record of every change lastmile carried.

CREATE TABLE repositories (
    id              INTEGER PRIMARY KEY, -- GitHub's repository ID
    full_name       TEXT    NOT NULL,
    installation_id INTEGER NOT NULL,
    pipeline_branch TEXT    NOT NULL DEFAULT '', -- from the last configuration read
    updated_at      INTEGER NOT NULL
);
CREATE INDEX repositories_name ON repositories (full_name);

CREATE TABLE releases (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    repository_id INTEGER NOT NULL REFERENCES repositories (id),
    sha           TEXT    NOT NULL,
    ref           TEXT    NOT NULL,
    pusher        TEXT    NOT NULL DEFAULT '',
    pushed_at     INTEGER NOT NULL,
    delivery_id   TEXT    NOT NULL DEFAULT '',
    config        TEXT,                        -- the parsed .github/lastmile.yml (JSON); NULL when invalid
    state         TEXT    NOT NULL CHECK (state IN ('active', 'completed', 'stopped')),
    stop_kind     TEXT    NOT NULL DEFAULT '',
    stop_reason   TEXT    NOT NULL DEFAULT '',
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    UNIQUE (repository_id, sha)
);
CREATE INDEX releases_active ON releases (repository_id, id) WHERE state = 'active';
CREATE INDEX releases_repository ON releases (repository_id, id);

CREATE TABLE release_commits (
    release_id INTEGER NOT NULL REFERENCES releases (id),
    position   INTEGER NOT NULL, -- oldest first
    sha        TEXT    NOT NULL,
    author     TEXT    NOT NULL,
    timestamp  INTEGER NOT NULL,
    title      TEXT    NOT NULL,
    PRIMARY KEY (release_id, position)
) WITHOUT ROWID;

CREATE TABLE deployments (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    repository_id   INTEGER NOT NULL REFERENCES repositories (id),
    release_id      INTEGER REFERENCES releases (id),
    environment     TEXT    NOT NULL,
    stage           INTEGER NOT NULL, -- index in the release's environments; -1 when not in them
    sha             TEXT    NOT NULL,
    origin          TEXT    NOT NULL CHECK (origin IN ('lastmile', 'external')),
    github_id       INTEGER UNIQUE,   -- NULL until GitHub created it
    state           TEXT    NOT NULL,
    production      INTEGER NOT NULL DEFAULT 0,
    creator         TEXT    NOT NULL DEFAULT '',
    attempts        INTEGER NOT NULL DEFAULT 0,
    reason          TEXT    NOT NULL DEFAULT '',
    rejected        INTEGER NOT NULL DEFAULT 0,
    run_id          INTEGER NOT NULL DEFAULT 0,
    log_url         TEXT    NOT NULL DEFAULT '',
    environment_url TEXT    NOT NULL DEFAULT '',
    twin_of         INTEGER REFERENCES deployments (id),
    notify          TEXT    NOT NULL DEFAULT '', -- a status lastmile still owes GitHub
    notify_reason   TEXT    NOT NULL DEFAULT '',
    waiting_since   INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    terminal_at     INTEGER NOT NULL DEFAULT 0, -- first success, failure or error
    succeeded_at    INTEGER NOT NULL DEFAULT 0  -- first success
);
-- Exactly one lastmile deployment per release and stage.
CREATE UNIQUE INDEX deployments_one_per_stage ON deployments (release_id, stage) WHERE origin = 'lastmile';
CREATE INDEX deployments_reached ON deployments (repository_id, environment, release_id) WHERE origin = 'lastmile';
CREATE INDEX deployments_sha ON deployments (repository_id, sha, environment);
CREATE INDEX deployments_work ON deployments (repository_id) WHERE state IN ('intent', 'waiting') OR notify != '';
CREATE INDEX deployments_run ON deployments (run_id) WHERE run_id != 0;

CREATE TABLE deployment_statuses (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    deployment_id   INTEGER NOT NULL REFERENCES deployments (id),
    github_id       INTEGER UNIQUE,
    state           TEXT    NOT NULL,
    description     TEXT    NOT NULL DEFAULT '',
    log_url         TEXT    NOT NULL DEFAULT '',
    environment_url TEXT    NOT NULL DEFAULT '',
    creator         TEXT    NOT NULL DEFAULT '',
    created_at      INTEGER NOT NULL
);
CREATE INDEX deployment_statuses_deployment ON deployment_statuses (deployment_id, id);

CREATE TABLE reviews (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    repository_id INTEGER NOT NULL,
    delivery_id   TEXT    NOT NULL,
    action        TEXT    NOT NULL CHECK (action IN ('requested', 'approved', 'rejected')),
    environment   TEXT    NOT NULL,
    run_id        INTEGER NOT NULL,
    deployment_id INTEGER REFERENCES deployments (id),
    reviewers     TEXT    NOT NULL DEFAULT '[]', -- JSON list
    actor         TEXT    NOT NULL DEFAULT '',
    comment       TEXT    NOT NULL DEFAULT '',
    since         INTEGER NOT NULL DEFAULT 0,
    at            INTEGER NOT NULL,
    UNIQUE (delivery_id, environment)
);
CREATE INDEX reviews_run ON reviews (repository_id, run_id);
CREATE INDEX reviews_deployment ON reviews (deployment_id);

CREATE TABLE workflow_runs (
    run_id        INTEGER PRIMARY KEY,
    repository_id INTEGER NOT NULL,
    name          TEXT    NOT NULL DEFAULT '',
    event         TEXT    NOT NULL DEFAULT '',
    head_sha      TEXT    NOT NULL DEFAULT '',
    head_branch   TEXT    NOT NULL DEFAULT '',
    status        TEXT    NOT NULL DEFAULT '',
    conclusion    TEXT    NOT NULL DEFAULT '',
    url           TEXT    NOT NULL DEFAULT '',
    attempt       INTEGER NOT NULL DEFAULT 1,
    created_at    INTEGER NOT NULL DEFAULT 0,
    updated_at    INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE workflow_jobs (
    job_id        INTEGER PRIMARY KEY,
    run_id        INTEGER NOT NULL,
    repository_id INTEGER NOT NULL,
    name          TEXT    NOT NULL DEFAULT '',
    head_sha      TEXT    NOT NULL DEFAULT '',
    status        TEXT    NOT NULL DEFAULT '',
    conclusion    TEXT    NOT NULL DEFAULT '',
    url           TEXT    NOT NULL DEFAULT '',
    started_at    INTEGER NOT NULL DEFAULT 0,
    completed_at  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX workflow_jobs_run ON workflow_jobs (run_id);

-- Deploy job logs, gzip-compressed; log is NULL once pruned by retention.
CREATE TABLE job_logs (
    job_id        INTEGER PRIMARY KEY,
    deployment_id INTEGER NOT NULL REFERENCES deployments (id),
    name          TEXT    NOT NULL DEFAULT '',
    log           BLOB,
    size          INTEGER NOT NULL, -- bytes kept, uncompressed
    truncated     INTEGER NOT NULL DEFAULT 0,
    fetched_at    INTEGER NOT NULL
);
CREATE INDEX job_logs_deployment ON job_logs (deployment_id);

CREATE TABLE protection_decisions (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    repository_id INTEGER NOT NULL,
    delivery_id   TEXT    NOT NULL UNIQUE,
    run_id        INTEGER NOT NULL,
    environment   TEXT    NOT NULL,
    sha           TEXT    NOT NULL,
    state         TEXT    NOT NULL CHECK (state IN ('approved', 'rejected')),
    comment       TEXT    NOT NULL,
    decided_at    INTEGER NOT NULL,
    posted        INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX protection_decisions_sha ON protection_decisions (repository_id, sha);

-- Rollups behind /metrics, updated in the transaction that records the
-- event, so a scrape never scans history.
CREATE TABLE histograms (
    name        TEXT    NOT NULL,
    repository  TEXT    NOT NULL,
    environment TEXT    NOT NULL,
    count       INTEGER NOT NULL DEFAULT 0,
    sum         REAL    NOT NULL DEFAULT 0,
    buckets     TEXT    NOT NULL DEFAULT '', -- "le:count,..." by increasing upper bound (not cumulative)
    PRIMARY KEY (name, repository, environment)
) WITHOUT ROWID;

CREATE TABLE environment_state (
    repository_id   INTEGER NOT NULL,
    environment     TEXT    NOT NULL,
    repository      TEXT    NOT NULL,
    production      INTEGER NOT NULL DEFAULT 0, -- as the latest configuration says
    lead_watermark  INTEGER NOT NULL DEFAULT 0, -- newest release whose commits count as deployed here
    failing_since   INTEGER NOT NULL DEFAULT 0, -- first failure since the last success
    last_success_at INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (repository_id, environment)
) WITHOUT ROWID;
