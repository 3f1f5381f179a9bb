-- Denial-of-service round (issue #23): a client revoking access tokens one
-- by one cannot grow the revocation list without bound. Each jti entry
-- records whose it is ('sid:<session>' or 'client:<id>'); past a threshold
-- the entries of one owner are folded into one sid or client entry.
ALTER TABLE revocations ADD COLUMN owner TEXT;
CREATE INDEX revocations_by_owner ON revocations (owner) WHERE owner IS NOT NULL;
