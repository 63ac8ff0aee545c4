"""Reading and advancing the dirty-range log (ops.dirty_range) for one stage.

The log is append-only. Each stage keeps in ops.stage_cursor the snapshot under which it
last consumed the log and, on its next incremental run, takes the entries visible now but
not then: point entries (late or repaired readings) for stages that read raw data, meter
entries (rewritten intervals, offline imports, configuration changes) for stages that
read energy. An entry whose transaction was still open at the last run is therefore taken
once it commits, whatever its id. Reading and advancing happen in the stage's
transaction, so a failed run consumes nothing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import psycopg


@dataclass(frozen=True)
class DirtyRange:
    start: dt.datetime
    end: dt.datetime
    point_id: int | None = None
    meter_id: int | None = None   # both None: every meter in the range
    reason: str = ""


def pending(
    conn: psycopg.Connection,
    stage: str,
    kind: str,
    *,
    reason_like: str | None = None,
    reason_not_like: str | None = None,
    snapshot: str | None = None,
) -> tuple[list[DirtyRange], str]:
    """Entries the stage has not consumed; kind 'point' or 'meter'. Returns (ranges, snapshot).

    The snapshot (text of a pg_snapshot) is what `advance` records; pass it back as
    `snapshot` to read a second kind of entry as of the same moment. reason_like /
    reason_not_like (SQL LIKE patterns) narrow the entries, e.g. a stage skips the entries
    it logged itself; what they leave out is consumed all the same. The stage's cursor
    row is locked for the rest of the transaction.
    """
    if kind not in ("point", "meter"):
        raise ValueError(f"kind must be 'point' or 'meter', not {kind!r}")
    conn.execute(
        "INSERT INTO ops.stage_cursor (stage) VALUES (%s) ON CONFLICT (stage) DO NOTHING", (stage,)
    )
    (seen,) = conn.execute(
        "SELECT seen::text FROM ops.stage_cursor WHERE stage = %s FOR UPDATE", (stage,)
    ).fetchone()
    where = "point_id IS NOT NULL" if kind == "point" else "point_id IS NULL"
    # One statement: the snapshot returned is the one the rows were read under.
    rows = conn.execute(
        f"WITH now_ AS (SELECT coalesce(%s::pg_snapshot, pg_current_snapshot()) AS snap) "
        f"SELECT now_.snap::text, d.range_start, d.range_end, d.point_id, d.meter_id, d.reason "
        f"FROM now_ LEFT JOIN ops.dirty_range d "
        f"  ON pg_visible_in_snapshot(d.xact, now_.snap) "
        f" AND d.xact >= coalesce(pg_snapshot_xmin(%s::pg_snapshot), '0'::xid8) "  # an index range
        f" AND (%s::pg_snapshot IS NULL OR NOT pg_visible_in_snapshot(d.xact, %s::pg_snapshot)) "
        f" AND d.{where} "
        f" AND (%s::text IS NULL OR d.reason LIKE %s) AND (%s::text IS NULL OR d.reason NOT LIKE %s) "
        f"ORDER BY d.id",
        (snapshot, seen, seen, seen, reason_like, reason_like, reason_not_like, reason_not_like),
    ).fetchall()
    ranges = [DirtyRange(*r[1:]) for r in rows if r[1] is not None]
    return ranges, rows[0][0]


def advance(conn: psycopg.Connection, stage: str, snapshot: str) -> None:
    """Record that the stage has consumed every entry visible in `snapshot`."""
    conn.execute(
        "UPDATE ops.stage_cursor SET seen = %s::pg_snapshot, updated_at = now() WHERE stage = %s",
        (snapshot, stage),
    )


def log_energy_change(
    conn: psycopg.Connection,
    start: dt.datetime,
    end: dt.datetime,
    reason: str,
    meter_ids: list[int] | None = None,
) -> None:
    """Tell downstream stages that these meters' intervals in [start, end) changed
    (meter_ids None: all meters)."""
    if start >= end:
        return
    if meter_ids is None:
        conn.execute(
            "INSERT INTO ops.dirty_range (range_start, range_end, reason) VALUES (%s, %s, %s)",
            (start, end, reason),
        )
    else:
        conn.execute(
            "INSERT INTO ops.dirty_range (meter_id, range_start, range_end, reason) "
            "SELECT unnest(%s::int[]), %s, %s, %s",
            (meter_ids, start, end, reason),
        )


def merge(ranges: list[DirtyRange]) -> list[tuple[dt.datetime, dt.datetime]]:
    """Union of the ranges' time spans, sorted and non-overlapping."""
    spans = sorted((r.start, r.end) for r in ranges)
    out: list[list[dt.datetime]] = []
    for start, end in spans:
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return [(s, e) for s, e in out]
