"""Clean and normalize look for a range's neighbouring readings within two days of the
work first and beyond only when those days hold too few (sql/normalize.sql,
energy.normalize_ranges). These series put the neighbours further away - a five-day
silence, many daily chunks of history in between - and check that they are still found:
the answers equal a recompute over the whole span."""

from __future__ import annotations

import datetime as dt

from jobs import clean, normalize
from pipeline_setup import every, intervals, meter, readings, t

D = dt.timedelta(days=1)


def test_a_pair_across_a_five_day_silence_is_spread_over_the_gap(conn):
    m, p = meter(conn, "silent")
    before = every(t("2026-01-01 00:00"), 15, [10, 11, 12])                   # to 00:30
    after = every(t("2026-01-06 00:30"), 15, [12 + 480, 12 + 481])  # +480 over the 5 days
    readings(conn, p, before + after)
    with conn.transaction():
        clean.run(conn, t("2026-01-01 00:00"), t("2026-01-07 00:00"))
    # Only the days after the silence are asked for: the reading five days earlier is
    # the start of the first pair.
    with conn.transaction():
        normalize.run(conn, t("2026-01-06 00:00"), t("2026-01-07 00:00"))
    part = intervals(conn, m)
    assert [r[0] for r in part] == [t("2026-01-06 00:00"), t("2026-01-06 00:15"), t("2026-01-06 00:30")]
    assert [round(e, 9) for _, e, _ in part[:2]] == [1.0, 1.0]            # 480 over 480 quarters
    assert all(q & 4 for _, _, q in part[:2])                               # estimated
    with conn.transaction():
        normalize.run(conn, t("2026-01-01 00:00"), t("2026-01-07 00:00"))
    whole = intervals(conn, m)
    assert [r for r in whole if r[0] >= t("2026-01-06 00:00")] == part
    assert round(sum(e for _, e, _ in whole), 9) == 483.0                   # 2 + 480 + 1, conserved


def test_a_spike_after_a_long_silence_is_judged_with_readings_from_before_it(conn):
    _, p = meter(conn, "sparse")
    old = every(t("2026-01-01 00:00"), 60, [100, 101, 102, 103])
    new = every(t("2026-01-06 00:00"), 5, [104, 9999, 105, 106, 107])
    readings(conn, p, old + new)
    # Clean only the new day: the spike's context (4 readings back) lies five days away.
    with conn.transaction():
        clean.run(conn, t("2026-01-06 00:00"), t("2026-01-07 00:00"))
    flagged = conn.execute("SELECT ts, rule FROM raw.clean_flag WHERE point_id = %s", (p,)).fetchall()
    assert flagged == [(t("2026-01-06 00:05"), "spike")]
    # ... the same verdict as cleaning everything at once.
    conn.execute("DELETE FROM raw.clean_flag")
    conn.execute("UPDATE raw.point_value SET quality = 0")
    with conn.transaction():
        clean.run(conn, t("2026-01-01 00:00"), t("2026-01-07 00:00"))
    assert conn.execute("SELECT ts, rule FROM raw.clean_flag WHERE point_id = %s", (p,)).fetchall() == flagged
