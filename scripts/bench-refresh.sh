#!/usr/bin/env bash
# Refresh-grant throughput over HTTP (examples/loadgen.rs) beside pgbench of
# the bare rotation SQL (scripts/bench-rotation.sql), in one sitting, on the
# local PostgreSQL. Prints one line per run; copy them into docs/performance.md.
#   scripts/bench-refresh.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${1:-10}
PG=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
DB=tessera_bench
DBURL=${PG%/*}/$DB
export TESSERA_DATABASE_URL=$DBURL TESSERA_MASTER_KEY=$(openssl rand -base64 32) \
       TESSERA_LISTEN=127.0.0.1:18080 TESSERA_LOG_LEVEL=warn TESSERA_DATA_DIR=$(mktemp -d) \
       TESSERA_TOKEN_RATE_LIMIT=off TESSERA_INTROSPECTION_RATE_LIMIT=off
# (One client drives all the load here; the per-client limits would measure themselves.)

cargo build --release --quiet --bin tessera --example loadgen
psql "$PG" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
T=target/release/tessera
$T migrate >/dev/null
echo 'loadgen-password' | $T user add loadgen --password-stdin >/dev/null
$T client add loadgen --public --scope read --audience https://api.example >/dev/null
$T serve & SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
until curl -sf http://127.0.0.1:18080/readyz >/dev/null; do sleep 0.1; done

for c in 1 8 32; do
    target/release/examples/loadgen refresh http://127.0.0.1:18080 "$c" "$SECONDS_PER_RUN"
done
echo "server RSS after load: $(ps -o rss= -p $SERVER) KiB"
kill $SERVER; wait $SERVER 2>/dev/null || true

# Bare SQL: one session and chain per pgbench client.
psql "$DBURL" -q <<'SQL'
INSERT INTO users (id, username, password_hash, created_at, updated_at)
  VALUES ('00000000-0000-4000-8000-000000000001', 'pgbench', 'x', 0, 0);
INSERT INTO sessions (id, user_id, client_id, scope, created_at, last_used_at, idle_expires_at, absolute_expires_at)
  SELECT ('00000000-0000-4000-8000-' || lpad((1000 + i)::text, 12, '0'))::uuid,
         '00000000-0000-4000-8000-000000000001', 'loadgen', 'read', 0, 0, 4102444800, 4102444800
  FROM generate_series(0, 63) AS i;
INSERT INTO refresh_tokens (token_hash, session_id, generation, state, created_at)
  SELECT sha256(('seed' || i)::bytea), ('00000000-0000-4000-8000-' || lpad((1000 + i)::text, 12, '0'))::uuid, 0, 'active', 0
  FROM generate_series(0, 63) AS i;
SQL
for c in 1 8 32; do
    tps=$(pgbench -n -c "$c" -j 2 -T "$SECONDS_PER_RUN" -f scripts/bench-rotation.sql "$DBURL" 2>/dev/null \
        | awk '/^tps/ {print $3; exit}')
    echo "pgbench bare rotation concurrency=$c tps=$tps"
done
psql "$PG" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
