"""Normalization against hand-computed series: steady meter, gaps, rollover, reset,
cleaning's flags, limit violations, the leading edge and DST days."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from jobs import clean, normalize
from pipeline_setup import every, intervals, meter, readings, t

Q = dt.timedelta(minutes=15)


def process(conn) -> None:
    """One incremental cycle of the first two stages."""
    with conn.transaction():
        clean.run(conn, None, None)
        normalize.run(conn, None, None)


def energies(conn, meter_id):
    return [(ts, round(e, 9), q) for ts, e, q in intervals(conn, meter_id)]


def test_steady_meter_gives_equal_measured_quarters(conn):
    m, p = meter(conn, "steady")
    readings(conn, p, every(t("2026-01-05 00:00"), 5, [100 + 2 * i for i in range(25)]))  # to 02:00
    process(conn)
    rows = energies(conn, m)
    assert [r[0] for r in rows] == [t("2026-01-05 00:00") + i * Q for i in range(8)]
    assert all(e == 6.0 and q == 1 for _, e, q in rows)


def test_leading_edge_waits_for_the_next_reading(conn):
    m, p = meter(conn, "edge")
    readings(conn, p, every(t("2026-01-05 00:00"), 5, [0, 1, 2, 3, 4]))  # 00:00..00:20
    process(conn)
    assert [r[0] for r in energies(conn, m)] == [t("2026-01-05 00:00")]
    readings(conn, p, [(t("2026-01-05 00:25"), 5), (t("2026-01-05 00:30"), 6)])
    process(conn)
    assert energies(conn, m) == [(t("2026-01-05 00:00"), 3.0, 1), (t("2026-01-05 00:15"), 3.0, 1)]


def test_unaligned_readings_are_interpolated_to_boundaries(conn):
    m, p = meter(conn, "unaligned")
    # every 10 minutes from 00:05, +10 each: the register grows 1 per minute
    readings(conn, p, every(t("2026-01-05 00:05"), 10, [10 * i for i in range(8)]))  # to 01:15
    process(conn)
    rows = energies(conn, m)
    assert [r[0] for r in rows] == [t("2026-01-05 00:15") + i * Q for i in range(4)]
    assert all(e == 15.0 and q == 1 | 2 for _, e, q in rows)


def test_three_hour_gap_is_spread_and_flagged_estimated(conn):
    m, p = meter(conn, "gap")
    series = every(t("2026-01-05 00:00"), 15, [10, 11, 12, 13, 14])          # to 01:00
    series += [(t("2026-01-05 04:00"), 44.0), (t("2026-01-05 04:15"), 45.0)]  # 3 h later, +30
    readings(conn, p, series)
    process(conn)
    rows = energies(conn, m)
    assert [r[0] for r in rows] == [t("2026-01-05 00:00") + i * Q for i in range(17)]
    assert rows[:4] == [(t("2026-01-05 00:00") + i * Q, 1.0, 1) for i in range(4)]
    gap = rows[4:16]
    assert all(e == 2.5 and q == 4 | 2 for _, e, q in gap)   # 30 over 12 quarters
    assert rows[16] == (t("2026-01-05 04:00"), 1.0, 1)
    assert sum(e for _, e, _ in rows) == pytest.approx(35.0)


def test_gap_threshold_is_configurable_per_point(conn):
    m, p = meter(conn, "hourly")
    conn.execute("INSERT INTO config.point_cleaning (point_id, max_gap) VALUES (%s, '3 hours')", (p,))
    readings(conn, p, [(t("2026-01-05 00:00"), 0), (t("2026-01-05 02:00"), 16)])
    process(conn)
    rows = energies(conn, m)
    assert len(rows) == 8 and all(e == 2.0 and q == 1 | 2 for _, e, q in rows)


def test_rollover_at_register_maximum(conn):
    m, p = meter(conn, "wrap", register_max=999999)
    readings(conn, p, every(t("2026-01-05 00:00"), 5, [999980, 999990, 9, 19, 29, 39, 49]))
    process(conn)
    # 999,990 -> 9 on a 6-digit register is 19
    assert energies(conn, m) == [
        (t("2026-01-05 00:00"), 39.0, 64 | 1),   # 10 + 19 + 10
        (t("2026-01-05 00:15"), 30.0, 1),
    ]


def test_meter_replacement_resets_to_zero(conn):
    m, p = meter(conn, "replaced")
    readings(conn, p, every(t("2026-01-05 00:00"), 5, [500, 505, 2, 7, 12, 17, 22]))
    process(conn)
    assert energies(conn, m) == [
        (t("2026-01-05 00:00"), 12.0, 128 | 1),   # 5 + 2 (the new register's reading) + 5
        (t("2026-01-05 00:15"), 15.0, 1),
    ]


def test_spike_is_ignored(conn):
    m, p = meter(conn, "spiky")
    readings(conn, p, every(t("2026-01-05 00:00"), 5, [100, 102, 9999, 106, 108, 110, 112]))
    process(conn)
    assert energies(conn, m) == [(t("2026-01-05 00:00"), 6.0, 1), (t("2026-01-05 00:15"), 6.0, 1)]
    (q,) = conn.execute(
        "SELECT quality FROM raw.point_value WHERE point_id = %s AND value = 9999", (p,)
    ).fetchone()
    assert q == 4


def test_recovering_decrease_is_ignored_not_a_reset(conn):
    m, p = meter(conn, "dip")
    readings(conn, p, every(t("2026-01-05 00:00"), 5, [100, 102, 3, 106, 108, 110, 112]))
    process(conn)
    assert energies(conn, m) == [(t("2026-01-05 00:00"), 6.0, 1), (t("2026-01-05 00:15"), 6.0, 1)]


def test_limit_violation_is_flagged_not_zeroed(conn):
    m, p = meter(conn, "limited", hourly_low=1, hourly_high=20)
    readings(conn, p, every(t("2026-01-05 00:00"), 15, [0, 4, 10, 10.1]))
    process(conn)
    # 4 per quarter = 16/h fine; 6 = 24/h too high; 0.1 = 0.4/h too low
    assert energies(conn, m) == [
        (t("2026-01-05 00:00"), 4.0, 1),
        (t("2026-01-05 00:15"), 6.0, 1 | 32),
        (t("2026-01-05 00:30"), 0.1, 1 | 32),
    ]


def test_multiplier_scales_energy(conn):
    m, p = meter(conn, "ct", multiplier=40)
    readings(conn, p, every(t("2026-01-05 00:00"), 15, [1.0, 1.5, 2.25]))
    process(conn)
    assert energies(conn, m) == [(t("2026-01-05 00:00"), 20.0, 1), (t("2026-01-05 00:15"), 30.0, 1)]


@pytest.mark.parametrize("local_day, hours", [("2026-03-29", 23), ("2026-10-25", 25)])
def test_stockholm_dst_days_need_nothing_special(conn, local_day, hours):
    """15-minute intervals are UTC quarters: a 23- or 25-hour local day is just 92 or 100 of them."""
    zone = ZoneInfo("Europe/Stockholm")
    day = dt.date.fromisoformat(local_day)
    start = dt.datetime.combine(day, dt.time(0), zone).astimezone(dt.timezone.utc)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), zone).astimezone(dt.timezone.utc)
    assert end - start == dt.timedelta(hours=hours)
    m, p = meter(conn, f"dst-{local_day}")
    n = int((end - start + 2 * Q) / dt.timedelta(minutes=5))
    readings(conn, p, every(start - Q, 5, [0.5 * i for i in range(n + 1)]))  # 1.5 per quarter
    process(conn)
    rows = conn.execute(
        "SELECT ts, energy FROM energy.meter_interval WHERE meter_id = %s AND ts >= %s AND ts < %s ORDER BY ts",
        (m, start, end),
    ).fetchall()
    assert len(rows) == hours * 4
    assert all(b[0] - a[0] == Q for a, b in zip(rows, rows[1:]))
    assert sum(e for _, e in rows) == pytest.approx(1.5 * hours * 4)
    # the local-day total, the way reports bucket it, agrees
    (total,) = conn.execute(
        "SELECT sum(energy::numeric) FROM energy.meter_interval WHERE meter_id = %s "
        "AND time_bucket('1 day', ts, 'Europe/Stockholm') = %s::date::timestamp AT TIME ZONE 'Europe/Stockholm'",
        (m, local_day),
    ).fetchone()
    assert float(total) == pytest.approx(1.5 * hours * 4)


def test_explicit_range_recomputes_only_that_range(conn):
    m, p = meter(conn, "explicit")
    readings(conn, p, every(t("2026-01-05 00:00"), 15, [float(i) for i in range(9)]))  # to 02:00
    with conn.transaction():
        n = normalize.run(conn, t("2026-01-05 00:30"), t("2026-01-05 01:00"))
    assert n == 2
    assert [r[0] for r in energies(conn, m)] == [t("2026-01-05 00:30"), t("2026-01-05 00:45")]
    with pytest.raises(ValueError):
        normalize.run(conn, t("2026-01-05 01:00"), None)
    with pytest.raises(ValueError):
        normalize.run(conn, t("2026-01-05 01:00"), t("2026-01-05 00:00"))


def test_unchanged_recompute_touches_nothing_and_logs_nothing(conn):
    m, p = meter(conn, "idem")
    readings(conn, p, every(t("2026-01-05 00:00"), 5, [float(i) for i in range(13)]))
    process(conn)
    (logged,) = conn.execute("SELECT count(*) FROM ops.dirty_range WHERE meter_id = %s", (m,)).fetchone()
    with conn.transaction():
        assert normalize.run(conn, t("2026-01-05 00:00"), t("2026-01-06 00:00")) == 0
    assert conn.execute("SELECT count(*) FROM ops.dirty_range WHERE meter_id = %s", (m,)).fetchone() == (logged,)


def test_rewritten_intervals_are_logged_for_downstream(conn):
    m, p = meter(conn, "logged")
    readings(conn, p, every(t("2026-01-05 00:00"), 5, [float(i) for i in range(13)]))  # to 01:00
    process(conn)
    rows = conn.execute(
        "SELECT range_start, range_end, reason FROM ops.dirty_range WHERE meter_id = %s", (m,)
    ).fetchall()
    assert rows == [(t("2026-01-05 00:00"), t("2026-01-05 01:00"), "normalize: intervals rewritten")]
    (wm,) = conn.execute("SELECT normalized_until FROM ops.point_watermark WHERE point_id = %s", (p,)).fetchone()
    assert wm == t("2026-01-05 01:00")
