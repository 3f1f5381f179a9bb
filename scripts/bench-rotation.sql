-- The bare SQL of one refresh rotation, for pgbench: the same single
-- statement the PostgreSQL store runs (src/store/postgres.rs, fast_rotate):
-- consume the active token if its session qualifies, insert its successor,
-- slide the session. Each pgbench client rotates its own chain (session id
-- derived from :client_id); the token is found by session rather than by
-- hash because pgbench cannot carry the previous hash between runs.
\set sid_suffix :client_id + 1000
WITH consumed AS (
  UPDATE refresh_tokens SET state = 'consumed', consumed_at = 1
  WHERE session_id = ('00000000-0000-4000-8000-' || lpad(:sid_suffix::text, 12, '0'))::uuid
    AND state = 'active' AND session_id IN (
      SELECT s.id FROM sessions s JOIN users u ON u.id = s.user_id
      WHERE s.revoked_at IS NULL AND s.idle_expires_at > 1
        AND s.absolute_expires_at > 1 AND s.client_id = 'loadgen' AND NOT u.disabled)
  RETURNING session_id, generation),
stored AS (
  INSERT INTO refresh_tokens (token_hash, session_id, generation, state, created_at)
  SELECT sha256(gen_random_uuid()::text::bytea), session_id, generation + 1, 'active', 1 FROM consumed)
UPDATE sessions SET last_used_at = 1, idle_expires_at = LEAST(1 + 1209600, absolute_expires_at)
WHERE id = (SELECT session_id FROM consumed) RETURNING *;
