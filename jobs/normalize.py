"""Normalization stage: cumulative energy registers into 15-minute meter energy.

The arithmetic (pairs of readings, rollover/reset, linear spreading over quarters, gap and
limit flags, upsert and removal, downstream dirty log, watermarks) is one set-based
statement in sql/normalize.sql over many meters at once. This module decides the work:
every physical meter over an explicit range, or, incrementally, the readings after each
point's normalized_until, the point dirty ranges (late readings, repairs, changed cleaning
flags) and the meter ranges configuration triggers logged (sql/recompute.sql).
"""

from __future__ import annotations

import datetime as dt

import psycopg

from jobs.base import close_write_gate
from jobs.dirty import advance, pending

NAME = "normalize"
PARTITIONS = True   # explicit ranges split by meter (jobs.base)
# Fixed costs per range (edge look-ups, watermarks) spread over three days of readings.
BACKFILL_CHUNK = dt.timedelta(days=3)

_RANGES = "SELECT energy.normalize_ranges(%s::int[], %s::timestamptz[], %s::timestamptz[])"

_INCREMENTAL = """
SELECT energy.normalize_ranges(array_agg(meter_id), array_agg(range_start), array_agg(range_end))
FROM (
    SELECT * FROM energy.point_work(%(p)s::int[], %(ps)s::timestamptz[], %(pe)s::timestamptz[])
    UNION ALL
    SELECT * FROM unnest(%(m)s::int[], %(ms)s::timestamptz[], %(me)s::timestamptz[])
) w
"""


def run(
    conn: psycopg.Connection, start: dt.datetime | None, end: dt.datetime | None,
    *, part: tuple[int, int] | None = None,
) -> int:
    """Write intervals; returns the interval rows written or removed. part=(i, n): only
    the meters whose id is i modulo n (explicit ranges only)."""
    if (start is None) != (end is None):
        raise ValueError("give both start and end, or neither")
    if start is not None and start >= end:
        raise ValueError(f"empty range: {start} >= {end}")
    if part and start is None:
        raise ValueError("only explicit ranges can be split into parts")
    close_write_gate(conn, give_way=start is None)  # before reading raw data (jobs.base)
    if start is not None:
        i, n = part or (0, 1)
        meters = [m for (m,) in conn.execute(
            "SELECT id FROM config.meter WHERE kind = 'physical' AND id %% %s = %s ORDER BY id", (n, i))]
        return normalize_ranges(conn, [(m, start, end) for m in meters])

    point_entries, seen = pending(conn, NAME, "point")
    meter_entries, _ = pending(conn, NAME, "meter", reason_like="config:%", snapshot=seen)
    point_work = conn.execute("SELECT * FROM energy.new_reading_work()").fetchall()
    point_work += [(r.point_id, r.start, r.end) for r in point_entries]
    meter_work = [(r.meter_id, r.start, r.end) for r in meter_entries if r.meter_id is not None]
    meter_work += [
        (m, r.start, r.end)
        for r in meter_entries if r.meter_id is None
        for (m,) in conn.execute("SELECT id FROM config.meter WHERE kind = 'physical'")
    ]
    touched = 0
    if point_work or meter_work:
        (touched,) = conn.execute(
            _INCREMENTAL,
            {
                "p": [w[0] for w in point_work], "ps": [w[1] for w in point_work], "pe": [w[2] for w in point_work],
                "m": [w[0] for w in meter_work], "ms": [w[1] for w in meter_work], "me": [w[2] for w in meter_work],
            },
        ).fetchone()
    advance(conn, NAME, seen)
    return int(touched or 0)


def normalize_ranges(conn: psycopg.Connection, work: list[tuple[int, dt.datetime, dt.datetime]]) -> int:
    """Recompute (meter_id, start, end) ranges of physical meters (overlaps are merged)."""
    if not work:
        return 0
    meters, starts, ends = (list(col) for col in zip(*work))
    (changed,) = conn.execute(_RANGES, (meters, starts, ends)).fetchone()
    return int(changed or 0)
