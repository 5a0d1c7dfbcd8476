-- Half-hourly import/export energy per meter, derived from its cumulative registers at the
-- settlement-period boundaries (UTC :00 and :30). period_start_ms: Unix ms, UTC.
-- quality: 'actual' = both boundary reads fresh; 'estimated' = a boundary interpolated
-- across a gap; 'missing' = no data (energy NULL). A later estimate replaces 'missing';
-- nothing ever replaces 'actual'.
CREATE TABLE meter_intervals (
    device_id TEXT NOT NULL,
    period_start_ms INTEGER NOT NULL CHECK (period_start_ms % 1800000 = 0),
    import_wh REAL,
    export_wh REAL,
    quality TEXT NOT NULL CHECK (quality IN ('actual', 'estimated', 'missing')),
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (device_id, period_start_ms),
    CHECK ((quality = 'missing') = (import_wh IS NULL AND export_wh IS NULL))
) WITHOUT ROWID;

CREATE INDEX meter_intervals_start ON meter_intervals(period_start_ms);
