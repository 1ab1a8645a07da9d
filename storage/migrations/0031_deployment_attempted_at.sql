-- When lastmile last asked GitHub to create an intent's deployment (unix
-- milliseconds; 0: never, or before this column). An attempt whose answer
-- was lost may have created it; until GitHub's list of deployments can be
-- expected to show it, lastmile does not ask again (see
-- pipeline.Engine.create).
ALTER TABLE deployments ADD COLUMN attempted_at INTEGER NOT NULL DEFAULT 0;
