-- When the newest event whose name lastmile recorded for a repository was
-- made (a push's time). GitHub keeps a repository's ID across renames and
-- transfers; a push made before a rename but handled after it (redelivered,
-- or a dead delivery retried) carries the old name, and must not put it
-- back: a name from an event older than this is not recorded (as
-- installation_at does for the installation). A name recorded before this
-- migration counts as of the newest push of the pipeline branch handled
-- (0 when none was: the next event's name is recorded).
ALTER TABLE repositories ADD COLUMN name_at INTEGER NOT NULL DEFAULT 0;
UPDATE repositories SET name_at = last_push_at;
