"""Carbon stage: location- and market-based kgCO2e and kgce per meter in hourly, daily
and monthly rollups, after the energy rollups (the hourly one is read).

The 15-minute emissions are a view (carbon.meter_emission); the stage recomputes the
rollups over each span with set-based SQL (carbon.refresh_meter_rollup), deleting and
rewriting them, so a rerun gives the same rows. Incremental work is the meter entries of the dirty-range log this
stage has not consumed: intervals the earlier stages wrote, and the spans the carbon
triggers log when a factor, an intensity value, a region or a kgce factor changes. The
carbon rollups follow the energy rollups' zone; if those were rebuilt in another zone,
the carbon rollups are rebuilt first.
"""

from __future__ import annotations

import datetime as dt

import psycopg

from app.carbon import compute, rebuild_rollups, rollups_in_step
from jobs.dirty import DirtyRange, advance, merge, pending

NAME = "carbon"
PARTITIONS = True   # explicit ranges split by meter (jobs.base): a backfill uses every worker
# The hourly refresh reads the hourly energy rollup by time, which has no index on time
# alone: a backfill does best taking its whole range at once.
BACKFILL_CHUNK = dt.timedelta(days=366)


def _spans(ranges: list[DirtyRange]) -> list[tuple[dt.datetime, dt.datetime, list[int] | None]]:
    """Merged time spans, each with the meters dirty in it (None: every meter)."""
    out = []
    for s, e in merge(ranges):
        inside = [r for r in ranges if r.start < e and r.end > s]
        ids = None if any(r.meter_id is None for r in inside) else sorted({r.meter_id for r in inside})
        out.append((s, e, ids))
    return out


def run(conn: psycopg.Connection, start: dt.datetime | None, end: dt.datetime | None,
        *, part: tuple[int, int] | None = None) -> int:
    """Recompute carbon over [start, end) for every meter, or incrementally over the
    dirty ranges (both None). part=(i, n): only the i-th of n contiguous blocks of the
    meters in the carbon inventory (explicit ranges only). Returns the 15-minute intervals recomputed."""
    if (start is None) != (end is None):
        raise ValueError("give both start and end, or neither")
    if start is not None and start >= end:
        raise ValueError(f"empty range: {start} >= {end}")
    if part and start is None:
        raise ValueError("only explicit ranges can be split into parts")
    if not rollups_in_step(conn):
        # Parts run side by side: the first rebuilds, the others wait for its commit.
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('carbon rollups rebuild'))")
        if not rollups_in_step(conn):
            rebuild_rollups(conn)
    if start is not None:
        if part is None:
            return compute(conn, start, end)
        i, n = part
        meters = [m for (m,) in conn.execute("SELECT meter_id FROM carbon.meter_carbon ORDER BY 1")]
        # Contiguous blocks of meters: the parts then write apart in the rollups' indexes.
        mine = meters[i * len(meters) // n:(i + 1) * len(meters) // n]
        return compute(conn, start, end, mine) if mine else 0
    ranges, seen = pending(conn, NAME, "meter")
    touched = sum(compute(conn, s, e, ids) for s, e, ids in _spans(ranges))
    advance(conn, NAME, seen)
    return touched
