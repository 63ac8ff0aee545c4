"""Cleaning stage: flag suspect raw readings so normalization skips them and people can
see why, without ever deleting a reading.

The rules (non-finite, spike, recovering decrease, stuck) are window functions in
sql/clean.sql, applied to many points in one statement; this module only decides the work:
every point over an explicit range, or, incrementally, the readings after each point's
cleaned_until plus the point dirty ranges (late or repaired readings, threshold changes)
logged since the last run.
"""

from __future__ import annotations

import datetime as dt

import psycopg

from jobs.base import close_write_gate
from jobs.dirty import advance, pending

NAME = "clean"
PARTITIONS = True   # explicit ranges split by point (jobs.base)
# Each range costs a few index probes before its readings are read: week-long backfill
# pieces spread that over more readings (a third less server time than day-long ones).
BACKFILL_CHUNK = dt.timedelta(days=7)

# Readings after each point's cleaned_until. A point cleaned up to within two days of the
# newest watermark looks only at chunks from there on (%(recent)s is fixed for the
# statement, so TimescaleDB drops older chunks once instead of testing every chunk per
# point: sql/normalize.sql, energy.normalize_ranges); one further behind searches its
# whole history.
_RECENT = "SELECT max(cleaned_until) - interval '2 days' FROM ops.point_watermark"   # NULL: none yet
_NEW_READINGS = """
SELECT p.id, n.first_ts, 'infinity'::timestamptz
FROM config.point p
LEFT JOIN ops.point_watermark w ON w.point_id = p.id
CROSS JOIN LATERAL (
    SELECT CASE WHEN w.cleaned_until >= %(recent)s::timestamptz
                THEN (SELECT r.ts FROM raw.point_value r
                      WHERE r.point_id = p.id AND r.ts > w.cleaned_until AND r.ts >= %(recent)s::timestamptz
                      ORDER BY r.ts LIMIT 1)
                ELSE (SELECT r.ts FROM raw.point_value r
                      WHERE r.point_id = p.id AND r.ts > coalesce(w.cleaned_until, '-infinity')
                      ORDER BY r.ts LIMIT 1) END AS first_ts
) n
WHERE n.first_ts IS NOT NULL
"""


def run(
    conn: psycopg.Connection, start: dt.datetime | None, end: dt.datetime | None,
    *, part: tuple[int, int] | None = None,
) -> int:
    """Flag readings; returns how many readings' flags changed. part=(i, n): only the
    points whose id is i modulo n (explicit ranges only)."""
    if (start is None) != (end is None):
        raise ValueError("give both start and end, or neither")
    if start is not None and start >= end:
        raise ValueError(f"empty range: {start} >= {end}")
    if part and start is None:
        raise ValueError("only explicit ranges can be split into parts")
    close_write_gate(conn, give_way=start is None)  # before reading raw data (jobs.base)
    if start is not None:
        i, n = part or (0, 1)
        points = conn.execute("SELECT id FROM config.point WHERE id %% %s = %s ORDER BY id", (n, i))
        return clean_ranges(conn, [(pid, start, end) for (pid,) in points])
    entries, seen = pending(conn, NAME, "point", reason_not_like="clean:%")
    (recent,) = conn.execute(_RECENT).fetchone()
    (touched,) = conn.execute(
        "SELECT raw.clean_ranges(array_agg(point_id), array_agg(s), array_agg(e)) FROM ("
        + _NEW_READINGS
        + " UNION ALL SELECT * FROM unnest(%(p)s::int[], %(ps)s::timestamptz[], %(pe)s::timestamptz[])"
        ") w(point_id, s, e)",
        {"recent": recent, "p": [r.point_id for r in entries], "ps": [r.start for r in entries],
         "pe": [r.end for r in entries]},
    ).fetchone()
    advance(conn, NAME, seen)
    return int(touched or 0)


def clean_ranges(conn: psycopg.Connection, work: list[tuple[int, dt.datetime, dt.datetime]]) -> int:
    """Apply the rules to (point_id, start, end) ranges (overlaps are merged)."""
    if not work:
        return 0
    points, starts, ends = (list(col) for col in zip(*work))
    (changed,) = conn.execute(
        "SELECT raw.clean_ranges(%s::int[], %s::timestamptz[], %s::timestamptz[])", (points, starts, ends)
    ).fetchone()
    return int(changed)
