"""`wattline run`: the whole stack on the embedded default, for a first look.

Starts (or reuses) the local TimescaleDB cluster, migrates, loads the demo (tariffs,
site, emission factors), backfills history from the simulator's load shapes through the
pipeline, makes sure there is an admin and a Grafana reader, then supervises the other
Wattline processes as child commands — a private MQTT broker for the site's loopback
brokers, device simulator, collectors, job runner, API — and stops them all cleanly on
Ctrl-C. Running it again reuses everything. The core only spawns commands; it never
imports the collectors or jobs packages.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import typer

from app.settings import get_settings

ADMIN = "admin"


@dataclass
class Child:
    name: str
    args: list[str]
    process: subprocess.Popen | None = None
    restarts: list[float] = field(default_factory=list)


def _wattline(*args: str) -> list[str]:
    return [sys.executable, "-m", "app.cli", *args]


def _say(label: str, text: str) -> None:
    typer.echo(f"{label + ':':<11}{text}")


def prepare_database(site_file: Path) -> None:
    """Database up, schema current, the site's configuration loaded (idempotent)."""
    from app import migrate
    from app.db import database_url, redact

    settings = get_settings()
    if not settings.database_url:
        from app.embedded import get_cluster

        cluster = get_cluster(settings)
        cluster.start()
        _say("database", f"embedded cluster {cluster.status()}")
    else:
        _say("database", redact(database_url()))
    migrate.upgrade()
    _say("schema", f"revision {migrate.current_revision()}")
    from app.demo import DEMO_SITE, load_demo

    if site_file.resolve() == DEMO_SITE.resolve():
        for line in load_demo():
            typer.echo(line)
    else:
        from app.site import import_site_file

        _say("site", f"{site_file.name}: {import_site_file(site_file).summary()}")


def _loopback_brokers() -> list[int]:
    """Ports of MQTT data sources on this machine whose broker is not running."""
    from app.db import connect

    with connect() as conn:
        rows = conn.execute(
            "SELECT DISTINCT (connection->>'port')::int FROM config.data_source "
            "WHERE protocol = 'mqtt' AND enabled AND connection->>'host' IN ('127.0.0.1', 'localhost')"
        ).fetchall()
    return [port for (port,) in rows if port and not _listening(port)]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _broker_child(port: int, data_dir: Path) -> Child | None:
    binary = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if binary is None:
        _say("mqtt", f"no mosquitto installed: MQTT sources on port {port} stay idle")
        return None
    conf = data_dir / f"mosquitto-{port}.conf"
    store = data_dir / "mosquitto"
    store.mkdir(parents=True, exist_ok=True)
    user = ["user root"] if os.geteuid() == 0 else []
    conf.write_text("\n".join([
        f"listener {port} 127.0.0.1", "allow_anonymous true", "persistence true",
        "log_type error", "log_type warning",
        f"persistence_location {store}/", *user, "",
    ]))
    return Child(f"mqtt broker :{port}", [binary, "-c", str(conf)])


def backfill(history_days: float, available: set[str]) -> None:
    """Simulated history for the last `history_days`, then the pipeline over what is new."""
    if history_days <= 0 or "backfill-history" not in available:
        return
    from app.db import connect

    with connect() as conn:
        (prior_end,) = conn.execute("SELECT max(ts) FROM raw.point_value").fetchone()
    now = dt.datetime.now(dt.timezone.utc)
    _say("history", f"simulating {history_days:g} days of readings …")
    if subprocess.run(_wattline("backfill-history", "--days", str(history_days))).returncode != 0:
        _say("warning", "history backfill failed; the stack starts without it")
        return
    if "backfill" not in available:
        return
    start = now - dt.timedelta(days=history_days)
    if prior_end is not None and prior_end > start:
        start = prior_end - dt.timedelta(hours=1)   # only what the last run did not see
    _say("pipeline", f"processing {start:%Y-%m-%d %H:%M} → now …")
    done = subprocess.run(_wattline("backfill", "--from", start.isoformat(),
                                    "--to", (now + dt.timedelta(minutes=15)).isoformat(), "--chunk", "7d"))
    if done.returncode != 0:
        _say("warning", "pipeline backfill failed (see above); the job runner retries incrementally")


