-- Raw delivery bodies move to their own table. A delivery's row changes
-- several times (attempts, state, note); with the 8 KB body in the same row,
-- SQLite rewrote the body's overflow pages at every change. Pruning a body
-- is now deleting its row.
CREATE TABLE delivery_bodies (
    seq  INTEGER PRIMARY KEY REFERENCES deliveries (seq),
    body BLOB NOT NULL
);
INSERT INTO delivery_bodies (seq, body) SELECT seq, body FROM deliveries WHERE body IS NOT NULL;
ALTER TABLE deliveries DROP COLUMN body;
