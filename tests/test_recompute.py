"""Recomputation: late readings, repairs and configuration changes that rewrite history
recompute exactly what they affect, and a full recomputation equals the incremental runs."""

from __future__ import annotations

import datetime as dt
import random

from jobs import clean, normalize
from jobs.runner import backfill, load_pipeline
from pipeline_setup import every, intervals, meter, point, readings, t

Q = dt.timedelta(minutes=15)


def process(conn) -> int:
    with conn.transaction():
        clean.run(conn, None, None)
        return normalize.run(conn, None, None)


def energies(conn, meter_id):
    return [(ts, round(e, 9), q) for ts, e, q in intervals(conn, meter_id)]


def test_late_reading_recomputes_its_intervals(conn):
    m, p = meter(conn, "late")
    readings(conn, p, [(t("2026-01-05 00:00"), 0), (t("2026-01-05 00:15"), 10),
                       (t("2026-01-05 00:45"), 40), (t("2026-01-05 01:00"), 50)])
    process(conn)
    assert energies(conn, m) == [
        (t("2026-01-05 00:00"), 10.0, 1),
        (t("2026-01-05 00:15"), 15.0, 1 | 2),
        (t("2026-01-05 00:30"), 15.0, 1 | 2),
        (t("2026-01-05 00:45"), 10.0, 1),
    ]
    before = conn.execute("SELECT max(id) FROM ops.dirty_range").fetchone()[0]
    readings(conn, p, [(t("2026-01-05 00:30"), 30)])      # arrives after normalization
    (reason,) = conn.execute("SELECT reason FROM ops.dirty_range WHERE id > %s", (before,)).fetchone()
    assert reason == "late reading"
    process(conn)
    assert energies(conn, m) == [
        (t("2026-01-05 00:00"), 10.0, 1),
        (t("2026-01-05 00:15"), 20.0, 1),
        (t("2026-01-05 00:30"), 10.0, 1),
        (t("2026-01-05 00:45"), 10.0, 1),
    ]
    # exactly the rewritten quarters are passed downstream
    rows = conn.execute(
        "SELECT range_start, range_end FROM ops.dirty_range WHERE id > %s AND meter_id = %s", (before, m)
    ).fetchall()
    assert rows == [(t("2026-01-05 00:15"), t("2026-01-05 00:45"))]


def test_late_spike_neighbour_is_cleaned_then_normalized(conn):
    m, p = meter(conn, "late-spike")
    readings(conn, p, every(t("2026-01-05 00:00"), 5, [0, 1, 2, 3, 4, 5, 6]))    # to 00:30
    process(conn)
    assert [e for _, e, _ in energies(conn, m)] == [3.0, 3.0]
    # a repair import corrects a reading upwards into a spike: the history is rewritten
    conn.execute("UPDATE raw.point_value SET value = 500 WHERE point_id = %s AND ts = %s", (p, t("2026-01-05 00:10")))
    conn.execute(
        "INSERT INTO ops.dirty_range (point_id, range_start, range_end, reason) VALUES (%s, %s, %s, 'repair import')",
        (p, t("2026-01-05 00:10"), t("2026-01-05 00:10:00.000001")),
    )
    process(conn)
    assert [e for _, e, _ in energies(conn, m)] == [3.0, 3.0]
    assert conn.execute("SELECT quality FROM raw.point_value WHERE value = 500").fetchone() == (4,)


def test_multiplier_change_from_a_date(conn):
    m, p = meter(conn, "ct-change")
    readings(conn, p, every(t("2026-01-05 00:00"), 15, [float(i) for i in range(9)]))   # to 02:00
    process(conn)
    assert all(e == 1.0 for _, e, _ in energies(conn, m))
    # the CT was changed at 01:00 and nobody told the system until now
    with conn.transaction():
        conn.execute("UPDATE config.meter_point SET valid_to = %s WHERE meter_id = %s", (t("2026-01-05 01:00"), m))
        conn.execute(
            "INSERT INTO config.meter_point (meter_id, point_id, valid_from, multiplier) VALUES (%s, %s, %s, 10)",
            (m, p, t("2026-01-05 01:00")),
        )
    reasons = [r for (r,) in conn.execute("SELECT reason FROM ops.dirty_range WHERE meter_id = %s AND reason LIKE 'config:%%'", (m,))]
    assert reasons and all(r.startswith("config:") for r in reasons)
    process(conn)
    assert [e for _, e, _ in energies(conn, m)] == [1.0] * 4 + [10.0] * 4


