-- Webhook endpoints and their deliveries (api.md section 8).
-- depends: 0002.events

-- An endpoint reads its program's events feed from its own cursor, (after_xid, after_seq): the
-- dispatcher turns the events after it into deliveries and moves it, in one transaction with
-- the endpoint row locked. (-1, -1) is before the first event.
CREATE TABLE webhook_endpoints (
    id TEXT PRIMARY KEY,
    program_id INTEGER NOT NULL REFERENCES programs (id),
    url TEXT NOT NULL,
    events TEXT NOT NULL,
    description TEXT,
    enabled INTEGER NOT NULL,
    secret TEXT NOT NULL,
    previous_secret TEXT,
    previous_secret_expires_at BIGINT,
    after_xid BIGINT NOT NULL,
    after_seq BIGINT NOT NULL,
    failing_since BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX webhook_endpoints_program ON webhook_endpoints (program_id, created_at);

-- One row per (endpoint, event). An attempt is claimed by setting `lease_until` in a
-- transaction of its own; the HTTP request runs outside any transaction; its outcome is recorded
-- only if `attempts` still matches (a claim made after an expired lease wins).
CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY,
    endpoint_id TEXT NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    -- attempts made before the latest manual retry or recovery: the schedule restarts there
    requeued_at_attempt INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT,
    lease_until BIGINT NOT NULL DEFAULT 0,
    last_status_code INTEGER,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (endpoint_id, event_id)
);
-- Claims take an endpoint's due deliveries in this order, straight from the index (a backlog of
-- many thousands is never sorted); the second index finds the oldest one still pending.
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (endpoint_id, next_attempt_at, id)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_pending_age ON webhook_deliveries (created_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_log ON webhook_deliveries (endpoint_id, created_at);
CREATE INDEX webhook_deliveries_finished ON webhook_deliveries (updated_at)
    WHERE status <> 'pending';
