-- What a redelivery request was about, kept so that a check at start can
-- ask GitHub once more for a delivery given up on long before (past the
-- hour its listing looks back): an attempt's ID to redeliver (0: a request
-- recorded before this column, -1: GitHub refused it for good; neither is
-- asked for again), its event, and its first attempt seen (GitHub's time,
-- unix ms), to stay within GitHub's redelivery window.
ALTER TABLE redelivery_requests ADD COLUMN hook_delivery_id INTEGER NOT NULL DEFAULT 0;
ALTER TABLE redelivery_requests ADD COLUMN event TEXT NOT NULL DEFAULT '';
ALTER TABLE redelivery_requests ADD COLUMN first_attempt_at INTEGER NOT NULL DEFAULT 0;
CREATE INDEX redelivery_requests_given_up ON redelivery_requests (first_attempt_at) WHERE gave_up = 1 AND hook_delivery_id > 0;
