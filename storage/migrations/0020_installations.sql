-- What lastmile heard of the App's installations: uninstalled (deleted),
-- suspended, or active again, since when and by whom (GitHub's `installation`
-- events). An installation without a row is taken to be active. The worker
-- reads it when GitHub refuses an installation's token: a delivery of an
-- uninstalled installation is ignored rather than retried until dead, and
-- one of a suspended installation waits until it is unsuspended.
CREATE TABLE installations (
    id         INTEGER PRIMARY KEY,              -- GitHub's installation ID
    account    TEXT    NOT NULL DEFAULT '',      -- the account it is installed on
    state      TEXT    NOT NULL CHECK (state IN ('active', 'suspended', 'deleted')),
    since      INTEGER NOT NULL,                 -- unix ms: when it entered the state
    by         TEXT    NOT NULL DEFAULT '',      -- who put it there (GitHub login)
    updated_at INTEGER NOT NULL
);
-- The repositories reached through an installation, for its uninstallation.
CREATE INDEX repositories_installation ON repositories (installation_id);
