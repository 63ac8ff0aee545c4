"""`wattline collect` and `wattline simulate`, added to the core CLI through the
`wattline.commands` entry point (the core never imports collectors)."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import typer


def _run_until_signal(main) -> None:
    """Run `main(stop)` in a fresh event loop; SIGTERM/SIGINT set `stop`."""

    async def runner():
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    asyncio.run(runner())


def register(app: typer.Typer) -> None:
    @app.command("collect")
    def collect(
        metrics_port: int = typer.Option(None, "--metrics-port", help="Serve counters on 127.0.0.1:PORT (off by default)."),
        sync: bool = typer.Option(False, "--sync", help="fsync every reading to the spool before accepting it."),
        batch_size: int = typer.Option(5000, "--batch-size", min=1, help="Rows per database write."),
        max_age: float = typer.Option(1.0, "--max-age", min=0.01, help="Seconds a reading may wait in memory."),
        spool_dir: Path = typer.Option(None, "--spool-dir", help="Default: <data dir>/spool/collect."),
        config_poll: float = typer.Option(5.0, "--config-poll", min=0.1, help="Seconds between configuration checks."),
        stats_interval: float = typer.Option(60.0, "--stats-interval", min=1, help="Seconds between counter log lines."),
    ) -> None:
        """Collect every enabled Modbus TCP and MQTT data source until SIGTERM/SIGINT."""
        from collectors.service import CollectorService

        service = CollectorService(
            spool_dir=spool_dir, sync=sync, batch_size=batch_size, max_age_s=max_age,
            config_poll_s=config_poll, stats_interval_s=stats_interval, metrics_port=metrics_port,
        )
        from collectors.spool import SpoolBusyError

        try:
            _run_until_signal(service.run)
        except SpoolBusyError as exc:
            typer.secho(f"{exc}: is another `wattline collect` running?", fg=typer.colors.RED, err=True)
            raise typer.Exit(1) from None

    @app.command("simulate")
    def simulate(
        no_mqtt: bool = typer.Option(False, "--no-mqtt", help="Serve Modbus devices only."),
        timezone: str = typer.Option(None, "--timezone", help="Local time of the load shapes (default: reporting zone)."),
    ) -> None:
        """Serve simulated devices for every configured Modbus data source (and publish
        MQTT sources when their broker is reachable) until SIGTERM/SIGINT."""
        import psycopg

        from app.db import database_url
        from app.settings import get_settings
        from collectors.config import load_sources
        from collectors.simulator import run_simulator

        with psycopg.connect(database_url()) as conn:
            sources = load_sources(conn)
        if not any(s.protocol in ("modbus-tcp", "mqtt") for s in sources):
            typer.secho("no enabled Modbus or MQTT data sources in the configuration", fg=typer.colors.RED, err=True)
            raise typer.Exit(1)
        tz = timezone or get_settings().reporting_timezone
        logging.getLogger("wattline.simulator").info("event=simulate_start sources=%d timezone=%s", len(sources), tz)
        _run_until_signal(lambda stop: run_simulator(sources, stop, tz=tz, mqtt=not no_mqtt))

    @app.command("backfill-history")
    def backfill_history_command(
        days: float = typer.Option(90, "--days", min=0, help="How far back from now."),
        step_minutes: float = typer.Option(5, "--step", min=0.1, help="Minutes between readings."),
        timezone: str = typer.Option(None, "--timezone", help="Local time of the load shapes (default: reporting zone)."),
    ) -> None:
        """Write the readings the simulated devices would have produced over the past
        DAYS (idempotent), so a fresh demo has history to show."""
        import datetime as dt

        from app.db import database_url
        from app.settings import get_settings
        from collectors.simulator import backfill_history

        tz = timezone or get_settings().reporting_timezone
        written = backfill_history(database_url(), days, dt.timedelta(minutes=step_minutes), tz)
        typer.echo(f"backfill: {written} readings written")

