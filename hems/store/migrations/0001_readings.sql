-- Raw readings (kept 48 h) and their roll-ups (kept 13 months).
-- Timestamps are integer milliseconds since the Unix epoch, UTC: compact and sortable.
CREATE TABLE devices (
    device_pk INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL DEFAULT ''
);

CREATE TABLE quantities (
    quantity_pk INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);

CREATE TABLE readings (
    device_pk INTEGER NOT NULL REFERENCES devices(device_pk),
    quantity_pk INTEGER NOT NULL REFERENCES quantities(quantity_pk),
    at_ms INTEGER NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (device_pk, quantity_pk, at_ms)
) WITHOUT ROWID;

CREATE INDEX readings_at ON readings(at_ms);

-- One row per (device, quantity, bucket). For power the positive and negative parts are
-- integrated apart (import vs export energy) so netting never hides either.
CREATE TABLE rollups (
    resolution_s INTEGER NOT NULL,           -- 60 or 1800
    device_pk INTEGER NOT NULL REFERENCES devices(device_pk),
    quantity_pk INTEGER NOT NULL REFERENCES quantities(quantity_pk),
    start_ms INTEGER NOT NULL,
    n INTEGER NOT NULL,
    mean REAL NOT NULL,
    min REAL NOT NULL,
    max REAL NOT NULL,
    last REAL NOT NULL,
    pos_wh REAL NOT NULL DEFAULT 0,          -- energy of the positive part (power only)
    neg_wh REAL NOT NULL DEFAULT 0,          -- energy of the negative part, as a positive number
    PRIMARY KEY (resolution_s, device_pk, quantity_pk, start_ms)
) WITHOUT ROWID;

CREATE INDEX rollups_start ON rollups(resolution_s, start_ms);
