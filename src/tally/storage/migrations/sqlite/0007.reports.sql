-- Balances as of a past moment and the program report (api.md section 9).
-- depends: 0004.transfers

-- When a pending award was cancelled: until then it counted in `pending`. Cancellations made
-- before this migration take the time of their `transaction.cancelled` event while the feed
-- still keeps it, and otherwise the award's own creation time (docs/api.md, "A balance in the
-- past").
ALTER TABLE entries ADD COLUMN cancelled_at INTEGER;
UPDATE entries SET cancelled_at = c.at FROM (
    SELECT json_extract(ev.body, '$.data.transaction_id') AS id, MIN(ev.created_at) AS at FROM events ev
    WHERE ev.type = 'transaction.cancelled' GROUP BY 1
) c WHERE entries.id = c.id AND entries.status = 'cancelled';
UPDATE entries SET cancelled_at = created_at WHERE status = 'cancelled' AND cancelled_at IS NULL;

-- Awards that were pending for a while (created before they became available): what `pending`
-- held at a past moment is read from here.
CREATE INDEX entries_member_held ON entries (member_pk, available_at)
    WHERE available_at > created_at;

-- Every lot of a member in expiry order, spent or not: the soonest expiry at a past moment.
CREATE INDEX lots_member_expiry ON lots (member_pk, expires_at, seq);

-- A member's counters after the entry at ledger position `seq` (a multiple of 256), and `at`,
-- when that entry took effect: a balance as of any moment is the latest checkpoint at or before
-- it plus at most 256 entries.
CREATE TABLE balance_checkpoints (
    member_pk INTEGER NOT NULL REFERENCES members (pk),
    seq INTEGER NOT NULL,
    at INTEGER NOT NULL,
    balance INTEGER NOT NULL,
    lifetime_earned INTEGER NOT NULL,
    lifetime_redeemed INTEGER NOT NULL,
    lifetime_deducted INTEGER NOT NULL,
    lifetime_expired INTEGER NOT NULL,
    lifetime_transferred_in INTEGER NOT NULL,
    lifetime_transferred_out INTEGER NOT NULL,
    PRIMARY KEY (member_pk, seq)
);
CREATE INDEX balance_checkpoints_at ON balance_checkpoints (member_pk, at, seq);

-- The checkpoints of the rows already there: each 256 positions' sums, added up in order.
INSERT INTO balance_checkpoints (member_pk, seq, at, balance, lifetime_earned,
    lifetime_redeemed, lifetime_deducted, lifetime_expired, lifetime_transferred_in,
    lifetime_transferred_out)
SELECT member_pk, seq, at, balance, earned, redeemed, deducted, expired, t_in, t_out FROM (
    SELECT b.member_pk, b.bucket * 256 AS seq, m.last_seq,
        MAX(b.at) OVER w AS at,
        SUM(b.balance) OVER w AS balance,
        SUM(b.earned) OVER w AS earned,
        SUM(b.redeemed) OVER w AS redeemed,
        SUM(b.deducted) OVER w AS deducted,
        SUM(b.expired) OVER w AS expired,
        SUM(b.t_in) OVER w AS t_in,
        SUM(b.t_out) OVER w AS t_out
    FROM (
        SELECT member_pk, (seq + 255) / 256 AS bucket, MAX(effective_at) AS at,
            SUM(CASE WHEN status = 'posted' THEN points ELSE 0 END) AS balance,
            SUM(CASE WHEN status <> 'posted' THEN 0
                WHEN type = 'award' THEN points
                WHEN type = 'reversal' AND points < 0 THEN points ELSE 0 END) AS earned,
            SUM(CASE WHEN status = 'posted' AND type IN ('redeem', 'refund') THEN -points
                ELSE 0 END) AS redeemed,
            SUM(CASE WHEN status <> 'posted' THEN 0
                WHEN type = 'deduct' THEN -points
                WHEN type = 'reversal' AND points > 0 THEN -points ELSE 0 END) AS deducted,
            SUM(CASE WHEN status = 'posted' AND type = 'expire' THEN -points ELSE 0 END)
                AS expired,
            SUM(CASE WHEN status = 'posted' AND type = 'transfer_in' THEN points ELSE 0 END)
                AS t_in,
            SUM(CASE WHEN status = 'posted' AND type = 'transfer_out' THEN -points ELSE 0 END)
                AS t_out
        FROM entries GROUP BY member_pk, (seq + 255) / 256
    ) b JOIN members m ON m.pk = b.member_pk
    WINDOW w AS (PARTITION BY b.member_pk ORDER BY b.bucket ROWS UNBOUNDED PRECEDING)
) sums WHERE seq <= last_seq;

-- The program report's running totals: the points of the posted entries of each type that took
-- effect on each UTC day, for the days before `report_progress.filled_until` (a day is added
-- once nothing more can take effect in it: service/reports.py). Later days are read from the
-- entries themselves.
CREATE TABLE report_days (
    program_id INTEGER NOT NULL REFERENCES programs (id),
    day INTEGER NOT NULL,
    type TEXT NOT NULL,
    points INTEGER NOT NULL,
    entries INTEGER NOT NULL,
    PRIMARY KEY (program_id, day, type)
);
CREATE TABLE report_progress (
    program_id INTEGER PRIMARY KEY REFERENCES programs (id),
    filled_until INTEGER NOT NULL
);
-- A program's posted entries in the order they took effect: the days not rolled up yet.
CREATE INDEX entries_program_time ON entries (program_id, effective_at) WHERE status = 'posted';
-- A member's posted entries in the order they took effect: whether it was active in a period
-- is one probe of this index per member, however long the period.
CREATE INDEX entries_member_time ON entries (member_pk, effective_at) WHERE status = 'posted';
