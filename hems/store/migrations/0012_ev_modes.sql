-- The owner's charging mode per charger (owned by hems.store.evsessions): kept across
-- sessions and restarts, like a wallbox's own mode switch.
CREATE TABLE ev_modes (
    device_id TEXT PRIMARY KEY,
    mode TEXT NOT NULL,
    updated_ms INTEGER NOT NULL
) WITHOUT ROWID;
