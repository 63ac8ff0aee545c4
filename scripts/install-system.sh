#!/usr/bin/env bash
# Installs what Wattline needs from the operating system: PostgreSQL with the
# TimescaleDB extension (Apache edition built from Debian's own source package on
# Debian 12, Debian's binary package on Debian 13), Mosquitto for the MQTT tests and
# Chromium for image export. Idempotent: a second run with everything present only
# checks and returns in about a second.
set -euo pipefail

TSDB_VERSION="2.19.3"
TSDB_DEB_VERSION="2.19.3+dfsg-1+deb13u1"
CACHE_DIR="${WATTLINE_BUILD_CACHE:-/var/cache/wattline-build}"

log() { printf '[install-system] %s\n' "$*" >&2; }
die() { printf '[install-system] error: %s\n' "$*" >&2; exit 1; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    die "not root and no sudo: ask an administrator to run $0 once, or use 'docker compose up' (see README)"
  fi
fi

debian_major() {
  [ -r /etc/debian_version ] || { echo ""; return; }
  cut -d. -f1 < /etc/debian_version
}

APT_UPDATED=0
apt_install() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$APT_UPDATED" -eq 0 ]; then
    log "apt-get update"; $SUDO apt-get update -qq; APT_UPDATED=1
  fi
  log "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

pg_major_for() {
  case "$1" in 12) echo 15 ;; 13) echo 17 ;; *) echo "" ;; esac
}

tsdb_present() {  # $1 = pg major
  [ -f "/usr/share/postgresql/$1/extension/timescaledb.control" ] &&
    ls "/usr/lib/postgresql/$1/lib/" 2>/dev/null | grep -q '^timescaledb'
}

build_tsdb_debian12() {
  local src="$CACHE_DIR/src" apt="$CACHE_DIR/apt"
  apt_install postgresql-15 postgresql-server-dev-15 cmake gcc make xz-utils dpkg-dev
  $SUDO mkdir -p "$apt/sources.list.d" "$apt/lists/partial" "$apt/cache/archives/partial" "$src"
  # Mirror host: the one the system already uses.
  local mirror
  mirror=$( { grep -hsE '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list \
               /etc/apt/sources.list || true; } | grep -oE 'https?://[^ ]+/debian/?' | grep -v security | head -n1 || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  echo "deb-src ${mirror%/} trixie main" | $SUDO tee "$apt/sources.list.d/trixie-src.list" >/dev/null
  local opts=(-o Dir::Etc::sourcelist=/dev/null -o "Dir::Etc::sourceparts=$apt/sources.list.d"
              -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o Debug::NoLocking=1)
  if ! ls "$src"/timescaledb_*.dsc >/dev/null 2>&1; then
    log "fetching Debian source package timescaledb $TSDB_DEB_VERSION (isolated apt configuration)"
    $SUDO apt-get "${opts[@]}" update -qq
    (cd "$src" && $SUDO apt-get "${opts[@]}" source --download-only "timescaledb=$TSDB_DEB_VERSION" >/dev/null)
  fi
  local tree="$src/timescaledb-$TSDB_VERSION"
  if [ ! -d "$tree" ]; then
    (cd "$src" && $SUDO dpkg-source --no-check -x timescaledb_*.dsc "timescaledb-$TSDB_VERSION" >/dev/null)
  fi
  log "building TimescaleDB $TSDB_VERSION (Apache edition) against PostgreSQL 15"
  $SUDO cmake -S "$tree" -B "$tree/build" -DCMAKE_BUILD_TYPE=Release \
    -DPG_CONFIG=/usr/lib/postgresql/15/bin/pg_config -DAPACHE_ONLY=ON -DREGRESS_CHECKS=OFF \
    -DTAP_CHECKS=OFF -DSEND_TELEMETRY_DEFAULT=OFF -DUSE_TELEMETRY=OFF -DWARNINGS_AS_ERRORS=OFF >/dev/null
  $SUDO make -C "$tree/build" -j"$(nproc)" >/dev/null
  $SUDO make -C "$tree/build" install >/dev/null
}

install_tsdb_debian13() {
  # Before the server package: otherwise its postinst creates a 17/main cluster on 5432.
  $SUDO mkdir -p /etc/postgresql-common
  if ! grep -qs '^create_main_cluster *= *false' /etc/postgresql-common/createcluster.conf; then
    echo 'create_main_cluster = false' | $SUDO tee -a /etc/postgresql-common/createcluster.conf >/dev/null
  fi
  apt_install postgresql-17 postgresql-17-timescaledb
}

main() {
  local major pg
  major=$(debian_major)
  pg=$(pg_major_for "$major")
  if [ -z "$pg" ]; then
    for v in 17 16 15; do tsdb_present "$v" && { log "TimescaleDB present for PostgreSQL $v"; exit 0; }; done
    die "unsupported system (not Debian 12 or 13). Install PostgreSQL 15-17 with the TimescaleDB extension yourself and set WATTLINE_DATABASE_URL, or run 'docker compose up' (see README)."
  fi
  if tsdb_present "$pg"; then
    log "TimescaleDB already available for PostgreSQL $pg"
  elif [ "$major" = 12 ]; then
    build_tsdb_debian12
  else
    install_tsdb_debian13
  fi
  tsdb_present "$pg" || die "TimescaleDB did not install for PostgreSQL $pg"
  # Servers the tests and the demo use; Chromium for plotly image export.
  apt_install "postgresql-$pg" postgresql-contrib mosquitto chromium
  # Debian starts a system mosquitto on 1883; the project runs its own on free ports.
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet mosquitto 2>/dev/null; then
    $SUDO systemctl disable --now mosquitto >/dev/null 2>&1 || true
  fi
  log "ok: PostgreSQL $pg with TimescaleDB"
}

main "$@"
