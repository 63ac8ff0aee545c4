"""Rollups stage: per-meter hourly, daily and monthly energy, then the entity rollups.

Per-meter rollups are refreshed over each dirty range widened to whole buckets
(app.rollups.refresh_meter_rollups: a SQL function on tables, refresh_continuous_aggregate
on continuous aggregates), then entity daily and monthly rows over the same range for
the entities holding those meters, then every entity whose meter links changed over its
whole history (ops.entity_dirty, logged by triggers on the link tables). A bucket is
published with whatever data is there; its completeness counts say how much that is.

Work comes from the meter entries of the dirty-range log: every stage before this one
logs the intervals it wrote. The rollups refuse to run when the settings name another
reporting zone than the rollups were built in (app.rollups.check_zone).
"""

from __future__ import annotations

import datetime as dt

import psycopg

from app.rollups import check_zone, materialisation, refresh_entity_rollups, refresh_meter_rollups
from jobs.dirty import DirtyRange, advance, merge, pending

NAME = "rollups"
PARTITIONS = True   # explicit ranges: per-meter rollups split by meter, then finish() (jobs.base)
# Backfills refresh a month at a time: a day at a time would rebuild each monthly bucket
# once per day (jobs.base).
BACKFILL_CHUNK = dt.timedelta(days=31)


def _spans(ranges: list[DirtyRange]) -> list[tuple[dt.datetime, dt.datetime, list[int] | None]]:
    """Merged time spans, each with the meters dirty in it (None: every meter)."""
    out = []
    for s, e in merge(ranges):
        inside = [r for r in ranges if r.start < e and r.end > s]
        if any(r.meter_id is None for r in inside):
            out.append((s, e, None))
        else:
            out.append((s, e, sorted({r.meter_id for r in inside})))
    return out


def run(
    conn: psycopg.Connection, start: dt.datetime | None, end: dt.datetime | None,
    *, part: tuple[int, int] | None = None,
) -> int:
    """Refresh the rollups; returns rollup rows written (table path; continuous
    aggregates report 0 for the per-meter part). part=(i, n) (explicit ranges): only the
    per-meter rollups of the meters whose id is i modulo n; `finish` does the entities."""
    if (start is None) != (end is None):
        raise ValueError("give both start and end, or neither")
    if start is not None and start >= end:
        raise ValueError(f"empty range: {start} >= {end}")
    check_zone(conn)
    if part is not None:
        if start is None:
            raise ValueError("only explicit ranges can be split into parts")
        i, n = part
        if materialisation(conn) != "table":
            # a continuous aggregate refreshes every meter of the window at once
            return refresh_meter_rollups(conn, start, end) if i == 0 else 0
        meters = [m for (m,) in conn.execute("SELECT id FROM config.meter WHERE id %% %s = %s", (n, i))]
        return refresh_meter_rollups(conn, start, end, meters)
    if start is not None:
        spans, seen = [(start, end, None)], None
    else:
        ranges, seen = pending(conn, NAME, "meter")
        spans = _spans(ranges)
    touched = 0
    for s, e, meter_ids in spans:
        touched += refresh_meter_rollups(conn, s, e, meter_ids)
        touched += refresh_entity_rollups(conn, s, e, meter_ids)
    touched += conn.execute("SELECT energy.refresh_dirty_entities()").fetchone()[0]
    if seen is not None:
        advance(conn, NAME, seen)
    return touched


def finish(conn: psycopg.Connection, start: dt.datetime, end: dt.datetime) -> int:
    """After every part of a backfill chunk: the entity rollups, which sum the per-meter
    rollups of all parts."""
    check_zone(conn)
    touched = refresh_entity_rollups(conn, start, end, None)
    return touched + conn.execute("SELECT energy.refresh_dirty_entities()").fetchone()[0]
