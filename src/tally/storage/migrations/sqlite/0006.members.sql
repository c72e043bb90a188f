-- Members (api.md section 9): a program may enrol unknown members on award, and a member's
-- personal data may be erased (when, kept in `erased_at`; what, in docs/api.md "Members").
-- depends: 0004.transfers

ALTER TABLE programs ADD COLUMN enrol_on_award INTEGER NOT NULL DEFAULT 0;
ALTER TABLE members ADD COLUMN erased_at INTEGER;
