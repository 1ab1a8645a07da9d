-- A deployment_protection_rule request for a commit whose deployment to the
-- previous environment has not ended yet waits for that deployment (state
-- 'waiting') instead of being rejected: GitHub does not keep webhooks in
-- order, and the previous environment's success can reach lastmile after
-- the next job's request. The table is rebuilt to widen the CHECK, SQLite's
-- way of changing a constraint.
CREATE TABLE protection_decisions_new (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    repository_id INTEGER NOT NULL,
    delivery_id   TEXT    NOT NULL UNIQUE,
    run_id        INTEGER NOT NULL,
    environment   TEXT    NOT NULL,
    sha           TEXT    NOT NULL,
    state         TEXT    NOT NULL CHECK (state IN ('approved', 'rejected', 'waiting')),
    comment       TEXT    NOT NULL,
    decided_at    INTEGER NOT NULL,
    posted        INTEGER NOT NULL DEFAULT 0
);
INSERT INTO protection_decisions_new (id, repository_id, delivery_id, run_id, environment, sha, state, comment,
    decided_at, posted)
    SELECT id, repository_id, delivery_id, run_id, environment, sha, state, comment, decided_at, posted
    FROM protection_decisions;
UPDATE sqlite_sequence SET seq = MAX(seq, COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'protection_decisions'), 0))
    WHERE name = 'protection_decisions_new';
DROP TABLE protection_decisions;
ALTER TABLE protection_decisions_new RENAME TO protection_decisions;
CREATE INDEX protection_decisions_sha ON protection_decisions (repository_id, sha);
CREATE INDEX protection_decisions_waiting ON protection_decisions (repository_id, sha) WHERE state = 'waiting';
