-- A baseline release: a repository's first release, from a push that
-- created the pipeline branch, whose commits are the branch's whole
-- history (a new repository pushed, or one imported). They are kept for
-- the audit, but lead time counts only the commit pushed. Releases
-- recorded before this migration are not baselines: their lead times were
-- observed already.
ALTER TABLE releases ADD COLUMN baseline INTEGER NOT NULL DEFAULT 0;
