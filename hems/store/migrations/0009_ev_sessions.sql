-- The EV session of each charger (owned by hems.store.evsessions): what the owner asked for
-- survives a restart. One row per charger while a car is plugged in.
CREATE TABLE ev_sessions (
    device_id TEXT PRIMARY KEY,
    plugged_at_ms INTEGER NOT NULL,
    departure_ms INTEGER NOT NULL,
    energy_wh REAL,
    set_by TEXT NOT NULL CHECK (set_by IN ('default', 'owner')),
    updated_ms INTEGER NOT NULL
) WITHOUT ROWID;
