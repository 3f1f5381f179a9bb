-- The bare SQL of one refresh rotation, for pgbench: consume the session's
-- active token, insert its successor, slide the session. Each pgbench
-- client rotates its own chain (session id derived from :client_id).
\set sid_suffix :client_id + 1000
BEGIN;
UPDATE refresh_tokens SET state = 'consumed', consumed_at = 1
  WHERE session_id = ('00000000-0000-4000-8000-' || lpad(:sid_suffix::text, 12, '0'))::uuid
    AND state = 'active'
  RETURNING generation AS g \gset
INSERT INTO refresh_tokens (token_hash, session_id, generation, state, created_at)
  VALUES (sha256(gen_random_uuid()::text::bytea),
          ('00000000-0000-4000-8000-' || lpad(:sid_suffix::text, 12, '0'))::uuid, :g + 1, 'active', 1);
UPDATE sessions SET last_used_at = 1, idle_expires_at = 4102444800
  WHERE id = ('00000000-0000-4000-8000-' || lpad(:sid_suffix::text, 12, '0'))::uuid;
COMMIT;
