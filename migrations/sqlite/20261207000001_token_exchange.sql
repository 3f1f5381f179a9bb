-- RFC 8693 token exchange (issue #22). Mirrors migrations/postgres.
ALTER TABLE clients ADD COLUMN exchange_audiences TEXT NOT NULL DEFAULT '';

CREATE TABLE trusted_issuers (
    issuer       TEXT PRIMARY KEY,
    jwks_uri     TEXT NOT NULL,
    audience     TEXT NOT NULL,
    create_users INTEGER NOT NULL CHECK (create_users IN (0, 1)),
    disabled     INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
) STRICT;

CREATE TABLE user_links (
    issuer     TEXT NOT NULL REFERENCES trusted_issuers (issuer),
    subject    TEXT NOT NULL,
    user_id    BLOB NOT NULL REFERENCES users (id) CHECK (length(user_id) = 16),
    created_at INTEGER NOT NULL,
    PRIMARY KEY (issuer, subject)
) STRICT;
CREATE INDEX user_links_by_user ON user_links (user_id);

CREATE TABLE upstream_tokens_used (
    digest     BLOB PRIMARY KEY NOT NULL CHECK (length(digest) = 32),
    expires_at INTEGER NOT NULL
) STRICT;
CREATE INDEX upstream_tokens_used_by_expiry ON upstream_tokens_used (expires_at);

ALTER TABLE sessions ADD COLUMN upstream_issuer TEXT;
ALTER TABLE sessions ADD COLUMN upstream_subject TEXT;
CREATE INDEX sessions_by_upstream_issuer ON sessions (upstream_issuer) WHERE upstream_issuer IS NOT NULL;
