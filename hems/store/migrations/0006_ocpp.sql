-- OCPP central system: chargers seen, their running transactions and the commands sent.
-- Timestamps are integer milliseconds since the Unix epoch, UTC (as in 0001).
CREATE TABLE ocpp_chargers (
    identity TEXT PRIMARY KEY,               -- charge point identity (last URL segment)
    status TEXT NOT NULL CHECK (status IN ('pending', 'accepted', 'rejected')),
    ocpp_version TEXT NOT NULL DEFAULT '',
    vendor TEXT NOT NULL DEFAULT '',
    model TEXT NOT NULL DEFAULT '',
    serial TEXT NOT NULL DEFAULT '',
    firmware TEXT NOT NULL DEFAULT '',
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL
);

-- One row per transaction; meter_start_wh makes session energy survive reconnects and
-- daemon restarts (never the lifetime register). Open while stopped_ms IS NULL.
CREATE TABLE ocpp_transactions (
    identity TEXT NOT NULL,
    transaction_id TEXT NOT NULL,
    connector_id INTEGER NOT NULL DEFAULT 1,
    id_tag TEXT NOT NULL DEFAULT '',
    started_ms INTEGER NOT NULL,
    meter_start_wh REAL NOT NULL,
    meter_last_wh REAL,
    stopped_ms INTEGER,
    meter_stop_wh REAL,
    stop_reason TEXT,
    PRIMARY KEY (identity, transaction_id)
) WITHOUT ROWID;

CREATE INDEX ocpp_transactions_open ON ocpp_transactions(identity) WHERE stopped_ms IS NULL;

-- Every limit sent, how, whether it was accepted and whether the current followed.
-- dsr = 1 marks an aggregator-driven change (GB SCP Regulations 2021: no randomised delay).
CREATE TABLE ocpp_commands (
    command_pk INTEGER PRIMARY KEY,
    identity TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    current_a REAL NOT NULL,
    phases INTEGER NOT NULL,
    dsr INTEGER NOT NULL DEFAULT 0,
    method TEXT NOT NULL,                    -- charging_profile | change_configuration | …
    status TEXT NOT NULL,                    -- Accepted | Rejected | NotSupported | Timeout
    followed INTEGER,                        -- NULL until a following MeterValues judged it
    note TEXT NOT NULL DEFAULT ''
);

CREATE INDEX ocpp_commands_identity ON ocpp_commands(identity, at_ms);
