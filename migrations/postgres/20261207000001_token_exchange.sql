-- RFC 8693 token exchange (issue #22).
-- The audiences a client may exchange a user's token for (client add --exchange-audience).
ALTER TABLE clients ADD COLUMN exchange_audiences TEXT NOT NULL DEFAULT '';

-- Trusted upstream identity providers (tessera issuer add): their ID tokens
-- and JWTs open tessera sessions.
CREATE TABLE trusted_issuers (
    issuer       TEXT PRIMARY KEY,
    jwks_uri     TEXT NOT NULL,
    audience     TEXT NOT NULL,
    create_users BOOLEAN NOT NULL,
    disabled     BOOLEAN NOT NULL DEFAULT FALSE,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);

-- Which tessera user an upstream (iss, sub) is.
CREATE TABLE user_links (
    issuer     TEXT NOT NULL REFERENCES trusted_issuers (issuer),
    subject    TEXT NOT NULL,
    user_id    UUID NOT NULL REFERENCES users (id),
    created_at BIGINT NOT NULL,
    PRIMARY KEY (issuer, subject)
);
CREATE INDEX user_links_by_user ON user_links (user_id);

-- Upstream tokens that opened a session (SHA-256 of the signed part):
-- each opens one (RFC 7523 §3), remembered until it expires.
CREATE TABLE upstream_tokens_used (
    digest     BYTEA PRIMARY KEY CHECK (length(digest) = 32),
    expires_at BIGINT NOT NULL
);
CREATE INDEX upstream_tokens_used_by_expiry ON upstream_tokens_used (expires_at);

-- The upstream identity (issuer and its sub) a session was opened from:
-- disabling the issuer, or removing the link, ends them.
ALTER TABLE sessions ADD COLUMN upstream_issuer TEXT;
ALTER TABLE sessions ADD COLUMN upstream_subject TEXT;
CREATE INDEX sessions_by_upstream_issuer ON sessions (upstream_issuer) WHERE upstream_issuer IS NOT NULL;
