-- Who made each ledger row (api.md section 9, "Who did it"): the public id of the API key whose
-- request wrote it (`key_…`), or 'system' for a row time made (an expiry).
-- depends: 0004.transfers

-- Rows written before this migration cannot say which key made them: they read 'unknown',
-- except expiries, which only ever came from time. (Maturing a pending award makes no row: the
-- award keeps whoever made it.) Every row Tally writes from now on names its maker; the
-- default only fills the rows that were already there.
ALTER TABLE entries ADD COLUMN created_by TEXT NOT NULL DEFAULT 'unknown';
UPDATE entries SET created_by = 'system' WHERE type = 'expire';
