-- Transfers between members (api.md section 9): two counters, and lots that a transfer makes.
-- depends: 0003.webhooks

ALTER TABLE members
    ADD COLUMN lifetime_transferred_in BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN lifetime_transferred_out BIGINT NOT NULL DEFAULT 0;

-- A transfer_in entry makes one lot per expiry date among the sender's lots it drew on, so a
-- lot's id (`entry_id`) is no longer always an entry's: an award's or refund's lot keeps its
-- entry's id, a transfer's lots get ids of their own (`lot_…`), and `source_id` is the entry
-- that made the lot.
ALTER TABLE lots DROP CONSTRAINT lots_entry_id_fkey;
ALTER TABLE lots ADD COLUMN source_id TEXT REFERENCES entries (id);
UPDATE lots SET source_id = entry_id;
ALTER TABLE lots ALTER COLUMN source_id SET NOT NULL;
CREATE INDEX lots_source ON lots (source_id);