def ensure_admin(data_dir: Path) -> tuple[str, str]:
    """The first admin: created once, its password kept in a 0600 file for later runs."""
    from app.db import connect

    secret = data_dir / "admin-password"
    try:
        from app.users import create_user
    except ImportError:
        return ADMIN, "(user accounts are not available in this build)"
    with connect() as conn:
        exists = conn.execute("SELECT 1 FROM config.app_user WHERE username = %s", (ADMIN,)).fetchone()
        if not exists:
            _user, password = create_user(conn, ADMIN, "admin", None)
            conn.commit()
            old = os.umask(0o077)
            try:
                secret.write_text(password + "\n")
            finally:
                os.umask(old)
    if secret.exists():
        return ADMIN, secret.read_text().strip()
    return ADMIN, "(created earlier; reset with `wattline user` commands)"


def reader_settings(data_dir: Path) -> dict[str, str]:
    """Login for the read-only Grafana role; the password is kept in a 0600 file."""
    from app.db import connect, database_url
    from app.grafana import grafana_env, set_reader_password

    secret = data_dir / "grafana-reader-password"
    password = secret.read_text().strip() if secret.exists() else None
    with connect() as conn:
        password = set_reader_password(conn, password)
        conn.commit()
    old = os.umask(0o077)
    try:
        secret.write_text(password + "\n")
    finally:
        os.umask(old)
    return grafana_env(database_url(), password)


def run_stack(site_file: Path, available: set[str] | None = None, api_port: int = 8000,
              history_days: float = 90) -> None:
    settings = get_settings()
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    available = available or set()
    prepare_database(site_file)

    children: list[Child] = []
    for port in _loopback_brokers():
        broker = _broker_child(port, data_dir)
        if broker:
            children.append(broker)
    wanted = [("simulator", "simulate", _wattline("simulate")),
              ("collectors", "collect", _wattline("collect")),
              ("jobs", "jobs", _wattline("jobs")),
              ("api", "api", _wattline("api", "--host", "127.0.0.1", "--port", str(api_port)))]
    children += [Child(name, args) for name, command, args in wanted if command in available]
    missing = [name for name, command, _ in wanted if command not in available]
    if missing:
        _say("note", f"not available in this build: {', '.join(missing)}")

    stopping = False

    def _stop(signum, _frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        backfill(history_days, available)
        admin = ensure_admin(data_dir)
        grafana = reader_settings(data_dir)
        for child in children:
            _start(child)
            if child.name.startswith("mqtt broker"):
                time.sleep(0.3)
        _print_where(api_port, any(c.name == "api" for c in children), admin, grafana)
        if not children:
            return
        typer.echo("running; press Ctrl-C to stop")
        while not stopping:
            for child in children:
                if child.process and child.process.poll() is not None and not stopping:
                    _restart(child)
            time.sleep(0.5)
    finally:
        _shutdown(children)


def _start(child: Child) -> None:
    child.process = subprocess.Popen(child.args, start_new_session=True)
    _say("started", f"{child.name} (pid {child.process.pid})")


def _restart(child: Child) -> None:
    """Restart a child that died, backing off when it keeps dying."""
    now = time.monotonic()
    child.restarts = [t for t in child.restarts if now - t < 60] + [now]
    _say("exited", f"{child.name} with code {child.process.returncode}; restarting")
    time.sleep(min(30, 2 ** (len(child.restarts) - 1)))
    _start(child)


def _shutdown(children: list[Child]) -> None:
    for child in reversed(children):
        if child.process and child.process.poll() is None:
            os.killpg(child.process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    for child in reversed(children):
        if child.process is None:
            continue
        try:
            child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(child.process.pid, signal.SIGKILL)
            child.process.wait()
        _say("stopped", child.name)


def _print_where(api_port: int, api: bool, admin: tuple[str, str], grafana: dict[str, str]) -> None:
    from app.db import database_url, redact

    typer.echo("")
    if api:
        typer.echo(f"  API docs:   http://127.0.0.1:{api_port}/api/docs")
        typer.echo(f"  API login:  POST http://127.0.0.1:{api_port}/api/v1/auth/login")
    typer.echo(f"  admin:      {admin[0]} / {admin[1]}")
    typer.echo(f"  database:   {redact(database_url())}  (`wattline db url --show-password`)")
    typer.echo("  Grafana:    provision grafana/provisioning with these settings (see grafana/README.md):")
    for name, value in grafana.items():
        typer.echo(f"                {name}={value}")
    typer.echo("")
