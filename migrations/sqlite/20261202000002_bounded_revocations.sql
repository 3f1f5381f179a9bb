-- Denial-of-service round (issue #23); see migrations/postgres.
ALTER TABLE revocations ADD COLUMN owner TEXT;
CREATE INDEX revocations_by_owner ON revocations (owner) WHERE owner IS NOT NULL;
