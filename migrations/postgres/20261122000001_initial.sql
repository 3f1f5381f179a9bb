-- tessera schema, PostgreSQL. Timestamps are Unix seconds (BIGINT) supplied by
-- the application, so both engines compare them the same way.

-- Instance-wide settings (for example the master-key check value).
CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);

CREATE TABLE users (
    id            UUID PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,              -- Argon2id PHC string
    totp_secret   BYTEA,                      -- sealed under the master key
    totp_last_step BIGINT,                    -- last accepted TOTP step (codes work once)
    disabled      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

CREATE TABLE clients (
    id                TEXT PRIMARY KEY,
    confidential      BOOLEAN NOT NULL,
    secret_digest     BYTEA,                  -- keyed SHA-256 of the secret
    grant_types       TEXT NOT NULL,          -- space-separated
    scopes            TEXT NOT NULL,
    audiences         TEXT NOT NULL,
    origins           TEXT NOT NULL,
    cookie            BOOLEAN NOT NULL,
    admin             BOOLEAN NOT NULL,
    on_binding_change TEXT NOT NULL CHECK (on_binding_change IN ('audit', 'revoke')),
    disabled          BOOLEAN NOT NULL DEFAULT FALSE,
    created_at        BIGINT NOT NULL,
    CHECK (confidential = (secret_digest IS NOT NULL))
);

CREATE TABLE audiences (
    name        TEXT PRIMARY KEY,
    encrypt_jwk TEXT,                         -- public JWK tokens are encrypted to
    created_at  BIGINT NOT NULL
);

CREATE TABLE signing_keys (
    kid            TEXT PRIMARY KEY,          -- RFC 7638 thumbprint
    algorithm      TEXT NOT NULL CHECK (algorithm = 'ES256'),
    public_jwk     TEXT NOT NULL,
    private_key    BYTEA NOT NULL,            -- PKCS#8, sealed under the master key
    created_at     BIGINT NOT NULL,           -- published in the JWKS from here
    activate_at    BIGINT NOT NULL,           -- signs from here
    deactivated_at BIGINT,                    -- stopped signing
    retire_at      BIGINT,                    -- leaves the JWKS after this
    -- 0 for the first key, predecessor + 1 for each rotation: unique, so two
    -- instances rotating at once cannot both succeed.
    generation     BIGINT NOT NULL UNIQUE CHECK (generation >= 0)
);

-- A session is a refresh-token family opened by one login; its id is `sid`.
CREATE TABLE sessions (
    id                  UUID PRIMARY KEY,
    user_id             UUID NOT NULL REFERENCES users (id),
    client_id           TEXT NOT NULL REFERENCES clients (id),
    scope               TEXT NOT NULL,
    created_at          BIGINT NOT NULL,
    last_used_at        BIGINT NOT NULL,
    idle_expires_at     BIGINT NOT NULL,
    absolute_expires_at BIGINT NOT NULL,
    user_agent_hash     BYTEA,
    network_prefix      TEXT,
    revoked_at          BIGINT,
    revoke_reason       TEXT
);
CREATE INDEX sessions_by_user ON sessions (user_id);
CREATE INDEX sessions_by_client ON sessions (client_id);
CREATE INDEX sessions_by_expiry ON sessions (idle_expires_at);

-- Refresh tokens are stored only as SHA-256 hashes.
CREATE TABLE refresh_tokens (
    token_hash  BYTEA PRIMARY KEY CHECK (length(token_hash) = 32),
    session_id  UUID NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    generation  BIGINT NOT NULL,              -- 0 at login, +1 per rotation
    state       TEXT NOT NULL CHECK (state IN ('active', 'consumed', 'revoked')),
    created_at  BIGINT NOT NULL,
    consumed_at BIGINT,
    UNIQUE (session_id, generation)
);

-- Revoked jti/sid/sub/client entries; `id` is the feed cursor.
CREATE TABLE revocations (
    id             BIGSERIAL PRIMARY KEY,
    kind           TEXT NOT NULL CHECK (kind IN ('jti', 'sid', 'sub', 'client')),
    value          TEXT NOT NULL,
    revoked_at     BIGINT NOT NULL,
    relevant_until BIGINT NOT NULL            -- no access token it affects outlives this
);
CREATE INDEX revocations_by_value ON revocations (kind, value);
CREATE INDEX revocations_by_relevance ON revocations (relevant_until);

-- Append-only, hash-chained audit trail.
CREATE TABLE audit_log (
    id             BIGSERIAL PRIMARY KEY,
    at             BIGINT NOT NULL,
    actor          TEXT NOT NULL,
    action         TEXT NOT NULL,
    subject        TEXT,
    detail         TEXT NOT NULL DEFAULT '{}',
    network_prefix TEXT,
    prev_hash      BYTEA NOT NULL,
    hash           BYTEA NOT NULL UNIQUE
);

CREATE FUNCTION audit_log_is_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER audit_log_no_update_delete
    BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_is_append_only();

CREATE TRIGGER audit_log_no_truncate
    BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_is_append_only();
