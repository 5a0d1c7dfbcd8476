-- Aggregator channel: the durable outbox and the receiver's replay protection.

-- Every outgoing signed message, written before it is published, deleted when the
-- aggregator's ack covers its seq. `message` is the exact JSON that is published.
CREATE TABLE uplink_outbox (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE INDEX uplink_outbox_kind ON uplink_outbox(kind, seq);

-- Ids of aggregator messages already received; kept until they expire (an expired message
-- is rejected anyway, so the dedup window is the message lifetime).
CREATE TABLE uplink_seen (
    id TEXT PRIMARY KEY,
    expires_at TEXT NOT NULL
);
CREATE INDEX uplink_seen_expiry ON uplink_seen(expires_at);

-- Counters: next_seq (our next outgoing seq), last_peer_seq (last accepted aggregator seq).
CREATE TABLE uplink_state (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);

-- The latest modification of every event received, so a lower one never replaces it.
CREATE TABLE uplink_events (
    event_id TEXT PRIMARY KEY,
    modification_number INTEGER NOT NULL,
    message_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    received_at TEXT NOT NULL
);
