-- The local page's security (owned by hems.web.auth): the owner's password, the one-time
-- setup code, server-side sessions, API tokens for machine clients, and the security log.
-- Secrets are stored as hashes only (setup code excepted: it is shown to whoever can read
-- this file, which is the point of it, and deleted once used).
CREATE TABLE web_owner (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    password_hash TEXT NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE TABLE web_setup (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    code TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE web_sessions (
    token_sha256 TEXT PRIMARY KEY,
    csrf TEXT NOT NULL,
    client TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE web_tokens (
    name TEXT PRIMARY KEY,
    token_sha256 TEXT NOT NULL UNIQUE,
    can_write INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    last_used_ms INTEGER,
    revoked_ms INTEGER
) WITHOUT ROWID;
CREATE TABLE web_security_log (
    id INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    client TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX web_security_log_at ON web_security_log(at_ms);