def test_multiplier_change_inside_a_quarter_splits_it(conn):
    m, p = meter(conn, "mid-quarter")
    conn.execute("UPDATE config.meter_point SET valid_to = %s WHERE meter_id = %s", (t("2026-01-05 00:20"), m))
    conn.execute(
        "INSERT INTO config.meter_point (meter_id, point_id, valid_from, multiplier) VALUES (%s, %s, %s, 2)",
        (m, p, t("2026-01-05 00:20")),
    )
    readings(conn, p, every(t("2026-01-05 00:00"), 15, [0.0, 15.0, 30.0]))
    process(conn)
    # 00:15-00:20 at x1 (5) + 00:20-00:30 at x2 (20)
    assert [e for _, e, _ in energies(conn, m)] == [15.0, 25.0]


def test_meter_moved_to_a_new_point_from_a_date(conn):
    m, old = meter(conn, "moved")
    new = point(conn, "moved-new-register")
    readings(conn, old, every(t("2026-01-05 00:00"), 15, [100.0 + i for i in range(5)]))    # to 01:00
    readings(conn, new, every(t("2026-01-05 00:30"), 15, [0.0, 5.0, 10.0, 15.0]))          # to 01:15
    process(conn)
    assert [e for _, e, _ in energies(conn, m)] == [1.0] * 4
    with conn.transaction():
        conn.execute("UPDATE config.meter_point SET valid_to = %s WHERE meter_id = %s", (t("2026-01-05 00:30"), m))
        conn.execute(
            "INSERT INTO config.meter_point (meter_id, point_id, valid_from) VALUES (%s, %s, %s)",
            (m, new, t("2026-01-05 00:30")),
        )
    process(conn)
    assert [(ts, e) for ts, e, _ in energies(conn, m)] == [
        (t("2026-01-05 00:00"), 1.0), (t("2026-01-05 00:15"), 1.0),
        (t("2026-01-05 00:30"), 5.0), (t("2026-01-05 00:45"), 5.0), (t("2026-01-05 01:00"), 5.0),
    ]


def test_register_maximum_set_later_turns_a_reset_into_a_rollover(conn):
    m, p = meter(conn, "wrap-later")
    readings(conn, p, every(t("2026-01-05 00:00"), 5, [9990, 9995, 3, 8, 13, 18, 23]))
    process(conn)
    assert energies(conn, m)[0] == (t("2026-01-05 00:00"), 13.0, 128 | 1)
    conn.execute("UPDATE config.meter SET register_max = 9999 WHERE id = %s", (m,))
    process(conn)
    assert energies(conn, m)[0] == (t("2026-01-05 00:00"), 18.0, 64 | 1)   # 5 + 8 + 5


def _random_series(rng: random.Random, start: dt.datetime, n: int):
    series, value, ts = [], 1000.0, start
    for i in range(n):
        ts += dt.timedelta(minutes=rng.choice([5, 5, 5, 7, 10, 95]))
        roll = rng.random()
        if roll < 0.02:
            value = rng.uniform(0, 5)                 # meter replaced
        elif roll < 0.04:
            series.append((ts, value + 5000))         # spike
            ts += dt.timedelta(minutes=5)
            value += rng.uniform(0, 3)
        else:
            value += rng.uniform(0, 3)
        series.append((ts, round(value, 3)))
    return series


def test_full_recompute_equals_incremental_runs(conn):
    rng = random.Random(7)
    start = t("2026-01-05 00:00")
    meters = [meter(conn, f"r{i}") for i in range(4)]
    all_series = {p: _random_series(rng, start, 400) for _, p in meters}
    # deliver in 6 batches, shuffled, with the last batch holding late readings
    late = {p: [s for j, s in enumerate(series) if j % 17 == 3] for p, series in all_series.items()}
    on_time = {p: [s for j, s in enumerate(series) if j % 17 != 3] for p, series in all_series.items()}
    for b in range(5):
        for p, series in on_time.items():
            chunk = len(series) // 5 + 1
            readings(conn, p, series[b * chunk:(b + 1) * chunk])
        process(conn)
    for p, series in late.items():
        readings(conn, p, series)
    process(conn)
    incremental = {m: energies(conn, m) for m, _ in meters}
    assert all(len(rows) > 100 for rows in incremental.values())

    conn.execute("DELETE FROM energy.meter_interval")
    conn.execute("UPDATE raw.point_value SET quality = 0")
    end = max(s[-1][0] for s in all_series.values()) + dt.timedelta(hours=1)
    stages = [s for s in load_pipeline(["clean", "normalize"])]
    backfill(conn, start, end, chunk=dt.timedelta(hours=7), stages=stages)
    assert {m: energies(conn, m) for m, _ in meters} == incremental
    # and once more over the whole range in one piece: nothing changes
    with conn.transaction():
        assert normalize.run(conn, start, end) == 0
