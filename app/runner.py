"""`wattline run`: the whole stack on the embedded default, for a first look.

Starts (or reuses) the local TimescaleDB cluster, migrates, imports the demo site, then
supervises the other Wattline processes as child commands — device simulator,
collectors, job runner, API — and stops them all cleanly on Ctrl-C. The core only
spawns commands; it never imports the collectors or jobs packages.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import typer

from app.settings import get_settings


@dataclass
class Child:
    name: str
    args: list[str]
    process: subprocess.Popen | None = None


def _wattline(*args: str) -> list[str]:
    return [sys.executable, "-m", "app.cli", *args]


def prepare_database(site_file: Path) -> None:
    """Database up, schema current, site configuration loaded (idempotent)."""
    from app import migrate
    from app.db import database_url, redact
    from app.site import import_site_file

    settings = get_settings()
    if not settings.database_url:
        from app.embedded import get_cluster

        cluster = get_cluster(settings)
        cluster.start()
        typer.echo(f"database: embedded cluster {cluster.status()}")
    else:
        typer.echo(f"database: {redact(database_url())}")
    migrate.upgrade()
    typer.echo(f"schema:   revision {migrate.current_revision()}")
    report = import_site_file(site_file)
    typer.echo(f"site:     {site_file.name}: {report.summary()}")


def run_stack(site_file: Path, available: set[str] | None = None, api_port: int = 8000,
              history_days: int = 90) -> None:
    prepare_database(site_file)
    available = available or set()
    children = [
        Child("simulator", _wattline("simulate")),
        Child("collectors", _wattline("collect")),
        Child("jobs", _wattline("jobs")),
        Child("api", _wattline("api", "--host", "127.0.0.1", "--port", str(api_port))),
    ]
    command_of = {"simulator": "simulate", "collectors": "collect", "jobs": "jobs", "api": "api"}
    runnable = [c for c in children if command_of[c.name] in available]
    missing = [c.name for c in children if c not in runnable]
    if "backfill-history" in available and history_days > 0:
        typer.echo(f"history:  backfilling {history_days} days of demo readings …")
        subprocess.run(_wattline("backfill-history", "--days", str(history_days)), check=False)
    if missing:
        typer.echo(f"not started (not available in this build): {', '.join(missing)}")

    stopping = False

    def _stop(signum, _frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    for child in runnable:
        child.process = subprocess.Popen(child.args, start_new_session=True)
        typer.echo(f"started:  {child.name} (pid {child.process.pid})")
    _print_where(api_port, "api" in command_of and any(c.name == "api" for c in runnable))
    if not runnable:
        return
    typer.echo("running; press Ctrl-C to stop")
    try:
        while not stopping:
            for child in runnable:
                if child.process and child.process.poll() is not None:
                    typer.echo(f"{child.name} exited with {child.process.returncode}; restarting")
                    time.sleep(1)
                    child.process = subprocess.Popen(child.args, start_new_session=True)
            time.sleep(0.5)
    finally:
        _shutdown(runnable)


def _shutdown(children: list[Child]) -> None:
    for child in children:
        if child.process and child.process.poll() is None:
            os.killpg(child.process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    for child in children:
        if child.process is None:
            continue
        try:
            child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(child.process.pid, signal.SIGKILL)
        typer.echo(f"stopped:  {child.name}")


def _print_where(api_port: int, api: bool) -> None:
    from app.db import database_url, redact

    typer.echo("")
    typer.echo(f"  SQL (Grafana data source, analysts): {redact(database_url())}")
    typer.echo("      full URL with password: `wattline db url --show-password`")
    if api:
        typer.echo(f"  API docs: http://127.0.0.1:{api_port}/api/docs")
    typer.echo("")
