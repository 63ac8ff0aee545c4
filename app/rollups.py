"""Choosing and maintaining the rollups: which object serves a granularity, the zone
they were built in, refreshing per-meter rollups on either materialisation, and
rebuilding everything when the reporting zone changes.

Lives in the core because reports choose rollups and the CLI rebuilds them; the
pipeline (jobs.rollups) calls the same refresh so there is one code path.
"""

from __future__ import annotations

import datetime as dt
from typing import Sequence

import psycopg
from psycopg.pq import TransactionStatus

from app.db import sql_file_parts
from app.settings import get_settings

GRANULARITIES = ("15min", "hour", "day", "week", "month", "year")
METER_ROLLUPS = {"hour": "energy.meter_hourly", "day": "energy.meter_daily", "month": "energy.meter_monthly"}
# Where each granularity is read from, and the coarser rollup it aggregates when it has none.
METER_SOURCE = {
    "15min": "energy.meter_interval",
    "hour": "energy.meter_hourly",
    "day": "energy.meter_daily",
    "week": "energy.meter_daily",
    "month": "energy.meter_monthly",
    "year": "energy.meter_monthly",
}
ENTITY_SOURCE = {
    "15min": "energy.meter_interval",
    "hour": "energy.meter_hourly",
    "day": "energy.entity_daily",
    "week": "energy.entity_daily",
    "month": "energy.entity_monthly",
    "year": "energy.entity_monthly",
}
# Files holding views over the rollups; rerun after the rollups are rebuilt.
DEPENDENT_SQL = ("completeness.sql", "api_energy.sql")


class RollupZoneError(RuntimeError):
    """The rollups were built in another reporting zone than the settings name."""


def rollup_for(granularity: str, entity: bool = False) -> str:
    """The table or view a report reads for this granularity."""
    table = ENTITY_SOURCE if entity else METER_SOURCE
    try:
        return table[granularity]
    except KeyError:
        raise ValueError(
            f"unknown granularity {granularity!r}: use one of {', '.join(GRANULARITIES)}"
        ) from None


def built_zone(conn: psycopg.Connection) -> str:
    """The reporting zone the rollups are materialised in (energy.rollup_setting)."""
    row = conn.execute("SELECT reporting_timezone FROM energy.rollup_setting").fetchone()
    if row is None:
        raise RollupZoneError("rollups are not built: run the migrations (`wattline db upgrade`)")
    return row[0]


def materialisation(conn: psycopg.Connection) -> str:
    """'cagg' (continuous aggregates) or 'table'."""
    return conn.execute("SELECT materialisation FROM energy.rollup_setting").fetchone()[0]


def check_zone(conn: psycopg.Connection) -> str:
    """The built zone, after making sure the settings still name it."""
    have = built_zone(conn)
    want = get_settings().reporting_timezone
    if have != want:
        raise RollupZoneError(
            f"WATTLINE_REPORTING_TIMEZONE is {want!r} but the rollups are built in {have!r}: "
            "run `wattline db rebuild-rollups` to rebuild them in the new zone"
        )
    return have


def widen(conn: psycopg.Connection, granularity: str, start: dt.datetime | None,
          end: dt.datetime | None) -> tuple[dt.datetime | None, dt.datetime | None]:
    """[start, end) widened outward to whole buckets of the granularity (None: open)."""
    row = conn.execute(
        "SELECT energy.bucket_start(%(g)s, %(s)s, reporting_timezone, hour_origin), "
        "       energy.bucket_ceil(%(g)s, %(e)s, reporting_timezone, hour_origin) "
        "FROM energy.rollup_setting",
        {"g": granularity, "s": start, "e": end},
    ).fetchone()
    return row[0], row[1]


def refresh_meter_rollups(conn: psycopg.Connection, start: dt.datetime | None, end: dt.datetime | None,
                          meter_ids: Sequence[int] | None = None) -> int:
    """Recompute hourly, daily and monthly per-meter rollups over [start, end) widened to
    whole buckets (None: that side unbounded). Returns rows written (table path) or 0.

    Table path: in the caller's transaction, only the given meters. Continuous
    aggregates: refresh_continuous_aggregate, which cannot run in a transaction, on the
    connection itself when it is idle in autocommit, else on a second connection (it then
    sees committed intervals only, and refreshes every meter in the window).
    """
    kind = materialisation(conn)
    ids = list(meter_ids) if meter_ids is not None else None
    total = 0
    for granularity in ("hour", "day", "month"):  # monthly reads daily: keep this order
        lo, hi = widen(conn, granularity, start, end)
        if lo is not None and hi is not None and lo >= hi:
            continue
        if kind == "table":
            total += conn.execute(
                "SELECT energy.refresh_meter_rollup(%s, coalesce(%s, '-infinity'::timestamptz), "
                "coalesce(%s, 'infinity'::timestamptz), %s)",
                (granularity, lo, hi, ids),
            ).fetchone()[0]
        else:
            _refresh_cagg(conn, METER_ROLLUPS[granularity], lo, hi)
    return total


def _refresh_cagg(conn: psycopg.Connection, name: str, lo: dt.datetime | None, hi: dt.datetime | None) -> None:
    call = "CALL refresh_continuous_aggregate(%s, %s, %s)"
    if conn.autocommit and conn.info.transaction_status == TransactionStatus.IDLE:
        conn.execute(call, (name, lo, hi))
        return
    with psycopg.connect(conn.info.dsn, password=conn.info.password, autocommit=True) as side:
        side.execute(call, (name, lo, hi))


def refresh_entity_rollups(conn: psycopg.Connection, start: dt.datetime | None, end: dt.datetime | None,
                           meter_ids: Sequence[int] | None = None) -> int:
    """Entity daily/monthly rollups over [start, end) widened to whole days and months,
    for the entities holding the given meters (None: all entities)."""
    return conn.execute(
        "SELECT energy.refresh_entity_rollups(coalesce(%s, '-infinity'::timestamptz), "
        "coalesce(%s, 'infinity'::timestamptz), %s)",
        (start, end, list(meter_ids) if meter_ids is not None else None),
    ).fetchone()[0]


def rebuild(conn: psycopg.Connection, zone: str | None = None) -> dict[str, int | str]:
    """Rebuild every rollup in `zone` (default: the settings' reporting zone).

    Drops and recreates the per-meter rollups with the zone fixed in their definition,
    recreates the views over them, refills per-meter and entity rollups over the whole
    history, and marks every offline value for re-spreading (jobs.offline spreads them
    over the new zone's local days on its next run). On the continuous-aggregate path the
    connection must be in autocommit mode (the refresh cannot run in a transaction).
    """
    zone = zone or get_settings().reporting_timezone
    kind_now = conn.execute("SELECT energy.rollup_materialisation()").fetchone()[0]
    if kind_now == "cagg" and not conn.autocommit:
        raise RollupZoneError("rebuilding continuous aggregates needs an autocommit connection")
    with conn.transaction():
        kind = conn.execute("SELECT energy.build_meter_rollups(%s)", (zone,)).fetchone()[0]
        for name in DEPENDENT_SQL:
            conn.execute(sql_file_parts(name)[0])
        conn.execute("TRUNCATE energy.entity_daily, energy.entity_monthly, energy.offline_applied")
    with conn.transaction():
        meter_rows = refresh_meter_rollups(conn, None, None)
        entity_rows = refresh_entity_rollups(conn, None, None)
        conn.execute("DELETE FROM ops.entity_dirty")
    return {"zone": zone, "materialisation": kind, "meter_rows": meter_rows, "entity_rows": entity_rows}
