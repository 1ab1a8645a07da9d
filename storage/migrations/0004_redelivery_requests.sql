-- The redeliveries lastmile asked GitHub for, per delivery GUID, so that the
-- cap on attempts holds across runs of the redelivery check (each run reads
-- only GitHub's recent attempts). Rows older than GitHub's redelivery window
-- are pruned.
CREATE TABLE redelivery_requests (
    guid         TEXT PRIMARY KEY,
    requests     INTEGER NOT NULL,
    gave_up      INTEGER NOT NULL DEFAULT 0, -- 1: lastmile stopped asking
    requested_at INTEGER NOT NULL            -- unix ms of the latest change
);
