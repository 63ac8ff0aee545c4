"""The embedded default database: a private TimescaleDB cluster in the project's data dir.

Used whenever WATTLINE_DATABASE_URL is not set. Loopback TCP only, no Unix socket, and
scram-sha-256 for every connection with a generated secret kept in a 0600 file: no
`trust` line, so another local user cannot walk in. As root the server runs as the
`postgres` system user (initdb refuses root); as an ordinary user it runs as that user.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import secrets
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from app.settings import Settings, get_settings

SUPERUSER = "wattline"
DATABASE = "wattline"
FIRST_PORT = 55432
FALLBACK_ROOT = Path("/var/lib/wattline")  # as root, for data dirs `postgres` cannot reach


class EmbeddedError(RuntimeError):
    """The embedded cluster cannot be provisioned or started; the message says why."""


def _pg_bindirs() -> list[Path]:
    root = Path("/usr/lib/postgresql")
    if not root.is_dir():
        return []
    versions = sorted((p for p in root.iterdir() if p.name.isdigit()), key=lambda p: -int(p.name))
    return [p / "bin" for p in versions if (p / "bin" / "initdb").exists()]


def find_pg_bindir() -> Path:
    """Newest PostgreSQL whose share dir holds the TimescaleDB extension."""
    for bindir in _pg_bindirs():
        major = bindir.parent.name
        if Path(f"/usr/share/postgresql/{major}/extension/timescaledb.control").exists():
            return bindir
    raise EmbeddedError(
        "no PostgreSQL with the TimescaleDB extension found; run `wattline db install` "
        "(or scripts/install-system.sh), or set WATTLINE_DATABASE_URL to an existing server"
    )


@dataclass
class Cluster:
    """Paths and identity of the embedded cluster."""

    settings: Settings

    @property
    def base(self) -> Path:
        """Data dir for the cluster; as root, falls back to /var/lib when `postgres` cannot reach it.

        The fallback directory is drawn once, at init, and recorded in the data dir
        (`pg-home`): a data dir re-created at the same path (a wiped install, a reused
        temporary path) gets a cluster of its own instead of meeting a stranger's.
        """
        if not self._falls_back():
            return self.settings.data_dir.resolve()
        try:
            return Path(self.home_file.read_text().strip())
        except FileNotFoundError:
            return FALLBACK_ROOT / "uninitialised"  # drawn by init(); nothing lives here

    @property
    def home_file(self) -> Path:
        return self.settings.data_dir.resolve() / "pg-home"

    def _falls_back(self) -> bool:
        return os.geteuid() == 0 and not _reachable_by_postgres(self.settings.data_dir.resolve())

    def _draw_fallback_home(self) -> None:
        """Record a fresh directory under FALLBACK_ROOT for this data dir's cluster."""
        if not self._falls_back() or self.home_file.exists():
            return
        digest = hashlib.sha256(str(self.settings.data_dir.resolve()).encode()).hexdigest()[:10]
        self.home_file.write_text(f"{FALLBACK_ROOT / f'{digest}-{secrets.token_hex(4)}'}\n")

    @property
    def pgdata(self) -> Path:
        return self.base / "pg"

    @property
    def secret_file(self) -> Path:
        return self.settings.data_dir.resolve() / "pg-secret"

    @property
    def port_file(self) -> Path:
        return self.settings.data_dir.resolve() / "pg-port"

    @property
    def log_file(self) -> Path:
        return self.base / "pg.log"

    # -- identity -------------------------------------------------------------------
    def run_as(self) -> str | None:
        """System user that owns and runs the server: `postgres` when we are root."""
        return "postgres" if os.geteuid() == 0 else None

    def password(self) -> str:
        try:
            return self.secret_file.read_text().strip()
        except FileNotFoundError:
            raise EmbeddedError(
                f"embedded cluster not initialised ({self.secret_file} missing); run `wattline db start`"
            ) from None

    def port(self) -> int:
        if self.settings.embedded_port:
            return self.settings.embedded_port
        try:
            return int(self.port_file.read_text().strip())
        except FileNotFoundError:
            raise EmbeddedError("embedded cluster not initialised; run `wattline db start`") from None

    def url(self, database: str = DATABASE, driver: str = "postgresql") -> str:
        return (
            f"{driver}://{SUPERUSER}:{quote(self.password(), safe='')}"
            f"@127.0.0.1:{self.port()}/{database}"
        )

    # -- state ----------------------------------------------------------------------
    def initialised(self) -> bool:
        return (self.pgdata / "PG_VERSION").exists() and self.secret_file.exists()

    def running(self) -> bool:
        if not self.initialised():
            return False
        res = self._pg_ctl("status", check=False)
        return res.returncode == 0

    def status(self) -> str:
        if not self.initialised():
            return f"not initialised (data dir {self.settings.data_dir.resolve()})"
        state = "running" if self.running() else "stopped"
        return f"{state}: {self.pgdata} on 127.0.0.1:{self.port()}"

    # -- actions --------------------------------------------------------------------
    def init(self) -> None:
        """initdb with scram-sha-256, a generated superuser secret and ingest-sized settings."""
        bindir = find_pg_bindir()
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        self._draw_fallback_home()
        self.base.mkdir(parents=True, exist_ok=True)
        if (self.pgdata / "PG_VERSION").exists():
            raise EmbeddedError(
                f"{self.pgdata} holds a cluster but its secret ({self.secret_file}) is missing; "
                "restore the secret, or move the directory away to start afresh"
            )
        if self.pgdata.exists() and any(self.pgdata.iterdir()):
            raise EmbeddedError(f"{self.pgdata} exists but holds no cluster; move it away first")
        if not self.secret_file.exists():
            old = os.umask(0o077)
            try:
                self.secret_file.write_text(secrets.token_urlsafe(32) + "\n")
            finally:
                os.umask(old)
        os.chmod(self.secret_file, 0o600)
        if not self.port_file.exists():
            self.port_file.write_text(f"{self.settings.embedded_port or _free_port(FIRST_PORT)}\n")
        self.pgdata.mkdir(parents=True, exist_ok=True)
        owner = self.run_as()
        if owner:
            ids = pwd.getpwnam(owner)
            os.chown(self.pgdata, ids.pw_uid, ids.pw_gid)
        os.chmod(self.pgdata, 0o700)
        # initdb reads the password from a file the server user can read; remove it after.
        with tempfile.NamedTemporaryFile("w", delete=False, dir=self.base, prefix=".pw") as tmp:
            tmp.write(self.password() + "\n")
        try:
            if owner:
                ids = pwd.getpwnam(owner)
                os.chown(tmp.name, ids.pw_uid, ids.pw_gid)
            os.chmod(tmp.name, 0o600)
            self._run(
                [str(bindir / "initdb"), "-D", str(self.pgdata), "-U", SUPERUSER,
                 "--auth=scram-sha-256", f"--pwfile={tmp.name}", "--encoding=UTF8",
                 "--locale=C.UTF-8"],
            )
        finally:
            os.unlink(tmp.name)
        self._write_config()

    def _write_config(self) -> None:
        mem_gib = _total_memory_gib()
        shared = max(128, min(4096, int(mem_gib * 1024 / 8)))
        conf = f"""
# --- Wattline embedded cluster (written by wattline db start) ---
listen_addresses = '127.0.0.1'
port = {self.port()}
unix_socket_directories = ''
password_encryption = 'scram-sha-256'
shared_preload_libraries = 'timescaledb'
timescaledb.telemetry_level = off
max_connections = 200
shared_buffers = {shared}MB
effective_cache_size = {max(256, int(mem_gib * 1024 / 2))}MB
work_mem = 32MB
maintenance_work_mem = 512MB
# time-series ingest: fewer, larger checkpoints and compressed WAL
max_wal_size = 4GB
min_wal_size = 512MB
checkpoint_timeout = 15min
checkpoint_completion_target = 0.9
wal_compression = on
wal_buffers = 16MB
max_worker_processes = 16
max_parallel_workers = 2
timescaledb.max_background_workers = 8
jit = off
random_page_cost = 1.1
logging_collector = off
log_min_duration_statement = 5000
"""
        hba = (
            "# Wattline: loopback TCP only, password (scram-sha-256) for everyone.\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
            "host all all ::1/128 scram-sha-256\n"
        )
        self._write_owned(self.pgdata / "wattline.conf", conf)
        self._write_owned(self.pgdata / "pg_hba.conf", hba)
        main_conf = self.pgdata / "postgresql.conf"
        text = main_conf.read_text()
        if "include_if_exists = 'wattline.conf'" not in text:
            self._write_owned(main_conf, text + "\ninclude_if_exists = 'wattline.conf'\n")

    def _write_owned(self, path: Path, text: str) -> None:
        path.write_text(text)
        owner = self.run_as()
        if owner:
            ids = pwd.getpwnam(owner)
            os.chown(path, ids.pw_uid, ids.pw_gid)

    def start(self) -> None:
        """Initialise on first use, start if stopped, create the database; idempotent."""
        if not self.initialised():
            self.init()
        if not self.running():
            port = self.port()
            if not _port_free(port):
                raise EmbeddedError(
                    f"port {port} on 127.0.0.1 is taken by another program; set WATTLINE_EMBEDDED_PORT"
                )
            self._write_config()  # a port change in settings takes effect at start
            log = self.log_file
            if self.run_as() and not log.exists():
                self._write_owned(log, "")
            res = self._pg_ctl("start", "-w", "-t", "60", "-l", str(log), check=False)
            if res.returncode != 0:
                tail = log.read_text()[-2000:] if log.exists() else ""
                raise EmbeddedError(f"PostgreSQL did not start:\n{res.stdout}{res.stderr}\n{tail}")
        self._ensure_database()

    def stop(self) -> None:
        if self.running():
            self._pg_ctl("stop", "-m", "fast", "-w", "-t", "60")

    def _ensure_database(self) -> None:
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(self.url("postgres"), autocommit=True, connect_timeout=5) as conn:
                    exists = conn.execute(
                        "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)
                    ).fetchone()
                    if not exists:
                        conn.execute(f'CREATE DATABASE "{DATABASE}"')
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise

    # -- process helpers ------------------------------------------------------------
    def _pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self._run([str(find_pg_bindir() / "pg_ctl"), "-D", str(self.pgdata), *args], check=check)

    def _run(self, cmd: list[str], check: bool = True) -> subprocess.CompletedProcess:
        owner = self.run_as()
        if owner:
            cmd = ["runuser", "-u", owner, "--", *cmd]
        res = subprocess.run(cmd, capture_output=True, text=True, cwd="/")
        if check and res.returncode != 0:
            raise EmbeddedError(f"{' '.join(cmd)} failed:\n{res.stdout}{res.stderr}")
        return res


def _reachable_by_postgres(path: Path) -> bool:
    """True if the `postgres` user can traverse every directory down to `path`."""
    try:
        ids = pwd.getpwnam("postgres")
    except KeyError:
        raise EmbeddedError("running as root but there is no `postgres` system user") from None
    probe = path
    while not probe.exists():
        probe = probe.parent
    for parent in [probe, *probe.parents]:
        st = parent.stat()
        if st.st_uid == ids.pw_uid:
            continue
        if not st.st_mode & 0o001:
            return False
    return True


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port(start: int) -> int:
    for port in range(start, start + 200):
        if _port_free(port):
            return port
    raise EmbeddedError(f"no free TCP port in {start}..{start + 199}")


def _total_memory_gib() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        return 4.0


def get_cluster(settings: Settings | None = None) -> Cluster:
    return Cluster(settings or get_settings())
