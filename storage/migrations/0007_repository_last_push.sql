-- The time of the newest push of the pipeline branch that lastmile has
-- handled (Unix milliseconds; 0: none yet). A push older than it, delivered
-- late, is released only if the branch still points at its commit: a
-- rollback handled first may have undone it.
ALTER TABLE repositories ADD COLUMN last_push_at INTEGER NOT NULL DEFAULT 0;
