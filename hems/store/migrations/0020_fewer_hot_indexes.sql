-- Issue 16, the SD-card budget: every commit writes one 4 KiB page per table and index it
-- touches (and again at the checkpoint). Indexes on the hottest tables that no query needs:
--
-- uplink_outbox (a row per message, deleted on ack): the UNIQUE index on the message id
-- (ids are random and made here; nothing looks a row up by id) and (kind, seq) (only the
-- bound's eviction filters by kind, scanning at most the bounded table in seq order).
-- uplink_seen (a row per downlink): WITHOUT ROWID, so the id key is the table itself, and
-- no index on the expiry (the expiry delete scans the small table it keeps small).
-- readings (one row per series with raw_readings: latest): no index on time; retention
-- deletes series by series on the primary key.
-- ocpp_commands (a row per charging command): no index on (identity, at_ms); its rows are
-- read by key (command_pk) only.

CREATE TABLE uplink_outbox_0020 (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL,
    topic TEXT NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL,
    created TEXT NOT NULL
);

INSERT INTO uplink_outbox_0020 SELECT seq, id, topic, kind, message, created FROM uplink_outbox;

DROP TABLE uplink_outbox;

ALTER TABLE uplink_outbox_0020 RENAME TO uplink_outbox;

CREATE TABLE uplink_seen_0020 (
    id TEXT PRIMARY KEY,
    expires_at TEXT NOT NULL
) WITHOUT ROWID;

INSERT INTO uplink_seen_0020 SELECT id, expires_at FROM uplink_seen;

DROP TABLE uplink_seen;

ALTER TABLE uplink_seen_0020 RENAME TO uplink_seen;

DROP INDEX readings_at;

DROP INDEX ocpp_commands_identity;
