-- Issue #20: the audit chain key is versioned. Version 1 is derived from the
-- sealed derivation root (every row so far); `tessera keys rewrap` adds a
-- random version sealed under the new master key, so whoever holds a retired
-- master key cannot extend or rewrite the chain after the switch. Each row
-- and checkpoint names the version it is linked (or MACed) under.
ALTER TABLE audit_log ADD COLUMN key_version BIGINT NOT NULL DEFAULT 1 CHECK (key_version >= 1);
ALTER TABLE audit_checkpoints ADD COLUMN key_version BIGINT NOT NULL DEFAULT 1 CHECK (key_version >= 1);
