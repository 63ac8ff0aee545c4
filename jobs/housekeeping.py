"""Pruning what the pipeline leaves behind: consumed dirty-log entries and old run history.

Runs hourly beside the stages in `wattline jobs`, and on demand as `wattline jobs prune`.
The rule is in ops.prune (sql/ops.sql); the caller names the stages that consume the log.
"""

from __future__ import annotations

import datetime as dt
import logging

import psycopg

log = logging.getLogger("wattline.jobs")

INTERVAL_S = 3600.0


def prune(conn: psycopg.Connection, stages: list[str], *, dirty_keep_hours: int | None = None,
          runs_keep_days: int | None = None) -> tuple[int, int]:
    """Delete dirty-log entries all `stages` consumed, and old runs; returns (entries, runs) deleted.

    Retention defaults to the settings (WATTLINE_DIRTY_LOG_RETENTION_HOURS,
    WATTLINE_JOB_RUN_RETENTION_DAYS). Runs in the caller's transaction (autocommit: its own)."""
    from app.settings import get_settings

    settings = get_settings()
    dirty_keep = dt.timedelta(
        hours=settings.dirty_log_retention_hours if dirty_keep_hours is None else dirty_keep_hours)
    runs_keep = dt.timedelta(days=settings.job_run_retention_days if runs_keep_days is None else runs_keep_days)
    (entries, runs) = conn.execute(
        "SELECT * FROM ops.prune(%s, %s, %s)", (stages, dirty_keep, runs_keep)
    ).fetchone()
    log.info("housekeeping: %d dirty-log entries and %d job runs pruned", entries, runs)
    return int(entries), int(runs)
