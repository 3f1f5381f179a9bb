-- Refresh rotation as one row update (issue #18). A session holds the digest
-- of its refresh secret and its current generation; a refresh token is
-- `sid.generation.secret‖MAC` and nothing is inserted per rotation.
-- Sessions opened before this have no secret yet: their token in
-- refresh_tokens still works once, and that rotation moves them over.
ALTER TABLE sessions
    ADD COLUMN refresh_secret BYTEA CHECK (refresh_secret IS NULL OR length(refresh_secret) = 32),
    ADD COLUMN refresh_generation BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN refresh_rotated_at BIGINT,   -- when the current generation was issued
    ADD COLUMN refresh_reused BIGINT;       -- the generation whose one grace reuse is spent
-- A rotation must change no indexed column, so that PostgreSQL updates the
-- row in place (a HOT update: no index writes). The purge finds expired
-- sessions by a bounded scan instead.
DROP INDEX sessions_by_expiry;
-- Room on each page for the in-place updates.
ALTER TABLE sessions SET (fillfactor = 80);
