#!/usr/bin/env bash
# Where a refresh rotation's CPU goes on PostgreSQL: tessera, PostgreSQL's
# processes and the load generator, sampled from /proc over 8 s in the
# middle of an examples/loadgen.rs refresh run (docs/scaling.md).
#
#   cargo build --release --bin tessera --example loadgen
#   scripts/cpu-split.sh [CONCURRENCY=32] [SECONDS=15]
#
# Needs the local PostgreSQL (127.0.0.1:5432, user postgres, trust auth);
# creates and drops the database `cpusplit`. Set SSLMODE (default disable).
set -euo pipefail
cd "$(dirname "$0")/.."
CONC=${1:-32}; SECS=${2:-15}
T=target/release/tessera; L=target/release/examples/loadgen
PORT=${PORT:-3211}
psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS cpusplit" -c "CREATE DATABASE cpusplit" 2>/dev/null
W=$(mktemp -d)
head -c 32 /dev/urandom | base64 > "$W/master.key"; chmod 600 "$W/master.key"
export TESSERA_MASTER_KEY_FILE=$W/master.key TESSERA_DATA_DIR=$W \
    TESSERA_DATABASE_URL="postgres://postgres@127.0.0.1/cpusplit?sslmode=${SSLMODE:-disable}" \
    TESSERA_LISTEN=127.0.0.1:$PORT TESSERA_ISSUER=http://127.0.0.1:$PORT
"$T" migrate >"$W/cli.log" 2>&1
printf 'loadgen-password\n' | "$T" user add loadgen --password-stdin >>"$W/cli.log" 2>&1
"$T" client add loadgen --public --grant password --grant refresh_token --scope read --audience https://api.example >>"$W/cli.log" 2>&1
TESSERA_LOG_LEVEL=warn TESSERA_TOKEN_RATE_LIMIT=off "$T" serve --no-migrate >"$W/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null || true; rm -rf "$W"; psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS cpusplit" 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.1; done
# utime + stime, in clock ticks, of the given processes.
ticks() { local s=0 p; for p in "$@"; do [ -r "/proc/$p/stat" ] && s=$((s + $(awk '{print $14+$15}' "/proc/$p/stat"))); done; echo "$s"; }
"$L" refresh "http://127.0.0.1:$PORT" "$CONC" "$SECS" --warmup 3 >"$W/loadgen.out" 2>&1 &
LOADGEN=$!
sleep 5   # the workers' logins and the warm-up
# shellcheck disable=SC2046
t0=$(ticks $SERVER); p0=$(ticks $(pgrep -x postgres)); l0=$(ticks $LOADGEN); r0=$(date +%s.%N)
sleep 8
# shellcheck disable=SC2046
t1=$(ticks $SERVER); p1=$(ticks $(pgrep -x postgres)); l1=$(ticks $LOADGEN); r1=$(date +%s.%N)
wait $LOADGEN
grep '^mode=' "$W/loadgen.out"
rate=$(grep -o 'rate=[0-9]*' "$W/loadgen.out" | cut -d= -f2)
python3 - "$r0" "$r1" "$(getconf CLK_TCK)" "$rate" "$t0" "$t1" "$p0" "$p1" "$l0" "$l1" <<'PY'
import sys
r0, r1, hz, rate = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
t, p, l = ((int(sys.argv[i + 1]) - int(sys.argv[i])) / hz for i in (5, 7, 9))
window = r1 - r0
n = rate * window
for name, cpu in (("tessera", t), ("postgres", p), ("loadgen", l)):
    print(f"{name}: {cpu / window * 100:.0f}% of a core, {cpu / n * 1e6:.0f} µs per refresh")
PY
