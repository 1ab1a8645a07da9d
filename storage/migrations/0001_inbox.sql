-- The durable webhook inbox: every delivery answered 2xx is a row here,
-- committed before the answer.
CREATE TABLE deliveries (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT, -- order of arrival
    delivery_id     TEXT    NOT NULL UNIQUE,           -- X-GitHub-Delivery
    event           TEXT    NOT NULL,
    action          TEXT    NOT NULL DEFAULT '',
    installation_id INTEGER NOT NULL DEFAULT 0,
    repository_id   INTEGER NOT NULL DEFAULT 0,
    repository      TEXT    NOT NULL DEFAULT '',
    received_at     INTEGER NOT NULL,                  -- unix milliseconds
    state           TEXT    NOT NULL CHECK (state IN ('pending', 'done', 'ignored', 'dead')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT    NOT NULL DEFAULT '',
    finished_at     INTEGER NOT NULL DEFAULT 0,
    note            TEXT    NOT NULL DEFAULT '',       -- what handling concluded, e.g. why it was ignored
    body            BLOB                               -- raw signed body; NULL once pruned. Last: reading
                                                       -- the columns before it never touches its pages.
);

-- The worker's queue: pending deliveries in arrival order per repository.
CREATE INDEX deliveries_pending ON deliveries (repository, seq) WHERE state = 'pending';
CREATE INDEX deliveries_dead ON deliveries (seq) WHERE state = 'dead';
CREATE INDEX deliveries_received ON deliveries (received_at);

-- Monotonic counters that must survive restarts (exposed on /metrics).
CREATE TABLE counters (
    name   TEXT    NOT NULL,
    labels TEXT    NOT NULL, -- canonical label string, e.g. event="push",outcome="accepted"
    value  REAL    NOT NULL DEFAULT 0,
    PRIMARY KEY (name, labels)
) WITHOUT ROWID;

-- Small named values: checkpoints, the instance identity.
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
