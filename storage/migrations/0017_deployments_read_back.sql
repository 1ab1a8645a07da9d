-- lastmile made the deployment inactive and still has to read its statuses
-- back from GitHub (a deploy that had begun holds its environment): owed
-- work, like a status to write, until the read succeeds.
ALTER TABLE deployments ADD COLUMN read_back INTEGER NOT NULL DEFAULT 0;
DROP INDEX deployments_work;
CREATE INDEX deployments_work ON deployments (repository_id) WHERE state IN ('intent', 'waiting') OR notify != '' OR read_back = 1;
