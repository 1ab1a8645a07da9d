-- The commit whose configuration last changed a repository's pipeline
-- branch: a push naming another branch changes it back only if that commit
-- does not already contain the push (a push delivered late carries an older
-- configuration). '' when not known (set before this migration, or learned
-- from the default branch's head).
ALTER TABLE repositories ADD COLUMN pipeline_branch_sha TEXT NOT NULL DEFAULT '';
