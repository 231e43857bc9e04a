#!/usr/bin/env bash
# Set everything up, start a throw-away PostgreSQL, then run ruff, mypy and the whole test suite
# against the real Docker engine and real kernel containers. Extra arguments go to pytest.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
cd "$WORKBENCH_ROOT"

start_postgres() {
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
    if [ -z "$PG_BIN" ]; then
        say "installing PostgreSQL"
        apt_install postgresql
        PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
    fi
    id postgres >/dev/null 2>&1 || useradd --system --home /var/lib/postgresql postgres
    PG_DIR=$(mktemp -d /tmp/wb-pg-XXXXXX)
    chown postgres "$PG_DIR"
    local port=55432
    runuser -u postgres -- "$PG_BIN/initdb" -D "$PG_DIR/data" -U workbench --auth=trust >/dev/null
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w \
        -o "-p $port -k $PG_DIR -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
    export WORKBENCH_TEST_PG_URL="postgresql+psycopg://workbench@127.0.0.1:$port/postgres"
    say "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on port $port (throw-away, in $PG_DIR)"
    trap 'runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1; rm -rf "$PG_DIR"' EXIT
}

# The web page's browser test drives Debian's Chromium (no browser download); a CJK font makes the
# screenshots (test-artifacts/page/) show Chinese text.
ensure_chromium() {
    local missing=()
    [ -x /usr/bin/chromium ] || missing+=(chromium)
    dpkg -s fonts-wqy-microhei >/dev/null 2>&1 || missing+=(fonts-wqy-microhei)
    if [ ${#missing[@]} -gt 0 ]; then
        say "installing ${missing[*]}"
        apt_install "${missing[@]}"
    fi
}

ensure_chromium
start_postgres
say "ruff"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
say "mypy"
"$VENV/bin/mypy"
say "pytest"
"$VENV/bin/pytest" "$@"
