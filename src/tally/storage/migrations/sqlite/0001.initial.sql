-- Times are microseconds since the Unix epoch (UTC); JSON is stored as text, exactly as received.
-- depends:

CREATE TABLE programs (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    points_expire_after_days INTEGER,
    created_at INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    program_id INTEGER NOT NULL REFERENCES programs (id),
    scope TEXT NOT NULL CHECK (scope IN ('read', 'write')),
    secret_hash TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);

CREATE TABLE members (
    pk INTEGER PRIMARY KEY,
    program_id INTEGER NOT NULL REFERENCES programs (id),
    member_id TEXT NOT NULL,
    email TEXT,
    name TEXT,
    metadata TEXT,
    created_at INTEGER NOT NULL,
    balance INTEGER NOT NULL DEFAULT 0 CHECK (balance >= 0),
    pending INTEGER NOT NULL DEFAULT 0 CHECK (pending >= 0),
    lifetime_earned INTEGER NOT NULL DEFAULT 0,
    lifetime_redeemed INTEGER NOT NULL DEFAULT 0,
    lifetime_deducted INTEGER NOT NULL DEFAULT 0,
    lifetime_expired INTEGER NOT NULL DEFAULT 0,
    last_seq INTEGER NOT NULL DEFAULT 0,
    entry_count INTEGER NOT NULL DEFAULT 0,
    UNIQUE (program_id, member_id)
);

-- One row per ledger transaction. `seq` is the member's ledger order: the position at which the
-- entry took effect (a pending award moves to a new position when it posts).
CREATE TABLE entries (
    id TEXT PRIMARY KEY,
    program_id INTEGER NOT NULL REFERENCES programs (id),
    member_pk INTEGER NOT NULL REFERENCES members (pk),
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    status TEXT NOT NULL,
    points INTEGER NOT NULL,
    reason TEXT NOT NULL,
    reference TEXT,
    metadata TEXT,
    balance_after INTEGER,
    created_at INTEGER NOT NULL,
    effective_at INTEGER NOT NULL,
    available_at INTEGER,
    expires_at INTEGER,
    posted_at INTEGER,
    UNIQUE (member_pk, seq)
);
CREATE INDEX entries_member_type ON entries (member_pk, type, seq);
CREATE INDEX entries_member_pending ON entries (member_pk, available_at) WHERE status = 'pending';
CREATE INDEX entries_pending_due ON entries (available_at) WHERE status = 'pending';

-- Every posted award and refund is a lot; `expires_at` 9223372036854775807 means never, so that
-- one index serves the spend order (soonest expiry first, never last, oldest first).
CREATE TABLE lots (
    entry_id TEXT PRIMARY KEY REFERENCES entries (id),
    member_pk INTEGER NOT NULL REFERENCES members (pk),
    seq INTEGER NOT NULL,
    points INTEGER NOT NULL CHECK (points > 0),
    remaining INTEGER NOT NULL CHECK (remaining >= 0 AND remaining <= points),
    expires_at INTEGER NOT NULL
);
CREATE INDEX lots_open ON lots (member_pk, expires_at, seq) WHERE remaining > 0;
CREATE INDEX lots_expiring ON lots (expires_at) WHERE remaining > 0;

-- Which lots each spend (deduct, redeem, expire) took its points from.
CREATE TABLE draws (
    spend_id TEXT NOT NULL REFERENCES entries (id),
    lot_id TEXT NOT NULL REFERENCES lots (entry_id),
    points INTEGER NOT NULL CHECK (points > 0),
    PRIMARY KEY (spend_id, lot_id)
);
CREATE INDEX draws_lot ON draws (lot_id);

CREATE TABLE rewards (
    id TEXT PRIMARY KEY,
    program_id INTEGER NOT NULL REFERENCES programs (id),
    name TEXT NOT NULL,
    points_cost INTEGER NOT NULL CHECK (points_cost > 0),
    stock INTEGER CHECK (stock >= 0),
    active INTEGER NOT NULL,
    metadata TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX rewards_program ON rewards (program_id, created_at);

CREATE TABLE redemptions (
    id TEXT PRIMARY KEY,
    program_id INTEGER NOT NULL REFERENCES programs (id),
    member_pk INTEGER NOT NULL REFERENCES members (pk),
    reward_id TEXT NOT NULL REFERENCES rewards (id),
    quantity INTEGER NOT NULL CHECK (quantity > 0),
    points INTEGER NOT NULL,
    status TEXT NOT NULL,
    transaction_id TEXT NOT NULL REFERENCES entries (id),
    refund_transaction_id TEXT REFERENCES entries (id),
    metadata TEXT,
    created_at INTEGER NOT NULL,
    cancelled_at INTEGER
);
CREATE INDEX redemptions_member ON redemptions (member_pk, created_at);

CREATE TABLE idempotency_keys (
    program_id INTEGER NOT NULL REFERENCES programs (id),
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status INTEGER NOT NULL,
    body BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (program_id, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
