-- A push whose payload lacks pushed_at is noted at the receipt of its
-- delivery, apart from pushes of known time: the receipt may be long after
-- the push, so it makes earlier pushes delivered later be checked against
-- the branch, but it must not make a genuinely newer push look overtaken.
ALTER TABLE repositories ADD COLUMN last_receipt_at INTEGER NOT NULL DEFAULT 0;
