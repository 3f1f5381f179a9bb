#!/usr/bin/env bash
# Hostile load, in one sitting, against one tessera binary: what an
# unauthenticated (or merely registered) attacker can do to everyone else
# (issue #23). Prints one markdown table; docs/performance.md ("Hostile
# load") holds the figures before and after the fixes.
#
#   scripts/hostile.sh [ENGINE]          # sqlite (default) or pg
#
# Environment: TESSERA_BIN (default target/release/tessera; point it at an
# older build to measure "before"), HOSTILE (default
# target/release/examples/hostile), PG_ADMIN_URL (pg only; the database
# tessera_hostile is dropped and recreated), SCENARIOS (default: all, space
# separated). Linux only (/proc). Needs curl, python3 (sqlite3 module) or psql.
set -euo pipefail
cd "$(dirname "$0")/.."

ENGINE=${1:-sqlite}
T=${TESSERA_BIN:-target/release/tessera}
H=${HOSTILE:-target/release/examples/hostile}
PG=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
PORT=18090
BASE=http://127.0.0.1:$PORT
AUD=https://api.example
SCENARIOS=${SCENARIOS:-"logins client-auth-flood slow-bodies keepalive-head revoke-churn feed-flood long-paths many-params"}
[[ -x $T && -x $H ]] || { echo "hostile.sh: build first: cargo build --release --bin tessera --example hostile" >&2; exit 2; }
while read -r v; do unset "$v"; done < <(compgen -e | grep '^TESSERA_' || true)
# Thousands of held connections need descriptors on both sides.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

WORK=$(mktemp -d)
SERVER=
cleanup() {
    [[ -n $SERVER ]] && { kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; }
    [[ $ENGINE == pg ]] && psql "$PG" -qc "DROP DATABASE IF EXISTS tessera_hostile WITH (FORCE)" >/dev/null 2>&1
    rm -rf "$WORK"
}
trap cleanup EXIT
log() { echo "hostile.sh: $*" >&2; }

export TESSERA_DATA_DIR=$WORK
TESSERA_MASTER_KEY=$(openssl rand -base64 32)
export TESSERA_MASTER_KEY
if [[ $ENGINE == pg ]]; then
    PGOPTIONS='-c client_min_messages=warning' psql "$PG" -qc "DROP DATABASE IF EXISTS tessera_hostile WITH (FORCE)" -c "CREATE DATABASE tessera_hostile" >/dev/null
    export TESSERA_DATABASE_URL=${PG%/*}/tessera_hostile
else
    export TESSERA_DATABASE_URL=sqlite://$WORK/t.db
fi
export TESSERA_ISSUER=$BASE

# Older builds have no --resource-server: every confidential client could read the feed.
RS_FLAG=
"$T" client add --help 2>/dev/null | grep -q -- --resource-server && RS_FLAG=--resource-server
"$T" migrate >"$WORK/cli.log" 2>&1
echo 'correct horse battery' | "$T" user add alice --password-stdin >>"$WORK/cli.log" 2>&1
"$T" client add spa --public --grant password --grant refresh_token --scope read --audience $AUD >>"$WORK/cli.log" 2>&1
secret() { sed -n 's/^client_secret=//p'; }
RS=$("$T" client add rs --confidential $RS_FLAG --scope read --audience $AUD 2>>"$WORK/cli.log" | secret)
CHURN=$("$T" client add churn --confidential --scope read --audience $AUD 2>>"$WORK/cli.log" | secret)
CONTROL=$("$T" client add control --confidential --scope read --audience $AUD 2>>"$WORK/cli.log" | secret)

sql() {
    if [[ $ENGINE == pg ]]; then psql "$TESSERA_DATABASE_URL" -Atqc "$1"
    else python3 -c 'import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); r=c.execute(sys.argv[2]).fetchall(); c.commit(); print("\n".join("|".join(map(str,x)) for x in r))' "$WORK/t.db" "$1"; fi
}

start() {
    TESSERA_LISTEN=127.0.0.1:$PORT TESSERA_TRUSTED_PROXIES=127.0.0.1 TESSERA_LOG_LEVEL=info \
        "$T" serve --no-migrate >"$WORK/server.log" 2>&1 &
    SERVER=$!
    for _ in $(seq 1 200); do
        curl -fsS -o /dev/null "$BASE/readyz" 2>/dev/null && return 0
        sleep 0.05
    done
    log "tessera did not start"; tail "$WORK/server.log" >&2; exit 1
}
restart() { kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; start; }
rss_mb() { awk '/^VmRSS:/ {printf "%.1f", $2/1024}' "/proc/$SERVER/status"; }
fds() { ls "/proc/$SERVER/fd" | wc -l; }
row() { printf '| %s | %s |\n' "$1" "$2"; }

start
echo "| scenario ($ENGINE, $("$T" --version 2>/dev/null | head -1)) | result |"
echo "|---|---|"
row "idle" "rss_mb=$(rss_mb) fds=$(fds)"
for s in $SCENARIOS; do
    case $s in
    logins)
        r=$("$H" logins base=$BASE attackers=200 secs=20 | sed 's/^RESULT //') ;;
    client-auth-flood)
        before=$(sql "SELECT COUNT(*) FROM audit_log")
        r=$("$H" client-auth-flood base=$BASE n=2000 client=rs | sed 's/^RESULT //')
        sleep 1
        after=$(sql "SELECT COUNT(*) FROM audit_log")
        r="$r audit_rows_written=$((after - before))" ;;
    slow-bodies|keepalive-head)
        r=$("$H" $s base=$BASE n=1000 hold=15 | sed 's/^RESULT //')
        r="$r rss_mb_after=$(rss_mb) fds_after=$(fds)" ;;
    revoke-churn)
        r=$("$H" revoke-churn base=$BASE secs=10 client=churn secret="$CHURN" | sed 's/^RESULT //')
        r="$r revocation_rows=$(sql "SELECT COUNT(*) FROM revocations")" ;;
    feed-flood)
        # 100,000 relevant entries, as a long-running busy deployment holds.
        sql "INSERT INTO revocations (kind, value, revoked_at, relevant_until)
             SELECT 'jti', 'bulk-' || n, $(date +%s), $(date +%s) + 3600 FROM
             $( [[ $ENGINE == pg ]] && echo "generate_series(1, 100000) AS n" || echo "(WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 100000) SELECT n FROM c)" )" >/dev/null
        restart
        r=$("$H" feed-flood base=$BASE readers=16 secs=10 client=rs secret="$RS" cc_client=control cc_secret="$CONTROL" | sed 's/^RESULT //') ;;
    long-paths)
        b=$(stat -c %s "$WORK/server.log")
        r=$("$H" long-paths base=$BASE n=2000 len=60000 | sed 's/^RESULT //')
        sleep 1
        r="$r log_bytes_written=$(( $(stat -c %s "$WORK/server.log") - b ))" ;;
    many-params)
        r=$("$H" many-params base=$BASE n=200 params=2700 | sed 's/^RESULT //')
        r2=$("$H" many-params base=$BASE n=200 params=3 | sed 's/^RESULT .*body_bytes=[0-9]* //')
        r="$r; 3 parameters: $r2" ;;
    *) log "unknown scenario $s"; exit 2 ;;
    esac
    row "$s" "$r"
done
row "after all" "rss_mb=$(rss_mb) fds=$(fds) login_failures_rows=$(sql "SELECT COUNT(*) FROM login_failures") audit_rows=$(sql "SELECT COUNT(*) FROM audit_log")"
sleep 12
row "12 s later" "rss_mb=$(rss_mb) fds=$(fds)"
