-- The runs of a commit: when a run ends, lastmile looks at the other runs of
-- its commit (still going, or ended waiting for its judgement). Without this
-- index every run's end read the whole table.
CREATE INDEX workflow_runs_commit ON workflow_runs (repository_id, head_sha);
