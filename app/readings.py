"""Writing raw readings: the one path every source (collectors, HTTP ingest, file
imports) takes into raw.point_value.

Rows are COPYed into a temporary staging table and moved with INSERT … ON CONFLICT DO
NOTHING, so duplicates are dropped, not errors, and a batch is one round trip. Readings
older than what normalization has already consumed are logged as dirty ranges in the
same transaction, so the jobs recompute exactly what they changed.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import psycopg

# raw.point_value.quality bits set at write time (jobs.clean adds its own higher bits).
Q_GOOD = 0
Q_OUT_OF_LIMITS = 1

Reading = tuple[int, dt.datetime, float, int]  # (point_id, ts, value, quality)


@dataclass(frozen=True)
class PointScaling:
    """How a device value becomes an engineering value, and its plausible range."""

    point_id: int
    ratio: float = 1.0
    offset: float = 0.0
    low_limit: float | None = None
    high_limit: float | None = None

    def apply(self, device_value: float) -> tuple[float, int]:
        """Scaled value and its quality: outside the limits is flagged, never dropped."""
        value = device_value * self.ratio + self.offset
        quality = Q_GOOD
        if (self.low_limit is not None and value < self.low_limit) or (
            self.high_limit is not None and value > self.high_limit
        ):
            quality |= Q_OUT_OF_LIMITS
        return value, quality


def load_point_scaling(conn: psycopg.Connection) -> dict[int, PointScaling]:
    rows = conn.execute(
        'SELECT id, ratio, "offset", low_limit, high_limit FROM config.point'
    ).fetchall()
    return {r[0]: PointScaling(*r) for r in rows}


@dataclass
class WriteResult:
    accepted: int = 0     # new rows in raw.point_value
    duplicates: int = 0   # rows already there (same point and timestamp), dropped
    late_ranges: int = 0  # dirty ranges logged for already-normalized time

    def __iadd__(self, other: "WriteResult") -> "WriteResult":
        self.accepted += other.accepted
        self.duplicates += other.duplicates
        self.late_ranges += other.late_ranges
        return self


_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS point_value_staging (
    point_id integer, ts timestamptz, value double precision, quality smallint
) ON COMMIT DELETE ROWS
"""

_MOVE = """
WITH inserted AS (
    INSERT INTO raw.point_value (point_id, ts, value, quality)
    SELECT DISTINCT ON (point_id, ts) point_id, ts, value, quality
    FROM point_value_staging
    ORDER BY point_id, ts
    ON CONFLICT (point_id, ts) DO NOTHING
    RETURNING point_id, ts
), late AS (
    INSERT INTO ops.dirty_range (point_id, range_start, range_end, reason)
    SELECT i.point_id, min(i.ts), max(i.ts) + interval '1 microsecond', 'late reading'
    FROM inserted i JOIN ops.point_watermark w USING (point_id)
    WHERE i.ts < greatest(w.normalized_until, w.cleaned_until)
    GROUP BY i.point_id
    RETURNING 1
)
SELECT (SELECT count(*) FROM inserted), (SELECT count(*) FROM late)
"""


_COPY_TYPES = ["int4", "timestamptz", "float8", "int2"]


def _copy_rows(conn: psycopg.Connection, table: str, rows: list[Reading]) -> None:
    with conn.cursor().copy(
        f"COPY {table} (point_id, ts, value, quality) FROM STDIN (FORMAT BINARY)"
    ) as copy:
        copy.set_types(_COPY_TYPES)
        for point_id, ts, value, quality in rows:
            copy.write_row((point_id, ts, float(value), quality))


def write_readings(conn: psycopg.Connection, rows: Sequence[Reading] | Iterable[Reading]) -> WriteResult:
    """Write readings in the caller's transaction; the caller commits.

    Non-finite values must have been rejected by the caller (they are a source error,
    not a reading); this function refuses them rather than store NaN.

    A reading older than its point's watermark (what clean or normalize has processed)
    is late: it is logged as a dirty range so both redo that span.

    Fast path: when no reading can be late (none is older than the newest watermark),
    the batch is COPYed straight into the hypertable inside a savepoint, which costs
    what a plain COPY costs; a duplicate there (unique violation) rolls the savepoint
    back and the batch takes the staging path, which drops duplicates and logs late
    readings as dirty ranges.
    """
    rows = list(rows)
    if not rows:
        return WriteResult()
    oldest = None
    for point_id, ts, value, _ in rows:
        if not math.isfinite(value):
            raise ValueError(f"point {point_id} at {ts}: non-finite value {value!r}")
        if ts.tzinfo is None or ts.utcoffset() is None:
            raise ValueError(f"point {point_id} at {ts}: timestamp without a time zone")
        if oldest is None or ts < oldest:
            oldest = ts
    # Before the lateness check, and until the caller commits: clean and normalize, which
    # advance the watermarks, wait for this write or this write waits for their commit
    # (ops.write_gate), so the check always sees the watermark that counts.
    conn.execute("LOCK TABLE ops.write_gate IN ROW EXCLUSIVE MODE")
    late_possible = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM ops.point_watermark "
        "WHERE greatest(normalized_until, cleaned_until) > %s)", (oldest,)
    ).fetchone()[0]
    if not late_possible:
        try:
            with conn.transaction():
                _copy_rows(conn, "raw.point_value", rows)
            return WriteResult(accepted=len(rows))
        except psycopg.errors.UniqueViolation:
            pass
    conn.execute(_STAGING)
    _copy_rows(conn, "point_value_staging", rows)
    accepted, late = conn.execute(_MOVE).fetchone()
    conn.execute("TRUNCATE point_value_staging")
    return WriteResult(accepted=accepted, duplicates=len(rows) - accepted, late_ranges=late)


def mark_dirty(
    conn: psycopg.Connection,
    start: dt.datetime,
    end: dt.datetime,
    reason: str,
    *,
    point_id: int | None = None,
    meter_id: int | None = None,
) -> None:
    """Log a time range whose derived data must be recomputed."""
    conn.execute(
        "INSERT INTO ops.dirty_range (point_id, meter_id, range_start, range_end, reason) "
        "VALUES (%s, %s, %s, %s, %s)",
        (point_id, meter_id, start, end, reason),
    )
