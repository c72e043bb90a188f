-- Exports (`tally export transactions`, `GET /v1/exports/transactions`) page through a
-- program's entries in id order (creation order), a page at a time from the last id seen.
-- depends: 0004.transfers

CREATE INDEX entries_program_export ON entries (program_id, id);
