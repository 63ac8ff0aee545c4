"""Reading and advancing the dirty-range log (ops.dirty_range) for one stage.

The log is append-only. Each stage keeps the last id it consumed in ops.stage_cursor and,
on its next incremental run, takes the entries after it: point entries (late or repaired
readings) for stages that read raw data, meter entries (rewritten intervals, offline
imports, configuration changes) for stages that read energy. Reading and advancing
happen in the stage's transaction, so a failed run consumes nothing.
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
) -> tuple[list[DirtyRange], int]:
    """Entries after the stage's cursor; kind 'point' or 'meter'. Returns (ranges, last id seen).

    reason_like / reason_not_like (SQL LIKE patterns) narrow the entries, e.g. a stage
    skips the entries it logged itself. The stage's cursor row is locked for the rest of
    the transaction.
    """
    if kind not in ("point", "meter"):
        raise ValueError(f"kind must be 'point' or 'meter', not {kind!r}")
    conn.execute(
        "INSERT INTO ops.stage_cursor (stage) VALUES (%s) ON CONFLICT (stage) DO NOTHING", (stage,)
    )
    (last,) = conn.execute(
        "SELECT last_dirty_id FROM ops.stage_cursor WHERE stage = %s FOR UPDATE", (stage,)
    ).fetchone()
    (high,) = conn.execute("SELECT coalesce(max(id), 0) FROM ops.dirty_range").fetchone()
    where = "point_id IS NOT NULL" if kind == "point" else "point_id IS NULL"
    rows = conn.execute(
        f"SELECT range_start, range_end, point_id, meter_id, reason FROM ops.dirty_range "
        f"WHERE id > %s AND id <= %s AND {where} "
        f"AND (%s::text IS NULL OR reason LIKE %s) AND (%s::text IS NULL OR reason NOT LIKE %s) "
        f"ORDER BY id",
        (last, high, reason_like, reason_like, reason_not_like, reason_not_like),
    ).fetchall()
    return [DirtyRange(*r) for r in rows], high


def advance(conn: psycopg.Connection, stage: str, last_id: int) -> None:
    conn.execute(
        "UPDATE ops.stage_cursor SET last_dirty_id = greatest(last_dirty_id, %s), updated_at = now() "
        "WHERE stage = %s",
        (last_id, stage),
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
