-- Flexibility events have one owner, the flex event book (flex_events, migration 0005),
-- which also checks modification numbers. The uplink kept a second copy (uplink_events)
-- only for that check. Events it answered that the book never stored (flexibility off, or
-- the handler failed; all answered opted out) move over as opted out so their modification
-- numbers still bind; then the copy goes.
INSERT INTO flex_events(event_id, modification_number, kind, start_ms, end_ms,
    constraint_json, effective_json, status, reasons_json, received_at_ms)
SELECT
    u.event_id,
    u.modification_number,
    json_extract(u.payload, '$.kind'),
    CAST(round((julianday(json_extract(u.payload, '$.start')) - 2440587.5) * 86400000)
        AS INTEGER),
    CAST(round((julianday(json_extract(u.payload, '$.end')) - 2440587.5) * 86400000)
        AS INTEGER),
    u.payload,
    u.payload,
    'opted_out',
    json_array('answered by the uplink alone (moved from uplink_events)'),
    CAST(round((julianday(u.received_at) - 2440587.5) * 86400000) AS INTEGER)
FROM uplink_events AS u
WHERE u.modification_number > COALESCE(
    (SELECT MAX(f.modification_number) FROM flex_events AS f WHERE f.event_id = u.event_id),
    -1
);

DROP TABLE uplink_events;
