-- A release per push, not per commit: a force push back to a commit that
-- was released before (a rollback) is a new release, deployed through every
-- environment again. The table is rebuilt without UNIQUE (repository_id,
-- sha), SQLite's way of dropping a constraint; migrations run with foreign
-- keys off and checked before they commit.
CREATE TABLE releases_new (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    repository_id INTEGER NOT NULL REFERENCES repositories (id),
    sha           TEXT    NOT NULL,
    ref           TEXT    NOT NULL,
    pusher        TEXT    NOT NULL DEFAULT '',
    pushed_at     INTEGER NOT NULL,
    delivery_id   TEXT    NOT NULL DEFAULT '', -- the push that made it
    config        TEXT,                        -- the parsed .github/lastmile.yml (JSON); NULL when invalid
    state         TEXT    NOT NULL CHECK (state IN ('active', 'completed', 'stopped')),
    stop_kind     TEXT    NOT NULL DEFAULT '',
    stop_reason   TEXT    NOT NULL DEFAULT '',
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    parent_id     INTEGER NOT NULL DEFAULT 0
);
INSERT INTO releases_new (id, repository_id, sha, ref, pusher, pushed_at, delivery_id, config, state, stop_kind,
    stop_reason, created_at, updated_at, parent_id)
    SELECT id, repository_id, sha, ref, pusher, pushed_at, delivery_id, config, state, stop_kind,
    stop_reason, created_at, updated_at, parent_id FROM releases;
-- Release IDs go on from where they were, not from the largest kept.
UPDATE sqlite_sequence SET seq = MAX(seq, COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'releases'), 0))
    WHERE name = 'releases_new';
DROP TABLE releases;
ALTER TABLE releases_new RENAME TO releases;
CREATE INDEX releases_active ON releases (repository_id, id) WHERE state = 'active';
CREATE INDEX releases_repository ON releases (repository_id, id);
CREATE INDEX releases_sha ON releases (repository_id, sha, id);
