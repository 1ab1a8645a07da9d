-- The approvals and rejections of protection-rule requests that GitHub has
-- not received (the call failed, or lastmile stopped before it): the sweep
-- sends them again, reading this index alone (the answered decisions,
-- never pruned, are not walked).
CREATE INDEX protection_decisions_unposted ON protection_decisions (decided_at) WHERE posted = 0 AND state != 'waiting';
