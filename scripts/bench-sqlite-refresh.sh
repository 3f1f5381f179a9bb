#!/usr/bin/env bash
# One refresh-rotation cell on SQLite, the way docs/performance.md measures
# where the SQLite store's time goes: `tessera serve` pinned to CPU 1 on a
# fresh database in DIR, examples/loadgen.rs pinned to CPU 0.
#
#   cargo build --release --bin tessera --example loadgen
#   scripts/bench-sqlite-refresh.sh DIR [CONCURRENCY=8] [SECONDS=10] [TESSERA_BIN]
#
# LOADGEN_FLAGS passes further loadgen options (e.g. --dpop: every rotation
# carries a DPoP proof and the chains are DPoP-bound).
#
# DIR is emptied first; put it on the disk you want to measure (or /dev/shm
# to take the disk out). Prints loadgen's summary line and the WAL's size.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:?usage: bench-sqlite-refresh.sh DIR [CONCURRENCY] [SECONDS] [TESSERA_BIN]}
CONC=${2:-8}; SECS=${3:-10}; BIN=${4:-target/release/tessera}
LOADGEN=target/release/examples/loadgen
PORT=${PORT:-3212}
rm -rf "$DIR"; mkdir -p "$DIR"
export TESSERA_DATABASE_URL="sqlite://$DIR/t.db" TESSERA_DATA_DIR=$DIR \
    TESSERA_LISTEN=127.0.0.1:$PORT TESSERA_ISSUER=http://127.0.0.1:$PORT
"$BIN" migrate >"$DIR/cli.log" 2>&1
printf 'loadgen-password\n' | "$BIN" user add loadgen --password-stdin >>"$DIR/cli.log" 2>&1
"$BIN" client add loadgen --public --grant password --grant refresh_token --scope read --audience https://api.example >>"$DIR/cli.log" 2>&1
TESSERA_LOG_LEVEL=warn TESSERA_TOKEN_RATE_LIMIT=off taskset -c 1 "$BIN" serve --no-migrate >"$DIR/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.1; done
taskset -c 0 "$LOADGEN" refresh "http://127.0.0.1:$PORT" "$CONC" "$SECS" --warmup 3 ${LOADGEN_FLAGS:-} | grep '^mode='
echo "wal_bytes=$(stat -c %s "$DIR/t.db-wal" 2>/dev/null || echo 0)"
