-- Two reads that walked a repository's whole history, which lastmile never
-- prunes, now read an index of what they look for: the newest release to
-- succeed in an environment (NewestSuccess, at each protection-rule
-- decision), and the releases a recent failure or rejection stopped
-- (Revivable, when a force push or a deleted branch withdraws releases).
CREATE INDEX deployments_succeeded ON deployments (repository_id, environment COLLATE NOCASE, release_id) WHERE succeeded_at > 0;
CREATE INDEX releases_revivable ON releases (repository_id, updated_at) WHERE state = 'stopped' AND stop_kind IN ('failed', 'rejected');
