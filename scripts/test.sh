#!/usr/bin/env bash
# The whole test suite, set-up included: system packages, .venv, then pytest against real
# servers (the embedded TimescaleDB cluster, Mosquitto, Modbus). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/bootstrap.sh
# The test session starts the embedded cluster (tests/conftest.py, unless
# WATTLINE_TEST_DATABASE_URL names a server) and stops it again if it was not running.

set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
exit "$rc"
