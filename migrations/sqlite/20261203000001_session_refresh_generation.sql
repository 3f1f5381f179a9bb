-- Refresh rotation as one row update (issue #18). A session holds the digest
-- of its refresh secret and its current generation; a refresh token is
-- `sid.generation.secret‖MAC` and nothing is inserted per rotation.
-- Sessions opened before this have no secret yet: their token in
-- refresh_tokens still works once, and that rotation moves them over.
ALTER TABLE sessions ADD COLUMN refresh_secret BLOB CHECK (refresh_secret IS NULL OR length(refresh_secret) = 32);
ALTER TABLE sessions ADD COLUMN refresh_generation INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN refresh_rotated_at INTEGER;  -- when the current generation was issued
ALTER TABLE sessions ADD COLUMN refresh_reused INTEGER;      -- the generation whose one grace reuse is spent
-- A rotation changes no indexed column (one B-tree write per rotation, not
-- two); the purge finds expired sessions by a bounded scan instead.
DROP INDEX sessions_by_expiry;
