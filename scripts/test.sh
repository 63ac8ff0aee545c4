#!/usr/bin/env bash
# The whole test suite, set-up included: system packages, .venv, the embedded TimescaleDB
# cluster, then pytest against real servers. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/bootstrap.sh
# A cluster this script starts is stopped again at the end (a CI clone leaves no server).
if ! .venv/bin/wattline db status | grep -q '^running'; then
  trap '.venv/bin/wattline db stop >/dev/null || true' EXIT
fi
.venv/bin/wattline db start

set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
exit "$rc"
