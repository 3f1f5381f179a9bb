-- The bare SQL of one refresh rotation, for pgbench: the same single
-- statement both stores run (src/store/portable.rs, fast_rotate): move the
-- session on one generation if the token is its current one, its secret
-- matches, and the session and user qualify. One primary-key row update
-- that changes no indexed column (a HOT update); nothing is inserted.
-- Each pgbench client rotates its own session (id derived from
-- :client_id). pgbench cannot carry the generation between runs, and the
-- harness (../shared/peer-bench/pgbench/run.sh) seeds sessions without a
-- secret, so generation and secret are matched by predicates of the same
-- cost instead of by bound values.
\set sid_suffix :client_id + 1000
UPDATE sessions SET refresh_generation = refresh_generation + 1, refresh_rotated_at = 1,
  refresh_reused = NULL, last_used_at = 1,
  idle_expires_at = CASE WHEN 1 + 1209600 < absolute_expires_at THEN 1 + 1209600 ELSE absolute_expires_at END
WHERE id = ('00000000-0000-4000-8000-' || lpad(:sid_suffix::text, 12, '0'))::uuid
  AND refresh_generation >= 0 AND refresh_secret IS NULL AND client_id = 'loadgen'
  AND revoked_at IS NULL AND idle_expires_at > 1 AND absolute_expires_at > 1
  AND EXISTS (SELECT 1 FROM users u WHERE u.id = sessions.user_id AND NOT u.disabled
    AND u.credential_version = sessions.credential_version)
RETURNING *;
