-- The worker's queues are by repository ID, not by name: a repository
-- renamed while deliveries waited keeps one queue, and another repository
-- that takes up a former name (GitHub lets it) gets a queue of its own
-- instead of waiting behind the old one's retries. Deliveries of no
-- repository (an installation's own events) have ID 0 and are queued by
-- installation.
DROP INDEX deliveries_pending;
CREATE INDEX deliveries_pending ON deliveries (repository_id, seq) WHERE state = 'pending';
