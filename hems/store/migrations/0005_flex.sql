-- Flexibility events from the aggregator and the delivery reports built for them.
-- Times are integer milliseconds since the Unix epoch, UTC.
-- An event is identified by (event_id, modification_number); a higher modification replaces
-- a lower one, which is kept with status 'superseded' for the audit trail.
CREATE TABLE flex_events (
    event_id TEXT NOT NULL,
    modification_number INTEGER NOT NULL CHECK (modification_number >= 0),
    kind TEXT NOT NULL CHECK (kind IN ('turn_down', 'turn_up')),
    start_ms INTEGER NOT NULL,
    end_ms INTEGER NOT NULL CHECK (end_ms > start_ms),
    constraint_json TEXT NOT NULL,            -- the event as received (caps, floors, price)
    effective_json TEXT NOT NULL,             -- after clamping to the home's safety limits
    status TEXT NOT NULL CHECK (status IN
        ('accepted', 'opted_out', 'cancelled', 'superseded', 'reported')),
    reasons_json TEXT NOT NULL DEFAULT '[]',  -- why opted out / what was clamped
    received_at_ms INTEGER NOT NULL,
    PRIMARY KEY (event_id, modification_number)
) WITHOUT ROWID;

CREATE INDEX flex_events_window ON flex_events(status, end_ms);

CREATE TABLE flex_reports (
    event_id TEXT NOT NULL,
    modification_number INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL,
    method TEXT NOT NULL,
    total_delivered_wh REAL,                  -- NULL when it could not be computed
    payload_json TEXT NOT NULL,               -- the report payload handed to the uplink
    PRIMARY KEY (event_id, modification_number),
    FOREIGN KEY (event_id, modification_number)
        REFERENCES flex_events(event_id, modification_number)
) WITHOUT ROWID;
