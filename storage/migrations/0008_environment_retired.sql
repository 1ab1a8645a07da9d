-- An environment the pipeline branch's configuration no longer names (renamed
-- or removed) is retired: its history stays, but lastmile_environment_info
-- no longer lists it, so dashboards drop it and the "no successful
-- production deployment" alert does not fire for it forever. Deploying to it
-- again (an older release's configuration) makes it live again.
ALTER TABLE environment_state ADD COLUMN retired INTEGER NOT NULL DEFAULT 0;
