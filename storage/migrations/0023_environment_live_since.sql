-- Since when each environment is live in its repository's pipeline (the
-- configuration names it; for a production one, names it as production):
-- lastmile_environment_live_since_timestamp_seconds, from which the
-- no-production-deployment alert counts when the environment never had a
-- successful deployment since. Environments live before this migration
-- that never succeeded count from the migration, so that upgrading raises
-- no alert at once; the others count from their last success, as before.
ALTER TABLE environment_state ADD COLUMN live_since INTEGER NOT NULL DEFAULT 0;
UPDATE environment_state SET live_since = CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)
WHERE NOT retired AND last_success_at = 0;
