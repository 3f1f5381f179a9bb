-- Failed-login counters shared by every instance (issue #7): one row per
-- account name and per client network, kept for one window.
CREATE TABLE login_failures (
    key          TEXT PRIMARY KEY,      -- 'user:NAME' or 'net:PREFIX'
    failures     INTEGER NOT NULL,       -- within the window
    window_start INTEGER NOT NULL,
    last_at      INTEGER NOT NULL
) STRICT;
CREATE INDEX login_failures_by_window ON login_failures (window_start);
