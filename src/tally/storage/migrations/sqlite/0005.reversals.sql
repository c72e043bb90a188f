-- Reversals of awards and deducts (api.md section 9): a reversal row names the row it reverses,
-- that row counts how much of it has been reversed, and a member may owe points (a debt).
-- depends: 0004.transfers

-- A debt is a negative balance. `balance` keeps its CHECK (balance >= 0): it is what the member
-- holds, `debt` what it owes, and at most one of them is not zero; the balance the API shows is
-- `balance - debt`. (Relaxing the CHECK would mean rebuilding `members` on SQLite.)
ALTER TABLE members ADD COLUMN debt INTEGER NOT NULL DEFAULT 0 CHECK (debt >= 0);

-- `reverses`: on a reversal row, the award or deduct it reverses. `points_reversed`: on an award
-- or deduct, how many of its points reversals have taken back (or given back) so far.
ALTER TABLE entries ADD COLUMN reverses TEXT REFERENCES entries (id);
ALTER TABLE entries ADD COLUMN points_reversed INTEGER NOT NULL DEFAULT 0
    CHECK (points_reversed >= 0);
CREATE INDEX entries_reverses ON entries (reverses) WHERE reverses IS NOT NULL;
