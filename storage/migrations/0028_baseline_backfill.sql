-- Baselines among the releases recorded before 0026: a repository's first
-- release whose push created the branch (its stored push body says
-- before is all zeros) lists the branch's history, which lead time must
-- not count in an environment that has not had its first success yet.
-- Where the body is gone (pruned by retention), nothing is known and the
-- release stays as it was.
UPDATE releases SET baseline = 1
WHERE baseline = 0
    AND delivery_id != ''
    AND id IN (SELECT MIN(id) FROM releases GROUP BY repository_id)
    AND EXISTS (SELECT 1 FROM deliveries d JOIN delivery_bodies b ON b.seq = d.seq
        WHERE d.delivery_id = releases.delivery_id AND d.event = 'push'
            AND json_valid(CAST(b.body AS TEXT))
            AND json_extract(CAST(b.body AS TEXT), '$.before') = '0000000000000000000000000000000000000000');

-- The history a baseline lists has reached every environment its commit
-- reached (it is beneath it), without a lead time: a comparison listing
-- some of it later does not count it as delivered then.
INSERT INTO environment_commits (repository_id, environment, sha, deployment_id, reached_at)
SELECT e.repository_id, e.environment, c.sha, e.deployment_id, e.reached_at
FROM releases r
    JOIN environment_commits e ON e.repository_id = r.repository_id AND e.sha = r.sha
    JOIN release_commits c ON c.release_id = r.id
WHERE r.baseline AND c.sha != r.sha
ON CONFLICT DO NOTHING;
