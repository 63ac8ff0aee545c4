"""Offline meters stage: imported daily and monthly values become 15-minute energy.

A value covers a local day or a local month of the reporting zone (the zone the rollups
are built in), so a DST day gets 92 or 100 intervals and its total is still exact. The
value is spread over the period's intervals in proportion to the meter's load profile
(config.meter.load_profile: 24 weights by local hour; NULL spreads evenly; a period
whose weights sum to zero spreads evenly). Intervals are flagged manual (8).

Day values win over a month value: when a month has both, each day value covers its
day and the month value's remainder (month − sum of day values, never below zero)
is spread over the month's other days.

The unit of work is one meter's local month. energy.offline_applied remembers what was
spread; a run compares it with energy.offline_value, so a newer import that changes,
adds or removes values recomputes exactly those months (intervals of days no longer
present disappear). What changed is logged for the virtual meters and the rollups.
"""

from __future__ import annotations

import datetime as dt

import psycopg

from app.rollups import check_zone
from jobs.base import QUARTER
from jobs.dirty import log_energy_change

NAME = "offline"
# An explicit range recomputes every local month it touches, so a backfill takes it in
# pieces of a year: day-long pieces would spread the month touching each day again.
BACKFILL_CHUNK = dt.timedelta(days=366)
REASON = "offline: values spread"
Q_MANUAL = 8

# (meter, local month) units whose values changed since they were last spread.
_CHANGED_UNITS = """
SELECT DISTINCT x.meter_id, date_trunc('month', x.period_start)::date
FROM (
    SELECT v.meter_id, v.period_start
    FROM energy.offline_value v
    JOIN config.meter m ON m.id = v.meter_id AND m.kind = 'offline'
    LEFT JOIN energy.offline_applied a USING (meter_id, period_start, period)
    WHERE a.meter_id IS NULL
       OR (a.value, a.imported_at, a.load_profile) IS DISTINCT FROM (v.value, v.imported_at, m.load_profile)
    UNION ALL
    SELECT a.meter_id, a.period_start
    FROM energy.offline_applied a
    JOIN config.meter m ON m.id = a.meter_id AND m.kind = 'offline'
    LEFT JOIN energy.offline_value v USING (meter_id, period_start, period)
    WHERE v.meter_id IS NULL
) x
"""

# Offline meters never spread before (new, or after a rollup rebuild in another zone):
# their old intervals may sit on other local days, so they are cleared first.
_FRESH_METERS = """
SELECT DISTINCT v.meter_id FROM energy.offline_value v
JOIN config.meter m ON m.id = v.meter_id AND m.kind = 'offline'
WHERE NOT EXISTS (SELECT 1 FROM energy.offline_applied a WHERE a.meter_id = v.meter_id)
"""

# Every offline meter's local months overlapping [start, end).
_RANGE_UNITS = """
SELECT m.id, g::date
FROM config.meter m, energy.rollup_setting s,
     generate_series(date_trunc('month', %(s)s::timestamptz AT TIME ZONE s.reporting_timezone),
                     %(e)s::timestamptz AT TIME ZONE s.reporting_timezone - interval '1 microsecond',
                     interval '1 month') g
WHERE m.kind = 'offline'
"""

_UNITS_CTE = """
WITH u AS (
    SELECT DISTINCT meter_id, month, s.reporting_timezone AS zone,
           month::timestamp AT TIME ZONE s.reporting_timezone AS lo,
           (month + interval '1 month')::timestamp AT TIME ZONE s.reporting_timezone AS hi
    FROM unnest(%(m)s::int[], %(mo)s::date[]) AS x(meter_id, month), energy.rollup_setting s
)
"""

_CLEAR = _UNITS_CTE + """
DELETE FROM energy.meter_interval mi USING u
WHERE mi.meter_id = u.meter_id AND mi.ts >= u.lo AND mi.ts < u.hi
"""

