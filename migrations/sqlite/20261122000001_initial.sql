-- tessera schema, SQLite. Mirrors migrations/postgres: the same tables,
-- columns and rules; STRICT tables so a wrong type is an error, not a surprise.
-- Booleans are INTEGER 0/1, UUIDs 16-byte BLOBs, timestamps Unix seconds.

CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
) STRICT;

CREATE TABLE users (
    id            BLOB PRIMARY KEY CHECK (length(id) = 16),
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    totp_secret   BLOB,
    totp_last_step INTEGER,
    disabled      INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
) STRICT;

CREATE TABLE clients (
    id                TEXT PRIMARY KEY,
    confidential      INTEGER NOT NULL CHECK (confidential IN (0, 1)),
    secret_digest     BLOB,
    grant_types       TEXT NOT NULL,
    scopes            TEXT NOT NULL,
    audiences         TEXT NOT NULL,
    origins           TEXT NOT NULL,
    cookie            INTEGER NOT NULL CHECK (cookie IN (0, 1)),
    admin             INTEGER NOT NULL CHECK (admin IN (0, 1)),
    on_binding_change TEXT NOT NULL CHECK (on_binding_change IN ('audit', 'revoke')),
    disabled          INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    created_at        INTEGER NOT NULL,
    CHECK (confidential = (secret_digest IS NOT NULL))
) STRICT;

CREATE TABLE audiences (
    name        TEXT PRIMARY KEY,
    encrypt_jwk TEXT,
    created_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE signing_keys (
    kid            TEXT PRIMARY KEY,
    algorithm      TEXT NOT NULL CHECK (algorithm = 'ES256'),
    public_jwk     TEXT NOT NULL,
    private_key    BLOB NOT NULL,
    created_at     INTEGER NOT NULL,
    activate_at    INTEGER NOT NULL,
    deactivated_at INTEGER,
    retire_at      INTEGER,
    generation     INTEGER NOT NULL UNIQUE CHECK (generation >= 0)
) STRICT;

CREATE TABLE sessions (
    id                  BLOB PRIMARY KEY CHECK (length(id) = 16),
    user_id             BLOB NOT NULL REFERENCES users (id),
    client_id           TEXT NOT NULL REFERENCES clients (id),
    scope               TEXT NOT NULL,
    created_at          INTEGER NOT NULL,
    last_used_at        INTEGER NOT NULL,
    idle_expires_at     INTEGER NOT NULL,
    absolute_expires_at INTEGER NOT NULL,
    user_agent_hash     BLOB,
    network_prefix      TEXT,
    revoked_at          INTEGER,
    revoke_reason       TEXT
) STRICT;
CREATE INDEX sessions_by_user ON sessions (user_id);
CREATE INDEX sessions_by_client ON sessions (client_id);
CREATE INDEX sessions_by_expiry ON sessions (idle_expires_at);

CREATE TABLE refresh_tokens (
    token_hash  BLOB PRIMARY KEY CHECK (length(token_hash) = 32),
    session_id  BLOB NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    generation  INTEGER NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('active', 'consumed', 'revoked')),
    created_at  INTEGER NOT NULL,
    consumed_at INTEGER,
    UNIQUE (session_id, generation)
) STRICT;

CREATE TABLE revocations (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    kind           TEXT NOT NULL CHECK (kind IN ('jti', 'sid', 'sub', 'client')),
    value          TEXT NOT NULL,
    revoked_at     INTEGER NOT NULL,
    relevant_until INTEGER NOT NULL
) STRICT;
CREATE INDEX revocations_by_value ON revocations (kind, value);
CREATE INDEX revocations_by_relevance ON revocations (relevant_until);

CREATE TABLE audit_log (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    at             INTEGER NOT NULL,
    actor          TEXT NOT NULL,
    action         TEXT NOT NULL,
    subject        TEXT,
    detail         TEXT NOT NULL DEFAULT '{}',
    network_prefix TEXT,
    prev_hash      BLOB NOT NULL,
    hash           BLOB NOT NULL UNIQUE
) STRICT;

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only: UPDATE refused');
END;

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only: DELETE refused');
END;
