-- When an installation event (repositories added or removed) last recorded
-- the installation a repository is reached through: a push made before it,
-- delivered late, does not record its older installation over it.
ALTER TABLE repositories ADD COLUMN installation_at INTEGER NOT NULL DEFAULT 0;
