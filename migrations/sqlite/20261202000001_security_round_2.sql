-- Security round 2 (issue #16). Mirrors migrations/postgres.

-- Audit events a migration has to record; chained into audit_log (whose
-- links are keyed from the master key, which SQL never sees) by the first
-- tessera process that starts.
CREATE TABLE audit_pending (
    id      INTEGER PRIMARY KEY,
    at      INTEGER NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    subject TEXT,
    detail  TEXT NOT NULL
) STRICT;

-- 1. `tessera:admin` only through client_credentials by a confidential client.
INSERT INTO audit_pending (at, actor, action, subject, detail)
SELECT CAST(strftime('%s', 'now') AS INTEGER), 'system:migration', 'client_admin_revoked', id,
       '{"reason":"an admin client must be confidential with client_credentials as its only grant","confidential":'
       || CASE WHEN confidential THEN 'true' ELSE 'false' END
       || ',"grant_types":"' || grant_types || '"}'
FROM clients
WHERE admin AND (NOT confidential OR grant_types <> 'client_credentials')
ORDER BY id;

UPDATE clients
SET admin = 0,
    scopes = TRIM(REPLACE(' ' || scopes || ' ', ' tessera:admin ', ' '))
WHERE admin AND (NOT confidential OR grant_types <> 'client_credentials');

-- 5. Introspection and the feed need `--resource-server`; existing
-- confidential non-admin clients keep the right (audited for review).
ALTER TABLE clients ADD COLUMN resource_server INTEGER NOT NULL DEFAULT 0 CHECK (resource_server IN (0, 1));

INSERT INTO audit_pending (at, actor, action, subject, detail)
SELECT CAST(strftime('%s', 'now') AS INTEGER), 'system:migration', 'client_resource_server_kept', id,
       '{"reason":"confidential clients could introspect and read the feed before --resource-server existed; review with tessera client show"}'
FROM clients
WHERE confidential AND NOT admin
ORDER BY id;

UPDATE clients SET resource_server = 1 WHERE confidential AND NOT admin;

-- 3. Credential versions.
ALTER TABLE users ADD COLUMN credential_version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN credential_version INTEGER NOT NULL DEFAULT 0;

-- 6. Checkpoints of the audit chain's head (see migrations/postgres).
CREATE TABLE audit_checkpoints (
    id         INTEGER PRIMARY KEY,
    seq        INTEGER NOT NULL CHECK (seq >= 0),
    head       BLOB NOT NULL CHECK (length(head) = 32),
    legacy_end INTEGER NOT NULL CHECK (legacy_end >= 0),
    at         INTEGER NOT NULL,
    mac        BLOB CHECK (mac IS NULL OR length(mac) = 32)
) STRICT;

INSERT INTO audit_checkpoints (seq, head, legacy_end, at, mac)
SELECT COALESCE(MAX(seq), 0),
       COALESCE((SELECT hash FROM audit_log ORDER BY seq DESC LIMIT 1), zeroblob(32)),
       COALESCE(MAX(seq), 0),
       CAST(strftime('%s', 'now') AS INTEGER),
       NULL
FROM audit_log;
