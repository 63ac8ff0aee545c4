"""`wattline jobs` (the scheduler), `wattline jobs run STAGE` and `wattline backfill`.

Registered through the wattline.commands entry point, so the core CLI never imports jobs.
Times are ISO 8601; a time without an offset is read in the reporting time zone.
"""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

import typer

jobs_app = typer.Typer(help="The processing pipeline: scheduler and single runs.")

_DURATION = re.compile(r"^(\d+)\s*([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def _fail(message: str, code: int = 2) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def parse_time(text: str, option: str) -> dt.datetime:
    """ISO 8601 instant; naive times are in the reporting time zone."""
    from app.settings import get_settings

    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        _fail(f"{option}: {text!r} is not an ISO 8601 time (e.g. 2026-01-31 or 2026-01-31T06:00+01:00)")
    if value.tzinfo is None:
        value = value.replace(tzinfo=ZoneInfo(get_settings().reporting_timezone))
    return value.astimezone(dt.timezone.utc)


def parse_duration(text: str, option: str) -> dt.timedelta:
    match = _DURATION.match(text.strip())
    if not match or int(match.group(1)) == 0:
        _fail(f"{option}: {text!r} is not a positive duration like 30s, 15m, 6h or 1d")
    return dt.timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def _range(from_: str | None, to: str | None) -> tuple[dt.datetime | None, dt.datetime | None]:
    if (from_ is None) != (to is None):
        _fail("give both --from and --to, or neither (incremental run)")
    if from_ is None:
        return None, None
    start, end = parse_time(from_, "--from"), parse_time(to, "--to")
    if start >= end:
        _fail(f"--from ({start}) must be before --to ({end})")
    return start, end


@jobs_app.callback(invoke_without_command=True)
def jobs_main(
    ctx: typer.Context,
    interval: float = typer.Option(
        60.0, "--interval", envvar="WATTLINE_JOBS_INTERVAL", min=1.0,
        help="Seconds between pipeline cycles.",
    ),
) -> None:
    """Run the pipeline on a schedule until SIGTERM/Ctrl-C."""
    if ctx.invoked_subcommand is not None:
        return
    from jobs.runner import serve

    serve(interval)


@jobs_app.command("run")
def jobs_run(
    stage: str = typer.Argument(..., help="Stage name, e.g. clean, normalize, rollups; 'all' for the pipeline."),
    from_: str | None = typer.Option(None, "--from", help="Start of the range to recompute."),
    to: str | None = typer.Option(None, "--to", help="End of the range (exclusive)."),
) -> None:
    """Run one stage (or all) once: incrementally, or over [--from, --to)."""
    import psycopg

    from app.db import database_url
    from jobs.runner import PIPELINE, UnknownStage, load_pipeline, load_stage, run_pipeline

    start, end = _range(from_, to)
    try:
        stages = load_pipeline() if stage == "all" else [load_stage(stage)]
    except UnknownStage as exc:
        _fail(f"{exc}; stages: {', '.join(PIPELINE)}")
    try:
        with psycopg.connect(database_url(), autocommit=True) as conn:
            results = run_pipeline(conn, start, end, stages=stages)
    except psycopg.OperationalError as exc:
        _fail(f"cannot reach the database: {exc}", code=1)
    for r in results:
        line = f"{r.stage}: {r.status}, {r.rows} rows, {r.seconds:.2f} s (job_run {r.job_run_id})"
        typer.echo(line + (f": {r.error}" if r.error else ""))
    if any(r.status == "error" for r in results):
        raise typer.Exit(1)


@jobs_app.command("prune")
def jobs_prune(
    dirty_hours: int | None = typer.Option(
        None, "--dirty-hours", min=0,
        help="Keep consumed dirty-log entries this many hours (default: WATTLINE_DIRTY_LOG_RETENTION_HOURS).",
    ),
    run_days: int | None = typer.Option(
        None, "--run-days", min=1,
        help="Keep job runs this many days (default: WATTLINE_JOB_RUN_RETENTION_DAYS).",
    ),
) -> None:
    """Prune consumed dirty-log entries and old job runs now (`wattline jobs` does it hourly)."""
    import psycopg

    from app.db import database_url
    from jobs.housekeeping import prune
    from jobs.runner import load_pipeline

    try:
        with psycopg.connect(database_url(), autocommit=True) as conn:
            entries, runs = prune(conn, [s.NAME for s in load_pipeline()],
                                  dirty_keep_hours=dirty_hours, runs_keep_days=run_days)
    except psycopg.OperationalError as exc:
        _fail(f"cannot reach the database: {exc}", code=1)
    typer.echo(f"pruned {entries} dirty-log entries and {runs} job runs")


def backfill_command(
    from_: str = typer.Option(..., "--from", help="Start of the range."),
    to: str = typer.Option(..., "--to", help="End of the range (exclusive)."),
    chunk: str = typer.Option("1d", "--chunk", help="Chunk size: 6h, 1d, 7d…"),
    workers: int = typer.Option(
        0, "--workers", min=0,
        help="Connections for the stages that split their work (clean, normalize, rollups); 0: one per core.",
    ),
) -> None:
    """Recompute a time range through the whole pipeline, chunk by chunk, with progress."""
    import psycopg
    from tqdm import tqdm

    from app.db import database_url
    from jobs.runner import backfill, chunks, load_pipeline, stage_chunk

    start, end = _range(from_, to)
    size = parse_duration(chunk, "--chunk")
    stages = load_pipeline()
    total = sum(len(list(chunks(start, end, stage_chunk(s, size)))) for s in stages)
    try:
        with psycopg.connect(database_url(), autocommit=True) as conn, tqdm(
            total=total, unit="chunk", desc="backfill"
        ) as bar:
            def step(stage: str, lo: dt.datetime, hi: dt.datetime) -> None:
                bar.set_postfix_str(f"{stage} {lo:%Y-%m-%d %H:%M}")
                bar.update(1)

            totals = backfill(conn, start, end, chunk=size, stages=stages, progress=step, workers=workers or None)
    except psycopg.OperationalError as exc:
        _fail(f"cannot reach the database: {exc}", code=1)
    except RuntimeError as exc:
        _fail(str(exc), code=1)
    for name, r in totals.items():
        typer.echo(f"{name}: {r.rows} rows, {r.seconds:.2f} s")


def register(app: typer.Typer) -> None:
    app.add_typer(jobs_app, name="jobs")
    app.command("backfill")(backfill_command)
