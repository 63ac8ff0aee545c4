"""Cleaning flags suspect readings (never deletes them) and records the rule behind each."""

from __future__ import annotations

import datetime as dt

from jobs import clean
from pipeline_setup import every, meter, point, readings, t


def run_clean(conn) -> int:
    with conn.transaction():
        return clean.run(conn, None, None)


def quality(conn, point_id):
    return conn.execute(
        "SELECT value, quality FROM raw.point_value WHERE point_id = %s ORDER BY ts", (point_id,)
    ).fetchall()


def flags(conn, point_id):
    return conn.execute(
        "SELECT ts, rule FROM raw.clean_flag WHERE point_id = %s ORDER BY ts, rule", (point_id,)
    ).fetchall()


def test_spike_and_recovering_decrease_are_flagged_with_their_rule(conn):
    _, p = meter(conn, "c1")
    series = every(t("2026-01-05 00:00"), 5, [100, 102, 9999, 106, 108, 50, 112, 114])
    readings(conn, p, series)
    assert run_clean(conn) == 2
    assert quality(conn, p) == [(100, 0), (102, 0), (9999, 4), (106, 0), (108, 0), (50, 8), (112, 0), (114, 0)]
    assert flags(conn, p) == [(series[2][0], "spike"), (series[5][0], "recovering_decrease")]
    (detail,) = conn.execute("SELECT detail FROM raw.clean_flag WHERE rule = 'spike'").fetchone()
    assert "9999" in detail and "102" in detail and "106" in detail
    assert conn.execute("SELECT count(*) FROM raw.point_value WHERE point_id = %s", (p,)).fetchone() == (8,)
    assert conn.execute("SELECT raw.quality_names(12)").fetchone() == (["spike", "recovering_decrease"],)


def test_resets_and_rollovers_are_not_flagged(conn):
    _, reset = meter(conn, "c2")
    _, wrap = meter(conn, "c2w", register_max=999999)
    readings(conn, reset, every(t("2026-01-05 00:00"), 5, [500, 505, 2, 7, 12, 17]))
    readings(conn, wrap, every(t("2026-01-05 00:00"), 5, [999980, 999990, 999995, 3, 8, 13]))
    assert run_clean(conn) == 0
    assert all(q == 0 for _, q in quality(conn, reset) + quality(conn, wrap))


def test_a_new_reading_settles_its_predecessor(conn):
    _, p = meter(conn, "c3")
    readings(conn, p, every(t("2026-01-05 00:00"), 5, [100, 102, 9999]))
    run_clean(conn)
    assert quality(conn, p)[-1] == (9999, 0)      # nothing to compare with yet
    readings(conn, p, [(t("2026-01-05 00:15"), 106)])
    run_clean(conn)
    assert quality(conn, p)[2] == (9999, 4)


def test_flags_follow_the_evidence_when_it_changes(conn):
    _, p = meter(conn, "c4")
    readings(conn, p, every(t("2026-01-05 00:00"), 5, [100, 102, 150, 106]))
    run_clean(conn)
    assert quality(conn, p)[2] == (150, 4)
    # a repair import replaces the neighbour: 150 is now plausible, the flag goes away
    conn.execute("UPDATE raw.point_value SET value = 160 WHERE point_id = %s AND value = 106", (p,))
    conn.execute(
        "INSERT INTO ops.dirty_range (point_id, range_start, range_end, reason) VALUES (%s, %s, %s, 'repair')",
        (p, t("2026-01-05 00:15"), t("2026-01-05 00:16")),
    )
    run_clean(conn)
    assert quality(conn, p)[2] == (150, 0)
    assert flags(conn, p) == []


def test_stuck_analog_value_is_flagged_after_the_threshold(conn):
    stuck = point(conn, "temperature", object_type="analog")
    lively = point(conn, "pressure", object_type="analog")
    start = t("2026-01-05 00:00")
    readings(conn, stuck, every(start, 30, [21.5] * 15))                  # 7 hours unchanged
    readings(conn, lively, every(start, 30, [1 + i % 2 for i in range(15)]))
    run_clean(conn)
    flagged = [ts for ts, rule in flags(conn, stuck) if rule == "stuck"]
    # unchanged for longer than 6 hours: the readings after 06:00
    assert flagged == [start + dt.timedelta(minutes=30 * i) for i in range(13, 15)]
    assert flags(conn, lively) == []


