#!/usr/bin/env bash
# Set everything up (Docker engine, Python environment, kernel image), then run the server.
# Extra arguments go to `workbench serve` (see `workbench serve --help`).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
exec "$VENV/bin/workbench" serve "$@"
