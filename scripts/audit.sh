#!/usr/bin/env bash
# Checks Cargo.lock against the RustSec advisory database (cargo audit).
#
# Not part of .ci/run: the advisory database is fetched from GitHub, which
# the CI machines cannot reach. Run it where GitHub is reachable (a
# developer machine, a scheduled job) and before every release:
#   scripts/audit.sh            # exits non-zero on a vulnerability
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo audit --version >/dev/null 2>&1; then
    echo "audit.sh: installing cargo-audit (once)" >&2
    cargo install cargo-audit --locked --quiet
fi
# Vulnerabilities fail; warnings (unmaintained or yanked crates) are printed.
exec cargo audit "$@"
