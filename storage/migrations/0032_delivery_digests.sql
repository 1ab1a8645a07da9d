-- The SHA-256 of each delivery body the worker has taken up, and the
-- delivery it came under. GitHub's signature covers the body alone, not
-- the X-GitHub-Delivery header: a signed body sent again under a new
-- delivery ID (from a proxy's log, say) is a replay, not an event, and is
-- not handled again (see DB.ClaimBody). at: when it was first taken up
-- (unix milliseconds), for retention, which drops a digest with its body.
CREATE TABLE delivery_digests (
    digest      BLOB    NOT NULL PRIMARY KEY,
    delivery_id TEXT    NOT NULL,
    at          INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX delivery_digests_at ON delivery_digests (at);
