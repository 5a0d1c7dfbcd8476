-- Small durable cursors of the composition root (e.g. the last meter interval handed to
-- the uplink), so a restart neither skips nor floods.
CREATE TABLE app_state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
