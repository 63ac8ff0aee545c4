#!/usr/bin/env bash
# Wattline on its embedded default: installs what is missing, provisions and starts the
# local TimescaleDB cluster, migrates, loads the demo site and runs the stack until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/bootstrap.sh
exec .venv/bin/wattline run "$@"
