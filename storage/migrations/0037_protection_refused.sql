-- GitHub's refusal of a protection-rule answer (a 422: the run no longer
-- waited for the rule — answered already, cancelled, or, for the rejection
-- that withdrew an approval, the approval perhaps taken after all) is
-- recorded apart from its taking the answer: posted says the answer needs
-- sending no more, refused that GitHub did not take it.
ALTER TABLE protection_decisions ADD COLUMN refused INTEGER NOT NULL DEFAULT 0;
-- The answers GitHub has not received are sent again for an hour from
-- their decision, or, for the rejection that withdrew an approval, from
-- the withdrawal (late in the approval's hour, it would have had minutes).
DROP INDEX protection_decisions_unposted;
CREATE INDEX protection_decisions_unposted ON protection_decisions (COALESCE(withdrawn_at, decided_at))
    WHERE posted = 0 AND state != 'waiting';
