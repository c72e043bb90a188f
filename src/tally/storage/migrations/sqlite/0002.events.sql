-- The outbox: one row per event, written in the same transaction as the change it reports.
-- depends: 0001.initial

-- SQLite has one writer at a time, so `seq` is already commit order; `commit_xid` is always 0
-- and keeps the feed's query the same on both backends (see the PostgreSQL migration).
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    commit_xid INTEGER NOT NULL DEFAULT 0,
    program_id INTEGER NOT NULL REFERENCES programs (id),
    id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX events_feed ON events (program_id, commit_xid, seq);
CREATE INDEX events_created ON events (created_at);
