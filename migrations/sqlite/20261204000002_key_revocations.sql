-- Issue #20: an emergency key retirement lists the key's id (`kid`) in the
-- revocation feed. SQLite cannot alter a CHECK constraint, so the table is
-- rebuilt with the same rows and ids; the AUTOINCREMENT counter is carried
-- over too, so no feed cursor already handed out is ever reused.
CREATE TABLE revocations_new (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    kind           TEXT NOT NULL CHECK (kind IN ('jti', 'sid', 'sub', 'client', 'kid')),
    value          TEXT NOT NULL,
    revoked_at     INTEGER NOT NULL,
    relevant_until INTEGER NOT NULL,
    owner          TEXT
) STRICT;
INSERT INTO revocations_new (id, kind, value, revoked_at, relevant_until, owner)
    SELECT id, kind, value, revoked_at, relevant_until, owner FROM revocations;
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'revocations_new', seq FROM sqlite_sequence WHERE name = 'revocations'
    AND NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'revocations_new');
UPDATE sqlite_sequence
    SET seq = max(seq, (SELECT seq FROM sqlite_sequence WHERE name = 'revocations'))
    WHERE name = 'revocations_new'
    AND EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'revocations');
DROP TABLE revocations;
ALTER TABLE revocations_new RENAME TO revocations;
CREATE INDEX revocations_by_value ON revocations (kind, value);
CREATE INDEX revocations_by_relevance ON revocations (relevant_until);
CREATE INDEX revocations_by_owner ON revocations (owner) WHERE owner IS NOT NULL;
