-- The names a repository had before its current one (GitHub keeps its ID
-- across renames and transfers), so that a lookup by an old name (audit,
-- history, the API) finds it when no repository holds that name now.
-- until_at: the newest event known to carry the name (of several
-- repositories that had a name, the lookup takes the last to have it).
-- Filled from then on when a repository's name changes (or a late event
-- carries an older one), and here from the names the deliveries recorded
-- for a repository other than its current one (the deliveries are kept;
-- only their bodies are pruned).
CREATE TABLE repository_names (
    repository_id INTEGER NOT NULL REFERENCES repositories (id),
    full_name     TEXT    NOT NULL COLLATE NOCASE,
    until_at      INTEGER NOT NULL,
    PRIMARY KEY (repository_id, full_name)
) WITHOUT ROWID;
CREATE INDEX repository_names_name ON repository_names (full_name, until_at);
INSERT INTO repository_names (repository_id, full_name, until_at)
SELECT d.repository_id, MIN(d.repository), MAX(d.received_at)
FROM deliveries d JOIN repositories r ON r.id = d.repository_id
WHERE d.repository != '' AND d.repository != r.full_name COLLATE NOCASE
GROUP BY d.repository_id, d.repository COLLATE NOCASE;
