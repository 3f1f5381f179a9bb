-- Revocation, audit chain and refresh-token grace window (issues #4, #5).

-- A consumed token may be reused once inside the grace window; this records it.
ALTER TABLE refresh_tokens ADD COLUMN reused_at INTEGER;

-- "Firefox on Linux": what the admin API shows instead of the raw User-Agent.
ALTER TABLE sessions ADD COLUMN user_agent_summary TEXT;
CREATE INDEX sessions_live_by_user ON sessions (user_id) WHERE revoked_at IS NULL;

-- Nothing wrote audit rows before this version, so the table is rebuilt with
-- an application-assigned sequence: `seq` is part of each row's hash, so a
-- removed, reordered or inserted row breaks the chain. UNIQUE (prev_hash)
-- means two writers can never fork it.
DROP TABLE audit_log;
CREATE TABLE audit_log (
    seq            INTEGER PRIMARY KEY CHECK (seq >= 1),
    at             INTEGER NOT NULL,
    actor          TEXT NOT NULL,
    action         TEXT NOT NULL,
    subject        TEXT,
    detail         TEXT NOT NULL,
    network_prefix TEXT,
    prev_hash      BLOB NOT NULL UNIQUE CHECK (length(prev_hash) = 32),
    hash           BLOB NOT NULL UNIQUE CHECK (length(hash) = 32)
) STRICT;
CREATE INDEX audit_log_by_subject ON audit_log (subject, seq);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only: UPDATE refused');
END;

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only: DELETE refused');
END;