def test_thresholds_are_per_point_and_a_change_recleans_history(conn):
    stuck = point(conn, "flow", object_type="analog")
    start = t("2026-01-05 00:00")
    readings(conn, stuck, every(start, 30, [3.0] * 6))                    # 2.5 hours unchanged
    run_clean(conn)
    assert flags(conn, stuck) == []
    conn.execute("INSERT INTO config.point_cleaning (point_id, stuck_after) VALUES (%s, '1 hour')", (stuck,))
    run_clean(conn)
    assert [ts for ts, _ in flags(conn, stuck)] == [start + dt.timedelta(minutes=30 * i) for i in range(3, 6)]
    conn.execute("UPDATE config.point_cleaning SET stuck_after = NULL WHERE point_id = %s", (stuck,))
    run_clean(conn)
    assert flags(conn, stuck) == []


def test_register_checks_can_be_switched_off(conn):
    _, p = meter(conn, "c5")
    conn.execute("INSERT INTO config.point_cleaning (point_id, check_registers) VALUES (%s, false)", (p,))
    readings(conn, p, every(t("2026-01-05 00:00"), 5, [100, 102, 9999, 106]))
    run_clean(conn)
    assert all(q == 0 for _, q in quality(conn, p))


def test_non_finite_and_out_of_limits_readings_are_explained(conn):
    _, p = meter(conn, "c6")
    conn.execute(
        "INSERT INTO raw.point_value (point_id, ts, value, quality) VALUES "
        "(%(p)s, '2026-01-05 00:00Z', 1, 0), (%(p)s, '2026-01-05 00:05Z', 'NaN', 0), "
        "(%(p)s, '2026-01-05 00:10Z', 3, 1), (%(p)s, '2026-01-05 00:15Z', 4, 0)",
        {"p": p},
    )
    run_clean(conn)
    assert [q for _, q in quality(conn, p)] == [0, 2, 1, 0]
    assert [r for _, r in flags(conn, p)] == ["non_finite", "out_of_limits"]


def test_explicit_range_and_rerun_are_idempotent(conn):
    _, p = meter(conn, "c7")
    readings(conn, p, every(t("2026-01-05 00:00"), 5, [100, 102, 9999, 106, 108]))
    with conn.transaction():
        assert clean.run(conn, t("2026-01-05 00:00"), t("2026-01-06 00:00")) == 1
    with conn.transaction():
        assert clean.run(conn, t("2026-01-05 00:00"), t("2026-01-06 00:00")) == 0
    assert run_clean(conn) == 0
    assert len(flags(conn, p)) == 1


def test_steady_ranges_are_judged_like_the_others(conn):
    """A range with no fall, no non-finite and no flagged reading skips the neighbour
    rules; an out-of-limits bit in it, or a spike beside it, must still be seen."""
    _, steady = meter(conn, "c8")
    _, limits = meter(conn, "c8l")
    _, spiky = meter(conn, "c8s")
    start = t("2026-01-05 00:00")
    readings(conn, steady, every(start, 5, [100 + 2 * i for i in range(20)]))
    readings(conn, limits, every(start, 5, [100 + 2 * i for i in range(20)]))
    conn.execute(
        "UPDATE raw.point_value SET quality = 1 WHERE point_id = %s AND ts = %s",
        (limits, start + dt.timedelta(minutes=50)),
    )
    readings(conn, spiky, every(start, 5, [100 + 2 * i if i != 10 else 999 for i in range(20)]))
    run_clean(conn)
    assert flags(conn, steady) == []
    assert flags(conn, limits) == [(start + dt.timedelta(minutes=50), "out_of_limits")]
    assert flags(conn, spiky) == [(start + dt.timedelta(minutes=50), "spike")]


def test_a_repaired_spike_leaves_a_steady_range_without_flags(conn):
    _, p = meter(conn, "c9")
    start = t("2026-01-05 00:00")
    readings(conn, p, every(start, 5, [100, 102, 9999, 106, 108, 110]))
    run_clean(conn)
    assert flags(conn, p) == [(start + dt.timedelta(minutes=10), "spike")]
    # a repair import rewrites the reading, value and quality: the range is now steady
    conn.execute(
        "UPDATE raw.point_value SET value = 104, quality = 0 WHERE point_id = %s AND ts = %s",
        (p, start + dt.timedelta(minutes=10)),
    )
    conn.execute(
        "INSERT INTO ops.dirty_range (point_id, range_start, range_end, reason) VALUES (%s, %s, %s, 'repair')",
        (p, start + dt.timedelta(minutes=10), start + dt.timedelta(minutes=11)),
    )
    run_clean(conn)
    assert quality(conn, p) == [(100, 0), (102, 0), (104, 0), (106, 0), (108, 0), (110, 0)]
    assert flags(conn, p) == []
