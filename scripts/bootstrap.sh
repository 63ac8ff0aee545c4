#!/usr/bin/env bash
# Everything Wattline needs on a fresh Debian 12/13 machine, idempotently: system
# packages (PostgreSQL + TimescaleDB, Mosquitto, Chromium), then the Python virtual
# environment in .venv with the project installed. A second run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-system.sh

PY=${WATTLINE_PYTHON:-}
if [ -z "$PY" ]; then
  for cand in python3.13 python3.12 python3.11 python3; do
    if command -v "$cand" >/dev/null 2>&1 &&
       "$cand" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
      PY=$(command -v "$cand"); break
    fi
  done
fi
[ -n "$PY" ] || { echo "[bootstrap] error: Python >= 3.11 not found (set WATTLINE_PYTHON)" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  echo "[bootstrap] creating .venv with $PY" >&2
  if ! "$PY" -m venv .venv 2>/dev/null; then
    # Debian's python3 needs python3-venv for ensurepip.
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
    rm -rf .venv
    "$PY" -m venv .venv
  fi
fi

stamp=.venv/.wattline-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[bootstrap] installing Python dependencies into .venv" >&2
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
  echo "$want" > "$stamp"
fi
echo "[bootstrap] ready" >&2
