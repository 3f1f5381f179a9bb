#!/usr/bin/env bash
# The whole performance matrix in one sitting (issue #9), written as tables
# into docs/performance.md (between <!-- bench:begin --> and <!-- bench:end -->)
# and printed to stdout:
#
#   - start-up on SQLite: ms from spawn to /readyz 200 (first start with
#     migrations and key generation, then a warm restart; medians of 5),
#     and idle RSS;
#   - on PostgreSQL: examples/loadgen.rs against `tessera serve` for
#     client_credentials, refresh, introspect and verify (the resource server
#     example, polling the revocation feed) at 1, 8 and 32 concurrent
#     workers: req/s, latency percentiles, errors, peak RSS of the process
#     under load;
#   - the bare references of the same sitting: criterion (benches/tokens.rs)
#     and pgbench of the rotation SQL (scripts/bench-rotation.sql).
#
#   scripts/bench.sh [SECONDS_PER_RUN]      # default 10
#
# Environment: BENCH_TESSERA, BENCH_RESOURCE_SERVER (binaries to measure
# instead of this tree's), PG_ADMIN_URL (default postgres://postgres@127.0.0.1:5432/postgres;
# the database tessera_bench is dropped and recreated), BENCH_SKIP_CRITERION=1
# to skip criterion, BENCH_NO_DOC=1 to print without touching the docs,
# BENCH_COLD_TOKENS (default 20000) distinct tokens for the second
# introspect/verify series.
# Linux only (/proc). Needs psql, pgbench, openssl, curl.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${1:-10}
[[ $SECS =~ ^[0-9]+$ && $SECS -gt 0 ]] || { echo "usage: $0 [SECONDS_PER_RUN]" >&2; exit 2; }
PG=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
DB=tessera_bench
DBURL=${PG%/*}/$DB
PORT=18080
SQLITE_PORT=18081
RS_PORT=19000
BASE=http://127.0.0.1:$PORT
AUD=https://api.example
# introspect and verify run twice: with 4 tokens presented again and again
# (a client re-using its token), and with COLD_TOKENS distinct ones (more
# than a verifier's cache of verified tokens holds, 10000 by default).
COLD_TOKENS=${BENCH_COLD_TOKENS:-20000}
RUNS=(client_credentials:1 refresh:1 introspect:4 "introspect:$COLD_TOKENS" verify:4 "verify:$COLD_TOKENS")
CONCURRENCY=(1 8 32)
PGBENCH_CLIENTS=(1 8 16 32)
# BENCH_TESSERA and BENCH_RESOURCE_SERVER measure other builds (say, an older
# commit's) with this tree's load generator, for before/after figures.
T=${BENCH_TESSERA:-target/release/tessera}
LG=target/release/examples/loadgen
RS=${BENCH_RESOURCE_SERVER:-target/release/examples/resource_server}
DOC=docs/performance.md
COMMAND="scripts/bench.sh $*"
[[ -n ${BENCH_SKIP_CRITERION:-} ]] && COMMAND="BENCH_SKIP_CRITERION=1 $COMMAND"

for tool in psql pgbench openssl curl; do
    command -v $tool >/dev/null || { echo "bench.sh: $tool is missing" >&2; exit 2; }
done
# The configuration is this script's alone: tessera refuses unknown
# TESSERA_* variables, and inherited ones would skew the figures.
while read -r v; do unset "$v"; done < <(compgen -e | grep '^TESSERA_' || true)

WORK=$(mktemp -d)
SERVER= RSERVER= PG_CREATED=
stop() { # PID: SIGTERM, then wait for it
    [[ -n ${1:-} ]] || return 0
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}
cleanup() {
    local rc=$?
    stop "$RSERVER"
    stop "$SERVER"
    [[ -n $PG_CREATED ]] && psql "$PG" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1
    if [[ $rc -ne 0 ]]; then
        echo "bench.sh: failed (exit $rc); logs:" >&2
        for f in "$WORK"/*.log; do [[ -s $f ]] && { echo "--- $f" >&2; tail -n 20 "$f" >&2; }; done
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
log() { echo "bench.sh: $*" >&2; }

# GET PATH on 127.0.0.1:PORT answers 200? (bash's /dev/tcp: no process to
# fork per poll, so polling every 5 ms stays cheap and precise)
http_ok() { # PORT PATH
    local line
    { exec 3<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || return 1
    printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$2" >&3 || { exec 3<&-; return 1; }
    IFS= read -r -t 2 line <&3 || true
    exec 3<&-
    [[ $line == "HTTP/1.1 200"* ]]
}
now_ns() { date +%s%N; }
# Waits until PORT PATH answers 200 while PID lives; prints the ms since T0 (ns).
wait_ready() { # PID PORT PATH T0 TIMEOUT_S
    local deadline=$(( $4 + $5 * 1000000000 ))
    until http_ok "$2" "$3"; do
        kill -0 "$1" 2>/dev/null || { log "process $1 exited before $3 answered 200"; return 1; }
        (( $(now_ns) < deadline )) || { log "timed out waiting for :$2$3"; return 1; }
        sleep 0.005
    done
    echo $(( ($(now_ns) - $4) / 1000000 ))
}
rss_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
mb() { awk -v kb="$1" 'BEGIN {printf "%.1f MB", kb / 1024}'; }
median() { sort -n | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
spaced() { sed 's/ms$/ ms/'; } # 7.10ms -> 7.10 ms
kv() { # KEY LINE: the value of KEY=… in a loadgen line
    awk -v k="$1" '{for (i = 1; i <= NF; i++) if (index($i, k "=") == 1) {print substr($i, length(k) + 2); exit}}' <<<"$2"
}

# ---------------------------------------------------------------- build ----
log "building (release)"
cargo build --release --quiet --bin tessera --example loadgen --example resource_server

GIT=$(git rev-parse --short HEAD)
git diff --quiet HEAD -- 2>/dev/null || GIT="$GIT-dirty"
DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
CPU=$(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo)
MACHINE="$(nproc) CPUs ($CPU), $(awk '/^MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), $(rustc --version | cut -d' ' -f1-2)"

# ------------------------------------------------------ SQLite start-up ----
log "start-up on SQLite (5 fresh + 5 warm starts)"
sqlite_start() { # DIR: start, set R_MS (spawn to ready) and R_RSS (1 s later), stop
    local t0
    t0=$(now_ns)
    TESSERA_DATABASE_URL="sqlite://$1/t.db?mode=rwc" TESSERA_DATA_DIR="$1" \
        TESSERA_LISTEN=127.0.0.1:$SQLITE_PORT TESSERA_LOG_LEVEL=warn TESSERA_SHUTDOWN_TIMEOUT=1 \
        $T serve >>"$WORK/sqlite.log" 2>&1 &
    SERVER=$!
    R_MS=$(wait_ready $SERVER $SQLITE_PORT /readyz "$t0" 60)
    sleep 1
    R_RSS=$(rss_kb $SERVER VmRSS)
    stop $SERVER
    SERVER=
}
FIRST=() WARM=() IDLE_SQLITE=()
for i in 1 2 3 4 5; do
    dir="$WORK/sqlite$i"
    mkdir -p "$dir"
    sqlite_start "$dir"
    FIRST+=("$R_MS")
    sqlite_start "$dir"
    WARM+=("$R_MS")
    IDLE_SQLITE+=("$R_RSS")
done
READY_FIRST=$(printf '%s\n' "${FIRST[@]}" | median)
READY_WARM=$(printf '%s\n' "${WARM[@]}" | median)
RSS_SQLITE=$(printf '%s\n' "${IDLE_SQLITE[@]}" | median)
[[ -n $READY_FIRST && -n $READY_WARM ]] || { log "SQLite start-up failed"; exit 1; }

# ----------------------------------------------------- PostgreSQL setup ----
log "PostgreSQL: fresh database $DB, provisioning"
PGOPTIONS='-c client_min_messages=warning' psql "$PG" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB" >/dev/null
PG_CREATED=1
export TESSERA_DATABASE_URL=$DBURL TESSERA_DATA_DIR=$WORK/pg
TESSERA_MASTER_KEY=$(openssl rand -base64 32)
export TESSERA_MASTER_KEY
$T migrate >>"$WORK/cli.log" 2>&1
echo 'loadgen-password' | $T user add loadgen --password-stdin >>"$WORK/cli.log" 2>&1
# The public client is named loadgen: scripts/bench-rotation.sql's seed expects it.
$T client add loadgen --public --grant password --grant refresh_token --scope read --audience $AUD >>"$WORK/cli.log" 2>&1
SECRET=$($T client add loadgen-cc --confidential --resource-server --scope read --audience $AUD 2>>"$WORK/cli.log" \
    | sed -n 's/^client_secret=//p')
[[ -n $SECRET ]] || { log "no client secret from 'tessera client add'"; exit 1; }

TESSERA_LISTEN=127.0.0.1:$PORT TESSERA_ISSUER=$BASE TESSERA_LOG_LEVEL=warn \
    TESSERA_TOKEN_RATE_LIMIT=off TESSERA_INTROSPECTION_RATE_LIMIT=off TESSERA_SHUTDOWN_TIMEOUT=2 \
    $T serve --no-migrate >>"$WORK/server.log" 2>&1 &
SERVER=$!
# (One client drives all the load here; the per-client limits would measure themselves.)
wait_ready $SERVER $PORT /readyz "$(now_ns)" 60 >/dev/null
ISSUER=$BASE AUDIENCE=$AUD LISTEN=127.0.0.1:$RS_PORT FEED_CLIENT_ID=loadgen-cc FEED_CLIENT_SECRET=$SECRET \
    $RS >>"$WORK/resource_server.log" 2>&1 &
RSERVER=$!
wait_ready $RSERVER $RS_PORT / "$(now_ns)" 30 >/dev/null
sleep 1
RSS_PG_IDLE=$(rss_kb $SERVER VmRSS)
RSS_RS_IDLE=$(rss_kb $RSERVER VmRSS)

# ------------------------------------------------------------ HTTP load ----
export CLIENT_ID=loadgen-cc CLIENT_SECRET=$SECRET PUBLIC_CLIENT_ID=loadgen \
       USERNAME=loadgen PASSWORD=loadgen-password
HWM_RESET=yes
ROWS=() NOTES=()
declare -A RATE
BUSY=()
# Compilers or test runs of someone else on this machine skew every figure: say so.
busy() { pgrep -x 'rustc|cargo|cargo-nextest|cc1|cc1plus|ld' >/dev/null 2>&1; }
for run in "${RUNS[@]}"; do
    mode=${run%:*} tokens=${run#*:}
    label=$mode
    [[ $tokens -gt 4 ]] && label="$mode ($tokens tokens)"
    pid=$SERVER
    [[ $mode == verify ]] && pid=$RSERVER
    for c in "${CONCURRENCY[@]}"; do
        log "loadgen $label concurrency=$c (${SECS}s)"
        echo 5 2>/dev/null >"/proc/$pid/clear_refs" || HWM_RESET=no
        : >"$WORK/loadgen.err"
        busy && BUSY+=("$label/$c")
        line=$($LG "$mode" $BASE "$c" "$SECS" --tokens "$tokens" --rs-url http://127.0.0.1:$RS_PORT 2>"$WORK/loadgen.err") || true
        busy && BUSY+=("$label/$c")
        kill -0 "$pid" 2>/dev/null || { log "the server died during $label/$c"; exit 1; }
        hwm=$(rss_kb "$pid" VmHWM)
        echo "$line peak_rss_kb=$hwm"
        if [[ -z $line ]]; then
            ROWS+=("| $label | $c | failed | | | | $(head -c 200 "$WORK/loadgen.err" | tr '\n|' ' /') | $(mb "$hwm") | |")
            RATE[$mode/$c]=0
            continue
        fi
        errors=$(kv errors "$line")
        [[ $errors != 0 ]] && errors="$errors ($(kv error_kinds "$line"))"
        rate=$(kv rate "$line")
        rate=${rate%/s}
        RATE[$mode/$c]=$rate
        ROWS+=("| $label | $c | $rate | $(kv p50 "$line" | spaced) | $(kv p99 "$line" | spaced) | $(kv p99.9 "$line" | spaced) | $errors | $(mb "$hwm") | $(kv loadgen_cpu "$line") |")
        if [[ -s $WORK/loadgen.err ]]; then
            NOTES+=("$label/$c: $(head -n 3 "$WORK/loadgen.err" | tr '\n' ' ')")
        fi
    done
done
RSS_PG_AFTER=$(rss_kb $SERVER VmRSS)
RSS_RS_AFTER=$(rss_kb $RSERVER VmRSS)
stop $RSERVER
RSERVER=
stop $SERVER
SERVER=
if grep -qiE 'error|panic' "$WORK/server.log"; then
    NOTES+=("server log: $(grep -ciE 'error|panic' "$WORK/server.log") error/panic lines, first: $(grep -iE -m1 'error|panic' "$WORK/server.log" | cut -c1-200)")
fi

# -------------------------------------------------------------- pgbench ----
log "pgbench of scripts/bench-rotation.sql"
# One session and chain per pgbench client (bench-rotation.sql derives the
# session id from :client_id and requires client_id 'loadgen').
psql "$DBURL" -q -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
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
# Both protocols: `simple` (pgbench's default: parse and plan every call)
# and `prepared` (what sqlx does: planned once per connection). The ratio
# uses the prepared figure, the one the service can actually reach.
declare -A TPS
PG_ROWS=()
for c in "${PGBENCH_CLIENTS[@]}"; do
    j=$(( c < 2 ? c : 2 ))
    row="| $c"
    for mode in simple prepared; do
        out=$(pgbench -n -M $mode -c "$c" -j "$j" -T "$SECS" -f scripts/bench-rotation.sql "$DBURL" 2>>"$WORK/pgbench.log")
        tps=$(awk '/^tps/ {printf "%.0f", $3; exit}' <<<"$out")
        lat=$(awk '/^latency average/ {print $4 " " $5; exit}' <<<"$out")
        failed=$(awk '/^number of failed transactions/ {print $5; exit}' <<<"$out")
        echo "pgbench mode=$mode clients=$c tps=$tps latency_avg=${lat// /} failed=${failed:-0}"
        row+=" | $tps | $lat | ${failed:-0}"
    done
    TPS[$c]=$tps # prepared
    PG_ROWS+=("$row |")
done
PG_VERSION=$(psql "$DBURL" -Atc 'SHOW server_version')
psql "$PG" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
PG_CREATED=

# ------------------------------------------------------------ criterion ----
declare -A CRIT
if [[ -z ${BENCH_SKIP_CRITERION:-} ]]; then
    log "cargo bench --bench tokens"
    cargo bench --quiet --bench tokens >"$WORK/criterion.log" 2>&1
    # "<id>  time:   [low med high]", the id alone on the line before when long.
    while read -r id med; do CRIT[$id]=$med; done < <(awk '
        function us(v, u) { return u == "ns" ? v / 1000 : u == "ms" ? v * 1000 : u == "s" ? v * 1e6 : v }
        /^[A-Za-z0-9_]+\/[A-Za-z0-9_]+/ { id = $1 }
        /time:[ \t]+\[/ {
            sub(/.*time:[ \t]+\[/, ""); sub(/^(µ|μ)/, "u", $4)
            printf "%s %.4f\n", id, us($3, $4)
        }' "$WORK/criterion.log")
    [[ ${#CRIT[@]} -gt 0 ]] || { log "no criterion results parsed"; exit 1; }
fi
fmt_us() { awk -v v="$1" 'BEGIN {printf (v >= 100 ? "%.1f µs" : "%.2f µs"), v}'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN {if (a > 0 && b > 0) printf "%.0f %%", 100 * a / b; else print "n/a"}'; }
sum() { awk -v a="$1" -v b="$2" 'BEGIN {print a + b}'; }
crit() { echo "${CRIT[$1]:-0}"; }

# --------------------------------------------------------------- report ----
{
    echo "Run of $DATE, commit \`$GIT\`, \`$COMMAND\` (${SECS} s per run, 1 s warm-up)."
    echo "Machine: $MACHINE; PostgreSQL $PG_VERSION. The load generator shares the cores with the servers and PostgreSQL."
    echo
    echo "### HTTP hot paths (PostgreSQL, \`examples/loadgen.rs\`)"
    echo
    echo "Closed loop, one keep-alive connection per worker. \`verify\` is \`GET /me\` on \`examples/resource_server.rs\` (polling the revocation feed); the others hit \`tessera serve\` with the per-client rate limits off. Peak RSS is the process's VmHWM during the run ($( [[ $HWM_RESET == yes ]] && echo "reset before each run" || echo "could not be reset: peak since start" )): tessera's, the resource server's for \`verify\`; for \`refresh\` it includes the workers' password logins before the clock starts (Argon2id, 19 MiB each, one per core at a time). Loadgen CPU is the generator's own share of one core over the measured window."
    echo
    echo "Introspect and verify present 4 tokens again and again, then $COLD_TOKENS distinct ones in turn (more than a verifier's default cache of verified tokens holds, so most requests check a signature)."
    echo
    echo "| mode | concurrency | req/s | p50 | p99 | p99.9 | errors | peak RSS | loadgen CPU |"
    echo "|---|---|---|---|---|---|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
    echo
    echo "### Start-up and memory"
    echo
    echo "| figure | value |"
    echo "|---|---|"
    echo "| SQLite, first start to \`/readyz\` 200 (migrations, key generation; median of 5) | ${READY_FIRST} ms ($(IFS=/; echo "${FIRST[*]}")) |"
    echo "| SQLite, warm restart to \`/readyz\` 200 (median of 5) | ${READY_WARM} ms ($(IFS=/; echo "${WARM[*]}")) |"
    echo "| SQLite, idle RSS 1 s after ready (median) | $(mb "$RSS_SQLITE") |"
    echo "| PostgreSQL, tessera idle RSS before load | $(mb "$RSS_PG_IDLE") |"
    echo "| PostgreSQL, tessera RSS after all runs | $(mb "$RSS_PG_AFTER") |"
    echo "| resource server idle RSS before / after load | $(mb "$RSS_RS_IDLE") / $(mb "$RSS_RS_AFTER") |"
    echo
    echo "### Token primitives (criterion, \`cargo bench --bench tokens\`, medians)"
    echo
    if [[ -n ${BENCH_SKIP_CRITERION:-} ]]; then
        echo "Skipped in this run (\`BENCH_SKIP_CRITERION=1\`)."
    else
        echo "| operation | time | raw primitive | time | ours vs raw (rate) |"
        echo "|---|---|---|---|---|"
        echo "| \`tessera/mint_jws\` | $(fmt_us "$(crit tessera/mint_jws)") | \`es256/raw_sign\` | $(fmt_us "$(crit es256/raw_sign)") | $(pct "$(crit es256/raw_sign)" "$(crit tessera/mint_jws)") |"
        echo "| \`tessera/verify_jws\` (every check; cache off) | $(fmt_us "$(crit tessera/verify_jws)") | \`es256/raw_verify_parsed\` | $(fmt_us "$(crit es256/raw_verify_parsed)") | $(pct "$(crit es256/raw_verify_parsed)" "$(crit tessera/verify_jws)") |"
        echo "| \`tessera/verify_jws_cached\` (the same token again, the default) | $(fmt_us "$(crit tessera/verify_jws_cached)") | \`es256/raw_verify_parsed\` | $(fmt_us "$(crit es256/raw_verify_parsed)") | $(pct "$(crit es256/raw_verify_parsed)" "$(crit tessera/verify_jws_cached)") |"
        echo "| \`tessera/mint_jwe\` | $(fmt_us "$(crit tessera/mint_jwe)") | \`raw_sign\` + \`jwe/raw_encrypt\` | $(fmt_us "$(sum "$(crit es256/raw_sign)" "$(crit jwe/raw_encrypt)")") | $(pct "$(sum "$(crit es256/raw_sign)" "$(crit jwe/raw_encrypt)")" "$(crit tessera/mint_jwe)") |"
        echo "| \`tessera/verify_jwe\` | $(fmt_us "$(crit tessera/verify_jwe)") | \`jwe/raw_decrypt\` + \`raw_verify_parsed\` | $(fmt_us "$(sum "$(crit jwe/raw_decrypt)" "$(crit es256/raw_verify_parsed)")") | $(pct "$(sum "$(crit jwe/raw_decrypt)" "$(crit es256/raw_verify_parsed)")" "$(crit tessera/verify_jwe)") |"
        echo "| reference: \`jsonwebtoken/encode\` | $(fmt_us "$(crit jsonwebtoken/encode)") | | | |"
        echo "| reference: \`jsonwebtoken/decode\` | $(fmt_us "$(crit jsonwebtoken/decode)") | | | |"
    fi
    echo
    echo "### Bare rotation SQL (\`pgbench -f scripts/bench-rotation.sql\`, \`-j 2\`, same database, servers stopped)"
    echo
    echo "| clients | simple: tps | latency avg | failed | prepared: tps | latency avg | failed |"
    echo "|---|---|---|---|---|---|---|"
    printf '%s\n' "${PG_ROWS[@]}"
    echo
    echo "HTTP refresh at 32 workers / bare rotation at 16 pgbench clients (prepared): **$(pct "${RATE[refresh/32]:-0}" "${TPS[16]:-0}")** (${RATE[refresh/32]:-0} req/s vs ${TPS[16]:-0} tps)."
    if [[ ${#BUSY[@]} -gt 0 ]]; then
        NOTES+=("other compilations or test runs were active on this machine during: $(printf '%s\n' "${BUSY[@]}" | sort -u | paste -sd, - | sed 's/,/, /g'); those rows are skewed")
    fi
    if [[ ${#NOTES[@]} -gt 0 ]]; then
        echo
        echo "Notes from this run:"
        echo
        for n in "${NOTES[@]}"; do echo "- ${n//|//}"; done
    fi
} >"$WORK/results.md"

echo
cat "$WORK/results.md"

# Into docs/performance.md, between the markers (the section is added at
# the top, before the first "## " heading, if it is missing).
if [[ -z ${BENCH_NO_DOC:-} ]]; then
    if ! grep -q '<!-- bench:begin -->' $DOC; then
        awk 'done == 0 && /^## / {print "## Latest full run (scripts/bench.sh)\n\n<!-- bench:begin -->\n<!-- bench:end -->\n"; done = 1} {print}' \
            $DOC >"$WORK/doc" && cat "$WORK/doc" >$DOC
    fi
    awk -v f="$WORK/results.md" '
        /<!-- bench:begin -->/ {print; while ((getline l < f) > 0) print l; skip = 1; next}
        /<!-- bench:end -->/ {skip = 0}
        !skip {print}' $DOC >"$WORK/doc"
    cat "$WORK/doc" >$DOC
    log "results written to $DOC"
fi
