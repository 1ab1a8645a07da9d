-- From here on, deliveries' bodies may be kept compressed (Snappy's
-- framing format; see storage/bodies.go). The schema is unchanged: this
-- version number is what makes an older lastmile, which would hand a
-- compressed body to its handlers as if it were JSON, refuse the database
-- ("written by a newer lastmile") rather than park its pending deliveries
-- as dead.
SELECT 1;
