#!/usr/bin/env bash
# On-behalf-of token exchange (RFC 8693) against client_credentials on the
# same server, the way docs/performance.md measures it: `tessera serve`
# pinned to CPU 1 on a fresh SQLite database in DIR, examples/loadgen.rs
# pinned to CPU 0. Both mint one access token per request; the exchange
# also verifies the subject token and reads its session.
#
#   cargo build --release --bin tessera --example loadgen
#   scripts/bench-token-exchange.sh DIR [CONCURRENCY=8] [SECONDS=10] [TOKENS=200] [TESSERA_BIN]
#
# TOKENS user access tokens are obtained first with the password grant (one
# Argon2 check each; eight at once, so the per-network login limit is
# raised) and exchanged round-robin. Prints loadgen's summary
# line for each mode.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:?usage: bench-token-exchange.sh DIR [CONCURRENCY] [SECONDS] [TOKENS] [TESSERA_BIN]}
CONC=${2:-8}; SECS=${3:-10}; TOKENS=${4:-200}; BIN=${5:-target/release/tessera}
LOADGEN=target/release/examples/loadgen
PORT=${PORT:-3213}
rm -rf "$DIR"; mkdir -p "$DIR"
export TESSERA_DATABASE_URL="sqlite://$DIR/t.db" TESSERA_DATA_DIR=$DIR \
    TESSERA_LISTEN=127.0.0.1:$PORT TESSERA_ISSUER=http://127.0.0.1:$PORT
"$BIN" migrate >"$DIR/cli.log" 2>&1
printf 'loadgen-password\n' | "$BIN" user add loadgen --password-stdin >>"$DIR/cli.log" 2>&1
"$BIN" client add loadgen --public --grant password --grant refresh_token --scope read \
    --audience https://api.example >>"$DIR/cli.log" 2>&1
SECRET=$("$BIN" client add exchanger --confidential --grant token-exchange --grant client_credentials \
    --scope read --audience https://api.example --exchange-audience https://payments.example \
    2>>"$DIR/cli.log" | sed -n 's/^client_secret=//p')
TESSERA_LOG_LEVEL=warn TESSERA_TOKEN_RATE_LIMIT=off TESSERA_LOGIN_NETWORK_CONCURRENCY=16 taskset -c 1 "$BIN" serve --no-migrate >"$DIR/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.1; done
export CLIENT_ID=exchanger CLIENT_SECRET=$SECRET CLIENT_AUTH=basic
taskset -c 0 "$LOADGEN" client_credentials "http://127.0.0.1:$PORT" "$CONC" "$SECS" --warmup 3 | grep '^mode='
taskset -c 0 "$LOADGEN" token_exchange "http://127.0.0.1:$PORT" "$CONC" "$SECS" --warmup 3 --tokens "$TOKENS" | grep '^mode='