_SPREAD = _UNITS_CTE + """,
iv AS (
    SELECT u.meter_id, u.month, g.ts,
           (g.ts AT TIME ZONE u.zone)::date AS day,
           extract(hour FROM g.ts AT TIME ZONE u.zone)::int AS hr
    FROM u CROSS JOIN LATERAL generate_series(u.lo, u.hi - interval '15 minutes', interval '15 minutes') AS g(ts)
),
day_sum AS (
    SELECT u.meter_id, u.month, sum(d.value) AS total
    FROM u JOIN energy.offline_value d
      ON d.meter_id = u.meter_id AND d.period = 'day'
     AND d.period_start >= u.month AND d.period_start < u.month + interval '1 month'
    GROUP BY u.meter_id, u.month
),
amounts AS (
    SELECT iv.meter_id, iv.month, iv.ts, iv.day,
           coalesce(m.load_profile[iv.hr + 1], 1) AS w,
           dv.value IS NOT NULL AS by_day,
           CASE WHEN dv.value IS NOT NULL THEN dv.value
                ELSE greatest(mv.value - coalesce(ds.total, 0), 0) END AS amount
    FROM iv
    JOIN config.meter m ON m.id = iv.meter_id
    LEFT JOIN energy.offline_value dv
      ON dv.meter_id = iv.meter_id AND dv.period = 'day' AND dv.period_start = iv.day
    LEFT JOIN energy.offline_value mv
      ON mv.meter_id = iv.meter_id AND mv.period = 'month' AND mv.period_start = iv.month
    LEFT JOIN day_sum ds ON ds.meter_id = iv.meter_id AND ds.month = iv.month
    WHERE dv.value IS NOT NULL OR mv.value IS NOT NULL
),
weighted AS (
    SELECT a.*, sum(w) OVER p AS wsum, count(*) OVER p AS n
    FROM amounts a
    WINDOW p AS (PARTITION BY meter_id, month, by_day, CASE WHEN by_day THEN day END)
)
INSERT INTO energy.meter_interval (meter_id, ts, energy, quality)
SELECT meter_id, ts, CASE WHEN wsum > 0 THEN amount * w / wsum ELSE amount / n END, %(q)s
FROM weighted
"""

_UNAPPLY = _UNITS_CTE + """
DELETE FROM energy.offline_applied a USING u
WHERE a.meter_id = u.meter_id AND a.period_start >= u.month AND a.period_start < u.month + interval '1 month'
"""

_APPLIED = _UNITS_CTE + """
INSERT INTO energy.offline_applied (meter_id, period_start, period, value, imported_at, load_profile)
SELECT v.meter_id, v.period_start, v.period, v.value, v.imported_at, m.load_profile
FROM u
JOIN energy.offline_value v
  ON v.meter_id = u.meter_id AND v.period_start >= u.month AND v.period_start < u.month + interval '1 month'
JOIN config.meter m ON m.id = v.meter_id
"""

_LOG = _UNITS_CTE + """
INSERT INTO ops.dirty_range (meter_id, range_start, range_end, reason)
SELECT meter_id, lo, hi, %(reason)s FROM u
"""


def spread(conn: psycopg.Connection, units: list[tuple[int, dt.date]]) -> int:
    """Recompute the given (meter, local month) units; returns interval rows removed + written."""
    if not units:
        return 0
    params = {"m": [u[0] for u in units], "mo": [u[1] for u in units], "q": Q_MANUAL, "reason": REASON}
    # The unique check of the insert needs the old rows gone first: two statements.
    removed = conn.execute(_CLEAR, params).rowcount
    written = conn.execute(_SPREAD, params).rowcount
    conn.execute(_UNAPPLY, params)
    conn.execute(_APPLIED, params)
    conn.execute(_LOG, params)
    return removed + written


def run(conn: psycopg.Connection, start: dt.datetime | None, end: dt.datetime | None) -> int:
    """Spread offline values; returns interval rows removed and written."""
    if (start is None) != (end is None):
        raise ValueError("give both start and end, or neither")
    check_zone(conn)
    touched = 0
    if start is not None:
        if start >= end:
            raise ValueError(f"empty range: {start} >= {end}")
        units = conn.execute(_RANGE_UNITS, {"s": start, "e": end}).fetchall()
    else:
        fresh = [m for (m,) in conn.execute(_FRESH_METERS)]
        if fresh:
            cleared = conn.execute(
                "WITH d AS (DELETE FROM energy.meter_interval WHERE meter_id = ANY(%s) RETURNING meter_id, ts) "
                "SELECT meter_id, min(ts), max(ts), count(*) FROM d GROUP BY meter_id",
                (fresh,),
            ).fetchall()
            for meter_id, lo, hi, n in cleared:
                log_energy_change(conn, lo, hi + QUARTER, REASON, [meter_id])
                touched += n
        units = conn.execute(_CHANGED_UNITS).fetchall()
    return touched + spread(conn, [(m, mo) for m, mo in units])
