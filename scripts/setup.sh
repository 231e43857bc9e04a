#!/usr/bin/env bash
# Set up everything Workbench needs on a Debian machine, as root, idempotently:
# the Docker engine (installed and started when `docker info` fails), the Python environment in .venv,
# and the kernel image (built offline when missing; a no-op when its inputs are unchanged).
# Sourced by scripts/serve.sh and scripts/test.sh; safe to run on its own.
set -euo pipefail

WORKBENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="${WORKBENCH_VENV:-$WORKBENCH_ROOT/.venv}"

say() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

apt_install() {
    if [ -z "${WORKBENCH_APT_UPDATED:-}" ]; then
        apt-get update -qq
        export WORKBENCH_APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

ensure_packages() {
    local missing=()
    command -v python3 >/dev/null || missing+=(python3)
    python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
    command -v dockerd >/dev/null || missing+=(docker.io)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    if [ ${#missing[@]} -gt 0 ]; then
        say "installing ${missing[*]}"
        apt_install "${missing[@]}"
    fi
}

ensure_docker() {
    if docker info >/dev/null 2>&1; then return; fi
    if ! pgrep -x dockerd >/dev/null; then
        say "starting dockerd (log: /var/log/dockerd.log)"
        setsid dockerd >/var/log/dockerd.log 2>&1 </dev/null &
    fi
    for _ in $(seq 60); do
        docker info >/dev/null 2>&1 && return
        sleep 1
    done
    say "the Docker engine did not start; see /var/log/dockerd.log"
    tail -20 /var/log/dockerd.log >&2 || true
    exit 1
}

ensure_venv() {
    local stamp="$VENV/.workbench-installed" wanted
    wanted=$(cat "$WORKBENCH_ROOT/pyproject.toml" | sha256sum | cut -c1-16)
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating the Python environment in $VENV"
        python3 -m venv "$VENV"
    fi
    if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
        say "installing Workbench and its test tools into $VENV"
        "$VENV/bin/pip" install --quiet --upgrade pip >/dev/null
        "$VENV/bin/pip" install --quiet -e "$WORKBENCH_ROOT[test]"
        echo "$wanted" >"$stamp"
    fi
}

ensure_image() {
    "$VENV/bin/workbench" image build
}

ensure_packages
ensure_docker
ensure_venv
ensure_image
