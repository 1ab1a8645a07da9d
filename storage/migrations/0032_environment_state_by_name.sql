-- The environments by the repository name their series are kept under
-- (series are kept by name: two repositories can share one), for the
-- check that a retired environment's zero series are no other
-- repository's (dropZeroSeries), which read the whole table.
CREATE INDEX environment_state_by_name ON environment_state (repository, environment);
