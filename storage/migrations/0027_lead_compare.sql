-- Lead time of a release that does not build on what an environment last
-- ran (a rollback, a force push, history rewritten): its success there
-- brings the commits of GitHub's comparison of the environment's last
-- successful commit with its own, which the engine asks for once and
-- keeps here before the success is recorded.
--
-- base_sha: the commit a release's commits are counted from (the previous
-- release's, or the first release's push's before); '' for a baseline,
-- and for the releases recorded before this migration (not known: a
-- comparison is asked for them when one is needed).
ALTER TABLE releases ADD COLUMN base_sha TEXT NOT NULL DEFAULT '';

CREATE TABLE lead_compares (
    release_id INTEGER NOT NULL REFERENCES releases (id),
    base_sha   TEXT    NOT NULL, -- compared with the release's SHA: base_sha...sha
    state      TEXT    NOT NULL CHECK (state IN ('failing', 'compared', 'given_up')),
    status     TEXT    NOT NULL DEFAULT '', -- GitHub's: ahead, behind, diverged or identical
    attempts   INTEGER NOT NULL DEFAULT 0,  -- failed requests
    note       TEXT    NOT NULL DEFAULT '', -- the last failure
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (release_id, base_sha)
) WITHOUT ROWID;

-- The commits of a comparison: in the release's SHA, not in base_sha.
CREATE TABLE lead_compare_commits (
    release_id INTEGER NOT NULL,
    base_sha   TEXT    NOT NULL,
    position   INTEGER NOT NULL, -- oldest first
    sha        TEXT    NOT NULL,
    timestamp  INTEGER NOT NULL,
    PRIMARY KEY (release_id, base_sha, position),
    FOREIGN KEY (release_id, base_sha) REFERENCES lead_compares (release_id, base_sha)
) WITHOUT ROWID;
