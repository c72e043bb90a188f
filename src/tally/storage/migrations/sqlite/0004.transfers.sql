-- Transfers between members (api.md section 9): two counters, and lots that a transfer makes.
-- depends: 0003.webhooks

ALTER TABLE members ADD COLUMN lifetime_transferred_in INTEGER NOT NULL DEFAULT 0;
ALTER TABLE members ADD COLUMN lifetime_transferred_out INTEGER NOT NULL DEFAULT 0;

-- A transfer_in entry makes one lot per expiry date among the sender's lots it drew on, so a
-- lot's id (`entry_id`) is no longer always an entry's: an award's or refund's lot keeps its
-- entry's id, a transfer's lots get ids of their own (`lot_…`), and `source_id` is the entry
-- that made the lot. SQLite cannot drop a foreign key, so the table is rebuilt (yoyo's
-- connection does not enforce foreign keys, so `draws` may point at it meanwhile).
CREATE TABLE lots_rebuilt (
    entry_id TEXT PRIMARY KEY,
    member_pk INTEGER NOT NULL REFERENCES members (pk),
    seq INTEGER NOT NULL,
    points INTEGER NOT NULL CHECK (points > 0),
    remaining INTEGER NOT NULL CHECK (remaining >= 0 AND remaining <= points),
    expires_at INTEGER NOT NULL,
    source_id TEXT NOT NULL REFERENCES entries (id)
);
INSERT INTO lots_rebuilt (entry_id, member_pk, seq, points, remaining, expires_at, source_id)
SELECT entry_id, member_pk, seq, points, remaining, expires_at, entry_id FROM lots;
DROP TABLE lots;
ALTER TABLE lots_rebuilt RENAME TO lots;
CREATE INDEX lots_open ON lots (member_pk, expires_at, seq) WHERE remaining > 0;
CREATE INDEX lots_expiring ON lots (expires_at) WHERE remaining > 0;
CREATE INDEX lots_source ON lots (source_id);
