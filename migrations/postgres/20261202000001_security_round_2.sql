-- Security round 2 (issue #16).

-- Audit events that a migration has to record. The audit chain is keyed from
-- the master key, which SQL never sees, so a migration leaves its events here
-- and the first tessera process to start (or CLI command to run) chains them
-- into audit_log and deletes them.
CREATE TABLE audit_pending (
    id      BIGSERIAL PRIMARY KEY,
    at      BIGINT NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    subject TEXT,
    detail  TEXT NOT NULL
);

-- 1. `tessera:admin` only through client_credentials by a confidential client.
-- Admin clients that are public or allowed any other grant lose the admin
-- right (flag and scope), and the repair is audited.
INSERT INTO audit_pending (at, actor, action, subject, detail)
SELECT extract(epoch FROM now())::bigint, 'system:migration', 'client_admin_revoked', id,
       '{"reason":"an admin client must be confidential with client_credentials as its only grant","confidential":'
       || CASE WHEN confidential THEN 'true' ELSE 'false' END
       || ',"grant_types":"' || grant_types || '"}'
FROM clients
WHERE admin AND (NOT confidential OR grant_types <> 'client_credentials')
ORDER BY id;

UPDATE clients
SET admin = FALSE,
    scopes = TRIM(REPLACE(' ' || scopes || ' ', ' tessera:admin ', ' '))
WHERE admin AND (NOT confidential OR grant_types <> 'client_credentials');

-- 5. Introspection and the revocation feed need `--resource-server`. Existing
-- confidential clients (other than admin clients) could use both until now;
-- they keep the right, so an upgrade does not silently cut resource servers
-- off the feed, and each grant is audited so operators can review it.
ALTER TABLE clients ADD COLUMN resource_server BOOLEAN NOT NULL DEFAULT FALSE;

INSERT INTO audit_pending (at, actor, action, subject, detail)
SELECT extract(epoch FROM now())::bigint, 'system:migration', 'client_resource_server_kept', id,
       '{"reason":"confidential clients could introspect and read the feed before --resource-server existed; review with tessera client show"}'
FROM clients
WHERE confidential AND NOT admin
ORDER BY id;

UPDATE clients SET resource_server = TRUE WHERE confidential AND NOT admin;

-- 3. Credential versions: a password change or TOTP enrolment moves the
-- user's version; a session is created only if the version its login checked
-- is still current, and rotates only while it is.
ALTER TABLE users ADD COLUMN credential_version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN credential_version BIGINT NOT NULL DEFAULT 0;

-- 6. Checkpoints of the audit chain's head, outside audit_log: sequence,
-- head hash, and a MAC under a key derived from the master key. `legacy_end`
-- is the last row written before the chain was keyed (those rows carry
-- unkeyed SHA-256 links); this first record, written by the migration, is
-- the only one without a MAC.
CREATE TABLE audit_checkpoints (
    id         BIGSERIAL PRIMARY KEY,
    seq        BIGINT NOT NULL CHECK (seq >= 0),
    head       BYTEA NOT NULL CHECK (length(head) = 32),
    legacy_end BIGINT NOT NULL CHECK (legacy_end >= 0),
    at         BIGINT NOT NULL,
    mac        BYTEA CHECK (mac IS NULL OR length(mac) = 32)
);

INSERT INTO audit_checkpoints (seq, head, legacy_end, at, mac)
SELECT COALESCE(MAX(seq), 0),
       COALESCE((SELECT hash FROM audit_log ORDER BY seq DESC LIMIT 1), decode(repeat('00', 32), 'hex')),
       COALESCE(MAX(seq), 0),
       extract(epoch FROM now())::bigint,
       NULL
FROM audit_log;
