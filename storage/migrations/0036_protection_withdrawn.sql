-- An approval of a protection-rule request that GitHub did not confirm (its
-- sending failed, or lastmile stopped before it) and that no longer holds
-- when lastmile is about to send it again (a newer release has succeeded in
-- the environment since, a force push took the commit off the branch) is
-- withdrawn: lastmile sends a rejection saying why instead of leaving the
-- job to wait for GitHub's 30 days. The approval stays as it was decided;
-- withdrawn_at and withdrawn_comment are the rejection's, and posted then
-- says whether GitHub confirmed the rejection.
ALTER TABLE protection_decisions ADD COLUMN withdrawn_at INTEGER;
ALTER TABLE protection_decisions ADD COLUMN withdrawn_comment TEXT NOT NULL DEFAULT '';
