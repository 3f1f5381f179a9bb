#!/usr/bin/env bash
# Runs the whole test suite: unit, integration (both storage engines), doc tests.
#
# PostgreSQL is found in this order:
#   1. $DATABASE_URL, if set (it must be reachable: a set but dead URL is an error);
#   2. the local server on 127.0.0.1:5432 (user postgres, trust auth);
#   3. a throwaway cluster made with initdb/pg_ctl in a temporary directory,
#      stopped and deleted when this script exits.
# Extra arguments go to the test runner (e.g. `scripts/test.sh store::` to filter).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'test.sh: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# Is a PostgreSQL server answering at this URL?
reachable() {
    if command -v psql >/dev/null 2>&1; then
        psql "$1" -Atqc 'SELECT 1' >/dev/null 2>&1
    else
        # No client tools: settle for an open TCP port.
        local hostport=${1#*@}; hostport=${hostport%%/*}
        (exec 3<>"/dev/tcp/${hostport%:*}/${hostport##*:}") 2>/dev/null
    fi
}

find_pg_bin() {
    local tool=$1
    if command -v "$tool" >/dev/null 2>&1; then command -v "$tool"; return; fi
    ls -d /usr/lib/postgresql/*/bin/"$tool" /usr/local/pgsql/bin/"$tool" 2>/dev/null | sort -V | tail -n 1
}

start_throwaway_cluster() {
    local initdb pg_ctl
    initdb=$(find_pg_bin initdb)
    pg_ctl=$(find_pg_bin pg_ctl)
    [ -n "$initdb" ] && [ -n "$pg_ctl" ] || die "no PostgreSQL found: set DATABASE_URL, run a server on \
127.0.0.1:${LOCAL_PGPORT}, or install PostgreSQL (Debian: apt-get install postgresql) so a throwaway cluster can be started"

    PG_TMP=$(mktemp -d "${TMPDIR:-/tmp}/tessera-pg.XXXXXX")
    local port as=()
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 55432)
    if [ "$(id -u)" = 0 ]; then
        # initdb refuses to run as root: run the cluster as the postgres user.
        id postgres >/dev/null 2>&1 || die "running as root and there is no 'postgres' user to own a throwaway cluster"
        chown postgres "$PG_TMP"
        as=(runuser -u postgres --)
    fi
    say "starting a throwaway PostgreSQL cluster on 127.0.0.1:$port ($PG_TMP)"
    "${as[@]}" "$initdb" -D "$PG_TMP/data" -U postgres --auth=trust --no-sync >"$PG_TMP/initdb.log" 2>&1 \
        || { cat "$PG_TMP/initdb.log" >&2; die "initdb failed"; }
    PG_STOP=("${as[@]}" "$pg_ctl" -D "$PG_TMP/data" -m fast -w stop)
    trap 'say "stopping the throwaway cluster"; "${PG_STOP[@]}" >/dev/null 2>&1 || true; rm -rf "$PG_TMP"' EXIT
    "${as[@]}" "$pg_ctl" -D "$PG_TMP/data" -l "$PG_TMP/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $PG_TMP -c fsync=off -c max_connections=300" start >/dev/null \
        || { cat "$PG_TMP/server.log" >&2; die "the throwaway cluster did not start"; }
    export DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
}

LOCAL_PGPORT=${TESSERA_TEST_LOCAL_PGPORT:-5432}
if [ -n "${DATABASE_URL:-}" ]; then
    reachable "$DATABASE_URL" || die "DATABASE_URL is set but no PostgreSQL answers there"
    say "using PostgreSQL from DATABASE_URL"
elif reachable "postgres://postgres@127.0.0.1:$LOCAL_PGPORT/postgres"; then
    export DATABASE_URL="postgres://postgres@127.0.0.1:$LOCAL_PGPORT/postgres"
    say "using the local PostgreSQL on 127.0.0.1:$LOCAL_PGPORT"
else
    start_throwaway_cluster
fi

# Independent JOSE libraries (PyJWT, jwcrypto) for the interoperability test,
# in a virtualenv under target/ so nothing is installed system-wide.
VENV=target/interop-venv
if [ ! -f "$VENV/.installed" ] || [ tests/interop/requirements.txt -nt "$VENV/.installed" ]; then
    say "installing the interoperability test's Python packages into $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r tests/interop/requirements.txt \
        || die "cannot install tests/interop/requirements.txt from PyPI"
    touch "$VENV/.installed"
fi
export TESSERA_INTEROP_PYTHON="$PWD/$VENV/bin/python"

# An independent DPoP client (oauth4webapi, tests/interop/package.json) for
# the DPoP interoperability test, with the machine's Node.js and npm, in
# target/ so nothing is installed system-wide.
NODE_DIR=target/interop-node
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 \
    || die "node and npm are needed for the DPoP interoperability test (Debian: apt-get install nodejs npm)"
if [ ! -f "$NODE_DIR/.installed" ] || [ tests/interop/package.json -nt "$NODE_DIR/.installed" ]; then
    say "installing the interoperability test's npm packages into $NODE_DIR"
    rm -rf "$NODE_DIR" && mkdir -p "$NODE_DIR"
    cp tests/interop/package.json "$NODE_DIR/"
    (cd "$NODE_DIR" && npm install --silent --no-audit --no-fund) \
        || die "cannot install tests/interop/package.json from the npm registry"
    touch "$NODE_DIR/.installed"
fi
export TESSERA_INTEROP_NODE_PATH="$PWD/$NODE_DIR/node_modules"

# The browser test (tests/api/browser.rs): Debian's Chromium and ChromeDriver,
# Selenium in the same virtualenv. Installed when possible (root with apt);
# otherwise the test is skipped, and this says so. TESSERA_SKIP_BROWSER=1 skips it.
if [ "${TESSERA_SKIP_BROWSER:-}" != 1 ] && ! { command -v chromium && command -v chromedriver; } >/dev/null 2>&1 \
    && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing chromium and chromium-driver (Debian) for the browser test"
    { DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver \
        || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; }; } \
        >/tmp/tessera-apt.log 2>&1 || say "apt-get could not install chromium (see /tmp/tessera-apt.log)"
fi
# The PKCS#11 tests sign through SoftHSM2 (tests/api/hsm.rs); like Chromium,
# installed from Debian's packages when missing.
if ! command -v softhsm2-util >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing softhsm2 (Debian) for the PKCS#11 tests"
    { DEBIAN_FRONTEND=noninteractive apt-get install -y -q softhsm2 \
        || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q softhsm2; }; } \
        >/tmp/tessera-apt-softhsm.log 2>&1 || say "apt-get could not install softhsm2 (see /tmp/tessera-apt-softhsm.log)"
fi
if [ "${TESSERA_SKIP_BROWSER:-}" != 1 ] && command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
    if [ ! -f "$VENV/.browser-installed" ] || [ tests/browser/requirements.txt -nt "$VENV/.browser-installed" ]; then
        "$VENV/bin/pip" install --quiet --disable-pip-version-check -r tests/browser/requirements.txt \
            || die "cannot install tests/browser/requirements.txt from PyPI"
        touch "$VENV/.browser-installed"
    fi
    export TESSERA_BROWSER_PYTHON="$PWD/$VENV/bin/python" TESSERA_BROWSER_TEST=required
    say "browser test: headless $(chromium --version 2>/dev/null | head -1)"
else
    say "browser test SKIPPED: chromium and chromedriver are not available (apt-get install chromium chromium-driver)"
fi

# Doc tests first, so the closing summary is the main suite's.
cargo test --doc --workspace --all-features --quiet
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --all-features --no-fail-fast "$@"
else
    say "cargo-nextest not installed; using cargo test"
    cargo test --workspace --all-features --no-fail-fast "$@"
fi
