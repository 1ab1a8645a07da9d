-- The release a release builds on: the previous release of the repository
-- when the push moved the branch forward from it, 0 when it did not (a
-- force push that rewrote or rolled back the branch, or the first release).
-- Lead time counts, when a release reaches an environment, the commits of
-- its chain of parents back to the last release that reached it, and no
-- others. Releases recorded before this migration are taken to build on
-- the one before them, as lead time then assumed.
ALTER TABLE releases ADD COLUMN parent_id INTEGER NOT NULL DEFAULT 0;
UPDATE releases SET parent_id = COALESCE(
    (SELECT MAX(p.id) FROM releases p WHERE p.repository_id = releases.repository_id AND p.id < releases.id), 0);
