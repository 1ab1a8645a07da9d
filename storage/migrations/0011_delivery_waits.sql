-- How many times a delivery waited for GitHub (a rate limit, or its API
-- catching up with the event) rather than failed: waits are not attempts
-- and never make a delivery dead, but repeated secondary rate limits are
-- waited out for longer and longer.
ALTER TABLE deliveries ADD COLUMN waits INTEGER NOT NULL DEFAULT 0;
